"""`python -m bin.speaker_eer` from the checkout; the command is ssa_jax/cli/speaker_eer.py
(`ssa-speaker-eer` once installed with `pip install .`)."""

from ssa_jax.cli.speaker_eer import command

if __name__ == "__main__":
  command()
