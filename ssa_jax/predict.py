"""Emotion prediction for arbitrary audio files with a trained fold (docs/DESIGN.md §8).

  predictor = load_predictor(fold_dir)               # best checkpoint of <workdir>/fold<K>
  results = predict_files(predictor, paths, norm="self", pooling=None)

Each file goes through the training front end: `audio.load_audio` (any sample rate, mono or
multi-channel, >= 0.1 s) -> log-Mel + Δ + ΔΔ -> 3 s segments -> speaker normalisation -> the model
in evaluation mode -> per-segment softmax posteriors (N_f, K) -> the utterance decision, pooled
from its own segments as in training (`config.train.pooling`: max | mean, `metrics.pool_posteriors`).

Normalisation (`norm`): "self" uses the file's own statistics (a new speaker, docs/DESIGN.md §2), "train"
the global statistics of the training speakers saved with the checkpoint.

The pipeline from audio to results is `serving.Model`'s, shared with the light runtime of an
exported model (`ssa_jax/serving.py`); here it runs the run folder's flax model. A result per
file is a dict (JSON-serialisable):
  {"path", "label", "probabilities": {class: p} (sum 1; for max pooling the pooled maxima
   renormalised), "scores": {class: pooled score}, "pooling", "norm", "duration_s",
   "segments": [{"index", "start_s", "end_s", "label", "probabilities": {class: p}}]}
or {"path", "error"} for a file that could not be used (its AudioError message).

The posteriors come from `inference.segment_posteriors`: training's eval step and batching
(`ssa_jax/inference.py`); a trained fold's validation set is evaluated by `ssa_jax/evaluate.py`
(`bin.evaluate`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Sequence

import ml_collections

from ssa_jax import features, inference, models, rundir, serving
# Re-exported: the light runtime (`ssa_jax.serving`, `ssa_jax.frontend`) owns them.
from ssa_jax.frontend import NORMS, normalize_utterance  # noqa: F401
from ssa_jax.serving import AUDIO_EXTENSIONS, find_audio_files, format_result  # noqa: F401


@dataclasses.dataclass(frozen=True)
class Predictor:
  """A trained model ready for inference.

  model: the flax module (`models.build_model(config.model)`); variables: {"params",
  "batch_stats"}; config: the run's full config; classes: class names in logit order;
  stats: the training speaker statistics (`features.SpeakerStats`; needed for norm="train").
  """
  model: Any
  variables: Mapping[str, Any]
  config: ml_collections.ConfigDict
  classes: tuple[str, ...]
  stats: features.SpeakerStats | None = None
  step: int | None = None  # the checkpoint's training step, if restored


# --------------------------------------------------------------------------- restoring a fold


def load_predictor(fold_dir: str | os.PathLike) -> Predictor:
  """A `Predictor` for a trained fold `<workdir>/fold<K>`: its best checkpoint (validation UAR),
  `rundir.FoldDir.best_checkpoint()`.

  Raises:
    ValueError: not a fold directory, no checkpoint, or an unreadable one (message names the path).
  """
  best = rundir.FoldDir(fold_dir).best_checkpoint()
  return Predictor(models.build_model(best["config"].model), best["variables"], best["config"],
                   tuple(best["classes"]), best["stats"], int(best["step"]))


# --------------------------------------------------------------------------- files


def default_norm(config: ml_collections.ConfigDict) -> str:
  """The run's normalisation for a new speaker: "train" if `features.norm_fallback` is "global",
  else "self"."""
  return "train" if config.features.get("norm_fallback") == "global" else "self"


def audio_model(predictor: Predictor, batch_size: int | None = None) -> serving.Model:
  """The `serving.Model` (audio -> results) of a predictor: the run's front end
  (`features.compute`) and `inference.segment_posteriors` in batches of `batch_size` segments
  (None: `config.train.eval_batch_size`)."""
  cfg = predictor.config
  fcfg = cfg.features
  batch_size = int(cfg.train.eval_batch_size) if batch_size is None else batch_size
  return serving.Model(
      fe=features.FrontEnd.from_config(fcfg), segment_frames=int(fcfg.segment_frames),
      min_segment_frames=int(fcfg.min_segment_frames), classes=tuple(predictor.classes),
      features=lambda waves: features.compute(waves, fcfg),
      posteriors=lambda segs, mask: inference.segment_posteriors(
          predictor.model, predictor.variables, segs, mask, batch_size),
      stats=predictor.stats, pooling=str(cfg.train.pooling), norm="self")


def predict_files(predictor: Predictor, paths: Sequence[str | os.PathLike], norm: str = "self",
                  pooling: str | None = None, batch_size: int | None = None) -> list[dict[str, Any]]:
  """Predictions for each file, in order; unusable files give `{"path", "error"}` entries
  (`serving.Model.predict_files` of `audio_model(predictor, batch_size)`).

  Args:
    predictor: from `load_predictor` (or built by hand).
    paths: audio files.
    norm: "self" | "train" (module docstring).
    pooling: "max" | "mean"; None: the run's `config.train.pooling`.
    batch_size: segments per model call; None: `config.train.eval_batch_size`.
  """
  return audio_model(predictor, batch_size).predict_files(paths, norm=norm, pooling=pooling)
