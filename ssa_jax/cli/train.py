"""Trains and evaluates one fold: `ssa_jax.train.train_and_evaluate` behind a thin CLI.

  python -m bin.train --config configs/quickstart.py --fold 3            # SSA-CRNN-r, minutes
  python -m bin.train --config configs/quickstart.py:acrnn --fold 3      # ACRNN
  python -m bin.train --config configs/ssa_crnn_r.py --fold 0 \\
      --config.data.corpus=iemocap --config.data.root=/data/IEMOCAP_full_release

Writes `<workdir>/fold<K>/` (config.json, metrics.jsonl, result.json, checkpoints/); `--workdir`
defaults to `runs/<config.name>`. Rerunning the same command resumes from the latest checkpoint.
Compiled XLA programs are cached under `<config.data.cache_dir>/xla`, so a rerun starts faster.
A bad flag, fold, config key or value, or a missing corpus is one line on stderr and exit code 1
(`ssa_jax/cli/_cli.py`). The library's INFO lines (e.g. "resumed fold 3 from step 120") go to stderr.

Several hosts (the same command on every process; `ssa_jax/distributed.py` has the full rule):
  python -m bin.train --config ... --coordinator HOST0:1234 --num_processes N --process_id I
On a TPU VM / pod slice, a Slurm or Open MPI job, no flag is needed (`--distributed=auto` calls
`jax.distributed.initialize()` there); `--distributed=off` keeps one process. Only process 0 writes
files and prints the summary; the workdir must be one folder that every host sees.
"""

from __future__ import annotations

import os
import sys

from absl import flags

from ssa_jax.cli import _cli
from ssa_jax import distributed

_CONFIG = _cli.define_config_flag("ssa_crnn_r")
_FOLD = flags.DEFINE_integer("fold", 0, "Fold to train (0-based; 0-9 for 10-fold splits).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (default runs/<config.name>).")
_DISTRIBUTED = distributed.define_flags()  # --coordinator, --num_processes, --process_id, ...
flags.adopt_module_key_flags(distributed)  # listed by --help with this module's flags


def _summary(result: dict, fold_dir: str) -> str:
  classes = result["classes"]
  w = max(5, *(len(c) for c in classes))
  lines = [
      f"fold {result['fold']} ({result['corpus']} corpus, {result['split']} split): "
      f"best epoch {result['best_epoch']} of {result['epochs_run']}: "
      f"UAR {result['uar']:.4f}  WA {result['wa']:.4f}  segment UAR {result['segment_uar']:.4f}",
      "confusion (rows: truth, columns: prediction):",
      " " * (w + 2) + "".join(c.rjust(w + 1) for c in classes),
  ]
  lines += [f"  {c.ljust(w)}" + "".join(str(n).rjust(w + 1) for n in row)
            for c, row in zip(classes, result["confusion"])]
  t = result["timing"]
  lines.append(f"training time {t['train_elapsed_s']:.1f} s, this run {t['this_run_s']:.1f} s; "
               f"wrote {fold_dir}/{{config.json, metrics.jsonl, result.json, checkpoints/}}")
  return "\n".join(lines)


def main(argv: list[str]) -> int:
  _cli.no_arguments(argv)
  config = _cli.config(_CONFIG)
  workdir = _WORKDIR.value or os.path.join("runs", str(config.name))
  _cli.setup_jax(config.data.cache_dir)
  plan = distributed.initialize_from_flags(_DISTRIBUTED)  # before anything touches a device
  # Imported here so that `--help` and flag errors do not wait for the library.
  from ssa_jax import train  # pylint: disable=g-import-not-at-top
  if plan.kwargs is not None:
    print(f"{plan.reason}: {distributed.describe()}", file=sys.stderr)
  try:  # CorpusError, AudioError, bad config values, NonFiniteLossError: one line (ssa_jax/cli/_cli.py)
    result = train.train_and_evaluate(config, workdir, _FOLD.value)
  except KeyboardInterrupt:
    print(f"\ninterrupted; rerun the same command to resume from the last checkpoint in "
          f"{workdir}", file=sys.stderr)
    return 130
  if distributed.is_main_process():
    from ssa_jax import rundir  # pylint: disable=g-import-not-at-top
    print(_summary(result, rundir.FoldDir.of(workdir, _FOLD.value).path))
  return 0


def command() -> None:
  """`ssa-train` (installed by `pip install .`) and `python -m bin.train`."""
  _cli.run(main, user_errors=(ValueError, OSError, FloatingPointError))


if __name__ == "__main__":
  command()
