"""Cross-validation summaries in the paper's Table 1 form, and the per-epoch metric writer.

  mean_ci(values, confidence=0.95) -> MeanCI     mean and Student-t confidence interval over folds:
                                                 half-width = t_{(1+c)/2, n-1} * s / sqrt(n), s the
                                                 sample standard deviation (ddof=1); undefined
                                                 (None) for a single fold.
  fold_rows(results) -> list[dict]               one row per fold: fold, uar, wa, segment_uar,
                                                 best_epoch (fractions in [0, 1], as in result.json)
  summarize(results, name) -> dict               the summary.json content (rows + mean +- CI)
  render_markdown(summary) -> str                per-fold table + the "mean +- 95 % CI" row, percent
  render_compare(summaries) -> str               one row per system, like Table 1
  MetricWriter(fold_dir)                         TensorBoard scalars (tensorboardX) per epoch, beside
                                                 metrics.jsonl (train.py writes them live).

`results` maps a fold number to that fold's result.json content (`ssa_jax.train`).
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import scipy.stats

from ssa_jax import io as io_lib

CONFIDENCE = 0.95
# Metrics summarised over folds: result.json key -> column title.
METRICS = {"uar": "UAR", "wa": "WA", "segment_uar": "segment UAR"}


@dataclasses.dataclass(frozen=True)
class MeanCI:
  """Mean of `n` values and the half-width of its `confidence` interval (None if n < 2)."""

  mean: float
  half_width: float | None
  std: float | None  # sample standard deviation (ddof=1); None if n < 2
  n: int
  confidence: float = CONFIDENCE

  @property
  def low(self) -> float | None:
    return None if self.half_width is None else self.mean - self.half_width

  @property
  def high(self) -> float | None:
    return None if self.half_width is None else self.mean + self.half_width

  def to_json(self) -> dict[str, Any]:
    return {"mean": self.mean, "ci": self.half_width, "low": self.low, "high": self.high,
            "std": self.std, "n": self.n, "confidence": self.confidence}

  def format(self, percent: bool = True, digits: int = 2) -> str:
    """`63.86 ± 2.23` (percent of fractions by default); `63.86 ± n/a` for a single fold."""
    scale = 100.0 if percent else 1.0
    if math.isnan(self.mean):
      return "n/a"
    ci = "n/a" if self.half_width is None else f"{scale * self.half_width:.{digits}f}"
    return f"{scale * self.mean:.{digits}f} ± {ci}"


def mean_ci(values: Iterable[float], confidence: float = CONFIDENCE) -> MeanCI:
  """Mean and Student-t confidence interval of fold values.

  Raises:
    ValueError: no values, a non-finite value, or `confidence` outside (0, 1).
  """
  x = np.asarray(list(values), np.float64)
  if x.ndim != 1 or x.size == 0:
    raise ValueError(f"need at least one value to summarise, got {x.size}")
  if not np.all(np.isfinite(x)):
    raise ValueError(f"values must be finite, got {x.tolist()}")
  if not 0.0 < confidence < 1.0:
    raise ValueError(f"confidence must be in (0, 1), got {confidence}")
  n = int(x.size)
  mean = float(x.mean())
  if n < 2:
    return MeanCI(mean, None, None, n, confidence)
  std = float(x.std(ddof=1))
  t = float(scipy.stats.t.ppf(0.5 + confidence / 2.0, n - 1))
  return MeanCI(mean, t * std / math.sqrt(n), std, n, confidence)


def _number(result: Mapping[str, Any], key: str, where: str) -> float:
  if key not in result:
    raise ValueError(f"{where}: result has no {key!r} (keys: {sorted(result)})")
  try:
    return float(result[key])
  except (TypeError, ValueError) as e:
    raise ValueError(f"{where}: {key!r} is not a number: {result[key]!r}") from e


def fold_rows(results: Mapping[int, Mapping[str, Any]]) -> list[dict[str, Any]]:
  """Rows `{fold, uar, wa, segment_uar, best_epoch}` in fold order.

  Raises:
    ValueError: a result lacks one of the metrics (the message names the fold).
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
    rows.append(row)
  return rows


def summarize(results: Mapping[int, Mapping[str, Any]], name: str = "",
              confidence: float = CONFIDENCE, **extra: Any) -> dict[str, Any]:
  """The summary.json content: name, per-fold rows and, per metric, mean and CI over folds."""
  rows = fold_rows(results)
  if not rows:
    raise ValueError("no fold results to summarise")
  stats = {k: mean_ci([r[k] for r in rows], confidence).to_json() for k in METRICS}
  return {"name": name, "folds": rows, "num_folds": len(rows), "confidence": confidence,
          "metrics": stats, **extra}


def system_label(config: Any) -> str:
  """Table 1 name of a config: ACRNN, ACRNN-r, SSA-CRNN-r (`-r`: the Eq. 8 constraint)."""
  base = {"acrnn": "ACRNN", "ssa_crnn": "SSA-CRNN"}.get(str(config.model.name), str(config.model.name))
  suffix = {"none": "", "l1_sphere": "-r", "rescale": "-r (rescale)"}.get(
      str(config.train.constraint), f" ({config.train.constraint})")
  return base + suffix


def _stat(summary: Mapping[str, Any], key: str) -> MeanCI:
  s = summary["metrics"][key]
  return MeanCI(s["mean"], s["ci"], s["std"], s["n"], s.get("confidence", CONFIDENCE))


def _pct(x: float) -> str:
  return f"{100.0 * x:.2f}"


def render_markdown(summary: Mapping[str, Any]) -> str:
  """Per-fold table and the `mean ± CI` row, values in percent with two decimals."""
  conf = summary.get("confidence", CONFIDENCE)
  label = f"mean ± {100 * conf:g} % CI"
  titles = [f"{t} (%)" for t in METRICS.values()]
  title = summary.get("name") or "cross-validation"
  if summary.get("system"):
    title += f" ({summary['system']}, {summary.get('corpus', '')} corpus)"
  lines = [f"# {title}: {summary['num_folds']} fold(s)", "",
           "| fold | " + " | ".join(titles) + " | best epoch |",
           "|---:|" + "---:|" * len(titles) + "---:|"]
  for r in summary["folds"]:
    best = "" if r.get("best_epoch") is None else str(r["best_epoch"])
    lines.append(f"| {r['fold']} | " + " | ".join(_pct(r[k]) for k in METRICS) + f" | {best} |")
  lines.append(f"| {label} | " + " | ".join(_stat(summary, k).format() for k in METRICS) + " | |")
  if summary["num_folds"] < 2:
    lines += ["", "A single fold: the confidence interval is undefined (n/a)."]
  lines += ["", f"{label}: Student's t with n - 1 degrees of freedom over the folds "
            "(half-width t · s / √n, s the sample standard deviation)."]
  return "\n".join(lines) + "\n"


def render_compare(summaries: Sequence[Mapping[str, Any]],
                   labels: Sequence[str] | None = None) -> str:
  """Table 1: one row per system, `mean ± CI` in percent for each metric."""
  if labels is None:
    labels = [s.get("system") or s.get("name") or f"system {i}" for i, s in enumerate(summaries)]
  if len(labels) != len(summaries):
    raise ValueError(f"{len(labels)} labels for {len(summaries)} systems")
  conf = summaries[0].get("confidence", CONFIDENCE) if summaries else CONFIDENCE
  titles = [f"{t} (%)" for t in METRICS.values()]
  lines = [f"# SER results with {100 * conf:g} % confidence interval", "",
           "| SER system | corpus | " + " | ".join(titles) + " | folds |",
           "|---|---|" + "---:|" * len(titles) + "---:|"]
  for label, s in zip(labels, summaries):
    cells = " | ".join(_stat(s, k).format() for k in METRICS)
    lines.append(f"| {label} | {s.get('corpus', '')} | {cells} | {s['num_folds']} |")
  return "\n".join(lines) + "\n"


# --- TensorBoard ---------------------------------------------------------------------------------


_SKIP = ("epoch", "step")


def _tag(key: str) -> str:
  """metrics.jsonl names to TensorBoard tags: `train_loss` -> `train/loss`, `valid_uar` ->
  `valid/uar`; other names unchanged."""
  for prefix in ("train_", "valid_"):
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
