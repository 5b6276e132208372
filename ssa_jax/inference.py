"""The model in evaluation mode: the one place training, `bin.evaluate`, `bin.predict` (and an
export) run it.

  eval_fn = make_eval_step(model, mesh, aux_keys=())      # jitted once per batch shape
  outputs = eval_fn(variables, batch)                     # {probs (B, K), ...}, eval_outputs
  outputs = model_outputs(eval_fn, variables, arrays, batch_size, mesh)   # {key: (N, ...)} numpy
  metrics = validation_metrics(outputs, fd, pooling)      # UAR, WA, confusion, recalls, ...
  metrics, outputs = evaluate(eval_fn, variables, fd, pooling, batch_size, mesh)   # both
  outputs = segment_outputs(eval_fn, variables, segments, mask, batch_size, mesh)   # bin.predict
  probs = segment_posteriors(model, variables, segments, mask, batch_size)          # the same, once
  states_fn = make_states_step(model, mesh)                # enrollment: pooled speaker states
  arrays = enrollment_arrays(states_fn, variables, fd.valid_enroll, batch_size, mesh)
  arrays = with_enrollment(arrays, plan_or_None, states_fn, variables, batch_size, mesh)  # both

`variables` are the model variables {"params", "batch_stats"} (`variables_of(train_state)`, or a
checkpoint's). Evaluation mode: BatchNorm uses its running statistics, so every row of a batch
is computed independently of the others.

Batching (one rule for every caller): the segments are taken in order in batches of a fixed
number of rows (`input_pipeline.eval_batches`); the last batch is filled by repeating the first
segment (real data: no all-masked input reaches the model) and the outputs past the real rows are
dropped. `segment_outputs` picks that number of rows with `batch_rows`: the next power of two
at least the number of segments (a multiple of the device count), at most the batch size, so a
short file does not run a whole evaluation batch and few shapes are compiled.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ssa_jax import enroll as enroll_lib
from ssa_jax import input_pipeline, metrics, models, parallel, xla_options
from ssa_jax.input_pipeline import batch_rows  # noqa: F401  (re-exported; the light runtime's too)


def eval_outputs(logits: jax.Array, aux: Mapping[str, jax.Array],
                 aux_keys: Sequence[str] = ()) -> dict[str, jax.Array]:
  """Evaluation outputs of a batch from the model's (logits (B, K), aux):

    probs          (B, K) softmax emotion posteriors (float32)
    speaker_mass   (B,)   SSA models only: the SSA's attention mass on the speaker half,
                          sum_t alpha_sp,t over real frames (0: the speaker branch is unused),
                          plus the enrollment entries' mass (`aux["alpha_enroll"]`) if any
    speaker_pred   (B,)   SSA models only: the speaker branch's predicted speaker
    <key>                 aux[key] for each of `aux_keys` the model returns (figures: z_em, alpha*)
  """
  out = {"probs": jax.nn.softmax(logits.astype(jnp.float32), axis=-1)}
  if "alpha_sp" in aux:
    out["speaker_mass"] = aux["alpha_sp"].sum(axis=-1)
    if "alpha_enroll" in aux:  # enrollment entries belong to the speaker half
      out["speaker_mass"] = out["speaker_mass"] + aux["alpha_enroll"].sum(axis=-1)
    out["speaker_pred"] = jnp.argmax(aux["speaker_logits"], axis=-1).astype(jnp.int32)
  out.update({k: aux[k] for k in aux_keys if k in aux})
  return out


def eval_step(variables: Mapping[str, Any], batch: Mapping[str, jax.Array], *, model: nn.Module,
              aux_keys: Sequence[str] = ()) -> dict[str, jax.Array]:
  """`eval_outputs` of a batch {x (B,T,M,C), mask (B,T)} in evaluation mode (running BN
  statistics); variables = {"params", "batch_stats"}. A batch with enroll_context (B, J, d) /
  enroll_valid (B, J) passes them to the model (enrollment, `enroll.from_batch`)."""
  enroll = enroll_lib.from_batch(batch)
  logits, aux = model.apply(variables, batch["x"], batch["mask"], train=False,
                            **({"enroll": enroll} if enroll is not None else {}))
  return eval_outputs(logits, aux, aux_keys)


def make_states_step(model: nn.Module, mesh: jax.sharding.Mesh) -> Callable:
  """Enrollment: the jitted (variables P(), batch {x, mask} P("data")) -> {"speaker_state":
  (B, d)} P("data"), `models.speaker_states` (the speaker branch alone, evaluation mode)."""
  repl, data = parallel.replicated(mesh), parallel.data_sharding(mesh)

  def step(variables, batch):
    return {"speaker_state": models.speaker_states(model, variables, batch["x"], batch["mask"])}
  return jax.jit(step, in_shardings=(repl, data), out_shardings=data)


def enrollment_contexts(states_fn: Callable, variables: Mapping[str, Any], x: np.ndarray,
                        mask: np.ndarray, seg_group: np.ndarray, num_groups: int,
                        batch_size: int, mesh: jax.sharding.Mesh) -> np.ndarray:
  """(G, d) float32: each enrollment utterance's pooled speaker state, the mean over its
  segments (x (E, T, M, C), mask (E, T), seg_group (E,) in 0..G-1) of `states_fn`'s states."""
  if len(x) == 0:
    d = variables["params"]["attention_sp"]["w_att"].shape[0]
    return np.zeros((num_groups, d), np.float32)
  states = model_outputs(states_fn, variables, {"x": x, "mask": mask}, batch_size,
                         mesh)["speaker_state"]
  return enroll_lib.group_means(np.asarray(states, np.float32), seg_group, num_groups)


def enrollment_arrays(states_fn: Callable, variables: Mapping[str, Any], plan: Any,
                      batch_size: int, mesh: jax.sharding.Mesh) -> dict[str, np.ndarray]:
  """An evaluated set's enrollment inputs with the current `variables`: {enroll_context (N, k,
  d) float32, enroll_valid (N, k)} from its `enroll.EvalEnrollment` `plan`."""
  contexts = enrollment_contexts(states_fn, variables, plan.x, plan.mask, plan.seg_group,
                                 len(plan.utt), batch_size, mesh)
  if len(plan.utt) == 0:  # nobody could be enrolled: every entry invalid
    contexts = np.zeros((1, contexts.shape[1]), np.float32)
  return {"enroll_context": contexts[plan.index] * plan.valid[..., None],
          "enroll_valid": plan.valid}


def with_enrollment(arrays: Mapping[str, np.ndarray], plan: Any, states_fn: Callable | None,
                    variables: Mapping[str, Any], batch_size: int, mesh: jax.sharding.Mesh
                    ) -> Mapping[str, np.ndarray]:
  """`arrays` of an evaluated set plus its enrollment inputs (`enrollment_arrays`) when it has
  an `enroll.EvalEnrollment` `plan`; `arrays` themselves when `plan` is None."""
  if plan is None:
    return arrays
  if states_fn is None:
    raise ValueError("this set evaluates with enrollment (model.enroll_k > 0): pass states_fn")
  return {**arrays, **enrollment_arrays(states_fn, variables, plan, batch_size, mesh)}


def make_eval_step(model: nn.Module, mesh: jax.sharding.Mesh,
                   compiler_options: Mapping[str, str] | None | str = "tuned",
                   aux_keys: Sequence[str] = ()) -> Callable:
  """The jitted `eval_step`.

  jit signature: (variables {"params", "batch_stats"} P(), batch P("data"))
  -> {probs (B, K), ...} P("data") (`eval_outputs`).
  `compiler_options` (`xla_options.compiler_options`): "tuned" (the train step's own), a name of
  `xla_options.CPU_OPTION_SETS`, or a dict / None.
  """
  repl, data = parallel.replicated(mesh), parallel.data_sharding(mesh)
  return jax.jit(functools.partial(eval_step, model=model, aux_keys=tuple(aux_keys)),
                 in_shardings=(repl, data), out_shardings=data,
                 compiler_options=xla_options.compiler_options(compiler_options))


def variables_of(state: Any) -> dict[str, Any]:
  """The model variables {"params", "batch_stats"} of a train state (eval_step's input): its
  averaged weights when it has them (train.ema_decay > 0), else its live ones."""
  if getattr(state, "ema", None) is not None:
    return {"params": state.ema["params"], "batch_stats": state.ema["batch_stats"]}
  return {"params": state.params, "batch_stats": state.batch_stats}


def model_outputs(eval_fn: Callable, variables: Mapping[str, Any],
                  arrays: Mapping[str, np.ndarray], batch_size: int,
                  mesh: jax.sharding.Mesh) -> dict[str, np.ndarray]:
  """eval_fn over all segments of `arrays` {x (N,T,M,C), mask (N,T), ...} in fixed-size padded
  batches (module docstring); returns each output concatenated over the segments, in order:
  {key: (N, ...)} numpy."""
  outputs = [(eval_fn(variables, parallel.global_batch(local, mesh)), real)
             for local, real in input_pipeline.eval_batches(
                 arrays, batch_size, jax.process_index(), jax.process_count())]
  return {k: np.concatenate([parallel.to_host(o[k])[:real] for o, real in outputs])
          for k in outputs[0][0]}


def validation_metrics(outputs: Mapping[str, np.ndarray], fd: Any, pooling: str) -> dict[str, Any]:
  """The validation metrics of a fold (`fold.FoldData`) from the model outputs of its validation
  segments.

  Returns:
    uar, wa, confusion (K x K list, utterances: pooled posteriors), recalls (per class, None for
    a class absent from validation), worst_class_recall (the smallest of them),
    largest_predicted_share (the share of the utterances given the most predicted class, from
    the confusion matrix's columns), segment_uar; for SSA models speaker_mass (the mean over the
    segments of the SSA's attention mass on the speaker half) and speaker_accuracy (the speaker
    branch, per segment).
  """
  probs = np.asarray(outputs["probs"])
  k = fd.num_classes
  seg_cm = metrics.confusion_matrix(fd.valid["label"], probs.argmax(-1), k)
  pooled = metrics.pool_posteriors(probs, fd.valid_seg_utt, len(fd.valid_utt), pooling)
  cm = metrics.confusion_matrix(fd.valid_labels, pooled.argmax(-1), k)
  out = {"uar": metrics.uar(cm), "wa": metrics.wa(cm), "segment_uar": metrics.uar(seg_cm),
         "confusion": cm.tolist(),
         "recalls": [None if np.isnan(r) else float(r) for r in metrics.recalls(cm)],
         "worst_class_recall": metrics.worst_class_recall(cm),
         "largest_predicted_share": metrics.largest_predicted_share(cm)}
  if "speaker_mass" in outputs:
    out["speaker_mass"] = float(np.mean(outputs["speaker_mass"]))
    out["speaker_accuracy"] = float(np.mean(outputs["speaker_pred"] == fd.valid["speaker"]))
  return out


def evaluate(eval_fn: Callable, variables: Mapping[str, Any], fd: Any, pooling: str,
             batch_size: int, mesh: jax.sharding.Mesh, states_fn: Callable | None = None
             ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  """(validation_metrics, model_outputs) of the fold's validation segments. With enrollment
  (`fd.valid_enroll`) the model also reads each segment's enrollment context, computed here
  with `states_fn` (`make_states_step`) and the current variables."""
  arrays = with_enrollment(fd.valid, getattr(fd, "valid_enroll", None), states_fn, variables,
                           batch_size, mesh)
  outputs = model_outputs(eval_fn, variables, arrays, batch_size, mesh)
  return validation_metrics(outputs, fd, pooling), outputs


def segment_outputs(eval_fn: Callable, variables: Mapping[str, Any], segments: np.ndarray,
                    mask: np.ndarray, batch_size: int, mesh: jax.sharding.Mesh,
                    enroll_context: np.ndarray | None = None) -> dict[str, np.ndarray]:
  """`model_outputs` of normalised segments (N, T, M, C) with their frame masks (N, T) in
  `batch_rows` batches: {probs (N, K), <aux keys of eval_fn> (N, ...)} numpy. Build `eval_fn`
  (`make_eval_step`) once and reuse it: it compiles once per batch shape. `enroll_context
  (J, d)` (enrollment, `predict.enrollment_context`): every segment's SSA also attends to these
  J pooled speaker states.

  Raises:
    ValueError: shapes that do not match, or no segment.
  """
  segments = np.asarray(segments, np.float32)
  mask = np.asarray(mask, bool)
  if segments.ndim != 4 or mask.shape != segments.shape[:2]:
    raise ValueError(f"segments must be (N, T, M, C) with mask (N, T), got {segments.shape} and "
                     f"{mask.shape}")
  if segments.shape[0] == 0:
    raise ValueError("no segments to run the model on")
  rows = batch_rows(segments.shape[0], batch_size, mesh.devices.size)
  arrays = {"x": segments, "mask": mask}
  if enroll_context is not None:
    n, j = segments.shape[0], enroll_context.shape[0]
    arrays.update(enroll_context=np.broadcast_to(np.asarray(enroll_context, np.float32),
                                                 (n,) + enroll_context.shape),
                  enroll_valid=np.ones((n, j), bool))
  return model_outputs(eval_fn, variables, arrays, rows, mesh)


def segment_posteriors(model: nn.Module, variables: Mapping[str, Any], segments: np.ndarray,
                       mask: np.ndarray, batch_size: int = 40,
                       mesh: jax.sharding.Mesh | None = None,
                       enroll_context: np.ndarray | None = None) -> np.ndarray:
  """Softmax emotion posteriors (N, K) float64 of normalised segments (N, T, M, C) with their
  frame masks (N, T): `segment_outputs` with a new `make_eval_step` (for one call; reuse an
  eval_fn with `segment_outputs` for many); `enroll_context` as there.

  Raises:
    ValueError: shapes that do not match, or no segment.
  """
  mesh = parallel.make_mesh() if mesh is None else mesh
  outputs = segment_outputs(make_eval_step(model, mesh), variables, segments, mask, batch_size,
                            mesh, enroll_context)
  return np.asarray(outputs["probs"], np.float64)
