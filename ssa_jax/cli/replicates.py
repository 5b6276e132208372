"""Replicate studies: systems compared over fresh draws of the built-in corpus, paired by draw.

A unit of a study is one draw of the built-in corpus (`data.synthetic.seed = d`) with its own
held-out test subset; every system trains on the draw's training part (`train.split=heldout`),
selects its epoch on an inner validation split (`train.selection=inner`) and is scored once on the
draw's test subset. Systems are compared with the plain paired t over the draws.

A study (two systems, ten draws, new sentences of the training speakers as the test set):

  python -m bin.replicates --draws 0-9 --workdir runs/head_step \\
      --config.data.synthetic.test_phrases=3 \\
      --compare configs/quickstart.py:acrnn_r=ACRNN-r \\
                'configs/quickstart.py:acrnn_r@train.head_step=relative=ACRNN-r relative'

The seed-noise pilot before it (one system twice on the same draws, initialisation seeds d and
d + 1000): the SD of its paired differences and the draws a study needs for 80 % power at ±3 UAR
points (a lower bound: two different systems add their draw-by-system interaction):

  python -m bin.replicates --draws 0-4 --workdir runs/pilot \\
      --config.data.synthetic.test_phrases=3 --pilot configs/quickstart.py:acrnn_r

`--plan` prints the runs (draw, system, seeds, state, folder) and exits without training.

System specs, one word each (quote it if the label has spaces):

  PATH[:ARG][@KEY=VALUE,...][=LABEL]

  PATH[:ARG]  a config file and the argument of its get_config (as --config reads them)
  @KEY=VALUE  overrides of that system only, applied after the global --config.x=y ones; VALUE is
              read as --config.KEY=VALUE reads it and holds no "," or "=" outside brackets or
              quotes (model.conv_features=(8,16,16,16,16,16)); `seed_offset=N` (default 0) is
              not a config field but the runner's: the run on draw d has seed = d + N
  =LABEL      the system's name in compare.md (the rest of the word); default: the Table 1
              name plus the overrides, `ACRNN-r [train.head_step=relative]`

The first "@" or "=" ends PATH[:ARG]; after the overrides, an "=" that follows a VALUE starts
the LABEL. The runner sets data.synthetic.seed, seed, train.split and train.selection: overriding
them (the last two with another value than heldout / inner) is refused.

Files: `<workdir>/<system>/draw<d>/fold0/` per run (as `bin.train`; <system> is the label with
other characters than letters, digits, . - _ replaced by _), and `<workdir>/compare.md` /
compare.json, rewritten after every draw (a stopped study loses nothing): per system the mean ±
95 % CI over draws, the per-draw tables, each system's paired differences against the first (mean,
CI, p over the draws both have) for every paired metric, and the planning table (SD of the paired
UAR differences, the draws needed for --power at ±--delta points). Runs go draw-major (every
system of draw 0, then of draw 1, ...), so a stopped study leaves complete pairs. A complete run
is not retrained, an interrupted one resumes: rerun the same command. Exit code 1 if a run failed
(the others still run and are tabulated). A bad flag, spec, key, value or draw spec is one line
on stderr and exit code 1.

One host only. The library code is `ssa_jax/replicates.py`.
"""

from __future__ import annotations

import os
import sys

from absl import flags
from ml_collections import config_flags

from ssa_jax.cli import _cli

from ssa_jax import replicates

_CONFIG = _cli.define_config_flag("quickstart")
_COMPARE = flags.DEFINE_multi_string("compare", [], "System specs PATH[:ARG][@KEY=VALUE,...]"
                                     "[=LABEL] (several after one --compare, or --compare "
                                     "repeated); the first is the reference.")
_PILOT = flags.DEFINE_string("pilot", None, "One system spec, run twice (seed_offset +0 and "
                             f"+{replicates.PILOT_OFFSET}): the seed-noise pilot.")
_DRAWS = flags.DEFINE_string("draws", "0-9", "Corpus draws (data.synthetic.seed): '0-9', "
                             "'0,2,5', '0-2,7'.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Study folder (default runs/replicates).")
_PLAN = flags.DEFINE_bool("plan", False, "Print the runs and exit without training.")
_DELTA = flags.DEFINE_float("delta", replicates.DELTA, "Planning: the true UAR difference, "
                            "in points, the study should detect.")
_POWER = flags.DEFINE_float("power", replicates.POWER, "Planning: the power wanted.")


def _systems(argv: list[str]) -> tuple[list[replicates.System], bool]:
  """The systems of the command line and whether it is a pilot."""
  specs = list(_COMPARE.value)
  extra = argv[1:]
  if extra and not specs:
    _cli.no_arguments(argv)
  specs += extra  # `--compare a b c`: absl leaves b and c as positional arguments
  if flags.FLAGS["config"].present:  # as bin.crossval: --config FILE is the first system
    specs = [config_flags.get_config_filename(flags.FLAGS["config"])] + specs
  overrides = config_flags.get_override_values(flags.FLAGS["config"])
  if _PILOT.value is not None:
    if specs:
      raise _cli.Error("--pilot runs one system: give no --compare (or --config FILE) with it")
    return replicates.pilot_systems(_PILOT.value, overrides), True
  if not specs:
    raise _cli.Error("give the systems: --compare SPEC [SPEC ...] or --pilot SPEC")
  return [replicates.load_system(s, overrides) for s in specs], False


def main(argv: list[str]) -> int:
  if not 0.0 < _POWER.value < 1.0:
    raise _cli.Error(f"--power must be in (0, 1), got {_POWER.value}")
  if not _DELTA.value > 0.0:
    raise _cli.Error(f"--delta must be > 0 UAR points, got {_DELTA.value}")
  systems, pilot = _systems(argv)
  draws = replicates.parse_draws(_DRAWS.value)
  workdir = _WORKDIR.value or os.path.join("runs", "replicates")
  if _PLAN.value:
    print(replicates.describe_plan(replicates.plan_runs(systems, workdir, draws)), end="")
    return 0
  replicates.plan_runs(systems, workdir, draws)  # a config the protocol refuses fails here
  _cli.setup_jax(systems[0].config.data.cache_dir)
  try:
    _, errors = replicates.run_replicates(
        systems, workdir, draws, report=lambda line: print(line, flush=True),
        delta=_DELTA.value, power=_POWER.value, pilot=pilot)
  except KeyboardInterrupt:
    print("\ninterrupted; rerun the same command to resume (finished runs are kept)",
          file=sys.stderr)
    return 130
  path = os.path.join(os.path.abspath(workdir), "compare.md")
  print(open(path, encoding="utf-8").read())
  print(f"wrote {path} and compare.json")
  if errors:
    print(f"{len(errors)} run(s) failed (above); rerun the same command to retry them",
          file=sys.stderr)
  return 1 if errors else 0


def command() -> None:
  """`ssa-replicates` (installed by `pip install .`) and `python -m bin.replicates`."""
  _cli.run(main, user_errors=(ValueError, RuntimeError, OSError))


if __name__ == "__main__":
  command()
