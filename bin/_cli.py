"""What every command shares: the `--config` flag and flag parsing with one-line errors."""

from __future__ import annotations

import sys
from pathlib import Path

from absl import flags
from ml_collections import config_flags

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def define_config_flag(default: str):
  """`--config FILE[:arg]` (ml_collections) with `--config.x=y` overrides.

  ml_collections applies the overrides when the flag is defined when given the default file: a
  field that does not exist, or a value of the wrong type, is one line on stderr and exit 1.
  """
  try:
    return config_flags.DEFINE_config_file("config", str(CONFIGS / default),
                                           "Python config file (get_config()), optionally :arg.")
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    overrides = " ".join(a for a in sys.argv[1:] if a.startswith("--config."))
    print(f"error: bad config override among [{overrides}]: {type(e).__name__} {e}",
          file=sys.stderr)
    sys.exit(1)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing (config keys and values are checked here) with one-line errors."""
  try:
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    lines = [l for l in str(e).splitlines() if l.strip()]
    if any(l.startswith("Traceback") for l in lines):  # a config file that raised: its last line
      lines = lines[:1] + lines[-1:]
    msg = " ".join(" ".join(lines).split())
    if isinstance(e, (AttributeError, KeyError)):
      overrides = " ".join(a for a in argv[1:] if a.startswith("--config."))
      msg = f"no config field {msg} (overrides: {overrides})"
    print(f"error: bad command line ({type(e).__name__}): {msg}", file=sys.stderr)
    sys.exit(1)
