"""Audio loading: any file soundfile reads -> mono float32 at the model's sample rate (docs/DESIGN.md §2).

Channels are averaged, other sample rates are resampled with soxr. Anything unusable (missing,
unreadable or corrupt file, no samples, shorter than 100 ms, NaN/inf samples, digital silence)
raises `AudioError`, whose message starts with the file path and says what is wrong; library
exceptions are re-raised as `AudioError` (chained with `from`), never leaked from soundfile/soxr.

  wave = load_audio(path, 16000)                  # a whole file -> (S,) float32
  wave = prepare_wave(array, "name", 44100, 16000)  # an in-memory (S,) or (S, C) array, the same
  for block in read_blocks(path, 16000): ...      # a long file in blocks (bounded memory), the
                                                  # same samples as load_audio's, concatenated
"""

from __future__ import annotations

import os
from typing import Iterator

import numpy as np
import soundfile as sf
import soxr

MIN_DURATION_S = 0.1  # shorter files are rejected (fewer than ~8 feature frames)


class AudioError(ValueError):
  """Unusable audio; the message starts with the file path (or name) and says what is wrong."""

  def __init__(self, path: str | os.PathLike, problem: str):
    self.path = os.fspath(path)
    self.problem = problem
    super().__init__(f"{self.path}: {problem}")


def validate_wave(wave: np.ndarray, name: str | os.PathLike, sample_rate: int,
                  min_duration: float = MIN_DURATION_S) -> np.ndarray:
  """Checks an in-memory mono wave and returns it as float32 `(S,)`.

  Args:
    wave: `(S,)` samples.
    name: what to name in errors (a file path, an utterance id).
    sample_rate: rate of `wave` in Hz, for the minimum-duration check.
    min_duration: shortest accepted duration in seconds.

  Raises:
    AudioError: not 1-D, no samples, shorter than `min_duration`, non-finite samples, or all zero.
  """
  wave = np.asarray(wave)
  if wave.ndim != 1:
    raise AudioError(name, f"expected a mono 1-D wave, got an array of shape {wave.shape}")
  if not (np.issubdtype(wave.dtype, np.floating) or np.issubdtype(wave.dtype, np.integer)):
    raise AudioError(name, f"expected numeric samples, got dtype {wave.dtype}")
  if wave.size == 0:
    raise AudioError(name, "contains no samples")
  duration = wave.size / float(sample_rate)
  if duration < min_duration:
    raise AudioError(name, f"too short: {wave.size} samples at {sample_rate} Hz = "
                     f"{1000 * duration:.1f} ms (minimum {1000 * min_duration:.0f} ms)")
  wave = wave.astype(np.float32, copy=False)
  bad = ~np.isfinite(wave)
  if bad.any():
    first = int(np.argmax(bad))
    raise AudioError(name, f"{int(bad.sum())} NaN or infinite samples (first at sample {first})")
  if not np.any(wave):
    raise AudioError(name, "all samples are zero (digital silence)")
  return wave


def _to_mono(data: np.ndarray) -> np.ndarray:
  """(S, C) -> (S,): the channel mean in float32 (NaN/inf survive it); (S, 1) -> its column."""
  return data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]


def _resample(wave: np.ndarray, name: str | os.PathLike, rate: int, sample_rate: int) -> np.ndarray:
  if rate == sample_rate:
    return np.ascontiguousarray(wave)
  try:
    wave = soxr.resample(wave, rate, sample_rate, quality="HQ").astype(np.float32, copy=False)
  except (RuntimeError, ValueError) as e:
    raise AudioError(name, f"cannot resample from {rate} Hz to {sample_rate} Hz: {e}") from e
  return np.ascontiguousarray(wave)


def prepare_wave(wave: np.ndarray, name: str | os.PathLike, rate: int,
                 sample_rate: int = 16000) -> np.ndarray:
  """An in-memory wave at `rate` Hz -> mono float32 `(S',)` at `sample_rate`, as `load_audio`
  treats a file: channels averaged, checked (`validate_wave`, at `rate`), resampled with soxr.

  Args:
    wave: `(S,)` or `(S, C)` (samples, channels) samples: floats in [-1, 1], or signed integers
      (scaled by 2^(bits-1), as soundfile reads integer PCM).
    name: what errors name (a path, "wave[3]").
    rate: the wave's sample rate in Hz.

  Raises:
    AudioError: not (S,) or (S, C), unsigned or non-numeric samples, or what `validate_wave`
      rejects; ValueError: a sample rate that is not a positive integer.
  """
  if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
    raise ValueError(f"{os.fspath(name)}: the sample rate must be a positive integer (Hz), got "
                     f"{rate!r}")
  wave = np.asarray(wave)
  if wave.ndim not in (1, 2):
    raise AudioError(name, f"expected (samples,) or (samples, channels), got an array of shape "
                     f"{wave.shape}")
  if np.issubdtype(wave.dtype, np.unsignedinteger):
    raise AudioError(name, f"unsigned integer samples ({wave.dtype}) are not supported; pass "
                     "floats in [-1, 1] or signed integers")
  if np.issubdtype(wave.dtype, np.signedinteger):
    wave = wave.astype(np.float32) / np.float32(2 ** (8 * wave.dtype.itemsize - 1))
  if wave.ndim == 2:
    if wave.shape[1] == 0:
      raise AudioError(name, f"has no channel (shape {wave.shape})")
    wave = _to_mono(wave)
  return _resample(validate_wave(wave, name, int(rate)), name, int(rate), sample_rate)


def _check_file(path: str) -> None:
  if not os.path.exists(path):
    raise AudioError(path, "file not found")
  if not os.path.isfile(path):
    raise AudioError(path, "not a regular file")
  if os.path.getsize(path) == 0:
    raise AudioError(path, "empty file (0 bytes)")


_SF_ERRORS = (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError)


def _unreadable(path: str, e: Exception) -> AudioError:
  return AudioError(path, f"unreadable or corrupt audio file ({type(e).__name__}: {e})")


def load_audio(path: str | os.PathLike, sample_rate: int = 16000) -> np.ndarray:
  """Reads an audio file as mono float32 `(S,)` at `sample_rate` Hz.

  Multi-channel audio is down-mixed by averaging the channels; a file at another rate is resampled
  with soxr (high quality); a file already at `sample_rate` is returned unresampled.

  Raises:
    AudioError: the message starts with `path`: missing, not a file, unreadable or corrupt, no
      samples, shorter than 100 ms, NaN/infinite samples or all zeros.
  """
  path = os.fspath(path)
  _check_file(path)
  try:
    data, file_rate = sf.read(path, dtype="float32", always_2d=True)
  except _SF_ERRORS as e:
    raise _unreadable(path, e) from e
  if data.shape[0] == 0:
    raise AudioError(path, "contains no samples")
  # Validated at the file's own rate, so messages report its duration; NaN/inf survive the mean.
  return _resample(validate_wave(_to_mono(data), path, file_rate), path, file_rate, sample_rate)


def duration(path: str | os.PathLike) -> float:
  """The file's duration in seconds from its header (nothing decoded).

  Raises:
    AudioError: missing, not a file, empty, or a header soundfile cannot read.
  """
  with _open(os.fspath(path)) as f:
    return f.frames / float(f.samplerate)


def _open(path: str) -> sf.SoundFile:
  _check_file(path)
  try:
    return sf.SoundFile(path)
  except _SF_ERRORS as e:
    raise _unreadable(path, e) from e


def read_blocks(path: str | os.PathLike, sample_rate: int = 16000,
                block_s: float = 10.0) -> Iterator[np.ndarray]:
  """A file as consecutive mono float32 blocks at `sample_rate` (about `block_s` seconds each),
  holding one block at a time: read with `SoundFile.read(frames)`, down-mixed, checked, and
  resampled with soxr's `ResampleStream` (the filter's state carried across blocks), so the
  blocks concatenated equal `load_audio(path, sample_rate)` sample for sample.

  Raises (from the generator, as soon as it is known):
    AudioError: what `load_audio` rejects; NaN/inf at the first block holding one (the message
      gives the first such sample's index), digital silence after the last block.
  """
  path = os.fspath(path)
  with _open(path) as f:
    rate, total = f.samplerate, f.frames
    if total == 0:
      raise AudioError(path, "contains no samples")
    if total / float(rate) < MIN_DURATION_S:  # validate_wave's message, from the header
      validate_wave(np.ones(total, np.float32), path, rate)
    stream = (soxr.ResampleStream(rate, sample_rate, 1, dtype="float32", quality="HQ")
              if rate != sample_rate else None)
    step = max(1, int(block_s * rate))
    start, nonzero = 0, False
    while True:
      try:
        data = f.read(step, dtype="float32", always_2d=True)
      except _SF_ERRORS as e:
        raise _unreadable(path, e) from e
      last = data.shape[0] < step or start + data.shape[0] >= total
      wave = _to_mono(data)
      bad = ~np.isfinite(wave)
      if bad.any():
        raise AudioError(path, f"NaN or infinite samples (first at sample "
                         f"{start + int(np.argmax(bad))})")
      nonzero = nonzero or bool(np.any(wave))
      start += data.shape[0]
      if last and not nonzero:
        raise AudioError(path, "all samples are zero (digital silence)")
      if stream is not None:
        try:
          wave = stream.resample_chunk(wave, last=last)
        except (RuntimeError, ValueError) as e:
          raise AudioError(path, f"cannot resample from {rate} Hz to {sample_rate} Hz: {e}") from e
      if wave.size:
        yield np.ascontiguousarray(wave, np.float32)
      if last:
        return
