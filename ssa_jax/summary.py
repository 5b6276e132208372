"""Cross-validation summaries in the paper's Table 1 form, paired comparisons, and the per-epoch
metric writer.

  mean_ci(values, confidence=0.95, test_train_ratio=None) -> MeanCI
        mean and confidence interval over folds, half-width t_{(1+c)/2, n-1} · s · sqrt(f), s the
        sample standard deviation (ddof=1): f = 1/n (Student's t, disjoint folds), or, with
        `test_train_ratio` = n_valid / n_train, f = 1/n + n_valid/n_train, the corrected resampled
        t of Nadeau & Bengio (2003, "Inference for the generalization error", Machine Learning 52)
        for n overlapping random train/validation resamples; undefined (None) for a single fold.
  paired_test(a, b, confidence=0.95, test_train_ratio=None) -> PairedTest
        per-fold differences d = a - b (matching folds): mean, CI and two-sided p-value; the
        paired t-test (scipy.stats.ttest_rel), or with `test_train_ratio` the corrected resampled
        t: t = mean(d) / sqrt((1/n + n_valid/n_train) · s_d²), df = n - 1, p = 2 · sf_t(|t|).
  fold_rows(results) -> list[dict]       one row per fold: fold, uar, wa, segment_uar,
                                         best_epoch (fractions in [0, 1], as in result.json),
                                         recalls (per class, from the confusion matrix, rows =
                                         truth; None for a class absent from the fold's
                                         validation), collapse (the smallest recall of the
                                         fold), valid_train_ratio (from result.json's counts)
  summarize(results, name, split=...) -> dict   the summary.json content: rows, mean ± CI per
                                         metric, per-class recall and collapse; the corrected
                                         resampled t for split="random", Student's t otherwise
  compare_systems(summaries) -> list[dict]      each system against the first: paired UAR and
                                         collapse differences over the folds both have
  render_markdown(summary) -> str        per-fold table + the "mean ± CI" row, percent
  render_compare(summaries, paired) -> str      Table 1, per-class recalls, paired differences
  MetricWriter(fold_dir)                 TensorBoard scalars (tensorboardX) per epoch, beside
                                         metrics.jsonl (train.py writes them live).

`results` maps a fold number to that fold's result.json content (`ssa_jax.train`).

Why the correction: the 10 folds of the random split are overlapping 80/20 resamples of one
corpus, so their scores are positively correlated and s/√n understates the uncertainty of the
mean; Nadeau & Bengio's factor 1/n + n_valid/n_train replaces 1/n. The linguistic and
leave-one-speaker-out folds have disjoint validation sets and keep the plain t.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import scipy.stats

from ssa_jax import io as io_lib
from ssa_jax import metrics as metrics_lib

CONFIDENCE = 0.95
# Metrics summarised over folds: result.json key -> column title.
METRICS = {"uar": "UAR", "wa": "WA", "segment_uar": "segment UAR"}
# Paired comparisons in compare.md / compare.json: fold-row key -> title.
PAIRED = {"uar": "UAR", "collapse": "collapse"}
# Splits whose folds are overlapping random resamples (corrected resampled t); others are disjoint.
RESAMPLED_SPLITS = ("random",)
STUDENT_T = "t"
CORRECTED_T = "corrected resampled t"
METHOD_TEXT = {
    STUDENT_T: "Student's t with n - 1 degrees of freedom over the folds (half-width t · s / √n, "
               "s the sample standard deviation)",
    CORRECTED_T: "corrected resampled t of Nadeau & Bengio (2003) for overlapping random splits: "
                 "half-width t · s · √(1/n + n_valid/n_train), n - 1 degrees of freedom",
}
PAIRED_TEXT = {STUDENT_T: "paired differences: the paired t-test",
               CORRECTED_T: "paired differences: the same correction on the per-fold differences"}


@dataclasses.dataclass(frozen=True)
class MeanCI:
  """Mean of `n` values and the half-width of its `confidence` interval (None if n < 2)."""

  mean: float
  half_width: float | None
  std: float | None  # sample standard deviation (ddof=1); None if n < 2
  n: int
  confidence: float = CONFIDENCE
  method: str = STUDENT_T  # STUDENT_T | CORRECTED_T
  test_train_ratio: float | None = None  # n_valid / n_train of the corrected t

  @property
  def low(self) -> float | None:
    return None if self.half_width is None else self.mean - self.half_width

  @property
  def high(self) -> float | None:
    return None if self.half_width is None else self.mean + self.half_width

  def to_json(self) -> dict[str, Any]:
    return {"mean": self.mean, "ci": self.half_width, "low": self.low, "high": self.high,
            "std": self.std, "n": self.n, "confidence": self.confidence, "method": self.method,
            "test_train_ratio": self.test_train_ratio}

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


def _variance_factor(n: int, test_train_ratio: float | None) -> float:
  """1/n, or Nadeau & Bengio's 1/n + n_valid/n_train."""
  return 1.0 / n + (0.0 if test_train_ratio is None else float(test_train_ratio))


def mean_ci(values: Iterable[float], confidence: float = CONFIDENCE,
            test_train_ratio: float | None = None) -> MeanCI:
  """Mean and confidence interval of fold values (see the module docstring).

  Args:
    values: one value per fold.
    confidence: of the two-sided interval.
    test_train_ratio: n_valid / n_train of overlapping random resamples (the corrected
      resampled t); None for disjoint folds (Student's t).

  Raises:
    ValueError: no values, a non-finite value, `confidence` outside (0, 1), a ratio <= 0.
  """
  x = _values(values, confidence, test_train_ratio)
  n = int(x.size)
  mean = float(x.mean())
  method = STUDENT_T if test_train_ratio is None else CORRECTED_T
  ratio = None if test_train_ratio is None else float(test_train_ratio)
  if n < 2:
    return MeanCI(mean, None, None, n, confidence, method, ratio)
  std = float(x.std(ddof=1))
  t = float(scipy.stats.t.ppf(0.5 + confidence / 2.0, n - 1))
  return MeanCI(mean, t * std * math.sqrt(_variance_factor(n, ratio)), std, n, confidence, method,
                ratio)


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

  @property
  def df(self) -> int:
    return self.n - 1

  def to_json(self) -> dict[str, Any]:
    low = None if self.half_width is None else self.mean - self.half_width
    high = None if self.half_width is None else self.mean + self.half_width
    return {"mean": self.mean, "ci": self.half_width, "low": low, "high": high, "t": self.t,
            "p": self.p, "df": self.df, "n": self.n, "confidence": self.confidence,
            "method": self.method, "test_train_ratio": self.test_train_ratio}


def paired_test(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE,
                test_train_ratio: float | None = None) -> PairedTest:
  """Paired comparison of `a` and `b` (one value per fold, the same folds in the same order).

  Without `test_train_ratio`: scipy's paired t-test (`ttest_rel`, two-sided) and its interval.
  With it: the corrected resampled t, t = mean(d) / (s_d · sqrt(1/n + ratio)), df = n - 1.
  All differences equal (s_d = 0): half-width 0, t None, p 1 if they are all 0, else 0.

  Raises:
    ValueError: different lengths, or as `mean_ci`.
  """
  a = _values(a, confidence, test_train_ratio)
  b = _values(b, confidence, test_train_ratio)
  if a.shape != b.shape:
    raise ValueError(f"paired values need the same folds: {a.size} against {b.size}")
  d = a - b
  n = int(d.size)
  method = STUDENT_T if test_train_ratio is None else CORRECTED_T
  ratio = None if test_train_ratio is None else float(test_train_ratio)
  mean = float(d.mean())
  if n < 2:
    return PairedTest(mean, None, None, None, n, confidence, method, ratio)
  sd = float(d.std(ddof=1))
  if sd == 0.0:
    return PairedTest(mean, 0.0, None, 1.0 if mean == 0.0 else 0.0, n, confidence, method, ratio)
  if ratio is None:
    res = scipy.stats.ttest_rel(a, b)
    ci = res.confidence_interval(confidence)
    return PairedTest(mean, float(ci.high - ci.low) / 2.0, float(res.statistic), float(res.pvalue),
                      n, confidence, method, ratio)
  se = sd * math.sqrt(_variance_factor(n, ratio))
  t = mean / se
  p = float(2.0 * scipy.stats.t.sf(abs(t), n - 1))
  half = float(scipy.stats.t.ppf(0.5 + confidence / 2.0, n - 1)) * se
  return PairedTest(mean, half, t, p, n, confidence, method, ratio)


def _number(result: Mapping[str, Any], key: str, where: str) -> float:
  if key not in result:
    raise ValueError(f"{where}: result has no {key!r} (keys: {sorted(result)})")
  try:
    return float(result[key])
  except (TypeError, ValueError) as e:
    raise ValueError(f"{where}: {key!r} is not a number: {result[key]!r}") from e


def fold_recalls(result: Mapping[str, Any], where: str = "result") -> list[float | None] | None:
  """Per-class recalls of a result.json from its `confusion` (rows = truth, columns =
  prediction): diagonal / row sum, None for a class with no validation utterance; None if the
  result has no confusion matrix.

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
  return [None if math.isnan(r) else float(r) for r in metrics_lib.recalls(cm)]


def valid_train_ratio(result: Mapping[str, Any]) -> float | None:
  """n_valid / n_train utterances from result.json's `counts` (None if absent)."""
  counts = result.get("counts") or {}
  try:
    n_valid = sum(int(v) for v in counts["valid_utterances"].values())
    n_train = sum(int(v) for v in counts["train_utterances"].values())
  except (KeyError, TypeError, AttributeError, ValueError):
    return None
  return n_valid / n_train if n_valid > 0 and n_train > 0 else None


def fold_rows(results: Mapping[int, Mapping[str, Any]]) -> list[dict[str, Any]]:
  """Rows `{fold, uar, wa, segment_uar, best_epoch, recalls, collapse, valid_train_ratio}` in
  fold order (see the module docstring).

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
    recalls = fold_recalls(r, where)
    present = [x for x in recalls or [] if x is not None]
    row["recalls"] = recalls
    row["collapse"] = min(present) if present else None
    row["valid_train_ratio"] = valid_train_ratio(r)
    mass = r.get("speaker_mass")  # SSA-CRNN: mean attention mass on the SSA's speaker half
    row["speaker_mass"] = None if mass is None else float(mass)
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
  with disjoint folds. The mean of the folds' ratios from their counts; if a fold has no counts,
  valid_fraction / (1 - valid_fraction).

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


def summarize(results: Mapping[int, Mapping[str, Any]], name: str = "",
              confidence: float = CONFIDENCE, split: str | None = None,
              valid_fraction: float | None = None, **extra: Any) -> dict[str, Any]:
  """The summary.json content: name, per-fold rows and, per metric, mean and CI over folds.

  Args:
    results: fold -> result.json content.
    name: the config name.
    confidence: of the intervals.
    split: `config.train.split`; "random" (overlapping resamples) uses the corrected resampled t
      with n_valid / n_train from the results' counts, other splits Student's t.
    valid_fraction: `config.train.valid_fraction`, the ratio's fallback for results without counts.
    **extra: stored as they are (system, corpus, workdir, ...).

  Besides `metrics` (uar, wa, segment_uar and, when the results have confusion matrices,
  collapse: the fold's smallest class recall), `recalls` maps each class to the mean ± CI of its
  recall over the folds where it was in the validation set; `statistics` names the method.
  """
  rows = fold_rows(results)
  if not rows:
    raise ValueError("no fold results to summarise")
  ratio, source = resample_ratio(rows, split, valid_fraction)
  ci = lambda xs: mean_ci(xs, confidence, ratio).to_json()  # noqa: E731
  stats = {k: ci([r[k] for r in rows]) for k in METRICS}
  classes = _classes(results, rows)
  recalls = None
  if classes is not None:
    collapse = [r["collapse"] for r in rows if r["collapse"] is not None]
    if collapse:
      stats["collapse"] = ci(collapse)
    recalls = {}
    for k, c in enumerate(classes):
      xs = [r["recalls"][k] for r in rows if r["recalls"] is not None and r["recalls"][k] is not None]
      recalls[c] = ci(xs) if xs else None
  masses = [r["speaker_mass"] for r in rows]
  if all(m is not None for m in masses):
    stats["speaker_mass"] = mean_ci(masses, confidence).to_json()  # a descriptive spread
  method = STUDENT_T if ratio is None else CORRECTED_T
  statistics = {"method": method, "test_train_ratio": ratio, "ratio_source": source,
                "description": METHOD_TEXT[method]}
  return {"name": name, "split": split, "folds": rows, "num_folds": len(rows),
          "confidence": confidence, "statistics": statistics, "metrics": stats,
          "classes": classes, "recalls": recalls, **extra}


def _label(summary: Mapping[str, Any], index: int) -> str:
  return summary.get("system") or summary.get("name") or f"system {index}"


def compare_systems(summaries: Sequence[Mapping[str, Any]],
                    labels: Sequence[str] | None = None) -> list[dict[str, Any]]:
  """Each system against the first: for each of `PAIRED` (UAR, collapse), the paired test of
  the per-fold differences (system - first) over the folds both have (with a value).

  The method follows the split (as `summarize`): the corrected resampled t for the random split,
  with n_valid / n_train the mean of both systems' ratios over the paired folds (or the first
  system's summary ratio), else the paired t-test. Systems on different splits are not paired
  (an entry with "error").
  """
  if labels is None:
    labels = [_label(s, i) for i, s in enumerate(summaries)]
  out = []
  if not summaries:
    return out
  ref = summaries[0]
  ref_rows = {r["fold"]: r for r in ref["folds"]}
  confidence = ref.get("confidence", CONFIDENCE)
  for label, s in zip(labels[1:], summaries[1:]):
    entry: dict[str, Any] = {"system": label, "reference": labels[0]}
    if s.get("split") != ref.get("split"):
      entry["error"] = (f"splits differ ({s.get('split')} against {ref.get('split')}): "
                        f"folds cannot be paired")
      out.append(entry)
      continue
    rows = {r["fold"]: r for r in s["folds"]}
    common = sorted(set(rows) & set(ref_rows))
    entry["folds"] = common
    if not common:
      entry["error"] = "no fold in common"
      out.append(entry)
      continue
    ratio = None
    if s.get("split") in RESAMPLED_SPLITS:
      ratios = [x for f in common for x in (rows[f].get("valid_train_ratio"),
                                            ref_rows[f].get("valid_train_ratio")) if x is not None]
      ratio = float(np.mean(ratios)) if ratios else (ref.get("statistics") or {}).get("test_train_ratio")
      if ratio is None:
        raise ValueError(f"{label}: the random split needs n_valid / n_train for the corrected t")
    for key in PAIRED:
      folds = [f for f in common if rows[f].get(key) is not None and ref_rows[f].get(key) is not None]
      if not folds:
        entry[key] = None
        continue
      test = paired_test([rows[f][key] for f in folds], [ref_rows[f][key] for f in folds],
                         confidence, ratio)
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
                s.get("method", STUDENT_T), s.get("test_train_ratio"))


def _fmt(stat: MeanCI | Mapping[str, Any] | None) -> str:
  if stat is None:
    return "n/a"
  return (stat if isinstance(stat, MeanCI) else _meanci(stat)).format()


def _pct(x: float | None) -> str:
  return "n/a" if x is None else f"{100.0 * x:.2f}"


def _method_note(summaries: Sequence[Mapping[str, Any]], paired: bool = False) -> list[str]:
  """One sentence per distinct (method, ratio) of the summaries."""
  seen = []
  for s in summaries:
    st = s.get("statistics") or {"method": STUDENT_T, "test_train_ratio": None}
    key = (st["method"], st.get("test_train_ratio"))
    if key not in seen:
      seen.append(key)
  lines = []
  for method, ratio in seen:
    text = METHOD_TEXT.get(method, method)
    if paired:
      text += "; " + PAIRED_TEXT.get(method, "")
    if ratio is not None:
      text += f"; n_valid/n_train = {ratio:.4f}"
    lines.append(text + ".")
  return lines


def render_markdown(summary: Mapping[str, Any]) -> str:
  """Per-fold table (metrics, per-class recalls, collapse) and the `mean ± CI` row, percent."""
  conf = summary.get("confidence", CONFIDENCE)
  label = f"mean ± {100 * conf:g} % CI"
  classes = summary.get("classes") or []
  titles = [f"{t} (%)" for t in METRICS.values()] + [f"recall {c} (%)" for c in classes]
  if classes:
    titles.append("collapse: min recall (%)")
  title = summary.get("name") or "cross-validation"
  if summary.get("system"):
    title += f" ({summary['system']}, {summary.get('corpus', '')} corpus)"
  lines = [f"# {title}: {summary['num_folds']} fold(s)", "",
           "| fold | " + " | ".join(titles) + " | best epoch |",
           "|---:|" + "---:|" * len(titles) + "---:|"]
  for r in summary["folds"]:
    best = "" if r.get("best_epoch") is None else str(r["best_epoch"])
    cells = [_pct(r[k]) for k in METRICS]
    if classes:
      cells += [_pct(x) for x in (r.get("recalls") or [None] * len(classes))] + [_pct(r.get("collapse"))]
    lines.append(f"| {r['fold']} | " + " | ".join(cells) + f" | {best} |")
  cells = [_fmt(_stat(summary, k)) for k in METRICS]
  if classes:
    cells += [_fmt(summary["recalls"].get(c)) for c in classes] + [_fmt(_stat(summary, "collapse"))]
  lines.append(f"| {label} | " + " | ".join(cells) + " | |")
  if summary["num_folds"] < 2:
    lines += ["", "A single fold: the confidence interval is undefined (n/a)."]
  lines += ["", f"{label}: " + " ".join(_method_note([summary]))]
  if classes:
    lines += ["Recalls from each fold's confusion matrix (rows = truth); collapse = the fold's "
              "smallest class recall, averaged over the folds."]
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
  """Table 1 (one row per system, `mean ± CI` in percent), the per-class recalls and collapse,
  and the paired differences against the first system (`compare_systems`)."""
  if labels is None:
    labels = [_label(s, i) for i, s in enumerate(summaries)]
  if len(labels) != len(summaries):
    raise ValueError(f"{len(labels)} labels for {len(summaries)} systems")
  conf = summaries[0].get("confidence", CONFIDENCE) if summaries else CONFIDENCE
  keys = [*METRICS, "collapse"]
  titles = [f"{t} (%)" for t in METRICS.values()] + ["collapse (%)"]
  with_mass = any("speaker_mass" in s["metrics"] for s in summaries)
  if with_mass:
    keys.append("speaker_mass")
    titles.append("speaker mass")
  lines = [f"# SER results with {100 * conf:g} % confidence interval", "",
           "| SER system | corpus | " + " | ".join(titles) + " | folds |",
           "|---|---|" + "---:|" * len(titles) + "---:|"]
  for label, s in zip(labels, summaries):
    cells = " | ".join(_fmt_mass(s["metrics"].get(k)) if k == "speaker_mass"
                       else _fmt(_stat(s, k)) for k in keys)
    lines.append(f"| {label} | {s.get('corpus', '')} | {cells} | {s['num_folds']} |")
  classes = next((s["classes"] for s in summaries if s.get("classes")), None)
  if classes:
    lines += ["", f"Per-class recall (%), mean ± {100 * conf:g} % CI over the folds (collapse above: "
              "each fold's smallest class recall, averaged over the folds):", "",
              "| SER system | " + " | ".join(classes) + " |", "|---|" + "---:|" * len(classes)]
    for label, s in zip(labels, summaries):
      rec = s.get("recalls") or {}
      cells = [_fmt(rec.get(c)) if s.get("classes") == classes else "n/a" for c in classes]
      lines.append(f"| {label} | " + " | ".join(cells) + " |")
  if paired:
    lines += ["", f"Paired differences against {labels[0]} over matching folds, percentage "
              f"points, mean [{100 * conf:g} % CI], two-sided p:", "",
              "| SER system | folds | Δ UAR | p (UAR) | Δ collapse | p (collapse) | test |",
              "|---|---:|---:|---:|---:|---:|---|"]
    for e in paired:
      if "error" in e:
        lines.append(f"| {e['system']} | | {e['error']} | | | | |")
        continue
      (du, pu), (dc, pc) = _diff(e.get("uar")), _diff(e.get("collapse"))
      method = (e.get("uar") or {}).get("method", "")
      test = "paired corrected resampled t" if method == CORRECTED_T else "paired t"
      lines.append(f"| {e['system']} | {len(e['folds'])} | {du} | {pu} | {dc} | {pc} | {test} |")
  lines += ["", "Intervals and tests: " + " ".join(_method_note(summaries, paired=bool(paired)))]
  if with_mass:
    lines += ["Speaker mass: the SSA's attention mass on its speaker half (sum over the real "
              "frames of alpha_sp), mean over the validation segments of the best epoch, averaged "
              "over the folds (± Student-t 95 % CI, descriptive)."]
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

  def __init__(self, fold_dir: str | os.PathLike, jsonl: bool = False):
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    self.fold_dir = os.fspath(fold_dir)
    os.makedirs(self.fold_dir, exist_ok=True)
    self._jsonl = os.path.join(self.fold_dir, "metrics.jsonl") if jsonl else None
    self._tb = SummaryWriter(logdir=self.fold_dir)

  def write(self, step: int, metrics: Mapping[str, Any]) -> None:
    """Logs the scalar entries of `metrics` at `step` (non-scalars go only to the jsonl line)."""
    for tag, value in _scalars(metrics).items():
      self._tb.add_scalar(tag, value, global_step=int(step))
    self._tb.flush()
    if self._jsonl is not None:
      io_lib.append_jsonl(self._jsonl, {"step": int(step), **dict(metrics)})

  def close(self) -> None:
    self._tb.close()

  def __enter__(self) -> "MetricWriter":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
