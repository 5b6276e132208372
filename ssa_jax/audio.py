"""Audio loading: any file soundfile reads -> mono float32 at the model's sample rate (docs/DESIGN.md §2).

Channels are averaged, other sample rates are resampled with soxr. Anything unusable (missing,
unreadable or corrupt file, no samples, shorter than 100 ms, NaN/inf samples, digital silence)
raises `AudioError`, whose message starts with the file path and says what is wrong; library
exceptions are re-raised as `AudioError` (chained with `from`), never leaked from soundfile/soxr.
"""

from __future__ import annotations

import os

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


def load_audio(path: str | os.PathLike, sample_rate: int = 16000) -> np.ndarray:
  """Reads an audio file as mono float32 `(S,)` at `sample_rate` Hz.

  Multi-channel audio is down-mixed by averaging the channels; a file at another rate is resampled
  with soxr (high quality); a file already at `sample_rate` is returned unresampled.

  Raises:
    AudioError: the message starts with `path`: missing, not a file, unreadable or corrupt, no
      samples, shorter than 100 ms, NaN/infinite samples or all zeros.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise AudioError(path, "file not found")
  if not os.path.isfile(path):
    raise AudioError(path, "not a regular file")
  if os.path.getsize(path) == 0:
    raise AudioError(path, "empty file (0 bytes)")
  try:
    data, file_rate = sf.read(path, dtype="float32", always_2d=True)
  except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError) as e:
    raise AudioError(path, f"unreadable or corrupt audio file ({type(e).__name__}: {e})") from e
  if data.shape[0] == 0:
    raise AudioError(path, "contains no samples")
  # Validated at the file's own rate, so messages report its duration; NaN/inf survive the mean.
  wave = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
  return resample(validate_wave(wave, path, file_rate), path, file_rate, sample_rate)


def resample(wave: np.ndarray, name: str | os.PathLike, rate: int,
             sample_rate: int = 16000) -> np.ndarray:
  """A mono float32 wave `(S,)` at `rate` Hz -> `(S',)` at `sample_rate` (soxr, high quality;
  unchanged at the same rate), contiguous.

  Raises:
    AudioError: soxr cannot resample it (the message starts with `name`).
  """
  if rate != sample_rate:
    try:
      wave = soxr.resample(wave, rate, sample_rate, quality="HQ").astype(np.float32, copy=False)
    except (RuntimeError, ValueError) as e:
      raise AudioError(name, f"cannot resample from {rate} Hz to {sample_rate} Hz: {e}") from e
  return np.ascontiguousarray(wave)
