"""The light runtime: a model exported by `python -m bin.export` (ssa_jax/export.py) predicts audio
with `REQUIREMENTS` only: jax, jaxlib, numpy, soundfile, soxr and flatbuffers (which
`jax.export.deserialize` needs); no flax, optax, orbax, ml_collections, librosa.

  m = serving.load("model.npz")
  r = m.predict_file("speech.wav")             # {"path", "label", "probabilities", ...}
  r = m.predict_wave(wave, 44100)              # an in-memory (S,) or (S, C) array
  rs = m.predict_files(["a.wav", "b.flac"])    # a bad file gives a {"path", "error"} entry
  out = m.outputs(segments, mask)              # the exported function: {probs, z_em, ...}

  python -m ssa_jax.serving model.npz speech.wav more_audio/ [--json] [--norm self|train]
      [--pooling max|mean]                     # printed as `python -m bin.predict` prints

It needs only `RUNTIME_FILES` of this package (a copy of them in a folder named `ssa_jax` is
enough, after `pip install jax jaxlib numpy soundfile soxr flatbuffers`); they import nothing
else of the project.

The file is a numpy `.npz` (a zip of `.npy` arrays; read with `np.load(..., allow_pickle=False)`):

  function        uint8 (n,)  `jax.export` serialization of the model in evaluation mode,
                              (x float32 (B, T, M, 3), mask bool (B, T)) -> {probs (B, K),
                              z_em (B, E); SSA-CRNN also z_sp (B, E), speaker_mass (B,),
                              speaker_pred (B,)} for any batch size B (symbolic); T is the
                              segment length, the weights are constants inside
  metadata        uint8 (n,)  UTF-8 JSON: format, format_version, ssa_jax_version, jax_version,
                              classes, features (the run's `config.features`), pooling, norm,
                              eval_batch_size, model (`config.model`), config_name, step,
                              platforms, outputs
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

from ssa_jax import audio, frontend, input_pipeline, metrics

REQUIREMENTS = ("jax", "jaxlib", "numpy", "soundfile", "soxr", "flatbuffers")
RUNTIME_FILES = ("__init__.py", "serving.py", "frontend.py", "audio.py", "metrics.py",
                 "input_pipeline.py", "enroll.py")  # enroll: numpy only, input_pipeline's keys
FORMAT = "ssa-jax-export"
FORMAT_VERSION = 1
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
  stats: the training speakers' statistics (None: norm="train" is unavailable);
  pooling, norm: the defaults of the predict_* methods;
  outputs_fn: (segments, mask) -> every exported output (`outputs`), None if there is none;
  metadata: the exported file's metadata.
  """
  fe: frontend.FrontEnd
  segment_frames: int
  min_segment_frames: int
  classes: tuple[str, ...]
  features: Callable[[Sequence[np.ndarray]], list[np.ndarray]]
  posteriors: Callable[[np.ndarray, np.ndarray], np.ndarray]
  stats: frontend.SpeakerStats | None = None
  pooling: str = "max"
  norm: str = "self"
  outputs_fn: Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]] | None = None
  metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

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
                    pooling: str | None = None) -> list[dict[str, Any]]:
    """A result per file, in order; an unusable file gives `{"path", "error"}` (its AudioError
    message, which starts with the path).

    Args:
      paths: audio files soundfile reads (any rate, mono or multi-channel, >= 0.1 s).
      norm: "self" | "train"; pooling: "max" | "mean"; None: the model's defaults.
    """
    norm, pooling = self._settings(norm, pooling)
    results: list[dict[str, Any]] = [{"path": os.fspath(p)} for p in paths]
    waves = {}
    for i, p in enumerate(paths):
      try:
        waves[i] = self._check_length(audio.load_audio(p, self.fe.sample_rate), p)
      except audio.AudioError as e:
        results[i]["error"] = str(e)
    self._predict(results, waves, norm, pooling)
    return results

  def predict_file(self, path: str | os.PathLike, norm: str | None = None,
                   pooling: str | None = None) -> dict[str, Any]:
    """The result of one file. Raises `audio.AudioError` (naming the file) for an unusable one."""
    norm, pooling = self._settings(norm, pooling)
    wave = self._check_length(audio.load_audio(path, self.fe.sample_rate), path)
    results: list[dict[str, Any]] = [{"path": os.fspath(path)}]
    self._predict(results, {0: wave}, norm, pooling)
    return results[0]

  def predict_wave(self, wave: np.ndarray, sample_rate: int, name: str = "<wave>",
                   norm: str | None = None, pooling: str | None = None) -> dict[str, Any]:
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
    self._predict(results, {0: wave}, norm, pooling)
    return results[0]

  def outputs(self, segments: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """Every output of the exported function for normalised segments `(N, T, M, C)` with their
    masks `(N, T)`: {probs (N, K), z_em (N, E), ...} numpy (module docstring)."""
    if self.outputs_fn is None:
      raise ValueError("this model has no exported function")
    return self.outputs_fn(segments, mask)

  def _check_length(self, wave: np.ndarray, name: str | os.PathLike) -> np.ndarray:
    if wave.shape[0] < self.fe.win_length:
      raise audio.AudioError(name, f"too short for one analysis window ({wave.shape[0]} < "
                             f"{self.fe.win_length} samples at {self.fe.sample_rate} Hz)")
    return wave

  def _predict(self, results: list[dict[str, Any]], waves: Mapping[int, np.ndarray], norm: str,
               pooling: str) -> None:
    """Fills `results[i]` for each wave i (at fe.sample_rate): all files' segments go through
    `posteriors` together, then each file's are pooled."""
    good = list(waves)
    if not good:
      return
    seg_list, mask_list, seg_file = [], [], []
    for i, f in zip(good, self.features([waves[i] for i in good])):
      segs, mask = frontend.segment(f, self.segment_frames, self.min_segment_frames)
      seg_list.append(frontend.normalize_utterance(segs, mask, norm, self.stats))
      mask_list.append(mask)
      seg_file.append(np.full(segs.shape[0], i))
      results[i]["duration_s"] = float(waves[i].shape[0]) / self.fe.sample_rate
    segs, mask = np.concatenate(seg_list), np.concatenate(mask_list)
    seg_file = np.concatenate(seg_file)
    probs = np.asarray(self.posteriors(segs, mask), np.float64)
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


# --------------------------------------------------------------------------- the exported file


def _exported_outputs(call: Callable, batch_size: int, frames: int, mels: int
                      ) -> Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]]:
  """(segments (N, T, M, C), mask (N, T)) -> {key: (N, ...)}: `call` over fixed-size batches of
  `input_pipeline.batch_rows` rows (the last one padded with the first segment), as
  `inference.segment_posteriors` batches for a run folder."""

  def outputs(segments: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    segments, mask = np.asarray(segments, np.float32), np.asarray(mask, bool)
    if segments.ndim != 4 or segments.shape[1:3] != (frames, mels) or mask.shape != segments.shape[:2]:
      raise ValueError(f"segments must be (N, {frames}, {mels}, C) with mask (N, {frames}), got "
                       f"{segments.shape} and {mask.shape}")
    if segments.shape[0] == 0:
      raise ValueError("no segments to run the model on")
    rows = input_pipeline.batch_rows(segments.shape[0], batch_size)
    parts = [(call(b["x"], b["mask"]), real) for b, real in
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
  outputs = _exported_outputs(jax.jit(exported.call), batch_size, int(fcfg["segment_frames"]),
                              fe.n_mels)
  return Model(fe=fe, segment_frames=int(fcfg["segment_frames"]),
               min_segment_frames=int(fcfg["min_segment_frames"]),
               classes=tuple(meta["classes"]),
               features=lambda waves: frontend.extract(waves, fe, window, mel_fb),
               posteriors=lambda segs, mask: outputs(segs, mask)["probs"],
               stats=stats, pooling=str(meta["pooling"]), norm=str(meta["norm"]),
               outputs_fn=outputs, metadata=meta)


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
  """`python -m ssa_jax.serving MODEL AUDIO... [--json] [--norm] [--pooling]` (module docstring):
  prints as `python -m bin.predict` does; a bad file is one line on stderr and exit code 1 (the
  others are still predicted); a bad model file or argument is one line and exit code 1."""
  parser = argparse.ArgumentParser(prog="python -m ssa_jax.serving",
                                   description="Predict emotions with an exported model.")
  parser.add_argument("model", help="a file written by python -m bin.export")
  parser.add_argument("audio", nargs="+", help="audio files or folders (searched recursively)")
  parser.add_argument("--json", action="store_true", help="print one JSON document")
  parser.add_argument("--norm", choices=frontend.NORMS, default=None,
                      help="speaker normalisation (default: the run's)")
  parser.add_argument("--pooling", choices=metrics.POOLING, default=None,
                      help="segment posteriors -> utterance (default: the run's)")
  args = parser.parse_args(argv)
  try:
    missing = [p for p in [args.model, *args.audio] if not os.path.exists(p)]
    if missing:
      raise ValueError(f"no such file or folder: {', '.join(missing)}")
    files = find_audio_files(args.audio)
    if not files:
      raise ValueError(f"no audio file found in {', '.join(args.audio)}")
    model = load(args.model)
    results = model.predict_files(files, norm=args.norm, pooling=args.pooling)
  except ValueError as e:
    print(f"error: {_one_line(e)}", file=sys.stderr)
    return 1
  failed = [r for r in results if "error" in r]
  for r in failed:
    print(f"error: {_one_line(r['error'])}", file=sys.stderr)
  if args.json:
    print(json.dumps({"model": args.model, "step": model.metadata.get("step"),
                      "classes": list(model.classes), "norm": args.norm or model.norm,
                      "pooling": args.pooling or model.pooling, "files": results,
                      "failed": len(failed)}, indent=2))
  else:
    for r in results:
      if "error" not in r:
        print(format_result(r))
    print(f"{len(results) - len(failed)} file(s) predicted, {len(failed)} failed", file=sys.stderr)
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
