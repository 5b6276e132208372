"""Predicts the emotion of audio files with a trained fold (best checkpoint).

  python -m bin.predict --workdir runs/quickstart/fold3 speech.wav more_audio/
      [--format table|json|jsonl|csv] [--norm self|train] [--pooling max|mean]
      [--embeddings OUT.npz] [--quiet] [--enroll FILE_OR_FOLDER ...]

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

--enroll FILE_OR_FOLDER (repeatable; folders searched as above): unlabelled speech of the same
person as the predicted files, for a model trained with enrollment (model.enroll_k > 0): each
file's pooled speaker-branch state joins the speaker half of the SSA of every predicted segment
(docs/DESIGN.md "Beyond the paper"). An enrollment file that cannot be used, or --enroll with a
model trained without enrollment, is one line on stderr and exit code 1 (nothing is predicted).
A model trained with enrollment and no --enroll predicts without it (a warning on stderr).

A bad or missing flag, no file given, or a --workdir that is not a trained fold is one line on
stderr and exit code 1 (`ssa_jax/cli/_cli.py`).
"""

from __future__ import annotations

import os
import sys

from absl import flags

from ssa_jax.cli import _cli

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Trained fold directory: <run workdir>/fold<K>.")
flags.DEFINE_enum("format", "table", ["table", "json", "jsonl", "csv"], "Output: text table, one JSON document, JSON "
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
flags.DEFINE_multi_string("enroll", None,
                          "Enrollment audio (a file or folder; repeat the flag for more) of the "
                          "same speaker, for a model trained with model.enroll_k > 0.")
flags.mark_flag_as_required("workdir")


def main(argv: list[str]) -> int:
  paths = argv[1:]
  if not paths:
    raise _cli.Error("give at least one audio file or folder after the flags")
  if FLAGS.embeddings is not None and not FLAGS.embeddings.endswith(".npz"):
    raise _cli.Error(f"--embeddings {FLAGS.embeddings}: the file name must end in .npz")
  fmt = "json" if FLAGS.json else FLAGS.format
  missing = [p for p in paths + (FLAGS.enroll or []) if not os.path.exists(p)]
  if missing:  # before the model is loaded: a typo is reported at once
    raise _cli.Error(f"no such file or folder: {', '.join(missing)}")
  from ssa_jax import rundir  # pylint: disable=g-import-not-at-top  (keeps --help fast)
  config = rundir.FoldDir(FLAGS.workdir).config()  # ValueError (one line): an untrained fold
  _cli.setup_jax(config.data.cache_dir)  # as bin.train: the same compilation cache
  # pylint: disable=g-import-not-at-top  (after the JAX setup)
  import numpy as np
  import tqdm
  from ssa_jax import audio, io, predict
  predictor = predict.load_predictor(FLAGS.workdir)
  norm = FLAGS.norm
  if norm is None:
    norm = predict.default_norm(predictor.config)
  files = predict.find_audio_files(paths)
  if not files:
    raise _cli.Error(f"no audio file found in {', '.join(paths)}")
  enroll_context, enroll_files = _enrollment(predictor, norm)
  opts = predict.options(predictor, norm, FLAGS.pooling,
                         aux_keys=predict.EMBEDDINGS if FLAGS.embeddings else (),
                         enroll_context=enroll_context)
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

  info = {"workdir": FLAGS.workdir, "step": predictor.step, "classes": list(predictor.classes),
          "norm": norm, "pooling": opts.pooling,
          **({"enroll": enroll_files} if enroll_files else {})}
  formatter = predict.Formatter(fmt, predictor.classes, info)
  write(formatter.head())
  failed, embeddings = [], []
  for u in predict.file_outputs(predictor, files, opts, FLAGS.stream_above_s,
                                progress=lambda s: bar.update(round(s, 1))):
    r = predict.prediction(u, predictor.classes, opts, predictor.config)
    if u.error is not None:
      failed.append(u.name)
      with bar.external_write_mode(file=sys.stderr):
        print(f"error: {_cli.one_line(u.error)}", file=sys.stderr, flush=True)
    if FLAGS.embeddings:
      embeddings.append(predict.embedding(u, predictor.config))
    write(formatter.result(r))
  bar.close()
  write(formatter.tail(len(failed)))
  if FLAGS.embeddings:
    arrays = predict.stack_embeddings(embeddings)
    io.write_with(FLAGS.embeddings, lambda f: np.savez(f, **arrays))
  if not FLAGS.quiet:
    print(f"{len(files) - len(failed)} file(s) predicted, {len(failed)} failed"
          + (f"; embeddings of {len(files) - len(failed)} in {FLAGS.embeddings}"
             if FLAGS.embeddings else ""), file=sys.stderr)
  return 1 if failed else 0


def _enrollment(predictor, norm: str):
  """(--enroll's (J, d) context (`predict.enrollment_context`), its files), or (None, []) (a
  warning on stderr when the model was trained with enrollment)."""
  from ssa_jax import enroll, predict  # pylint: disable=g-import-not-at-top  (after the JAX setup)
  if not FLAGS.enroll:
    if enroll.enroll_k(predictor.config.model) > 0:
      print(enroll.missing_warning(predictor.config.model), file=sys.stderr)
    return None, []
  files = predict.find_audio_files(FLAGS.enroll)
  if not files:
    raise _cli.Error(f"no audio file found in --enroll {', '.join(FLAGS.enroll)}")
  return predict.enrollment_context(predictor, files, norm), files


def command() -> None:
  """`ssa-predict` (installed by `pip install .`) and `python -m bin.predict`."""
  _cli.run(main)


if __name__ == "__main__":
  command()
