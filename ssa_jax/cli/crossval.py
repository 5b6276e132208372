"""Cross-validation: trains (or resumes) every fold, then writes the paper's Table 1 summary.

  python -m bin.crossval --config configs/quickstart.py --folds 0-9 [--workdir runs/quickstart]
  python -m bin.crossval --folds 0,2,5 --config.train.epochs=4
  python -m bin.crossval --compare configs/quickstart.py:acrnn configs/quickstart.py:acrnn_r \\
      configs/quickstart.py --workdir runs/table1

Single system: `<workdir>/fold<K>/` per fold (as `bin.train`), then `<workdir>/summary.json` and
`<workdir>/summary.md` (per-fold UAR, WA, segment UAR, per-class recalls, worst-class recall = the
smallest class recall, largest predicted-class share = the share of the utterances given the most
predicted class, best epoch; mean ± 95 % CI over folds: the corrected resampled t of Nadeau & Bengio
for the random split, the overlap-corrected t for the linguistic split, whose validation sets
overlap, Student's t for disjoint folds; see ssa_jax/summary.py). A fold whose result.json is complete is not
retrained; an interrupted fold resumes from its latest checkpoint. One line per finished fold with
its UAR, its time and an estimate of the time left.

--compare CONFIG ...: several systems (config files, with an optional `:arg` for `get_config`),
each in `<workdir>/<config.name>/`, and one table with a row per system in `<workdir>/compare.md`
(and compare.json), like Table 1, plus each system's paired UAR, worst-class recall and largest
predicted-class share differences against the first (mean, 95 % CI, p). `--config.key=value` overrides apply to every compared system;
`--config FILE`, if given as well, is the first system.

--runs DIR[=LABEL] ...: no training; the same compare.md / compare.json for run folders that
are already trained (e.g. one system with several `--config.` overrides, each in its own
--workdir), written into --workdir.

Exit code 1 if a fold failed (the others are still run and summarised). A bad flag, config file,
key, value or fold spec, or a missing corpus, is one line on stderr and exit code 1 (`ssa_jax/cli/_cli.py`).

Several hosts: the flags of `bin.train` (--coordinator HOST:PORT --num_processes N --process_id I,
or none on a TPU VM / Slurm / Open MPI job; see ssa_jax/distributed.py), the same command on every
process; only process 0 writes the summaries and prints them (the workdir is shared by all hosts).

The library code is `ssa_jax/crossval.py`.
"""

from __future__ import annotations

import os
import sys

from absl import flags
from ml_collections import config_flags

from ssa_jax.cli import _cli

from ssa_jax import distributed
from ssa_jax.crossval import load_config, run_compare, run_crossval, tabulate_runs

_CONFIG = _cli.define_config_flag("quickstart")
_FOLDS = flags.DEFINE_string("folds", None, "Folds to run: '0-9', '0,2,5', '0-2,7' "
                             "(default: all folds of the configured split).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (default: runs/<config.name>, "
                               "or runs/compare with --compare).")
_COMPARE = flags.DEFINE_multi_string("compare", [], "Config files of the systems to compare "
                                     "(several after one --compare, or --compare repeated).")

_RUNS = flags.DEFINE_multi_string("runs", [], "Finished run folders DIR[=LABEL] to tabulate "
                                  "without training (compare.md / compare.json in --workdir; "
                                  "the first is the reference of the paired differences).")

_DISTRIBUTED = distributed.define_flags()  # --coordinator, --num_processes, --process_id, ...
flags.adopt_module_key_flags(distributed)  # listed by --help with this module's flags


def _print(line: str) -> None:
  """The progress lines of ssa_jax.crossval (one per fold)."""
  print(line, flush=True)


def main(argv: list[str]) -> int:
  compare = list(_COMPARE.value)
  extra = argv[1:]
  if _RUNS.value:  # tabulate finished runs: no training, no JAX
    if compare:
      raise ValueError("--runs and --compare exclude each other")
    workdir = _WORKDIR.value or os.path.join("runs", "compare")
    tabulate_runs(list(_RUNS.value) + extra, workdir)
    print(f"wrote {os.path.join(os.path.abspath(workdir), 'compare.md')} and compare.json")
    return 0
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
      summaries, errors = run_compare(configs, workdir, _FOLDS.value, report=_print)
      if summaries and main_process:
        print(f"wrote {os.path.join(os.path.abspath(workdir), 'compare.md')} and compare.json")
    else:
      config = _cli.config(_CONFIG)
      workdir = _WORKDIR.value or os.path.join("runs", str(config.name))
      _, errors = run_crossval(config, workdir, _FOLDS.value, report=_print)
      if main_process:
        print(f"wrote {os.path.join(os.path.abspath(workdir), 'summary.md')} and summary.json")
  except KeyboardInterrupt:
    print("\ninterrupted; rerun the same command to resume (finished folds are kept)",
          file=sys.stderr)
    return 130
  return 1 if errors else 0


def command() -> None:
  """`ssa-crossval` (installed by `pip install .`) and `python -m bin.crossval`."""
  _cli.run(main, user_errors=(ValueError, RuntimeError, OSError))


if __name__ == "__main__":
  command()
