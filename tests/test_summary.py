"""Cross-validation summary: mean and Student-t interval against scipy, Markdown tables, the
TensorBoard writer (its event files parsed back here by hand: the TFRecord framing and
tensorboardX's Event proto; TensorBoard itself is not a dependency)."""

import json
import math
import os

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings, strategies as st

from ssa_jax import io as io_lib
from ssa_jax import summary


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=2, max_size=12),
       st.sampled_from([0.9, 0.95, 0.99]))
def test_mean_ci_matches_scipy_t_interval(values, confidence):
  x = np.asarray(values)
  m = summary.mean_ci(values, confidence)
  sem = scipy.stats.sem(x)  # s / sqrt(n), ddof=1
  assert m.n == len(values)
  assert m.mean == pytest.approx(float(np.mean(x)), abs=1e-12)
  if sem == 0:
    assert m.half_width == pytest.approx(0.0, abs=1e-12)
    return
  lo, hi = scipy.stats.t.interval(confidence, len(x) - 1, loc=np.mean(x), scale=sem)
  assert m.low == pytest.approx(lo, rel=1e-9, abs=1e-12)
  assert m.high == pytest.approx(hi, rel=1e-9, abs=1e-12)
  assert m.std == pytest.approx(float(np.std(x, ddof=1)), rel=1e-9, abs=1e-12)


def test_mean_ci_single_fold_is_undefined_and_bad_input_is_rejected():
  m = summary.mean_ci([0.5])
  assert (m.mean, m.half_width, m.low, m.std) == (0.5, None, None, None)
  assert m.format() == "50.00 ± n/a"
  with pytest.raises(ValueError, match="at least one"):
    summary.mean_ci([])
  with pytest.raises(ValueError, match="finite"):
    summary.mean_ci([0.5, float("nan")])


def test_format_known_value():
  # Two folds 0.6 and 0.7: mean 0.65, s = 0.0707107, t_{0.975,1} = 12.7062 -> 0.6353
  m = summary.mean_ci([0.6, 0.7])
  assert m.format() == "65.00 ± 63.53"


def _result(uar, wa, seg, epoch):
  return {"uar": uar, "wa": wa, "segment_uar": seg, "best_epoch": epoch,
          "confusion": [[1, 0], [0, 1]], "classes": ["a", "b"]}


def test_markdown_has_one_row_per_fold_and_the_mean_ci_row():
  results = {2: _result(0.5, 0.6, 0.4, 3), 0: _result(0.7, 0.8, 0.6, 1), 5: _result(0.6, 0.7, 0.5, 2)}
  s = summary.summarize(results, name="tiny")
  assert [r["fold"] for r in s["folds"]] == [0, 2, 5]
  json.dumps(s)  # serialisable
  md = summary.render_markdown(s)
  rows = [l for l in md.splitlines() if l.startswith("| ") and l[2].isdigit()]
  assert len(rows) == 3
  assert rows[0] == "| 0 | 70.00 | 80.00 | 60.00 | 1 |"
  ci = summary.mean_ci([0.7, 0.5, 0.6])
  mean_rows = [l for l in md.splitlines() if l.startswith("| mean ± 95 % CI")]
  assert len(mean_rows) == 1
  assert f"{100 * ci.mean:.2f} ± {100 * ci.half_width:.2f}" in mean_rows[0]


def test_missing_metric_names_the_fold():
  with pytest.raises(ValueError, match="fold 3.*segment_uar"):
    summary.summarize({3: {"uar": 0.5, "wa": 0.5}})


def test_compare_table_has_one_row_per_system():
  systems = []
  for i, name in enumerate(["ACRNN", "ACRNN-r", "SSA-CRNN-r"]):
    s = summary.summarize({0: _result(0.3 + i / 10, 0.5, 0.4, 1), 1: _result(0.4 + i / 10, 0.5, 0.4, 1)},
                          name=name, system=name, corpus="synthetic")
    systems.append(s)
  md = summary.render_compare(systems)
  body = [l for l in md.splitlines() if l.startswith("| ") and not l.startswith("| SER")]
  assert [l.split("|")[1].strip() for l in body] == ["ACRNN", "ACRNN-r", "SSA-CRNN-r"]
  assert "45.00 ± " in body[1]


def _read_scalars(logdir):
  """tag -> [(step, value)] from the TFRecord event files in `logdir` (the record format parsed
  here by hand: u64 length, u32 crc, payload, u32 crc; payload = tensorboard Event proto)."""
  import struct
  from tensorboardX.proto import event_pb2
  out = {}
  files = sorted(f for f in os.listdir(logdir) if "tfevents" in f)
  assert files, f"no event file in {logdir}"
  for name in files:
    data = open(os.path.join(logdir, name), "rb").read()
    pos = 0
    while pos < len(data):
      (length,) = struct.unpack("<Q", data[pos:pos + 8])
      ev = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
      pos += 12 + length + 4
      for v in ev.summary.value:
        out.setdefault(v.tag, []).append((ev.step, v.simple_value))
  return out


def test_metric_writer_tensorboard_scalars_read_back(tmp_path):
  with summary.MetricWriter(tmp_path, jsonl=True) as w:
    w.write(1, {"train/loss": 1.5, "valid/uar": 0.25, "confusion": [[1]], "ok": True})
    w.write(2, {"train/loss": 1.0, "valid/uar": 0.5})
  scalars = _read_scalars(tmp_path)
  assert sorted(scalars) == ["train/loss", "valid/uar"]
  assert scalars["valid/uar"] == [(1, 0.25), (2, 0.5)]
  recs = io_lib.read_jsonl(tmp_path / "metrics.jsonl")
  assert recs[0]["confusion"] == [[1]] and recs[1]["step"] == 2


def test_metrics_jsonl_lines_become_train_and_valid_tags(tmp_path):
  lines = [{"epoch": 1, "step": 16, "train_loss": 1.2, "valid_uar": 0.5, "valid_wa": 0.55,
            "valid_segment_uar": 0.4, "elapsed": 3.0},
           {"epoch": 2, "step": 32, "train_loss": 0.9, "valid_uar": 0.75, "valid_wa": 0.7,
            "valid_segment_uar": 0.6, "elapsed": 6.0}]
  with summary.MetricWriter(tmp_path) as w:  # as train.py writes them, one line per epoch
    for l in lines:
      w.write(l["epoch"], l)
  scalars = _read_scalars(tmp_path)
  assert sorted(scalars) == ["elapsed", "train/loss", "valid/segment_uar", "valid/uar", "valid/wa"]
  assert scalars["valid/uar"] == [(1, 0.5), (2, 0.75)]  # stepped by epoch


def test_system_labels_follow_table1():
  from ssa_jax.config import base_config
  c = base_config()
  assert summary.system_label(c) == "SSA-CRNN-r"
  c.model.name, c.train.constraint = "acrnn", "none"
  assert summary.system_label(c) == "ACRNN"
  c.train.constraint = "l1_sphere"
  assert summary.system_label(c) == "ACRNN-r"
