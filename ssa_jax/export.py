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

A model trained with enrollment (`model.enroll_k` > 0, `ssa_jax/enroll.py`) is exported with
two more inputs, context float32 (J, d) and valid bool (J,) with a symbolic J, and one more
output, speaker_state (B, d) (`exported_step`): the runtime runs enrollment files through the same
function (all-invalid context) for their pooled speaker states, then the files to predict with
those states, as `bin.predict --enroll` does. One function, so the weights are in the file once
(a second, speaker-branch-only function would add half the model's size again); enrollment files
then also run the emotion branch, which a one-off enrollment can afford.

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
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import ssa_jax
from ssa_jax import enroll as enroll_lib
from ssa_jax import features, inference, predict, serving
from ssa_jax import io as io_lib

logger = logging.getLogger(__name__)

PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
AUX_OUTPUTS = ("z_em", "z_sp")  # embeddings exported beside `inference.eval_outputs`' own
CHECK_TOLERANCE = 1e-5  # the export's own check: max abs difference of any output
ENROLL_OUTPUT = serving.ENROLL_OUTPUT  # "speaker_state": enrollment models' extra output


def _inputs(batch: Any, frames: int, mels: int, enroll: Any = None, enroll_dim: int = 0
            ) -> tuple[jax.ShapeDtypeStruct, ...]:
  plain = (jax.ShapeDtypeStruct((batch, frames, mels, 3), np.float32),
           jax.ShapeDtypeStruct((batch, frames), np.bool_))
  if not enroll_dim:
    return plain
  return plain + (jax.ShapeDtypeStruct((enroll, enroll_dim), np.float32),
                  jax.ShapeDtypeStruct((enroll,), np.bool_))


def _probe(frames: int, mels: int, rows: int, seed: int, enroll_dim: int = 0
           ) -> tuple[np.ndarray, ...]:
  """A batch of `rows` random segments with masks from full down to 1 real frame; with
  `enroll_dim`, also rows + 1 random enrollment states (the last one invalid)."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(rows, frames, mels, 3)).astype(np.float32)
  real = np.maximum(1, frames - np.arange(rows) * max(1, frames // max(rows, 1)))
  mask = np.arange(frames)[None, :] < real[:, None]
  x[~mask] = 0.0
  if not enroll_dim:
    return x, mask
  context = rng.normal(size=(rows + 1, enroll_dim)).astype(np.float32)
  return x, mask, context, np.arange(rows + 1) < rows


def _speaker_state_of(step: Callable[[], dict[str, jax.Array]]) -> dict[str, jax.Array]:
  """`step()`'s outputs plus ENROLL_OUTPUT, the pooled speaker-branch state c_sp (B, d) that the
  model's speaker self attention ("attention_sp", Eq. 1-2) returns on the way (read with
  `flax.linen.intercept_methods`: the model and `inference.eval_step` stay as they are)."""
  seen = []

  def grab(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.module.name == "attention_sp" and context.method_name == "__call__":
      seen.append(out[0])
    return out

  with nn.intercept_methods(grab):
    out = step()
  if len(seen) != 1:
    raise ValueError(f"the model's speaker self attention ran {len(seen)} times (expected once)")
  return {**out, ENROLL_OUTPUT: seen[0]}


def exported_step(model: Any, variables: Mapping[str, Any], enroll_dim: int = 0) -> Callable:
  """The jitted function that is exported: `inference.eval_step` with `AUX_OUTPUTS`, of
  (x (B, T, M, 3), mask (B, T)); with `enroll_dim` = d > 0 (a model trained with enrollment) of
  (x, mask, context (J, d), valid (J,)) -> also ENROLL_OUTPUT (B, d): every segment's SSA attends
  to the J states marked valid (`inference.segment_outputs`' enrollment, J >= 1; all invalid:
  the model without enrollment)."""
  step = functools.partial(inference.eval_step, model=model, aux_keys=AUX_OUTPUTS)
  if not enroll_dim:
    return jax.jit(lambda x, mask: step(variables, {"x": x, "mask": mask}))

  def with_enrollment(x, mask, context, valid):
    b, j = x.shape[0], context.shape[0]
    batch = {"x": x, "mask": mask,
             "enroll_context": jnp.broadcast_to(context, (b, j, enroll_dim)),
             "enroll_valid": jnp.broadcast_to(valid, (b, j))}
    return _speaker_state_of(lambda: step(variables, batch))
  return jax.jit(with_enrollment)


def export_function(model: Any, variables: Mapping[str, Any], frames: int, mels: int,
                    enroll_dim: int = 0) -> jax.export.Exported:
  """`exported_step(model, variables, enroll_dim)` exported for x (B, frames, mels, 3), mask
  (B, frames) (and context (J, enroll_dim), valid (J,)) with a symbolic B (and J), checked
  against the model.

  Raises:
    ValueError: jax.export cannot lower it, or its outputs differ from the model's by more than
      `CHECK_TOLERANCE` (one line).
  """
  fn = exported_step(model, variables, enroll_dim)
  if enroll_dim:  # two dimension variables in one scope
    batch, enroll = jax.export.symbolic_shape("batch, enroll")
  else:
    (batch,), enroll = jax.export.symbolic_shape("batch"), None
  try:
    exported = jax.export.export(fn, platforms=PLATFORMS)(
        *_inputs(batch, frames, mels, enroll, enroll_dim))
  except (TypeError, ValueError, NotImplementedError, jax.errors.InconclusiveDimensionOperation
          ) as e:
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    raise ValueError(f"jax.export cannot export this model with a symbolic batch size "
                     f"({type(e).__name__}: {first})") from e
  back = jax.export.deserialize(exported.serialize())
  for rows, seed in ((3, 0), (1, 1)):
    args = _probe(frames, mels, rows, seed, enroll_dim)
    want, got = fn(*args), back.call(*args)
    if set(want) != set(got):
      raise ValueError(f"the exported function returns {sorted(got)}, the model {sorted(want)}")
    diff = max(float(np.max(np.abs(np.asarray(got[k], np.float64) - np.asarray(want[k]))))
               for k in want)
    if not diff <= CHECK_TOLERANCE:
      raise ValueError(f"the exported function differs from the model by {diff:.3g} on a probe "
                       f"batch of {rows} (tolerance {CHECK_TOLERANCE})")
  return exported


def metadata(predictor: predict.Predictor, exported: jax.export.Exported,
             enroll_dim: int = 0) -> dict[str, Any]:
  """The JSON metadata of the file (`ssa_jax/serving.py`): a model trained with enrollment
  (`enroll_dim` > 0) is format version 2 with "enroll_dim", any other version 1, as before."""
  cfg = predictor.config
  extra = {"enroll_dim": int(enroll_dim)} if enroll_dim else {}
  return {"format": serving.FORMAT,
          "format_version": serving.FORMAT_VERSION if enroll_dim else serving.PLAIN_FORMAT_VERSION,
          "ssa_jax_version": ssa_jax.__version__, "jax_version": jax.__version__,
          "classes": list(predictor.classes), "features": cfg.features.to_dict(),
          "pooling": str(cfg.train.pooling), "norm": predict.default_norm(cfg),
          "eval_batch_size": int(cfg.train.eval_batch_size), "model": cfg.model.to_dict(),
          "config_name": str(cfg.get("name", "")), "step": predictor.step,
          "platforms": list(exported.platforms),
          "outputs": sorted(jax.tree_util.tree_unflatten(exported.out_tree,
                                                         [None] * exported.out_tree.num_leaves)),
          **extra}


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
  enroll_dim = 0
  if enroll_lib.enroll_k(cfg.model) > 0:  # d of the pooled speaker states (attention_sp's input)
    enroll_dim = int(np.shape(predictor.variables["params"]["attention_sp"]["w_att"])[0])
  exported = export_function(predictor.model, predictor.variables, frames, mels, enroll_dim)
  meta = metadata(predictor, exported, enroll_dim)
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
