"""Training and evaluation of one fold (docs/DESIGN.md §4-6, §8).

  state = create_train_state(model, tx, rng, x, mask, constraint)  # Eq. 8 holds from step 0
  step = make_train_step(model, tx, constraint, mesh)     # jitted once; state donated
  state, metrics = step(state, batch)
  result = train_and_evaluate(config, workdir, fold)      # the content of result.json

`train_step` is pure: forward in training mode (batch statistics updated), loss = CE_em (+ CE_sp for
SSA-CRNN), optax NAdam update, then the Eq. 8 projection of `params["classifier"]["kernel"]` with
the step's own classifier inputs `aux["z_em"]` (no gradient). A non-finite loss or gradient is
recorded on the device in `state.bad_step` (the first such step, -1 if none), which the loop reads
at log steps and epoch ends only, so metrics never stall the device.

Files written by `train_and_evaluate` under `<workdir>/fold<K>/` (process 0 only, through
`ssa_jax.io`: config.json and result.json replaced atomically, metrics.jsonl appended a line at a
time with fsync, a torn last line dropped on resume):
  config.json     the config the run used (num_speakers / num_classes filled in from the data)
  events.out.tfevents.*  TensorBoard scalars (train/loss, valid/uar, valid/wa, ... per epoch)
  metrics.jsonl   one line per evaluation (epoch, step, train loss, valid UAR / WA / segment UAR,
                  elapsed seconds)
  result.json     best epoch (by utterance UAR) and its UAR, WA, segment UAR, confusion matrix,
                  class names, counts, corpus, split, fold, config; wall-clock values under "timing"
  checkpoints/    orbax CheckpointManager, the latest and the best-UAR steps: train state, data
                  position, best-so-far, speaker normalisation statistics, class / speaker names
Rerunning the same command resumes from the latest checkpoint and ends with the same result.
Epochs are counted from 1 in the files (epoch e = e epochs completed).
"""

from __future__ import annotations

import copy
import functools
import os
import time
from typing import Any, Callable, Mapping

import chex
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import struct
from tqdm import tqdm

from ssa_jax import constraint as constraint_lib
from ssa_jax import checkpointing, features, input_pipeline, metrics, models, ops, parallel, splits
from ssa_jax import io as io_lib
from ssa_jax import summary as summary_lib


class NonFiniteLossError(FloatingPointError):
  """The training loss or gradient became NaN or infinite; the message names the step."""


@struct.dataclass
class TrainState:
  """Everything a training step reads and writes; a plain pytree (checkpointed as a dict)."""
  step: jax.Array  # int32 (), number of updates applied
  params: Any
  batch_stats: Any
  opt_state: Any
  bad_step: jax.Array  # int32 (), first step with a non-finite loss or gradient, -1 if none

  def to_dict(self) -> dict[str, Any]:
    return {f: getattr(self, f) for f in ("step", "params", "batch_stats", "opt_state", "bad_step")}


def make_optimizer(train_cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """NAdam (Adam with Nesterov momentum, Dozat 2016), seed §3.2."""
  return optax.nadam(float(train_cfg.learning_rate), b1=float(train_cfg.b1),
                     b2=float(train_cfg.b2), eps=float(train_cfg.eps))


def _constrain(params: Any, z_em: jax.Array, constraint: str) -> Any:
  """params with the classifier kernel projected by Eq. 8 for the classifier inputs z_em (N, E)."""
  kernel = constraint_lib.project_classifier(
      params["classifier"]["kernel"], jax.lax.stop_gradient(z_em), constraint)
  return {**params, "classifier": {**params["classifier"], "kernel": kernel}}


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array,
                       x: jax.Array, mask: jax.Array, constraint: str = "none") -> TrainState:
  """Initialises parameters from the first training batch x (B, T, M, C), mask (B, T).

  With a constraint, the initial classifier kernel is projected by Eq. 8 with the embeddings of
  that batch (training-mode forward, as in the step), so the invariant holds from step 0 and
  the first step does not run an unconstrained kernel times the temperature.
  """
  variables = flax.core.unfreeze(model.init({"params": rng}, x, mask, train=False))
  params, batch_stats = variables["params"], variables.get("batch_stats", {})
  if constraint != "none":
    (_, aux), _ = model.apply({"params": params, "batch_stats": batch_stats}, x, mask,
                              train=True, mutable=["batch_stats"])
    params = _constrain(params, aux["z_em"], constraint)
  return TrainState(step=jnp.int32(0), params=params, batch_stats=batch_stats,
                    opt_state=tx.init(params), bad_step=jnp.int32(-1))


def _accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  return jnp.mean(jnp.argmax(logits, -1) == labels)


def train_step(state: TrainState, batch: Mapping[str, jax.Array], *, model: nn.Module,
               tx: optax.GradientTransformation, constraint: str,
               speaker_loss_weight: float = 1.0) -> tuple[TrainState, dict[str, jax.Array]]:
  """One NAdam update + Eq. 8 projection on a global batch {x (B,T,M,C), mask, label, speaker}.

  loss = CE_em (+ speaker_loss_weight * CE_sp for SSA-CRNN).
  """
  chex.assert_rank(batch["x"], 4)
  chex.assert_equal_shape_prefix([batch["x"], batch["mask"]], 2)

  def loss_fn(params):
    (logits, aux), updates = model.apply(
        {"params": params, "batch_stats": state.batch_stats}, batch["x"], batch["mask"],
        train=True, mutable=["batch_stats"])
    ce_em = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
    out = {"loss_em": ce_em, "accuracy_em": _accuracy(logits, batch["label"]),
           "logit_scale": aux["logit_scale"]}
    loss = ce_em
    if "speaker_logits" in aux:  # SSA-CRNN: the speaker branch is trained jointly
      ce_sp = optax.softmax_cross_entropy_with_integer_labels(
          aux["speaker_logits"], batch["speaker"]).mean()
      out.update(loss_sp=ce_sp, accuracy_sp=_accuracy(aux["speaker_logits"], batch["speaker"]))
      loss = loss + speaker_loss_weight * ce_sp
    return loss, (aux["z_em"], updates.get("batch_stats", {}), out)

  (loss, (z_em, batch_stats, out)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  grad_norm = optax.tree.norm(grads)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  # Eq. 8: each column of the classifier kernel onto the L1 sphere of radius N / (K ||sum z||_1).
  params = _constrain(params, z_em, constraint)

  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  bad_step = jnp.where((state.bad_step < 0) & ~finite, state.step, state.bad_step)
  new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                            opt_state=opt_state, bad_step=bad_step)
  return new_state, {"loss": loss, "grad_norm": grad_norm, **out}


def eval_step(state: TrainState, batch: Mapping[str, jax.Array], *,
              model: nn.Module) -> dict[str, jax.Array]:
  """Evaluation-mode outputs of a batch (running BN statistics):

    probs          (B, K) softmax emotion posteriors
    speaker_mass   (B,)   SSA models only: the SSA's attention mass on the speaker half,
                          sum_t alpha_sp,t over real frames (0: the speaker branch is unused)
    speaker_pred   (B,)   SSA models only: the speaker branch's predicted speaker
  """
  logits, aux = model.apply({"params": state.params, "batch_stats": state.batch_stats},
                            batch["x"], batch["mask"], train=False)
  out = {"probs": jax.nn.softmax(logits.astype(jnp.float32), axis=-1)}
  if "alpha_sp" in aux:
    out["speaker_mass"] = aux["alpha_sp"].sum(axis=-1)
    out["speaker_pred"] = jnp.argmax(aux["speaker_logits"], axis=-1).astype(jnp.int32)
  return out


def make_train_step(model: nn.Module, tx: optax.GradientTransformation, constraint: str,
                    mesh: jax.sharding.Mesh, max_traces: int | None = None,
                    compiler_options: Mapping[str, str] | None | str = "tuned",
                    speaker_loss_weight: float = 1.0) -> Callable:
  """The jitted train step.

  jit signature: (state: TrainState  P() replicated, donated;
                  batch: {x, mask, label, speaker}  P("data"))
              -> (state: P(), metrics: {str: scalar}  P()).
  `max_traces` wraps the step in `chex.assert_max_traces` (tests). `compiler_options`: "tuned"
  (ops.train_compiler_options()), None for XLA's defaults (benchmarks), or a dict.
  """
  if compiler_options == "tuned":
    compiler_options = ops.train_compiler_options()
  def step(state, batch):
    return train_step(state, batch, model=model, tx=tx, constraint=constraint,
                      speaker_loss_weight=speaker_loss_weight)
  if max_traces is not None:
    step = chex.assert_max_traces(step, n=max_traces)
  repl, data = parallel.replicated(mesh), parallel.data_sharding(mesh)
  # On CPU, XLA's own (Eigen) convolutions instead of YNNPACK's: their kernel gradient was faster
  # (benchmarks/RESULTS.md, "What was tried"; sizes from its quiet run).
  return jax.jit(step, in_shardings=(repl, data), out_shardings=(repl, repl), donate_argnums=0,
                 compiler_options=compiler_options)


def make_eval_step(model: nn.Module, mesh: jax.sharding.Mesh,
                   compiler_options: Mapping[str, str] | None = None) -> Callable:
  """jit signature: (state P(), batch P("data")) -> {probs (B, K), ...} P("data").

  `compiler_options`: XLA's defaults unless given (benchmarks compare `ops.CPU_OPTION_SETS`)."""
  repl, data = parallel.replicated(mesh), parallel.data_sharding(mesh)
  return jax.jit(functools.partial(eval_step, model=model), in_shardings=(repl, data),
                 out_shardings=data, compiler_options=compiler_options)


def evaluate(eval_fn: Callable, state: TrainState, arrays: Mapping[str, np.ndarray],
             seg_utt: np.ndarray, utt_labels: np.ndarray, num_classes: int, pooling: str,
             batch_size: int, mesh: jax.sharding.Mesh) -> dict[str, Any]:
  """Utterance UAR / WA / confusion (pooled posteriors) and segment UAR on a validation set;
  for SSA models also the mean speaker-half attention mass over the segments and the speaker
  branch's segment accuracy.

  Args:
    arrays: validation segments {x, mask, label, speaker}; seg_utt (N,) indexes `utt_labels` (U,).
  """
  outputs = [(eval_fn(state, parallel.global_batch(local, mesh)), real)
             for local, real in input_pipeline.eval_batches(
                 arrays, batch_size, jax.process_index(), jax.process_count())]
  gathered = {k: np.concatenate([parallel.to_host(o[k])[:real] for o, real in outputs])
              for k in outputs[0][0]}
  probs = gathered["probs"]
  seg_cm = metrics.confusion_matrix(arrays["label"], probs.argmax(-1), num_classes)
  pooled = metrics.pool_posteriors(probs, seg_utt, len(utt_labels), pooling)
  cm = metrics.confusion_matrix(utt_labels, pooled.argmax(-1), num_classes)
  out = {"uar": metrics.uar(cm), "wa": metrics.wa(cm), "segment_uar": metrics.uar(seg_cm),
         "confusion": cm.tolist(),
         "recalls": [None if np.isnan(r) else float(r) for r in metrics.recalls(cm)]}
  if "speaker_mass" in gathered:
    out["speaker_mass"] = float(np.mean(gathered["speaker_mass"]))
    out["speaker_accuracy"] = float(np.mean(gathered["speaker_pred"] == arrays["speaker"]))
  return out


# ----------------------------------------------------------------------------------------------
# One fold
# ----------------------------------------------------------------------------------------------


def _segment_arrays(x: np.ndarray, mask: np.ndarray, dataset: Any, seg_idx: np.ndarray
                    ) -> dict[str, np.ndarray]:
  utt = dataset.seg_utt[seg_idx]
  return {"x": x, "mask": np.asarray(dataset.mask[seg_idx], bool),
          "label": np.asarray(dataset.labels[utt], np.int32),
          "speaker": np.asarray(dataset.speakers[utt], np.int32)}


def _accumulate(sums: dict[str, float], pending: list[dict[str, jax.Array]]) -> list:
  """Adds fetched step metrics to `sums` (and their number to sums["count"]); returns []."""
  for m in jax.device_get(pending):
    for k, v in m.items():
      sums[k] = sums.get(k, 0.0) + float(v)
    sums["count"] = sums.get("count", 0) + 1
  return []


def _counts(labels: np.ndarray, classes: tuple[str, ...]) -> dict[str, int]:
  return {c: int(n) for c, n in zip(classes, np.bincount(labels, minlength=len(classes)))}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, fold: int,
                       dataset: Any = None) -> dict[str, Any]:
  """Trains fold `fold`, selecting the epoch with the best validation UAR; returns result.json.

  Args:
    config: the full config (`ssa_jax.config.base_config()` layout).
    workdir: run directory; this fold writes `<workdir>/fold<K>/`.
    fold: 0-based fold number.
    dataset: a prepared `data.Dataset` (tests); by default `data.prepare(config)`.

  Raises:
    ValueError: bad fold / config / data (message says what); NonFiniteLossError.
  """
  # --- setup ---
  t_start = time.time()
  config = copy.deepcopy(config)
  is_main = jax.process_index() == 0
  tcfg = config.train
  fold_dir = os.path.join(os.path.abspath(os.path.expanduser(workdir)), f"fold{fold}")
  if tcfg.split != "loso" and not 0 <= fold < int(tcfg.num_folds):  # loso: checked on the data
    raise ValueError(f"fold {fold} is out of range: the {tcfg.split} split has folds "
                     f"0..{int(tcfg.num_folds) - 1}")
  if tcfg.split not in splits.MODES:
    raise ValueError(f"train.split must be one of {splits.MODES}, got {tcfg.split!r}")
  if tcfg.pooling not in metrics.POOLING:
    raise ValueError(f"train.pooling must be one of {metrics.POOLING}, got {tcfg.pooling!r}")
  if not float(tcfg.speaker_loss_weight) >= 0:
    raise ValueError(f"train.speaker_loss_weight must be >= 0, got {tcfg.speaker_loss_weight}")
  if tcfg.constraint not in constraint_lib.MODES:
    raise ValueError(f"train.constraint must be one of {constraint_lib.MODES}, "
                     f"got {tcfg.constraint!r}")

  # --- mesh ---
  mesh = parallel.make_mesh()
  parallel.check_batch_size(int(tcfg.batch_size), mesh, "train.batch_size")
  parallel.check_batch_size(int(tcfg.eval_batch_size), mesh, "train.eval_batch_size")

  # --- data ---
  loaded_here = dataset is None
  if loaded_here:
    from ssa_jax import data as data_lib  # pylint: disable=import-outside-toplevel
    dataset = data_lib.prepare(config)
  classes = tuple(dataset.classes)
  num_classes = len(classes)
  input_pipeline.per_class_size(int(tcfg.batch_size), num_classes)
  train_utt, valid_utt = splits.fold_split(dataset, fold, tcfg.split, int(tcfg.num_folds),
                                           float(tcfg.valid_fraction), int(config.seed))
  seg_utt = np.asarray(dataset.seg_utt)
  train_seg = np.flatnonzero(np.isin(seg_utt, train_utt))
  valid_seg = np.flatnonzero(np.isin(seg_utt, valid_utt))
  speaker_names = np.asarray(dataset.speaker_names)
  seg_speaker = speaker_names[np.asarray(dataset.speakers)[seg_utt]]
  # Per-speaker statistics from the TRAINING segments only; both sides normalised with them.
  # Both read the raw segments by row index a chunk at a time: the only copy of the features
  # this fold makes is the normalised one (benchmarks/memory.py).
  stats = features.fit_speaker_stats(dataset.segments, dataset.mask, seg_speaker, index=train_seg)
  norm = lambda idx: features.normalize(dataset.segments, dataset.mask, seg_speaker,  # noqa: E731
                                        stats, config.features.norm_fallback, index=idx)
  train_arrays = _segment_arrays(norm(train_seg), dataset.mask, dataset, train_seg)
  valid_arrays = _segment_arrays(norm(valid_seg), dataset.mask, dataset, valid_seg)
  valid_seg_utt = np.searchsorted(valid_utt, seg_utt[valid_seg])  # local utterance index
  valid_labels = np.asarray(dataset.labels)[valid_utt]
  config.model.num_classes = num_classes
  if int(config.model.num_speakers) <= 0:
    config.model.num_speakers = len(speaker_names)
  num_batches = input_pipeline.batches_per_epoch(train_arrays["label"], num_classes,
                                                 int(tcfg.batch_size))
  counts = {
      "train_utterances": _counts(np.asarray(dataset.labels)[train_utt], classes),
      "valid_utterances": _counts(valid_labels, classes),
      "train_segments": _counts(train_arrays["label"], classes),
      "valid_segments": _counts(valid_arrays["label"], classes),
  }
  logging.info("fold %d (%s split): %d train / %d valid utterances, %d / %d segments, "
               "%d batches per epoch", fold, tcfg.split, len(train_utt), len(valid_utt),
               len(train_seg), len(valid_seg), num_batches)
  if loaded_here:  # nothing below reads the raw features: free them (a caller's dataset is kept)
    dataset = None

  # --- model and optimizer ---
  model = models.build_model(config.model)
  tx = make_optimizer(tcfg)
  rng = jax.random.fold_in(jax.random.PRNGKey(int(config.seed)), fold)
  # The first training batch, whole on every process (initialisation and the step-0 Eq. 8
  # projection see the same global batch everywhere).
  example = next(input_pipeline.train_batches(
      train_arrays, num_classes, int(tcfg.batch_size), seed=int(config.seed), fold=fold,
      epoch=0, class_names=classes))
  example = {k: jnp.asarray(example[k]) for k in ("x", "mask")}
  init_fn = jax.jit(functools.partial(create_train_state, model, tx,
                                      constraint=str(tcfg.constraint)),
                    out_shardings=parallel.replicated(mesh))
  train_fn = make_train_step(model, tx, tcfg.constraint, mesh,
                             speaker_loss_weight=float(tcfg.speaker_loss_weight))
  eval_fn = make_eval_step(model, mesh)

  # --- restore ---
  if is_main:
    os.makedirs(fold_dir, exist_ok=True)
    io_lib.write_json(os.path.join(fold_dir, "config.json"), config.to_dict())
  manager = checkpointing.checkpoint_manager(os.path.join(fold_dir, "checkpoints"))
  meta = {"epoch": 0, "batch": 0, "best": None, "bad_epochs": 0, "elapsed": 0.0,
          "train_loss": None}
  # The restore target is abstract (shapes, dtypes, shardings): no initialisation on resume.
  abstract = jax.eval_shape(init_fn, rng, example["x"], example["mask"])
  abstract = jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=parallel.replicated(mesh)),
      abstract)
  restored = checkpointing.restore_latest(manager, abstract.to_dict())
  if restored is None:
    state = init_fn(rng, example["x"], example["mask"])
  else:
    state_dict, meta = restored
    state = TrainState(**state_dict)
    logging.info("resumed fold %d from step %d (epoch %d, batch %d)", fold, int(state.step),
                 meta["epoch"], meta["batch"])
  metrics_path = os.path.join(fold_dir, "metrics.jsonl")
  history = [r for r in io_lib.read_jsonl(metrics_path, missing_ok=True)
             if r["epoch"] <= meta["epoch"]]
  if is_main:  # drop lines of evaluations newer than the checkpoint (an interrupted epoch)
    io_lib.write_jsonl(metrics_path, history)

  # --- loop ---
  def stopped() -> str | None:
    if meta["epoch"] >= int(tcfg.epochs):
      return "epochs"
    if int(tcfg.patience) > 0 and meta["bad_epochs"] >= int(tcfg.patience):
      return "patience"
    return None

  def check_finite(where: str) -> None:
    bad = int(state.bad_step)
    if bad >= 0:
      raise NonFiniteLossError(
          f"non-finite loss or gradient at step {bad} (epoch {meta['epoch'] + 1}; {where}); "
          f"stopped, the last good checkpoint in {manager.directory} is kept "
          f"(step {manager.latest_step()})")

  t_resume = time.time()
  elapsed0 = float(meta["elapsed"])
  total = int(tcfg.epochs) * num_batches
  last_uar = meta["best"]["uar"] if meta["best"] else float("nan")
  tb = summary_lib.MetricWriter(fold_dir) if is_main else None  # TensorBoard beside metrics.jsonl
  bar = tqdm(total=total, initial=min(int(state.step), total), disable=not is_main,
             desc=f"fold {fold}", unit="step", dynamic_ncols=True)
  try:
    while stopped() is None:
      epoch = int(meta["epoch"])
      sums, pending = {}, []
      for b, local in enumerate(input_pipeline.train_batches(
          train_arrays, num_classes, int(tcfg.batch_size), seed=int(config.seed), fold=fold,
          epoch=epoch, start_batch=int(meta["batch"]), process_index=jax.process_index(),
          process_count=jax.process_count(), class_names=classes), start=int(meta["batch"])):
        state, step_metrics = train_fn(state, parallel.global_batch(local, mesh))
        pending.append(step_metrics)
        bar.update(1)
        if (b + 1) % int(tcfg.log_every) == 0:  # fetch metrics only here: the device never waits
          pending = _accumulate(sums, pending)
          check_finite("log step")
          bar.set_postfix(loss=f"{sums['loss'] / sums['count']:.3f}", uar=f"{last_uar:.3f}")
      _accumulate(sums, pending)
      check_finite("end of epoch")

      # --- evaluate ---
      result = evaluate(eval_fn, state, valid_arrays, valid_seg_utt, valid_labels, num_classes,
                        tcfg.pooling, int(tcfg.eval_batch_size), mesh)
      epoch_done = epoch + 1
      train_means = {k: v / max(sums.get("count", 0), 1) for k, v in sums.items() if k != "count"}
      train_loss = train_means.get("loss", float("nan"))
      improved = meta["best"] is None or result["uar"] > meta["best"]["uar"]
      if improved:
        meta["best"] = {"epoch": epoch_done, "step": int(state.step), **result,
                        **({"train_speaker_accuracy": train_means["accuracy_sp"]}
                           if "accuracy_sp" in train_means else {})}
      meta.update(epoch=epoch_done, batch=0, bad_epochs=0 if improved else meta["bad_epochs"] + 1,
                  train_loss=train_loss, elapsed=elapsed0 + time.time() - t_resume)
      last_uar = result["uar"]
      line = {"epoch": epoch_done, "step": int(state.step), "train_loss": train_loss,
              "train_accuracy": train_means.get("accuracy_em"),
              "train_logit_scale": train_means.get("logit_scale"),
              **({"train_speaker_accuracy": train_means["accuracy_sp"]}
                 if "accuracy_sp" in train_means else {}),
              "valid_uar": result["uar"], "valid_wa": result["wa"],
              "valid_segment_uar": result["segment_uar"],
              **{f"valid_{k}": result[k] for k in ("speaker_mass", "speaker_accuracy")
                 if k in result},
              "elapsed": round(meta["elapsed"], 3)}
      if is_main:
        io_lib.append_jsonl(metrics_path, line)
        tb.write(epoch_done, line)
      bar.set_postfix(loss=f"{train_loss:.3f}", uar=f"{last_uar:.3f}")

      # --- checkpoint ---
      checkpointing.save(manager, int(state.step), state.to_dict(), meta, stats,
                         {"classes": list(classes), "speakers": [str(n) for n in speaker_names]},
                         uar=result["uar"], epoch=epoch_done)
  finally:
    bar.close()
    manager.close()
    if tb is not None:
      tb.close()
  compiled = train_fn._cache_size()  # pylint: disable=protected-access
  if compiled > 1:
    logging.warning("the train step was compiled %d times (shapes or types changed)", compiled)

  # --- result ---
  best = meta["best"]
  if best is None:
    raise ValueError(f"fold {fold}: no epoch was trained (train.epochs={tcfg.epochs})")
  out = {
      "corpus": config.data.corpus, "split": tcfg.split, "fold": fold,
      "best_epoch": best["epoch"], "best_step": best["step"], "uar": best["uar"],
      "wa": best["wa"], "segment_uar": best["segment_uar"], "confusion": best["confusion"],
      "recalls": best.get("recalls"),  # per-class recall (class order; None: class not in valid)
      **{k: best[k] for k in ("speaker_mass", "speaker_accuracy", "train_speaker_accuracy")
         if k in best},
      "classes": list(classes), "counts": counts, "epochs_run": meta["epoch"],
      "stopped_by": stopped(), "last_train_loss": meta["train_loss"],
      "config": config.to_dict(),
      "timing": {"train_elapsed_s": round(meta["elapsed"], 3),
                 "this_run_s": round(time.time() - t_start, 3)},
  }
  if is_main:
    io_lib.write_json(os.path.join(fold_dir, "result.json"), out)
  return out
