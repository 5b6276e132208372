"""Study throughput: wall and CPU time of quickstart training runs, code revisions side by side.

  python -m benchmarks.study_throughput                       # before/after Winograd (issue 23)
  python -m benchmarks.study_throughput --runs before=4695f31^ after=HEAD \
      "after, every layer Winograd=HEAD:--config.model.conv_impl=winograd --config.model.winograd_min_channels=1"
  python -m benchmarks.study_throughput --systems acrnn --fold 0 --args=--config.train.epochs=1

Each run spec is LABEL=REV[:EXTRA ARGS]: a git revision (checked out once into a temporary
worktree, detached) and arguments added to its command line. Each spec trains every system
(`configs/quickstart.py:SYSTEM`, the README's quick start is `ssa_crnn_r` fold 3) with
`python -m bin.train --fold F` in that worktree, in a fresh temporary workdir, so each timing is
what a user pays: process start, compilation and training, with the built-in corpus and its
features already cached (`~/.cache/ssa_jax`; a first untimed run fills the cache if needed).
Runs alternate between the specs system by system, so a drift in the machine's speed hits all
specs alike. Before each run the script waits (at most --wait_quiet s) for the load to settle,
and each row carries the load check of benchmarks/loadcheck.py with the training process's CPU
time counted as ours: quote the table only if every row says QUIET.

Prints a table (and --json writes it): spec, revision, system, wall s, CPU s (user + system of the
training process), UAR of the fold (to check the runs did the same work), quiet or loaded.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from typing import Any

from benchmarks import loadcheck

DEFAULT_RUNS = ("before=4695f31^", "after=HEAD")  # 4695f31: conv_impl="winograd" landed
SYSTEMS = ("ssa_crnn_r", "acrnn", "acrnn_r")
_UAR = re.compile(r"best epoch \d+ of \d+: UAR ([0-9.]+)")


@dataclasses.dataclass(frozen=True)
class Spec:
  label: str
  rev: str
  extra: tuple[str, ...] = ()


def parse_spec(text: str) -> Spec:
  """'LABEL=REV[:EXTRA ARGS]' -> Spec; a one-line ValueError for anything else."""
  label, sep, rest = text.partition("=")
  if not sep or not label.strip() or not rest.strip():
    raise ValueError(f"run spec {text!r}: expected LABEL=REV[:EXTRA ARGS]")
  rev, _, extra = rest.partition(":")
  return Spec(label.strip(), rev.strip(), tuple(shlex.split(extra)))


def train_command(system: str, fold: int, workdir: str, extra: tuple[str, ...]) -> list[str]:
  return [sys.executable, "-m", "bin.train", "--config", f"configs/quickstart.py:{system}",
          "--fold", str(fold), "--workdir", workdir, *extra]


def parse_uar(stdout: str) -> float | None:
  """The fold's UAR from bin.train's summary line, None if absent."""
  found = _UAR.findall(stdout)
  return float(found[-1]) if found else None


def checkout(repo: str, rev: str, into: str) -> str:
  """A detached worktree of `rev` under `into`; returns its path."""
  path = os.path.join(into, re.sub(r"[^A-Za-z0-9_.-]", "_", rev))
  if not os.path.isdir(path):
    subprocess.run(["git", "-C", repo, "worktree", "add", "--detach", "-q", path, rev], check=True)
  return path


def timed_run(cwd: str, cmd: list[str], wait_quiet: float, log) -> dict[str, Any]:
  loadcheck.wait_for_quiet(wait_quiet, log=log)
  monitor = loadcheck.LoadMonitor.start(children=True)
  t0, c0 = time.time(), os.times()
  proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                        env={**os.environ, "PYTHONPATH": cwd})
  wall, c1 = time.time() - t0, os.times()
  readings = monitor.stop()
  if proc.returncode != 0:
    tail = proc.stderr.strip().splitlines()[-1:] or ["(no stderr)"]
    raise RuntimeError(f"{' '.join(cmd)} in {cwd} failed ({proc.returncode}): {tail[0]}")
  return {"wall_s": wall, "cpu_s": (c1.children_user - c0.children_user) +
          (c1.children_system - c0.children_system), "uar": parse_uar(proc.stdout),
          "quiet": readings["quiet"], "load": loadcheck.header(readings)}


def table(rows: list[dict[str, Any]]) -> str:
  lines = ["| run | revision | system | wall s | CPU s | UAR | load |",
           "|---|---|---|---:|---:|---:|---|"]
  for r in rows:
    uar = "?" if r["uar"] is None else f"{r['uar']:.4f}"
    lines.append(f"| {r['label']} | {r['rev']} | {r['system']} | {r['wall_s']:.1f} | "
                 f"{r['cpu_s']:.1f} | {uar} | {'QUIET' if r['quiet'] else 'LOADED'} |")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--runs", nargs="+", default=list(DEFAULT_RUNS), metavar="LABEL=REV[:ARGS]")
  parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
  parser.add_argument("--fold", type=int, default=3)
  parser.add_argument("--args", default="", help="extra arguments for every run")
  parser.add_argument("--wait_quiet", type=float, default=120.0)
  parser.add_argument("--json", default="")
  args = parser.parse_args(argv)
  try:
    specs = [parse_spec(s) for s in args.runs]
  except ValueError as e:
    parser.error(str(e))
  log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
  repo = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                        check=True).stdout.strip()
  common = tuple(shlex.split(args.args))
  rows = []
  with tempfile.TemporaryDirectory(prefix="study_throughput_") as tmp:
    trees = {s.rev: checkout(repo, s.rev, tmp) for s in specs}
    try:
      for rev, tree in trees.items():  # fill each revision's corpus/feature cache, untimed
        log(f"warming the cache of {rev} (one epoch, untimed) ...")
        subprocess.run(train_command(args.systems[0], args.fold, os.path.join(tree, "_warm"),
                                     ("--config.train.epochs=1",) + common),
                       cwd=tree, capture_output=True, check=True, env={**os.environ, "PYTHONPATH": tree})
      for system in args.systems:
        for i, s in enumerate(specs):
          out = os.path.join(tmp, f"run{i}_{system}")
          cmd = train_command(system, args.fold, out, s.extra + common)
          log(f"{s.label} ({s.rev}) {system} fold {args.fold} ...")
          r = timed_run(trees[s.rev], cmd, args.wait_quiet, log)
          rows.append({"label": s.label, "rev": s.rev, "system": system, "fold": args.fold, **r})
          log(f"  {r['wall_s']:.1f} s wall, UAR {r['uar']}; {r['load']}")
    finally:
      for path in trees.values():
        subprocess.run(["git", "-C", repo, "worktree", "remove", "--force", path],
                       capture_output=True)
  print(table(rows))
  for r in rows:
    print(f"{r['label']} {r['system']}: {r['load']}")
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump({"rows": rows, "cpu": loadcheck.cpu_model(), "cores": os.cpu_count()}, f, indent=1)
  return rows


if __name__ == "__main__":
  main()
