"""Per-fold orbax checkpoints: the latest (to resume) and the best by validation UAR.

Layout of `<workdir>/fold<K>/checkpoints/<step>/` (orbax items, nothing pickled):
  state          {step, params, batch_stats, opt_state, bad_step}   (orbax StandardSave)
  meta           JSON: data position {epoch (epochs done), batch (batches of the next epoch
                 done)}, sums (that epoch's running step-metric sums and their count), best-so-far
                 {epoch, step, uar, wa, segment_uar, confusion, recalls, ...}, bad_epochs,
                 train_loss, elapsed
  normalization  the training speaker statistics `features.SpeakerStats.to_arrays()` without the
                 speaker ids (arrays: mean, std (S, M, C), global_mean, global_std (M, C), frames)
  names          JSON: classes, speakers (all of the corpus, the speaker-classifier order),
                 normalization_speakers (the row order of `normalization`)
  metrics        orbax's own: {uar, epoch} of an epoch-end checkpoint (none mid-epoch)

The best step is orbax's (`best_fn` = (uar, -epoch), `best_mode="max"`: the best UAR, the
earliest epoch on ties; `manager.best_step()`); a mid-epoch checkpoint carries no metrics, so it
is never the best; the training loop deletes it once a newer checkpoint exists
(`delete_steps`). Checkpoints without metrics are otherwise kept: those written before orbax
tracked the metrics hold the best of runs that started then (the saved meta names it).

  manager = checkpoint_manager(directory)
  save(manager, step, state_dict, meta, stats, names, uar=..., epoch=...)   # uar=None mid-epoch
  state_dict, meta = restore_latest(manager, target_state_dict)   # or None
  best = load_best(fold_dir)   # {"variables", "config", "classes", "stats", "step", "meta"}
"""

from __future__ import annotations

import logging
import os
from typing import Any

import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from ssa_jax import features, rundir

_log = logging.getLogger(__name__)


def _best_key(metrics: dict[str, Any]) -> tuple[float, int]:
  return (float(metrics["uar"]), -int(metrics["epoch"]))


def checkpoint_manager(directory: str, read_only: bool = False) -> ocp.CheckpointManager:
  """Keeps the latest step and the best by validation UAR (the earliest epoch on ties).

  Saves are synchronous, so a step that returns has committed its checkpoint.
  """
  policy = ocp.checkpoint_managers.AnyPreservationPolicy([
      ocp.checkpoint_managers.LatestN(n=1),
      ocp.checkpoint_managers.BestN(get_metric_fn=_best_key, n=1),
  ])
  options = ocp.CheckpointManagerOptions(
      best_fn=_best_key, best_mode="max", preservation_policy=policy, create=not read_only,
      read_only=read_only, enable_async_checkpointing=False)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def save(manager: ocp.CheckpointManager, step: int, state: dict[str, Any], meta: dict[str, Any],
         stats: features.SpeakerStats, names: dict[str, Any], *, uar: float | None,
         epoch: int) -> None:
  """Saves one checkpoint (the layout above); uar None: a mid-epoch one (no orbax metrics).
  A step that already exists (an unreadable one, passed over by `restore_latest`, replayed from
  an older checkpoint) is replaced."""
  if step in manager.all_steps():
    _log.warning("checkpoint step %d in %s is replaced", step, manager.directory)
    manager.delete(step)
  norm = {k: v for k, v in stats.to_arrays().items() if k != "speakers"}
  names = {**names, "normalization_speakers": [str(s) for s in stats.speakers]}
  manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta),
      normalization=ocp.args.StandardSave(norm), names=ocp.args.JsonSave(names)),
      metrics=None if uar is None else {"uar": float(uar), "epoch": int(epoch)})


def delete_steps(manager: ocp.CheckpointManager, steps: list[int]) -> None:
  """Deletes these checkpoints (superseded mid-epoch ones) where they exist."""
  for step in steps:
    if step in manager.all_steps():
      manager.delete(step)


def restore_latest(manager: ocp.CheckpointManager, target: dict[str, Any] | None
                   ) -> tuple[dict[str, Any], dict[str, Any]] | None:
  """(state dict, meta) of the newest readable checkpoint, or None if there is none.

  Args:
    target: a state dict of the right structure, shapes, dtypes and shardings.

  An unreadable checkpoint is skipped with a warning and the one before it (the best) is tried.
  """
  steps = sorted(manager.all_steps(), reverse=True)
  for i, step in enumerate(steps):
    try:
      restored = manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
      return dict(restored["state"]), dict(restored["meta"])
    except Exception as e:  # pylint: disable=broad-except  # any unreadable file: try the next
      nxt = f"falling back to step {steps[i + 1]}" if i + 1 < len(steps) else "starting afresh"
      msg = (f"checkpoint step {step} in {manager.directory} is unreadable "
             f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}); {nxt}")
      _log.warning(msg)
  return None


def load_best(fold_dir: str, config: ml_collections.ConfigDict | None = None) -> dict[str, Any]:
  """The best-UAR checkpoint of a finished (or running) fold, for evaluation and prediction
  (`rundir.FoldDir.best_checkpoint()` adds one-line errors); `config`: the fold's config
  (default: `rundir.FoldDir(fold_dir).config()`).

  Returns:
    {"variables": {"params", "batch_stats"} (numpy; the averaged weights of a run with
     train.ema_decay > 0, the ones it selected and scored with), "config": ConfigDict (config.json),
     "classes": tuple, "speakers": tuple, "stats": features.SpeakerStats, "step": int,
     "meta": the best checkpoint's meta}

  Raises:
    FileNotFoundError: no config.json or no checkpoint in `fold_dir`.
  """
  fold = rundir.FoldDir(fold_dir)
  ckpt_dir = fold.checkpoints_path
  if not os.path.exists(fold.config_path) or not os.path.isdir(ckpt_dir):
    raise FileNotFoundError(f"{fold_dir}: not a training run folder (needs config.json and "
                            f"checkpoints/)")
  config = fold.config() if config is None else config
  manager = checkpoint_manager(ckpt_dir, read_only=True)
  steps = manager.all_steps()
  if not steps:
    raise FileNotFoundError(f"{ckpt_dir}: no checkpoint")
  step = manager.best_step()  # None: no checkpoint with metrics (no epoch ended yet)
  latest_meta = manager.restore(max(steps), args=ocp.args.Composite(
      meta=ocp.args.JsonRestore()))["meta"]
  legacy = (latest_meta.get("best") or {}).get("step")
  if legacy in steps and manager.metrics(legacy) is None:  # saved before orbax tracked metrics
    step = legacy
  step = max(steps) if step is None else step
  r = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore(),
      normalization=ocp.args.StandardRestore(), names=ocp.args.JsonRestore()))
  manager.close()
  names = dict(r["names"])
  norm = {k: np.asarray(v) for k, v in dict(r["normalization"]).items()}
  stats = features.SpeakerStats.from_arrays(
      {**norm, "speakers": np.asarray(names["normalization_speakers"])})
  state = r["state"]
  scored = state.get("ema") or state  # train.ema_decay > 0: the averaged weights are the model's
  return {"variables": {"params": scored["params"], "batch_stats": scored["batch_stats"]},
          "config": config, "classes": tuple(names["classes"]),
          "speakers": tuple(names["speakers"]), "stats": stats, "step": int(step),
          "meta": dict(r["meta"])}
