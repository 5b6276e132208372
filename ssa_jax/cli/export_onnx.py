"""Exports a trained fold (best checkpoint) as an ONNX model run by onnxruntime.

  python -m bin.export_onnx --workdir runs/quickstart_ssa_crnn_r/fold3 --out model.onnx

The graph (ssa_jax/onnx_export.py) takes x float32 (batch, frames, mels, channels) and mask bool
(batch, frames), the normalised segments of the training front end, and returns probabilities,
emotion_logits and z_em (SSA-CRNN also speaker_logits and z_sp). The file's metadata_props hold
the class names, the feature settings, the segment pooling and normalisation, the model config and
the checkpoint step. A --workdir that is not a trained fold is one line on stderr and exit code 1.
Needs the `onnx` extra: pip install -e ".[onnx]".
"""

from __future__ import annotations

import os

from absl import flags

from ssa_jax.cli import _cli

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Trained fold directory: <run workdir>/fold<K>.")
flags.DEFINE_string("out", None, "The ONNX file to write.")
flags.mark_flags_as_required(["workdir", "out"])


def main(argv: list[str]) -> int:
  _cli.no_arguments(argv)
  if not os.path.isdir(FLAGS.workdir):  # before anything heavy is imported
    raise _cli.Error(f"{FLAGS.workdir}: no such run folder")
  _cli.setup_logging()
  from ssa_jax import onnx_export  # pylint: disable=g-import-not-at-top  (keeps --help fast)
  model = onnx_export.export_fold(FLAGS.workdir, FLAGS.out)
  outputs = ", ".join(o.name for o in model.graph.output)
  print(f"wrote {FLAGS.out} ({model.graph.name}, {os.path.getsize(FLAGS.out) / 2**20:.2f} MiB; "
        f"outputs {outputs})")
  return 0


def command() -> None:
  """`ssa-export-onnx` (installed by `pip install .`) and `python -m bin.export_onnx`."""
  _cli.run(main, user_errors=(ValueError, OSError, ImportError))


if __name__ == "__main__":
  command()
