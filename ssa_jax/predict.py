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

`run_segments` (segments -> posteriors and model aux outputs, batched in power-of-two shapes so
that a short file does not run a whole evaluation batch) computes the posteriors with training's
`train.eval_outputs`; a trained fold's validation set is evaluated by `fold.evaluate`
(`bin.evaluate`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import ml_collections
import numpy as np

from ssa_jax import audio, features, metrics, models

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


def _fold_dir_error(fold_dir: str, problem: str) -> ValueError:
  hint = ""
  if os.path.isdir(fold_dir):
    folds = sorted(d for d in os.listdir(fold_dir) if d.startswith("fold")
                   and os.path.isdir(os.path.join(fold_dir, d)))
    if folds:
      hint = f" (it looks like a run directory: pass one of its folds, e.g. {os.path.join(fold_dir, folds[0])})"
  return ValueError(f"{fold_dir}: {problem}{hint}")


def load_run_config(fold_dir: str | os.PathLike) -> ml_collections.ConfigDict:
  """The config a fold trained with (`<fold_dir>/config.json`, written by `train`)."""
  fold_dir = os.fspath(fold_dir)
  path = os.path.join(fold_dir, "config.json")
  if not os.path.isfile(path):
    raise _fold_dir_error(fold_dir, "not a trained fold directory (no config.json)")
  try:
    with open(path, encoding="utf-8") as f:
      return ml_collections.ConfigDict(json.load(f))
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{path}: not a valid config file ({e})") from e


def load_predictor(fold_dir: str | os.PathLike) -> Predictor:
  """A `Predictor` for a trained fold `<workdir>/fold<K>`: its best checkpoint (validation UAR),
  through `checkpointing.load_best` (the layout `ssa_jax.train` writes).

  Raises:
    ValueError: not a fold directory, no checkpoint, or an unreadable one (message names the path).
  """
  from ssa_jax import checkpointing  # pylint: disable=g-import-not-at-top  (orbax is slow to import)
  fold_dir = os.path.abspath(os.path.expanduser(os.fspath(fold_dir)))
  load_run_config(fold_dir)  # a clear error for a run directory or a missing folder
  try:
    best = checkpointing.load_best(fold_dir)
  except FileNotFoundError as e:
    raise _fold_dir_error(fold_dir, f"{e} (has this fold been trained?)") from e
  except Exception as e:  # pylint: disable=broad-except  # orbax: any unreadable file
    raise ValueError(f"{fold_dir}: the best checkpoint is unreadable "
                     f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})") from e
  config, classes = best["config"], tuple(best["classes"])
  if int(config.model.num_classes) != len(classes):
    raise ValueError(f"{fold_dir}: config.json has {config.model.num_classes} classes, the "
                     f"checkpoint {len(classes)} ({classes})")
  return Predictor(models.build_model(config.model), best["variables"], config, classes,
                   best["stats"], int(best["step"]))


# --------------------------------------------------------------------------- model over segments


def _apply_fn(model: Any) -> Callable:
  """jit: (variables, x (B, T, M, C), mask (B, T)) -> (posteriors (B, K) float32, aux): the
  posteriors of training's evaluation (`train.eval_outputs`), compiled with its eval step's XLA
  options (`xla_options.step_compiler_options`)."""
  from ssa_jax import xla_options, train  # pylint: disable=g-import-not-at-top

  @functools.partial(jax.jit, compiler_options=xla_options.step_compiler_options())
  def apply(variables, x, mask):
    logits, aux = model.apply(variables, x, mask, train=False)
    return train.eval_outputs(logits, aux)["probs"], aux
  return apply


def _batch_rows(n: int, batch_size: int) -> int:
  """Rows of the fixed batch shape: the next power of two >= n, at most `batch_size`."""
  rows = 1
  while rows < min(n, batch_size):
    rows *= 2
  return min(rows, max(batch_size, 1))


def run_segments(model: Any, variables: Mapping[str, Any], segments: np.ndarray, mask: np.ndarray,
                 batch_size: int = 40, aux_keys: Sequence[str] | None = ()) -> tuple[np.ndarray,
                                                                                 dict[str, np.ndarray]]:
  """The model in evaluation mode over many segments, in fixed-shape batches (one compilation).

  Args:
    model, variables: flax module and its variables.
    segments: (N, T, M, C) normalised features; mask: (N, T) bool real frames.
    batch_size: most rows per call; the last batch is filled with zero rows (discarded).
    aux_keys: which `aux` outputs to return, concatenated over segments; None for all.

  Returns:
    probs (N, K) float64 softmax posteriors; aux {key: (N, ...) numpy}.
  """
  segments = np.asarray(segments, np.float32)
  mask = np.asarray(mask, bool)
  if segments.ndim != 4 or mask.shape != segments.shape[:2]:
    raise ValueError(f"segments must be (N, T, M, C) with mask (N, T), got {segments.shape} and "
                     f"{mask.shape}")
  n = segments.shape[0]
  if n == 0:
    raise ValueError("no segments to run the model on")
  rows = _batch_rows(n, batch_size)
  apply = _apply_fn(model)
  probs, aux_out = [], {}
  for start in range(0, n, rows):
    x = np.zeros((rows,) + segments.shape[1:], np.float32)
    m = np.zeros((rows, segments.shape[1]), bool)
    k = min(rows, n - start)
    x[:k], m[:k] = segments[start:start + k], mask[start:start + k]
    if k < rows:
      m[k:, 0] = True  # keep padding rows well defined (one real frame); they are discarded
    p, aux = jax.device_get(apply(variables, x, m))
    probs.append(np.asarray(p, np.float64)[:k])
    keys = aux.keys() if aux_keys is None else aux_keys
    for key in keys:
      if key in aux:
        aux_out.setdefault(key, []).append(np.asarray(aux[key])[:k])
  return np.concatenate(probs), {k: np.concatenate(v) for k, v in aux_out.items()}


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
                  pooling: str | None = None, batch_size: int | None = None) -> list[dict[str, Any]]:
  """Predictions for each file, in order; unusable files give `{"path", "error"}` entries.

  Args:
    predictor: from `load_predictor` (or built by hand).
    paths: audio files.
    norm: "self" | "train" (module docstring).
    pooling: "max" | "mean"; None: the run's `config.train.pooling`.
    batch_size: segments per model call; None: `config.train.eval_batch_size`.
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
  probs, _ = run_segments(predictor.model, predictor.variables, segs, mask, batch_size)
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
