"""Emotion prediction and embeddings for audio files and arrays with a trained fold (docs/DESIGN.md §8).

  predictor = load_predictor(fold_dir)                      # best checkpoint of <workdir>/fold<K>
  results = predict_files(predictor, paths, norm="self", pooling=None)    # [{path, label, ...}]
  for r in iter_predict_files(predictor, paths): ...        # the same, one result as each file ends
  results = predict_waves(predictor, waves, sample_rate)    # arrays: [{name, label, ...}]
  vectors = embed(predictor, paths)                         # or embed(predictor, waves, sample_rate)

Each utterance goes through the training front end: mono float32 at 16 kHz (`audio`: any sample
rate, mono or multi-channel, >= 0.1 s) -> log-Mel + Δ + ΔΔ -> 3 s segments -> speaker
normalisation -> the model in evaluation mode (`inference`: the eval step training uses, built once
per predictor) -> per-segment softmax posteriors (N_f, K) and embeddings -> the utterance decision,
pooled from its own segments as in training (`config.train.pooling`: max | mean,
`metrics.pool_posteriors`).

Normalisation (`norm`): "self" uses the utterance's own statistics (a new speaker, docs/DESIGN.md
§2), "train" the global statistics of the training speakers saved with the checkpoint.

Files (`file_outputs`): a file up to `stream_above_s` (300 s) long is read whole; consecutive such
files are run together, about one evaluation batch of segments at a time, through the in-memory
path (`wave_outputs`, which `predict_waves` uses). A longer file is streamed in bounded memory:
read in blocks (`audio.read_blocks`, soxr's streaming resampler), features computed a chunk of
`block_segments` segments at a time with enough context that every frame equals the whole-file
computation (`features.stream_features`), each chunk normalised and run through the model, only the
outputs kept (a few KiB a segment). With norm="self" such a file is read twice: a first pass
computes its statistics (features only), the second normalises and predicts.

A prediction (`predict_*`) is a dict (JSON-serialisable):
  {"path" (files) or "name" (arrays), "label", "probabilities": {class: p} (sum 1; for max
   pooling the pooled maxima renormalised), "scores": {class: pooled score}, "pooling", "norm",
   "duration_s", "segments": [{"index", "start_s", "end_s", "label", "probabilities": {class: p}}]}
or {"path", "error"} for a file that could not be used (its AudioError message). The segments are
the timeline: consecutive 3 s, the last one ending at the last real frame.

An embedding (`embed`) is a dict of numpy arrays: {"path" / "name", "z_em" (E,), "z_em_segments"
(n, E), SSA-CRNN also "z_sp" (E,) and "z_sp_segments" (n, E), "start_s" (n,), "end_s" (n,)}, or
{"path", "error"}. The utterance vector is the unweighted mean of its segments' vectors (every
kept segment has at least `features.min_segment_frames` real frames), as
`speaker_eval.pool_segments` pools them for the speaker probes.
"""

from __future__ import annotations

import csv
import dataclasses
import io as _stdio
import os
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import jax
import ml_collections
import numpy as np

from ssa_jax import audio, features, inference, io, metrics, models, parallel, rundir, serving
from ssa_jax import enroll as enroll_lib
from ssa_jax import speaker_eval
# Re-exported: the light runtime (`ssa_jax.serving`, `ssa_jax.frontend`) owns them.
from ssa_jax.frontend import NORMS, normalize_utterance  # noqa: F401
from ssa_jax.serving import AUDIO_EXTENSIONS, find_audio_files, format_result  # noqa: F401

FORMATS = ("table", "json", "jsonl", "csv")  # `Formatter`
EMBEDDINGS = speaker_eval.EMBEDDINGS  # ("z_sp", "z_em"): the model's embeddings (aux outputs)
STREAM_ABOVE_S = 300.0  # files longer than this (seconds) are streamed in blocks

@dataclasses.dataclass(frozen=True)
class Predictor:
  """A trained model ready for inference.

  model: the flax module (`models.build_model(config.model)`); variables: {"params",
  "batch_stats"}; config: the run's full config; classes: class names in logit order;
  stats: the training speaker statistics (`features.SpeakerStats`; needed for norm="train").
  The jitted eval steps (`eval_fn`) and the enrollment states step (`states_fn`) are built on
  first use and kept here, so repeated calls with the same predictor do not compile again.
  """
  model: Any
  variables: Mapping[str, Any]
  config: ml_collections.ConfigDict
  classes: tuple[str, ...]
  stats: features.SpeakerStats | None = None
  step: int | None = None  # the checkpoint's training step, if restored
  _eval_fns: dict = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)

  def eval_fn(self, aux_keys: Sequence[str] = ()) -> tuple[Callable, jax.sharding.Mesh]:
    """(`inference.make_eval_step(model, mesh, aux_keys)`, its mesh over all devices), built
    once per `aux_keys`."""
    key = tuple(aux_keys)
    if key not in self._eval_fns:
      mesh = parallel.make_mesh()
      self._eval_fns[key] = (inference.make_eval_step(self.model, mesh, aux_keys=key), mesh)
    return self._eval_fns[key]

  def states_fn(self) -> tuple[Callable, jax.sharding.Mesh]:
    """(`inference.make_states_step(model, mesh)`, its mesh): the speaker branch's pooled states
    for enrollment files, built once per predictor like `eval_fn`."""
    if "states" not in self._eval_fns:
      mesh = parallel.make_mesh()
      self._eval_fns["states"] = (inference.make_states_step(self.model, mesh), mesh)
    return self._eval_fns["states"]


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


def default_norm(config: ml_collections.ConfigDict) -> str:
  """The run's normalisation for a new speaker: "train" if `features.norm_fallback` is "global",
  else "self"."""
  return "train" if config.features.get("norm_fallback") == "global" else "self"


@dataclasses.dataclass(frozen=True)
class Options:
  """Checked prediction settings: norm "self" | "train", pooling "max" | "mean", batch_size
  (segments per model call), aux_keys (model outputs kept beside probs, e.g. EMBEDDINGS),
  enroll_context (J, d) or None (enrollment: `enrollment_context`; every segment's SSA also
  attends to these pooled speaker states)."""
  norm: str
  pooling: str
  batch_size: int
  aux_keys: tuple[str, ...] = ()
  enroll_context: np.ndarray | None = dataclasses.field(default=None, compare=False)


def options(predictor: Predictor, norm: str = "self", pooling: str | None = None,
            batch_size: int | None = None, aux_keys: Sequence[str] = (),
            enroll_context: np.ndarray | None = None) -> Options:
  """`Options` with the run's defaults (pooling: `config.train.pooling`, batch_size:
  `config.train.eval_batch_size`). Raises ValueError for an unknown norm or pooling, or norm
  "train" without training statistics."""
  cfg = predictor.config
  pooling = str(cfg.train.pooling) if pooling is None else pooling
  if pooling not in metrics.POOLING:
    raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(metrics.POOLING)}")
  if norm not in NORMS:
    raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")
  if norm == "train" and predictor.stats is None:
    raise ValueError("norm='train' needs the training statistics saved with the checkpoint")
  batch_size = int(cfg.train.eval_batch_size) if batch_size is None else int(batch_size)
  if batch_size <= 0:
    raise ValueError(f"batch_size must be > 0, got {batch_size}")
  return Options(norm, pooling, batch_size, tuple(aux_keys), enroll_context)


# --------------------------------------------------------------------------- model outputs


@dataclasses.dataclass(frozen=True)
class UtteranceOutputs:
  """One utterance's model outputs: name (its path or name), key ("path" | "name"), duration_s
  (at the model's rate), mask (n, T) bool (its segments' real frames), outputs {"probs" (n, K),
  and the Options' aux_keys the model returns, e.g. "z_em" (n, E)}; or error (then nothing else)."""
  name: str
  key: str = "name"
  duration_s: float = 0.0
  mask: np.ndarray | None = None
  outputs: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
  error: str | None = None


def _run(predictor: Predictor, opts: Options, segs: np.ndarray,
         mask: np.ndarray) -> dict[str, np.ndarray]:
  eval_fn, mesh = predictor.eval_fn(opts.aux_keys)
  return inference.segment_outputs(eval_fn, predictor.variables, segs, mask, opts.batch_size, mesh,
                                   opts.enroll_context)


def _too_short(name: str, samples: int, fcfg: ml_collections.ConfigDict) -> audio.AudioError:
  return audio.AudioError(name, f"too short for one analysis window ({samples} < "
                          f"{int(fcfg.win_length)} samples at {int(fcfg.sample_rate)} Hz)")


def _outputs_of_waves(predictor: Predictor, opts: Options, waves: Sequence[np.ndarray],
                      names: Sequence[str], key: str) -> list[UtteranceOutputs]:
  """Mono float32 waves at the model's rate, run together: features, segments, normalisation,
  one `segment_outputs` call over all their segments, split back per wave."""
  fcfg = predictor.config.features
  sr, seg_frames = int(fcfg.sample_rate), int(fcfg.segment_frames)
  results: list[UtteranceOutputs | None] = [None] * len(waves)
  good = []
  for i, w in enumerate(waves):
    if w.shape[0] < int(fcfg.win_length):
      results[i] = UtteranceOutputs(names[i], key, error=str(_too_short(names[i], w.shape[0], fcfg)))
    else:
      good.append(i)
  segs, masks = [], []
  for f in features.compute([waves[i] for i in good], fcfg):
    s, m = features.segment(f, seg_frames, int(fcfg.min_segment_frames))
    segs.append(normalize_utterance(s, m, opts.norm, predictor.stats))
    masks.append(m)
  if good:
    out = _run(predictor, opts, np.concatenate(segs), np.concatenate(masks))
    ends = np.cumsum([m.shape[0] for m in masks])
    for i, m, stop in zip(good, masks, ends):
      rows = slice(stop - m.shape[0], stop)
      results[i] = UtteranceOutputs(names[i], key, waves[i].shape[0] / sr, m,
                                    {k: v[rows] for k, v in out.items()})
  return results  # type: ignore[return-value]


def _as_list(waves: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
  """One array (1-D, or 2-D (samples, channels)) or a sequence of arrays -> a list of arrays."""
  if isinstance(waves, np.ndarray) and waves.dtype != object:
    return [waves]
  return [np.asarray(w) for w in waves]


def wave_outputs(predictor: Predictor, waves: np.ndarray | Sequence[np.ndarray], sample_rate: int,
                 names: Sequence[str] | None = None, opts: Options | None = None
                 ) -> list[UtteranceOutputs]:
  """`UtteranceOutputs` of in-memory waves (see `predict_waves`); every array is checked before
  the model runs.

  Raises:
    ValueError (`audio.AudioError`): a bad array; the message starts with its name (names[i],
      default "wave[i]") and says what is wrong.
  """
  opts = options(predictor) if opts is None else opts
  waves = _as_list(waves)
  names = [f"wave[{i}]" for i in range(len(waves))] if names is None else [str(n) for n in names]
  if len(names) != len(waves):
    raise ValueError(f"{len(names)} names for {len(waves)} waves")
  sr = int(predictor.config.features.sample_rate)
  ready = []
  for w, name in zip(waves, names):
    if w.ndim == 2 and w.shape[0] < w.shape[1]:
      raise audio.AudioError(name, f"shape {w.shape} looks like (channels, samples); pass "
                             "(samples, channels), e.g. wave.T")
    ready.append(audio.prepare_wave(w, name, sample_rate, sr))
    if ready[-1].shape[0] < int(predictor.config.features.win_length):
      raise _too_short(name, ready[-1].shape[0], predictor.config.features)
  return _outputs_of_waves(predictor, opts, ready, names, "name")


def _stream_segments(predictor: Predictor, path: str, block_segments: int, read: list[int]
                     ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """A file's raw segments in order, `block_segments` at a time: (segments (n, T, M, C), mask
  (n, T)), equal to `features.segment(compute(whole file))`'s: full segments, then the tail kept
  by the same rule. `read[0]` counts the samples read so far (at the model's rate)."""
  fcfg = predictor.config.features
  sr, seg_frames, min_frames = (int(fcfg.sample_rate), int(fcfg.segment_frames),
                                int(fcfg.min_segment_frames))
  read[0] = 0

  def counted(blocks):
    for b in blocks:
      read[0] += b.shape[0]
      yield b

  chunks = features.stream_features(counted(audio.read_blocks(path, sr)), fcfg,
                                    block_segments * seg_frames)
  for first, f in chunks:
    if first > 0 and f.shape[0] < min_frames:
      continue  # the whole file's short tail, dropped as `features.segment` drops it
    yield features.segment(f, seg_frames, min_frames)
  if read[0] < int(fcfg.win_length):
    raise _too_short(path, read[0], fcfg)


def _outputs_of_stream(predictor: Predictor, opts: Options, path: str, block_segments: int,
                       progress: Callable[[float], None] | None) -> UtteranceOutputs:
  """A long file in bounded memory (module docstring): its statistics first (norm "self"), then
  the model over each chunk of segments; only the outputs are kept."""
  sr = int(predictor.config.features.sample_rate)
  read = [0]
  own = None
  if opts.norm == "self":
    own = features.stats_of_moments(features.combine_moments(
        [features.frame_moments(s, m)
         for s, m in _stream_segments(predictor, path, block_segments, read)]))
  outs, masks, done = [], [], 0
  for s, m in _stream_segments(predictor, path, block_segments, read):
    outs.append(_run(predictor, opts, normalize_utterance(s, m, opts.norm, predictor.stats, own), m))
    masks.append(m)
    if progress is not None:
      progress((read[0] - done) / sr)
      done = read[0]
  return UtteranceOutputs(path, "path", read[0] / sr, np.concatenate(masks),
                          {k: np.concatenate([o[k] for o in outs]) for k in outs[0]})


def file_outputs(predictor: Predictor, paths: Iterable[str | os.PathLike],
                 opts: Options | None = None, stream_above_s: float = STREAM_ABOVE_S,
                 block_segments: int | None = None,
                 progress: Callable[[float], None] | None = None) -> Iterator[UtteranceOutputs]:
  """`UtteranceOutputs` of each file, in order, yielded as soon as it is done; an unusable file
  gives one with its error (the others are still run).

  Files up to `stream_above_s` seconds are read whole and run together through the in-memory
  path, about one batch of segments of audio at a time; longer ones are streamed,
  `block_segments` segments at a time (default: the batch size). `progress(seconds)` is called
  with the seconds of audio done (per group of short files, per chunk of a streamed one).
  """
  opts = options(predictor) if opts is None else opts
  fcfg = predictor.config.features
  sr = int(fcfg.sample_rate)
  segment_s = int(fcfg.segment_frames) * int(fcfg.hop_length) / sr
  block_segments = opts.batch_size if block_segments is None else int(block_segments)
  pending: list[tuple[str, np.ndarray | audio.AudioError]] = []

  def flush() -> Iterator[UtteranceOutputs]:
    names = [p for p, w in pending if isinstance(w, np.ndarray)]
    waves = [w for _, w in pending if isinstance(w, np.ndarray)]
    done = iter(_outputs_of_waves(predictor, opts, waves, names, "path"))
    for p, w in pending:
      yield next(done) if isinstance(w, np.ndarray) else UtteranceOutputs(p, "path", error=str(w))
    if progress is not None and waves:
      progress(sum(w.shape[0] for w in waves) / sr)
    pending.clear()

  for p in paths:
    p = os.fspath(p)
    try:
      seconds = audio.duration(p)
      if seconds > stream_above_s:
        yield from flush()
        yield _outputs_of_stream(predictor, opts, p, block_segments, progress)
        continue
      pending.append((p, audio.load_audio(p, sr)))
    except audio.AudioError as e:
      pending.append((p, e))
    if sum(w.shape[0] for _, w in pending if isinstance(w, np.ndarray)) >= (
        opts.batch_size * segment_s * sr):
      yield from flush()
  yield from flush()


# --------------------------------------------------------------------------- results


def prediction(u: UtteranceOutputs, classes: Sequence[str], opts: Options,
               config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The prediction dict (module docstring) of one utterance's outputs
  (`serving.prediction_dict`, which the light runtime builds its results with)."""
  if u.error is not None:
    return {u.key: u.name, "error": u.error}
  fcfg = config.features
  return serving.prediction_dict(
      u.key, u.name, u.outputs["probs"], u.mask, u.duration_s, classes, opts.pooling, opts.norm,
      int(fcfg.segment_frames), int(fcfg.hop_length) / int(fcfg.sample_rate))


def embedding(u: UtteranceOutputs, config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The embedding dict (module docstring) of one utterance's outputs (run with
  aux_keys=EMBEDDINGS)."""
  if u.error is not None:
    return {u.key: u.name, "error": u.error}
  fcfg = config.features
  seg_frames, frame_s = int(fcfg.segment_frames), int(fcfg.hop_length) / int(fcfg.sample_rate)
  n = u.mask.shape[0]
  out: dict[str, Any] = {u.key: u.name,
                         "start_s": np.arange(n) * seg_frames * frame_s,
                         "end_s": (np.arange(n) * seg_frames + u.mask.sum(axis=1)) * frame_s}
  for k in EMBEDDINGS:
    if k in u.outputs:
      seg = np.asarray(u.outputs[k], np.float32)
      out[k] = speaker_eval.pool_segments(seg, np.zeros(n, np.int64), 1)[0].astype(np.float32)
      out[k + "_segments"] = seg
  return out


def predict_waves(predictor: Predictor, waves: np.ndarray | Sequence[np.ndarray],
                  sample_rate: int, names: Sequence[str] | None = None, norm: str = "self",
                  pooling: str | None = None, batch_size: int | None = None
                  ) -> list[dict[str, Any]]:
  """Predictions for in-memory waves, in order: each dict as `predict_files`'s with "name"
  (names[i], default "wave[i]") instead of "path".

  Args:
    waves: one array or a sequence of arrays, each `(S,)` mono or `(S, C)` (samples, channels),
      floats in [-1, 1] or signed integers, all at `sample_rate` Hz (resampled to the model's).
    norm, pooling, batch_size: as `predict_files`.

  Raises:
    ValueError (`audio.AudioError`): a bad array (not (S,) or (S, C), shorter than 0.1 s,
      NaN/inf, all zeros, ...), naming it; nothing is run then.
  """
  opts = options(predictor, norm, pooling, batch_size)
  return [prediction(u, predictor.classes, opts, predictor.config)
          for u in wave_outputs(predictor, waves, sample_rate, names, opts)]


def iter_predict_files(predictor: Predictor, paths: Iterable[str | os.PathLike], norm: str = "self",
                       pooling: str | None = None, batch_size: int | None = None,
                       stream_above_s: float = STREAM_ABOVE_S, block_segments: int | None = None,
                       progress: Callable[[float], None] | None = None,
                       enroll_context: np.ndarray | None = None) -> Iterator[dict[str, Any]]:
  """`predict_files`, one result at a time as each file is done (`file_outputs`)."""
  opts = options(predictor, norm, pooling, batch_size, enroll_context=enroll_context)
  for u in file_outputs(predictor, paths, opts, stream_above_s, block_segments, progress):
    yield prediction(u, predictor.classes, opts, predictor.config)


def predict_files(predictor: Predictor, paths: Sequence[str | os.PathLike], norm: str = "self",
                  pooling: str | None = None, batch_size: int | None = None,
                  stream_above_s: float = STREAM_ABOVE_S, block_segments: int | None = None,
                  enroll_context: np.ndarray | None = None) -> list[dict[str, Any]]:
  """Predictions for each file, in order; unusable files give `{"path", "error"}` entries.

  Args:
    predictor: from `load_predictor` (or built by hand).
    paths: audio files.
    norm: "self" | "train" (module docstring).
    pooling: "max" | "mean"; None: the run's `config.train.pooling`.
    batch_size: segments per model call; None: `config.train.eval_batch_size`.
    stream_above_s: files longer than this are streamed in blocks of `block_segments` segments
      (module docstring); the results are the same either way (to float32 rounding).
    enroll_context: (J, d) pooled speaker states of the speaker's enrollment files
      (`enrollment_context`); every segment's SSA also attends to them.
  """
  return list(iter_predict_files(predictor, paths, norm, pooling, batch_size, stream_above_s,
                                 block_segments, enroll_context=enroll_context))


def embed(predictor: Predictor, waves_or_paths: np.ndarray | Sequence[Any],
          sample_rate: int | None = None, names: Sequence[str] | None = None,
          norm: str = "self", batch_size: int | None = None,
          stream_above_s: float = STREAM_ABOVE_S) -> list[dict[str, Any]]:
  """Embeddings (module docstring) of audio files (`sample_rate` None; a bad file gives an
  {"path", "error"} entry) or in-memory waves (`sample_rate` given; as `predict_waves`, a bad
  array raises ValueError), in order. The same model call as the predictions (the eval step
  with aux_keys=EMBEDDINGS)."""
  opts = options(predictor, norm, None, batch_size, EMBEDDINGS)
  if sample_rate is None:
    paths = [waves_or_paths] if isinstance(waves_or_paths, np.ndarray) else list(waves_or_paths)
    if any(isinstance(x, np.ndarray) for x in paths):
      raise ValueError("embed: arrays need their sample_rate (paths take none)")
    outs = file_outputs(predictor, paths, opts, stream_above_s)
  else:
    outs = wave_outputs(predictor, waves_or_paths, sample_rate, names, opts)
  return [embedding(u, predictor.config) for u in outs]


def stack_embeddings(embeddings: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
  """`embed`'s list as plain arrays (np.savez without pickles; `bin.predict --embeddings`):
  paths (or names) (N,) of the N utterances embedded, in order; z_em (N, E) and z_em_segments
  (n_total, E), SSA-CRNN also z_sp and z_sp_segments; segment_file (n_total,) each segment's row
  in paths; start_s, end_s (n_total,); failed (F,) the paths of the entries with an error (not in
  the others)."""
  good = [e for e in embeddings if "error" not in e]
  key = "path" if any("path" in e for e in embeddings) else "name"
  counts = [len(e["start_s"]) for e in good]
  out = {key + "s": np.asarray([e[key] for e in good], dtype=str),
         "failed": np.asarray([e[key] for e in embeddings if "error" in e], dtype=str),
         "segment_file": np.repeat(np.arange(len(good)), counts).astype(np.int64)}
  for k in ("start_s", "end_s"):
    out[k] = np.concatenate([e[k] for e in good]) if good else np.zeros(0)
  for k in EMBEDDINGS:
    if good and k in good[0]:
      out[k] = np.stack([e[k] for e in good])
      out[k + "_segments"] = np.concatenate([e[k + "_segments"] for e in good])
  return out


# --------------------------------------------------------------------------- files and text


class Formatter:
  """The text of results in one of FORMATS, a piece per file, so that each can be written as
  soon as it is done: `head()`, then `result(r)` for each result in order, then `tail(failed)`.

    table  `format_result`'s block per file (nothing for a failed file: the CLI reports it);
    json   one document {**info, "files": [result, ...], "failed": count};
    jsonl  one JSON object per file per line (the result dict, {"path", "error"} included);
    csv    the timeline: a row per segment, columns path (or name), segment, start_s, end_s,
           label and a probability per class (nothing for a failed file).
  """

  def __init__(self, fmt: str, classes: Sequence[str], info: Mapping[str, Any] | None = None):
    if fmt not in FORMATS:
      raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    self.fmt, self.classes, self.info = fmt, list(classes), dict(info or {})
    self._count = 0

  def head(self) -> str:
    if self.fmt == "csv":
      return _csv_line(["path", "segment", "start_s", "end_s", "label", *self.classes])
    if self.fmt == "json":
      inner = io.dumps(self.info, indent=2)[1:-1].rstrip()  # the info's lines, no braces
      return "{" + inner + ("," if inner else "") + '\n  "files": ['
    return ""

  def result(self, r: Mapping[str, Any]) -> str:
    self._count += 1
    if self.fmt == "json":
      return ("\n    " if self._count == 1 else ",\n    ") + io.dumps(r)
    if self.fmt == "jsonl":
      return io.dumps(r) + "\n"
    if "error" in r:
      return ""
    if self.fmt == "table":
      return format_result(r) + "\n"
    name = r.get("path", r.get("name"))
    return "".join(_csv_line([name, s["index"], f"{s['start_s']:.2f}", f"{s['end_s']:.2f}",
                              s["label"], *(f"{s['probabilities'][c]:.6f}" for c in self.classes)])
                   for s in r["segments"])

  def tail(self, failed: int) -> str:
    return f'\n  ],\n  "failed": {failed}\n}}\n' if self.fmt == "json" else ""


def _csv_line(row: Sequence[Any]) -> str:
  buf = _stdio.StringIO()
  csv.writer(buf, lineterminator="\n").writerow(row)
  return buf.getvalue()


# --------------------------------------------------------------------------- enrollment


def enrollment_context(predictor: Predictor, paths: Sequence[str | os.PathLike],
                       norm: str = "self", batch_size: int | None = None) -> np.ndarray:
  """Enrollment (`model.enroll_k` > 0; docs/DESIGN.md "Beyond the paper"): (J, d) float32, one
  pooled speaker-branch state per file of `paths` (J files of unlabelled speech of the person
  whose files are then predicted, `predict_files(..., enroll_context=)`). Each file goes through
  the front end of the predictions (the same `norm`), the speaker branch alone pools each segment
  (`models.speaker_states`) and the file's state is the mean over its segments.

  Raises:
    ValueError: a model trained without enrollment (model.enroll_k = 0, or ACRNN: its SSA never
      learned to read enrollment entries), or files that cannot be used (one line naming each,
      its AudioError message): enrollment is all or nothing.
  """
  cfg = predictor.config
  enroll_lib.check_enrollable(cfg.model)
  opts = options(predictor, norm, None, batch_size)
  fcfg = cfg.features
  waves, errors = [], []
  for p in paths:
    try:
      w = audio.load_audio(p, int(fcfg.sample_rate))
      if w.shape[0] < int(fcfg.win_length):
        raise _too_short(os.fspath(p), w.shape[0], fcfg)
      waves.append(w)
    except audio.AudioError as e:
      errors.append(str(e))
  if errors or not waves:
    raise enroll_lib.unusable_files(errors)
  segs, masks, group = [], [], []
  for j, f in enumerate(features.compute(waves, fcfg)):
    s, m = features.segment(f, int(fcfg.segment_frames), int(fcfg.min_segment_frames))
    segs.append(normalize_utterance(s, m, opts.norm, predictor.stats))
    masks.append(m)
    group.append(np.full(s.shape[0], j))
  segs, masks = np.concatenate(segs), np.concatenate(masks)
  states_fn, mesh = predictor.states_fn()
  return inference.enrollment_contexts(
      states_fn, predictor.variables, segs, masks,
      np.concatenate(group), len(waves),
      inference.batch_rows(len(segs), opts.batch_size, mesh.devices.size), mesh)
