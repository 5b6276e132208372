"""Predicts the emotion of audio files with a trained fold (best checkpoint).

  python -m bin.predict --workdir runs/quickstart/fold3 speech.wav more_audio/ [--json]
      [--norm self|train] [--pooling max|mean] [--enroll FILE_OR_FOLDER ...]

Folders are searched recursively for audio files. Any sample rate, mono or multi-channel, at least
0.1 s. For each file: the predicted class, the class probabilities (the utterance decision pools
the segment posteriors as in training, `config.train.pooling` unless --pooling) and the
per-segment predictions. A file that cannot be used is reported on its own line (stderr) and the
others are still predicted; the exit code is then 1. A path that does not exist stops the command
before anything is loaded.

--norm self (default, a new speaker): normalise each file with its own statistics;
--norm train: with the global statistics of the training speakers.

--enroll FILE_OR_FOLDER (repeatable; folders searched as above): unlabelled speech of the same
person as the predicted files, for a model trained with enrollment (model.enroll_k > 0): each
file's pooled speaker-branch state joins the speaker half of the SSA of every predicted segment
(docs/DESIGN.md "Beyond the paper"). An enrollment file that cannot be used, or --enroll with a
model trained without enrollment, is one line on stderr and exit code 1 (nothing is predicted).
A model trained with enrollment and no --enroll predicts without it (a warning on stderr).

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
flags.DEFINE_multi_string("enroll", None,
                          "Enrollment audio (a file or folder; repeat the flag for more) of the "
                          "same speaker, for a model trained with model.enroll_k > 0.")
flags.mark_flag_as_required("workdir")


def main(argv: list[str]) -> int:
  paths = argv[1:]
  if not paths:
    raise _cli.Error("give at least one audio file or folder after the flags")
  missing = [p for p in paths + (FLAGS.enroll or []) if not os.path.exists(p)]
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
  enroll, enroll_files = _enrollment(predictor, norm)
  results = predict.predict_files(predictor, files, norm=norm, pooling=FLAGS.pooling,
                                  enroll_context=enroll)
  failed = [r for r in results if "error" in r]
  for r in failed:
    print(f"error: {_cli.one_line(r['error'])}", file=sys.stderr)
  if FLAGS.json:
    doc = {"workdir": FLAGS.workdir, "step": predictor.step, "classes": list(predictor.classes),
           "norm": norm, "pooling": FLAGS.pooling or str(predictor.config.train.pooling),
           "enroll": enroll_files,
           "files": results, "failed": len(failed)}
    print(json.dumps(doc, indent=2))
  else:
    for r in results:
      if "error" not in r:
        print(predict.format_result(r))
    print(f"{len(results) - len(failed)} file(s) predicted, {len(failed)} failed", file=sys.stderr)
  return 1 if failed else 0


def _enrollment(predictor, norm: str):
  """(--enroll's (J, d) context (`predict.enrollment_context`), its files), or (None, []) (a
  warning on stderr when the model was trained with enrollment)."""
  from ssa_jax import enroll, predict  # pylint: disable=g-import-not-at-top  (after the JAX setup)
  if not FLAGS.enroll:
    if enroll.enroll_k(predictor.config.model) > 0:
      print(f"warning: this model was trained with enrollment (model.enroll_k="
            f"{predictor.config.model.enroll_k}); without --enroll the speaker half of its "
            f"attention sees only each file itself", file=sys.stderr)
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
