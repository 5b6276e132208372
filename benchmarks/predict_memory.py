"""Peak resident memory of `bin.predict` on a long recording (issue 22 item 6): streamed in blocks
against a short file (the fixed cost of Python, JAX and the model), optionally against the same
recording read whole.

  python -m benchmarks.predict_memory [--hours 1] [--workdir RUN/foldK] [--whole] [--json out.json]

Without --workdir a tiny model (tests/tiny_config.py's ACRNN at the paper's feature sizes: 40 mel
bands, 3 s segments) is trained for one epoch on a tiny built-in corpus under a temporary folder.
The recording (a sine sweep plus noise at 16 kHz, int16 WAV: 115 MB per hour) is written in
one-minute blocks to a temporary folder and deleted at the end. Each `bin.predict --format csv
--quiet` run is its own subprocess (the CSV timeline read from its output); its peak RSS is the kernel's ru_maxrss of that child
(`benchmarks.memory.run_measured`), its anonymous peak sampled from /proc. Printed: the peaks, and
the long run's peak minus the short run's: what the recording itself costs. Memory does not
depend on the machine's load; the wall times printed do.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any

import numpy as np

from benchmarks.memory import ROOT, run_measured

TINY = """
from tests.tiny_config import tiny_config


def get_config():
  c = tiny_config("acrnn", "none", {{
      "data.cache_dir": {cache!r}, "data.classes": ("neu", "ang"), "model.num_classes": 2,
      "data.synthetic.num_speakers": 2, "data.synthetic.num_phrases": 4,
      "data.synthetic.repetitions": 1, "features.n_mels": 40, "features.segment_frames": 300,
      "features.min_segment_frames": 100, "train.batch_size": 4, "train.valid_fraction": 0.5,
      "train.num_folds": 2, "train.epochs": 1}})
  c.name = "tiny_predict_memory"
  return c
"""


def write_recording(path: str, seconds: float, sample_rate: int = 16000, seed: int = 0) -> int:
  """A sine sweep (100-400 Hz, 10 s period) with noise, int16 mono WAV, written a minute at a
  time (nothing of the size of the file is held). Returns its size in bytes."""
  import soundfile as sf  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  total = int(seconds * sample_rate)
  with sf.SoundFile(path, "w", sample_rate, 1, "PCM_16") as f:
    for start in range(0, total, 60 * sample_rate):
      t = np.arange(start, min(total, start + 60 * sample_rate)) / sample_rate
      freq = 250 + 150 * np.sin(2 * np.pi * t / 10)
      x = 0.3 * np.sin(2 * np.pi * np.cumsum(freq) / sample_rate) + 0.03 * rng.normal(size=t.size)
      f.write(x.astype(np.float32))
  return os.path.getsize(path)


def train_tiny(folder: str) -> str:
  """One epoch of the tiny model on a tiny corpus; returns its fold directory."""
  cfg = os.path.join(folder, "tiny_config.py")
  with open(cfg, "w") as f:
    f.write(TINY.format(cache=os.path.join(folder, "cache")))
  workdir = os.path.join(folder, "run")
  env = {**os.environ, "PYTHONPATH": ROOT}
  p = subprocess.run([sys.executable, "-m", "bin.train", "--config", cfg, "--fold", "0",
                      "--workdir", workdir], cwd=ROOT, env=env, capture_output=True, text=True)
  if p.returncode:
    raise SystemExit(f"bin.train failed:\n{p.stderr[-3000:]}")
  return os.path.join(workdir, "fold0")


def measure(fold: str, path: str, extra: list[str]) -> dict[str, Any]:
  """Peak RSS of `bin.predict --format csv --quiet` on one file, and its CSV rows (segments)."""
  rc, rss, text, wall, anon = run_measured(
      [sys.executable, "-m", "bin.predict", "--workdir", fold, "--format", "csv", "--quiet",
       *extra, path], ROOT)
  if rc:
    raise SystemExit(f"bin.predict failed on {path}:\n{text[-3000:]}")
  return {"rss": rss, "anon": anon, "wall_s": wall,
          "segments": sum(line.startswith(path + ",") for line in text.splitlines())}


def format_table(rows: list[dict[str, Any]]) -> str:
  mib = lambda b: f"{b / 2**20:,.0f}"  # noqa: E731
  lines = ["| run | audio | segments | peak RSS MiB | peak anonymous MiB | wall s |",
           "|---|---:|---:|---:|---:|---:|"]
  for r in rows:
    lines.append(f"| {r['name']} | {r['seconds'] / 60:.1f} min | {r['segments']} | "
                 f"{mib(r['rss'])} | {mib(r['anon'])} | {r['wall_s']:.0f} |")
  base = rows[0]
  for r in rows[1:]:
    lines.append(f"\n{r['name']} minus {base['name']}: {mib(r['rss'] - base['rss'])} MiB peak "
                 f"RSS, {mib(r['anon'] - base['anon'])} MiB anonymous")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--hours", type=float, default=1.0)
  parser.add_argument("--workdir", default="", help="a trained fold (default: train a tiny one)")
  parser.add_argument("--whole", action="store_true",
                      help="also predict the recording read whole (--stream_above_s=1e9)")
  parser.add_argument("--json", default="")
  args = parser.parse_args(argv)
  tmp = tempfile.mkdtemp(prefix="ssa_jax_predict_memory_")
  try:
    fold = args.workdir or train_tiny(tmp)
    short, long_ = os.path.join(tmp, "short.wav"), os.path.join(tmp, "long.wav")
    write_recording(short, 10.0)
    size = write_recording(long_, args.hours * 3600)
    print(f"recording: {args.hours:g} h, {size / 1e6:.0f} MB int16 WAV", file=sys.stderr,
          flush=True)
    rows = [{"name": "short file (10 s)", "seconds": 10.0, **measure(fold, short, [])},
            {"name": "long file, streamed", "seconds": args.hours * 3600,
             **measure(fold, long_, [])}]
    if args.whole:
      rows.append({"name": "long file, read whole", "seconds": args.hours * 3600,
                   **measure(fold, long_, ["--stream_above_s=1e9"])})
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  table = format_table(rows)
  print(f"bin.predict --format csv, {'fold ' + args.workdir if args.workdir else 'tiny ACRNN'}"
        f"\n{table}")
  out = {"args": vars(args), "rows": rows, "table": table, "wav_bytes": size}
  if args.json:
    from benchmarks import loadcheck  # pylint: disable=g-import-not-at-top
    loadcheck.write_json(args.json, out)
  return out


if __name__ == "__main__":
  main()
