"""`python -m bin.probe` from the checkout; the command is ssa_jax/cli/probe.py
(`ssa-probe` once installed with `pip install .`)."""

from ssa_jax.cli.probe import command

if __name__ == "__main__":
  command()
