"""Evaluation metrics (docs/DESIGN.md §5), in numpy, from counts rather than means of means.

  confusion_matrix(y_true, y_pred, K) -> (K, K) int64, rows = truth, columns = prediction
  uar(confusion)  unweighted average recall = macro recall. A class absent from the truth (an
                  all-zero row) has no recall and is EXCLUDED from the average (as scikit-learn's
                  `balanced_accuracy_score` does); NaN if no class is present.
  wa(confusion)   weighted accuracy = plain accuracy = trace / total.
  worst_class_recall(confusion)       the smallest recall over the classes present in the truth
                  (NaN if none): how badly the model fails its hardest class.
  largest_predicted_share(confusion)  max over classes j of (items predicted as j) / (all items),
                  columns = predictions: the paper's sense of collapse, one class predicted for
                  most utterances (1/K for a uniform spread of predictions, 1 for one class
                  predicted for everything); NaN for an empty matrix.
  pool_posteriors(seg_probs (N, K), seg_utt (N,), num_utts, mode) -> (U, K) utterance scores:
                  "max" (as ACRNN [10]): per class the max of the segment softmax posteriors over
                  the utterance's segments; "mean": their average. The utterance's prediction is the
                  argmax of the pooled scores.
"""

from __future__ import annotations

import numpy as np

POOLING = ("max", "mean")


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
  """(K, K) counts; entry [i, j] = number of items of true class i predicted as j."""
  y_true = np.asarray(y_true, np.int64).reshape(-1)
  y_pred = np.asarray(y_pred, np.int64).reshape(-1)
  if y_true.shape != y_pred.shape:
    raise ValueError(f"y_true and y_pred differ in length: {y_true.shape[0]} vs {y_pred.shape[0]}")
  for name, y in (("y_true", y_true), ("y_pred", y_pred)):
    if y.size and (y.min() < 0 or y.max() >= num_classes):
      raise ValueError(f"{name} has labels outside 0..{num_classes - 1}: "
                       f"min {y.min()}, max {y.max()}")
  return np.bincount(y_true * num_classes + y_pred,
                     minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def recalls(confusion: np.ndarray) -> np.ndarray:
  """(K,) per-class recall; NaN for a class absent from the truth."""
  confusion = np.asarray(confusion, np.float64)
  support = confusion.sum(axis=1)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(support > 0, np.diag(confusion) / support, np.nan)


def uar(confusion: np.ndarray) -> float:
  """Unweighted average recall over the classes present in the truth (NaN if none)."""
  r = recalls(confusion)
  present = ~np.isnan(r)
  return float(r[present].mean()) if present.any() else float("nan")


def wa(confusion: np.ndarray) -> float:
  """Weighted accuracy (overall accuracy); NaN for an empty matrix."""
  confusion = np.asarray(confusion)
  total = confusion.sum()
  return float(np.trace(confusion) / total) if total else float("nan")


def worst_class_recall(confusion: np.ndarray) -> float:
  """The smallest per-class recall over the classes present in the truth (NaN if none)."""
  r = recalls(confusion)
  present = ~np.isnan(r)
  return float(r[present].min()) if present.any() else float("nan")


def largest_predicted_share(confusion: np.ndarray) -> float:
  """max_j (column j's sum) / total: the share of the items given the most predicted class
  (rows = truth, columns = prediction); NaN for an empty matrix."""
  confusion = np.asarray(confusion, np.float64)
  total = confusion.sum()
  return float(confusion.sum(axis=0).max() / total) if total else float("nan")


def pool_posteriors(seg_probs: np.ndarray, seg_utt: np.ndarray, num_utts: int,
                    mode: str = "max") -> np.ndarray:
  """Pools per-segment class posteriors (N, K) to per-utterance scores (U, K).

  Args:
    seg_probs: (N, K) softmax posteriors of the segments.
    seg_utt: (N,) utterance index in 0..num_utts-1 of each segment.
    num_utts: U; every utterance must own at least one segment.
    mode: "max" or "mean".
  """
  if mode not in POOLING:
    raise ValueError(f"unknown pooling {mode!r}; choose one of {', '.join(POOLING)}")
  seg_probs = np.asarray(seg_probs, np.float64)
  seg_utt = np.asarray(seg_utt, np.int64)
  if seg_probs.ndim != 2 or seg_utt.shape != seg_probs.shape[:1]:
    raise ValueError(f"seg_probs must be (N, K) and seg_utt (N,), got {seg_probs.shape} and "
                     f"{seg_utt.shape}")
  if seg_utt.size and (seg_utt.min() < 0 or seg_utt.max() >= num_utts):
    raise ValueError(f"seg_utt has utterance indices outside 0..{num_utts - 1}")
  counts = np.bincount(seg_utt, minlength=num_utts)
  if np.any(counts == 0):
    raise ValueError(f"{int(np.sum(counts == 0))} utterance(s) have no segment, e.g. index "
                     f"{int(np.flatnonzero(counts == 0)[0])}")
  num_classes = seg_probs.shape[1]
  if mode == "max":
    pooled = np.full((num_utts, num_classes), -np.inf)
    np.maximum.at(pooled, seg_utt, seg_probs)
    return pooled
  pooled = np.zeros((num_utts, num_classes))
  np.add.at(pooled, seg_utt, seg_probs)
  return pooled / counts[:, None]
