"""The packaged configs: files with `get_config()` that every command's `--config NAME[:ARG]`
finds by name from any folder once installed (`ssa-train --config quickstart:acrnn`). A path to a
config file (`--config configs/quickstart.py`, `--config my_config.py:arg`) works as well.

  names()                -> ['acrnn', 'acrnn_r', 'quickstart', 'ssa_crnn_r']
  resolve('quickstart:acrnn') -> '<site-packages>/ssa_jax/configs/quickstart.py:acrnn'
"""

from __future__ import annotations

import os
from pathlib import Path

_DIR = Path(__file__).resolve().parent


def names() -> list[str]:
  """The packaged configs' names (their file names without .py), sorted."""
  return sorted(p.stem for p in _DIR.glob("*.py") if not p.stem.startswith("_"))


def resolve(spec: str) -> str:
  """`PATH[:ARG]` with PATH an existing file: as is; PATH a packaged config's name (`quickstart`
  or `quickstart.py`, no folder): that file's path, `:ARG` kept. A file wins over a name.

  Raises:
    ValueError: neither, as `<PATH>: config file not found (packaged configs: acrnn, ...)`.
  """
  path, colon, arg = spec.partition(":")
  if os.path.isfile(path):
    return spec
  name = path[:-len(".py")] if path.endswith(".py") else path
  if name in names():
    return str(_DIR / f"{name}.py") + colon + arg
  raise ValueError(f"{path}: config file not found (packaged configs: {', '.join(names())})")
