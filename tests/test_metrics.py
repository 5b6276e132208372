"""Metrics against scikit-learn and direct numpy computations."""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from sklearn import metrics as skm

from ssa_jax import metrics


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 60), k=st.integers(2, 6), seed=st.integers(0, 10_000))
def test_uar_wa_match_sklearn(n, k, seed):
  rng = np.random.default_rng(seed)
  # Truth may miss classes (drawn from a subset); predictions use all classes.
  y_true = rng.integers(0, rng.integers(1, k + 1), n)
  y_pred = rng.integers(0, k, n)
  cm = metrics.confusion_matrix(y_true, y_pred, k)
  np.testing.assert_array_equal(cm, skm.confusion_matrix(y_true, y_pred, labels=np.arange(k)))
  with warnings.catch_warnings():  # sklearn warns when y_pred has classes absent from y_true
    warnings.simplefilter("ignore")
    expected_uar = skm.balanced_accuracy_score(y_true, y_pred)
  assert metrics.uar(cm) == pytest.approx(expected_uar, abs=1e-12)
  assert metrics.wa(cm) == pytest.approx(skm.accuracy_score(y_true, y_pred), abs=1e-12)


def test_uar_excludes_absent_classes_and_empty_is_nan():
  cm = np.array([[3, 1, 0], [0, 0, 0], [1, 1, 2]])
  assert metrics.uar(cm) == pytest.approx((3 / 4 + 2 / 4) / 2)
  assert np.isnan(metrics.uar(np.zeros((3, 3))))
  assert np.isnan(metrics.wa(np.zeros((3, 3))))


@settings(max_examples=15, deadline=None)
@given(u=st.integers(1, 8), k=st.integers(2, 5), seed=st.integers(0, 10_000))
def test_pooling_matches_direct_numpy(u, k, seed):
  rng = np.random.default_rng(seed)
  seg_utt = np.concatenate([np.arange(u), rng.integers(0, u, 10)])
  rng.shuffle(seg_utt)
  logits = rng.normal(size=(len(seg_utt), k))
  probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  got_max = metrics.pool_posteriors(probs, seg_utt, u, "max")
  got_mean = metrics.pool_posteriors(probs, seg_utt, u, "mean")
  for i in range(u):
    np.testing.assert_allclose(got_max[i], probs[seg_utt == i].max(axis=0))
    np.testing.assert_allclose(got_mean[i], probs[seg_utt == i].mean(axis=0))


def test_bad_inputs_are_clear_errors():
  with pytest.raises(ValueError, match="outside 0..2"):
    metrics.confusion_matrix([0, 3], [0, 1], 3)
  with pytest.raises(ValueError, match="differ in length"):
    metrics.confusion_matrix([0, 1], [0], 3)
  with pytest.raises(ValueError, match="no segment"):
    metrics.pool_posteriors(np.ones((2, 2)) / 2, np.array([0, 0]), 2)
  with pytest.raises(ValueError, match="unknown pooling"):
    metrics.pool_posteriors(np.ones((2, 2)) / 2, np.array([0, 1]), 2, "median")


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 60), k=st.integers(2, 6), seed=st.integers(0, 10_000))
def test_worst_class_recall_and_largest_predicted_share_from_the_raw_labels(n, k, seed):
  """Against scikit-learn's per-class recall and a count of the raw predictions (not the matrix)."""
  rng = np.random.default_rng(seed)
  y_true = rng.integers(0, rng.integers(1, k + 1), n)  # may miss classes
  y_pred = np.where(rng.random(n) < 0.5, rng.integers(0, k, n), y_true)
  cm = metrics.confusion_matrix(y_true, y_pred, k)
  present = np.unique(y_true)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    expected = skm.recall_score(y_true, y_pred, labels=present, average=None).min()
  assert metrics.worst_class_recall(cm) == pytest.approx(expected, abs=1e-12)
  most = max(int(np.sum(y_pred == j)) for j in range(k))
  assert metrics.largest_predicted_share(cm) == pytest.approx(most / n, abs=1e-12)


def test_largest_predicted_share_is_the_columns_not_the_rows():
  # Balanced truth (rows 4, 4, 4), but 10 of 12 utterances predicted as class 0.
  cm = np.array([[4, 0, 0], [3, 1, 0], [3, 0, 1]])
  assert metrics.largest_predicted_share(cm) == pytest.approx(10 / 12)
  assert metrics.largest_predicted_share(cm.T) == pytest.approx(4 / 12)
  assert metrics.worst_class_recall(cm) == pytest.approx(0.25)
  assert metrics.worst_class_recall(np.array([[2, 0], [0, 0]])) == 1.0  # absent class skipped
  assert np.isnan(metrics.largest_predicted_share(np.zeros((3, 3))))
  assert np.isnan(metrics.worst_class_recall(np.zeros((3, 3))))


def _sklearn_eer(scores, labels):
  """The EER from scikit-learn's ROC: the crossing of FNR = 1 - TPR and FPR, linearly
  interpolated between the two ROC points around it."""
  fpr, tpr, _ = skm.roc_curve(labels, scores, drop_intermediate=False)
  fnr = 1.0 - tpr
  d = fnr - fpr
  k = int(np.flatnonzero(d <= 0)[0])
  if d[k] == 0:
    return float(fpr[k])
  w = d[k - 1] / (d[k - 1] - d[k])
  return float(fpr[k - 1] + w * (fpr[k] - fpr[k - 1]))


@settings(max_examples=40, deadline=None)
@given(n_tar=st.integers(1, 40), n_non=st.integers(1, 60), ties=st.booleans(),
       shift=st.floats(-2, 3), seed=st.integers(0, 10_000))
def test_equal_error_rate_matches_sklearn_roc(n_tar, n_non, ties, shift, seed):
  rng = np.random.default_rng(seed)
  scores = np.concatenate([rng.normal(shift, 1, n_tar), rng.normal(0, 1, n_non)])
  if ties:  # many equal scores, within and across the classes
    scores = np.round(scores)
  labels = np.concatenate([np.ones(n_tar, int), np.zeros(n_non, int)])
  perm = rng.permutation(len(scores))
  got = metrics.equal_error_rate(scores[perm], labels[perm])
  assert got == pytest.approx(_sklearn_eer(scores, labels), abs=1e-12)
  assert 0.0 <= got <= 1.0


def test_equal_error_rate_known_cases_and_errors():
  assert metrics.equal_error_rate([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0]) == 0.0  # separated
  assert metrics.equal_error_rate([0.1, 0.2, 0.9, 0.8], [1, 1, 0, 0]) == 1.0  # reversed
  assert metrics.equal_error_rate([0.5, 0.5, 0.5, 0.5], [1, 1, 0, 0]) == 0.5  # uninformative
  # Targets 3, 1; non-targets 2, 0: at t=2, FAR 1/2, FRR 1/2.
  assert metrics.equal_error_rate([3, 1, 2, 0], [1, 1, 0, 0]) == 0.5
  # Targets 4, 3, 1; non-target 2: (FAR, FRR) = (0, 1/3) at t=3 and (1, 1/3) at t=2; the segment
  # between them crosses FAR = FRR at 1/3.
  assert metrics.equal_error_rate([4, 3, 1, 2], [1, 1, 1, 0]) == pytest.approx(1 / 3)
  for scores, labels, match in [([1, 2], [1, 1], "target and non-target"),
                                ([1, 2], [1, 2], "labels must be 0"),
                                ([1, np.nan], [1, 0], "finite"),
                                ([1, 2, 3], [1, 0], "differ in length")]:
    with pytest.raises(ValueError, match=match):
      metrics.equal_error_rate(scores, labels)
