"""Balanced batches: balance, coverage, determinism, resume position, process sharding, padding."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from ssa_jax import input_pipeline as ip


def _arrays(counts, t=6, m=2):
  labels = np.repeat(np.arange(len(counts)), counts).astype(np.int32)
  n = len(labels)
  x = np.arange(n, dtype=np.float32)[:, None, None, None] * np.ones((n, t, m, 3), np.float32)
  return {"x": x, "mask": np.ones((n, t), bool), "label": labels,
          "speaker": (np.arange(n) % 3).astype(np.int32)}


@settings(max_examples=15, deadline=None)
@given(counts=st.lists(st.integers(1, 40), min_size=4, max_size=4), epoch=st.integers(0, 5))
def test_batches_are_balanced_and_cover_every_segment(counts, epoch):
  a = _arrays(counts)
  batches = list(ip.train_batches(a, 4, 8, seed=0, fold=1, epoch=epoch))
  assert len(batches) == int(np.ceil(max(counts) / 2))
  seen = np.concatenate([b["x"][:, 0, 0, 0] for b in batches]).astype(int)
  assert set(seen) == set(range(sum(counts)))  # every training segment at least once
  for b in batches:
    assert b["x"].shape == (8, 6, 2, 3) and b["mask"].shape == (8, 6)
    np.testing.assert_array_equal(np.bincount(b["label"], minlength=4), [2, 2, 2, 2])
    np.testing.assert_array_equal(b["label"], a["label"][b["x"][:, 0, 0, 0].astype(int)])
  # The largest class is drawn without replacement; a class reuses a segment only across cycles.
  for c, n in enumerate(counts):
    per_seg = np.bincount(seen[a["label"][seen] == c])
    assert per_seg.max() - per_seg[per_seg > 0].min() <= 1


def test_order_is_pure_in_seed_fold_epoch_and_resumes_mid_epoch():
  a = _arrays([10, 3, 7, 5])
  idx = ip.epoch_indices(a["label"], 4, 8, seed=0, fold=2, epoch=3)
  np.testing.assert_array_equal(idx, ip.epoch_indices(a["label"], 4, 8, seed=0, fold=2, epoch=3))
  for other in [dict(seed=1, fold=2, epoch=3), dict(seed=0, fold=3, epoch=3),
                dict(seed=0, fold=2, epoch=4)]:
    assert not np.array_equal(idx, ip.epoch_indices(a["label"], 4, 8, **other))
  full = list(ip.train_batches(a, 4, 8, 0, 2, 3))
  rest = list(ip.train_batches(a, 4, 8, 0, 2, 3, start_batch=2))
  assert len(rest) == len(full) - 2
  for f, r in zip(full[2:], rest):
    np.testing.assert_array_equal(f["x"], r["x"])


def test_processes_split_the_global_batch():
  a = _arrays([9, 9, 9, 9])
  whole = list(ip.train_batches(a, 4, 8, 0, 0, 0))
  parts = [list(ip.train_batches(a, 4, 8, 0, 0, 0, process_index=p, process_count=2))
           for p in range(2)]
  for b, (p0, p1) in zip(whole, zip(*parts)):
    np.testing.assert_array_equal(b["label"], np.concatenate([p0["label"], p1["label"]]))


def test_errors():
  a = _arrays([5, 0, 5, 5])
  with pytest.raises(ValueError, match="multiple of the number of classes"):
    list(ip.train_batches(_arrays([5, 5, 5, 5]), 4, 10, 0, 0, 0))
  with pytest.raises(ValueError, match="ang have no training segments"):
    ip.epoch_indices(a["label"], 4, 8, 0, 0, 0, class_names=("neu", "ang", "hap", "sad"))


def test_eval_batches_pad_the_last_one():
  a = _arrays([3, 4])
  got = list(ip.eval_batches(a, 4))
  assert [real for _, real in got] == [4, 3]
  np.testing.assert_array_equal(got[0][0]["x"][:, 0, 0, 0], [0, 1, 2, 3])
  np.testing.assert_array_equal(got[1][0]["x"][:3, 0, 0, 0], [4, 5, 6])
  assert all(b["x"].shape == (4, 6, 2, 3) for b, _ in got)
