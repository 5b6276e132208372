"""Fold splits: disjoint, complete, and each mode's own guarantee."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from ssa_jax import splits


def _fake(num_speakers=8, num_classes=4, num_phrases=12, reps=2, seed=0, drop=0.0):
  rng = np.random.default_rng(seed)
  spk, lab, phr = np.meshgrid(np.arange(num_speakers), np.arange(num_classes),
                              np.arange(num_phrases * reps), indexing="ij")
  keep = rng.random(spk.size) >= drop
  return {"speakers": spk.ravel()[keep], "labels": lab.ravel()[keep],
          "phrases": np.array([f"p{p % num_phrases:03d}" for p in phr.ravel()[keep]])}


def _check_partition(tr, va, n):
  assert len(np.intersect1d(tr, va)) == 0
  np.testing.assert_array_equal(np.sort(np.concatenate([tr, va])), np.arange(n))


@settings(max_examples=10, deadline=None)
@given(fold=st.integers(0, 9), seed=st.integers(0, 3), drop=st.sampled_from([0.0, 0.3, 0.7]))
def test_random_split_keeps_every_speaker_in_training(fold, seed, drop):
  d = _fake(drop=drop, seed=seed)
  tr, va = splits.fold_split(d, fold, "random", seed=seed)
  _check_partition(tr, va, len(d["labels"]))
  assert set(d["speakers"][tr]) == set(d["speakers"])
  # Every (speaker, class) cell with data keeps a training utterance.
  cells = set(zip(d["speakers"], d["labels"]))
  assert set(zip(d["speakers"][tr], d["labels"][tr])) == cells
  assert abs(len(va) / len(d["labels"]) - 0.2) < 0.05


def test_random_split_is_seeded_by_fold():
  d = _fake()
  a = splits.fold_split(d, 3, "random")[1]
  np.testing.assert_array_equal(a, splits.fold_split(d, 3, "random")[1])
  assert not np.array_equal(a, splits.fold_split(d, 4, "random")[1])
  # Stratified in repetition groups: 20 % of each (speaker, class) cell of 12 phrases x 2
  # repetitions is 2.4 groups -> 2 or 3 groups, 4 or 6 utterances.
  cell_counts = np.bincount(d["speakers"][a] * 4 + d["labels"][a], minlength=32)
  assert set(cell_counts.tolist()) <= {4, 6}


@settings(max_examples=10, deadline=None)
@given(fold=st.integers(0, 9), seed=st.integers(0, 3), reps=st.integers(1, 5),
       drop=st.sampled_from([0.0, 0.3]))
def test_random_split_keeps_repetitions_together(fold, seed, reps, drop):
  """No (speaker, phrase, class) repetition group has utterances on both sides."""
  d = _fake(reps=reps, drop=drop, seed=seed)
  tr, va = splits.fold_split(d, fold, "random", seed=seed)
  _check_partition(tr, va, len(d["labels"]))
  key = lambda i: (d["speakers"][i], d["phrases"][i], d["labels"][i])  # noqa: E731
  train_keys, valid_keys = {key(i) for i in tr}, {key(i) for i in va}
  assert not train_keys & valid_keys
  assert va.size > 0


def test_random_split_without_phrases_splits_utterances():
  """IEMOCAP (no phrase): every utterance is its own group, quotas as before."""
  d = _fake(reps=1)
  d["phrases"] = np.array([""] * len(d["labels"]))
  tr, va = splits.fold_split(d, 0, "random")
  _check_partition(tr, va, len(d["labels"]))
  # 12 utterances per cell, 20 % = 2.4 -> 2 or 3 per cell.
  cell_counts = np.bincount(d["speakers"][va] * 4 + d["labels"][va], minlength=32)
  assert set(cell_counts.tolist()) <= {2, 3}
  assert splits.repetition_groups(d["labels"], d["speakers"], d["phrases"]).max() == len(tr) + len(va) - 1


def test_linguistic_split_shares_no_phrase_and_covers_each_phrase_twice():
  d = _fake(num_phrases=23)
  times_valid = {}
  for fold in range(10):
    tr, va = splits.fold_split(d, fold, "linguistic", seed=1)
    _check_partition(tr, va, len(d["labels"]))
    assert not set(d["phrases"][tr]) & set(d["phrases"][va])
    for p in set(d["phrases"][va]):
      times_valid[p] = times_valid.get(p, 0) + 1
  assert times_valid == {f"p{p:03d}": 2 for p in range(23)}


def test_loso_validates_exactly_one_speaker():
  d = _fake(num_speakers=5)
  seen = []
  for fold in range(5):
    tr, va = splits.fold_split(d, fold, "loso")
    _check_partition(tr, va, len(d["labels"]))
    assert len(set(d["speakers"][va])) == 1
    assert set(d["speakers"][va]).isdisjoint(set(d["speakers"][tr]))
    seen.append(int(d["speakers"][va][0]))
  assert seen == list(range(5))


@pytest.mark.parametrize("mode,fold,match", [
    ("random", 10, "fold 10 is out of range"),
    ("random", -1, "out of range"),
    ("linguistic", 12, "out of range"),
    ("loso", 5, "leave-one-speaker-out with 5 speakers"),
    ("kfold", 0, "unknown split mode"),
])
def test_bad_fold_or_mode_is_a_clear_error(mode, fold, match):
  with pytest.raises(ValueError, match=match):
    splits.fold_split(_fake(num_speakers=5), fold, mode)


def test_linguistic_needs_phrases():
  d = _fake()
  d["phrases"] = np.array([""] * len(d["labels"]))
  with pytest.raises(ValueError, match="phrase"):
    splits.fold_split(d, 0, "linguistic")
  with pytest.raises(ValueError, match="distinct phrases"):
    splits.fold_split(_fake(num_phrases=4), 0, "linguistic")


@settings(max_examples=10, deadline=None)
@given(fold=st.integers(0, 9), seed=st.integers(0, 3))
def test_random_split_keeps_class_proportions_on_an_imbalanced_corpus(fold, seed):
  """IEMOCAP-like weights: whole phrases dropped per class (3 of 12 phrases kept for two classes,
  7 for another); every class sends 20 % of its repetition groups (rounded) to validation."""
  d = _fake(seed=seed)
  phrase = np.array([int(p[1:]) for p in d["phrases"]])
  keep = phrase < np.array([12, 3, 3, 7])[d["labels"]]
  d = {k: v[keep] for k, v in d.items()}
  tr, va = splits.fold_split(d, fold, "random", seed=seed)
  _check_partition(tr, va, len(d["labels"]))
  groups = splits.repetition_groups(d["labels"], d["speakers"], d["phrases"])
  for c in range(4):
    g = np.unique(groups[d["labels"] == c])
    gv = np.unique(groups[va][d["labels"][va] == c])
    assert len(gv) == round(0.2 * len(g)), (c, len(gv), len(g))
