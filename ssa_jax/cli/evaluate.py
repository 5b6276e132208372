"""Evaluates a trained fold and draws the paper's figures as PNG files.

  python -m bin.evaluate --workdir runs/quickstart_ssa_crnn_r --fold 3 [--utterance ID] [--out DIR]

Loads the fold's best checkpoint (validation UAR), rebuilds its validation set and evaluates it
with training's own code (`ssa_jax.evaluate.evaluate_fold`: `fold.prepare_fold` /
`inference.evaluate`: data cache, split, training speaker statistics, eval step, pooling; the
numbers are result.json's) and writes into
`<workdir>/fold<K>/figures/` (or --out):
  confusion.png       row-normalised confusion matrix with class names and percentages (Figure 4)
  attention_<ID>.png  attention scores over time, α_em and α_sp for SSA-CRNN, α for ACRNN, with the
                      log-Mel static channel above (Figure 3); --utterance, else the first
                      validation utterance
  tsne.png            t-SNE of the validation emotion embeddings z_em by class (Figure 5)
  evaluation.json     UAR, WA, segment UAR, confusion matrix, recalls, worst-class recall,
                      largest predicted-class share, SSA speaker mass and speaker accuracy, the
                      files written

A run with enrollment (model.enroll_k > 0) is evaluated with its fold's own enrollment and scored
utterances (unseen speakers' enrollment utterances left out, as in result.json; one of them as
--utterance is refused); so is a run with train.exclude_enroll_k.

A bad or missing flag, a folder that is not a trained fold or an unknown utterance is one line on
stderr and exit code 1 (`ssa_jax/cli/_cli.py`).
"""

from __future__ import annotations

import os

from absl import flags

from ssa_jax.cli import _cli

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (holding fold<K>/).")
_FOLD = flags.DEFINE_integer("fold", None, "Fold to evaluate.")
_UTTERANCE = flags.DEFINE_string("utterance", None, "Utterance id for the attention figure "
                                 "(default: the first validation utterance).")
_OUT = flags.DEFINE_string("out", None, "Folder for the figures (default <workdir>/fold<K>/figures).")
flags.mark_flags_as_required(["workdir", "fold"])


def main(argv: list[str]) -> int:
  _cli.no_arguments(argv)
  if not os.path.isdir(_WORKDIR.value):
    raise _cli.Error(f"--workdir {_WORKDIR.value}: no such folder")
  from ssa_jax import rundir  # pylint: disable=g-import-not-at-top  (keeps --help fast)
  fold_dir = rundir.FoldDir.of(_WORKDIR.value, _FOLD.value)
  config = fold_dir.config()  # ValueError (one line) for an untrained fold
  _cli.setup_jax(config.data.cache_dir)  # as bin.train: the same compilation cache
  from ssa_jax import evaluate  # pylint: disable=g-import-not-at-top  (after the JAX setup)
  report = evaluate.evaluate_fold(fold_dir.path, _FOLD.value, _UTTERANCE.value, _OUT.value)
  print(f"{report['system']}, fold {report['fold']} (checkpoint step {report['step']}): "
        f"{report['valid_utterances']} validation utterances, UAR {100 * report['uar']:.2f} %, "
        f"WA {100 * report['wa']:.2f} %, segment UAR {100 * report['segment_uar']:.2f} %")
  if "largest_predicted_share" in report:
    print(f"worst-class recall {100 * report['worst_class_recall']:.2f} %, largest "
          f"predicted-class share {100 * report['largest_predicted_share']:.2f} % of the "
          f"validation utterances")
  excluded = (report.get("scored") or {}).get("excluded") or []
  if excluded:
    print(f"scored as result.json: without the {len(excluded)} enrollment utterance(s) of unseen "
          f"speakers (enroll k {report['scored']['enroll_k']})")
  if "speaker_mass" in report:
    print(f"SSA attention mass on the speaker half (mean over validation segments): "
          f"{report['speaker_mass']:.4f}")
  for name, path in report["figures"].items():
    print(f"wrote {name}: {path}")
  print(f"wrote {os.path.join(os.path.dirname(report['figures']['confusion']), 'evaluation.json')}")
  return 0


def command() -> None:
  """`ssa-evaluate` (installed by `pip install .`) and `python -m bin.evaluate`."""
  _cli.run(main)


if __name__ == "__main__":
  command()
