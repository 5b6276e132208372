"""Smoke test of benchmarks/step.py: a tiny config, 2 timed steps, both frameworks, --json."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks import step

# The shared tiny config (tests/tiny_config.py) with two conv layers (a faster compile); the
# benchmark loads the file by path, the repository root is on sys.path under pytest.
TINY = '''
from tests.tiny_config import tiny_config
def get_config():
  return tiny_config(overrides={"model.conv_features": (4, 4)})
'''


def test_step_benchmark_tiny_config(tmp_path, capsys):
  cfg = tmp_path / "tiny.py"
  cfg.write_text(TINY)
  out_json = tmp_path / "step.json"
  out = step.main(["--config", str(cfg), "--models", "acrnn", "--batch", "4", "--steps", "2",
                   "--json", str(out_json)])
  printed = capsys.readouterr().out
  assert "| acrnn | jax |" in printed and "| acrnn | torch |" in printed
  assert "JAX / PyTorch train-step time" in printed
  saved = json.loads(out_json.read_text())
  assert saved["machine"]["cores"] >= 1 and saved["gemm_gflops"]["xla"] > 0
  rows = {r["framework"]: r for r in saved["rows"]}
  assert set(rows) == {"jax", "torch"}
  jax_row = rows["jax"]
  assert jax_row["recompilations"] == 0
  assert jax_row["step_tflop"] > 0 and jax_row["infer_tflop"] > 0
  assert jax_row["step_tflop"] > jax_row["infer_tflop"]  # backward costs more than forward
  for r in saved["rows"]:
    assert r["step_s"]["min"] <= r["step_s"]["median"] <= r["step_s"]["max"]
    assert math.isfinite(r["loss"])
  assert len(out["rows"]) == 2


def test_step_benchmark_rejects_bad_arguments(tmp_path):
  with pytest.raises(SystemExit):
    step.main(["--framework", "tensorflow"])
  with pytest.raises(SystemExit, match="no such config file"):
    step.main(["--config", str(tmp_path / "missing.py")])
