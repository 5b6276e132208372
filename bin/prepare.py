"""`python -m bin.prepare` from the checkout; the command is ssa_jax/cli/prepare.py
(`ssa-prepare` once installed with `pip install .`)."""

from ssa_jax.cli.prepare import command

if __name__ == "__main__":
  command()
