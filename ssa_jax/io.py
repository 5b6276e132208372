"""Every file the project writes, and the JSON-lines files it reads back (DESIGN §9).

  write_bytes(path, data)             atomic writes: a whole new file or the old one, never half of
  write_text(path, text)              one (below). Parent folders are created.
  write_json(path, obj)               indent 2, numpy scalars / arrays as numbers / lists
  write_jsonl(path, records)          a whole JSON-lines file, atomically
  write_with(path, write)             `write(f)` fills a binary file object (np.save, sf.write,
                                      Figure.savefig); then as write_bytes
  append_jsonl(path, record)          one JSON line appended, flushed and fsync'd
  read_jsonl(path, missing_ok=False)  the records of a JSON-lines file (policy below)

Atomic write: the content goes to a temporary file beside `path` (same folder, so same file
system), named `.<name>.<32 hex>.tmp` (`is_temporary(name)` tells; `TEMP_GLOB` finds leftovers of
a killed process), which is flushed and fsync'd, then `os.replace`d over `path`; then the folder is
fsync'd where the OS allows it (POSIX), so the rename itself survives a power cut. If anything
fails before the rename, the temporary file is removed and `path` keeps its old content.
New files get the usual permissions (umask), not `tempfile.mkstemp`'s 0600.

JSON-lines policy (`read_jsonl`): a file is one JSON object per line, each line ending in "\\n";
blank lines are ignored. An append interrupted by a kill or a crash can only leave a *last* line
without its final "\\n"; if that line does not parse, it is such a torn append: it is dropped, with
a warning naming the file and line. Any other bad line (one that does not parse, or is not a JSON
object) is an error: `ValueError("<path>:<line>: ...")`. `append_jsonl` applies the same policy to
the file it extends: a torn last line is cut off (with a warning) before the new line is written,
so a record never gets glued to the remains of another.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import uuid
from typing import Any, BinaryIO, Callable, Iterable, Mapping

_log = logging.getLogger(__name__)

TEMP_SUFFIX = ".tmp"
TEMP_GLOB = ".*" + TEMP_SUFFIX  # Path.glob pattern of temporary files (a killed writer's leftovers)

PathLike = str | os.PathLike


def temporary_name(path: PathLike) -> str:
  """`<folder>/.<name>.<32 hex>.tmp`: the temporary file an atomic write of `path` uses."""
  path = os.fspath(path)
  folder, name = os.path.split(path)
  return os.path.join(folder, f".{name}.{uuid.uuid4().hex}{TEMP_SUFFIX}")


def is_temporary(name: str) -> bool:
  """Whether a file name is one of `temporary_name`'s (a leftover if its writer is gone)."""
  return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def _fsync_folder(folder: str) -> None:
  """fsync a folder (commits a rename in it); silently skipped where folders cannot be opened."""
  try:
    fd = os.open(folder, os.O_RDONLY)
  except OSError:  # e.g. Windows
    return
  try:
    os.fsync(fd)
  except OSError:  # some file systems refuse fsync on a folder
    pass
  finally:
    os.close(fd)


def write_with(path: PathLike, write: Callable[[BinaryIO], Any]) -> str:
  """Atomically replaces `path` with what `write(f)` writes into the binary file `f`.

  Returns:
    `path` as a string.
  Raises:
    Whatever `write` or the file system raises; `path` is then unchanged.
  """
  path = os.fspath(path)
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  tmp = temporary_name(path)
  try:
    with open(tmp, "xb") as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.unlink(tmp)
    raise
  _fsync_folder(folder)
  return path


def write_bytes(path: PathLike, data: bytes) -> str:
  """Atomically replaces `path` with `data`."""
  return write_with(path, lambda f: f.write(data))


def write_text(path: PathLike, text: str) -> str:
  """Atomically replaces `path` with `text` (UTF-8)."""
  return write_bytes(path, text.encode("utf-8"))


def json_default(o: Any) -> Any:
  """`json.dumps(default=...)` for numpy scalars and arrays (and anything with `__array__`, such
  as a fetched jax.Array): numbers and nested lists. Anything else is a TypeError."""
  import numpy as np  # pylint: disable=g-import-not-at-top  (keeps this module's import light)
  if isinstance(o, np.generic):
    return o.item()
  if isinstance(o, np.ndarray) or hasattr(o, "__array__"):
    return np.asarray(o).tolist()
  raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def dumps(obj: Any, **kwargs: Any) -> str:
  """`json.dumps` with `json_default` for numpy values."""
  return json.dumps(obj, default=json_default, **kwargs)


def write_json(path: PathLike, obj: Any, indent: int | None = 2) -> str:
  """Atomically replaces `path` with `obj` as JSON (and a final newline)."""
  return write_text(path, dumps(obj, indent=indent) + "\n")


def read_json(path: PathLike) -> Any:
  """The JSON document at `path`. Raises ValueError naming the file if it is unreadable."""
  path = os.fspath(path)
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ValueError(f"{path}: cannot read JSON ({e})") from e


def write_jsonl(path: PathLike, records: Iterable[Mapping[str, Any]]) -> str:
  """Atomically replaces `path` with one JSON line per record."""
  return write_text(path, "".join(dumps(dict(r)) + "\n" for r in records))


def _parse_line(line: bytes, path: str, number: int) -> dict[str, Any]:
  """One JSON object; ValueError("<path>:<number>: ...") otherwise."""
  try:
    record = json.loads(line.decode("utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ValueError(f"{path}:{number}: not a JSON line ({e})") from e
  if not isinstance(record, dict):
    raise ValueError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
  return record


def _torn_tail(data: bytes, path: str) -> int | None:
  """Offset where a torn last line of `data` starts (see the module docstring), else None."""
  if not data or data.endswith(b"\n"):
    return None
  start = data.rfind(b"\n") + 1
  tail = data[start:]
  if not tail.strip():
    return None
  try:
    _parse_line(tail, path, 0)
  except ValueError:
    return start
  return None


def read_jsonl(path: PathLike, missing_ok: bool = False) -> list[dict[str, Any]]:
  """The records of a JSON-lines file, in order (policy in the module docstring).

  Args:
    path: the file.
    missing_ok: a missing file reads as no records (otherwise FileNotFoundError).

  Raises:
    ValueError: a bad line other than a torn last one; the message is "<path>:<line>: ...".
  """
  path = os.fspath(path)
  try:
    with open(path, "rb") as f:
      data = f.read()
  except FileNotFoundError:
    if missing_ok:
      return []
    raise
  torn = _torn_tail(data, path)
  if torn is not None:
    number = data.count(b"\n", 0, torn) + 1
    _log.warning("%s:%d: dropped a torn last line (an interrupted append): %r", path, number,
                 data[torn:torn + 80])
    data = data[:torn]
  return [_parse_line(line, path, i) for i, line in enumerate(data.split(b"\n"), 1)
          if line.strip()]


def append_jsonl(path: PathLike, record: Mapping[str, Any]) -> None:
  """Appends `record` as one JSON line and makes it durable (flush + fsync).

  A torn last line already in the file is cut off first (with a warning); a last line that is
  whole but lacks its "\\n" gets one. Creates the file (and its folder) if needed.
  """
  path = os.fspath(path)
  line = (dumps(dict(record)) + "\n").encode("utf-8")
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  created = not os.path.exists(path)
  with open(path, "a+b") as f:
    size = f.seek(0, os.SEEK_END)
    if size:
      f.seek(size - 1)
      if f.read(1) != b"\n":
        f.seek(0)
        data = f.read()
        torn = _torn_tail(data, path)
        if torn is None:
          line = b"\n" + line
        else:
          _log.warning("%s: cut off a torn last line (an interrupted append) before appending: "
                       "%r", path, data[torn:torn + 80])
          f.truncate(torn)
    f.write(line)  # append mode: at the end, whatever the read position
    f.flush()
    os.fsync(f.fileno())
  if created:
    _fsync_folder(os.path.dirname(os.path.abspath(path)))
