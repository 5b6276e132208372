"""benchmarks/: step.py's timing mode on a tiny config (both frameworks, --json), its argument
checks and table logic on fake rows; the load rule (loadcheck.py) on fake readings; features.py,
memory.py's table and quiet_run.sh's usage. No timing is asserted."""

from __future__ import annotations

import json
import math
import os

import jax
import numpy as np
import pytest

from benchmarks import loadcheck, step, winograd_divergence

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
  saved = json.loads(out_json.read_text())
  # the first line printed is the load header of the readings saved, and a loaded run has no
  # goal lines
  assert printed.splitlines()[0] == loadcheck.header(saved["load"])
  assert saved["load"]["quiet"] == loadcheck.verdict(saved["load"])[0]
  assert ("MET " in printed or "MISSED" in printed) == saved["load"]["quiet"]
  assert "| acrnn | jax |" in printed and "| acrnn | torch |" in printed
  assert "JAX / PyTorch train-step time" in printed
  assert saved["text"] == out["text"] and printed.startswith(out["text"])
  assert saved["machine"]["cores"] == os.cpu_count() == saved["load"]["cores"]
  assert saved["machine"]["devices"] == [str(d) for d in jax.devices()]
  assert saved["gemm_gflops"]["xla"] > 0 and saved["gemm_gflops"]["torch"] > 0
  load = saved["load"]
  assert {"load_before", "load_after", "others_share", "cpu", "cores", "quiet"} <= set(load)
  rows = {r["framework"]: r for r in saved["rows"]}
  assert set(rows) == {"jax", "torch"}
  jax_row = rows["jax"]
  assert jax_row["recompilations"] == 0
  assert jax_row["devices"] == jax.device_count() and rows["torch"]["device"] == "cpu"
  assert jax_row["step_tflop"] > 0 and jax_row["infer_tflop"] > 0
  assert jax_row["step_tflop"] > jax_row["infer_tflop"]  # backward costs more than forward
  for r in saved["rows"]:
    assert r["step_s"]["min"] <= r["step_s"]["median"] <= r["step_s"]["max"]
    assert math.isfinite(r["loss"])
    assert r["batch"] == 4 and r["dtype"] == "float32"
  assert len(out["rows"]) == 2


def test_step_benchmark_rejects_bad_arguments(tmp_path, capsys):
  with pytest.raises(SystemExit):
    step.main(["--framework", "tensorflow"])
  with pytest.raises(SystemExit, match="config file not found"):
    step.main(["--config", str(tmp_path / "missing.py")])
  with pytest.raises(SystemExit):  # 4 classes: batch 6 cannot be emotion-balanced
    step.main(["--batch", "6", "--models", "acrnn"])
  assert "multiple of the number of classes (4)" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    step.main(["--devices", str(jax.device_count() + 1), "--models", "acrnn"])
  assert f"0 (all) to {jax.device_count()}" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    step.main(["--torch-device", "tpu"])
  assert "--torch-device takes auto, cpu or cuda" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    step.main(["--torch-dtype", "float16"])
  assert "--torch-dtype takes float32, bfloat16" in capsys.readouterr().err


def test_parse_args_lists_and_mode_defaults():
  args, config = step.parse_args(["--dtype", "float32, bfloat16", "--torch-dtype", "bfloat16",
                                  "--conv-impl", "xla,auto", "--framework", "jax"])
  assert args.dtypes == ["float32", "bfloat16"] and args.torch_dtypes == ["bfloat16"]
  assert args.conv_impls == ["xla", "auto"] and args.lstm_impls == [""]
  assert args.devices == [0] and args.steps == 5 and not args.profile
  assert len(step.jax_variants(args)) == 4  # 2 dtypes x 2 convolutions
  assert int(config.model.num_classes) == 4
  args, _ = step.parse_args(["--profile", "--batch", "8"])
  assert args.profile and args.steps == 1 and args.batch == 8


def test_conv_multiplications_counts_each_layer_and_branch():
  """SSA-CRNN (two branches), conv_features (4, 32, 32) on 8 x 4 inputs, batch 2, pool 2 x 2:
  conv1 (8, 4, 3) -> 4, conv2 (4, 2, 4) -> 32, conv3 (4, 2, 32) -> 32, (5, 3) kernels. Only
  conv3 has >= 32 inputs: "winograd" multiplies, along time, F(4, 5)'s 8 points for one tile of
  4 frames (x 3 frequency taps) instead of 4 x 15 taps; along frequency, F(4, 3)'s 6 points for
  one tile over 2 bands (x 5 time taps) instead of 2 x 15."""
  from types import SimpleNamespace  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from ssa_jax import models  # pylint: disable=g-import-not-at-top
  from tests.tiny_config import tiny_config  # pylint: disable=g-import-not-at-top
  direct_layers = [2 * 8 * 4 * 15 * 3 * 4, 2 * 4 * 2 * 15 * 4 * 32, 2 * 4 * 2 * 15 * 32 * 32]
  from ssa_jax.models import layers  # pylint: disable=g-import-not-at-top
  winograd_conv3 = {1: 2 * 1 * 8 * 2 * 3 * 32 * 32, 2: 2 * 4 * 1 * 6 * 5 * 32 * 32}
  for impl, conv3 in (("xla", direct_layers[2]),
                      ("winograd", winograd_conv3[layers.WINOGRAD_AXIS])):
    cfg = tiny_config("ssa_crnn", overrides={"model.conv_features": (4, 32, 32),
                                             "model.num_speakers": 3, "model.conv_impl": impl})
    model = models.build_model(cfg.model)
    x, mask = np.zeros((2, 8, 4, 3), np.float32), np.ones((2, 8), bool)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, mask))
    runner = SimpleNamespace(model=model, variables=lambda v=variables: v,
                             batch={"x": x, "mask": mask})
    direct, real = step.conv_multiplications(cfg, runner)
    assert direct == 2 * sum(direct_layers)
    assert real == 2 * (sum(direct_layers[:2]) + conv3)


# --- the load rule (benchmarks/loadcheck.py), on fake readings --------------------------------

PROC_STAT = """cpu  100 5 50 1000 10 1 2 3 0 0
cpu0 50 2 25 500 5 1 1 2 0 0
intr 12345
"""


def test_parse_proc_stat_and_self_stat():
  busy, total = loadcheck.parse_proc_stat(PROC_STAT)
  assert total == 100 + 5 + 50 + 1000 + 10 + 1 + 2 + 3
  assert busy == total - 1000 - 10  # idle and iowait are not busy; steal is
  # a command name with spaces and parentheses; utime=7, stime=4 are fields 14 and 15
  line = "4242 (python (x) y) R 1 2 3 4 5 6 7 8 9 10 7 4 0 0 20 0 3 0 99 100 200"
  assert loadcheck.parse_self_stat(line) == 11
  # cutime=5, cstime=3 (fields 16 and 17): counted only with children=True
  line = "4242 (python (x) y) R 1 2 3 4 5 6 7 8 9 10 7 4 5 3 20 0 3 0 99 100 200"
  assert loadcheck.parse_self_stat(line) == 11
  assert loadcheck.parse_self_stat(line, children=True) == 19
  with pytest.raises(ValueError):
    loadcheck.parse_proc_stat("intr 1\n")


def test_others_share():
  # 1000 ticks elapsed on all CPUs, 700 busy, 500 of them ours: others 20 %
  assert loadcheck.others_share((0, 700), (0, 1000), (0, 500)) == pytest.approx(0.2)
  assert loadcheck.others_share((0, 400), (0, 1000), (0, 500)) == 0.0  # clipped at 0
  assert loadcheck.others_share((5, 5), (10, 10), (0, 0)) == 0.0  # no time elapsed


@pytest.mark.parametrize("load, share, quiet, words", [
    (0.2, 0.03, True, []),
    (0.5, 0.10, True, []),  # the limits themselves pass
    (0.8, 0.03, False, ["load average 0.80 > 0.5"]),
    (0.2, 0.35, False, ["35 % of the CPU"]),
    (3.0, 0.60, False, ["load average 3.00", "60 %"]),
    (None, 0.0, False, ["no load average"]),
    (0.1, None, False, ["no /proc/stat"]),
])
def test_verdict_rule(load, share, quiet, words):
  readings = {"load_before": load, "load_after": 2.0, "others_share": share, "cpu": "X",
              "cores": 2}
  ok, reasons = loadcheck.verdict(readings)
  assert ok == quiet
  for w in words:
    assert any(w in r for r in reasons), reasons
  head = loadcheck.header(readings)
  assert head.startswith("QUIET") == quiet
  assert head.startswith("LOADED — no verdict") == (not quiet)
  assert "2 cores" in head


def _row(framework, step, infer_sps, pct_step=95.0, pct_infer=95.0):
  return {"model": "acrnn", "framework": framework, "xla_options": "tuned" if framework == "jax"
          else "", "dtype": "float32", "step_s": {"median": step}, "segments_per_s": infer_sps,
          "step_pct_gemm": pct_step, "infer_pct_gemm": pct_infer}


def test_goal_checks_and_verdict_lines():
  rows = [_row("jax", 9.0, 5.0, 91.0, 85.0), _row("torch", 10.0, 4.0)]
  checks = {goal: (value, met) for _, goal, value, met in step.goal_checks(rows)}
  assert checks["train step JAX / PyTorch <= 1.0"] == (pytest.approx(0.9), True)
  assert checks["inference segments/s JAX / PyTorch >= 1.0"] == (pytest.approx(1.25), True)
  assert checks["train step % GEMM >= 90"][1] is True
  assert checks["inference % GEMM >= 90"][1] is False
  quiet = {"load_before": 0.1, "load_after": 1.9, "others_share": 0.01, "quiet": True}
  text = step.format_verdict(rows, quiet)
  assert text.startswith("QUIET") and text.count("MET ") == 3 and text.count("MISSED") == 1
  loaded = {"load_before": 4.0, "load_after": 6.0, "others_share": 0.5, "quiet": False}
  text = step.format_verdict(rows, loaded)
  assert text.startswith("LOADED — no verdict") and "MET" not in text and "MISSED" not in text


def test_torch_row_pairing_and_failed_rows():
  """A JAX row is compared with the PyTorch row of its dtype, else the float32 one; a runner
  whose first step failed is a table line, not a comparison."""
  jax32, jax16 = _row("jax", 9.0, 5.0), dict(_row("jax", 6.0, 8.0), dtype="bfloat16")
  t32 = dict(_row("torch", 10.0, 4.0), device="cpu")
  t16 = dict(_row("torch", 12.0, 2.0), dtype="bfloat16", device="cpu")
  assert step.torch_row_for(jax16, [jax32, jax16, t32, t16]) is t16
  assert step.torch_row_for(jax16, [jax32, jax16, t32]) is t32
  failed = {"model": "acrnn", "framework": "torch", "dtype": "bfloat16", "failed": "RuntimeError: x"}
  assert step.torch_row_for(jax16, [jax16, t32, failed]) is t32
  checks = {(name, goal): value for name, goal, value, _ in
            step.goal_checks([jax32, jax16, t32, t16])}
  assert checks[(step.runner_name(jax16), "train step JAX / PyTorch <= 1.0")] == pytest.approx(0.5)
  assert checks[(step.runner_name(jax32), "train step JAX / PyTorch <= 1.0")] == pytest.approx(0.9)
  full = dict(step_s={"median": 1.0, "min": 1.0, "max": 1.0}, infer_s={"median": 0.5},
              conv_impl="xla", lstm_impl="hoisted", eval_options="tuned", devices=2,
              device="cpu", compile_s=3.0, step_gflops=1.0, step_pct_gemm=1.0, step_cpu_s=2.0,
              infer_gflops=1.0, infer_pct_gemm=1.0, data_s=0.1, recompilations=0, loss=1.5,
              step_tflop=0.1, infer_tflop=0.05, segments_per_s=8.0)
  torch_full = dict(full, framework="torch", conv_impl="torch", lstm_impl="torch", devices=1,
                    step_s={"median": 2.0, "min": 2.0, "max": 2.0}, segments_per_s=4.0,
                    data_s=None, model="acrnn", dtype="float32")
  text = step.format_table([dict(_row("jax", 1.0, 8.0), **full), torch_full, failed],
                           {"xla": 10.0, "torch": 12.0})
  assert "| acrnn | torch bfloat16 | failed: RuntimeError: x |" in text
  assert "| 2 cpu | 3.0 |" in text and "| 1.5000 |" in text
  assert "2 devices) against PyTorch float32 on cpu: JAX / PyTorch train-step time 0.50" in text
  assert "inference segments/s JAX / PyTorch 2.00" in text


def test_wait_for_quiet(monkeypatch):
  loads = iter([3.0, 1.0, 0.4, 0.1])
  monkeypatch.setattr(loadcheck, "_loadavg", lambda: next(loads))
  monkeypatch.setattr(loadcheck.time, "sleep", lambda s: None)
  said = []
  loadcheck.wait_for_quiet(60, log=said.append)
  assert len(said) == 2 and "load average 3.00" in said[0]  # stopped at 0.4
  monkeypatch.setattr(loadcheck, "_loadavg", lambda: 5.0)
  assert loadcheck.wait_for_quiet(0) == pytest.approx(0, abs=1)  # gives up at once


def test_loadcheck_cli_sample(tmp_path, monkeypatch, capsys):
  # fake readings: the load average 0.2, then 100 ticks elapse of which 30 are others' busy time
  stats = iter([(500, 1000), (530 + 5, 1100)])
  own = iter([40, 45])
  monkeypatch.setattr(loadcheck, "_loadavg", lambda: 0.2)
  monkeypatch.setattr(loadcheck, "_snapshot", lambda children=False: (next(stats), next(own)))
  monkeypatch.setattr(loadcheck.time, "sleep", lambda s: None)
  out_json = tmp_path / "idle.json"
  readings = loadcheck.main(["--sample", "3", "--json", str(out_json)])
  assert readings["others_share"] == pytest.approx(0.30)
  assert readings["quiet"] is False and "30 %" in readings["reasons"][0]
  assert capsys.readouterr().out.startswith("LOADED — no verdict")
  assert json.loads(out_json.read_text())["others_share"] == pytest.approx(0.30)


def test_features_benchmark_json(tmp_path, capsys):
  from benchmarks import features as feature_bench  # pylint: disable=import-outside-toplevel
  out_json = tmp_path / "features.json"
  out = feature_bench.main(["--rounds", "2", "--batch", "2", "--seconds", "0.5",
                            "--librosa-files", "1", "--dft", "rfft", "--blas-threads", "0",
                            "--json", str(out_json)])
  printed = capsys.readouterr().out
  saved = json.loads(out_json.read_text())
  assert printed.splitlines()[0] == loadcheck.header(saved["load"])
  assert saved == json.loads(json.dumps(out))
  rows = {r["path"]: r for r in saved["rows"]}
  assert set(rows) == {"librosa", "jax rfft"}
  assert rows["librosa"]["ratio_median"] == pytest.approx(1.0)
  for r in rows.values():
    assert len(r["audio_s_per_s"]) == 2 and all(v > 0 for v in r["audio_s_per_s"])
    assert r["best"] == max(r["audio_s_per_s"])
    assert r["median"] == pytest.approx(sorted(r["audio_s_per_s"])[0] / 2 +
                                        sorted(r["audio_s_per_s"])[1] / 2)
  assert rows["jax rfft"]["ratio_best"] == pytest.approx(rows["jax rfft"]["best"] /
                                                         rows["librosa"]["best"])
  assert saved["load"]["quiet"] == loadcheck.verdict(saved["load"])[0]
  assert saved["args"]["batch"] == 2


def test_quiet_run_script_usage():
  import os  # pylint: disable=import-outside-toplevel
  import subprocess  # pylint: disable=import-outside-toplevel
  script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "benchmarks", "quiet_run.sh")
  assert subprocess.run(["bash", "-n", script], check=False).returncode == 0  # parses
  done = subprocess.run(["bash", script], capture_output=True, text=True, check=False)
  assert done.returncode == 2 and "usage:" in done.stderr  # no OUTDIR: nothing runs


def test_memory_table_per_hour_and_skipped_train():
  from benchmarks import memory  # pylint: disable=import-outside-toplevel
  mib = 2**20
  rows = [{"scale": 1, "num_phrases": 12, "utterances": 10, "hours": 1.0,
           "feature_bytes": 200 * mib, "prepare_rss": 1000 * mib, "train_rss": 1500 * mib},
          {"scale": 4, "num_phrases": 48, "utterances": 40, "hours": 3.0,
           "feature_bytes": 600 * mib, "prepare_rss": 1800 * mib, "train_rss": 1700 * mib}]
  assert memory.per_hour(rows, "prepare_rss") == 400 * mib
  text = memory.format_table(rows)
  assert "feature arrays 200 MiB, bin.prepare peak RSS 400 MiB (2.00x)" in text
  assert "bin.train fold peak RSS 100 MiB (0.50x)" in text and "anonymous" not in text
  rows[0]["train_anon"], rows[1]["train_anon"] = 900 * mib, 1300 * mib
  text = memory.format_table(rows)
  assert "| 1,500 (anonymous 900) |" in text and "its anonymous peak 200 MiB (1.00x)" in text
  for r in rows:
    r["train_rss"] = None
  text = memory.format_table(rows)
  assert text.count("not run") == 2 and "bin.train fold peak RSS 1" not in text
  assert "bin.prepare peak RSS 400 MiB (2.00x)" in text


def test_predict_memory_recording_and_table(tmp_path):
  import soundfile as sf  # pylint: disable=import-outside-toplevel
  from benchmarks import predict_memory  # pylint: disable=import-outside-toplevel
  path = str(tmp_path / "r.wav")
  size = predict_memory.write_recording(path, 61.5)  # two one-minute blocks
  x, sr = sf.read(path, dtype="int16")
  assert sr == 16000 and x.shape == (61.5 * 16000,) and size == 44 + 2 * x.size
  assert 0.2 < np.abs(x / 32768).max() < 0.5 and x[:16000].std() > 1000
  mib = 2 ** 20
  rows = [{"name": "short", "seconds": 10, "segments": 3, "rss": 400 * mib, "anon": 200 * mib,
           "wall_s": 5},
          {"name": "long", "seconds": 3600, "segments": 1200, "rss": 450 * mib,
           "anon": 260 * mib, "wall_s": 60}]
  text = predict_memory.format_table(rows)
  assert "| long | 60.0 min | 1200 | 450 | 260 | 60 |" in text
  assert "long minus short: 50 MiB peak RSS, 60 MiB anonymous" in text


def test_inference_benchmark_quickstart(tmp_path, capsys):
  """benchmarks/inference.py's main path at tiny sizes: the four paths of one model, finite
  figures, and every path's probabilities within 1e-4 of the JAX eval step's."""
  from benchmarks import inference  # pylint: disable=import-outside-toplevel
  out_json = tmp_path / "inference.json"
  out = inference.main(["--config", "quickstart", "--models", "acrnn", "--batches", "2",
                        "--repeats", "1", "--json", str(out_json)])
  printed = capsys.readouterr().out
  saved = json.loads(out_json.read_text())
  assert printed.splitlines()[0] == loadcheck.header(saved["load"])
  assert ("MET " in printed or "MISSED" in printed) == saved["load"]["quiet"]
  table = [l for l in printed.splitlines() if l.startswith("| acrnn | 2 |")]
  assert [l.split("|")[3].strip() for l in table] == list(inference.PATHS)
  assert [r["path"] for r in saved["rows"]] == list(inference.PATHS) == [r["path"] for r in out["rows"]]
  for r in saved["rows"]:
    for key in ("segments_per_s", "real_time_factor", "ratio_torch", "setup_s",
                "first_call_extra_s"):
      assert math.isfinite(r[key]), (r["path"], key)
    assert r["segments_per_s"] > 0 and r["time_s"]["min"] <= r["time_s"]["median"]
    # 2 segments of 3 s: the real-time factor is the median time over 6 s of audio
    assert r["real_time_factor"] == pytest.approx(r["time_s"]["median"] / 6.0)
    assert r["max_abs_diff"] < 1e-4, r["path"]
  by_path = {r["path"]: r for r in saved["rows"]}
  assert by_path[inference.TORCH]["ratio_torch"] == 1.0 and by_path[inference.EVAL]["max_abs_diff"] == 0
  assert by_path[inference.EXPORT]["setup_s"] > 0 and by_path[inference.ONNX]["setup_s"] > 0


def test_inference_goal_checks_pick_fastest_deployable_path():
  from benchmarks import inference  # pylint: disable=import-outside-toplevel
  rows = [{"model": "acrnn", "batch": 1, "path": p, "segments_per_s": s, "ratio_torch": s / 10}
          for p, s in ((inference.EXPORT, 11.0), (inference.ONNX, 13.0), (inference.TORCH, 10.0),
                       (inference.EVAL, 50.0))]  # the eval step is not deployable: not counted
  rows += [{"model": "acrnn", "batch": 16, "path": p, "segments_per_s": s, "ratio_torch": s / 10}
           for p, s in ((inference.EXPORT, 11.0), (inference.ONNX, 9.0), (inference.TORCH, 10.0),
                        (inference.EVAL, 50.0))]
  checks = inference.goal_checks(rows)
  assert [(n, round(v, 2), met) for n, v, met in checks] == [
      ("acrnn batch 1 (onnxruntime)", 1.3, True), ("acrnn batch 16 (jax export)", 1.1, False)]


def test_study_throughput_specs_uar_and_table():
  from benchmarks import study_throughput as st  # pylint: disable=g-import-not-at-top
  spec = st.parse_spec("all layers=HEAD:--config.model.conv_impl=winograd --config.seed=1")
  assert spec == st.Spec("all layers", "HEAD", ("--config.model.conv_impl=winograd",
                                                "--config.seed=1"))
  assert st.parse_spec("before=4695f31^") == st.Spec("before", "4695f31^", ())
  for bad in ("HEAD", "=HEAD", "x="):
    with pytest.raises(ValueError, match="LABEL=REV"):
      st.parse_spec(bad)
  out = ("fold 3 (synthetic corpus, random split): best epoch 10 of 12: UAR 0.8487  WA 0.8487\n"
         "confusion ...")
  assert st.parse_uar(out) == 0.8487 and st.parse_uar("no summary") is None
  cmd = st.train_command("acrnn", 3, "/tmp/w", ("--config.seed=1",))
  assert cmd[1:] == ["-m", "bin.train", "--config", "configs/quickstart.py:acrnn", "--fold", "3",
                     "--workdir", "/tmp/w", "--config.seed=1"]
  rows = [{"label": "after", "rev": "HEAD", "system": "acrnn", "wall_s": 61.04, "cpu_s": 100.0,
           "uar": None, "quiet": False}]
  assert st.table(rows).splitlines()[-1] == "| after | HEAD | acrnn | 61.0 | 100.0 | ? | LOADED |"


def test_winograd_divergence_perturb_and_flat():
  """The perturbed arm's parameters: same tree and dtypes, entries x (1 + eps N(0, 1)); `flat`
  is every leaf in tree order, float64 (checked against numpy's own concatenation)."""
  rng = np.random.default_rng(0)
  tree = {"a": rng.standard_normal((200, 50)).astype(np.float32),
          "b": {"kernel": rng.standard_normal(1000).astype(np.float32)}}
  eps = 1e-3
  out = winograd_divergence.perturb(tree, eps, seed=3)
  assert jax.tree.structure(out) == jax.tree.structure(tree)
  assert all(o.dtype == np.float32 for o in jax.tree.leaves(out))
  rel = np.concatenate([(o / t - 1).ravel() for o, t in zip(jax.tree.leaves(out),
                                                            jax.tree.leaves(tree))])
  assert abs(rel.std() / eps - 1) < 0.05 and abs(rel.mean()) < 1e-4
  np.testing.assert_array_equal(winograd_divergence.perturb(tree, eps, seed=3)["a"], out["a"])
  flat = winograd_divergence.flat(out)
  assert flat.dtype == np.float64
  np.testing.assert_array_equal(flat, np.concatenate([out["a"].ravel(), out["b"]["kernel"]]))
