"""ssa_jax.io: atomic writes (a failure mid-write leaves the old file and no temporary file) and
the JSON-lines policy (a torn last line is dropped with a warning, any other bad line names file
and line; an append never glues two records)."""

from __future__ import annotations

import json
import logging
import os
import stat

import numpy as np
import pytest

from ssa_jax import io as io_lib


class Boom(RuntimeError):
  pass


def _listing(folder):
  return sorted(os.listdir(folder))


@pytest.mark.parametrize("kind", ["bytes", "text", "json", "with"])
def test_a_failure_mid_write_leaves_the_old_file(tmp_path, kind, monkeypatch):
  path = tmp_path / "result.json"
  io_lib.write_text(path, "old content\n")
  if kind == "with":
    def half_then_fail(f):
      f.write(b"new, half written")
      raise Boom("killed mid-write")
    call = lambda: io_lib.write_with(path, half_then_fail)
  else:
    # The data is written, then the fsync before the rename fails (a full disk, an I/O error).
    def failing_fsync(fd):
      raise Boom("fsync failed")
    monkeypatch.setattr(io_lib.os, "fsync", failing_fsync)
    call = {"bytes": lambda: io_lib.write_bytes(path, b"new"),
            "text": lambda: io_lib.write_text(path, "new"),
            "json": lambda: io_lib.write_json(path, {"new": 1})}[kind]
  with pytest.raises(Boom):
    call()
  assert path.read_text() == "old content\n"
  assert _listing(tmp_path) == ["result.json"]  # the temporary file is gone too


def test_a_failed_rename_leaves_the_old_file(tmp_path, monkeypatch):
  path = tmp_path / "a.txt"
  path.write_text("old")
  def failing_replace(src, dst):
    raise Boom("rename failed")
  monkeypatch.setattr(io_lib.os, "replace", failing_replace)
  with pytest.raises(Boom):
    io_lib.write_text(path, "new")
  assert path.read_text() == "old" and _listing(tmp_path) == ["a.txt"]


def test_writes_replace_create_folders_and_sync(tmp_path, monkeypatch):
  synced = []
  real_fsync = os.fsync
  def recording_fsync(fd):
    synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
    real_fsync(fd)
  monkeypatch.setattr(io_lib.os, "fsync", recording_fsync)
  path = tmp_path / "deep" / "er" / "x.json"
  assert io_lib.write_json(path, {"a": np.float32(0.5), "b": np.arange(3), "c": (1, 2)}) == str(path)
  assert json.loads(path.read_text()) == {"a": 0.5, "b": [0, 1, 2], "c": [1, 2]}
  assert path.read_text().endswith("\n")
  assert synced == [False, True]  # the file, then its folder (the rename)
  io_lib.write_with(path, lambda f: np.save(f, np.ones(2), allow_pickle=False))
  np.testing.assert_array_equal(np.load(path, allow_pickle=False), np.ones(2))
  mode = stat.S_IMODE(os.stat(path).st_mode)
  umask = os.umask(0)
  os.umask(umask)
  assert mode == 0o666 & ~umask  # not mkstemp's 0600
  with pytest.raises(TypeError, match="not JSON serialisable: object"):
    io_lib.write_json(path, {"x": object()})
  assert _listing(path.parent) == ["x.json"]


def test_temporary_names_are_recognised_and_unique(tmp_path):
  a, b = io_lib.temporary_name(tmp_path / "m.npy"), io_lib.temporary_name(tmp_path / "m.npy")
  assert a != b and os.path.dirname(a) == str(tmp_path)
  assert io_lib.is_temporary(os.path.basename(a))
  assert not io_lib.is_temporary("m.npy") and not io_lib.is_temporary(".hidden")
  open(a, "w").close()
  assert [p.name for p in tmp_path.glob(io_lib.TEMP_GLOB)] == [os.path.basename(a)]


def test_read_jsonl_drops_a_torn_last_line_with_a_warning(tmp_path, caplog):
  path = tmp_path / "metrics.jsonl"
  path.write_bytes(b'{"epoch": 1}\n\n{"epoch": 2}\n{"epoch": 3, "valid_u')
  with caplog.at_level(logging.WARNING, logger="ssa_jax.io"):
    assert io_lib.read_jsonl(path) == [{"epoch": 1}, {"epoch": 2}]
  assert f"{path}:4: dropped a torn last line" in caplog.text
  # A whole last line that only lacks its newline is kept, without a warning.
  path.write_bytes(b'{"epoch": 1}\n{"epoch": 2}')
  caplog.clear()
  assert io_lib.read_jsonl(path) == [{"epoch": 1}, {"epoch": 2}]
  assert caplog.text == ""


@pytest.mark.parametrize("content,line,what", [
    (b'{"epoch": 1}\nnot json\n{"epoch": 3}\n', 2, "not a JSON line"),
    (b'{"epoch": 1}\n{"epoch": 2\n', 2, "not a JSON line"),  # complete (has "\n"): not torn
    (b'[1, 2]\n{"epoch": 2}\n', 1, "expected a JSON object, got list"),
    (b'{"epoch": 1}\n\xff\xfe\n', 2, "not a JSON line"),
])
def test_read_jsonl_other_bad_lines_are_errors_naming_file_and_line(tmp_path, content, line, what):
  path = tmp_path / "m.jsonl"
  path.write_bytes(content)
  with pytest.raises(ValueError, match=f"^{path}:{line}: {what}"):
    io_lib.read_jsonl(path)


def test_read_jsonl_missing_file(tmp_path):
  with pytest.raises(FileNotFoundError):
    io_lib.read_jsonl(tmp_path / "none.jsonl")
  assert io_lib.read_jsonl(tmp_path / "none.jsonl", missing_ok=True) == []


def test_append_jsonl_round_trip_and_torn_tail(tmp_path, caplog, monkeypatch):
  path = tmp_path / "sub" / "metrics.jsonl"
  synced = []
  real_fsync = os.fsync
  monkeypatch.setattr(io_lib.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
  io_lib.append_jsonl(path, {"epoch": 1, "uar": np.float64(0.5)})
  io_lib.append_jsonl(path, {"epoch": 2, "confusion": np.eye(2, dtype=np.int64)})
  assert synced  # every append is fsync'd
  assert io_lib.read_jsonl(path) == [{"epoch": 1, "uar": 0.5},
                                     {"epoch": 2, "confusion": [[1, 0], [0, 1]]}]
  # A kill in the middle of the next append leaves a torn tail; the append after it cuts the tail.
  with open(path, "ab") as f:
    f.write(b'{"epoch": 3, "ua')
  with caplog.at_level(logging.WARNING, logger="ssa_jax.io"):
    io_lib.append_jsonl(path, {"epoch": 3})
  assert "cut off a torn last line" in caplog.text
  assert path.read_bytes().endswith(b'{"epoch": 2, "confusion": [[1, 0], [0, 1]]}\n{"epoch": 3}\n')
  assert [r["epoch"] for r in io_lib.read_jsonl(path)] == [1, 2, 3]
  # A whole last line without its newline is kept and terminated.
  with open(path, "ab") as f:
    f.write(b'{"epoch": 4}')
  io_lib.append_jsonl(path, {"epoch": 5})
  assert [r["epoch"] for r in io_lib.read_jsonl(path)] == [1, 2, 3, 4, 5]


def test_write_jsonl_is_read_back(tmp_path):
  path = tmp_path / "m.jsonl"
  records = [{"epoch": e, "loss": np.float32(1.0 / e)} for e in (1, 2, 4)]
  io_lib.write_jsonl(path, records)
  assert io_lib.read_jsonl(path) == [{"epoch": e, "loss": pytest.approx(1.0 / e)} for e in (1, 2, 4)]
  io_lib.write_jsonl(path, [])
  assert path.read_bytes() == b"" and io_lib.read_jsonl(path) == []
