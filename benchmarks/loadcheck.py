"""Was the machine quiet while a benchmark ran? Readings, and the rule that decides.

  python -m benchmarks.loadcheck [--sample 15] [--json out.json]   # is the machine idle now?

  monitor = LoadMonitor.start()          # before the first timed step
  ...                                    # the timed work
  readings = monitor.stop()              # {load_before, load_after, others_share, ...}
  quiet, reasons = verdict(readings)     # the rule below, a pure function
  print(header(readings))                # "QUIET ..." or "LOADED — no verdict (...)"

The rule (`verdict`): a run counts as quiet, and its table may carry a verdict, only if both
* the 1-minute load average just before the run was at most `MAX_LOAD_BEFORE` = 0.5 (nothing else
  was running when it started; on a 2-core machine one busy process alone gives ~1), and
* the other processes' share of all CPU time during the run was at most `MAX_OTHERS_SHARE` = 10 %.
  It is measured, not inferred from the load average (which our own threads inflate): from
  /proc/stat, the busy time of all CPUs (user, nice, system, irq, softirq and steal, i.e. also
  time a hypervisor gave to other guests) minus this process's own CPU time (/proc/self/stat
  utime + stime, all its threads), over the total CPU time of the interval.
The load average after the run is recorded but not judged (our own threads raise it to ~cores).

Where /proc is missing (not Linux) the readings are None and the run counts as loaded.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from typing import Any

MAX_LOAD_BEFORE = 0.5
MAX_OTHERS_SHARE = 0.10


def parse_proc_stat(text: str) -> tuple[int, int]:
  """(busy, total) clock ticks of all CPUs from /proc/stat's aggregate `cpu` line.

  total = user + nice + system + idle + iowait + irq + softirq + steal (guest time is already
  inside user / nice); busy = total - idle - iowait.
  """
  for line in text.splitlines():
    parts = line.split()
    if parts and parts[0] == "cpu":
      values = [int(v) for v in parts[1:9]] + [0] * max(0, 9 - len(parts))
      user, nice, system, idle, iowait, irq, softirq, steal = values[:8]
      total = user + nice + system + idle + iowait + irq + softirq + steal
      return total - idle - iowait, total
  raise ValueError("no aggregate 'cpu' line in /proc/stat")


def parse_self_stat(text: str, children: bool = False) -> int:
  """utime + stime clock ticks (all threads) from a /proc/<pid>/stat line; `children`: plus
  cutime + cstime, the ticks of the children the process has waited for (a benchmark that runs
  its work in subprocesses)."""
  # The command name (field 2) is in parentheses and may hold spaces: split after its ')'.
  rest = text[text.rindex(")") + 2:].split()
  own = int(rest[11]) + int(rest[12])  # fields 14 and 15 of the whole line
  return own + (int(rest[13]) + int(rest[14]) if children else 0)  # fields 16 and 17


def others_share(busy: tuple[int, int], total: tuple[int, int], own: tuple[int, int]) -> float:
  """Other processes' share of all CPU time over an interval, in [0, 1].

  Args:
    busy, total: /proc/stat busy and total ticks at the start and the end (all CPUs).
    own: this process's utime + stime ticks at the start and the end.
  """
  d_total = total[1] - total[0]
  if d_total <= 0:
    return 0.0
  d_others = (busy[1] - busy[0]) - (own[1] - own[0])
  return min(max(d_others / d_total, 0.0), 1.0)


def verdict(readings: dict[str, Any], max_load: float = MAX_LOAD_BEFORE,
            max_others: float = MAX_OTHERS_SHARE) -> tuple[bool, list[str]]:
  """(quiet, reasons it is not): the rule of the module docstring, on recorded readings."""
  reasons = []
  load = readings.get("load_before")
  share = readings.get("others_share")
  if load is None:
    reasons.append("no load average")
  elif load > max_load:
    reasons.append(f"load average {load:.2f} > {max_load} before the start")
  if share is None:
    reasons.append("no /proc/stat CPU accounting")
  elif share > max_others:
    reasons.append(f"other processes used {100 * share:.0f} % of the CPU time during the run "
                   f"(> {100 * max_others:.0f} %)")
  return not reasons, reasons


def header(readings: dict[str, Any]) -> str:
  """One line for the top of a table: QUIET (the run may carry a verdict) or LOADED."""
  quiet, reasons = verdict(readings)
  load_b, load_a = readings.get("load_before"), readings.get("load_after")
  share = readings.get("others_share")
  facts = (f"load average {_fmt(load_b)} before, {_fmt(load_a)} after; other processes "
           f"{'?' if share is None else f'{100 * share:.1f} %'} of the CPU time during the run; "
           f"{readings.get('cpu', '?')}, {readings.get('cores', '?')} cores")
  if quiet:
    return f"QUIET ({facts})"
  return f"LOADED — no verdict ({'; '.join(reasons)}) [{facts}]"


def _fmt(x: float | None) -> str:
  return "?" if x is None else f"{x:.2f}"


def _read(path: str) -> str | None:
  try:
    with open(path) as f:
      return f.read()
  except OSError:
    return None


def cpu_model() -> str:
  text = _read("/proc/cpuinfo") or ""
  for line in text.splitlines():
    if line.startswith("model name"):
      return line.split(":", 1)[1].strip()
  return platform.processor() or platform.machine()


def _loadavg() -> float | None:
  try:
    return os.getloadavg()[0]
  except (OSError, AttributeError):
    return None


def _snapshot(children: bool = False) -> tuple[tuple[int, int] | None, int | None]:
  stat, own = _read("/proc/stat"), _read("/proc/self/stat")
  return (parse_proc_stat(stat) if stat else None,
          parse_self_stat(own, children) if own else None)


def wait_for_quiet(max_wait_s: float, max_load: float = MAX_LOAD_BEFORE, poll_s: float = 5.0,
                   log=None) -> float:
  """Waits (at most `max_wait_s`) until the 1-minute load average is <= `max_load`: the load of
  work that just ended takes about a minute to decay. Returns the seconds waited."""
  t0 = time.time()
  while True:
    load = _loadavg()
    waited = time.time() - t0
    if load is None or load <= max_load or waited >= max_wait_s:
      return waited
    if log is not None:
      log(f"waiting for a quiet machine: load average {load:.2f} > {max_load} "
          f"({waited:.0f} of {max_wait_s:.0f} s)")
    time.sleep(poll_s)


@dataclasses.dataclass
class LoadMonitor:
  """Readings at `start()` and at `stop()`; see the module docstring."""
  load_before: float | None
  stat0: tuple[int, int] | None
  own0: int | None
  t0: float
  children: bool = False  # count the waited-for subprocesses' CPU time as ours

  @classmethod
  def start(cls, children: bool = False) -> "LoadMonitor":
    load = _loadavg()
    stat, own = _snapshot(children)
    return cls(load, stat, own, time.time(), children)

  def stop(self) -> dict[str, Any]:
    stat1, own1 = _snapshot(self.children)
    share = None
    if None not in (self.stat0, stat1, self.own0, own1):
      share = others_share((self.stat0[0], stat1[0]), (self.stat0[1], stat1[1]),
                           (self.own0, own1))
    readings = {"load_before": self.load_before, "load_after": _loadavg(),
                "others_share": share, "seconds": time.time() - self.t0,
                "cpu": cpu_model(), "cores": os.cpu_count()}
    readings["quiet"], readings["reasons"] = verdict(readings)
    return readings


def sample(seconds: float) -> dict[str, Any]:
  """Readings over `seconds` of this process sleeping: the other processes' CPU share is then
  everything else that runs (the check before a benchmark starts)."""
  monitor = LoadMonitor.start()
  time.sleep(max(seconds, 0.0))
  return monitor.stop()


def main(argv: list[str] | None = None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(description="Is the machine idle? The load rule over an idle "
                                   "sample (benchmarks/loadcheck.py)")
  parser.add_argument("--sample", type=float, default=15.0, metavar="SECONDS")
  parser.add_argument("--json", default="")
  args = parser.parse_args(argv)
  readings = sample(args.sample)
  print(header(readings))
  if args.json:
    write_json(args.json, readings)
  return readings


def write_json(path: str, obj) -> None:
  """A benchmark's --json output, written atomically by the project's one writer (ssa_jax.io);
  values JSON does not know (dtypes, paths) as their str."""
  from ssa_jax import io as io_lib  # pylint: disable=g-import-not-at-top
  io_lib.write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


if __name__ == "__main__":
  main()
