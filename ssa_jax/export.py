"""A trained fold as one file for the light runtime (`ssa_jax.serving`; project issue 22, item 1).

  meta = export_fold("runs/quickstart_ssa_crnn_r/fold3", "model.npz")   # best checkpoint
  meta = export_predictor(predict.load_predictor(fold_dir), "model.npz")
  python -m bin.export --workdir runs/quickstart_ssa_crnn_r/fold3 --out model.npz

The file (format in `ssa_jax/serving.py`'s docstring) holds the model in evaluation mode
(`inference.eval_step`, the one place a model is run) serialized with `jax.export`: inputs x
float32 (B, T, M, 3) and mask bool (B, T), the normalised segments, with a symbolic batch size B
and T = `features.segment_frames`; the trained weights and BatchNorm statistics are constants
inside it. Lowered for cpu, cuda, rocm and tpu (`PLATFORMS`), so one file runs on any of them.
Beside it: the classes, the feature settings, librosa's window and mel filterbank, the training
speakers' statistics, the pooling, the default normalisation, the step and the versions.

Why from the segments and not from the waveform: see `ssa_jax/serving.py` (segmentation and the
per-file normalisation are numpy steps between the front end and the model; the runtime runs the
training path's own JAX front end, `ssa_jax.frontend`).

Before writing, the deserialized function is run on a probe batch (uneven masks, two batch
sizes) and compared with the model: a model that `jax.export` cannot lower with a symbolic batch,
or whose export computes something else, is refused with a one-line ValueError naming the fold.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from typing import Any, Mapping

import jax
import numpy as np

import ssa_jax
from ssa_jax import features, inference, predict, serving
from ssa_jax import io as io_lib

logger = logging.getLogger(__name__)

PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
AUX_OUTPUTS = ("z_em", "z_sp")  # embeddings exported beside `inference.eval_outputs`' own
CHECK_TOLERANCE = 1e-5  # the export's own check: max abs difference of any output


def _inputs(batch: Any, frames: int, mels: int) -> tuple[jax.ShapeDtypeStruct, ...]:
  return (jax.ShapeDtypeStruct((batch, frames, mels, 3), np.float32),
          jax.ShapeDtypeStruct((batch, frames), np.bool_))


def _probe(frames: int, mels: int, rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """A batch of `rows` random segments with masks from full down to 1 real frame."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(rows, frames, mels, 3)).astype(np.float32)
  real = np.maximum(1, frames - np.arange(rows) * max(1, frames // max(rows, 1)))
  mask = np.arange(frames)[None, :] < real[:, None]
  x[~mask] = 0.0
  return x, mask


def export_function(model: Any, variables: Mapping[str, Any], frames: int, mels: int
                    ) -> jax.export.Exported:
  """`inference.eval_step` of (model, variables) with `AUX_OUTPUTS`, exported for
  x (B, frames, mels, 3), mask (B, frames) with a symbolic B, checked against the model.

  Raises:
    ValueError: jax.export cannot lower it, or its outputs differ from the model's by more than
      `CHECK_TOLERANCE` (one line).
  """
  step = functools.partial(inference.eval_step, model=model, aux_keys=AUX_OUTPUTS)
  fn = jax.jit(lambda x, mask: step(variables, {"x": x, "mask": mask}))
  batch, = jax.export.symbolic_shape("batch")
  try:
    exported = jax.export.export(fn, platforms=PLATFORMS)(*_inputs(batch, frames, mels))
  except (TypeError, ValueError, NotImplementedError, jax.errors.InconclusiveDimensionOperation
          ) as e:
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    raise ValueError(f"jax.export cannot export this model with a symbolic batch size "
                     f"({type(e).__name__}: {first})") from e
  back = jax.export.deserialize(exported.serialize())
  for rows, seed in ((3, 0), (1, 1)):
    x, mask = _probe(frames, mels, rows, seed)
    want, got = fn(x, mask), back.call(x, mask)
    if set(want) != set(got):
      raise ValueError(f"the exported function returns {sorted(got)}, the model {sorted(want)}")
    diff = max(float(np.max(np.abs(np.asarray(got[k], np.float64) - np.asarray(want[k]))))
               for k in want)
    if not diff <= CHECK_TOLERANCE:
      raise ValueError(f"the exported function differs from the model by {diff:.3g} on a probe "
                       f"batch of {rows} (tolerance {CHECK_TOLERANCE})")
  return exported


def metadata(predictor: predict.Predictor, exported: jax.export.Exported) -> dict[str, Any]:
  """The JSON metadata of the file (`ssa_jax/serving.py`)."""
  cfg = predictor.config
  return {"format": serving.FORMAT, "format_version": serving.FORMAT_VERSION,
          "ssa_jax_version": ssa_jax.__version__, "jax_version": jax.__version__,
          "classes": list(predictor.classes), "features": cfg.features.to_dict(),
          "pooling": str(cfg.train.pooling), "norm": predict.default_norm(cfg),
          "eval_batch_size": int(cfg.train.eval_batch_size), "model": cfg.model.to_dict(),
          "config_name": str(cfg.get("name", "")), "step": predictor.step,
          "platforms": list(exported.platforms),
          "outputs": sorted(jax.tree_util.tree_unflatten(exported.out_tree,
                                                         [None] * exported.out_tree.num_leaves))}


def export_predictor(predictor: predict.Predictor, out: str | os.PathLike) -> dict[str, Any]:
  """Writes `out` (atomically) for a restored model; returns its metadata.

  The runtime always computes the features with the JAX front end; a run trained with
  `features.backend="librosa"` is exported too (the two agree to 2e-6 of each channel's largest
  value, `tests/test_features.py`), but its predictions then match `bin.predict`'s less tightly.

  Raises:
    ValueError: a model that cannot be exported (`export_function`).
  """
  cfg = predictor.config
  fcfg = cfg.features
  frames, mels = int(fcfg.segment_frames), int(fcfg.n_mels)
  exported = export_function(predictor.model, predictor.variables, frames, mels)
  meta = metadata(predictor, exported)
  window, mel_fb = features.constants(fcfg)
  arrays = {"function": np.frombuffer(bytes(exported.serialize()), np.uint8),
            "window": window, "mel_filterbank": mel_fb}
  if predictor.stats is not None:
    arrays.update({serving.STATS_PREFIX + k: v for k, v in predictor.stats.to_arrays().items()})
  out = io_lib.write_with(out, lambda f: np.savez(
      f, metadata=np.frombuffer(json.dumps(meta).encode("utf-8"), np.uint8), **arrays))
  logger.info("exported %s (step %s) to %s: %.2f MiB", meta["config_name"], meta["step"], out,
              os.path.getsize(out) / 2**20)
  return meta


def export_fold(fold_dir: str | os.PathLike, out: str | os.PathLike) -> dict[str, Any]:
  """The best checkpoint of `<workdir>/fold<K>` (`predict.load_predictor`) as `out`; returns its
  metadata.

  Raises:
    ValueError: not a trained fold, or a model that cannot be exported (one line naming the fold).
  """
  fold_dir = os.fspath(fold_dir)
  if not os.path.isdir(fold_dir):
    raise ValueError(f"{fold_dir}: no such run folder")
  predictor = predict.load_predictor(fold_dir)
  try:
    return export_predictor(predictor, out)
  except ValueError as e:
    raise ValueError(f"{fold_dir}: {e}") from e
