"""Speaker verification EER of a trained fold's embedding, on speakers the model may never have heard.

  python -m bin.speaker_eer --workdir runs/RUN/fold3 [--utterances valid|train|all]
      [--embedding z_sp|z_em] [--different_pairs 10000] [--seed 0] [--json]

Loads the fold's best checkpoint, embeds each utterance of the chosen part of the fold (the mean
of its segments' embeddings; default the validation utterances: the held-out speakers of a
heldout split with data.synthetic.test_speakers, or of a loso fold, which has only one), builds
the verification trials (every same-speaker pair, a seeded sample of different-speaker pairs)
and prints the equal error rate of their cosine scores (`ssa_jax.speaker_eval`). Default
embedding: z_sp, the speaker branch's (SSA-CRNN; model.speaker_loss="aam" trains it for this).

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
_EMBEDDING = flags.DEFINE_enum("embedding", "z_sp", ["z_sp", "z_em"], "Which embedding to score.")
_PAIRS = flags.DEFINE_integer("different_pairs", 10000, "Different-speaker trials to sample.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the different-speaker sample.")
_JSON = flags.DEFINE_bool("json", False, "Print one JSON document instead of text.")
flags.mark_flag_as_required("workdir")


def main(argv: list[str]) -> int:
  _cli.no_arguments(argv)
  from ssa_jax import speaker_eval  # pylint: disable=g-import-not-at-top (fast --help)
  report = _cli.fold_embedding_report(
      _WORKDIR.value, _UTTERANCES.value, _EMBEDDING.value,
      lambda embeddings, speakers: speaker_eval.speaker_eer(embeddings, speakers,
                                                       _PAIRS.value, _SEED.value))
  if _JSON.value:
    print(json.dumps(report, indent=2))
  else:
    print(f"fold {report['fold']} (checkpoint step {report['step']}), "
          f"{report['utterances_used']} utterances, "
          f"{_EMBEDDING.value}: EER {100 * report['eer']:.2f} % over {report['target_trials']} "
          f"same-speaker / {report['nontarget_trials']} different-speaker trials "
          f"({report['speakers']} speakers, {report['utterances']} utterances)"
          + _cli.scored_note(report))
  return 0


def command() -> None:
  """`ssa-speaker-eer` (installed by `pip install .`) and `python -m bin.speaker_eer`."""
  _cli.run(main)


if __name__ == "__main__":
  command()
