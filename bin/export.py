"""`python -m bin.export` from the checkout; the command is ssa_jax/cli/export.py
(`ssa-export` once installed with `pip install .`)."""

from ssa_jax.cli.export import command

if __name__ == "__main__":
  command()
