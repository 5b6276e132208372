"""`python -m bin.predict` from the checkout; the command is ssa_jax/cli/predict.py
(`ssa-predict` once installed with `pip install .`)."""

from ssa_jax.cli.predict import command

if __name__ == "__main__":
  command()
