"""The light runtime: a model exported by `python -m bin.export` (ssa_jax/export.py) predicts audio
with `REQUIREMENTS` only: jax, jaxlib, numpy, soundfile, soxr and flatbuffers (which
`jax.export.deserialize` needs); no flax, optax, orbax, ml_collections, librosa.

  m = serving.load("model.npz")
  r = m.predict_file("speech.wav")             # {"path", "label", "probabilities", ...}
  r = m.predict_wave(wave, 44100)              # an in-memory (S,) or (S, C) array
  rs = m.predict_files(["a.wav", "b.flac"])    # a bad file gives a {"path", "error"} entry
  out = m.outputs(segments, mask)              # the exported function: {probs, z_em, ...}
  ctx = m.enrollment_context(["e1.wav", "e2.wav"])       # a model trained with enrollment:
  r = m.predict_file("speech.wav", enroll_context=ctx)   # as bin.predict --enroll e1.wav e2.wav

  python -m ssa_jax.serving model.npz speech.wav more_audio/ [--json] [--norm self|train]
      [--pooling max|mean] [--enroll FILE_OR_FOLDER ...]   # printed as `bin.predict` prints

It needs only `RUNTIME_FILES` of this package (a copy of them in a folder named `ssa_jax` is
enough, after `pip install jax jaxlib numpy soundfile soxr flatbuffers`); they import nothing
else of the project.

The file is a numpy `.npz` (a zip of `.npy` arrays; read with `np.load(..., allow_pickle=False)`):

  function        uint8 (n,)  `jax.export` serialization of the model in evaluation mode,
                              (x float32 (B, T, M, 3), mask bool (B, T)) -> {probs (B, K),
                              z_em (B, E); SSA-CRNN also z_sp (B, E), speaker_mass (B,),
                              speaker_pred (B,)} for any batch size B (symbolic); T is the
                              segment length, the weights are constants inside.
                              Format version 2, a model trained with enrollment
                              (`model.enroll_k` > 0): (x, mask, context float32 (J, d), valid
                              bool (J,)) -> the same and speaker_state (B, d), J symbolic too:
                              every segment's SSA attends to the valid states (`ssa_jax.enroll`;
                              none valid: the model without enrollment); speaker_state is each
                              segment's pooled speaker-branch state c_sp, whose per-file mean is
                              an enrollment file's state (`Model.enrollment_context`)
  metadata        uint8 (n,)  UTF-8 JSON: format, format_version, ssa_jax_version, jax_version,
                              classes, features (the run's `config.features`), pooling, norm,
                              eval_batch_size, model (`config.model`), config_name, step,
                              platforms, outputs; version 2 also enroll_dim (d)
  window          float32 (win_length,)                the front end's constants (librosa's,
  mel_filterbank  float32 (n_fft // 2 + 1, n_mels)     computed at export)
  stats_<key>     `SpeakerStats.to_arrays()` of the training speakers (absent: no norm="train")

What is exported, and why: the model from normalised 3 s segments, not from the waveform. Files
have any length, are cut into a file-dependent number of segments, and the default "self"
normalisation uses each file's own statistics over all its segments: that is numpy work between
the log-Mel front end and the model. The front end itself stays the training path's JAX code
(`ssa_jax.frontend`, the same functions `bin.predict` runs), so both give the same features.

Results are the dicts of `ssa_jax.predict.predict_files` / `predict_waves`, built by the same
`prediction_dict`: {"path" (files) or "name" (arrays), "label", "probabilities" {class: p} (sum 1; for max
pooling the pooled maxima renormalised), "scores" {class: pooled score}, "pooling", "norm",
"duration_s", "segments": [{"index", "start_s", "end_s", "label", "probabilities"}]}, or
{"path", "error"} for a file that could not be used.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import numpy as np

from ssa_jax import audio, enroll, frontend, input_pipeline, metrics

REQUIREMENTS = ("jax", "jaxlib", "numpy", "soundfile", "soxr", "flatbuffers")
RUNTIME_FILES = ("__init__.py", "serving.py", "frontend.py", "audio.py", "metrics.py",
                 "input_pipeline.py", "enroll.py")  # enroll: numpy only (keys, enrollment helpers)
FORMAT = "ssa-jax-export"
FORMAT_VERSION = 2  # the newest this runtime reads: 2 adds the enrollment inputs (module docstring)
PLAIN_FORMAT_VERSION = 1  # what a model without enrollment is still written as
ENROLL_OUTPUT = "speaker_state"  # enrollment models: each segment's pooled speaker state (B, d)
STATS_PREFIX = "stats_"
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif", ".aifc", ".au", ".snd",
                    ".caf", ".w64", ".rf64", ".mp3", ".opus", ".sph", ".nist", ".voc")


# --------------------------------------------------------------------------- audio -> results


def _probs_dict(classes: Sequence[str], p: np.ndarray) -> dict[str, float]:
  return {c: float(v) for c, v in zip(classes, p)}


@dataclasses.dataclass(frozen=True)
class Model:
  """Audio -> result dicts (module docstring), given how features and segment posteriors are
  computed (`load` builds it from an exported file).

  fe: the front end's settings; segment_frames, min_segment_frames: `frontend.segment`'s;
  classes: class names in logit order;
  features: mono float32 waves at fe.sample_rate -> one `(F_i, M, 3)` array each;
  posteriors: normalised segments `(N, T, M, C)`, mask `(N, T)` -> softmax posteriors `(N, K)`;
    with enrollment also called with a third argument, the enrollment context `(J, d)`;
  stats: the training speakers' statistics (None: norm="train" is unavailable);
  pooling, norm: the defaults of the predict_* methods;
  outputs_fn: (segments, mask[, enroll_context]) -> every exported output (`outputs`), None if
    there is none;
  metadata: the exported file's metadata;
  enroll_dim: d of the enrollment states (0: a model trained without enrollment).
  """
  fe: frontend.FrontEnd
  segment_frames: int
  min_segment_frames: int
  classes: tuple[str, ...]
  features: Callable[[Sequence[np.ndarray]], list[np.ndarray]]
  posteriors: Callable[..., np.ndarray]
  stats: frontend.SpeakerStats | None = None
  pooling: str = "max"
  norm: str = "self"
  outputs_fn: Callable[..., dict[str, np.ndarray]] | None = None
  metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  enroll_dim: int = 0

  def _settings(self, norm: str | None, pooling: str | None) -> tuple[str, str]:
    norm = self.norm if norm is None else norm
    pooling = self.pooling if pooling is None else pooling
    if pooling not in metrics.POOLING:
      raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(metrics.POOLING)}")
    if norm not in frontend.NORMS:
      raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(frontend.NORMS)}")
    if norm == "train" and self.stats is None:
      raise ValueError("norm='train' needs the training statistics saved with the checkpoint")
    return norm, pooling

  def predict_files(self, paths: Sequence[str | os.PathLike], norm: str | None = None,
                    pooling: str | None = None, enroll_context: np.ndarray | None = None
                    ) -> list[dict[str, Any]]:
    """A result per file, in order; an unusable file gives `{"path", "error"}` (its AudioError
    message, which starts with the path).

    Args:
      paths: audio files soundfile reads (any rate, mono or multi-channel, >= 0.1 s).
      norm: "self" | "train"; pooling: "max" | "mean"; None: the model's defaults.
      enroll_context: (J, d) from `enrollment_context` (a model trained with enrollment): every
        segment's SSA also attends to these pooled speaker states; None: without enrollment.
    """
    norm, pooling = self._settings(norm, pooling)
    results: list[dict[str, Any]] = [{"path": os.fspath(p)} for p in paths]
    waves = {}
    for i, p in enumerate(paths):
      try:
        waves[i] = self._check_length(audio.load_audio(p, self.fe.sample_rate), p)
      except audio.AudioError as e:
        results[i]["error"] = str(e)
    self._predict(results, waves, norm, pooling, enroll_context)
    return results

  def predict_file(self, path: str | os.PathLike, norm: str | None = None,
                   pooling: str | None = None, enroll_context: np.ndarray | None = None
                   ) -> dict[str, Any]:
    """The result of one file (arguments as `predict_files`). Raises `audio.AudioError` (naming
    the file) for an unusable one."""
    norm, pooling = self._settings(norm, pooling)
    wave = self._check_length(audio.load_audio(path, self.fe.sample_rate), path)
    results: list[dict[str, Any]] = [{"path": os.fspath(path)}]
    self._predict(results, {0: wave}, norm, pooling, enroll_context)
    return results[0]

  def predict_wave(self, wave: np.ndarray, sample_rate: int, name: str = "<wave>",
                   norm: str | None = None, pooling: str | None = None,
                   enroll_context: np.ndarray | None = None) -> dict[str, Any]:
    """The result of an in-memory wave `(S,)` or `(S, C)` at `sample_rate` Hz, treated as
    `audio.load_audio` treats a file (`audio.prepare_wave`: channels averaged, checked, resampled
    with soxr); the result's "name" is `name` (as `ssa_jax.predict.predict_waves`).

    Raises:
      audio.AudioError: what `audio.load_audio` rejects (the message starts with `name`).
    """
    norm, pooling = self._settings(norm, pooling)
    wave = self._check_length(audio.prepare_wave(wave, name, sample_rate, self.fe.sample_rate),
                              name)
    results: list[dict[str, Any]] = [{"name": name}]
    self._predict(results, {0: wave}, norm, pooling, enroll_context)
    return results[0]

  def outputs(self, segments: np.ndarray, mask: np.ndarray,
              enroll_context: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every output of the exported function for normalised segments `(N, T, M, C)` with their
    masks `(N, T)`: {probs (N, K), z_em (N, E), ...} numpy (module docstring); `enroll_context`
    (J, d) as in `predict_files`."""
    if self.outputs_fn is None:
      raise ValueError("this model has no exported function")
    return self.outputs_fn(segments, mask, *_given(enroll_context))

  def enrollment_context(self, paths: Sequence[str | os.PathLike], norm: str | None = None
                         ) -> np.ndarray:
    """(J, d) float32: one pooled speaker-branch state per file of `paths` (unlabelled speech of
    the person whose files are then predicted, `predict_files(..., enroll_context=)`), as
    `ssa_jax.predict.enrollment_context`: each file through the front end with `norm` (None: the
    model's default), the exported function's ENROLL_OUTPUT per segment, the file's mean.

    Raises:
      ValueError: a model trained without enrollment, or files that cannot be used (one line
        naming each, its AudioError message): enrollment is all or nothing.
    """
    enroll.check_enrollable(self.metadata.get("model", {}))
    norm, _ = self._settings(norm, None)
    waves, errors = [], []
    for p in paths:
      try:
        waves.append(self._check_length(audio.load_audio(p, self.fe.sample_rate), p))
      except audio.AudioError as e:
        errors.append(str(e))
    if errors or not waves:
      raise enroll.unusable_files(errors)
    segs, mask, owner = self._segments(waves, norm)
    states = np.asarray(self.outputs(segs, mask)[ENROLL_OUTPUT], np.float32)
    return enroll.group_means(states, owner, len(waves))

  def _check_length(self, wave: np.ndarray, name: str | os.PathLike) -> np.ndarray:
    if wave.shape[0] < self.fe.win_length:
      raise audio.AudioError(name, f"too short for one analysis window ({wave.shape[0]} < "
                             f"{self.fe.win_length} samples at {self.fe.sample_rate} Hz)")
    return wave

  def _segments(self, waves: Sequence[np.ndarray], norm: str
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All waves' normalised segments (N, T, M, C), masks (N, T) and owners (N,) (wave index)."""
    seg_list, mask_list, owner = [], [], []
    for j, f in enumerate(self.features(list(waves))):
      segs, mask = frontend.segment(f, self.segment_frames, self.min_segment_frames)
      seg_list.append(frontend.normalize_utterance(segs, mask, norm, self.stats))
      mask_list.append(mask)
      owner.append(np.full(segs.shape[0], j))
    return np.concatenate(seg_list), np.concatenate(mask_list), np.concatenate(owner)

  def _predict(self, results: list[dict[str, Any]], waves: Mapping[int, np.ndarray], norm: str,
               pooling: str, enroll_context: np.ndarray | None = None) -> None:
    """Fills `results[i]` for each wave i (at fe.sample_rate): all files' segments go through
    `posteriors` together, then each file's are pooled."""
    if enroll_context is not None:
      enroll.check_enrollable(self.metadata.get("model", {}))
    good = list(waves)
    if not good:
      return
    segs, mask, owner = self._segments([waves[i] for i in good], norm)
    seg_file = np.asarray(good)[owner]
    for i in good:
      results[i]["duration_s"] = float(waves[i].shape[0]) / self.fe.sample_rate
    probs = np.asarray(self.posteriors(segs, mask, *_given(enroll_context)), np.float64)
    frame_s = self.fe.hop_length / self.fe.sample_rate
    for i in good:
      rows = seg_file == i
      key = "path" if "path" in results[i] else "name"
      results[i].update(prediction_dict(key, results[i][key], probs[rows], mask[rows],
                                        results[i]["duration_s"], self.classes, pooling, norm,
                                        self.segment_frames, frame_s))


def prediction_dict(key: str, name: str, probs: np.ndarray, mask: np.ndarray, duration_s: float,
                    classes: Sequence[str], pooling: str, norm: str, segment_frames: int,
                    frame_s: float) -> dict[str, Any]:
  """The result dict (module docstring) of one utterance from its segments' posteriors `(n, K)`
  and masks `(n, T)`; `key` "path" (files) or "name" (arrays); `frame_s` the hop in seconds.
  `ssa_jax.predict` builds its results with it too."""
  probs = np.asarray(probs, np.float64)
  scores = metrics.pool_posteriors(probs, np.zeros(len(probs), np.int64), 1, pooling)[0]
  segments = [{"index": k, "start_s": k * segment_frames * frame_s,
               "end_s": (k * segment_frames + int(mask[k].sum())) * frame_s,
               "label": classes[int(np.argmax(p))], "probabilities": _probs_dict(classes, p)}
              for k, p in enumerate(probs)]
  return {key: name, "label": classes[int(np.argmax(scores))],
          "probabilities": _probs_dict(classes, scores / scores.sum()),
          "scores": _probs_dict(classes, scores), "pooling": pooling, "norm": norm,
          "duration_s": duration_s, "segments": segments}


def _given(enroll_context: np.ndarray | None) -> tuple[np.ndarray, ...]:
  """The optional enrollment argument of `posteriors` / `outputs_fn`: () or (enroll_context,)."""
  return () if enroll_context is None else (enroll_context,)


# --------------------------------------------------------------------------- the exported file


def _enroll_inputs(enroll_context: np.ndarray | None, enroll_dim: int
                   ) -> tuple[np.ndarray, np.ndarray]:
  """The exported function's (context (J, d), valid (J,)) of an enrollment model: the given
  states, all valid; None: one invalid zero entry (the model without enrollment)."""
  if enroll_context is None:
    return np.zeros((1, enroll_dim), np.float32), np.zeros(1, bool)
  context = np.asarray(enroll_context, np.float32)
  if context.ndim != 2 or context.shape[0] == 0 or context.shape[1] != enroll_dim:
    raise ValueError(f"enroll_context must be (J, {enroll_dim}) with J >= 1, got "
                     f"{context.shape}")
  return context, np.ones(context.shape[0], bool)


def _exported_outputs(call: Callable, batch_size: int, frames: int, mels: int,
                      enroll_dim: int = 0) -> Callable[..., dict[str, np.ndarray]]:
  """(segments (N, T, M, C), mask (N, T)[, enroll_context (J, d)]) -> {key: (N, ...)}: `call`
  over fixed-size batches of `input_pipeline.batch_rows` rows (the last one padded with the
  first segment), as `inference.segment_posteriors` batches for a run folder; with
  `enroll_dim` > 0 every call also gets `_enroll_inputs`."""

  def outputs(segments: np.ndarray, mask: np.ndarray,
              enroll_context: np.ndarray | None = None) -> dict[str, np.ndarray]:
    segments, mask = np.asarray(segments, np.float32), np.asarray(mask, bool)
    if segments.ndim != 4 or segments.shape[1:3] != (frames, mels) or mask.shape != segments.shape[:2]:
      raise ValueError(f"segments must be (N, {frames}, {mels}, C) with mask (N, {frames}), got "
                       f"{segments.shape} and {mask.shape}")
    if segments.shape[0] == 0:
      raise ValueError("no segments to run the model on")
    extra = ()
    if enroll_dim:
      extra = _enroll_inputs(enroll_context, enroll_dim)
    elif enroll_context is not None:
      raise ValueError("this model was exported without enrollment inputs")
    rows = input_pipeline.batch_rows(segments.shape[0], batch_size)
    parts = [(call(b["x"], b["mask"], *extra), real) for b, real in
             input_pipeline.eval_batches({"x": segments, "mask": mask}, rows)]
    return {k: np.concatenate([np.asarray(o[k])[:real] for o, real in parts]) for k in parts[0][0]}

  return outputs


def read(path: str | os.PathLike) -> tuple[bytes, dict[str, Any], dict[str, np.ndarray]]:
  """(serialized function, metadata, the other arrays) of an exported file, checked.

  Raises:
    ValueError: not a readable export of this format (the message names the file).
  """
  path = os.fspath(path)
  try:
    with np.load(path, allow_pickle=False) as z:
      arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays.pop("metadata").tobytes().decode("utf-8"))
    blob = arrays.pop("function").tobytes()
  except (OSError, KeyError, ValueError, UnicodeDecodeError) as e:
    raise ValueError(f"{path}: not a model exported by bin.export ({type(e).__name__}: {e})") from e
  if not isinstance(meta, dict) or meta.get("format") != FORMAT:
    raise ValueError(f"{path}: not a model exported by bin.export (format "
                     f"{meta.get('format') if isinstance(meta, dict) else None!r})")
  if int(meta.get("format_version", -1)) > FORMAT_VERSION:
    raise ValueError(f"{path}: format version {meta['format_version']} is newer than this "
                     f"runtime's ({FORMAT_VERSION}); update ssa_jax")
  return blob, meta, arrays


def load(path: str | os.PathLike, batch_size: int | None = None) -> Model:
  """The `Model` of an exported file.

  Args:
    path: a file written by `python -m bin.export` (`ssa_jax.export.export_fold`).
    batch_size: segments per call of the exported function (None: the run's eval batch size).

  Raises:
    ValueError: not such a file, or one this jax cannot run (the message names the file).
  """
  path = os.fspath(path)
  blob, meta, arrays = read(path)
  try:
    exported = jax.export.deserialize(bytearray(blob))
  except Exception as e:  # pylint: disable=broad-except  (flatbuffer / version errors vary)
    raise ValueError(f"{path}: cannot load the exported function with jax {jax.__version__} "
                     f"(exported with jax {meta.get('jax_version')}): {type(e).__name__}: {e}") from e
  fcfg = meta["features"]
  fe = frontend.FrontEnd.from_config(fcfg)
  window = np.asarray(arrays["window"], np.float32)
  mel_fb = np.asarray(arrays["mel_filterbank"], np.float32)
  stats_arrays = {k[len(STATS_PREFIX):]: v for k, v in arrays.items() if k.startswith(STATS_PREFIX)}
  stats = frontend.SpeakerStats.from_arrays(stats_arrays) if stats_arrays else None
  batch_size = int(meta["eval_batch_size"]) if batch_size is None else int(batch_size)
  enroll_dim = int(meta.get("enroll_dim", 0))
  outputs = _exported_outputs(jax.jit(exported.call), batch_size, int(fcfg["segment_frames"]),
                              fe.n_mels, enroll_dim)
  return Model(fe=fe, segment_frames=int(fcfg["segment_frames"]),
               min_segment_frames=int(fcfg["min_segment_frames"]),
               classes=tuple(meta["classes"]),
               features=lambda waves: frontend.extract(waves, fe, window, mel_fb),
               posteriors=lambda segs, mask, *ctx: outputs(segs, mask, *ctx)["probs"],
               stats=stats, pooling=str(meta["pooling"]), norm=str(meta["norm"]),
               outputs_fn=outputs, metadata=meta, enroll_dim=enroll_dim)


# --------------------------------------------------------------------------- files and text


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


def format_result(r: Mapping[str, Any]) -> str:
  """One human-readable block per file (the error line for a failed one)."""
  if "error" in r:
    return f"ERROR {r['error']}"
  probs = "  ".join(f"{c} {100 * p:5.1f}%" for c, p in r["probabilities"].items())
  lines = [f"{r.get('path', r.get('name'))}: {r['label']}  ({probs})  [{r['pooling']} pooling over "
           f"{len(r['segments'])} segment(s), {r['duration_s']:.2f} s, norm={r['norm']}]"]
  for s in r["segments"]:
    sp = "  ".join(f"{c} {100 * p:5.1f}%" for c, p in s["probabilities"].items())
    lines.append(f"  segment {s['index']} [{s['start_s']:.2f}-{s['end_s']:.2f} s]: "
                 f"{s['label']}  ({sp})")
  return "\n".join(lines)


def _one_line(message: object) -> str:
  return " ".join(str(message).split())


def main(argv: Sequence[str] | None = None) -> int:
  """`python -m ssa_jax.serving MODEL AUDIO... [--json] [--norm] [--pooling] [--enroll ...]`
  (module docstring): prints as `python -m bin.predict` does; a bad file is one line on stderr
  and exit code 1 (the others are still predicted); a bad model file or argument, an unusable
  enrollment file or --enroll with a model trained without enrollment is one line and exit code
  1 (nothing predicted)."""
  parser = argparse.ArgumentParser(prog="python -m ssa_jax.serving",
                                   description="Predict emotions with an exported model.")
  parser.add_argument("model", help="a file written by python -m bin.export")
  parser.add_argument("audio", nargs="+", help="audio files or folders (searched recursively)")
  parser.add_argument("--json", action="store_true", help="print one JSON document")
  parser.add_argument("--norm", choices=frontend.NORMS, default=None,
                      help="speaker normalisation (default: the run's)")
  parser.add_argument("--pooling", choices=metrics.POOLING, default=None,
                      help="segment posteriors -> utterance (default: the run's)")
  parser.add_argument("--enroll", action="append", default=[], metavar="FILE_OR_FOLDER",
                      help="enrollment audio of the same speaker (repeatable; folders searched "
                      "recursively), for a model trained with model.enroll_k > 0")
  args = parser.parse_args(argv)
  try:
    missing = [p for p in [args.model, *args.audio, *args.enroll] if not os.path.exists(p)]
    if missing:
      raise ValueError(f"no such file or folder: {', '.join(missing)}")
    files = find_audio_files(args.audio)
    if not files:
      raise ValueError(f"no audio file found in {', '.join(args.audio)}")
    enroll_files = find_audio_files(args.enroll)
    if args.enroll and not enroll_files:
      raise ValueError(f"no audio file found in --enroll {', '.join(args.enroll)}")
    model = load(args.model)
    context = None
    if enroll_files:
      context = model.enrollment_context(enroll_files, norm=args.norm)
    elif model.enroll_dim:
      print(enroll.missing_warning(model.metadata["model"]), file=sys.stderr)
    results = model.predict_files(files, norm=args.norm, pooling=args.pooling,
                                  enroll_context=context)
  except ValueError as e:
    print(f"error: {_one_line(e)}", file=sys.stderr)
    return 1
  failed = [r for r in results if "error" in r]
  for r in failed:
    print(f"error: {_one_line(r['error'])}", file=sys.stderr)
  if args.json:
    print(json.dumps({"model": args.model, "step": model.metadata.get("step"),
                      "classes": list(model.classes), "norm": args.norm or model.norm,
                      "pooling": args.pooling or model.pooling,
                      **({"enroll": enroll_files} if enroll_files else {}), "files": results,
                      "failed": len(failed)}, indent=2))
  else:
    for r in results:
      if "error" not in r:
        print(format_result(r))
    print(f"{len(results) - len(failed)} file(s) predicted, {len(failed)} failed", file=sys.stderr)
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
