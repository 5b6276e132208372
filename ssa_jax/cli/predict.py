"""Predicts the emotion of audio files with a trained fold (best checkpoint).

  python -m bin.predict --workdir runs/quickstart/fold3 speech.wav more_audio/ [--json]
      [--norm self|train] [--pooling max|mean]

Folders are searched recursively for audio files. Any sample rate, mono or multi-channel, at least
0.1 s. For each file: the predicted class, the class probabilities (the utterance decision pools
the segment posteriors as in training, `config.train.pooling` unless --pooling) and the
per-segment predictions. A file that cannot be used is reported on its own line (stderr) and the
others are still predicted; the exit code is then 1. A path that does not exist stops the command
before anything is loaded.

--norm self (default, a new speaker): normalise each file with its own statistics;
--norm train: with the global statistics of the training speakers.

A bad or missing flag, no file given, or a --workdir that is not a trained fold is one line on
stderr and exit code 1 (`bin/_cli.py`).
"""

from __future__ import annotations

import json
import os
import sys

from absl import flags

from ssa_jax.cli import _cli

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Trained fold directory: <run workdir>/fold<K>.")
flags.DEFINE_bool("json", False, "Print one JSON document instead of text.")
flags.DEFINE_enum("norm", None, ["self", "train"],
                  "Speaker normalisation: the file's own statistics or the training global ones "
                  "(default: the run's features.norm_fallback, 'self' unless changed).")
flags.DEFINE_enum("pooling", None, ["max", "mean"],
                  "Segment posteriors -> utterance (default: the run's train.pooling).")
flags.mark_flag_as_required("workdir")


def main(argv: list[str]) -> int:
  paths = argv[1:]
  if not paths:
    raise _cli.Error("give at least one audio file or folder after the flags")
  missing = [p for p in paths if not os.path.exists(p)]
  if missing:  # before the model is loaded: a typo is reported at once
    raise _cli.Error(f"no such file or folder: {', '.join(missing)}")
  from ssa_jax import rundir  # pylint: disable=g-import-not-at-top  (keeps --help fast)
  config = rundir.FoldDir(FLAGS.workdir).config()  # ValueError (one line): an untrained fold
  _cli.setup_jax(config.data.cache_dir)  # as bin.train: the same compilation cache
  from ssa_jax import predict  # pylint: disable=g-import-not-at-top  (after the JAX setup)
  predictor = predict.load_predictor(FLAGS.workdir)
  norm = FLAGS.norm
  if norm is None:
    norm = "train" if predictor.config.features.get("norm_fallback") == "global" else "self"
  files = predict.find_audio_files(paths)
  if not files:
    raise _cli.Error(f"no audio file found in {', '.join(paths)}")
  results = predict.predict_files(predictor, files, norm=norm, pooling=FLAGS.pooling)
  failed = [r for r in results if "error" in r]
  for r in failed:
    print(f"error: {_cli.one_line(r['error'])}", file=sys.stderr)
  if FLAGS.json:
    doc = {"workdir": FLAGS.workdir, "step": predictor.step, "classes": list(predictor.classes),
           "norm": norm, "pooling": FLAGS.pooling or str(predictor.config.train.pooling),
           "files": results, "failed": len(failed)}
    print(json.dumps(doc, indent=2))
  else:
    for r in results:
      if "error" not in r:
        print(predict.format_result(r))
    print(f"{len(results) - len(failed)} file(s) predicted, {len(failed)} failed", file=sys.stderr)
  return 1 if failed else 0


def command() -> None:
  """`ssa-predict` (installed by `pip install .`) and `python -m bin.predict`."""
  _cli.run(main)


if __name__ == "__main__":
  command()
