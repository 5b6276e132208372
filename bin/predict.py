"""Predicts the emotion of audio files with a trained fold (best checkpoint).

  python -m bin.predict --workdir runs/quickstart/fold3 speech.wav more_audio/
      [--format table|json|jsonl|csv] [--norm self|train] [--pooling max|mean]
      [--embeddings OUT.npz] [--quiet]

Folders are searched recursively for audio files. Any sample rate, mono or multi-channel, at least
0.1 s, any length: a file longer than --stream_above_s (300 s) is read in blocks and predicted in
bounded memory (`ssa_jax/predict.py`). Each file's result is written (stdout, flushed) as soon as
it is done, in the order given; a progress bar (seconds of audio) goes to stderr when it is a
terminal, unless --quiet.

--format:
  table  (default) per file: the class, the class probabilities (the utterance decision pools
         the segment posteriors as in training, `config.train.pooling` unless --pooling) and
         each segment's prediction;
  json   one JSON document {workdir, step, classes, norm, pooling, files: [...], failed}
         (--json is an alias);
  jsonl  one JSON object per file per line (`predict.prediction`'s dict; {"path", "error"} for a
         file that failed);
  csv    the timeline: one row per 3 s segment, columns path, segment, start_s, end_s, label and
         one probability column per class (a file that failed has no row).

--embeddings OUT.npz: also writes the embeddings of the files predicted (the same model call),
in file order, as one .npz (np.load(OUT) needs no pickle): paths (N,), z_em (N, E) (the mean of
each file's segment embeddings), z_em_segments (n_total, E), and for SSA-CRNN z_sp, z_sp_segments;
segment_file (n_total,) (each segment's row in paths), start_s, end_s (n_total,); failed (F,)
the files that failed and are not in it.

A file that cannot be used is reported on its own line (stderr) and the others are still
predicted; the exit code is then 1. A path that does not exist stops the command before anything
is loaded.

--norm self (default, a new speaker): normalise each file with its own statistics (a streamed
file is read twice: its statistics, then the prediction); --norm train: with the global
statistics of the training speakers.

A bad or missing flag, no file given, or a --workdir that is not a trained fold is one line on
stderr and exit code 1 (`bin/_cli.py`).
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from typing import Any, Callable

from absl import flags

from bin import _cli

FORMATS = ("table", "json", "jsonl", "csv")

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Trained fold directory: <run workdir>/fold<K>.")
flags.DEFINE_enum("format", "table", FORMATS, "Output: text table, one JSON document, JSON "
                  "lines (one per file), or the per-segment timeline as CSV.")
flags.DEFINE_bool("json", False, "Alias of --format json.")
flags.DEFINE_enum("norm", None, ["self", "train"],
                  "Speaker normalisation: the file's own statistics or the training global ones "
                  "(default: the run's features.norm_fallback, 'self' unless changed).")
flags.DEFINE_enum("pooling", None, ["max", "mean"],
                  "Segment posteriors -> utterance (default: the run's train.pooling).")
flags.DEFINE_string("embeddings", None, "Also write the files' embeddings (z_em, SSA-CRNN also "
                    "z_sp; per file and per segment) to this .npz file.")
flags.DEFINE_float("stream_above_s", 300.0, "Files longer than this (seconds) are read in blocks "
                   "(bounded memory).")
flags.DEFINE_bool("quiet", False, "No progress bar and no summary line on stderr (errors are "
                  "still reported).")
flags.mark_flag_as_required("workdir")


class _Writer:
  """Writes each result as it comes, in the chosen format, through `write` (stdout, flushed)."""

  def __init__(self, fmt: str, head: dict[str, Any], classes: list[str],
               write: Callable[[str], None]):
    self.fmt, self.head, self.classes, self.write = fmt, head, classes, write
    self.count = 0
    if fmt == "csv":
      self.write(_csv_line(["path", "segment", "start_s", "end_s", "label", *classes]))

  def result(self, r: dict[str, Any]) -> None:
    from ssa_jax import io as ssa_io, predict  # pylint: disable=g-import-not-at-top
    if self.fmt == "table" and "error" not in r:
      self.write(predict.format_result(r) + "\n")
    elif self.fmt == "jsonl":
      self.write(ssa_io.dumps(r) + "\n")
    elif self.fmt == "json":
      head = (json.dumps(self.head, indent=2)[:-2] + ',\n  "files": [\n' if self.count == 0
              else ",\n")
      self.write(head + "    " + ssa_io.dumps(r))
    elif self.fmt == "csv" and "error" not in r:
      self.write("".join(
          _csv_line([r["path"], s["index"], f"{s['start_s']:.2f}", f"{s['end_s']:.2f}",
                     s["label"], *(f"{s['probabilities'][c]:.6f}" for c in self.classes)])
          for s in r["segments"]))
    self.count += 1

  def close(self, failed: int) -> None:
    if self.fmt == "json":
      start = (json.dumps(self.head, indent=2)[:-2] + ',\n  "files": [' if self.count == 0
               else "")
      self.write(f'{start}\n  ],\n  "failed": {failed}\n}}\n')


def _csv_line(row: list[Any]) -> str:
  buf = io.StringIO()
  csv.writer(buf, lineterminator="\n").writerow(row)
  return buf.getvalue()


def _write_embeddings(path: str, embeddings: list[dict[str, Any]], failed: list[str]) -> None:
  import numpy as np  # pylint: disable=g-import-not-at-top
  from ssa_jax import io as ssa_io  # pylint: disable=g-import-not-at-top
  arrays: dict[str, Any] = {"paths": np.asarray([e["path"] for e in embeddings], dtype=str),
                            "failed": np.asarray(failed, dtype=str)}
  counts = [len(e["start_s"]) for e in embeddings]
  arrays["segment_file"] = np.repeat(np.arange(len(embeddings)), counts).astype(np.int64)
  for key in ("start_s", "end_s"):
    arrays[key] = np.concatenate([e[key] for e in embeddings]) if embeddings else np.zeros(0)
  for key in ("z_em", "z_sp"):
    if embeddings and key in embeddings[0]:
      arrays[key] = np.stack([e[key] for e in embeddings])
      arrays[key + "_segments"] = np.concatenate([e[key + "_segments"] for e in embeddings])
  ssa_io.write_with(path, lambda f: np.savez(f, **arrays))


def main(argv: list[str]) -> int:
  paths = argv[1:]
  if not paths:
    raise _cli.Error("give at least one audio file or folder after the flags")
  if FLAGS.embeddings is not None and not FLAGS.embeddings.endswith(".npz"):
    raise _cli.Error(f"--embeddings {FLAGS.embeddings}: the file name must end in .npz")
  fmt = "json" if FLAGS.json else FLAGS.format
  missing = [p for p in paths if not os.path.exists(p)]
  if missing:  # before the model is loaded: a typo is reported at once
    raise _cli.Error(f"no such file or folder: {', '.join(missing)}")
  from ssa_jax import rundir  # pylint: disable=g-import-not-at-top  (keeps --help fast)
  config = rundir.FoldDir(FLAGS.workdir).config()  # ValueError (one line): an untrained fold
  _cli.setup_jax(config.data.cache_dir)  # as bin.train: the same compilation cache
  # pylint: disable=g-import-not-at-top  (after the JAX setup)
  import tqdm
  from ssa_jax import audio, predict
  predictor = predict.load_predictor(FLAGS.workdir)
  norm = FLAGS.norm
  if norm is None:
    norm = "train" if predictor.config.features.get("norm_fallback") == "global" else "self"
  files = predict.find_audio_files(paths)
  if not files:
    raise _cli.Error(f"no audio file found in {', '.join(paths)}")
  opts = predict.options(predictor, norm, FLAGS.pooling,
                         aux_keys=predict.EMBEDDINGS if FLAGS.embeddings else ())
  total_s = 0.0
  show_bar = not FLAGS.quiet and sys.stderr.isatty()
  if show_bar:  # seconds of audio, from the headers (an unreadable one counts 0)
    for f in files:
      try:
        total_s += audio.duration(f)
      except audio.AudioError:
        pass
  bar = tqdm.tqdm(total=round(total_s, 1), unit="s", desc="audio", disable=not show_bar,
                  file=sys.stderr, dynamic_ncols=True, bar_format="{l_bar}{bar}| {n:.0f}/"
                  "{total:.0f} s of audio [{elapsed}<{remaining}]")

  def write(text: str) -> None:
    with bar.external_write_mode(file=sys.stdout):
      sys.stdout.write(text)
      sys.stdout.flush()

  head = {"workdir": FLAGS.workdir, "step": predictor.step, "classes": list(predictor.classes),
          "norm": norm, "pooling": opts.pooling}
  writer = _Writer(fmt, head, list(predictor.classes), write)
  failed, embeddings = [], []
  for u in predict.file_outputs(predictor, files, opts, FLAGS.stream_above_s,
                                progress=lambda s: bar.update(round(s, 1))):
    r = predict.prediction(u, predictor.classes, opts, predictor.config)
    if u.error is not None:
      failed.append(u.name)
      with bar.external_write_mode(file=sys.stderr):
        print(f"error: {_cli.one_line(u.error)}", file=sys.stderr, flush=True)
    elif FLAGS.embeddings:
      embeddings.append(predict.embedding(u, predictor.config))
    writer.result(r)
  bar.close()
  writer.close(len(failed))
  if FLAGS.embeddings:
    _write_embeddings(FLAGS.embeddings, embeddings, failed)
  if not FLAGS.quiet:
    print(f"{len(files) - len(failed)} file(s) predicted, {len(failed)} failed"
          + (f"; embeddings of {len(embeddings)} in {FLAGS.embeddings}" if FLAGS.embeddings
             else ""), file=sys.stderr)
  return 1 if failed else 0


if __name__ == "__main__":
  _cli.run(main)
