"""Training and evaluation of one fold (docs/DESIGN.md §4-6, §8).

  state = create_train_state(model, tx, rng, x, mask, constraint)  # Eq. 8 holds from step 0
  step = make_train_step(model, tx, constraint, mesh)     # jitted once; state donated
  state, metrics = step(state, batch)
  outputs = inference.make_eval_step(model, mesh)(inference.variables_of(state), batch)  # probs, ...
  result = train_and_evaluate(config, workdir, fold)      # the content of result.json

`train_step` is pure: forward in training mode (batch statistics updated), loss = CE_em (+ CE_sp for
SSA-CRNN), optax NAdam update, then the Eq. 8 projection of `params["classifier"]["kernel"]` with
the step's own classifier inputs `aux["z_em"]` (no gradient). A non-finite loss or gradient is
recorded on the device in `state.bad_step` (the first such step, -1 if none), which the loop reads
at log steps, checkpoints and epoch ends only, so metrics never stall the device.

`train_and_evaluate` is a sequence of named steps: `check_config` -> mesh -> `load_fold`
(`fold.prepare_fold`: split, training speaker statistics, normalised arrays) -> `build_program`
(model, optimizer, jitted functions) -> `restore_or_init` (the latest checkpoint) -> `FoldLoop.run`
(train an epoch, `inference.evaluate` the selection set, write its line, checkpoint; mid-epoch
checkpoints every `train.checkpoint_every_minutes` / `train.checkpoint_every_steps`) ->
(`score_selected`, selection "inner" only) -> `fold_result`.

Modes (config.train; splits.py and input_pipeline.py hold their definitions):
  split           random | linguistic | loso | heldout (fold 0 only: train on the utterances
                  not marked "test", validate/test on those marked "test")
  selection       valid: the paper's: the best epoch by the fold's validation UAR, which is also
                    the reported figure.
                  inner: an inner split (`train.inner_fraction` of the fold's training repetition
                    groups, `splits.inner_split`) is held out of training; the speaker statistics
                    are fitted on the rest, which is trained on; each epoch evaluates the INNER
                    split (metrics.jsonl keys `inner_*`), which chooses the best epoch (orbax's
                    best checkpoint is then the best inner UAR) and drives patience; after the
                    last epoch the best checkpoint is restored and the fold's validation (test)
                    set is scored once (`score_selected`). The test set takes no part in
                    training, normalisation statistics or selection.
  batch_sampling  balanced (batch_size / K segments of each class per batch, the paper's) |
                  proportional (a seeded shuffle of all training segments per epoch, the last
                  batch filled by wrapping around); both pure in (seed, fold, epoch).

Files written by `train_and_evaluate` under `<workdir>/fold<K>/` (process 0 only, through
`ssa_jax.io`: config.json and result.json replaced atomically, metrics.jsonl appended a line at a
time with fsync, a torn last line dropped on resume):
  config.json     the config the run used (num_speakers / num_classes filled in from the data)
  events.out.tfevents.*  TensorBoard scalars (train/loss, valid/uar, valid/wa, ... per epoch)
  metrics.jsonl   one line per evaluation (epoch, step, train loss / accuracy / logit scale /
                  head update ratio (mean ||dW||_1 / ||W||_1 of the classifier kernel per step), valid
                  UAR / WA / segment UAR, SSA speaker mass and speaker accuracy, elapsed seconds);
                  with selection "inner" the evaluated set is the inner split and its keys are
                  `inner_uar`, `inner_wa`, `inner_segment_uar`, `inner_speaker_mass`,
                  `inner_speaker_accuracy` instead of `valid_*` (the validation/test set is not
                  evaluated per epoch)
  result.json     "selection" ("valid" | "inner"); the selected epoch (`best_epoch`,
                  `best_step`, by utterance UAR on the selection set) and the fold's VALIDATION
                  set figures at it: UAR, WA, segment UAR, confusion matrix, per-class `recalls`
                  (class order; null for a class absent from validation), SSA speaker mass and
                  accuracy (everything `inference.validation_metrics` returns); with selection
                  "inner" also "inner": the inner split's metrics at that epoch. Class names,
                  counts (selection "inner": train_* are the part trained on, plus
                  inner_utterances / inner_segments), corpus, split, fold, config; wall-clock
                  values under "timing". Written last: a run without it is not finished.
  checkpoints/    orbax CheckpointManager (ssa_jax/checkpointing.py), the latest and the best-UAR
                  steps (the UAR of the selection set: validation or inner): train state, data position (epoch, batch) and the epoch's running metric
                  sums, best-so-far, speaker normalisation statistics, class / speaker names
Rerunning the same command resumes from the latest checkpoint, at the batch it was saved at (the
batch order of an epoch is a pure function of (seed, fold, epoch)), and ends with the same
result.json; a run killed after its last epoch but before the test scoring of selection "inner"
restores the best checkpoint and scores it on the rerun. Epochs are counted from 1 in the files (epoch e = e epochs completed).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
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
import orbax.checkpoint as ocp
from flax import struct
from jax.experimental import multihost_utils
from tqdm import tqdm

from ssa_jax import constraint as constraint_lib
from ssa_jax import checkpointing, inference, input_pipeline, metrics, models, parallel, rundir
from ssa_jax import xla_options
from ssa_jax import enroll as enroll_lib
from ssa_jax import fold as fold_lib
from ssa_jax import io as io_lib
from ssa_jax import speaker as speaker_lib
from ssa_jax import summary as summary_lib

_log = logging.getLogger(__name__)


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
  # train.ema_decay > 0: the averaged weights {"params", "batch_stats"} that evaluation scores
  # (`inference.variables_of`); None (not in the checkpoint) when off.
  ema: Any = None

  def to_dict(self) -> dict[str, Any]:
    fields = ("step", "params", "batch_stats", "opt_state", "bad_step")
    return {f: getattr(self, f) for f in fields + (("ema",) if self.ema is not None else ())}


def make_optimizer(train_cfg: ml_collections.ConfigDict,
                   model_cfg: ml_collections.ConfigDict | None = None
                   ) -> optax.GradientTransformation:
  """NAdam (Adam with Nesterov momentum, Dozat 2016), seed §3.2, followed by the head's step
  rule `train.head_step` (`constraint.head_step_transform`; "relative" needs `model_cfg`)."""
  nadam = optax.nadam(float(train_cfg.learning_rate), b1=float(train_cfg.b1),
                      b2=float(train_cfg.b2), eps=float(train_cfg.eps))
  head_step = str(train_cfg.get("head_step", "adam"))
  if head_step == "adam":
    return nadam
  if model_cfg is None:
    raise ValueError(f"train.head_step={head_step!r} needs the model config (make_optimizer)")
  logit_scale, _ = models.resolve_logit_scale(model_cfg)
  return optax.chain(nadam, constraint_lib.head_step_transform(
      head_step, int(model_cfg.embed_dim), logit_scale,
      str(model_cfg.get("classifier_bias", "scaled"))))


def _constrain(params: Any, z_em: jax.Array, constraint: str) -> Any:
  """params with the classifier kernel projected by Eq. 8 for the classifier inputs z_em (N, E)."""
  kernel = constraint_lib.project_classifier(
      params["classifier"]["kernel"], jax.lax.stop_gradient(z_em), constraint)
  return {**params, "classifier": {**params["classifier"], "kernel": kernel}}


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array,
                       x: jax.Array, mask: jax.Array, constraint: str = "none",
                       init_projection: str | None = None,
                       adversary_speakers: int = 0, ema: bool = False) -> TrainState:
  """Initialises parameters from the first training batch x (B, T, M, C), mask (B, T).

  With a constraint, the initial classifier kernel is projected by Eq. 8 with the embeddings of
  that batch (training-mode forward, as in the step), so the invariant holds from step 0 and
  the first step does not run an unconstrained kernel times the temperature. `init_projection`
  (default: `constraint`) is the mode of that first projection: "rescale" puts the lecun-normal
  kernel on the sphere densely (its direction kept), where "l1_sphere" zeroes all but a few
  entries of each column (the radius is far inside the initial columns' L1 norms).
  `adversary_speakers` > 0 (`train.adversarial_weight` > 0): params also hold the adversarial
  speaker classifier, params["speaker_adversary"] (`speaker.adversary_init`, its own key
  fold_in(rng, 1)); the model ignores that entry. `ema` (train.ema_decay > 0): the state's
  averaged weights start as the initial (projected) params and batch_stats.
  """
  variables = flax.core.unfreeze(model.init({"params": rng}, x, mask, train=False))
  params, batch_stats = variables["params"], variables.get("batch_stats", {})
  if adversary_speakers > 0:  # unseen speakers: the adversary lives beside the model's params
    params[speaker_lib.ADVERSARY] = speaker_lib.adversary_init(
        jax.random.fold_in(rng, 1), int(model.embed_dim), int(adversary_speakers))
  if constraint != "none":
    # (rng stream "dropout": model.speaker_dropout's, unused by the paper's models)
    (_, aux), _ = model.apply({"params": params, "batch_stats": batch_stats}, x, mask,
                              train=True, mutable=["batch_stats"],
                              rngs={"dropout": jax.random.fold_in(rng, 2)})
    params = _constrain(params, aux["z_em"], init_projection or constraint)
  return TrainState(step=jnp.int32(0), params=params, batch_stats=batch_stats,
                    opt_state=tx.init(params), bad_step=jnp.int32(-1),
                    ema=(jax.tree.map(jnp.copy, {"params": params, "batch_stats": batch_stats})
                         if ema else None))  # copies: the step donates every leaf once


def ema_decay_at(decay: float, step: jax.Array) -> jax.Array:
  """The averaging decay at step t (updates applied before this one): min(decay, (1+t)/(10+t)),
  TensorFlow's ExponentialMovingAverage with num_updates, so the first steps do not keep the
  initialisation for ~1 / (1 - decay) steps."""
  t = step.astype(jnp.float32)
  return jnp.minimum(jnp.float32(decay), (1.0 + t) / (10.0 + t))


def initial_projection(train_cfg: ml_collections.ConfigDict) -> str:
  """The mode of the initial Eq. 8 projection: the constraint's own, or "rescale" (dense) with
  `train.head_step="relative"`, whose small relative steps could never revive the entries an
  initial "l1_sphere" projection zeroes (docs/DESIGN.md "Eq. 8 head")."""
  constraint = str(train_cfg.constraint)
  if constraint != "none" and str(train_cfg.get("head_step", "adam")) == "relative":
    return "rescale"
  return constraint


def _accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  return jnp.mean(jnp.argmax(logits, -1) == labels)


def train_step(state: TrainState, batch: Mapping[str, jax.Array], *, model: nn.Module,
               tx: optax.GradientTransformation, constraint: str,
               speaker_loss_weight: float = 1.0, speaker_stop_gradient: bool = False,
               adversarial_weight: float = 0.0, dropout_key: jax.Array | None = None,
               ema_decay: float = 0.0) -> tuple[TrainState, dict[str, jax.Array]]:
  """One NAdam update + Eq. 8 projection on a global batch {x (B,T,M,C), mask, label, speaker}.

  loss = CE_em (+ speaker_loss_weight * CE_sp for SSA-CRNN) (+ CE_adv with an adversary).
  Unseen-speaker options (docs/DESIGN.md "Beyond the paper"; off by default):
    CE_sp            over `speaker.aam_logits` of aux["speaker_cosine"] with model.speaker_loss
                     "aam" (the model's aam_margin / aam_scale), else over aux["speaker_logits"].
    speaker_stop_gradient  the model is called with detach_speaker=True (no gradient from CE_em
                     into the speaker branch).
    adversarial_weight  lambda > 0: CE_adv = CE(adversary(gradient_reversal(z_em, lambda)),
                     speaker), adversary = params["speaker_adversary"] (`create_train_state`).
    dropout_key      the model's "dropout" rng stream (model.speaker_dropout), fold_in(key, step):
                     the step stays a pure function of (state, batch).
    enrollment       (model.enroll_k > 0) a batch with enroll_x (B, k, T, M, C), enroll_mask,
                     enroll_valid (B, k) (`input_pipeline`) passes them to the model's `enroll`.
  ema_decay > 0 (train.ema_decay; the state made with `create_train_state(ema=True)`): after the
  update and projection, state.ema <- d * ema + (1 - d) * {params, batch_stats} with
  d = `ema_decay_at(ema_decay, step)` (optax.incremental_update). The averaged classifier is a
  convex combination of projected ones, inside the Eq. 8 ball; it is not projected again.
  """
  chex.assert_rank(batch["x"], 4)
  chex.assert_equal_shape_prefix([batch["x"], batch["mask"]], 2)
  # --- unseen-speaker options: extra arguments of the forward pass ---
  call = {"detach_speaker": True} if speaker_stop_gradient else {}
  enroll = enroll_lib.from_batch(batch)
  if enroll is not None:
    call["enroll"] = enroll
  if dropout_key is not None:
    call["rngs"] = {"dropout": jax.random.fold_in(dropout_key, state.step)}

  def loss_fn(params):
    (logits, aux), updates = model.apply(
        {"params": params, "batch_stats": state.batch_stats}, batch["x"], batch["mask"],
        train=True, mutable=["batch_stats"], **call)
    ce_em = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
    out = {"loss_em": ce_em, "accuracy_em": _accuracy(logits, batch["label"]),
           "logit_scale": aux["logit_scale"]}
    loss = ce_em
    if "speaker_logits" in aux:  # SSA-CRNN: the speaker branch is trained jointly
      sp_logits = aux["speaker_logits"]
      if "speaker_cosine" in aux:  # model.speaker_loss="aam": the margin on the true speaker
        sp_logits = speaker_lib.aam_logits(aux["speaker_cosine"], batch["speaker"],
                                           model.aam_margin, model.aam_scale)
      ce_sp = optax.softmax_cross_entropy_with_integer_labels(sp_logits, batch["speaker"]).mean()
      out.update(loss_sp=ce_sp, accuracy_sp=_accuracy(aux["speaker_logits"], batch["speaker"]))
      loss = loss + speaker_loss_weight * ce_sp
    if adversarial_weight > 0:  # gradient reversal: the adversary learns, z_em unlearns speakers
      adv_logits = speaker_lib.adversary_logits(
          params[speaker_lib.ADVERSARY],
          speaker_lib.gradient_reversal(aux["z_em"], jnp.float32(adversarial_weight)))
      ce_adv = optax.softmax_cross_entropy_with_integer_labels(adv_logits, batch["speaker"]).mean()
      out.update(loss_adv=ce_adv, accuracy_adv=_accuracy(adv_logits, batch["speaker"]))
      loss = loss + ce_adv
    return loss, (aux["z_em"], updates.get("batch_stats", {}), out)

  (loss, (z_em, batch_stats, out)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  grad_norm = optax.tree.norm(grads)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  # Eq. 8: each column of the classifier kernel onto the L1 sphere of radius N / (K ||sum z||_1).
  params = _constrain(params, z_em, constraint)
  # How far the step moved the head's kernel, relative to its size (after the projection):
  # ||W_new - W_old||_1 / ||W_old||_1 (train.head_step, docs/DESIGN.md "Eq. 8 head").
  old_kernel = state.params["classifier"]["kernel"].astype(jnp.float32)
  out["head_update_ratio"] = (
      jnp.sum(jnp.abs(params["classifier"]["kernel"].astype(jnp.float32) - old_kernel))
      / jnp.maximum(jnp.sum(jnp.abs(old_kernel)), 1e-30))

  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  bad_step = jnp.where((state.bad_step < 0) & ~finite, state.step, state.bad_step)
  ema = state.ema
  if ema_decay > 0:
    ema = optax.incremental_update({"params": params, "batch_stats": batch_stats}, ema,
                                   1.0 - ema_decay_at(ema_decay, state.step))
  new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                            opt_state=opt_state, bad_step=bad_step, ema=ema)
  return new_state, {"loss": loss, "grad_norm": grad_norm, **out}


def make_train_step(model: nn.Module, tx: optax.GradientTransformation, constraint: str,
                    mesh: jax.sharding.Mesh, max_traces: int | None = None,
                    compiler_options: Mapping[str, str] | None | str = "tuned",
                    speaker_loss_weight: float = 1.0, ema_decay: float = 0.0,
                    **speaker_options) -> Callable:
  """The jitted train step.

  jit signature: (state: TrainState  P() replicated, donated;
                  batch: {x, mask, label, speaker[, enroll_x, enroll_mask, enroll_valid]}
                    P("data"))
              -> (state: P(), metrics: {str: scalar}  P()).
  `max_traces` wraps the step in `chex.assert_max_traces` (tests). `compiler_options`
  (`xla_options.compiler_options`): "tuned" (xla_options.step_compiler_options()), a name of
  `xla_options.CPU_OPTION_SETS` ("default": XLA's own; benchmarks), or a dict / None.
  `speaker_options`: `train_step`'s unseen-speaker keywords (speaker_stop_gradient,
  adversarial_weight, dropout_key; `speaker_step_options` builds them from a config).
  `ema_decay` > 0: the state carries averaged weights (`train_step`).
  """
  def step(state, batch):
    return train_step(state, batch, model=model, tx=tx, constraint=constraint,
                      speaker_loss_weight=speaker_loss_weight, ema_decay=ema_decay,
                      **speaker_options)
  if max_traces is not None:
    step = chex.assert_max_traces(step, n=max_traces)
  repl, data = parallel.replicated(mesh), parallel.data_sharding(mesh)
  # On CPU, XLA's own (Eigen) convolutions instead of YNNPACK's: their kernel gradient was faster
  # (benchmarks/RESULTS.md, "What was tried"; sizes from its quiet run).
  return jax.jit(step, in_shardings=(repl, data), out_shardings=(repl, repl), donate_argnums=0,
                 compiler_options=xla_options.compiler_options(compiler_options))


# Names benchmarks/ (its own engineer's files) still use; the owner is ssa_jax/inference.py.
make_eval_step = inference.make_eval_step
variables_of = inference.variables_of


# ----------------------------------------------------------------------------------------------
# One fold: train_and_evaluate and its steps
# ----------------------------------------------------------------------------------------------


def _accumulate(sums: dict[str, float], pending: list[dict[str, jax.Array]]) -> list:
  """Adds fetched step metrics to `sums` (and their number to sums["count"]); returns []."""
  for m in jax.device_get(pending):
    for k, v in m.items():
      sums[k] = sums.get(k, 0.0) + float(v)
    sums["count"] = sums.get("count", 0) + 1
  return []


def check_config(config: ml_collections.ConfigDict, fold: int) -> None:
  """A one-line ValueError for a bad fold or training value."""
  tcfg = config.train
  fold_lib.check_fold(tcfg, fold)
  if tcfg.pooling not in metrics.POOLING:
    raise ValueError(f"train.pooling must be one of {metrics.POOLING}, got {tcfg.pooling!r}")
  if not float(tcfg.speaker_loss_weight) >= 0:
    raise ValueError(f"train.speaker_loss_weight must be >= 0, got {tcfg.speaker_loss_weight}")
  if str(tcfg.get("head_step", "adam")) not in constraint_lib.HEAD_STEPS:
    raise ValueError(f"train.head_step must be one of {constraint_lib.HEAD_STEPS}, "
                     f"got {tcfg.head_step!r}")
  if tcfg.constraint not in constraint_lib.MODES:
    raise ValueError(f"train.constraint must be one of {constraint_lib.MODES}, "
                     f"got {tcfg.constraint!r}")
  if _sampling(tcfg) not in input_pipeline.SAMPLING:
    raise ValueError(f"train.batch_sampling must be one of {input_pipeline.SAMPLING}, "
                     f"got {_sampling(tcfg)!r}")
  # Unseen speakers (docs/DESIGN.md "Beyond the paper").
  adversarial_weight = tcfg.get("adversarial_weight", 0.0)
  if not (isinstance(adversarial_weight, (int, float)) and 0 <= adversarial_weight < float("inf")):
    raise ValueError(f"train.adversarial_weight must be a number >= 0, got {adversarial_weight!r}")
  if tcfg.get("speaker_stop_gradient", False) not in (True, False):
    raise ValueError(f"train.speaker_stop_gradient must be True or False, "
                     f"got {tcfg.speaker_stop_gradient!r}")
  if tcfg.get("speaker_stop_gradient", False) and config.model.name != "ssa_crnn":
    raise ValueError(f"train.speaker_stop_gradient needs model.name='ssa_crnn' (a speaker "
                     f"branch), got {config.model.name!r}")
  k = config.model.get("enroll_k", 0)
  if isinstance(k, bool) or not isinstance(k, int) or k < 0:
    raise ValueError(f"model.enroll_k must be an integer >= 0 (0: no enrollment), got {k!r}")
  if k > 0 and config.model.name != "ssa_crnn":
    raise ValueError(f"model.enroll_k needs model.name='ssa_crnn' (a speaker branch), "
                     f"got {config.model.name!r}")
  enroll_lib.scored_k(config)  # train.exclude_enroll_k: a one-line error before any data is read
  _ema_decay(tcfg)


def _ema_decay(tcfg: ml_collections.ConfigDict) -> float:
  """train.ema_decay, checked: a number in [0, 1) (0: off)."""
  d = tcfg.get("ema_decay", 0.0)
  if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0 <= d < 1:
    raise ValueError(f"train.ema_decay must be a number in [0, 1) (0: off), got {d!r}")
  return float(d)


# --- Unseen speakers (docs/DESIGN.md "Beyond the paper"): the train step's extra keywords ---
def speaker_step_options(config: ml_collections.ConfigDict, rng: jax.Array) -> dict[str, Any]:
  """`train_step`'s unseen-speaker keywords from the config: speaker_stop_gradient,
  adversarial_weight, and dropout_key = fold_in(rng, 3) when model.speaker_dropout > 0 (rng: the
  fold's key, whose fold_in 1 and 2 `create_train_state` uses; every step folds its step number
  into it). Empty for the defaults."""
  tcfg, opts = config.train, {}
  if tcfg.get("speaker_stop_gradient", False):
    opts["speaker_stop_gradient"] = True
  if float(tcfg.get("adversarial_weight", 0.0)) > 0:
    opts["adversarial_weight"] = float(tcfg.adversarial_weight)
  if float(config.model.get("speaker_dropout", 0.0)) > 0:
    opts["dropout_key"] = jax.random.fold_in(rng, 3)
  return opts


def _sampling(tcfg: ml_collections.ConfigDict) -> str:
  return str(tcfg.get("batch_sampling", "balanced"))


def _selection(tcfg: ml_collections.ConfigDict) -> str:
  return str(tcfg.get("selection", "valid"))


def _make_mesh(tcfg: ml_collections.ConfigDict) -> jax.sharding.Mesh:
  mesh = parallel.make_mesh()
  parallel.check_batch_size(int(tcfg.batch_size), mesh, "train.batch_size")
  parallel.check_batch_size(int(tcfg.eval_batch_size), mesh, "train.eval_batch_size")
  return mesh


def load_fold(config: ml_collections.ConfigDict, fold: int,
              dataset: Any = None) -> fold_lib.FoldData:
  """`fold.prepare_fold` on `dataset` (default `data.prepare(config)`, dropped on return: only
  the normalised copy stays); fills config.model.num_classes / num_speakers from the data."""
  if dataset is None:
    from ssa_jax import data as data_lib  # pylint: disable=import-outside-toplevel
    dataset = data_lib.prepare(config)
  input_pipeline.check_sampling(_sampling(config.train), int(config.train.batch_size),
                                len(dataset.classes))
  fd = fold_lib.prepare_fold(config, dataset, fold)
  config.model.num_classes = fd.num_classes
  if int(config.model.num_speakers) <= 0:
    config.model.num_speakers = len(fd.speaker_names)
  _log.info("fold %d (%s split): %d train / %d valid utterances, %d / %d segments", fold,
               config.train.split, len(fd.train_utt), len(fd.valid_utt), len(fd.train_seg),
               len(fd.valid_seg))
  if fd.inner_utt is not None:
    _log.info("fold %d: selection on an inner split of %d utterances (%d segments) held out "
                 "of training", fold, len(fd.inner_utt), len(fd.inner_seg))
  return fd


@dataclasses.dataclass(frozen=True)
class Program:
  """A fold's model and jitted functions: init_fn(rng, x, mask) -> TrainState (replicated),
  train_fn (`make_train_step`), eval_fn (`inference.make_eval_step`), rng (the fold's init key) and the
  first training batch {x, mask} (initialisation and the restore target's shapes); states_fn
  (`inference.make_states_step`, enrollment only, else None)."""
  model: nn.Module
  init_fn: Callable
  train_fn: Callable
  eval_fn: Callable
  rng: jax.Array
  example: dict[str, jax.Array]
  states_fn: Callable | None = None


def build_program(config: ml_collections.ConfigDict, fd: fold_lib.FoldData, fold: int,
                  mesh: jax.sharding.Mesh) -> Program:
  tcfg = config.train
  model = models.build_model(config.model)
  tx = make_optimizer(tcfg, config.model)
  # The first training batch, whole on every process (initialisation and the step-0 Eq. 8
  # projection see the same global batch everywhere).
  example = next(input_pipeline.train_batches(
      fd.train, fd.num_classes, int(tcfg.batch_size), seed=int(config.seed), fold=fold,
      epoch=0, class_names=fd.classes, sampling=_sampling(tcfg)))
  rng = jax.random.fold_in(jax.random.PRNGKey(int(config.seed)), fold)
  speaker_opts = speaker_step_options(config, rng)  # unseen speakers; {} by default
  init_fn = jax.jit(functools.partial(
      create_train_state, model, tx, constraint=str(tcfg.constraint),
      init_projection=initial_projection(tcfg),
      adversary_speakers=(int(config.model.num_speakers)
                          if "adversarial_weight" in speaker_opts else 0),
      ema=_ema_decay(tcfg) > 0),
                    out_shardings=parallel.replicated(mesh))
  return Program(
      model=model, init_fn=init_fn,
      train_fn=make_train_step(model, tx, tcfg.constraint, mesh,
                               speaker_loss_weight=float(tcfg.speaker_loss_weight),
                               ema_decay=_ema_decay(tcfg), **speaker_opts),
      eval_fn=inference.make_eval_step(model, mesh),
      rng=rng,
      example={k: jnp.asarray(example[k]) for k in ("x", "mask")},
      states_fn=(inference.make_states_step(model, mesh)
                 if enroll_lib.enroll_k(config.model) > 0 else None))


def _new_meta() -> dict[str, Any]:
  """The checkpointed loop position: `epoch` epochs done, `batch` batches of the next one done
  with the running metric `sums` of those batches, best-so-far, patience count, train time."""
  return {"epoch": 0, "batch": 0, "sums": {}, "best": None, "bad_epochs": 0, "elapsed": 0.0,
          "train_loss": None}


def _abstract_state(program: Program, mesh: jax.sharding.Mesh) -> TrainState:
  """The restore target: shapes, dtypes and shardings of the state (no initialisation)."""
  x, mask = program.example["x"], program.example["mask"]
  return jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=parallel.replicated(mesh)),
      jax.eval_shape(program.init_fn, program.rng, x, mask))


def restore_or_init(manager: ocp.CheckpointManager, program: Program, mesh: jax.sharding.Mesh,
                    fold: int) -> tuple[TrainState, dict[str, Any]]:
  """(state, meta) of the latest checkpoint, or a fresh state and `_new_meta()`."""
  x, mask = program.example["x"], program.example["mask"]
  restored = checkpointing.restore_latest(manager, _abstract_state(program, mesh).to_dict())
  if restored is None:
    return program.init_fn(program.rng, x, mask), _new_meta()
  state_dict, meta = restored
  meta = {**_new_meta(), **meta}  # checkpoints from before `sums` was saved
  _log.info("resumed fold %d from step %d (epoch %d, batch %d)", fold,
               int(state_dict["step"]), meta["epoch"], meta["batch"])
  return TrainState(**state_dict), meta


def _sync_metrics_file(path: str, meta: Mapping[str, Any], is_main: bool) -> None:
  """Drops metrics.jsonl lines newer than the checkpoint (evaluations of a lost epoch)."""
  history = [r for r in io_lib.read_jsonl(path, missing_ok=True) if r["epoch"] <= meta["epoch"]]
  if is_main:
    io_lib.write_jsonl(path, history)


def checkpoint_due(step: int, seconds_since_save: float, every_steps: int,
                   every_minutes: float) -> bool:
  """Whether a mid-epoch checkpoint is due after global step `step` (`train.checkpoint_every_*`:
  every `every_steps` steps if > 0, or once `every_minutes` have passed since the last save if
  > 0)."""
  return ((every_steps > 0 and step % every_steps == 0)
          or (every_minutes > 0 and seconds_since_save >= 60.0 * every_minutes))


def stopped(meta: Mapping[str, Any], tcfg: ml_collections.ConfigDict) -> str | None:
  """Why training is over ("epochs" | "patience"), or None."""
  if meta["epoch"] >= int(tcfg.epochs):
    return "epochs"
  if int(tcfg.patience) > 0 and meta["bad_epochs"] >= int(tcfg.patience):
    return "patience"
  return None


def _epoch_line(epoch: int, step: int, train_means: Mapping[str, float],
                result: Mapping[str, Any], elapsed: float,
                prefix: str = "valid") -> dict[str, Any]:
  """One metrics.jsonl line (and TensorBoard scalars) of an evaluated epoch; `prefix` names the
  evaluated set ("valid" | "inner": the selection set)."""
  return {"epoch": epoch, "step": step, "train_loss": train_means.get("loss", float("nan")),
          "train_accuracy": train_means.get("accuracy_em"),
          "train_logit_scale": train_means.get("logit_scale"),
          "train_head_update_ratio": train_means.get("head_update_ratio"),
          **({"train_speaker_accuracy": train_means["accuracy_sp"]}
             if "accuracy_sp" in train_means else {}),
          **({"train_adversary_accuracy": train_means["accuracy_adv"]}
             if "accuracy_adv" in train_means else {}),
          f"{prefix}_uar": result["uar"], f"{prefix}_wa": result["wa"],
          f"{prefix}_segment_uar": result["segment_uar"],
          **{f"{prefix}_{k}": result[k] for k in ("worst_class_recall", "largest_predicted_share",
                                                 "speaker_mass", "speaker_accuracy")
             if k in result},
          "elapsed": round(elapsed, 3)}


# Entries of meta["best"] that are not evaluation metrics of the selection set.
_BEST_POSITION = ("epoch", "step", "train_speaker_accuracy")


def _set_metrics(best: Mapping[str, Any]) -> dict[str, Any]:
  """The evaluation metrics held in meta["best"] (`inference.validation_metrics`'s keys; `recalls`
  None in checkpoints from before it was saved)."""
  out = {k: v for k, v in best.items() if k not in _BEST_POSITION}
  out.setdefault("recalls", None)
  return out


def score_selected(manager: ocp.CheckpointManager, program: Program, mesh: jax.sharding.Mesh,
                   fd: fold_lib.FoldData, meta: Mapping[str, Any],
                   tcfg: ml_collections.ConfigDict) -> dict[str, Any]:
  """Selection "inner": restores the selected (best inner UAR) checkpoint and scores the fold's
  validation (test) set with it, once: `inference.validation_metrics`'s dict.

  Raises:
    ValueError: no epoch trained, or the selected checkpoint is gone from `manager`.
  """
  best = meta["best"]
  if best is None:
    raise ValueError(f"no epoch was trained (train.epochs={tcfg.epochs})")
  step = int(best["step"])
  if step not in manager.all_steps():
    raise ValueError(f"the selected checkpoint (step {step}, epoch {best['epoch']}) is missing "
                     f"from {manager.directory}")
  target = _abstract_state(program, mesh).to_dict()
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(target)))
  state = TrainState(**dict(restored["state"]))
  scored, _ = inference.evaluate(program.eval_fn, inference.variables_of(state), fd, tcfg.pooling,
                                int(tcfg.eval_batch_size), mesh, program.states_fn)
  _log.info("scored the validation set once at the selected epoch %d (step %d): UAR %.4f",
               best["epoch"], step, scored["uar"])
  return scored


def fold_result(config: ml_collections.ConfigDict, fd: fold_lib.FoldData, fold: int,
                meta: Mapping[str, Any], this_run_s: float,
                scored: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """The result.json content from the final loop state (`meta`); `scored`: selection "inner"'s
  validation (test) metrics at the selected epoch (`score_selected`)."""
  tcfg = config.train
  best = meta["best"]
  if best is None:
    raise ValueError(f"fold {fold}: no epoch was trained (train.epochs={tcfg.epochs})")
  selection = _selection(tcfg)
  selected = _set_metrics(best)  # the selection set's metrics at the selected epoch
  if selection == "inner":
    if scored is None:
      raise ValueError(f"fold {fold}: selection 'inner' needs the test scoring of the selected "
                       f"epoch")
    figures, extra = dict(scored), {"inner": selected}
  else:
    figures, extra = selected, {}
  return {
      "corpus": config.data.corpus, "split": tcfg.split, "fold": fold, "selection": selection,
      "best_epoch": best["epoch"], "best_step": best["step"],
      **figures,  # uar, wa, segment_uar, confusion, recalls (None: class absent), speaker_*
      **({"train_speaker_accuracy": best["train_speaker_accuracy"]}
         if "train_speaker_accuracy" in best else {}),
      **extra,
      "classes": list(fd.classes), "counts": fd.counts, "scored": fd.scored,
      "epochs_run": meta["epoch"],
      "stopped_by": stopped(meta, tcfg), "last_train_loss": meta["train_loss"],
      "config": config.to_dict(),
      "timing": {"train_elapsed_s": round(meta["elapsed"], 3),
                 "this_run_s": round(this_run_s, 3)},
  }


class FoldLoop:
  """The epoch loop of one fold: trains, evaluates each epoch, writes metrics.jsonl /
  TensorBoard and checkpoints (`run()` returns the final `meta`)."""

  def __init__(self, config: ml_collections.ConfigDict, fd: fold_lib.FoldData, fold: int,
               program: Program, mesh: jax.sharding.Mesh, manager: ocp.CheckpointManager,
               fold_dir: rundir.FoldDir, state: TrainState, meta: dict[str, Any]):
    self.config, self.tcfg, self.fd, self.fold = config, config.train, fd, fold
    self.program, self.mesh, self.manager, self.fold_dir = program, mesh, manager, fold_dir
    self.state, self.meta = state, meta
    self.is_main = jax.process_index() == 0
    self.sampling, self.selection = _sampling(self.tcfg), _selection(self.tcfg)
    # The set that selects the epoch: the fold's validation set, or its inner split.
    self.select_fd = fold_lib.inner_view(fd) if self.selection == "inner" else fd
    self.num_batches = input_pipeline.batches_per_epoch(fd.train["label"], fd.num_classes,
                                                        int(self.tcfg.batch_size), self.sampling)
    self.names = {"classes": list(fd.classes), "speakers": [str(n) for n in fd.speaker_names]}
    self.t_resume, self.elapsed0 = time.time(), float(meta["elapsed"])
    self.last_save = self.t_resume
    self.every_steps = int(self.tcfg.get("checkpoint_every_steps", 0))
    self.every_minutes = float(self.tcfg.get("checkpoint_every_minutes", 10.0))
    self.last_uar = meta["best"]["uar"] if meta["best"] else float("nan")
    # Mid-epoch checkpoints to delete once a newer one is saved (the one resumed from, too).
    self.superseded = [int(state.step)] if int(meta["batch"]) > 0 else []

  def run(self) -> dict[str, Any]:
    total = int(self.tcfg.epochs) * self.num_batches
    self.tb = summary_lib.MetricWriter(self.fold_dir.path) if self.is_main else None
    self.bar = tqdm(total=total, initial=min(int(self.state.step), total),
                    disable=not self.is_main, desc=f"fold {self.fold}", unit="step",
                    dynamic_ncols=True)
    try:
      while stopped(self.meta, self.tcfg) is None:
        sums = self.train_epoch()
        self.end_epoch(sums)
    finally:
      self.bar.close()
      if self.tb is not None:
        self.tb.close()
    return self.meta

  def _check_finite(self, where: str) -> None:
    bad = int(self.state.bad_step)
    if bad >= 0:
      raise NonFiniteLossError(
          f"non-finite loss or gradient at step {bad} (epoch {self.meta['epoch'] + 1}; {where}); "
          f"stopped, the last good checkpoint in {self.manager.directory} is kept "
          f"(step {self.manager.latest_step()})")

  def train_epoch(self) -> dict[str, float]:
    """Trains the rest of epoch meta["epoch"] from batch meta["batch"]; returns the epoch's
    summed step metrics (with the sums restored for the batches done before a resume)."""
    epoch, start = int(self.meta["epoch"]), int(self.meta["batch"])
    sums, pending = dict(self.meta.get("sums") or {}), []
    batches = input_pipeline.train_batches(
        self.fd.train, self.fd.num_classes, int(self.tcfg.batch_size), seed=int(self.config.seed),
        fold=self.fold, epoch=epoch, start_batch=start, process_index=jax.process_index(),
        process_count=jax.process_count(), class_names=self.fd.classes, sampling=self.sampling,
        enroll_k=enroll_lib.enroll_k(self.config.model))
    for b, local in enumerate(batches, start=start):
      self.state, step_metrics = self.program.train_fn(
          self.state, parallel.global_batch(local, self.mesh))
      pending.append(step_metrics)
      self.bar.update(1)
      log_step = (b + 1) % int(self.tcfg.log_every) == 0
      if log_step:  # fetch metrics only here (and at checkpoints): the device never waits
        pending = _accumulate(sums, pending)
        self._check_finite("log step")
        self.bar.set_postfix(loss=f"{sums['loss'] / sums['count']:.3f}",
                             uar=f"{self.last_uar:.3f}")
      step = epoch * self.num_batches + b + 1  # == state.step, without waiting for the device
      if b + 1 < self.num_batches and self._save_due(step, log_step):
        pending = _accumulate(sums, pending)
        self._check_finite("mid-epoch checkpoint")
        self.save_position(b + 1, sums)
    _accumulate(sums, pending)
    self._check_finite("end of epoch")
    return sums

  def _save_due(self, step: int, log_step: bool) -> bool:
    """A mid-epoch checkpoint after `step`? The clock is read at log steps only, and with several
    processes process 0's decision is everyone's (the save is collective)."""
    if checkpoint_due(step, 0.0, self.every_steps, 0.0):
      return True
    if not log_step or self.every_minutes <= 0:
      return False
    due = checkpoint_due(step, time.time() - self.last_save, 0, self.every_minutes)
    if jax.process_count() > 1:
      due = bool(multihost_utils.broadcast_one_to_all(np.int32(due)))
    return due

  def save_position(self, batch: int, sums: Mapping[str, float]) -> None:
    """A mid-epoch checkpoint: `batch` batches of epoch meta["epoch"] done, their metric sums."""
    self.meta.update(batch=batch, sums=dict(sums),
                     elapsed=self.elapsed0 + time.time() - self.t_resume)
    step = int(self.state.step)
    checkpointing.save(self.manager, step, self.state.to_dict(), self.meta,
                       self.fd.stats, self.names, uar=None, epoch=int(self.meta["epoch"]))
    checkpointing.delete_steps(self.manager, self.superseded)
    self.superseded, self.last_save = [step], time.time()

  def end_epoch(self, sums: Mapping[str, float]) -> None:
    """Evaluates the selection set, updates best-so-far and patience, writes the epoch's line
    and checkpoint."""
    result, _ = inference.evaluate(self.program.eval_fn, inference.variables_of(self.state), self.select_fd,
                                  self.tcfg.pooling, int(self.tcfg.eval_batch_size), self.mesh,
                                  self.program.states_fn)
    meta, epoch_done, step = self.meta, int(self.meta["epoch"]) + 1, int(self.state.step)
    means = {k: v / max(sums.get("count", 0), 1) for k, v in sums.items() if k != "count"}
    improved = meta["best"] is None or result["uar"] > meta["best"]["uar"]
    if improved:
      meta["best"] = {"epoch": epoch_done, "step": step, **result,
                      **({"train_speaker_accuracy": means["accuracy_sp"]}
                         if "accuracy_sp" in means else {})}
    meta.update(epoch=epoch_done, batch=0, sums={},
                bad_epochs=0 if improved else meta["bad_epochs"] + 1,
                train_loss=means.get("loss", float("nan")),
                elapsed=self.elapsed0 + time.time() - self.t_resume)
    self.last_uar = result["uar"]
    line = _epoch_line(epoch_done, step, means, result, meta["elapsed"],
                       prefix="inner" if self.selection == "inner" else "valid")
    if self.is_main:
      io_lib.append_jsonl(self.fold_dir.metrics_path, line)
      self.tb.write(epoch_done, line)
    self.bar.set_postfix(loss=f"{line['train_loss']:.3f}", uar=f"{self.last_uar:.3f}")
    checkpointing.save(self.manager, step, self.state.to_dict(), meta, self.fd.stats, self.names,
                       uar=result["uar"], epoch=epoch_done)
    checkpointing.delete_steps(self.manager, self.superseded)
    self.superseded, self.last_save = [], time.time()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, fold: int,
                       dataset: Any = None) -> dict[str, Any]:
  """Trains fold `fold`, selecting the epoch with the best UAR on the selection set (validation,
  or the inner split with `train.selection="inner"`, then scored on validation once); returns
  result.json's content.

  Args:
    config: the full config (`ssa_jax.config.base_config()` layout).
    workdir: run directory; this fold writes `<workdir>/fold<K>/`.
    fold: 0-based fold number.
    dataset: a prepared `data.Dataset` (tests); by default `data.prepare(config)`.

  Raises:
    ValueError: bad fold / config / data (message says what); NonFiniteLossError.
  """
  t_start = time.time()
  config = copy.deepcopy(config)
  check_config(config, fold)
  mesh = _make_mesh(config.train)
  fd = load_fold(config, fold, dataset)
  del dataset  # a dataset loaded here is freed: nothing below reads the raw features
  program = build_program(config, fd, fold, mesh)
  fold_dir = rundir.FoldDir.of(workdir, fold)
  is_main = jax.process_index() == 0
  if is_main:
    fold_dir.write_config(config)
  manager = checkpointing.checkpoint_manager(fold_dir.checkpoints_path)
  try:
    state, meta = restore_or_init(manager, program, mesh, fold)
    _sync_metrics_file(fold_dir.metrics_path, meta, is_main)
    loop = FoldLoop(config, fd, fold, program, mesh, manager, fold_dir, state, meta)
    meta = loop.run()
    scored = (score_selected(manager, program, mesh, fd, meta, config.train)
              if _selection(config.train) == "inner" else None)
  finally:
    manager.close()
  compiled = program.train_fn._cache_size()  # pylint: disable=protected-access
  if compiled > 1:
    _log.warning("the train step was compiled %d times (shapes or types changed)", compiled)
  out = fold_result(config, fd, fold, meta, time.time() - t_start, scored)
  if is_main:
    fold_dir.write_result(out)
  return out
