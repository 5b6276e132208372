"""A trained run folder: where every file of a fold lives, and how it is read back.

  workdir/                      a run: one system, its folds (`RunDir`)
    fold<K>/                    one fold (`FoldDir`; the name: `fold_name(K)`)
      config.json               the config the fold trained with (`FoldDir.config()`)
      metrics.jsonl             a line per evaluation (`FoldDir.metrics_path`)
      result.json               written last: the fold is finished (`FoldDir.result()`,
                                `FoldDir.complete_result(config)`)
      checkpoints/              orbax, the latest and the best (`FoldDir.best_checkpoint()`)
      figures/                  `bin.evaluate`'s default output
      events.out.tfevents.*     TensorBoard scalars
    summary.json, summary.md    `bin.crossval` (ssa_jax/crossval.py)

  fd = FoldDir.of(workdir, 3)            # <workdir>/fold3
  fd.config(); fd.result(); fd.complete_result(config); fd.best_checkpoint(); fd.number
  RunDir(workdir).folds() -> [0, 1, ...]; RunDir(workdir).results() -> {K: result.json}

This module is the only place that builds or parses the `fold<K>` name and reads config.json.
It imports neither JAX nor orbax (the checkpoint is read by `ssa_jax.checkpointing`, imported
when asked for), so a command can read a run's config before it sets JAX up.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import ml_collections

from ssa_jax import io as io_lib

_log = logging.getLogger(__name__)

FOLD_PREFIX = "fold"
REQUIRED = ("uar", "wa", "segment_uar", "best_epoch")  # keys of a result.json that is whole

# Fields a config.json written before they existed lacks, with the value those runs used where
# it is not today's default (every other missing field takes `config.base_config()`'s value).
LEGACY_VALUES = {("model", "logit_scale"): 1.0}  # before the temperature: none (s = 1)


def fold_name(fold: int) -> str:
  """The folder name of fold `fold`: "fold<K>"."""
  return f"{FOLD_PREFIX}{int(fold)}"


def parse_fold_name(name: str) -> int | None:
  """K of a folder named "fold<K>", else None."""
  rest = name[len(FOLD_PREFIX):]
  return int(rest) if name.startswith(FOLD_PREFIX) and rest.isdigit() else None


def _abs(path: str | os.PathLike) -> str:
  return os.path.abspath(os.path.expanduser(os.fspath(path)))


def _with_defaults(stored: dict[str, Any]) -> dict[str, Any]:
  """`stored` (config.json) with the fields it lacks filled in (`LEGACY_VALUES`, else today's
  defaults)."""
  from ssa_jax import config as config_lib  # pylint: disable=g-import-not-at-top

  def fill(dst: dict[str, Any], base: dict[str, Any], where: tuple[str, ...]) -> None:
    for key, value in base.items():
      if key not in dst:
        dst[key] = LEGACY_VALUES.get(where + (key,), value)
      elif isinstance(value, dict) and isinstance(dst[key], dict):
        fill(dst[key], value, where + (key,))
  out = dict(stored)
  fill(out, config_lib.base_config().to_dict(), ())
  return out


@dataclasses.dataclass(frozen=True)
class FoldDir:
  """One fold's folder (an absolute path); nothing is read until asked for."""

  path: str

  def __post_init__(self):
    object.__setattr__(self, "path", _abs(self.path))

  @classmethod
  def of(cls, workdir: str | os.PathLike, fold: int) -> "FoldDir":
    """`<workdir>/fold<K>`."""
    return cls(os.path.join(_abs(workdir), fold_name(fold)))

  @property
  def config_path(self) -> str:
    return os.path.join(self.path, "config.json")

  @property
  def result_path(self) -> str:
    return os.path.join(self.path, "result.json")

  @property
  def metrics_path(self) -> str:
    return os.path.join(self.path, "metrics.jsonl")

  @property
  def checkpoints_path(self) -> str:
    return os.path.join(self.path, "checkpoints")

  @property
  def figures_path(self) -> str:
    return os.path.join(self.path, "figures")

  @property
  def number(self) -> int:
    """K: result.json's "fold", else the folder name fold<K>; a ValueError if neither says."""
    if os.path.isfile(self.result_path):
      return int(io_lib.read_json(self.result_path)["fold"])
    k = parse_fold_name(os.path.basename(self.path))
    if k is None:
      raise ValueError(f"{self.path}: cannot tell the fold number; pass it")
    return k

  def error(self, problem: str) -> ValueError:
    """A one-line ValueError about this folder; a run folder gets the hint to name a fold."""
    hint = ""
    if os.path.isdir(self.path):
      folds = RunDir(self.path).folds(with_result=False)
      if folds:
        hint = (f" (it looks like a run directory: pass one of its folds, e.g. "
                f"{os.path.join(self.path, fold_name(folds[0]))})")
    return ValueError(f"{self.path}: {problem}{hint}")

  def config(self) -> ml_collections.ConfigDict:
    """The config the fold trained with (config.json, fields it predates filled in).

    Raises:
      ValueError: no config.json (not a trained fold), or an unreadable one.
    """
    if not os.path.isfile(self.config_path):
      raise self.error("not a trained fold directory (no config.json)")
    try:
      stored = io_lib.read_json(self.config_path)
    except ValueError as e:
      raise ValueError(f"{self.config_path}: not a valid config file ({e})") from e
    if not isinstance(stored, dict):
      raise ValueError(f"{self.config_path}: not a valid config file (not a JSON object)")
    return ml_collections.ConfigDict(_with_defaults(stored))

  def write_config(self, config: ml_collections.ConfigDict) -> None:
    """Writes config.json (atomically), creating the folder."""
    os.makedirs(self.path, exist_ok=True)
    io_lib.write_json(self.config_path, config.to_dict())

  def write_result(self, result: dict[str, Any]) -> None:
    """Writes result.json (atomically): the fold is finished."""
    io_lib.write_json(self.result_path, result)

  def result(self) -> dict[str, Any] | None:
    """result.json, or None if there is none; a ValueError if it cannot be read."""
    if not os.path.isfile(self.result_path):
      return None
    return io_lib.read_json(self.result_path)

  def complete_result(self, config: Any, warn: bool = True) -> dict[str, Any] | None:
    """result.json of a finished fold, or None if it is missing, unreadable or incomplete
    (fewer epochs run than `config.train.epochs` and not stopped by patience; another
    `train.selection`; selection "inner" without its test scoring; another scored subset,
    `train.exclude_enroll_k`). `warn`: log a warning when
    the file exists but cannot be read."""
    try:
      result = self.result()
    except ValueError as e:
      if warn:
        _log.warning("%s; the fold will be resumed", e)
      return None
    if not isinstance(result, dict) or any(k not in result for k in REQUIRED):
      return None
    # A result of another model selection (files from before `selection`: "valid") is not this
    # run's; selection "inner" is finished only once the test set was scored (result["inner"]).
    selection = config.train.get("selection", "valid")
    if result.get("selection", "valid") != selection:
      return None
    if selection == "inner" and not isinstance(result.get("inner"), dict):
      return None
    # A result scored on another subset (train.exclude_enroll_k, enroll.scored_k): not this run's.
    from ssa_jax import enroll  # pylint: disable=g-import-not-at-top  (numpy only)
    scored = result.get("scored")
    if isinstance(scored, dict) and scored.get("enroll_k") != enroll.scored_k(config):
      return None
    if result.get("stopped_by") == "patience":
      return result
    if int(result.get("epochs_run", 0)) < int(config.train.epochs):
      return None
    return result

  def best_checkpoint(self) -> dict[str, Any]:
    """`checkpointing.load_best` of this fold: {"variables", "config", "classes", "speakers",
    "stats", "step", "meta"}, checked against config.json's number of classes.

    Raises:
      ValueError: not a fold directory, no checkpoint, or an unreadable one (names the path).
    """
    from ssa_jax import checkpointing  # pylint: disable=g-import-not-at-top  (orbax: slow import)
    config = self.config()  # a clear error for a run directory or a missing folder
    try:
      best = checkpointing.load_best(self.path, config)
    except FileNotFoundError as e:
      raise self.error(f"{e} (has this fold been trained?)") from e
    except Exception as e:  # pylint: disable=broad-except  # orbax: any unreadable file
      first = str(e).splitlines()[0][:200] if str(e) else ""
      raise ValueError(f"{self.path}: the best checkpoint is unreadable "
                       f"({type(e).__name__}: {first})") from e
    if int(config.model.num_classes) != len(best["classes"]):
      raise ValueError(f"{self.path}: config.json has {config.model.num_classes} classes, the "
                       f"checkpoint {len(best['classes'])} ({tuple(best['classes'])})")
    return best


@dataclasses.dataclass(frozen=True)
class RunDir:
  """A run folder holding fold<K>/ folders (an absolute path)."""

  path: str

  def __post_init__(self):
    object.__setattr__(self, "path", _abs(self.path))

  def fold(self, fold: int) -> FoldDir:
    return FoldDir.of(self.path, fold)

  def folds(self, with_result: bool = True) -> list[int]:
    """The K of every fold<K>/ folder (with a result.json, unless `with_result` is False)."""
    if not os.path.isdir(self.path):
      return []
    out = []
    for name in os.listdir(self.path):
      k = parse_fold_name(name)
      if k is not None and os.path.isdir(os.path.join(self.path, name)) and (
          not with_result or os.path.isfile(self.fold(k).result_path)):
        out.append(k)
    return sorted(out)

  def results(self) -> dict[int, dict[str, Any]]:
    """fold -> result.json of every fold that has one.

    Raises:
      ValueError: the folder does not exist, holds no result.json, or one is unreadable.
    """
    if not os.path.isdir(self.path):
      raise ValueError(f"{self.path}: no such run folder")
    results = {k: self.fold(k).result() for k in self.folds()}
    if not results:
      raise ValueError(f"{self.path}: no fold<K>/result.json (train folds first)")
    return results
