"""`python -m bin.replicates` from the checkout; the command is ssa_jax/cli/replicates.py
(`ssa-replicates` once installed with `pip install .`)."""

from ssa_jax.cli.replicates import command

if __name__ == "__main__":
  command()
