"""`python -m bin.train` from the checkout; the command is ssa_jax/cli/train.py
(`ssa-train` once installed with `pip install .`)."""

from ssa_jax.cli.train import command

if __name__ == "__main__":
  command()
