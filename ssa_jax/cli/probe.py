"""Linear probe: how far speaker identity can be decoded from a trained fold's embedding.

  python -m bin.probe --workdir runs/RUN/fold3 [--embedding z_em|z_sp]
      [--utterances valid|train|all] [--test_fraction 0.5] [--seed 0] [--json]

Loads the fold's best checkpoint, embeds each utterance of the chosen part of the fold (the mean
of its segments' embeddings; default the validation utterances), splits each speaker's
utterances (seeded) into a training and a test part, fits a standardised logistic regression
(scikit-learn) and prints its test accuracy against chance (`ssa_jax.speaker_eval.linear_probe`).
Default embedding: z_em, the emotion embedding (train.adversarial_weight pushes its speaker
identity out). The training utterances (--utterances train) ask whether z_em still encodes the
speakers it was trained on; the validation ones of a heldout split, whether it encodes new ones.

With enrollment (model.enroll_k > 0) the model reads each utterance with its fold's enrollment
and the validation utterances are the ones result.json scored (the report says so).

A bad flag, a folder that is not a trained fold or a part with fewer than 2 speakers is one line
on stderr and exit code 1 (`ssa_jax/cli/_cli.py`).
"""

from __future__ import annotations

import json

from absl import flags

from ssa_jax.cli import _cli

_WORKDIR = flags.DEFINE_string("workdir", None, "Trained fold directory: <run workdir>/fold<K>.")
_UTTERANCES = flags.DEFINE_enum("utterances", "valid", ["valid", "train", "all"],
                                "Which utterances of the fold to embed.")
_EMBEDDING = flags.DEFINE_enum("embedding", "z_em", ["z_em", "z_sp"], "Which embedding to probe.")
_TEST = flags.DEFINE_float("test_fraction", 0.5, "Share of each speaker's utterances tested.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the train/test split.")
_JSON = flags.DEFINE_bool("json", False, "Print one JSON document instead of text.")
flags.mark_flag_as_required("workdir")


def main(argv: list[str]) -> int:
  _cli.no_arguments(argv)
  from ssa_jax import speaker_eval  # pylint: disable=g-import-not-at-top (fast --help)
  report = _cli.fold_embedding_report(
      _WORKDIR.value, _UTTERANCES.value, _EMBEDDING.value,
      lambda embeddings, speakers: speaker_eval.linear_probe(embeddings, speakers,
                                                        _TEST.value, _SEED.value))
  if _JSON.value:
    print(json.dumps(report, indent=2))
  else:
    print(f"fold {report['fold']} (checkpoint step {report['step']}), "
          f"{report['utterances_used']} utterances, "
          f"{_EMBEDDING.value}: speaker probe accuracy {100 * report['accuracy']:.2f} % "
          f"(balanced {100 * report['balanced_accuracy']:.2f} %, chance "
          f"{100 * report['chance']:.2f} %; {report['speakers']} speakers, "
          f"{report['train_utterances']} / {report['test_utterances']} utterances to fit / test)"
          + _cli.scored_note(report))
  return 0


def command() -> None:
  """`ssa-probe` (installed by `pip install .`) and `python -m bin.probe`."""
  _cli.run(main)


if __name__ == "__main__":
  command()
