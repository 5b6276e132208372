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


# --- heldout split ----------------------------------------------------------------------------


def _with_subsets(d, test):
  """`d` with subsets: "test" where `test` (U,) bool, "" elsewhere."""
  return {**d, "subsets": np.where(test, "test", "")}


def test_heldout_split_trains_on_the_rest_and_validates_on_the_test_subset():
  d = _fake(num_speakers=5)
  test = (d["speakers"] == 4) | (d["phrases"] == "p011")  # an unseen speaker and a new phrase
  tr, va = splits.fold_split(_with_subsets(d, test), 0, "heldout", seed=3)
  _check_partition(tr, va, len(d["labels"]))
  np.testing.assert_array_equal(va, np.flatnonzero(test))
  np.testing.assert_array_equal(tr, np.flatnonzero(~test))
  # Neither the seed nor the other fields change it; a Mapping or an object with the field.
  class Obj:
    pass
  o = Obj()
  for k, v in _with_subsets(d, test).items():
    setattr(o, k, v)
  np.testing.assert_array_equal(splits.fold_split(o, 0, "heldout", seed=0)[1], va)


@pytest.mark.parametrize("subsets,fold,match", [
    (None, 0, "needs the dataset's subsets"),
    ("none", 0, "needs utterances of subset 'test'"),
    ("all", 0, "needs training utterances"),
    ("short", 0, "one entry per utterance"),
    ("some", 1, "fold 1 is out of range: the heldout split"),
    ("some", -1, "out of range"),
])
def test_heldout_split_errors_are_one_line(subsets, fold, match):
  d = _fake(num_speakers=3)
  n = len(d["labels"])
  d["subsets"] = {None: None, "none": np.array([""] * n), "all": np.array(["test"] * n),
                  "short": np.array(["test"] * (n - 1)),
                  "some": np.where(np.arange(n) % 5 == 0, "test", "train")}[subsets]
  with pytest.raises(ValueError, match=match) as e:
    splits.fold_split(d, fold, "heldout")
  assert "\n" not in str(e.value)


# --- inner validation split -------------------------------------------------------------------


def _cells(d, idx):
  return set(zip(d["speakers"][idx].tolist(), d["labels"][idx].tolist()))


@settings(max_examples=10, deadline=None)
@given(fold=st.integers(0, 9), seed=st.integers(0, 3), drop=st.sampled_from([0.0, 0.3]),
       mode=st.sampled_from(["random", "heldout", "loso"]))
def test_inner_split_is_a_stratified_partition_of_the_training_part(fold, seed, drop, mode):
  d = _fake(num_speakers=5, reps=2, drop=drop, seed=seed)
  d = _with_subsets(d, (d["phrases"] == "p000") | (d["speakers"] == 4))
  outer_fold = {"random": fold, "heldout": 0, "loso": fold % 5}[mode]
  tr, va = splits.fold_split(d, outer_fold, mode, seed=seed)
  fit, inner = splits.inner_split(d, tr, outer_fold, 0.2, seed)
  # Disjoint, together the training part; sorted.
  _check_partition(np.searchsorted(tr, fit), np.searchsorted(tr, inner), len(tr))
  np.testing.assert_array_equal(np.sort(np.concatenate([fit, inner])), tr)
  assert np.all(np.diff(fit) > 0) and np.all(np.diff(inner) > 0) and len(inner) > 0
  assert not set(inner.tolist()) & set(va.tolist())  # no validation/test utterance in it
  if mode == "heldout":
    assert not np.any(d["subsets"][inner] == "test")
  # Every (speaker, class) cell of the training part keeps training data.
  assert _cells(d, fit) == _cells(d, tr)
  # Whole repetition groups, stratified by class: round(20 %) of each class's training groups.
  groups = splits.repetition_groups(d["labels"], d["speakers"], d["phrases"])
  assert not set(groups[fit].tolist()) & set(groups[inner].tolist())
  for c in np.unique(d["labels"][tr]):
    n_tr = len(np.unique(groups[tr][d["labels"][tr] == c]))
    n_in = len(np.unique(groups[inner][d["labels"][inner] == c]))
    assert n_in == round(0.2 * n_tr), (c, n_in, n_tr)


def test_inner_split_is_deterministic_and_seeded_apart_from_the_outer_split():
  d = _fake()
  tr, _ = splits.fold_split(d, 2, "random", seed=1)
  fit, inner = splits.inner_split(d, tr, 2, 0.2, 1)
  again = splits.inner_split(d, tr, 2, 0.2, 1)
  np.testing.assert_array_equal(inner, again[1])
  np.testing.assert_array_equal(fit, again[0])
  for other in [dict(fold=3, seed=1), dict(fold=2, seed=2)]:
    assert not np.array_equal(inner, splits.inner_split(d, tr, other["fold"], 0.2,
                                                        other["seed"])[1])
  # Not the outer split's random stream: the same draw with the outer seeding picks other groups.
  labels, speakers = d["labels"][tr], d["speakers"][tr]
  groups = splits.repetition_groups(labels, speakers, d["phrases"][tr])
  outer_stream = splits._random_split(labels, speakers, groups, 2, 0.2, 1)
  assert not np.array_equal(tr[outer_stream], inner)
  # Twice the fraction: twice the groups (stratified quotas).
  assert abs(len(splits.inner_split(d, tr, 2, 0.4, 1)[1]) - 2 * len(inner)) <= 8


def test_inner_split_errors():
  d = _fake(num_speakers=2, num_phrases=1, reps=3)  # one repetition group per cell
  tr = np.arange(len(d["labels"]))
  with pytest.raises(ValueError, match="inner validation split of fold 0 is empty"):
    splits.inner_split(d, tr, 0, 0.2, 0)
  for bad in (0.0, 1.0, -0.1):
    with pytest.raises(ValueError, match="train.inner_fraction must be in"):
      splits.inner_split(_fake(), tr, 0, bad, 0)
