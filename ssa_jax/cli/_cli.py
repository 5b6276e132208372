"""What every command shares: flag parsing, `--config`, one-line errors and the JAX setup.

  _CONFIG = _cli.define_config_flag("quickstart.py")   # --config FILE[:arg] and --config.x=y

  def main(argv):
    _cli.no_arguments(argv)                    # or use argv[1:] (bin.predict's files)
    config = _cli.config(_CONFIG)              # the loaded config (overrides applied)
    _cli.setup_jax(config.data.cache_dir)      # logging and the compilation cache
    ...                                        # raise _cli.Error("...") for any other user error

  def command():                               # `ssa-<command>`, `python -m bin.<command>`
    _cli.run(main)

Every user error (a bad flag or flag value, a missing required flag, an unknown config key, a
bad config value, a config file that is missing or fails to load, a missing path, anything the
library rejects with ValueError or OSError) is ONE line on stderr, `error: ...`, and exit code 1.
With `--verbosity=1` (debug) the library's exception propagates with its traceback instead.

Logging: unless `--verbosity` is given, the library's own messages (modules of `ssa_jax`) are
shown from INFO up ("resumed fold 3 from step 120 ..."), orbax's from ERROR up, other packages'
(JAX) from WARNING up. `--verbosity=0` shows everyone's INFO lines, `--verbosity=-2` errors only.
"""

from __future__ import annotations

import logging as std_logging
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from absl import app, flags, logging
from ml_collections import config_flags
from ml_collections.config_flags import config_flags as config_flags_lib

from ssa_jax import configs

_LIBRARY = "ssa_jax"
_LIBRARY_DIR = str(Path(__file__).resolve().parents[1]) + os.sep


class Error(Exception):
  """A user error: `run` prints `error: <message>` (one line) and exits with 1."""


def one_line(message: object) -> str:
  """`message` with every run of whitespace (newlines included) as one space."""
  return " ".join(str(message).split())


def _fail(message: str) -> None:
  print(f"error: {one_line(message)}", file=sys.stderr)
  sys.exit(1)


class _ConfigParser(config_flags_lib.ConfigFileFlagParser):
  """ml_collections' `FILE[:arg]` parser that also reads a packaged config's name
  (`quickstart:acrnn`, `ssa_jax.configs.resolve`). Neither a file nor a name: the file fails to
  load, and `config` says so in one line."""

  def parse(self, path):
    try:
      path = configs.resolve(path)
    except ValueError:
      pass
    return super().parse(path)


def define_config_flag(default: str):
  """`--config NAME|FILE[:arg]` (ml_collections, plus the packaged configs' names) with
  `--config.x=y` overrides, default the packaged config `default` (a name); listed by
  `--helpshort`.

  ml_collections applies the overrides when the flag is defined when given the default file: a
  field that does not exist, or a value of the wrong type, is one line on stderr and exit 1.
  """
  try:
    holder = config_flags.DEFINE_config_file(
        "config", configs.resolve(default),
        f"A packaged config ({', '.join(configs.names())}) or a Python config file "
        f"(get_config()), optionally NAME:arg or FILE:arg (default {default}); override any "
        "value with --config.<path>=<value>.")
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    overrides = " ".join(a for a in sys.argv[1:] if a.startswith("--config."))
    _fail(f"bad config override among [{overrides}]: {type(e).__name__} {e}")
  flags.FLAGS["config"].parser = _ConfigParser("config")  # the default is parsed: for the argv
  return holder


def config(holder) -> Any:
  """The loaded `--config` (overrides applied); a file that is missing or fails to load is an
  `Error` naming it."""
  spec = config_flags.get_config_filename(flags.FLAGS["config"])
  try:
    configs.resolve(spec)
  except ValueError:
    raise Error(f"--config {spec}: no such config file, nor a packaged config "
                f"({', '.join(configs.names())})") from None
  try:
    cfg = holder.value
    cfg.name  # pylint: disable=pointless-statement  # a failed load raises on first access
  except (OSError, AttributeError, KeyError, TypeError, ValueError) as e:
    raise Error(f"--config {spec}: {one_line(e)}") from e
  if cfg is None:
    raise Error(f"--config {spec}: get_config() returned None")
  return cfg


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing (config keys and values are checked here) with one-line errors."""
  try:
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError, OSError) as e:
    lines = [l for l in str(e).splitlines() if l.strip()]
    if any(l.startswith("Traceback") for l in lines):  # a config file that raised: its last line
      lines = lines[:1] + lines[-1:]
    msg = " ".join(lines)
    missing = re.findall(r"Flag --(\S+) must have a value other than None", msg)
    if missing:  # absl's message for required flags repeats itself
      msg = "missing required flag(s): " + ", ".join(f"--{m}" for m in missing)
    if isinstance(e, (AttributeError, KeyError)):
      overrides = " ".join(a for a in argv[1:] if a.startswith("--config."))
      msg = f"no config field {msg} (overrides: {overrides})"
    _fail(f"bad command line ({type(e).__name__}): {msg}")
    raise AssertionError("unreachable")  # for type checkers


def no_arguments(argv: Sequence[str]) -> None:
  """Raises `Error` if the command line has positional arguments (absl leaves them in argv)."""
  if len(argv) > 1:
    raise Error(f"unexpected arguments: {' '.join(argv[1:])} (flags are --name=value)")


class _LibraryInfo(std_logging.Filter):
  """Passes the library's records from INFO up, orbax's from ERROR up (its warnings on reading a
  checkpoint read-only are routine), everyone else's from WARNING up."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    # Python loggers are named after the module; absl's logger ("absl") keeps the caller's file.
    if (record.name == _LIBRARY or record.name.startswith(_LIBRARY + ".")
        or record.pathname.startswith(_LIBRARY_DIR)):
      return record.levelno >= std_logging.INFO
    if f"{os.sep}orbax{os.sep}" in record.pathname:
      return record.levelno >= std_logging.ERROR
    return record.levelno >= std_logging.WARNING


def setup_logging() -> None:
  """The library's INFO lines, other packages' warnings (module docstring); `--verbosity`, when
  given, wins."""
  if flags.FLAGS["verbosity"].present:
    return
  logging.set_verbosity(logging.INFO)
  handler = logging.get_absl_handler()
  if not any(isinstance(f, _LibraryInfo) for f in handler.filters):
    handler.addFilter(_LibraryInfo())


def setup_jax(cache_dir: str | os.PathLike | None = None) -> None:
  """Logging (`setup_logging`) and JAX's persistent compilation cache in `<cache_dir>/xla`
  (compiled programs are reused by the next command). Touches no device."""
  setup_logging()
  import jax  # pylint: disable=g-import-not-at-top  (after flag parsing: --help stays fast)
  if cache_dir is not None:
    jax.config.update("jax_compilation_cache_dir",
                      os.path.join(os.path.expanduser(str(cache_dir)), "xla"))


def run(main: Callable[[list[str]], int | None],
        user_errors: tuple[type[BaseException], ...] = (ValueError, OSError)) -> None:
  """`absl.app.run(main)` with one-line errors: `Error`, `app.UsageError` and `user_errors`
  raised by `main` print `error: <message>` on stderr and exit 1. `--helpshort` lists the flags
  of `main`'s module and `--config`."""
  # absl's --helpshort lists the key flags of the main module, which sys.argv[0] names (the
  # installed script, or bin/<command>.py): the command module's flags, --config (defined here).
  for module in (main.__module__, __name__):
    for flag in flags.FLAGS.get_key_flags_for_module(module):
      flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  # and --help opens with the docstring of `__main__`: the command module's, not the script's.
  sys.modules["__main__"].__doc__ = sys.modules[main.__module__].__doc__
  def wrapped(argv: list[str]) -> int | None:
    try:
      return main(argv)
    except (Error, app.UsageError, *user_errors) as e:
      if flags.FLAGS["verbosity"].present and flags.FLAGS.verbosity >= 1:
        raise
      print(f"error: {one_line(e) or type(e).__name__}", file=sys.stderr)
      return 1
  app.run(wrapped, flags_parser=parse_flags)


def fold_embedding_report(workdir: str, utterances: str, embedding: str,
                          score: Callable[[Any, Any], dict[str, Any]]) -> dict[str, Any]:
  """`score(embeddings (U, E), speakers (U,))` on the per-utterance `embedding` ("z_em" | "z_sp")
  of a trained fold's `utterances` (`speaker_eval.fold_embeddings`: with enrollment, the fold's
  own and its scored utterances), with the fold, checkpoint step, utterances, embedding, the
  model's enroll_k and the number of validation utterances left out named in the report
  (bin.probe, bin.speaker_eer)."""
  from ssa_jax import rundir, speaker_eval  # pylint: disable=g-import-not-at-top (fast --help)
  config = rundir.FoldDir(workdir).config()  # one line for an untrained fold
  setup_jax(config.data.cache_dir)
  emb = speaker_eval.fold_embeddings(workdir, utterances)
  report = score(speaker_eval.embedding_of(emb, embedding), emb.speakers)
  return {"workdir": workdir, "fold": emb.fold, "step": emb.step, "utterances_used": emb.subset,
          "embedding": embedding, "enroll_k": emb.enroll_k,
          "excluded_utterances": len(emb.excluded), **report}


def scored_note(report: dict[str, Any]) -> str:
  """The text commands print after a `fold_embedding_report`: how enrollment entered (empty
  without it)."""
  parts = []
  if report.get("enroll_k"):
    parts.append(f"read with the fold's enrollment (k {report['enroll_k']})")
  if report.get("excluded_utterances"):
    parts.append(f"without the {report['excluded_utterances']} enrollment utterance(s) of unseen "
                 f"speakers, as result.json scored")
  return ("; " + ", ".join(parts)) if parts else ""
