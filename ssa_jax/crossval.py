"""Cross-validation of one system or several (`bin.crossval`): trains (or resumes) every fold, then
writes the summaries in the paper's Table 1 form and the paired comparison; progress lines go to a
`report` callback (bin.crossval prints them; default: logged at INFO).

  parse_folds(spec, num_folds) -> list[int]          '0-9' / '0,2,5' / '0-2,7' / None (all)
  load_config(spec, overrides) -> ConfigDict          a config (file or name, `:arg`) + overrides
  run_crossval(config, workdir, folds) -> (summary, errors)
        `<workdir>/fold<K>/` per fold (as `bin.train`), then `<workdir>/summary.json` and
        `summary.md` (`ssa_jax.summary.summarize`: per-fold table, per-class recalls,
        worst-class recall, largest predicted-class share, mean ± 95 % CI: the corrected
        resampled t for the random split, the overlap-corrected t for the linguistic split,
        Student's t for disjoint folds)
  run_compare(configs, workdir, folds) -> (summaries, errors)
        each system in `<workdir>/<config.name>/`, then `<workdir>/compare.md` / compare.json:
        one Table 1 row per system, per-class recalls, and each system's paired UAR,
        worst-class recall and largest predicted-class share differences against the first
        (`summary.compare_systems`)
  tabulate_runs(specs, workdir) -> summaries         the same compare files for finished runs
  write_compare(workdir, summaries, ...)             the one writer of compare.json / compare.md
                                                     (bin.replicates' too)
  Progress, eta_seconds, format_duration             the per-fold progress line and its ETA

Whether a fold is finished, and where its files are: `ssa_jax.rundir`
(`FoldDir.complete_result`).

A fold whose result.json is complete (all its epochs run, or stopped by patience) is not retrained;
an interrupted fold resumes from its latest checkpoint. A fold that fails (ValueError,
FloatingPointError, OSError) is logged as an error and returned, and the others still run and are
summarised.

Progress: one line per finished fold, `[system] fold K: UAR …, trained in 2 min 10 s; 7 folds
left, about 15 min`. The estimate is the mean time of the folds trained in this invocation times
the folds still to train, over all the systems of a `--compare` (folds already complete are
neither counted as trained nor as left).

Several hosts: every process runs the same calls; only process 0 writes the summaries.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Any, Callable, Sequence

import ml_collections

from ssa_jax import configs as packaged_configs
from ssa_jax import distributed, rundir
from ssa_jax import io as io_lib

_log = logging.getLogger(__name__)
Report = Callable[[str], None]  # receives the progress lines (bin.crossval prints them)


def parse_folds(spec: str | None, num_folds: int) -> list[int]:
  """'0-9' / '0,2,5' / '0-2,7' -> sorted distinct folds; None -> 0..num_folds-1.

  Raises:
    ValueError: malformed spec or a fold outside 0..num_folds-1.
  """
  if spec is None or not spec.strip():
    return list(range(num_folds))
  folds: set[int] = set()
  for part in spec.split(","):
    part = part.strip()
    try:
      if "-" in part:
        lo, hi = (int(x) for x in part.split("-", 1))
        if lo > hi:
          raise ValueError
        folds.update(range(lo, hi + 1))
      else:
        folds.add(int(part))
    except ValueError:
      raise ValueError(f"--folds: cannot read {part!r} in {spec!r} (use e.g. 0-9 or 0,2,5)") from None
  bad = sorted(f for f in folds if not 0 <= f < num_folds)
  if bad:
    raise ValueError(f"--folds: fold(s) {bad} outside 0..{num_folds - 1}")
  return sorted(folds)


def load_config(spec: str, overrides: dict[str, Any]) -> Any:
  """A config file or a packaged config's name (`ssa_jax.configs.resolve`) with optional `:arg`
  (as `--config` reads it), plus flattened overrides.

  Raises:
    ValueError: no such file or name, `get_config()` returned None, or an override does not apply.
  """
  from ml_collections.config_flags import config_flags as cf  # pylint: disable=g-import-not-at-top
  path = spec.split(":", 1)[0]
  config = cf.ConfigFileFlagParser("compare").parse(packaged_configs.resolve(spec))
  if config is None:
    raise ValueError(f"{path}: get_config() returned None")
  try:
    config.update_from_flattened_dict(dict(overrides))
  except (KeyError, TypeError, AttributeError) as e:
    raise ValueError(f"{spec}: cannot apply the overrides {overrides}: {e}") from e
  return config


# ----------------------------------------------------------------------------------------------
# Progress


def format_duration(seconds: float) -> str:
  """`42 s`, `3 min 05 s`, `2 h 07 min`."""
  s = int(round(max(float(seconds), 0.0)))
  if s < 60:
    return f"{s} s"
  if s < 3600:
    return f"{s // 60} min {s % 60:02d} s"
  return f"{s // 3600} h {s % 3600 // 60:02d} min"


def eta_seconds(durations: Sequence[float], remaining: int) -> float | None:
  """Mean of `durations` times `remaining` (0 if nothing remains; None if nothing was timed)."""
  if remaining <= 0:
    return 0.0
  if not durations:
    return None
  return sum(durations) / len(durations) * remaining


@dataclasses.dataclass
class Progress:
  """The folds still to train in this invocation (all systems) and the times of those trained.

  `remaining` starts at the number of folds to train; `finished(seconds)` counts one fold off
  (None: it failed and is not timed).
  """

  remaining: int
  durations: list[float] = dataclasses.field(default_factory=list)

  def finished(self, seconds: float | None) -> None:
    self.remaining = max(self.remaining - 1, 0)
    if seconds is not None:
      self.durations.append(float(seconds))

  def eta(self) -> float | None:
    return eta_seconds(self.durations, self.remaining)

  def describe(self) -> str:
    """`7 folds left, about 15 min 00 s` / `no fold left`."""
    if self.remaining <= 0:
      return "no fold left"
    eta = self.eta()
    left = f"{self.remaining} fold{'s' if self.remaining != 1 else ''} left"
    return left + ("" if eta is None else f", about {format_duration(eta)}")


# ----------------------------------------------------------------------------------------------
# One system, several systems


def _num_folds(config: Any, dataset_fn: Callable[[], Any]) -> int:
  """`fold.num_folds` of the split; loso's is the number of speakers in the data."""
  from ssa_jax import fold as fold_lib  # pylint: disable=g-import-not-at-top
  n = fold_lib.num_folds(config.train)
  return len(dataset_fn().speaker_names) if n is None else n


class _Loader:
  """`prepare_fn` with the last dataset kept: configs with the same data and features (the
  systems of a comparison) share one; a different one replaces it (one in memory at a time)."""

  def __init__(self, prepare_fn: Callable[[Any], Any]):
    self._prepare = prepare_fn
    self._key: str | None = None
    self._dataset: Any = None

  def __call__(self, config: Any) -> Any:
    key = json.dumps({"data": config.data.to_dict(), "features": config.features.to_dict()},
                     sort_keys=True, default=str)
    if key != self._key:
      self._key, self._dataset = None, None  # the old one can go before the new one is made
      self._dataset, self._key = self._prepare(config), key
    return self._dataset


def _fold_list(config: Any, folds: str | Sequence[int] | None, load: Callable[[Any], Any]
               ) -> list[int]:
  if folds is None or isinstance(folds, str):
    return parse_folds(folds, _num_folds(config, lambda: load(config)))
  return list(folds)


def _pending(config: Any, workdir: str, folds: Sequence[int]) -> int:
  run = rundir.RunDir(workdir)
  return sum(run.fold(k).complete_result(config, warn=False) is None for k in folds)


def run_crossval(config: Any, workdir: str, folds: str | Sequence[int] | None = None,
                 train_fn: Callable[..., dict[str, Any]] | None = None,
                 prepare_fn: Callable[[Any], Any] | None = None,
                 progress: Progress | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 report: Report | None = None) -> tuple[dict[str, Any], list[str]]:
  """Trains the folds that are not complete, then writes summary.json and summary.md.

  Args:
    config: the full config.
    workdir: run directory (fold directories inside).
    folds: a fold spec ("0-9", "0,2,5"), a list of folds, or None for all.
    train_fn: `train.train_and_evaluate` (replaceable in tests).
    prepare_fn: `data.prepare` (replaceable in tests); called at most once, when needed.
    progress: the ETA bookkeeping shared by the systems of a comparison (default: this system's).
    clock: seconds, for the fold times (replaceable in tests).
    report: receives one progress line per fold (default: logged at INFO); a failed fold is
      logged as an error and returned.

  Returns:
    (summary dict, error messages of failed folds).

  Raises:
    ValueError: a bad fold spec; RuntimeError: no fold finished.
  """
  from ssa_jax import summary  # pylint: disable=g-import-not-at-top
  if train_fn is None:
    from ssa_jax import train  # pylint: disable=g-import-not-at-top
    train_fn = train.train_and_evaluate
  if prepare_fn is None:
    from ssa_jax import data  # pylint: disable=g-import-not-at-top
    prepare_fn = data.prepare
  workdir = os.path.abspath(os.path.expanduser(workdir))
  load = prepare_fn if isinstance(prepare_fn, _Loader) else _Loader(prepare_fn)
  folds = _fold_list(config, folds, load)
  if progress is None:
    progress = Progress(_pending(config, workdir, folds))
  report = _log.info if report is None else report
  label = summary.system_label(config)
  run = rundir.RunDir(workdir)
  results, errors = {}, []
  for fold in folds:
    fold_dir = run.fold(fold)
    result = fold_dir.complete_result(config)
    if result is not None:
      report(f"[{label}] fold {fold}: complete ({fold_dir.result_path}), not retrained: "
             f"UAR {100 * result['uar']:.2f} %")
      results[fold] = result
      continue
    report(f"[{label}] fold {fold}: training in {fold_dir.path}")
    start = clock()
    try:
      result = train_fn(config, workdir, fold, dataset=load(config))
    except (ValueError, FloatingPointError, OSError) as e:
      progress.finished(None)
      msg = f"[{label}] fold {fold} failed: {type(e).__name__}: {' '.join(str(e).split())}"
      _log.error(msg)
      errors.append(msg)
      continue
    seconds = clock() - start
    progress.finished(seconds)
    results[fold] = result
    report(f"[{label}] fold {fold}: UAR {100 * result['uar']:.2f} %, WA {100 * result['wa']:.2f} %, "
           f"segment UAR {100 * result['segment_uar']:.2f} % (best epoch {result['best_epoch']}); "
           f"trained in {format_duration(seconds)}; {progress.describe()}")
  if not results:
    raise RuntimeError(f"{workdir}: no fold finished; " + "; ".join(errors))
  missing = [f for f in folds if f not in results]
  s = summary.summarize(results, name=str(config.name), system=label,
                        corpus=str(config.data.corpus), split=str(config.train.split),
                        valid_fraction=float(config.train.valid_fraction),
                        num_folds=int(config.train.num_folds), workdir=workdir,
                        folds_requested=list(folds), folds_failed=missing)
  md = summary.render_markdown(s)
  if missing:
    md += f"\nFolds {missing} failed and are not in the table.\n"
  if distributed.is_main_process():  # several hosts: process 0 writes
    io_lib.write_json(os.path.join(workdir, "summary.json"), s)
    io_lib.write_text(os.path.join(workdir, "summary.md"), md)
  return s, errors


def _subdirs(configs: Sequence[Any]) -> list[str]:
  """`config.name` per system, `_2`, `_3`, ... appended to repeated names."""
  used: set[str] = set()
  out = []
  for config in configs:
    name = sub = str(config.name)
    k = 2
    while sub in used:
      sub, k = f"{name}_{k}", k + 1
    used.add(sub)
    out.append(sub)
  return out


def run_compare(configs: Sequence[Any], workdir: str, folds: str | Sequence[int] | None,
                train_fn: Callable[..., dict[str, Any]] | None = None,
                prepare_fn: Callable[[Any], Any] | None = None,
                clock: Callable[[], float] = time.monotonic,
                report: Report | None = None) -> tuple[list[dict[str, Any]], list[str]]:
  """Cross-validates each system in `<workdir>/<config.name>/`; writes compare.json (the
  summaries and the paired comparisons) and compare.md (`summary.render_compare`).

  The progress estimate covers the folds still to train of every system. A system with no
  finished fold is reported (an error) and left out of the table.
  """
  from ssa_jax import summary  # pylint: disable=g-import-not-at-top
  if prepare_fn is None:
    from ssa_jax import data  # pylint: disable=g-import-not-at-top
    prepare_fn = data.prepare
  workdir = os.path.abspath(os.path.expanduser(workdir))
  load = _Loader(prepare_fn)
  plans = []
  for config, sub in zip(configs, _subdirs(configs)):
    fold_list = _fold_list(config, folds, load)
    plans.append((config, os.path.join(workdir, sub), fold_list))
  progress = Progress(sum(_pending(c, d, f) for c, d, f in plans))
  summaries, errors = [], []
  for config, sub_dir, fold_list in plans:
    try:
      s, errs = run_crossval(config, sub_dir, fold_list, train_fn=train_fn, prepare_fn=load,
                             progress=progress, clock=clock, report=report)
    except RuntimeError as e:
      errors.append(str(e))
      _log.error("%s", e)
      continue
    summaries.append(s)
    errors += errs
  if summaries:
    write_compare(workdir, summaries)
  return summaries, errors


def write_compare(workdir: str, summaries: Sequence[dict[str, Any]],
                  labels: Sequence[str] | None = None, paired: list[dict[str, Any]] | None = None,
                  before: dict[str, Any] | None = None, after: dict[str, Any] | None = None,
                  extra_md: str = "") -> dict[str, Any]:
  """The one writer of `<workdir>/compare.json` and compare.md (process 0 only; creates the
  folder): compare.json = {**before, "systems": summaries, "paired": paired, **after},
  compare.md = `summary.render_compare` + `extra_md`. `paired`: default
  `summary.compare_systems(summaries, labels)` (the first system is the reference). Returns the
  JSON document."""
  from ssa_jax import summary  # pylint: disable=g-import-not-at-top
  if paired is None:
    paired = summary.compare_systems(summaries, labels)
  doc = {**(before or {}), "systems": list(summaries), "paired": paired, **(after or {})}
  md = summary.render_compare(summaries, labels, paired=paired or None) + extra_md
  if distributed.is_main_process():
    workdir = os.path.abspath(os.path.expanduser(workdir))
    os.makedirs(workdir, exist_ok=True)
    io_lib.write_json(os.path.join(workdir, "compare.json"), doc)
    io_lib.write_text(os.path.join(workdir, "compare.md"), md)
  return doc


def parse_run_spec(spec: str) -> tuple[str, str | None]:
  """`DIR` or `DIR=LABEL` -> (folder, label or None)."""
  folder, sep, label = spec.partition("=")
  if sep and not label.strip():
    raise ValueError(f"--runs {spec!r}: empty label after '='")
  return folder, (label.strip() if sep else None)


def tabulate_runs(specs: Sequence[str], workdir: str) -> list[dict[str, Any]]:
  """Summaries of finished runs (no training), each `DIR[=LABEL]`, and the same compare.md /
  compare.json as `run_compare`, written into `workdir`; the first run is the reference of the
  paired differences. The label defaults to the system name and the folder's name."""
  from ssa_jax import summary  # pylint: disable=g-import-not-at-top
  summaries, labels = [], []
  for spec in specs:
    folder, label = parse_run_spec(spec)
    results = rundir.RunDir(folder).results()
    first = results[min(results)]
    cfg = first.get("config") or {}
    model, train_cfg = cfg.get("model", {}), cfg.get("train", {})
    system = summary.system_label(ml_collections.ConfigDict(
        {"model": {"name": model.get("name", "?")},
         "train": {"constraint": train_cfg.get("constraint", "none")}}))
    s = summary.summarize(results, name=str(cfg.get("name", os.path.basename(folder))),
                          system=label or f"{system} ({os.path.basename(os.path.normpath(folder))})",
                          corpus=str(first.get("corpus", "")), split=first.get("split"),
                          valid_fraction=train_cfg.get("valid_fraction"),
                          workdir=os.path.abspath(folder))
    summaries.append(s)
    labels.append(s["system"])
  write_compare(workdir, summaries, labels)
  return summaries

