"""Exports a trained fold (best checkpoint) as one file for the light runtime `ssa_jax.serving`.

  python -m bin.export --workdir runs/quickstart_ssa_crnn_r/fold3 --out model.npz   # or ssa-export
  python -m ssa_jax.serving model.npz speech.wav        # predicts with jax, numpy, soundfile, soxr

The file (ssa_jax/export.py, format in ssa_jax/serving.py) holds the model in evaluation mode as a
`jax.export` function of the normalised segments with a symbolic batch size, plus the classes, the
feature settings, the training normalisation statistics, the pooling and the versions. A --workdir
that is not a trained fold, or a model that cannot be exported, is one line on stderr and exit 1.
"""

from __future__ import annotations

import os

from absl import flags

from ssa_jax.cli import _cli

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Trained fold directory: <run workdir>/fold<K>.")
flags.DEFINE_string("out", None, "The file to write (a .npz).")
flags.mark_flags_as_required(["workdir", "out"])


def main(argv: list[str]) -> int:
  _cli.no_arguments(argv)
  if not os.path.isdir(FLAGS.workdir):  # before anything heavy is imported
    raise _cli.Error(f"{FLAGS.workdir}: no such run folder")
  from ssa_jax import rundir  # pylint: disable=g-import-not-at-top  (keeps --help fast)
  config = rundir.FoldDir(FLAGS.workdir).config()  # ValueError (one line): an untrained fold
  _cli.setup_jax(config.data.cache_dir)
  from ssa_jax import export  # pylint: disable=g-import-not-at-top  (after the JAX setup)
  meta = export.export_fold(FLAGS.workdir, FLAGS.out)
  print(f"wrote {FLAGS.out} ({meta['model']['name']}, step {meta['step']}, "
        f"{os.path.getsize(FLAGS.out) / 2**20:.2f} MiB; classes {', '.join(meta['classes'])}; "
        f"outputs {', '.join(meta['outputs'])}; platforms {', '.join(meta['platforms'])})")
  return 0


def command() -> None:
  """`ssa-export` (installed by `pip install .`) and `python -m bin.export`."""
  _cli.run(main)


if __name__ == "__main__":
  command()
