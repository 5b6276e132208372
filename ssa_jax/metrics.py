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
  equal_error_rate(scores (N,), labels (N,)) -> float: the EER of verification trials (labels 1:
                  same speaker / target, 0: different), where the false-acceptance and the
                  false-rejection rates are equal, linearly interpolated between thresholds.
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


def equal_error_rate(scores: np.ndarray, labels: np.ndarray) -> float:
  """The equal error rate of verification trials (higher score: more likely the same speaker).

  At a threshold t a trial is accepted when score >= t: FAR(t) = share of the non-target
  (label 0) trials accepted, FRR(t) = share of the target (label 1) trials rejected. Over the
  thresholds at the distinct scores (plus one above all), the points (FAR, FRR) run from (0, 1)
  to (1, 0); the EER is where the polyline through them crosses FAR = FRR.

  Args:
    scores: (N,) finite trial scores; labels: (N,) 0/1 (or bool), both classes present.
  """
  scores = np.asarray(scores, np.float64).reshape(-1)
  labels = np.asarray(labels).reshape(-1)
  if scores.shape != labels.shape:
    raise ValueError(f"scores and labels differ in length: {scores.shape[0]} vs {labels.shape[0]}")
  if not np.all(np.isfinite(scores)):
    raise ValueError("scores must be finite")
  if not np.all((labels == 0) | (labels == 1)):
    raise ValueError("labels must be 0 (different speakers) or 1 (same speaker)")
  target = labels.astype(bool)
  n_tar, n_non = int(target.sum()), int((~target).sum())
  if n_tar == 0 or n_non == 0:
    raise ValueError(f"the EER needs target and non-target trials, got {n_tar} and {n_non}")
  thresholds = np.unique(scores)[::-1]  # descending: acceptance grows
  # Accepted counts at threshold t = number of scores >= t, per class (searchsorted on sorted).
  tar_sorted, non_sorted = np.sort(scores[target]), np.sort(scores[~target])
  tar_acc = n_tar - np.searchsorted(tar_sorted, thresholds, side="left")
  non_acc = n_non - np.searchsorted(non_sorted, thresholds, side="left")
  far = np.concatenate([[0.0], non_acc / n_non])
  frr = np.concatenate([[1.0], 1.0 - tar_acc / n_tar])
  diff = frr - far  # from +1 (nothing accepted) down to -1 (everything accepted)
  k = int(np.flatnonzero(diff <= 0)[0])  # the first point at or past the crossing
  if diff[k] == 0:
    return float(far[k])
  w = diff[k - 1] / (diff[k - 1] - diff[k])
  return float(far[k - 1] + w * (far[k] - far[k - 1]))
