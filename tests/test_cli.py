"""The five commands' user errors, run as a user runs them (`python -m bin.<command>` from the
repository root, in a subprocess): every bad flag, flag value, config file, config key or value,
missing path or missing required flag is exactly one line on stderr, `error: ...`, and exit code 1.
Also: `--helpshort` lists `--config`, and the logging filter of `ssa_jax/cli/_cli.py`."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from ssa_jax.cli import _cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = ["--config", "configs/quickstart.py"]


def run_command(command: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
  env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}
  return subprocess.run([sys.executable, "-m", f"bin.{command}", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)


def stderr_lines(proc: subprocess.CompletedProcess) -> list[str]:
  return [l for l in proc.stderr.splitlines() if l.strip()]


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
  root = tmp_path_factory.mktemp("cli")
  (root / "not_a_fold").mkdir()
  (root / "sound.wav").write_bytes(b"RIFF")  # exists; never read (the fold check comes first)
  return {"root": str(root), "missing": str(root / "missing"),
          "not_a_fold": str(root / "not_a_fold"), "wav": str(root / "sound.wav")}


CASES = {
    # command: [(id, args, words the one line must hold)]
    "train": [
        ("bad_flag", ["--nosuchflag"], ["nosuchflag"]),
        ("bad_flag_value", ["--fold", "abc"], ["--fold=abc"]),
        ("positional", ["stray"], ["unexpected arguments: stray"]),
        ("missing_config", ["--config", "{missing}/c.py"], ["{missing}/c.py", "no such config"]),
        ("bad_key", ["--config.train.nosuchkey=1"], ["nosuchkey"]),
        ("bad_value", QUICK + ["--config.train.epochs=abc"], ["--config.train.epochs=abc"]),
        ("bad_fold", QUICK + ["--fold", "10", "--workdir", "{root}/run"],
         ["fold 10 is out of range: the random split has folds 0..9"]),
        ("missing_corpus", QUICK + ["--config.data.corpus=iemocap",
                                    "--config.data.root={missing}", "--workdir", "{root}/run"],
         ["{missing}", "does not exist"]),
    ],
    "prepare": [
        ("bad_flag", ["--nosuchflag"], ["nosuchflag"]),
        ("positional", ["stray"], ["unexpected arguments: stray"]),
        ("missing_config", ["--config", "{missing}/c.py"], ["{missing}/c.py", "no such config"]),
        ("missing_corpus", ["--config.data.corpus=manifest", "--config.data.root={missing}.csv"],
         ["{missing}.csv"]),
    ],
    "crossval": [
        ("bad_flag", ["--nosuchflag"], ["nosuchflag"]),
        ("positional", ["stray"], ["unexpected arguments: stray"]),
        ("missing_config", ["--config", "{missing}/c.py"], ["{missing}/c.py", "no such config"]),
        ("missing_compare", ["--compare", "{missing}/c.py", "--workdir", "{root}/cv"],
         ["{missing}/c.py", "not found"]),
        ("bad_folds", ["--folds", "0-10", "--workdir", "{root}/cv"], ["--folds", "outside 0..9"]),
        ("bad_key", ["--config.model.nosuchkey=1"], ["nosuchkey"]),
    ],
    "evaluate": [
        ("no_flags", [], ["missing required flag(s): --workdir, --fold"]),
        ("bad_flag", ["--workdir", "{root}", "--fold", "0", "--nosuchflag"], ["nosuchflag"]),
        ("bad_flag_value", ["--workdir", "{root}", "--fold", "x"], ["--fold=x"]),
        ("missing_workdir", ["--workdir", "{missing}", "--fold", "0"], ["{missing}", "no such folder"]),
        ("untrained_fold", ["--workdir", "{root}", "--fold", "0"],
         ["{root}/fold0", "not a trained fold directory"]),
    ],
    "predict": [
        ("no_flags", [], ["missing required flag(s): --workdir"]),
        ("bad_flag", ["--workdir", "{not_a_fold}", "--nosuchflag", "{wav}"], ["nosuchflag"]),
        ("bad_flag_value", ["--workdir", "{not_a_fold}", "--norm", "own", "{wav}"], ["--norm"]),
        ("bad_format", ["--workdir", "{not_a_fold}", "--format", "xml", "{wav}"], ["--format"]),
        ("bad_embeddings", ["--workdir", "{not_a_fold}", "--embeddings", "{root}/e.npy", "{wav}"],
         ["--embeddings {root}/e.npy", "must end in .npz"]),
        ("no_files", ["--workdir", "{not_a_fold}"], ["give at least one audio file"]),
        ("missing_file", ["--workdir", "{not_a_fold}", "{missing}.wav"],
         ["no such file or folder: {missing}.wav"]),
        ("missing_workdir", ["--workdir", "{missing}", "{wav}"],
         ["{missing}", "not a trained fold directory"]),
        ("run_dir_not_fold", ["--workdir", "{not_a_fold}", "{wav}"],
         ["{not_a_fold}", "not a trained fold directory"]),
    ],
}


@pytest.mark.parametrize("command,args,words", [
    pytest.param(command, args, words, id=f"{command}-{name}")
    for command, cases in CASES.items() for name, args, words in cases])
def test_cli_errors_are_one_line(paths, command, args, words):
  proc = run_command(command, *(a.format(**paths) for a in args))
  lines = stderr_lines(proc)
  assert proc.returncode == 1, proc.stderr
  assert len(lines) == 1, proc.stderr
  assert lines[0].startswith("error: "), proc.stderr
  for w in words:
    assert w.format(**paths) in lines[0], proc.stderr


@pytest.mark.parametrize("command,has_config", [
    ("train", True), ("prepare", True), ("crossval", True), ("evaluate", False),
    ("predict", False)])
def test_helpshort_lists_the_key_flags(command, has_config):
  proc = run_command(command, "--helpshort")  # absl exits with 1 after a help text
  assert proc.stderr == ""
  assert ("--config:" in proc.stdout) == has_config, proc.stdout
  assert "--helpfull" in proc.stdout


def _record(name: str, level: int, pathname: str) -> logging.LogRecord:
  return logging.LogRecord(name, level, pathname, 1, "message", None, None)


def test_logging_filter_shows_the_library_info_and_others_warnings():
  keep = _cli._LibraryInfo().filter  # pylint: disable=protected-access
  library_file = os.path.join(REPO, "ssa_jax", "train.py")
  jax_file = os.path.join("site-packages", "jax", "_src", "xla_bridge.py")
  orbax_file = os.path.join("site-packages", "orbax", "checkpoint", "checkpoint_manager.py")
  # absl's logger keeps the caller's file: train.py's "resumed fold ..." line.
  assert keep(_record("absl", logging.INFO, library_file))
  assert keep(_record("ssa_jax.data", logging.INFO, "anywhere.py"))  # a Python logger of ours
  assert not keep(_record("ssa_jax.data", logging.DEBUG, "anywhere.py"))
  assert not keep(_record("jax._src.xla_bridge", logging.INFO, jax_file))
  assert keep(_record("jax._src.xla_bridge", logging.WARNING, jax_file))
  assert not keep(_record("absl", logging.INFO, orbax_file))
  assert not keep(_record("absl", logging.WARNING, orbax_file))  # read-only restore chatter
  assert keep(_record("absl", logging.ERROR, orbax_file))
