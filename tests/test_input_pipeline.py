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


# --- proportional batches ---------------------------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(counts=st.lists(st.integers(1, 30), min_size=4, max_size=4), epoch=st.integers(0, 5),
       batch_size=st.sampled_from([6, 8, 40]))
def test_proportional_epoch_is_a_permutation_plus_the_wrap(counts, epoch, batch_size):
  """Each segment once per epoch, the last batch filled from the permutation's start; the
  epoch's class shares (before the wrap) are the corpus's; no class need be in a batch."""
  a = _arrays(counts)
  n = sum(counts)
  batches = list(ip.train_batches(a, 4, batch_size, seed=0, fold=1, epoch=epoch,
                                  sampling="proportional"))
  assert len(batches) == int(np.ceil(n / batch_size)) == ip.batches_per_epoch(
      a["label"], 4, batch_size, "proportional")
  assert all(b["x"].shape == (batch_size, 6, 2, 3) for b in batches)
  seen = np.concatenate([b["x"][:, 0, 0, 0] for b in batches]).astype(int)
  np.testing.assert_array_equal(np.sort(seen[:n]), np.arange(n))  # a permutation
  np.testing.assert_array_equal(seen[n:], np.resize(seen[:n], len(seen) - n))  # the wrap
  np.testing.assert_array_equal(np.bincount(a["label"][seen[:n]], minlength=4), counts)
  for b in batches:
    np.testing.assert_array_equal(b["label"], a["label"][b["x"][:, 0, 0, 0].astype(int)])


def test_proportional_order_is_pure_in_seed_fold_epoch_and_resumes_mid_epoch():
  a = _arrays([30, 3, 12, 5])
  idx = ip.epoch_indices(a["label"], 4, 8, seed=0, fold=2, epoch=3, sampling="proportional")
  np.testing.assert_array_equal(idx, ip.epoch_indices(a["label"], 4, 8, seed=0, fold=2, epoch=3,
                                                      sampling="proportional"))
  for other in [dict(seed=1, fold=2, epoch=3), dict(seed=0, fold=3, epoch=3),
                dict(seed=0, fold=2, epoch=4)]:
    assert not np.array_equal(idx, ip.epoch_indices(a["label"], 4, 8, **other,
                                                    sampling="proportional"))
  full = list(ip.train_batches(a, 4, 8, 0, 2, 3, sampling="proportional"))
  rest = list(ip.train_batches(a, 4, 8, 0, 2, 3, start_batch=4, sampling="proportional"))
  assert len(rest) == len(full) - 4 == 3  # ceil(50 / 8) = 7 batches
  for f, r in zip(full[4:], rest):
    np.testing.assert_array_equal(f["x"], r["x"])
  # Proportional, not balanced: the balanced epoch of the same data differs in length and shares.
  assert len(full) != ip.batches_per_epoch(a["label"], 4, 8)
  # Every process builds its own rows of the same global batches.
  parts = [list(ip.train_batches(a, 4, 8, 0, 2, 3, process_index=p, process_count=2,
                                 sampling="proportional")) for p in range(2)]
  for b, (p0, p1) in zip(full, zip(*parts)):
    np.testing.assert_array_equal(b["x"], np.concatenate([p0["x"], p1["x"]]))


def test_proportional_errors():
  a = _arrays([5, 0, 5, 5])
  with pytest.raises(ValueError, match="ang have no training segments"):
    ip.epoch_indices(a["label"], 4, 6, 0, 0, 0, class_names=("neu", "ang", "hap", "sad"),
                     sampling="proportional")
  with pytest.raises(ValueError, match="train.batch_sampling must be one of"):
    ip.epoch_indices(_arrays([5, 5, 5, 5])["label"], 4, 8, 0, 0, 0, sampling="uniform")
  with pytest.raises(ValueError, match="positive integer"):
    ip.batches_per_epoch(a["label"], 4, 0, "proportional")
  # A batch size that is no multiple of the classes is fine for proportional batches only.
  ip.check_sampling("proportional", 6, 4)
  with pytest.raises(ValueError, match="multiple of the number of classes"):
    ip.check_sampling("balanced", 6, 4)
