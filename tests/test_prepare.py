"""`python -m bin.prepare` end to end in a subprocess, as a user runs it from the repository root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
TINY = ["--config.data.synthetic.num_speakers=2", "--config.data.synthetic.num_phrases=2",
        "--config.data.synthetic.repetitions=1"]


def run_prepare(*args: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "bin.prepare", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)


def test_prepare_builds_then_reuses_the_synthetic_cache(tmp_path):
  args = [*TINY, f"--config.data.cache_dir={tmp_path}"]
  first = run_prepare(*args)
  assert first.returncode == 0, first.stderr
  out = first.stdout
  assert "synthetic corpus at" in out and "16 utterances, 2 speakers, 0 bad files skipped" in out
  lines = out.splitlines()
  header = next(i for i, s in enumerate(lines) if s.split()[:1] == ["speaker"])
  assert lines[header].split() == ["speaker", "neu", "hap", "ang", "sad", "total"]
  assert [s.split() for s in lines[header + 1:header + 4]] == [
      ["spk00F", "2", "2", "2", "2", "8"], ["spk01M", "2", "2", "2", "2", "8"],
      ["total", "4", "4", "4", "4", "16"]]
  assert " segments of 300 frames x 40 mel bands x 3 channels" in out
  cache_line = next(s for s in lines if s.startswith("feature cache: "))
  assert cache_line.endswith("(built)") and str(tmp_path / "features-") in cache_line
  assert "features" in first.stderr  # the tqdm bar
  second = run_prepare(*args)
  assert second.returncode == 0, second.stderr
  report = out[out.index("synthetic corpus at"):]  # the first run also says it generated the corpus
  assert second.stdout.replace("(reused)", "(built)") == report


def test_prepare_reports_skipped_files_of_a_manifest(tmp_path):
  sr = 16000
  t = np.arange(sr) / sr
  sf.write(tmp_path / "good.wav", 0.3 * np.sin(2 * np.pi * 220 * t), sr)
  (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00")
  (tmp_path / "list.csv").write_text("path,speaker,label\ngood.wav,s1,ang\nbroken.wav,s1,sad\nnone.wav,s2,neu\n")
  res = run_prepare("--config.data.corpus=manifest", f"--config.data.root={tmp_path / 'list.csv'}",
                    f"--config.data.cache_dir={tmp_path / 'cache'}", "--config.features.backend=librosa")
  assert res.returncode == 0, res.stderr
  assert "1 utterances, 1 speakers, 2 bad files skipped" in res.stdout
  assert f"{tmp_path / 'list.csv'}:4: audio file {tmp_path / 'none.wav'} does not exist" in res.stdout
  assert f"{tmp_path / 'broken.wav'}: " in res.stdout
  assert "1 segments of 300 frames" in res.stdout


def test_prepare_errors_are_one_line_with_exit_code_1(tmp_path):
  for args, message in [
      (["--config.data.corpus=iemocap", f"--config.data.root={tmp_path / 'nope'}"], "does not exist"),
      (["--config.data.corpus=timit"], "unknown corpus 'timit'"),
      (["--config.data.corpus=atthack", f"--config.data.root={tmp_path}"], "holds no Att-HACK"),
      (["--config.data.nonfield=1"], "--config.data.nonfield=1"),
      (["--config", "configs/quickstart.py", "--config.data.nonfield=1"], "no config field"),
      (["--config", "configs/quickstart.py", "--config.train.epochs=abc"], "invalid literal"),
      ([*TINY, "--config.features.backend=torch"], "unknown features.backend 'torch'"),
  ]:
    res = run_prepare(*args, f"--config.data.cache_dir={tmp_path / 'cache'}")
    assert res.returncode == 1
    err = [s for s in res.stderr.splitlines() if s.strip()]
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], res.stderr
    assert "Traceback" not in res.stderr
