"""`python -m bin.crossval` from the checkout; the command is ssa_jax/cli/crossval.py
(`ssa-crossval` once installed with `pip install .`)."""

from ssa_jax.cli.crossval import command

if __name__ == "__main__":
  command()
