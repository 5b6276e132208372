"""`python -m bin.export_onnx` from the checkout; the command is ssa_jax/cli/export_onnx.py
(`ssa-export-onnx` once installed with `pip install .`)."""

from ssa_jax.cli.export_onnx import command

if __name__ == "__main__":
  command()
