"""`python -m bin.evaluate` from the checkout; the command is ssa_jax/cli/evaluate.py
(`ssa-evaluate` once installed with `pip install .`)."""

from ssa_jax.cli.evaluate import command

if __name__ == "__main__":
  command()
