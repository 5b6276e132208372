"""Cross-validation: trains (or resumes) every fold, then writes the paper's Table 1 summary.

  python -m bin.crossval --config configs/quickstart.py --folds 0-9 [--workdir runs/quickstart]
  python -m bin.crossval --folds 0,2,5 --config.train.epochs=4
  python -m bin.crossval --compare configs/quickstart.py:acrnn configs/quickstart.py:acrnn_r \\
      configs/quickstart.py --workdir runs/table1

Single system: `<workdir>/fold<K>/` per fold (as `bin.train`), then `<workdir>/summary.json` and
`<workdir>/summary.md` (per-fold UAR, WA, segment UAR, best epoch; mean ± 95 % CI over folds, Student's
t). A fold whose result.json is complete (all its epochs run, or stopped by patience) is not retrained;
an interrupted fold resumes from its latest checkpoint.

--compare CONFIG ...: several systems (config files, with an optional `:arg` for `get_config`),
each in `<workdir>/<config.name>/`, and one table with a row per system in `<workdir>/compare.md`
(and compare.json), like Table 1. `--config.key=value` overrides apply to every compared system;
`--config FILE`, if given as well, is the first system.

Exit code 1 if a fold failed (the others are still run and summarised). A bad flag, config file,
key, value or fold spec, or a missing corpus, is one line on stderr and exit code 1 (`bin/_cli.py`).

Several hosts: the flags of `bin.train` (--coordinator HOST:PORT --num_processes N --process_id I,
or none on a TPU VM / Slurm / Open MPI job; see ssa_jax/distributed.py), the same command on every
process; only process 0 writes the summaries and prints them (the workdir is shared by all hosts).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Callable, Sequence

from absl import flags
from ml_collections import config_flags

from bin import _cli

from ssa_jax import distributed
from ssa_jax import io as io_lib

_CONFIG = _cli.define_config_flag("quickstart.py")
_FOLDS = flags.DEFINE_string("folds", None, "Folds to run: '0-9', '0,2,5', '0-2,7' "
                             "(default: all folds of the configured split).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (default: runs/<config.name>, "
                               "or runs/compare with --compare).")
_COMPARE = flags.DEFINE_multi_string("compare", [], "Config files of the systems to compare "
                                     "(several after one --compare, or --compare repeated).")

_DISTRIBUTED = distributed.define_flags()  # --coordinator, --num_processes, --process_id, ...
flags.adopt_module_key_flags(distributed)  # listed by --help with this module's flags

REQUIRED = ("uar", "wa", "segment_uar", "best_epoch")


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


def complete_result(fold_dir: str, config: Any) -> dict[str, Any] | None:
  """result.json of a finished fold, or None if it is missing, unreadable or incomplete (fewer
  epochs run than `config.train.epochs` and not stopped by patience)."""
  path = os.path.join(fold_dir, "result.json")
  if not os.path.isfile(path):
    return None
  try:
    with open(path, encoding="utf-8") as f:
      result = json.load(f)
  except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
    print(f"warning: {path} is unreadable ({e}); the fold will be resumed", file=sys.stderr)
    return None
  if not isinstance(result, dict) or any(k not in result for k in REQUIRED):
    return None
  if result.get("stopped_by") == "patience":
    return result
  if int(result.get("epochs_run", 0)) < int(config.train.epochs):
    return None
  return result


def _num_folds(config: Any, dataset_fn: Callable[[], Any]) -> int:
  if config.train.split == "loso":
    return len(dataset_fn().speaker_names)
  return int(config.train.num_folds)


def run_crossval(config: Any, workdir: str, folds: str | Sequence[int] | None = None,
                 train_fn: Callable[..., dict[str, Any]] | None = None,
                 prepare_fn: Callable[[Any], Any] | None = None) -> tuple[dict[str, Any], list[str]]:
  """Trains the folds that are not complete, then writes summary.json and summary.md.

  Args:
    config: the full config.
    workdir: run directory (fold directories inside).
    folds: a fold spec ("0-9", "0,2,5"), a list of folds, or None for all.
    train_fn: `train.train_and_evaluate` (replaceable in tests).
    prepare_fn: `data.prepare` (replaceable in tests); called at most once, when needed.

  Returns:
    (summary dict, error messages of failed folds).
  """
  from ssa_jax import summary  # pylint: disable=g-import-not-at-top
  if train_fn is None:
    from ssa_jax import train  # pylint: disable=g-import-not-at-top
    train_fn = train.train_and_evaluate
  if prepare_fn is None:
    from ssa_jax import data  # pylint: disable=g-import-not-at-top
    prepare_fn = data.prepare
  workdir = os.path.abspath(os.path.expanduser(workdir))
  cache: dict[str, Any] = {}

  def dataset():
    if "ds" not in cache:
      cache["ds"] = prepare_fn(config)
    return cache["ds"]

  if folds is None or isinstance(folds, str):
    folds = parse_folds(folds, _num_folds(config, dataset))
  label = summary.system_label(config)
  results, errors = {}, []
  for fold in folds:
    fold_dir = os.path.join(workdir, f"fold{fold}")
    result = complete_result(fold_dir, config)
    if result is not None:
      print(f"[{label}] fold {fold}: complete ({fold_dir}/result.json), not retrained")
    else:
      print(f"[{label}] fold {fold}: training in {fold_dir}")
      try:
        result = train_fn(config, workdir, fold, dataset=dataset())
      except (ValueError, FloatingPointError, OSError) as e:
        msg = f"[{label}] fold {fold} failed: {type(e).__name__}: {' '.join(str(e).split())}"
        print(msg, file=sys.stderr)
        errors.append(msg)
        continue
    results[fold] = result
    print(f"[{label}] fold {fold}: UAR {100 * result['uar']:.2f} %, WA {100 * result['wa']:.2f} %, "
          f"segment UAR {100 * result['segment_uar']:.2f} % (best epoch {result['best_epoch']})")
  if not results:
    raise RuntimeError(f"{workdir}: no fold finished; " + "; ".join(errors))
  missing = [f for f in folds if f not in results]
  s = summary.summarize(results, name=str(config.name), system=label,
                        corpus=str(config.data.corpus), split=str(config.train.split),
                        workdir=workdir, folds_requested=list(folds), folds_failed=missing)
  md = summary.render_markdown(s)
  if missing:
    md += f"\nFolds {missing} failed and are not in the table.\n"
  if distributed.is_main_process():  # several hosts: process 0 writes
    io_lib.write_json(os.path.join(workdir, "summary.json"), s)
    io_lib.write_text(os.path.join(workdir, "summary.md"), md)
  return s, errors


def load_config(spec: str, overrides: dict[str, Any]) -> Any:
  """A config file with optional `:arg` (as `--config` reads it), plus flattened overrides."""
  from ml_collections.config_flags import config_flags as cf  # pylint: disable=g-import-not-at-top
  path = spec.split(":", 1)[0]
  if not os.path.isfile(path):
    raise ValueError(f"{path}: config file not found")
  config = cf.ConfigFileFlagParser("compare").parse(spec)
  if config is None:
    raise ValueError(f"{path}: get_config() returned None")
  try:
    config.update_from_flattened_dict(dict(overrides))
  except (KeyError, TypeError, AttributeError) as e:
    raise ValueError(f"{spec}: cannot apply the overrides {overrides}: {e}") from e
  return config


def run_compare(configs: Sequence[Any], workdir: str, folds: str | None,
                **kwargs: Any) -> tuple[list[dict[str, Any]], list[str]]:
  """Cross-validates each system in `<workdir>/<config.name>/`; writes compare.json / compare.md."""
  from ssa_jax import summary  # pylint: disable=g-import-not-at-top
  workdir = os.path.abspath(os.path.expanduser(workdir))
  summaries, errors, used = [], [], set()
  for config in configs:
    name = str(config.name)
    sub = name
    k = 2
    while sub in used:
      sub, k = f"{name}_{k}", k + 1
    used.add(sub)
    try:
      s, errs = run_crossval(config, os.path.join(workdir, sub), folds, **kwargs)
    except RuntimeError as e:
      errors.append(str(e))
      print(f"error: {e}", file=sys.stderr)
      continue
    summaries.append(s)
    errors += errs
  if summaries and distributed.is_main_process():
    io_lib.write_json(os.path.join(workdir, "compare.json"), {"systems": summaries})
    io_lib.write_text(os.path.join(workdir, "compare.md"), summary.render_compare(summaries))
  return summaries, errors


def main(argv: list[str]) -> int:
  compare = list(_COMPARE.value)
  extra = argv[1:]
  if extra and not compare:
    _cli.no_arguments(argv)
  compare += extra  # `--compare a.py b.py c.py`: absl keeps b.py and c.py as positional args
  overrides = config_flags.get_override_values(flags.FLAGS["config"])
  # As bin.train: compiled XLA programs are cached, so folds after the first start faster.
  _cli.setup_jax(_cli.config(_CONFIG).data.cache_dir)  # overrides included
  plan = distributed.initialize_from_flags(_DISTRIBUTED)  # before anything touches a device
  if plan.kwargs is not None:
    print(f"{plan.reason}: {distributed.describe()}", file=sys.stderr)
  main_process = distributed.is_main_process()
  try:
    if compare:
      specs = compare
      if flags.FLAGS["config"].present:
        specs = [config_flags.get_config_filename(flags.FLAGS["config"])] + compare
      configs = [load_config(spec, overrides) for spec in specs]
      workdir = _WORKDIR.value or os.path.join("runs", "compare")
      summaries, errors = run_compare(configs, workdir, _FOLDS.value)
      if summaries and main_process:
        print(open(os.path.join(workdir, "compare.md"), encoding="utf-8").read())
        print(f"wrote {os.path.join(os.path.abspath(workdir), 'compare.md')} and compare.json")
    else:
      config = _cli.config(_CONFIG)
      workdir = _WORKDIR.value or os.path.join("runs", str(config.name))
      _, errors = run_crossval(config, workdir, _FOLDS.value)
      if main_process:
        print(open(os.path.join(workdir, "summary.md"), encoding="utf-8").read())
        print(f"wrote {os.path.join(os.path.abspath(workdir), 'summary.md')} and summary.json")
  except KeyboardInterrupt:
    print("\ninterrupted; rerun the same command to resume (finished folds are kept)",
          file=sys.stderr)
    return 130
  return 1 if errors else 0


if __name__ == "__main__":
  _cli.run(main, user_errors=(ValueError, RuntimeError, OSError))
