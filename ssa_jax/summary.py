"""Cross-validation summaries in the paper's Table 1 form, paired comparisons, and the per-epoch
metric writer.

  mean_ci(values, confidence=0.95, test_train_ratio=None, overlap=None) -> MeanCI
        mean and confidence interval over folds, half-width t_{(1+c)/2, df} · s · sqrt(f), s the
        sample standard deviation (ddof=1):
          Student's t (independent folds or draws): f = 1/n, df = n - 1;
          with `test_train_ratio` = n_valid / n_train: f = 1/n + n_valid/n_train, df = n - 1, the
            corrected resampled t of Nadeau & Bengio (2003, "Inference for the generalization
            error", Machine Learning 52) for n overlapping random train/validation resamples;
          with `overlap` (`overlap_design`): f and df from the overlap of the validation sets
            (the overlap-corrected t, below).
        Undefined (None) for a single fold.
  paired_test(a, b, confidence=0.95, test_train_ratio=None, overlap=None) -> PairedTest
        per-fold differences d = a - b (matching folds): mean, CI and two-sided p-value; the
        paired t-test (scipy.stats.ttest_rel), or with a correction t = mean(d) / sqrt(f · s_d²)
        with the same f and df as `mean_ci`, p = 2 · sf_t(|t|, df).
  overlap_design(valid_sets) -> Overlap(factor, df)   f and df of the overlap-corrected t
  linguistic_valid_groups(fold, num_folds)            the phrase groups fold k validates (k, k+1)
  fold_rows(results) -> list[dict]       one row per fold (or draw): fold, uar, wa, segment_uar,
                                         best_epoch (fractions in [0, 1], as in result.json),
                                         recalls (per class, from the confusion matrix, rows =
                                         truth; None for a class absent from the fold's
                                         validation), worst_class_recall (the smallest recall of
                                         the fold), largest_predicted_share (max over classes j of
                                         the utterances predicted as j / all utterances: the
                                         paper's collapse, one class predicted for most
                                         utterances), valid_train_ratio (from result.json's
                                         counts; None without them)
  summarize(results, name, split=..., unit="fold") -> dict   the summary.json content: rows,
                                         mean ± CI per metric, per-class recall and the two
                                         collapse figures; the method follows the split (below)
  compare_systems(summaries) -> list[dict]      each system against the first: paired UAR,
                                         worst-class recall and largest predicted-class share
                                         differences over the folds (draws) both have; only
                                         where both scored the same utterances (result.json
                                         "scored": enrollment, `train.exclude_enroll_k`)
  render_markdown(summary) -> str        per-fold table + the "mean ± CI" row, percent
  render_compare(summaries, paired) -> str      Table 1, per-class recalls, paired differences
  MetricWriter(fold_dir)                 TensorBoard scalars (tensorboardX) per epoch, beside
                                         metrics.jsonl (train.py writes them live).

`results` maps a fold number to that fold's result.json content (`ssa_jax.train`), or, for the
replicate protocol (`split="heldout"`, `unit="draw"`), a draw number to that draw's result. Rows
keep the key `fold` for the unit's number; `summary["unit"]` says whether it is a fold or a draw.
Results written before the collapse figures existed still work: both come from the confusion
matrix.

The method follows the split, by whether the validation sets of the units overlap:
  random      the folds are overlapping 80/20 random resamples of one corpus: their scores are
              positively correlated and s/√n understates the uncertainty of the mean; the
              corrected resampled t of Nadeau & Bengio (f = 1/n + n_valid/n_train, the ratio from
              the results' counts, else from `valid_fraction`).
  linguistic  fold k validates phrase groups k and k+1 (mod num_folds), so every phrase is
              validated in two folds and neighbouring folds share half their validation set:
              the overlap-corrected t. A fold's score averages effects of its validation items
              (phrases); with exchangeable item effects the scores have covariance
              Σ_kl ∝ |V_k ∩ V_l| / (|V_k| |V_l|), so Var(mean) = 1ᵀΣ1 / n² and
              E[s²] = tr(CΣ) / (n - 1), C = I - 11ᵀ/n; the CI uses f = Var(mean) / E[s²] (exact
              for these effects) and the Satterthwaite degrees of freedom df = tr(CΣ)² / tr((CΣ)²)
              of s². For all 10 folds of the paper's protocol f = 0.225 (not 1/10) and df = 5.82
              (not 9). Disjoint validation sets give back f = 1/n. Independent per-fold noise
              (training randomness) is covered conservatively (f > 1/n). The plain t would cover
              about 82 % for a nominal 95 % (tests/test_summary.py simulates it).
  loso, heldout, other splits  disjoint validation sets (leave one speaker out) or independent
              draws (a fresh held-out test set per draw): Student's t and the paired t-test.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Collection, Hashable, Iterable, Mapping, Sequence

import numpy as np
import scipy.stats

from ssa_jax import metrics as metrics_lib

CONFIDENCE = 0.95
# Metrics summarised over folds: result.json key -> column title.
METRICS = {"uar": "UAR", "wa": "WA", "segment_uar": "segment UAR"}
# The collapse figures of a fold, from its utterance confusion matrix: row key -> column title.
COLLAPSE = {"worst_class_recall": "worst-class recall",
            "largest_predicted_share": "largest predicted-class share"}
# Paired comparisons in compare.md / compare.json: fold-row key -> title.
PAIRED = {"uar": "UAR", **COLLAPSE}
# Splits whose folds are overlapping random resamples (corrected resampled t).
RESAMPLED_SPLITS = ("random",)
# Splits whose validation sets overlap by design (overlap-corrected t); the others are disjoint
# or independent (Student's t).
OVERLAP_SPLITS = ("linguistic",)
# splits.py, linguistic mode: fold k validates phrase groups k .. k + LINGUISTIC_WINDOW - 1.
LINGUISTIC_WINDOW = 2
UNITS = ("fold", "draw")
STUDENT_T = "t"
CORRECTED_T = "corrected resampled t"
OVERLAP_T = "overlap-corrected t"
METHOD_TEXT = {
    STUDENT_T: "Student's t with n - 1 degrees of freedom over the {units} (half-width "
               "t · s / √n, s the sample standard deviation)",
    CORRECTED_T: "corrected resampled t of Nadeau & Bengio (2003) for overlapping random splits: "
                 "half-width t · s · √(1/n + n_valid/n_train), n - 1 degrees of freedom",
    OVERLAP_T: "overlap-corrected t for {units} whose validation sets overlap (linguistic: fold k "
               "validates phrase groups k and k+1): half-width t_df · s · √f, with f = Var(mean) "
               "/ E[s²] and df (Satterthwaite) from the overlap of the validation sets under "
               "exchangeable phrase effects",
}
PAIRED_TEXT = {STUDENT_T: "paired differences: the paired t-test",
               CORRECTED_T: "paired differences: the same correction on the per-fold differences",
               OVERLAP_T: "paired differences: the same correction on the per-fold differences"}
PAIRED_NAME = {STUDENT_T: "paired t", CORRECTED_T: "paired corrected resampled t",
               OVERLAP_T: "paired overlap-corrected t"}


@dataclasses.dataclass(frozen=True)
class Overlap:
  """The overlap-corrected t of `n` fold scores: Var(mean) = factor · E[s²], s² with `df`
  (Satterthwaite) degrees of freedom."""

  factor: float
  df: float


def overlap_design(valid_sets: Sequence[Collection[Hashable]]) -> Overlap:
  """f and df of the overlap-corrected t for fold scores that average exchangeable effects of
  their validation items (each fold's items weighted equally); see the module docstring.

  Args:
    valid_sets: per fold, the items it validates (utterances, phrases or phrase groups).

  Raises:
    ValueError: fewer than two folds, an empty set, or sets so alike that s² has no spread
      (all identical).
  """
  sets = [set(v) for v in valid_sets]
  n = len(sets)
  if n < 2 or any(not v for v in sets):
    raise ValueError(f"need at least two non-empty validation sets, got sizes {[len(v) for v in sets]}")
  cov = np.array([[len(a & b) / (len(a) * len(b)) for b in sets] for a in sets])
  ccov = (np.eye(n) - 1.0 / n) @ cov
  spread = float(np.trace(ccov))  # (n - 1) E[s²], in units of the item variance
  if spread <= 1e-12 * float(np.trace(cov)):
    raise ValueError("the validation sets are all the same: the folds' spread says nothing")
  return Overlap(factor=float(cov.sum()) / n**2 * (n - 1) / spread,
                 df=spread**2 / float(np.trace(ccov @ ccov)))


def linguistic_valid_groups(fold: int, num_folds: int) -> tuple[int, ...]:
  """The phrase groups that fold `fold` of the linguistic split validates (splits.py: k and
  k+1 mod num_folds)."""
  return tuple(sorted({(int(fold) + i) % int(num_folds) for i in range(LINGUISTIC_WINDOW)}))


def linguistic_overlap(folds: Sequence[int], num_folds: int) -> Overlap | None:
  """`overlap_design` of the given folds of a linguistic split (None for fewer than two)."""
  if len(folds) < 2:
    return None
  return overlap_design([linguistic_valid_groups(f, num_folds) for f in folds])


@dataclasses.dataclass(frozen=True)
class MeanCI:
  """Mean of `n` values and the half-width of its `confidence` interval (None if n < 2)."""

  mean: float
  half_width: float | None
  std: float | None  # sample standard deviation (ddof=1); None if n < 2
  n: int
  confidence: float = CONFIDENCE
  method: str = STUDENT_T  # STUDENT_T | CORRECTED_T | OVERLAP_T
  test_train_ratio: float | None = None  # n_valid / n_train of the corrected t
  variance_factor: float | None = None  # f: half-width t_df · s · √f (1/n for Student's t)
  df: float | None = None  # degrees of freedom of the t quantile (n - 1 unless OVERLAP_T)

  @property
  def low(self) -> float | None:
    return None if self.half_width is None else self.mean - self.half_width

  @property
  def high(self) -> float | None:
    return None if self.half_width is None else self.mean + self.half_width

  def to_json(self) -> dict[str, Any]:
    return {"mean": self.mean, "ci": self.half_width, "low": self.low, "high": self.high,
            "std": self.std, "n": self.n, "confidence": self.confidence, "method": self.method,
            "test_train_ratio": self.test_train_ratio, "variance_factor": self.variance_factor,
            "df": self.df}

  def format(self, percent: bool = True, digits: int = 2) -> str:
    """`63.86 ± 2.23` (percent of fractions by default); `63.86 ± n/a` for a single fold."""
    scale = 100.0 if percent else 1.0
    if math.isnan(self.mean):
      return "n/a"
    ci = "n/a" if self.half_width is None else f"{scale * self.half_width:.{digits}f}"
    return f"{scale * self.mean:.{digits}f} ± {ci}"


def _values(values: Iterable[float], confidence: float, test_train_ratio: float | None
            ) -> np.ndarray:
  x = np.asarray(list(values), np.float64)
  if x.ndim != 1 or x.size == 0:
    raise ValueError(f"need at least one value to summarise, got {x.size}")
  if not np.all(np.isfinite(x)):
    raise ValueError(f"values must be finite, got {x.tolist()}")
  if not 0.0 < confidence < 1.0:
    raise ValueError(f"confidence must be in (0, 1), got {confidence}")
  if test_train_ratio is not None and not (math.isfinite(test_train_ratio) and test_train_ratio > 0):
    raise ValueError(f"test_train_ratio (n_valid / n_train) must be > 0, got {test_train_ratio}")
  return x


def _design(n: int, test_train_ratio: float | None, overlap: Overlap | None
            ) -> tuple[str, float, float]:
  """(method, variance factor f, degrees of freedom) for n values."""
  if test_train_ratio is not None and overlap is not None:
    raise ValueError("give test_train_ratio (random resamples) or overlap, not both")
  if overlap is not None:
    return OVERLAP_T, float(overlap.factor), float(overlap.df)
  if test_train_ratio is not None:
    return CORRECTED_T, 1.0 / n + float(test_train_ratio), float(n - 1)
  return STUDENT_T, 1.0 / n, float(n - 1)


def mean_ci(values: Iterable[float], confidence: float = CONFIDENCE,
            test_train_ratio: float | None = None, overlap: Overlap | None = None) -> MeanCI:
  """Mean and confidence interval of fold values (see the module docstring).

  Args:
    values: one value per fold.
    confidence: of the two-sided interval.
    test_train_ratio: n_valid / n_train of overlapping random resamples (the corrected
      resampled t).
    overlap: f and df of folds with overlapping validation sets (the overlap-corrected t).
    Neither: Student's t (disjoint folds, independent draws).

  Raises:
    ValueError: no values, a non-finite value, `confidence` outside (0, 1), a ratio <= 0, both
      corrections at once.
  """
  x = _values(values, confidence, test_train_ratio)
  n = int(x.size)
  mean = float(x.mean())
  ratio = None if test_train_ratio is None else float(test_train_ratio)
  if n < 2:
    method = _design(1, ratio, overlap)[0]
    return MeanCI(mean, None, None, n, confidence, method, ratio)
  method, factor, df = _design(n, ratio, overlap)
  std = float(x.std(ddof=1))
  t = float(scipy.stats.t.ppf(0.5 + confidence / 2.0, df))
  return MeanCI(mean, t * std * math.sqrt(factor), std, n, confidence, method, ratio, factor, df)


@dataclasses.dataclass(frozen=True)
class PairedTest:
  """Per-fold differences `a - b`: mean, CI half-width, t statistic, two-sided p (None if n < 2)."""

  mean: float
  half_width: float | None
  t: float | None
  p: float | None
  n: int
  confidence: float = CONFIDENCE
  method: str = STUDENT_T
  test_train_ratio: float | None = None
  variance_factor: float | None = None
  dof: float | None = None  # degrees of freedom (n - 1 unless OVERLAP_T)

  @property
  def df(self) -> float:
    return self.n - 1 if self.dof is None else self.dof

  def to_json(self) -> dict[str, Any]:
    low = None if self.half_width is None else self.mean - self.half_width
    high = None if self.half_width is None else self.mean + self.half_width
    return {"mean": self.mean, "ci": self.half_width, "low": low, "high": high, "t": self.t,
            "p": self.p, "df": self.df, "n": self.n, "confidence": self.confidence,
            "method": self.method, "test_train_ratio": self.test_train_ratio,
            "variance_factor": self.variance_factor}


def paired_test(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE,
                test_train_ratio: float | None = None, overlap: Overlap | None = None
                ) -> PairedTest:
  """Paired comparison of `a` and `b` (one value per fold, the same folds in the same order).

  Without a correction: scipy's paired t-test (`ttest_rel`, two-sided) and its interval.
  With `test_train_ratio` or `overlap`: t = mean(d) / (s_d · sqrt(f)) with the f and df of
  `mean_ci`. All differences equal (s_d = 0): half-width 0, t None, p 1 if they are all 0,
  else 0.

  Raises:
    ValueError: different lengths, or as `mean_ci`.
  """
  a = _values(a, confidence, test_train_ratio)
  b = _values(b, confidence, test_train_ratio)
  if a.shape != b.shape:
    raise ValueError(f"paired values need the same folds: {a.size} against {b.size}")
  d = a - b
  n = int(d.size)
  ratio = None if test_train_ratio is None else float(test_train_ratio)
  mean = float(d.mean())
  if n < 2:
    return PairedTest(mean, None, None, None, n, confidence, _design(1, ratio, overlap)[0], ratio)
  method, factor, df = _design(n, ratio, overlap)
  head = (confidence, method, ratio, factor, df)
  sd = float(d.std(ddof=1))
  if sd == 0.0:
    return PairedTest(mean, 0.0, None, 1.0 if mean == 0.0 else 0.0, n, *head)
  if method == STUDENT_T:
    res = scipy.stats.ttest_rel(a, b)
    ci = res.confidence_interval(confidence)
    return PairedTest(mean, float(ci.high - ci.low) / 2.0, float(res.statistic), float(res.pvalue),
                      n, *head)
  se = sd * math.sqrt(factor)
  t = mean / se
  p = float(2.0 * scipy.stats.t.sf(abs(t), df))
  half = float(scipy.stats.t.ppf(0.5 + confidence / 2.0, df)) * se
  return PairedTest(mean, half, t, p, n, *head)


def _number(result: Mapping[str, Any], key: str, where: str) -> float:
  if key not in result:
    raise ValueError(f"{where}: result has no {key!r} (keys: {sorted(result)})")
  try:
    return float(result[key])
  except (TypeError, ValueError) as e:
    raise ValueError(f"{where}: {key!r} is not a number: {result[key]!r}") from e


def _confusion(result: Mapping[str, Any], where: str) -> np.ndarray | None:
  """result.json's `confusion` as a float matrix (None if absent).

  Raises:
    ValueError: a confusion matrix that is not square, not numbers, or negative.
  """
  if result.get("confusion") is None:
    return None
  try:
    cm = np.asarray(result["confusion"], np.float64)
  except (TypeError, ValueError) as e:
    raise ValueError(f"{where}: confusion is not a matrix of numbers: {result['confusion']!r}") from e
  if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] == 0 or np.any(cm < 0):
    raise ValueError(f"{where}: confusion must be a square matrix of counts, got {cm.tolist()}")
  return cm


def fold_recalls(result: Mapping[str, Any], where: str = "result") -> list[float | None] | None:
  """Per-class recalls of a result.json from its `confusion` (rows = truth, columns =
  prediction): diagonal / row sum, None for a class with no validation utterance; None if the
  result has no confusion matrix.

  Raises:
    ValueError: a confusion matrix that is not square, not numbers, or negative.
  """
  cm = _confusion(result, where)
  if cm is None:
    return None
  return [None if math.isnan(r) else float(r) for r in metrics_lib.recalls(cm)]


def _finite_or_none(x: Any) -> float | None:
  return None if x is None or not math.isfinite(float(x)) else float(x)


def collapse_figures(result: Mapping[str, Any], where: str = "result"
                     ) -> dict[str, float | None]:
  """{worst_class_recall, largest_predicted_share} of a result.json: from its confusion matrix
  (so results written before these figures existed get them too), else the result's own values,
  else None.

  Raises:
    ValueError: a malformed confusion matrix.
  """
  cm = _confusion(result, where)
  if cm is None:
    return {k: _finite_or_none(result.get(k)) for k in COLLAPSE}
  return {"worst_class_recall": _finite_or_none(metrics_lib.worst_class_recall(cm)),
          "largest_predicted_share": _finite_or_none(metrics_lib.largest_predicted_share(cm))}


def valid_train_ratio(result: Mapping[str, Any]) -> float | None:
  """n_valid / n_train utterances from result.json's `counts` (None if absent)."""
  counts = result.get("counts") or {}
  try:
    n_valid = sum(int(v) for v in counts["valid_utterances"].values())
    n_train = sum(int(v) for v in counts["train_utterances"].values())
  except (KeyError, TypeError, AttributeError, ValueError):
    return None
  return n_valid / n_train if n_valid > 0 and n_train > 0 else None


def scored_subset(result: Mapping[str, Any]) -> dict[str, Any]:
  """Which validation (test) utterances a result scored: {"enroll_k", "excluded" (sorted ids, or
  None: not recorded), "excluded_count"}. result.json's "scored" (`fold.scored_record`); a
  result from before it: the config's model.enroll_k, and the ids unknown if its counts show
  excluded utterances (`valid_enroll_excluded`), else none."""
  scored = result.get("scored")
  if isinstance(scored, Mapping):
    excluded = sorted(str(u) for u in scored.get("excluded") or [])
    return {"enroll_k": int(scored.get("enroll_k", 0)), "excluded": excluded,
            "excluded_count": len(excluded)}
  model = (result.get("config") or {}).get("model") or {}
  k = int(model.get("enroll_k", 0) or 0) if model.get("name") == "ssa_crnn" else 0
  counts = (result.get("counts") or {}).get("valid_enroll_excluded") or {}
  n = sum(int(v) for v in counts.values())
  return {"enroll_k": k, "excluded": None if n else [], "excluded_count": n}


def same_scored(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
  """Whether two `scored_subset`s name the same utterances (unrecorded ids: the same k and
  number left out, the seeded plan's)."""
  if a["excluded"] is not None and b["excluded"] is not None:
    return a["excluded"] == b["excluded"]
  return a["excluded_count"] == b["excluded_count"] and (
      a["excluded_count"] == 0 or a["enroll_k"] == b["enroll_k"])


def scored_text(scored: Mapping[str, Any], unit: str = "fold") -> str:
  """A summary's "scored" in words (compare.md)."""
  if not scored["excluded_utterances"]:
    return "all"
  return (f"without {scored['excluded_utterances']} enrollment utterances of unseen speakers "
          f"(k {'/'.join(map(str, scored['enroll_k']))}, over the {unit}s)")


def fold_rows(results: Mapping[int, Mapping[str, Any]]) -> list[dict[str, Any]]:
  """Rows `{fold, uar, wa, segment_uar, best_epoch, recalls, worst_class_recall,
  largest_predicted_share, valid_train_ratio, speaker_mass, scored}` in fold (draw) order (see
  the module docstring; scored: `scored_subset`).

  Raises:
    ValueError: a result lacks one of the metrics, or has a malformed confusion matrix (the
      message names the fold).
  """
  rows = []
  for fold in sorted(results):
    r = results[fold]
    where = f"fold {fold}"
    row: dict[str, Any] = {"fold": int(fold)}
    for key in METRICS:
      row[key] = _number(r, key, where)
    best = r.get("best_epoch")
    row["best_epoch"] = None if best is None else int(best)
    row["recalls"] = fold_recalls(r, where)
    row.update(collapse_figures(r, where))
    row["valid_train_ratio"] = valid_train_ratio(r)
    mass = r.get("speaker_mass")  # SSA-CRNN: mean attention mass on the SSA's speaker half
    row["speaker_mass"] = None if mass is None else float(mass)
    row["scored"] = scored_subset(r)
    rows.append(row)
  return rows


def _classes(results: Mapping[int, Mapping[str, Any]], rows: Sequence[Mapping[str, Any]]
             ) -> list[str] | None:
  """The class names of the folds (they must agree), or None if no fold has recalls."""
  sizes = {len(r["recalls"]) for r in rows if r["recalls"] is not None}
  if not sizes:
    return None
  names = {tuple(results[r["fold"]]["classes"]) for r in rows
           if r["recalls"] is not None and results[r["fold"]].get("classes")}
  if len(sizes) > 1 or len(names) > 1:
    raise ValueError(f"the folds disagree on the classes: {sorted(names) or sorted(sizes)}")
  (k,) = sizes
  if names:
    (classes,) = names
    if len(classes) != k:
      raise ValueError(f"{len(classes)} class names {list(classes)} for {k}x{k} confusion matrices")
    return list(classes)
  return [f"class {i}" for i in range(k)]


def resample_ratio(rows: Sequence[Mapping[str, Any]], split: str | None,
                   valid_fraction: float | None = None) -> tuple[float | None, str | None]:
  """(n_valid / n_train, where it comes from) for the corrected t, or (None, None) for a split
  that is not resampled. The mean of the folds' ratios from their counts; if a fold has no
  counts, valid_fraction / (1 - valid_fraction).

  Raises:
    ValueError: a resampled split with neither counts nor a valid_fraction in (0, 1).
  """
  if split not in RESAMPLED_SPLITS:
    return None, None
  ratios = [r.get("valid_train_ratio") for r in rows]
  if ratios and all(x is not None for x in ratios):
    return float(np.mean(ratios)), "counts"
  if valid_fraction is not None and 0.0 < float(valid_fraction) < 1.0:
    return float(valid_fraction) / (1.0 - float(valid_fraction)), "valid_fraction"
  raise ValueError(f"split {split!r}: the corrected resampled t needs n_valid / n_train, but the "
                   f"results have no counts and valid_fraction is {valid_fraction!r}")


def phrase_groups(results: Mapping[int, Mapping[str, Any]], split: str | None,
                  num_folds: int | None = None) -> int | None:
  """The linguistic split's number of phrase groups (`config.train.num_folds`): `num_folds`, else
  the results' configs (they must agree); None for other splits.

  Raises:
    ValueError: a linguistic split whose number of folds is unknown or inconsistent.
  """
  if split not in OVERLAP_SPLITS:
    return None
  if num_folds is not None:
    return int(num_folds)
  found = {int(n) for r in results.values()
           if (n := ((r.get("config") or {}).get("train") or {}).get("num_folds")) is not None}
  if len(found) != 1:
    raise ValueError(f"split {split!r}: the overlap-corrected t needs the split's num_folds "
                     f"(the folds' validation windows); the results give {sorted(found)}")
  (n,) = found
  if max(results) >= n:
    raise ValueError(f"split {split!r}: fold {max(results)} is out of range for num_folds={n}")
  return n


def _correction(folds: Sequence[int], ratio: float | None, groups: int | None
                ) -> dict[str, Any]:
  """The keyword arguments of `mean_ci` / `paired_test` for these folds."""
  return {"test_train_ratio": ratio,
          "overlap": None if groups is None else linguistic_overlap(list(folds), groups)}


def summarize(results: Mapping[int, Mapping[str, Any]], name: str = "",
              confidence: float = CONFIDENCE, split: str | None = None,
              valid_fraction: float | None = None, num_folds: int | None = None,
              unit: str = "fold", **extra: Any) -> dict[str, Any]:
  """The summary.json content: name, per-fold rows and, per metric, mean and CI over folds.

  Args:
    results: fold (or draw) -> result.json content.
    name: the config name.
    confidence: of the intervals.
    split: `config.train.split`; the method follows it (module docstring): "random" the
      corrected resampled t (n_valid / n_train from the results' counts), "linguistic" the
      overlap-corrected t, others ("loso", "heldout") Student's t.
    valid_fraction: `config.train.valid_fraction`, the ratio's fallback for results without counts.
    num_folds: `config.train.num_folds` (the linguistic split's phrase groups); default: the
      results' configs.
    unit: "fold" or "draw" (the replicate protocol): the label of the per-unit column and text.
    **extra: stored as they are (system, corpus, workdir, ...).

  Besides `metrics` (uar, wa, segment_uar and, when the results have confusion matrices,
  worst_class_recall and largest_predicted_share), `recalls` maps each class to the mean ± CI of
  its recall over the folds where it was in the validation set; `statistics` names the method.
  """
  if unit not in UNITS:
    raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
  rows = fold_rows(results)
  if not rows:
    raise ValueError("no fold results to summarise")
  ratio, source = resample_ratio(rows, split, valid_fraction)
  groups = phrase_groups(results, split, num_folds)

  def ci(pairs: Sequence[tuple[int, float]]) -> dict[str, Any]:
    folds, xs = [f for f, _ in pairs], [x for _, x in pairs]
    return mean_ci(xs, confidence, **_correction(folds, ratio, groups)).to_json()

  stats = {k: ci([(r["fold"], r[k]) for r in rows]) for k in METRICS}
  for k in COLLAPSE:
    pairs = [(r["fold"], r[k]) for r in rows if r[k] is not None]
    if pairs:
      stats[k] = ci(pairs)
  classes = _classes(results, rows)
  recalls = None
  if classes is not None:
    recalls = {}
    for k, c in enumerate(classes):
      pairs = [(r["fold"], r["recalls"][k]) for r in rows
               if r["recalls"] is not None and r["recalls"][k] is not None]
      recalls[c] = ci(pairs) if pairs else None
  masses = [r["speaker_mass"] for r in rows]
  if all(m is not None for m in masses):
    stats["speaker_mass"] = mean_ci(masses, confidence).to_json()  # a descriptive spread
  uar = stats["uar"]
  statistics = {"method": uar["method"], "test_train_ratio": ratio, "ratio_source": source,
                "phrase_groups": groups, "variance_factor": uar["variance_factor"],
                "df": uar["df"], "description": _method_text(uar["method"], unit)}
  scored = {"enroll_k": sorted({r["scored"]["enroll_k"] for r in rows
                                 if r["scored"]["excluded_count"]}),
            "excluded_utterances": sum(r["scored"]["excluded_count"] for r in rows)}
  return {"name": name, "split": split, "unit": unit, "folds": rows, "num_folds": len(rows),
          "confidence": confidence, "statistics": statistics, "metrics": stats,
          "classes": classes, "recalls": recalls, "scored": scored, **extra}


def _label(summary: Mapping[str, Any], index: int) -> str:
  return summary.get("system") or summary.get("name") or f"system {index}"


def _unit(summary: Mapping[str, Any]) -> str:
  return summary.get("unit") or "fold"


def compare_systems(summaries: Sequence[Mapping[str, Any]],
                    labels: Sequence[str] | None = None) -> list[dict[str, Any]]:
  """Each system against the first: for each of `PAIRED` (UAR, worst-class recall, largest
  predicted-class share), the paired test of the per-fold (per-draw) differences
  (system - first) over the units both have (with a value).

  The method follows the split (as `summarize`): the corrected resampled t for the random split,
  with n_valid / n_train the mean of both systems' ratios over the paired folds (or the first
  system's summary ratio); the overlap-corrected t of the paired folds for the linguistic split;
  else the paired t-test (disjoint folds, independent draws). Systems on different splits,
  units or linguistic phrase groups, or that scored different utterances in a common unit
  (`same_scored`: a run with enrollment leaves its unseen speakers' enrollment utterances out,
  a run without scores them unless `train.exclude_enroll_k`), are not paired (an entry with
  "error").
  """
  if labels is None:
    labels = [_label(s, i) for i, s in enumerate(summaries)]
  out = []
  if not summaries:
    return out
  ref = summaries[0]
  ref_rows = {r["fold"]: r for r in ref["folds"]}
  confidence = ref.get("confidence", CONFIDENCE)
  ref_stats = ref.get("statistics") or {}
  for label, s in zip(labels[1:], summaries[1:]):
    entry: dict[str, Any] = {"system": label, "reference": labels[0]}
    stats = s.get("statistics") or {}
    why = None
    if s.get("split") != ref.get("split"):
      why = f"splits differ ({s.get('split')} against {ref.get('split')})"
    elif _unit(s) != _unit(ref):
      why = f"units differ ({_unit(s)} against {_unit(ref)})"
    elif stats.get("phrase_groups") != ref_stats.get("phrase_groups"):
      why = (f"phrase groups differ ({stats.get('phrase_groups')} against "
             f"{ref_stats.get('phrase_groups')})")
    if why is not None:
      entry["error"] = f"{why}: {_unit(ref)}s cannot be paired"
      out.append(entry)
      continue
    rows = {r["fold"]: r for r in s["folds"]}
    common = sorted(set(rows) & set(ref_rows))
    entry["folds"] = common
    if not common:
      entry["error"] = f"no {_unit(ref)} in common"
      out.append(entry)
      continue
    differ = [f for f in common if "scored" in rows[f] and "scored" in ref_rows[f]
              and not same_scored(rows[f]["scored"], ref_rows[f]["scored"])]
    if differ:  # an enrollment run's unseen-speaker enrollment utterances are not scored
      a, b = rows[differ[0]]["scored"], ref_rows[differ[0]]["scored"]
      why = (f"unseen speakers' enrollment utterances left out by one only: run the other with "
             f"train.exclude_enroll_k={max(a['enroll_k'], b['enroll_k'])}"
             if min(a["excluded_count"], b["excluded_count"]) == 0 else
             f"other enrollment utterances left out: k {a['enroll_k']} against {b['enroll_k']}, "
             f"or another seed")
      entry["error"] = f"scored different utterances in {_unit(ref)}s {differ} ({why})"
      out.append(entry)
      continue
    ratio = None
    if s.get("split") in RESAMPLED_SPLITS:
      ratios = [x for f in common for x in (rows[f].get("valid_train_ratio"),
                                            ref_rows[f].get("valid_train_ratio")) if x is not None]
      ratio = float(np.mean(ratios)) if ratios else ref_stats.get("test_train_ratio")
      if ratio is None:
        raise ValueError(f"{label}: the random split needs n_valid / n_train for the corrected t")
    groups = ref_stats.get("phrase_groups") if s.get("split") in OVERLAP_SPLITS else None
    for key in PAIRED:
      folds = [f for f in common if rows[f].get(key) is not None and ref_rows[f].get(key) is not None]
      if not folds:
        entry[key] = None
        continue
      test = paired_test([rows[f][key] for f in folds], [ref_rows[f][key] for f in folds],
                         confidence, **_correction(folds, ratio, groups))
      entry[key] = {**test.to_json(), "folds": folds}
    out.append(entry)
  return out


def system_label(config: Any) -> str:
  """Table 1 name of a config: ACRNN, ACRNN-r, SSA-CRNN-r (`-r`: the Eq. 8 constraint)."""
  base = {"acrnn": "ACRNN", "ssa_crnn": "SSA-CRNN"}.get(str(config.model.name), str(config.model.name))
  suffix = {"none": "", "l1_sphere": "-r", "rescale": "-r (rescale)"}.get(
      str(config.train.constraint), f" ({config.train.constraint})")
  return base + suffix


def _stat(summary: Mapping[str, Any], key: str) -> MeanCI | None:
  s = summary["metrics"].get(key)
  return None if s is None else _meanci(s)


def _meanci(s: Mapping[str, Any]) -> MeanCI:
  return MeanCI(s["mean"], s["ci"], s["std"], s["n"], s.get("confidence", CONFIDENCE),
                s.get("method", STUDENT_T), s.get("test_train_ratio"), s.get("variance_factor"),
                s.get("df"))


def _fmt(stat: MeanCI | Mapping[str, Any] | None) -> str:
  if stat is None:
    return "n/a"
  return (stat if isinstance(stat, MeanCI) else _meanci(stat)).format()


def _pct(x: float | None) -> str:
  return "n/a" if x is None else f"{100.0 * x:.2f}"


def _method_text(method: str, unit: str = "fold") -> str:
  return METHOD_TEXT.get(method, method).format(units=f"{unit}s")


def _method_note(summaries: Sequence[Mapping[str, Any]], paired: bool = False) -> list[str]:
  """One sentence per distinct (method, ratio, f, df) of the summaries."""
  seen = []
  for s in summaries:
    st = s.get("statistics") or {"method": STUDENT_T}
    key = (st["method"], st.get("test_train_ratio"), st.get("variance_factor"), st.get("df"),
           _unit(s))
    if key not in seen:
      seen.append(key)
  lines = []
  for method, ratio, factor, df, unit in seen:
    text = _method_text(method, unit)
    if paired:
      text += "; " + PAIRED_TEXT.get(method, "")
    if ratio is not None:
      text += f"; n_valid/n_train = {ratio:.4f}"
    if method == OVERLAP_T and factor is not None:
      text += f"; f = {factor:.4f}, df = {df:.2f}"
    lines.append(text + ".")
  return lines


def _collapse_keys(summaries: Sequence[Mapping[str, Any]]) -> list[str]:
  """The collapse figures that at least one summary has."""
  return [k for k in COLLAPSE if any(k in s["metrics"] for s in summaries)]


SCORED_NOTE = ("Scored utterances: a run with enrollment (model.enroll_k = k) does not score the "
               "k utterances of each unseen speaker it enrolls; a run without enrollment scores "
               "the same subset with train.exclude_enroll_k = k (result.json \"scored\"). "
               "Paired differences are computed only where both systems scored the same "
               "utterances in every {unit}.")
COLLAPSE_NOTE = ("Worst-class recall = the {unit}'s smallest class recall; largest predicted-class "
                 "share = the share of the {unit}'s utterances given its most predicted class "
                 "(columns of the confusion matrix; 1/K when predictions are spread evenly, 1 "
                 "when one class is predicted for everything); both averaged over the {unit}s.")


def render_markdown(summary: Mapping[str, Any]) -> str:
  """Per-fold (per-draw) table (metrics, per-class recalls, worst-class recall, largest
  predicted-class share) and the `mean ± CI` row, percent."""
  conf = summary.get("confidence", CONFIDENCE)
  unit = _unit(summary)
  label = f"mean ± {100 * conf:g} % CI"
  classes = summary.get("classes") or []
  figures = _collapse_keys([summary])
  titles = ([f"{t} (%)" for t in METRICS.values()] + [f"recall {c} (%)" for c in classes]
            + [f"{COLLAPSE[k]} (%)" for k in figures])
  title = summary.get("name") or "cross-validation"
  if summary.get("system"):
    title += f" ({summary['system']}, {summary.get('corpus', '')} corpus)"
  lines = [f"# {title}: {summary['num_folds']} {unit}(s)", "",
           f"| {unit} | " + " | ".join(titles) + " | best epoch |",
           "|---:|" + "---:|" * len(titles) + "---:|"]
  for r in summary["folds"]:
    best = "" if r.get("best_epoch") is None else str(r["best_epoch"])
    cells = [_pct(r[k]) for k in METRICS]
    if classes:
      cells += [_pct(x) for x in (r.get("recalls") or [None] * len(classes))]
    cells += [_pct(r.get(k)) for k in figures]
    lines.append(f"| {r['fold']} | " + " | ".join(cells) + f" | {best} |")
  cells = [_fmt(_stat(summary, k)) for k in METRICS]
  cells += [_fmt(summary["recalls"].get(c)) for c in classes]
  cells += [_fmt(_stat(summary, k)) for k in figures]
  lines.append(f"| {label} | " + " | ".join(cells) + " | |")
  if summary["num_folds"] < 2:
    lines += ["", f"A single {unit}: the confidence interval is undefined (n/a)."]
  lines += ["", f"{label}: " + " ".join(_method_note([summary]))]
  if classes:
    lines += [f"Recalls from each {unit}'s confusion matrix (rows = truth)."]
  if figures:
    lines += [COLLAPSE_NOTE.format(unit=unit)]
  return "\n".join(lines) + "\n"


def _p(p: float | None) -> str:
  if p is None:
    return "n/a"
  return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _diff(test: Mapping[str, Any] | None) -> tuple[str, str]:
  """`-5.95 [-10.10, -1.80]` (percentage points) and the p-value, or n/a."""
  if test is None:
    return "n/a", "n/a"
  ci = "n/a" if test["ci"] is None else f"[{100 * test['low']:+.2f}, {100 * test['high']:+.2f}]"
  return f"{100 * test['mean']:+.2f} {ci}", _p(test["p"])


def render_compare(summaries: Sequence[Mapping[str, Any]],
                   labels: Sequence[str] | None = None,
                   paired: Sequence[Mapping[str, Any]] | None = None) -> str:
  """Table 1 (one row per system, `mean ± CI` in percent) with the worst-class recall and the
  largest predicted-class share, the per-class recalls, and the paired differences against the
  first system (`compare_systems`)."""
  if labels is None:
    labels = [_label(s, i) for i, s in enumerate(summaries)]
  if len(labels) != len(summaries):
    raise ValueError(f"{len(labels)} labels for {len(summaries)} systems")
  conf = summaries[0].get("confidence", CONFIDENCE) if summaries else CONFIDENCE
  unit = _unit(summaries[0]) if summaries else "fold"
  figures = _collapse_keys(summaries)
  keys = [*METRICS, *figures]
  titles = [f"{t} (%)" for t in METRICS.values()] + [f"{COLLAPSE[k]} (%)" for k in figures]
  with_mass = any("speaker_mass" in s["metrics"] for s in summaries)
  if with_mass:
    keys.append("speaker_mass")
    titles.append("speaker mass")
  subsets = any((s.get("scored") or {}).get("excluded_utterances") for s in summaries)
  lines = [f"# SER results with {100 * conf:g} % confidence interval", "",
           "| SER system | corpus | " + " | ".join(titles) + f" | {unit}s |"
           + (" scored utterances |" if subsets else ""),
           "|---|---|" + "---:|" * len(titles) + "---:|" + ("---|" if subsets else "")]
  for label, s in zip(labels, summaries):
    cells = " | ".join(_fmt_mass(s["metrics"].get(k)) if k == "speaker_mass"
                       else _fmt(_stat(s, k)) for k in keys)
    scored = (f" {scored_text(s['scored'], unit)} |" if subsets and s.get("scored")
              else " |" if subsets else "")
    lines.append(f"| {label} | {s.get('corpus', '')} | {cells} | {s['num_folds']} |{scored}")
  if subsets:
    lines += ["", SCORED_NOTE.format(unit=unit)]
  if figures:
    lines += ["", COLLAPSE_NOTE.format(unit=unit)]
  classes = next((s["classes"] for s in summaries if s.get("classes")), None)
  if classes:
    lines += ["", f"Per-class recall (%), mean ± {100 * conf:g} % CI over the {unit}s:", "",
              "| SER system | " + " | ".join(classes) + " |", "|---|" + "---:|" * len(classes)]
    for label, s in zip(labels, summaries):
      rec = s.get("recalls") or {}
      cells = [_fmt(rec.get(c)) if s.get("classes") == classes else "n/a" for c in classes]
      lines.append(f"| {label} | " + " | ".join(cells) + " |")
  if paired:
    head = "".join(f" Δ {t} | p ({t}) |" for t in PAIRED.values())
    lines += ["", f"Paired differences against {labels[0]} over matching {unit}s, percentage "
              f"points, mean [{100 * conf:g} % CI], two-sided p:", "",
              f"| SER system | {unit}s |" + head + " test |",
              "|---|---:|" + "---:|---:|" * len(PAIRED) + "---|"]
    for e in paired:
      if "error" in e:
        lines.append(f"| {e['system']} | | {e['error']} |" + " |" * (2 * len(PAIRED) - 1) + " |")
        continue
      cells = " | ".join(" | ".join(_diff(e.get(k))) for k in PAIRED)
      method = (e.get("uar") or {}).get("method", "")
      lines.append(f"| {e['system']} | {len(e['folds'])} | {cells} | "
                   f"{PAIRED_NAME.get(method, method)} |")
  lines += ["", "Intervals and tests: " + " ".join(_method_note(summaries, paired=bool(paired)))]
  if with_mass:
    lines += ["Speaker mass: the SSA's attention mass on its speaker half (sum over the real "
              f"frames of alpha_sp), mean over the validation segments of the best epoch, averaged "
              f"over the {unit}s (± Student-t 95 % CI, descriptive)."]
  return "\n".join(lines) + "\n"


def _fmt_mass(stat: Mapping[str, Any] | None) -> str:
  if stat is None:
    return "n/a"
  return stat_text(stat["mean"], stat["ci"])


def stat_text(mean: float, ci: float | None) -> str:
  return f"{mean:.3f}" + ("" if ci is None else f" ± {ci:.3f}")


# --- TensorBoard ---------------------------------------------------------------------------------


_SKIP = ("epoch", "step")


def _tag(key: str) -> str:
  """metrics.jsonl names to TensorBoard tags: `train_loss` -> `train/loss`, `valid_uar` ->
  `valid/uar`, `inner_uar` -> `inner/uar`; other names unchanged."""
  for prefix in ("train_", "valid_", "inner_"):
    if key.startswith(prefix):
      return f"{prefix[:-1]}/{key[len(prefix):]}"
  return key


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
  """The finite real-number entries of `metrics` by tag (lists, strings, booleans and the
  epoch / step counters are not logged as scalars)."""
  out = {}
  for k, v in metrics.items():
    if k in _SKIP or isinstance(v, bool) or not isinstance(v, (int, float, np.number)):
      continue
    if np.ndim(v) == 0 and math.isfinite(float(v)):
      out[_tag(k)] = float(v)
  return out


class MetricWriter:
  """Per-epoch scalars to TensorBoard (tensorboardX event files in `fold_dir`) and, optionally,
  appended as a JSON line to `fold_dir/metrics.jsonl`.

  `flax.metrics.tensorboard` needs TensorFlow, which the project does not depend on, so this uses
  tensorboardX. Event files sit beside metrics.jsonl, so `tensorboard --logdir RUN` shows one run
  per fold. A metrics.jsonl line can be passed as it is: `train_loss` is tagged `train/loss`,
  `valid_uar` `valid/uar` (and so on); `epoch` and `step` are not logged as scalars.

    with MetricWriter(fold_dir) as w:
      w.write(epoch, {"train_loss": 0.7, "valid_uar": 0.61, "valid_wa": 0.6})
  """

  def __init__(self, fold_dir: str | os.PathLike):
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    self.fold_dir = os.fspath(fold_dir)
    os.makedirs(self.fold_dir, exist_ok=True)
    self._tb = SummaryWriter(logdir=self.fold_dir)

  def write(self, step: int, metrics: Mapping[str, Any]) -> None:
    """Logs the scalar entries of `metrics` at `step` (non-scalars are left out)."""
    for tag, value in _scalars(metrics).items():
      self._tb.add_scalar(tag, value, global_step=int(step))
    self._tb.flush()

  def close(self) -> None:
    self._tb.close()

  def __enter__(self) -> "MetricWriter":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
