"""Peak resident memory of `bin.prepare` and of one `bin.train` fold as the built-in corpus grows.

  python -m benchmarks.memory [--scales 1,4,16] [--config configs/quickstart.py] [--epochs 1]
      [--cache-dir DIR] [--keep] [--skip-train] [--json out.json]

For each scale s the built-in corpus gets s times the config's `data.synthetic.num_phrases`
(12 -> 48 -> 192 by default: new phrases, same speakers, emotions and repetitions, so the
utterance-length distribution and the per-utterance cost stay the same). Each command runs in its
own subprocess under a fresh cache folder (generation + feature extraction are part of the
prepare run); its peak resident set size comes from `os.wait4` (the kernel's ru_maxrss of that
child). The train run is fold 0 with `--config.train.epochs` (1 by default: the data section and
the train step's buffers are reached in the first epoch; more epochs add no data copies).

Printed: utterances, hours of audio (real frames x hop), bytes of the cached feature arrays
(segments float32 + mask + segment->utterance index), peak RSS of each command (for the train
run also its peak anonymous RSS: ru_maxrss counts the pages of the memory-mapped feature cache a
fold reads, page cache the kernel can drop; RssAnon, sampled, is what the process holds), and the growth
per hour of audio between the smallest and the largest scale (the fixed cost of Python, JAX and
the compiled model drops out), next to the feature arrays' own bytes per hour. Memory figures do
not depend on the machine's load (they are not timings).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SEGMENTS = re.compile(r"(\d+) segments of (\d+) frames x (\d+) mel bands x (\d+) channels "
                       r"\((\d+) real frames\) from (\d+) utterances")


def _anon_bytes(pid: int) -> float:
  """RssAnon of a live process (bytes), 0 once it is gone."""
  try:
    with open(f"/proc/{pid}/status") as f:
      for line in f:
        if line.startswith("RssAnon:"):
          return float(line.split()[1]) * 1024.0
  except OSError:
    pass
  return 0.0


def run_measured(cmd: list[str], cwd: str) -> tuple[int, float, str, float, float]:
  """(exit status, peak RSS bytes, stdout + stderr, wall seconds, peak anonymous RSS bytes) of
  one subprocess. Peak RSS is the kernel's ru_maxrss and counts the pages of memory-mapped files
  it touched (the feature cache; page cache the kernel can drop); the anonymous peak (RssAnon,
  sampled every 50 ms) is the memory the process itself holds."""
  t0 = time.time()
  with tempfile.TemporaryFile() as out:
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    anon = [0.0]
    def poll():
      while proc.returncode is None:
        anon[0] = max(anon[0], _anon_bytes(proc.pid))
        time.sleep(0.05)
    sampler = threading.Thread(target=poll, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    sampler.join()
    out.seek(0)
    text = out.read().decode(errors="replace")
  return proc.returncode, usage.ru_maxrss * 1024.0, text, time.time() - t0, anon[0]  # KiB -> B


def parse_prepare(text: str, hop: int, sample_rate: int) -> dict[str, float]:
  """Counts from bin.prepare's summary line -> utterances, hours, feature-array bytes."""
  m = _SEGMENTS.search(text)
  if not m:
    raise ValueError(f"bin.prepare printed no segment summary:\n{text[-2000:]}")
  n, t, mels, c, real, utts = (int(g) for g in m.groups())
  return {"segments": n, "utterances": utts, "real_frames": real,
          "hours": real * hop / sample_rate / 3600.0,
          "feature_bytes": n * t * mels * c * 4 + n * t + n * 4}


def per_hour(rows: list[dict[str, Any]], key: str) -> float | None:
  """Growth of `key` per hour of audio between the smallest and the largest corpus."""
  if len(rows) < 2 or rows[-1]["hours"] <= rows[0]["hours"]:
    return None
  return (rows[-1][key] - rows[0][key]) / (rows[-1]["hours"] - rows[0]["hours"])


GROWTH_KEYS = ("feature_bytes", "prepare_rss", "train_rss", "train_anon")


def growth(rows: list[dict[str, Any]]) -> dict[str, float | None]:
  """`per_hour` of each of GROWTH_KEYS that every row has (None otherwise)."""
  return {k: per_hour(rows, k) if all(r.get(k) is not None for r in rows) else None
          for k in GROWTH_KEYS}


def format_table(rows: list[dict[str, Any]]) -> str:
  mb = lambda b: f"{b / 2**20:,.0f}"  # noqa: E731
  lines = ["| corpus | utterances | hours of audio | feature arrays MiB | bin.prepare peak RSS MiB | "
           "bin.train fold peak RSS MiB | train RSS / feature bytes |",
           "|---|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    lines.append(f"| {r['scale']}x ({r['num_phrases']} phrases) | {r['utterances']} | "
                 f"{r['hours']:.2f} | {mb(r['feature_bytes'])} | {mb(r['prepare_rss'])}"
                 f"{' (cache reused)' if r.get('prepare_cache') == 'reused' else ''} | "
                 + (f"{mb(r['train_rss'])}"
                    + (f" (anonymous {mb(r['train_anon'])})" if r.get("train_anon") else "")
                    + f" | {r['train_rss'] / r['feature_bytes']:.2f} |"
                    if r.get("train_rss") is not None else "not run | |"))
  g = growth(rows)
  if g["feature_bytes"]:
    lines.append("")
    lines.append(f"per hour of audio ({rows[0]['scale']}x -> {rows[-1]['scale']}x): feature arrays "
                 f"{mb(g['feature_bytes'])} MiB, bin.prepare peak RSS "
                 f"{mb(g['prepare_rss'])} MiB ({g['prepare_rss'] / g['feature_bytes']:.2f}x)"
                 + (f", bin.train fold peak RSS {mb(g['train_rss'])} MiB "
                    f"({g['train_rss'] / g['feature_bytes']:.2f}x)"
                    if g["train_rss"] is not None else "")
                 + (f", its anonymous peak {mb(g['train_anon'])} MiB "
                    f"({g['train_anon'] / g['feature_bytes']:.2f}x)"
                    if g["train_anon"] is not None else ""))
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--scales", default="1,4,16")
  parser.add_argument("--config", default="configs/quickstart.py")
  parser.add_argument("--epochs", type=int, default=1)
  parser.add_argument("--fold", type=int, default=0)
  parser.add_argument("--cache-dir", default="", help="corpus + feature caches (default: a "
                      "temporary folder, deleted at the end unless --keep)")
  parser.add_argument("--keep", action="store_true")
  parser.add_argument("--skip-train", action="store_true", help="bin.prepare only")
  parser.add_argument("--json", default="")
  args = parser.parse_args(argv)
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location("mem_config", os.path.join(ROOT, args.config))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  base = module.get_config()
  phrases0 = int(base.data.synthetic.num_phrases)
  hop, sr = int(base.features.hop_length), int(base.features.sample_rate)
  cache = args.cache_dir or tempfile.mkdtemp(prefix="ssa_jax_memory_")
  work = tempfile.mkdtemp(prefix="ssa_jax_memory_runs_")
  rows = []
  try:
    for scale in [int(s) for s in args.scales.split(",") if s.strip()]:
      phrases = phrases0 * scale
      common = ["--config", args.config, f"--config.data.synthetic.num_phrases={phrases}",
                f"--config.data.cache_dir={cache}"]
      rc, prep_rss, text, prep_s, _ = run_measured([sys.executable, "-m", "bin.prepare", *common], ROOT)
      if rc:
        raise SystemExit(f"bin.prepare failed at scale {scale}:\n{text[-3000:]}")
      row = {"scale": scale, "num_phrases": phrases, **parse_prepare(text, hop, sr),
             "prepare_rss": prep_rss, "prepare_s": prep_s,
             "prepare_cache": "reused" if "(reused)" in text else "built"}
      if args.skip_train:
        row.update(train_rss=None, train_s=None)
        rows.append(row)
        print(f"scale {scale}x: {row['utterances']} utterances, {row['hours']:.2f} h, prepare "
              f"{prep_rss / 2**20:.0f} MiB ({prep_s:.0f} s)", file=sys.stderr, flush=True)
        continue
      rc, train_rss, text, train_s, train_anon = run_measured(
          [sys.executable, "-m", "bin.train", *common, "--fold", str(args.fold),
           "--workdir", os.path.join(work, f"x{scale}"), f"--config.train.epochs={args.epochs}"],
          ROOT)
      if rc:
        raise SystemExit(f"bin.train failed at scale {scale}:\n{text[-3000:]}")
      row.update(train_rss=train_rss, train_s=train_s, train_anon=train_anon)
      rows.append(row)
      print(f"scale {scale}x: {row['utterances']} utterances, {row['hours']:.2f} h, prepare "
            f"{prep_rss / 2**20:.0f} MiB ({prep_s:.0f} s), train {train_rss / 2**20:.0f} MiB "
            f"({train_s:.0f} s; anonymous {train_anon / 2**20:.0f} MiB)", file=sys.stderr, flush=True)
  finally:
    shutil.rmtree(work, ignore_errors=True)
    if not args.cache_dir and not args.keep:
      shutil.rmtree(cache, ignore_errors=True)
  table = format_table(rows)
  print(f"{args.config}, fold {args.fold}, {args.epochs} epoch(s) of training\n{table}")
  out = {"args": vars(args), "rows": rows, "table": table,
         "per_hour": growth(rows)}
  if args.json:
    from benchmarks import loadcheck  # pylint: disable=g-import-not-at-top
    loadcheck.write_json(args.json, out)
  return out


if __name__ == "__main__":
  main()
