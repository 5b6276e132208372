"""The replicate protocol (`bin.replicates`): a unit of a study is a fresh draw of the built-in
corpus, each with its own held-out test set; systems are paired by draw and compared with the
plain paired t over draws.

  parse_spec(text) -> SystemSpec          `PATH[:ARG][@key=value,...][=LABEL]` (grammar below)
  load_system(spec, overrides) -> System  the config file, global then per-system overrides
  pilot_systems(spec, overrides) -> [System, System]   one system twice, seed_offset +0 / +1000
  parse_draws(spec) -> list[int]          '0-9' / '0,2,5' / '0-2,7'
  run_config(config, draw, seed_offset) -> ConfigDict  the config of one run (below)
  plan_runs(systems, workdir, draws) -> list[Run]      draw-major: all systems of draw 0, then 1...
  describe_plan(runs) -> str              the runs, their seeds, folders and states (`--plan`)
  config_changes(run) -> list[str]        fields whose value in the run folder's config.json
                                          differs (logged as a warning; the folder is kept)
  run_replicates(systems, workdir, draws) -> (study, errors)
        trains (or resumes) every run, writing `<workdir>/compare.md` and compare.json after
        every finished draw and at the end
  paired_power(n, sd_diff, delta, alpha) -> float     power of the two-sided paired t-test
  draws_for_power(sd_diff, delta=3.0, power=0.8, alpha=0.05) -> int   the smallest such n
  ci_half_width(sd_diff, n) -> float      half-width of the 95 % CI of a mean difference
  pilot_summary(a, b) -> dict             SD of paired per-draw differences and the draws needed

The run of system S on draw d: the system's config with `data.synthetic.seed = d` (the corpus
draw: speakers, phrases, held-out test subset), `seed = d + seed_offset` (initialisation and batch
order), `train.split = "heldout"` (train on the draw's subset != "test", score subset "test") and
`train.selection = "inner"` (the epoch chosen on an inner validation split of the training part;
the test set scored once). It trains into `<workdir>/<subdir>/draw<d>/fold0/` with
`train.train_and_evaluate(config, <workdir>/<subdir>/draw<d>, 0)`. A run whose result.json is
complete is not retrained; an interrupted one resumes from its checkpoint; a failed one (ValueError,
FloatingPointError, OSError) is reported and the others go on. The runner owns the seeds, split and
selection: overriding `seed` or `data.synthetic.seed`, or `train.split` / `train.selection` with
another value, is refused (ValueError); the values a config file sets for them are replaced.

System specs (one command-line word each):

  SPEC      := CONFIG [ "@" OVERRIDES ] [ "=" LABEL ]
  CONFIG    := PATH [ ":" ARG ]                a config file, ARG passed to get_config
  OVERRIDES := KEY "=" VALUE { "," KEY "=" VALUE }
  KEY       := a dotted config field (train.head_step) or the runner key `seed_offset`
  VALUE     := parsed by the field's type as `--config.KEY=VALUE` is; it holds no "," or "="
               outside brackets or quotes: `model.conv_features=(8,16,16,16,16,16)`
  LABEL     := the rest of the word, anything non-empty (the row name in compare.md)

The first "@" or "=" ends CONFIG (a path holding "@" or "=" cannot be used); after the overrides,
the first "=" outside brackets that follows a VALUE starts the LABEL. Examples:

  configs/quickstart.py:acrnn_r
  configs/quickstart.py:acrnn_r=ACRNN-r
  configs/quickstart.py:acrnn_r@train.head_step=relative=ACRNN-r relative
  configs/quickstart.py@seed_offset=1000,train.epochs=8=SSA-CRNN-r, 8 epochs, other seeds

`seed_offset=N` (N >= 0, default 0) is a runner key; the other keys override that system's config
after the global `--config.x=y` overrides. Without a LABEL the label is the Table 1 name
(`summary.system_label`) followed by the overrides, `ACRNN-r [train.head_step=relative]`. Labels
must differ; a system's folder is its label with every run of characters other than letters,
digits, `.`, `-`, `_` replaced by `_` (`ACRNN-r_relative`), `_2`, `_3`... appended on a clash.

compare.md / compare.json (like `bin.crossval --compare`, the unit being a draw): per system the
mean ± 95 % CI over draws (`summary.summarize(..., split="heldout")`: Student's t over
independent draws; in the summaries a row's `fold` is the draw), a per-draw table of every
paired metric (`summary.PAIRED`), each system's paired differences against the first
(`summary.compare_systems`: mean, CI, p over the draws both have), and the planning figures:
per system against the first, the SD of the per-draw UAR differences, the draws a paired t-test
needs for `power` (80 %) against a true difference of `delta` (3 UAR points) at alpha 0.05, and
the CI half-width those draws give (`pilot_summary`).

The seed-noise pilot (`pilot_systems`, `bin.replicates --pilot SPEC`) runs one system twice on the
same draws with different initialisation (seed_offset +0 and +1000): the SD of its paired
differences is the seed noise alone (sqrt(2) x one run's), a floor for the SD of the differences
of two different systems (which adds their draw-by-system interaction), so the draws it implies
are a lower bound for a study.

Progress: one line per finished run, `[label] draw d: UAR ..., trained in 2 min 10 s; 7 runs left,
about 15 min` (the mean time of the runs trained in this invocation times the runs left;
`crossval.Progress`). The library logs it (`report`, default the module logger); `bin.replicates`
prints it.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import json
import logging
import math
import os
import re
import time
from typing import Any, Callable, Mapping, Sequence

import ml_collections
import numpy as np
import scipy.stats

from ssa_jax import crossval, rundir
from ssa_jax import io as io_lib

_log = logging.getLogger(__name__)

SPLIT, SELECTION = "heldout", "inner"
# The runner's values: an override with another value is refused.
FORCED = {"train.split": SPLIT, "train.selection": SELECTION}
# Set from the draw by the runner: any override is refused.
OWNED = ("seed", "data.synthetic.seed")
RUNNER_KEYS = ("seed_offset",)
PILOT_OFFSET = 1000  # the pilot's second seed_offset: seeds d and d + 1000 never meet for d < 1000
DELTA, POWER, ALPHA = 3.0, 0.8, 0.05  # planning: 3 UAR points, 80 % power, two-sided 5 %
CONFIDENCE = 0.95
UNIT = "draw"
_KEY = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_OPEN, _CLOSE = "([{", ")]}"


# ----------------------------------------------------------------------------------------------
# System specs


@dataclasses.dataclass(frozen=True)
class SystemSpec:
  """A parsed `PATH[:ARG][@key=value,...][=LABEL]`; override values are still text."""

  config: str                              # PATH[:ARG]
  overrides: tuple[tuple[str, str], ...]   # config overrides, in order (no runner keys)
  seed_offset: int = 0
  label: str | None = None
  text: str = ""                           # the spec as given


def _read_value(s: str, pos: int, where: str) -> tuple[str, int]:
  """The VALUE starting at `pos`, up to a "," or "=" outside brackets and quotes (or the end);
  returns (value, index of the stop character or len(s))."""
  depth, quote, i = [], None, pos
  while i < len(s):
    ch = s[i]
    if quote:
      quote = None if ch == quote else quote
    elif ch in "'\"":
      quote = ch
    elif ch in _OPEN:
      depth.append(_CLOSE[_OPEN.index(ch)])
    elif ch in _CLOSE:
      if not depth or depth.pop() != ch:
        raise ValueError(f"{where}: unbalanced {ch!r} in the value {s[pos:i + 1]!r}")
    elif not depth and ch in ",=":
      break
    i += 1
  if quote or depth:
    raise ValueError(f"{where}: unclosed {quote or repr(depth[-1])} in the value {s[pos:i]!r}")
  return s[pos:i], i


def parse_spec(text: str) -> SystemSpec:
  """`PATH[:ARG][@key=value,...][=LABEL]` (module docstring) -> SystemSpec.

  Raises:
    ValueError: empty spec, no config, a key that is not a dotted name, a key without value,
      a repeated key, a bad seed_offset, unbalanced brackets or quotes, an empty label.
  """
  where = f"system spec {text!r}"
  s = text.strip()
  if not s:
    raise ValueError("empty system spec (expected PATH[:ARG][@key=value,...][=LABEL])")
  stops = [i for i in (s.find("@"), s.find("=")) if i >= 0]
  end = min(stops) if stops else len(s)
  config = s[:end].strip()
  if not config:
    raise ValueError(f"{where}: no config file before {s[end]!r}")
  items: list[tuple[str, str]] = []
  label = None
  if end < len(s) and s[end] == "=":
    label = s[end + 1:]
  elif end < len(s):  # "@"
    pos = end + 1
    while True:
      eq = s.find("=", pos)
      key = s[pos:eq].strip() if eq >= 0 else s[pos:].strip()
      if eq < 0 or not _KEY.match(key):
        raise ValueError(f"{where}: expected KEY=VALUE after {s[pos - 1]!r}, got {s[pos:]!r} "
                         f"(KEY a dotted config field such as train.epochs, or seed_offset)")
      value, stop = _read_value(s, eq + 1, where)
      if not value.strip():
        raise ValueError(f"{where}: no value for {key!r}")
      if key in (k for k, _ in items):
        raise ValueError(f"{where}: {key!r} given twice")
      items.append((key, value.strip()))
      if stop == len(s):
        break
      if s[stop] == "=":
        label = s[stop + 1:]
        break
      pos = stop + 1
  if label is not None and not label.strip():
    raise ValueError(f"{where}: empty label after '='")
  seed_offset = 0
  for key, value in items:
    if key == "seed_offset":
      try:
        seed_offset = int(value)
      except ValueError:
        seed_offset = -1
      if seed_offset < 0:
        raise ValueError(f"{where}: seed_offset must be an integer >= 0, got {value!r}")
  overrides = tuple((k, v) for k, v in items if k not in RUNNER_KEYS)
  return SystemSpec(config, overrides, seed_offset, None if label is None else label.strip(), text)


@dataclasses.dataclass
class System:
  """A system of a study: its label, its config (overrides applied, before the draw's seeds) and
  the offset of its initialisation seeds."""

  label: str
  config: Any
  seed_offset: int = 0
  spec: str = ""


def check_overrides(overrides: Mapping[str, Any], where: str) -> None:
  """Refuses overrides of what the runner sets (OWNED, FORCED with another value).

  Raises:
    ValueError: naming the key and why.
  """
  for key, value in overrides.items():
    if key in OWNED:
      raise ValueError(f"{where}: {key} is set by the runner (draw d: data.synthetic.seed = d, "
                       f"seed = d + seed_offset); choose --draws and seed_offset instead")
    if key in FORCED and str(value).strip().strip("'\"") != FORCED[key]:
      raise ValueError(f"{where}: the replicate protocol needs {key}={FORCED[key]}, got {value!r}")


def _parse_value(config: Any, key: str, text: str, where: str) -> Any:
  """`text` read as `--config.KEY=text` reads it: by the type of the field."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections.config_flags import config_path  # pylint: disable=g-import-not-at-top
  from ml_collections.config_flags import tuple_parser  # pylint: disable=g-import-not-at-top
  try:
    typ = config_path.get_type(key, config)
  except (AttributeError, KeyError, IndexError, ValueError, TypeError) as e:
    raise ValueError(f"{where}: no config field {key!r} ({_one_line(e)})") from None
  parsers = {bool: flags.BooleanParser(), int: flags.IntegerParser(), float: flags.FloatParser(),
             str: flags.ArgumentParser(), tuple: tuple_parser.TupleParser()}
  if isinstance(typ, type) and issubclass(typ, ml_collections.ConfigDict):
    raise ValueError(f"{where}: {key!r} is a section, not a value")
  try:
    if typ in parsers:
      return parsers[typ].parse(text)
    lit = {"true": "True", "false": "False"}.get(text, text)
    try:
      return ast.literal_eval(lit)
    except (SyntaxError, ValueError):
      return text
  except (ValueError, TypeError) as e:
    raise ValueError(f"{where}: {key}={text!r}: {_one_line(e)}") from None


def _one_line(e: BaseException) -> str:
  return " ".join(str(e).split())


def default_label(config: Any, spec: SystemSpec) -> str:
  """`ACRNN-r`, `ACRNN-r [train.head_step=relative, seed_offset=1000]`."""
  from ssa_jax import summary  # pylint: disable=g-import-not-at-top
  parts = [f"{k}={v}" for k, v in spec.overrides]
  if spec.seed_offset:
    parts.append(f"seed_offset={spec.seed_offset}")
  return summary.system_label(config) + (f" [{', '.join(parts)}]" if parts else "")


def load_system(spec: SystemSpec | str, overrides: Mapping[str, Any] | None = None) -> System:
  """The system of a spec: its config file, the global `overrides` (typed, as
  `config_flags.get_override_values` gives them), then the spec's own.

  Raises:
    ValueError: a bad spec, a missing config file, a key that does not exist or a bad value, an
      override of what the runner sets.
  """
  if isinstance(spec, str):
    spec = parse_spec(spec)
  overrides = dict(overrides or {})
  check_overrides(overrides, "--config overrides")
  where = f"system spec {spec.text or spec.config!r}"
  check_overrides(dict(spec.overrides), where)
  config = crossval.load_config(spec.config, overrides)
  for key, text in spec.overrides:
    value = _parse_value(config, key, text, where)
    try:
      config.update_from_flattened_dict({key: value})
    except (KeyError, TypeError, AttributeError, ValueError) as e:
      raise ValueError(f"{where}: cannot set {key}={text!r}: {_one_line(e)}") from None
  return System(spec.label or default_label(config, spec), config, spec.seed_offset,
                spec.text or spec.config)


def pilot_systems(spec: SystemSpec | str, overrides: Mapping[str, Any] | None = None,
                  offset: int = PILOT_OFFSET) -> list[System]:
  """The seed-noise pilot: the system of `spec` twice, seed_offset s and s + `offset`."""
  base = load_system(spec, overrides)
  second = dataclasses.replace(base, config=copy.deepcopy(base.config),
                               seed_offset=base.seed_offset + offset,
                               label=f"{base.label} (seeds +{base.seed_offset + offset})")
  first = dataclasses.replace(base, label=f"{base.label} (seeds +{base.seed_offset})")
  return [first, second]


def subdirs(labels: Sequence[str]) -> list[str]:
  """Folder names from labels: runs of other characters than [A-Za-z0-9._-] -> `_`; `_2`, `_3`
  on a clash; `system` for a label with nothing left."""
  used: set[str] = set()
  out = []
  for label in labels:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_.") or "system"
    sub, k = name, 2
    while sub.lower() in used:  # case-insensitive file systems
      sub, k = f"{name}_{k}", k + 1
    used.add(sub.lower())
    out.append(sub)
  return out


def parse_draws(spec: str | None) -> list[int]:
  """'0-9' / '0,2,5' / '0-2,7' -> sorted distinct draws (>= 0).

  Raises:
    ValueError: malformed spec or an empty one.
  """
  if spec is None or not spec.strip():
    raise ValueError("--draws: give the corpus draws, e.g. 0-9")
  draws: set[int] = set()
  for part in spec.split(","):
    part = part.strip()
    try:
      lo, sep, hi = part.partition("-")
      lo_i, hi_i = int(lo), int(hi) if sep else int(lo)
      if lo_i < 0 or lo_i > hi_i:
        raise ValueError
    except ValueError:
      raise ValueError(f"--draws: cannot read {part!r} in {spec!r} (use e.g. 0-9 or 0,2,5; "
                       f"draws are seeds >= 0)") from None
    draws.update(range(lo_i, hi_i + 1))
  return sorted(draws)


# ----------------------------------------------------------------------------------------------
# Runs


def run_config(config: Any, draw: int, seed_offset: int = 0) -> Any:
  """A copy of `config` for one run: data.synthetic.seed = draw, seed = draw + seed_offset,
  train.split = "heldout", train.selection = "inner".

  Raises:
    ValueError: not the built-in corpus, or its draws have no held-out test subset.
  """
  if str(config.data.corpus) != "synthetic":
    raise ValueError(f"{config.name}: the replicate protocol draws the built-in corpus "
                     f"(data.corpus=synthetic), not {config.data.corpus!r}")
  syn = config.data.synthetic
  if int(syn.test_phrases) <= 0 and int(syn.test_speakers) <= 0:
    raise ValueError(f"{config.name}: the draws have no held-out test subset: set "
                     f"data.synthetic.test_phrases (new sentences of the training speakers) or "
                     f"data.synthetic.test_speakers (new speakers) > 0")
  c = copy.deepcopy(config)
  c.data.synthetic.seed = int(draw)
  c.seed = int(draw) + int(seed_offset)
  c.train.split = SPLIT
  c.train.selection = SELECTION
  return c


@dataclasses.dataclass(frozen=True)
class Run:
  """One (system, draw): `run_dir` is the workdir given to train_fn (fold 0 inside)."""

  index: int       # the system's position
  label: str
  draw: int
  config: Any
  run_dir: str

  @property
  def fold_dir(self) -> str:
    return rundir.FoldDir.of(self.run_dir, 0).path


def _as_systems(systems: Sequence[System | Any]) -> list[System]:
  from ssa_jax import summary  # pylint: disable=g-import-not-at-top
  out = [s if isinstance(s, System) else System(summary.system_label(s), s) for s in systems]
  if not out:
    raise ValueError("no system to run")
  labels = [s.label for s in out]
  dup = sorted({l for l in labels if labels.count(l) > 1})
  if dup:
    raise ValueError(f"systems with the same label {dup}: give each one its own =LABEL")
  return out


def plan_runs(systems: Sequence[System | Any], workdir: str, draws: Sequence[int]) -> list[Run]:
  """Every run, draw-major (all systems of the first draw, then the next draw...).

  Raises:
    ValueError: no system, two systems with the same label, a config `run_config` refuses.
  """
  systems = _as_systems(systems)
  workdir = os.path.abspath(os.path.expanduser(workdir))
  subs = subdirs([s.label for s in systems])
  return [Run(i, s.label, d, run_config(s.config, d, s.seed_offset),
              os.path.join(workdir, sub, f"draw{d}"))
          for d in draws for i, (s, sub) in enumerate(zip(systems, subs))]


def run_state(run: Run) -> str:
  """complete | resume (a fold folder without a complete result) | new."""
  if rundir.FoldDir(run.fold_dir).complete_result(run.config, warn=False) is not None:
    return "complete"
  return "resume" if os.path.isdir(run.fold_dir) else "new"


def describe_plan(runs: Sequence[Run]) -> str:
  """One line per run: draw, system, seeds, state and folder; then the counts."""
  width = max((len(r.label) for r in runs), default=0)
  lines = []
  states = []
  for r in runs:
    state = run_state(r)
    states.append(state)
    lines.append(f"draw {r.draw:>3}  {r.label:<{width}}  data.synthetic.seed={r.draw} "
                 f"seed={r.config.seed:<6} {state:<8}  {r.fold_dir}")
  counts = ", ".join(f"{states.count(s)} {s}" for s in ("new", "resume", "complete"))
  lines.append(f"{len(runs)} runs ({counts}); split={SPLIT}, selection={SELECTION}")
  return "\n".join(lines) + "\n"


def _left(progress: crossval.Progress) -> str:
  if progress.remaining <= 0:
    return "no run left"
  eta = progress.eta()
  left = f"{progress.remaining} run{'s' if progress.remaining != 1 else ''} left"
  return left + ("" if eta is None else f", about {crossval.format_duration(eta)}")


def run_replicates(systems: Sequence[System | Any], workdir: str, draws: str | Sequence[int],
                   train_fn: Callable[..., dict[str, Any]] | None = None,
                   prepare_fn: Callable[[Any], Any] | None = None,
                   clock: Callable[[], float] = time.monotonic,
                   report: Callable[[str], None] | None = None,
                   delta: float = DELTA, power: float = POWER, pilot: bool = False,
                   ) -> tuple[dict[str, Any], list[str]]:
  """Trains every (draw, system) run not yet complete, draw-major, and writes compare.md /
  compare.json after every draw and at the end (module docstring).

  Args:
    systems: `System`s (or bare configs: label `summary.system_label`, seed_offset 0); the first
      is the reference of the paired differences.
    workdir: the study folder (`<workdir>/<subdir>/draw<d>/fold0/`).
    draws: a draw spec ("0-9") or a list of draws.
    train_fn: `train.train_and_evaluate` (replaceable in tests).
    prepare_fn: `data.prepare` (replaceable in tests); once per draw when the systems share the
      data and feature config.
    clock: seconds, for the run times (replaceable in tests).
    report: receives the progress lines (default: logged at INFO).
    delta, power: the planning figures' difference (UAR points) and power.
    pilot: the systems are one system at two seeds (the text of the planning section).

  Returns:
    (the compare.json content, the error messages of failed runs).

  Raises:
    ValueError: a bad draw spec or system (before any training); RuntimeError: no run finished.
  """
  if train_fn is None:
    from ssa_jax import train  # pylint: disable=g-import-not-at-top
    train_fn = train.train_and_evaluate
  if prepare_fn is None:
    from ssa_jax import data  # pylint: disable=g-import-not-at-top
    prepare_fn = data.prepare
  report = report or _log.info
  draws = parse_draws(draws) if isinstance(draws, str) or draws is None else sorted(set(draws))
  systems = _as_systems(systems)
  workdir = os.path.abspath(os.path.expanduser(workdir))
  runs = plan_runs(systems, workdir, draws)
  load = crossval._Loader(prepare_fn)  # pylint: disable=protected-access
  progress = crossval.Progress(sum(run_state(r) != "complete" for r in runs))
  results: list[dict[int, dict[str, Any]]] = [{} for _ in systems]
  status: dict[tuple[int, int], dict[str, Any]] = {}
  errors: list[str] = []
  study: dict[str, Any] = {}
  for draw in draws:
    for run in (r for r in runs if r.draw == draw):
      outcome = _train_one(run, train_fn, load, progress, clock, report)
      status[(run.index, draw)] = outcome
      if "result" in outcome:
        results[run.index][draw] = outcome.pop("result")
      else:
        errors.append(outcome["error"])
    if any(results):
      study = write_compare(systems, results, runs, status, workdir, draws, delta, power, pilot)
  if not any(results):
    raise RuntimeError(f"{workdir}: no run finished; " + "; ".join(errors))
  return study, errors


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(tree, Mapping):
    return {k: v for key, sub in tree.items() for k, v in _flat(sub, f"{prefix}{key}.").items()}
  return {prefix[:-1]: tree}


def config_changes(run: Run) -> list[str]:
  """The config fields whose value in the run folder's config.json (as training wrote it)
  differs from the run's config; [] when there is no readable config.json."""
  path = rundir.FoldDir(run.fold_dir).config_path
  try:
    stored = io_lib.read_json(path) if os.path.isfile(path) else None
  except ValueError:
    return []
  if not isinstance(stored, dict):
    return []
  now = json.loads(json.dumps(run.config.to_dict(), default=str))
  old, new = _flat(stored), _flat(now)
  return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def _train_one(run: Run, train_fn: Callable[..., dict[str, Any]], load: Callable[[Any], Any],
               progress: crossval.Progress, clock: Callable[[], float],
               report: Callable[[str], None]) -> dict[str, Any]:
  """{"state": complete|trained, "result": ...} or {"state": "failed", "error": message}."""
  head = f"[{run.label}] draw {run.draw}"
  changed = config_changes(run)
  if changed:
    _log.warning("%s: %s was written with other values of %s than this run's (a label reused "
                 "for another system?); kept and resumed as it is", head, run.fold_dir,
                 ", ".join(changed))
  result = rundir.FoldDir(run.fold_dir).complete_result(run.config)
  if result is not None:
    report(f"{head}: complete ({run.fold_dir}/result.json), not retrained: "
           f"UAR {100 * result['uar']:.2f} %")
    return {"state": "complete", "result": result, "seconds": None}
  report(f"{head}: training in {run.fold_dir} (seed {run.config.seed})")
  start = clock()
  try:
    result = train_fn(run.config, run.run_dir, 0, dataset=load(run.config))
  except (ValueError, FloatingPointError, OSError) as e:
    progress.finished(None)
    msg = f"{head} failed: {type(e).__name__}: {_one_line(e)}"
    _log.error(msg)
    return {"state": "failed", "error": msg, "seconds": None}
  seconds = clock() - start
  progress.finished(seconds)
  report(f"{head}: UAR {100 * result['uar']:.2f} %, WA {100 * result['wa']:.2f} % "
         f"(best epoch {result.get('best_epoch')}); trained in "
         f"{crossval.format_duration(seconds)}; {_left(progress)}")
  return {"state": "trained", "result": result, "seconds": seconds}


# ----------------------------------------------------------------------------------------------
# compare.md / compare.json


def write_compare(systems: Sequence[System], results: Sequence[Mapping[int, Mapping[str, Any]]],
                  runs: Sequence[Run], status: Mapping[tuple[int, int], Mapping[str, Any]],
                  workdir: str, draws: Sequence[int], delta: float = DELTA, power: float = POWER,
                  pilot: bool = False) -> dict[str, Any]:
  """Writes `<workdir>/compare.json` and compare.md from the results so far; returns the JSON."""
  from ssa_jax import summary  # pylint: disable=g-import-not-at-top
  subs = subdirs([s.label for s in systems])
  summaries, labels = [], []
  for system, sub, res in zip(systems, subs, results):
    if not res:
      continue
    summaries.append(summary.summarize(
        res, name=str(system.config.name), split=SPLIT, system=system.label,
        corpus=str(system.config.data.corpus), workdir=os.path.join(workdir, sub), unit=UNIT,
        seed_offset=system.seed_offset, spec=system.spec, draws_requested=list(draws)))
    labels.append(system.label)
  reference_done = bool(results[0])
  paired = summary.compare_systems(summaries, labels) if reference_done else []
  values = [{d: float(r["uar"]) for d, r in res.items()} for res in results]
  power_rows = [{"system": s.label, "reference": systems[0].label,
                 **pilot_summary(values[i], values[0], delta, power)}
                for i, s in enumerate(systems) if i > 0 and values[i] and reference_done]
  run_rows = []
  for r in runs:
    st = status.get((r.index, r.draw), {"state": "pending"})
    run_rows.append({"system": r.label, "draw": r.draw, "seed": int(r.config.seed),
                     "corpus_seed": r.draw, "fold_dir": r.fold_dir, "state": st["state"],
                     "seconds": st.get("seconds"), "error": st.get("error")})
  protocol = {"unit": UNIT, "split": SPLIT, "selection": SELECTION, "draws": list(draws),
              "pilot": pilot, "planning": {"delta_points": delta, "power": power, "alpha": ALPHA,
                                           "metric": "uar"}}
  extra_md = ("\n" + render_draws(summaries, labels)
              + "\n" + render_power(power_rows, delta, power, pilot)
              + "\n" + render_runs(run_rows, reference_done, systems[0].label))
  study = crossval.write_compare(workdir, summaries, labels, paired,
                                 before={"protocol": protocol},
                                 after={"power": power_rows, "runs": run_rows}, extra_md=extra_md)
  return study


def _unit(row: Mapping[str, Any]) -> int:
  return int(row["fold"] if "fold" in row else row[UNIT])


def _pct(x: Any) -> str:
  return "—" if x is None else f"{100.0 * float(x):.2f}"


def render_draws(summaries: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> str:
  """Per paired metric (`summary.PAIRED`): a table with a row per draw, a column per system and
  the difference of each system to the first, percent / percentage points."""
  from ssa_jax import summary  # pylint: disable=g-import-not-at-top
  rows = [{_unit(r): r for r in s["folds"]} for s in summaries]
  draws = sorted(set().union(*rows)) if rows else []
  lines = []
  for key, title in summary.PAIRED.items():
    heads = [f"{l}" for l in labels] + [f"Δ {l}" for l in labels[1:]]
    lines += [f"Per draw: {title} (%; Δ: percentage points against {labels[0]}):", "",
              "| draw | " + " | ".join(heads) + " |", "|---:|" + "---:|" * len(heads)]
    for d in draws:
      vals = [rs.get(d, {}).get(key) for rs in rows]
      diffs = ["—" if v is None or vals[0] is None else f"{100.0 * (v - vals[0]):+.2f}"
               for v in vals[1:]]
      lines.append(f"| {d} | " + " | ".join([_pct(v) for v in vals] + diffs) + " |")
    lines.append("")
  return "\n".join(lines)


def render_power(rows: Sequence[Mapping[str, Any]], delta: float, power: float, pilot: bool
                 ) -> str:
  """The planning table of `pilot_summary` rows."""
  if not rows:
    return ""
  head = ("Seed-noise pilot: one system at two initialisation seeds on the same draws. The SD "
          "of its paired differences is seed noise alone, a floor for two different systems' "
          "(which adds their draw-by-system interaction): the draws below are a lower bound. "
          f"One run's seed SD: SD of Δ / √2 = "
          + ", ".join("n/a" if r["sd_single_run"] is None else f"{r['sd_single_run']:.2f}"
                      for r in rows) + " UAR points."
          if pilot else "Planning, from the paired UAR differences against the first system:")
  lines = [head, "",
           f"| SER system | draws | mean Δ UAR | SD of Δ | draws for {100 * power:g} % power "
           f"at ±{delta:g} points | 95 % CI ± at those draws | 95 % CI ± now |",
           "|---|---:|---:|---:|---:|---:|---:|"]
  f = lambda x, sign="": "n/a" if x is None else f"{x:{sign}.2f}"  # noqa: E731
  for r in rows:
    need = "n/a" if r["draws_needed"] is None else str(r["draws_needed"])
    lines.append(f"| {r['system']} | {r['n']} | {f(r['mean_diff'], '+')} | {f(r['sd_diff'])} | "
                 f"{need} | {f(r['ci_half_width_needed'])} | {f(r['ci_half_width_now'])} |")
  lines += ["", f"Two-sided paired t-test at alpha {ALPHA:g}, power from the noncentral t "
            f"(scipy.stats.nct) taking the SD of Δ over the draws so far as the true SD (an "
            f"estimate: rough with few draws); UAR points."]
  return "\n".join(lines) + "\n"


def render_runs(rows: Sequence[Mapping[str, Any]], reference_done: bool, reference: str) -> str:
  """What is missing: failed and pending runs (nothing when every run finished)."""
  lines = []
  if not reference_done:
    lines.append(f"{reference} (the reference) has no finished draw yet: no paired differences.")
  failed = [r for r in rows if r["state"] == "failed"]
  pending = [r for r in rows if r["state"] == "pending"]
  for r in failed:
    lines.append(f"- {r['error']}")
  if pending:
    lines.append(f"{len(pending)} run(s) not run yet (the study is in progress or was stopped).")
  return "\n".join(lines) + ("\n" if lines else "")


# ----------------------------------------------------------------------------------------------
# Power planning


def _check_planning(sd_diff: float, delta: float, power: float, alpha: float) -> None:
  if not (math.isfinite(sd_diff) and sd_diff >= 0):
    raise ValueError(f"sd_diff must be finite and >= 0, got {sd_diff}")
  if not (math.isfinite(delta) and delta != 0):
    raise ValueError(f"delta must be finite and non-zero, got {delta}")
  if not 0.0 < power < 1.0:
    raise ValueError(f"power must be in (0, 1), got {power}")
  if not 0.0 < alpha < 1.0:
    raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def paired_power(n: int, sd_diff: float, delta: float = DELTA, alpha: float = ALPHA) -> float:
  """Power of the two-sided paired t-test at `alpha` with `n` pairs when the differences have
  mean `delta` and SD `sd_diff`: P(|T| > t_{1-alpha/2, n-1}), T noncentral t with n - 1 degrees
  of freedom and noncentrality delta·√n / sd_diff.

  Raises:
    ValueError: n < 2 or a parameter out of range.
  """
  _check_planning(sd_diff, delta, 0.5, alpha)
  if int(n) < 2:
    raise ValueError(f"a paired t-test needs n >= 2 pairs, got {n}")
  if sd_diff == 0:
    return 1.0
  df = int(n) - 1
  nc = abs(delta) * math.sqrt(n) / sd_diff
  crit = float(scipy.stats.t.ppf(1.0 - alpha / 2.0, df))
  return float(scipy.stats.nct.sf(crit, df, nc) + scipy.stats.nct.cdf(-crit, df, nc))


def draws_for_power(sd_diff: float, delta: float = DELTA, power: float = POWER,
                    alpha: float = ALPHA, max_n: int = 100_000) -> int:
  """The smallest n >= 2 for which the two-sided paired t-test at `alpha` has at least `power`
  against a true mean difference `delta` (same unit as `sd_diff`, e.g. UAR points).

  Raises:
    ValueError: a parameter out of range, or more than `max_n` draws needed.
  """
  _check_planning(sd_diff, delta, power, alpha)
  if sd_diff == 0:
    return 2
  # Start from the normal approximation's n (a slight underestimate) and walk.
  z = scipy.stats.norm.ppf(1 - alpha / 2) + scipy.stats.norm.ppf(power)
  n = max(2, int(math.floor((z * sd_diff / abs(delta)) ** 2)) - 1)
  while n > 2 and paired_power(n - 1, sd_diff, delta, alpha) >= power:
    n -= 1
  while paired_power(n, sd_diff, delta, alpha) < power:
    n += 1
    if n > max_n:
      raise ValueError(f"more than {max_n} draws needed (sd_diff {sd_diff}, delta {delta})")
  return n


def ci_half_width(sd_diff: float, n: int, confidence: float = CONFIDENCE) -> float:
  """Half-width t_{(1+c)/2, n-1} · sd_diff / √n of the CI of a mean of n paired differences.

  Raises:
    ValueError: n < 2, a negative SD or confidence outside (0, 1).
  """
  if int(n) < 2:
    raise ValueError(f"a confidence interval needs n >= 2, got {n}")
  if not (math.isfinite(sd_diff) and sd_diff >= 0):
    raise ValueError(f"sd_diff must be finite and >= 0, got {sd_diff}")
  if not 0.0 < confidence < 1.0:
    raise ValueError(f"confidence must be in (0, 1), got {confidence}")
  return float(scipy.stats.t.ppf(0.5 + confidence / 2.0, int(n) - 1)) * sd_diff / math.sqrt(n)


def pilot_summary(a: Mapping[int, float], b: Mapping[int, float], delta: float = DELTA,
                  power: float = POWER, alpha: float = ALPHA, scale: float = 100.0
                  ) -> dict[str, Any]:
  """Planning figures from two systems' per-draw values (draw -> UAR fraction), paired on the
  draws both have, in points (`scale` 100): n, mean and SD of the differences a - b, the SD of
  one run (SD / √2: for one system at two seeds, the seed noise of a run), the draws needed for
  `power` against `delta` points, and the CI half-width at those draws and now (None when n < 2
  or, for the draws needed, when every difference is the same)."""
  common = sorted(set(a) & set(b))
  d = np.array([float(a[k]) - float(b[k]) for k in common], np.float64) * scale
  n = len(common)
  out: dict[str, Any] = {"draws": common, "n": n, "mean_diff": float(d.mean()) if n else None,
                         "sd_diff": None, "sd_single_run": None, "draws_needed": None,
                         "ci_half_width_needed": None, "ci_half_width_now": None,
                         "delta_points": delta, "power": power, "alpha": alpha}
  if n < 2:
    return out
  sd = float(d.std(ddof=1))
  out.update(sd_diff=sd, sd_single_run=sd / math.sqrt(2.0), ci_half_width_now=ci_half_width(sd, n))
  if sd > 0:
    need = draws_for_power(sd, delta, power, alpha)
    out.update(draws_needed=need, ci_half_width_needed=ci_half_width(sd, need))
  return out
