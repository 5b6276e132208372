"""Emotion prediction for arbitrary audio files with a trained fold (docs/DESIGN.md §8).

  predictor = load_predictor(fold_dir)               # best checkpoint of <workdir>/fold<K>
  results = predict_files(predictor, paths, norm="self", pooling=None)

Each file goes through the training front end: `audio.load_audio` (any sample rate, mono or
multi-channel, >= 0.1 s) -> log-Mel + Δ + ΔΔ -> 3 s segments -> speaker normalisation -> the model
in evaluation mode -> per-segment softmax posteriors (N_f, K) -> the utterance decision, pooled
from its own segments as in training (`config.train.pooling`: max | mean, `metrics.pool_posteriors`).

Normalisation (`norm`): "self" uses the file's own statistics (a new speaker, docs/DESIGN.md §2), "train"
the global statistics of the training speakers saved with the checkpoint.

A result per file is a dict (JSON-serialisable):
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
from typing import Any, Iterable, Mapping, Sequence

import ml_collections
import numpy as np

from ssa_jax import audio, features, inference, metrics, models, parallel, rundir
from ssa_jax import enroll as enroll_lib

NORMS = ("self", "train")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif", ".aifc", ".au", ".snd",
                    ".caf", ".w64", ".rf64", ".mp3", ".opus", ".sph", ".nist", ".voc")


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


# --------------------------------------------------------------------------- front end


def normalize_utterance(segs: np.ndarray, mask: np.ndarray, norm: str,
                        stats: features.SpeakerStats | None) -> np.ndarray:
  """Speaker normalisation of one file's segments: its own statistics ("self") or the training
  global statistics ("train")."""
  speakers = np.zeros(segs.shape[0], np.int64)
  if norm == "self":
    own = features.fit_speaker_stats(segs, mask, speakers)
    return features.normalize(segs, mask, speakers, own)
  if norm == "train":
    if stats is None:
      raise ValueError("norm='train' needs the training statistics saved with the checkpoint")
    # No known speaker: every file falls back to the training global statistics.
    empty = dataclasses.replace(stats, speakers=(), mean=stats.mean[:0], std=stats.std[:0],
                                frames=stats.frames[:0])
    return features.normalize(segs, mask, speakers, empty, fallback="global")
  raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")


# --------------------------------------------------------------------------- files


def find_audio_files(paths: Iterable[str | os.PathLike]) -> list[str]:
  """Files as given, folders searched recursively for audio files (by extension, sorted; hidden
  files such as macOS `._*` skipped). A path that does not exist is kept, to be reported."""
  out = []
  for p in paths:
    p = os.fspath(p)
    if os.path.isdir(p):
      found = []
      for root, dirs, files in os.walk(p):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(root, f) for f in files
                  if not f.startswith(".") and f.lower().endswith(AUDIO_EXTENSIONS)]
      out += sorted(found)
    else:
      out.append(p)
  return out


def _probs_dict(classes: Sequence[str], p: np.ndarray) -> dict[str, float]:
  return {c: float(v) for c, v in zip(classes, p)}


def predict_files(predictor: Predictor, paths: Sequence[str | os.PathLike], norm: str = "self",
                  pooling: str | None = None, batch_size: int | None = None,
                  enroll_context: np.ndarray | None = None) -> list[dict[str, Any]]:
  """Predictions for each file, in order; unusable files give `{"path", "error"}` entries.

  Args:
    predictor: from `load_predictor` (or built by hand).
    paths: audio files.
    norm: "self" | "train" (module docstring).
    pooling: "max" | "mean"; None: the run's `config.train.pooling`.
    batch_size: segments per model call; None: `config.train.eval_batch_size`.
    enroll_context: (J, d) pooled speaker states of the speaker's enrollment files
      (`enrollment_context`); every segment's SSA also attends to them.
  """
  cfg = predictor.config
  fcfg = cfg.features
  pooling = str(cfg.train.pooling) if pooling is None else pooling
  if pooling not in metrics.POOLING:
    raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(metrics.POOLING)}")
  if norm not in NORMS:
    raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")
  if norm == "train" and predictor.stats is None:
    raise ValueError("norm='train' needs the training statistics saved with the checkpoint")
  batch_size = int(cfg.train.eval_batch_size) if batch_size is None else batch_size
  sr, win, hop = int(fcfg.sample_rate), int(fcfg.win_length), int(fcfg.hop_length)
  seg_frames = int(fcfg.segment_frames)
  classes = tuple(predictor.classes)

  results: list[dict[str, Any]] = [{"path": os.fspath(p)} for p in paths]
  waves, good = [], []
  for i, p in enumerate(paths):
    try:
      w = audio.load_audio(p, sr)
    except audio.AudioError as e:
      results[i]["error"] = str(e)
      continue
    if w.shape[0] < win:
      results[i]["error"] = str(audio.AudioError(p, f"too short for one analysis window "
                                                    f"({w.shape[0]} < {win} samples at {sr} Hz)"))
      continue
    waves.append(w)
    good.append(i)

  seg_list, mask_list, seg_file = [], [], []
  for i, w, f in zip(good, waves, features.compute(waves, fcfg)):
    segs, mask = features.segment(f, seg_frames, int(fcfg.min_segment_frames))
    segs = normalize_utterance(segs, mask, norm, predictor.stats)
    seg_list.append(segs)
    mask_list.append(mask)
    seg_file.append(np.full(segs.shape[0], i))
    results[i]["duration_s"] = float(w.shape[0]) / sr
  if not seg_list:
    return results

  segs, mask, seg_file = np.concatenate(seg_list), np.concatenate(mask_list), np.concatenate(seg_file)
  probs = inference.segment_posteriors(predictor.model, predictor.variables, segs, mask,
                                       batch_size, enroll_context=enroll_context)
  frame_s = hop / sr
  for i in good:
    rows = np.flatnonzero(seg_file == i)
    p = probs[rows]
    scores = metrics.pool_posteriors(p, np.zeros(len(rows), np.int64), 1, pooling)[0]
    utt = scores / scores.sum()
    segments = []
    for k, r in enumerate(rows):
      real = int(mask[r].sum())
      segments.append({"index": k, "start_s": k * seg_frames * frame_s,
                       "end_s": (k * seg_frames + real) * frame_s,
                       "label": classes[int(np.argmax(probs[r]))],
                       "probabilities": _probs_dict(classes, probs[r])})
    results[i].update({"label": classes[int(np.argmax(scores))],
                       "probabilities": _probs_dict(classes, utt),
                       "scores": _probs_dict(classes, scores), "pooling": pooling, "norm": norm,
                       "segments": segments})
  return results


def format_result(r: Mapping[str, Any]) -> str:
  """One human-readable block per file (the error line for a failed one)."""
  if "error" in r:
    return f"ERROR {r['error']}"
  probs = "  ".join(f"{c} {100 * p:5.1f}%" for c, p in r["probabilities"].items())
  lines = [f"{r['path']}: {r['label']}  ({probs})  [{r['pooling']} pooling over "
           f"{len(r['segments'])} segment(s), {r['duration_s']:.2f} s, norm={r['norm']}]"]
  for s in r["segments"]:
    sp = "  ".join(f"{c} {100 * p:5.1f}%" for c, p in s["probabilities"].items())
    lines.append(f"  segment {s['index']} [{s['start_s']:.2f}-{s['end_s']:.2f} s]: "
                 f"{s['label']}  ({sp})")
  return "\n".join(lines)


# --------------------------------------------------------------------------- enrollment


def enrollment_context(predictor: Predictor, paths: Sequence[str | os.PathLike],
                       norm: str = "self", batch_size: int | None = None) -> np.ndarray:
  """Enrollment (`model.enroll_k` > 0; docs/DESIGN.md "Beyond the paper"): (J, d) float32, one
  pooled speaker-branch state per file of `paths` (J files of unlabelled speech of the person
  whose files are then predicted, `predict_files(..., enroll_context=)`). Each file goes through
  the front end of `predict_files` (the same `norm`), the speaker branch alone pools each segment
  (`models.speaker_states`) and the file's state is the mean over its segments.

  Raises:
    ValueError: a model trained without enrollment (model.enroll_k = 0, or ACRNN: its SSA never
      learned to read enrollment entries), or files that cannot be used (one line naming each,
      its AudioError message): enrollment is all or nothing.
  """
  cfg = predictor.config
  if enroll_lib.enroll_k(cfg.model) == 0:
    raise ValueError(f"--enroll needs a model trained with enrollment (model.name='ssa_crnn', "
                     f"model.enroll_k > 0); this one has model.name={cfg.model.name!r}, "
                     f"model.enroll_k={cfg.model.get('enroll_k', 0)}")
  fcfg = cfg.features
  sr, win = int(fcfg.sample_rate), int(fcfg.win_length)
  waves, errors = [], []
  for p in paths:
    try:
      w = audio.load_audio(p, sr)
      if w.shape[0] < win:
        raise audio.AudioError(p, f"too short for one analysis window ({w.shape[0]} < {win} "
                                  f"samples at {sr} Hz)")
      waves.append(w)
    except audio.AudioError as e:
      errors.append(str(e))
  if errors or not waves:
    raise ValueError(f"enrollment file(s) unusable: {'; '.join(errors) or 'none given'}")
  segs, masks, group = [], [], []
  for j, f in enumerate(features.compute(waves, fcfg)):
    s, m = features.segment(f, int(fcfg.segment_frames), int(fcfg.min_segment_frames))
    segs.append(normalize_utterance(s, m, norm, predictor.stats))
    masks.append(m)
    group.append(np.full(s.shape[0], j))
  segs, masks = np.concatenate(segs), np.concatenate(masks)
  mesh = parallel.make_mesh()
  batch_size = int(cfg.train.eval_batch_size) if batch_size is None else batch_size
  return inference.enrollment_contexts(
      inference.make_states_step(predictor.model, mesh), predictor.variables, segs, masks,
      np.concatenate(group), len(waves),
      inference.batch_rows(len(segs), batch_size, mesh.devices.size), mesh)
