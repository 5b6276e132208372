"""`python -m benchmarks.step --profile`: scope -> layer rules, HLO parsing and per-direction
attribution, time sharing of overlapping ops, and a tiny end-to-end run of both frameworks (no
timings)."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import pytest
from jax import lax

from benchmarks import loadcheck
from benchmarks import step as ps


@pytest.mark.parametrize("op_name, want", [
    ("jit(step)/jvp(SSACRNN)/crnn_sp/conv3/conv_general_dilated", ("conv3", "forward")),
    ("jit(step)/transpose(jvp(SSACRNN))/crnn_em/conv1/reduce_sum", ("conv1", "backward")),
    ("jit(step)/transpose(jvp(ACRNN))/crnn/dense/dot_general", (ps.DENSE_BN, "backward")),
    ("jit(step)/jvp(SSACRNN)/crnn_sp/bn/mul", (ps.DENSE_BN, "forward")),
    ("jit(step)/jvp(SSACRNN)/crnn_em/blstm/forward_rnn/while/body/dot_general", (ps.BLSTM, "forward")),
    ("jit(step)/jvp(SSACRNN)/crnn_sp/jit(leaky_relu)/mul", (ps.GLUE, "forward")),
    ("jit(step)/transpose(jvp(SSACRNN))/ssa/dot_general", (ps.ATTENTION, "backward")),
    ("jit(step)/jvp(SSACRNN)/attention_sp/mul", (ps.ATTENTION, "forward")),
    ("jit(step)/jvp(SSACRNN)/embed/dot_general", (ps.HEAD, "forward")),
    ("jit(step)/jvp()/log_softmax", (ps.HEAD, "forward")),
    ("jit(step)/vmap()/jit(sort)/sort", (ps.OPTIMIZER, "update")),
    ("jit(step)/add", (ps.OPTIMIZER, "update")),
    ("jit(eval_step)/SSACRNN/crnn_em/conv6/conv_general_dilated", ("conv6", "forward")),
])
def test_jax_layer(op_name, want):
  assert ps.jax_layer(op_name) == want


@pytest.mark.parametrize("path, want", [
    ("crnn_sp.convs.0", "conv1"), ("crnn.convs.5", "conv6"), ("crnn_em.dense", ps.DENSE_BN),
    ("crnn.bn", ps.DENSE_BN), ("crnn_sp.lstm", ps.BLSTM), ("crnn_em", ps.GLUE),
    ("ssa", ps.ATTENTION), ("attention", ps.ATTENTION), ("embed_sp", ps.HEAD), ("", ps.HEAD)])
def test_torch_layer(path, want):
  assert ps.torch_layer(path) == want


def test_shared_time_splits_overlaps_equally():
  got = ps.shared_time({"a": [(0, 10)], "b": [(5, 15)], "c": [(20, 21)], "d": [(3, 3)]})
  assert got == pytest.approx({"a": 7.5, "b": 7.5, "c": 1.0})
  assert sum(got.values()) == pytest.approx(16.0)  # the union of the intervals


def _two_conv_grad(options):
  def f(x, k1, k2):
    with jax.named_scope("model"), jax.named_scope("crnn_sp"):
      with jax.named_scope("conv1"):
        y = lax.conv_general_dilated(x, k1, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
      y = jax.nn.leaky_relu(y)
      with jax.named_scope("conv2"):
        y = lax.conv_general_dilated(y, k2, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.sum(y ** 2)
  x = jnp.ones((2, 12, 8, 24))
  k = jnp.ones((5, 3, 24, 24)) * 0.01
  return jax.jit(jax.grad(f, argnums=(1, 2)), compiler_options=options).lower(x, k, k).compile()


@pytest.mark.parametrize("options", [None, {"xla_cpu_experimental_ynn_fusion_type": ""}])
def test_classify_conv_directions_from_compiled_hlo(options):
  """Forward, input-gradient and kernel-gradient convolutions found in the compiled step,
  with YNNPACK's fusions (default) and with XLA's own convolutions."""
  instrs = ps.parse_hlo(_two_conv_grad(options).as_text())
  where = ps.classify_instrs(instrs, (5, 3))
  convs = {}
  for name, ins in instrs.items():
    kind = ps._conv_kind(instrs, ps._by_computation(instrs), name, (5, 3))  # pylint: disable=protected-access
    if kind and ins.computation.startswith("main"):
      convs.setdefault(where[name], []).append(name)
  assert ("conv1", ps.FWD) in convs and ("conv2", ps.FWD) in convs
  assert ("conv1", ps.K_GRAD) in convs and ("conv2", ps.K_GRAD) in convs
  assert ("conv2", ps.IN_GRAD) in convs
  assert ("conv1", ps.IN_GRAD) not in convs  # the data need no gradient


def test_format_profile_rows_and_totals():
  table = {"conv1": {ps.FWD: 1.0, ps.K_GRAD: 2.0, ps.INFER: 1.0},
           ps.BLSTM: {ps.FWD: 0.5, ps.IN_GRAD: 0.5, ps.INFER: 0.5},
           ps.OPTIMIZER: {"update": 1.0}}
  text = ps.format_profile("t", table, {"train": 6.0, "infer": 2.0}, num_convs=2)
  assert "| conv1 | 1.000 | 0.000 | 2.000 | 0.000 | 3.000 | 60.0 | 1.000 | 66.7 |" in text
  assert "| conv2 |" not in text  # rows without time are left out
  assert "**5.000**" in text and "**1.500**" in text


TINY = '''
from ssa_jax.config import base_config
def get_config():
  c = base_config()
  c.model.conv_features = (4, 8)
  c.model.dense_units = 8
  c.model.lstm_units = 4
  c.model.embed_dim = 8
  c.features.segment_frames = 8
  c.features.n_mels = 4
  return c
'''


def test_profile_mode_tiny_end_to_end(tmp_path, capsys):
  cfg = tmp_path / "tiny.py"
  cfg.write_text(TINY)
  out = ps.main(["--profile", "--config", str(cfg), "--models", "acrnn", "--batch", "4",
                 "--json", str(tmp_path / "p.json")])
  printed = capsys.readouterr().out
  saved = json.loads((tmp_path / "p.json").read_text())
  # the load header of the saved readings comes first, and a profile carries no goal verdict
  assert printed.splitlines()[0] == loadcheck.header(saved["load"])
  assert "MET " not in printed and "MISSED" not in printed and "| model | framework |" not in printed
  assert saved["args"]["profile"] is True and saved["args"]["steps"] == 1
  assert "**acrnn, JAX" in printed and "**acrnn, PyTorch" in printed
  assert set(saved["tables"]) == {"acrnn/jax", "acrnn/torch"}
  for key in ("acrnn/jax", "acrnn/torch"):
    rows = saved["tables"][key]["rows"]
    assert rows["conv1"].get(ps.IN_GRAD, 0.0) == 0.0  # no gradient for the input data
    assert sum(rows["conv2"].values()) > 0 and rows[ps.OPTIMIZER]["update"] > 0
    # the printed table is these rows: conv2's train total, in the table's unit
    total = sum(v for c, v in rows["conv2"].items() if c != ps.INFER)
    unit = 1.0 if sum(v for r in rows.values() for c, v in r.items() if c != ps.INFER) >= 5 else 1e3
    conv2 = next(line for line in out["text"].split(f"**acrnn, {'JAX' if 'jax' in key else 'PyTorch'}")[1]
                 .splitlines() if line.startswith("| conv2 |"))
    assert float(conv2.split("|")[6]) == pytest.approx(total * unit, abs=0.006)
  assert out["load"]["cores"] == os.cpu_count()
