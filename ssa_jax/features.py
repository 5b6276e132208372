"""3-D log-Mel features (static, Δ, ΔΔ), 3 s segments and per-speaker normalisation (docs/DESIGN.md §2).

Two implementations of the same front end:

* `log_mel_3d(wave, sample_rate, cfg) -> (F, M, 3)`: the per-file librosa reference.
* `log_mel_3d_batch(waves (B, S), lengths (B,), cfg) -> ((B, F, M, 3), (B, F))`: a jitted JAX
  version for many zero-padded utterances at once; `extract(waves, cfg)` drives it over a list of
  utterances with a few length buckets (a handful of compilations, not one per length).

`compute(waves, cfg)` picks one of them by `cfg.backend` ("jax" | "librosa"); the data cache and
prediction both call it. The JAX version, the 3 s segments (`segment`) and the per-speaker
normalisation (`SpeakerStats`, `fit_speaker_stats`, `normalize`) live in `ssa_jax/frontend.py`,
which imports numpy and jax only (the light runtime `ssa_jax.serving` uses them); this module
adds librosa's window and mel filterbank (`constants`), the reference, and config handling.

Both compute, for a wave at `cfg.sample_rate` (16 kHz):

* framing with `center=False`: frame t covers samples `[t·hop, t·hop + win)`, so a wave of S ≥ win
  samples has `F = 1 + (S - win) // hop` frames (`num_frames`; 100 ms = 1600 samples -> 8 frames,
  3 s -> 298 frames) and no frame reads past the real samples;
* a periodic Hamming window of `win_length` (25 ms) samples, zero-padded to `n_fft` (512), the power
  spectrum, librosa's (Slaney) mel filterbank (`n_mels` = 40 bands, fmin..fmax), then
  `log(mel + log_floor)` (natural log, a fixed floor, no `top_db` clip);
* Δ = the regression delta with N = (delta_width - 1) / 2 = 2 over time,
  `Δ_t = Σ_n n (x_{t+n} - x_{t-n}) / (2 Σ_n n²)`, frames beyond the utterance's first/last real
  frame replaced by that frame (librosa `delta(mode='nearest')` = python_speech_features `delta`);
  ΔΔ = the same delta of Δ; both over the whole utterance, before segmenting;
* channels stacked last: `(F, M, 3)` = (static, Δ, ΔΔ), float32.

librosa's `stft(center=False)` frames `n_fft` samples with the window centred in them; the reference
therefore pads the wave with `(n_fft - win) / 2` zeros on each side first, which gives exactly the
frames above (the padding falls under the window's zeros) and the same frame count.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import chex
import jax
import librosa
import ml_collections
import numpy as np
import soxr

from ssa_jax import frontend
from ssa_jax.config import base_config
# The pure numpy / JAX part lives in `ssa_jax.frontend` (the light runtime imports it too); its
# names are this module's as well.
from ssa_jax.frontend import (FrontEnd, Moments, SpeakerStats, bucket_frames,  # noqa: F401
                              combine_moments, fit_speaker_stats, frame_moments, normalize,
                              segment, stats_of_moments)

# ----------------------------------------------------------------------------------------------
# Parameters
# ----------------------------------------------------------------------------------------------


def _front_end(cfg: Any) -> FrontEnd:
  if isinstance(cfg, FrontEnd):
    return cfg
  return FrontEnd.from_config(base_config().features if cfg is None else cfg)


def num_frames(num_samples: int, cfg: ml_collections.ConfigDict | FrontEnd | None = None) -> int:
  """`frontend.num_frames` with `cfg` = `config.features` (default `base_config().features`):
  1 + (S - win_length) // hop_length frames, 0 below one window."""
  return frontend.num_frames(num_samples, _front_end(cfg))


def constants(cfg: ml_collections.ConfigDict | FrontEnd | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
  """(window (win_length,), mel filterbank (n_fft // 2 + 1, n_mels)) float32, from librosa: the
  inputs of `frontend.log_mel_3d_batch` (an export stores them)."""
  return _constants(_front_end(cfg))


@functools.lru_cache(maxsize=8)
def _constants(fe: FrontEnd) -> tuple[np.ndarray, np.ndarray]:
  """(window (win,), mel filterbank (n_fft//2+1, M)) as float32 numpy arrays."""
  window = librosa.filters.get_window("hamming", fe.win_length, fftbins=True).astype(np.float32)
  mel = librosa.filters.mel(sr=fe.sample_rate, n_fft=fe.n_fft, n_mels=fe.n_mels, fmin=fe.fmin,
                            fmax=fe.fmax, dtype=np.float32)
  return window, np.ascontiguousarray(mel.T)


# ----------------------------------------------------------------------------------------------
# Batched JAX implementation (`ssa_jax.frontend`) with librosa's constants
# ----------------------------------------------------------------------------------------------


def log_mel_3d_batch(waves: jax.Array | np.ndarray, lengths: jax.Array | np.ndarray,
                     cfg: ml_collections.ConfigDict | FrontEnd | None = None,
                     dft: str = "rfft") -> tuple[jax.Array, jax.Array]:
  """`frontend.log_mel_3d_batch` for `config.features` (default `base_config().features`):
  zero-padded waves `(B, S)` with real lengths `(B,)` at `cfg.sample_rate` -> (feats
  `(B, F, M, 3)` float32, row b's first `num_frames(lengths[b])` frames equal to
  `log_mel_3d(waves[b, :lengths[b]])`, the rest 0; mask `(B, F)` bool); dft "rfft" | "matmul"."""
  fe = _front_end(cfg)
  return frontend.log_mel_3d_batch(waves, lengths, fe, *_constants(fe), dft=dft)


def extract(waves: Sequence[np.ndarray], cfg: ml_collections.ConfigDict | None = None,
            batch_size: int = 64, dft: str = "rfft") -> list[np.ndarray]:
  """`frontend.extract` for `config.features`: one `(F_i, M, 3)` float32 array per mono wave at
  `cfg.sample_rate`, in the input order (a few length buckets, each compiled once).

  Raises:
    ValueError: a wave is not 1-D or shorter than one window (the message gives its index).
  """
  fe = _front_end(cfg)
  return frontend.extract(waves, fe, *_constants(fe), batch_size=batch_size, dft=dft)


# ----------------------------------------------------------------------------------------------
# librosa reference
# ----------------------------------------------------------------------------------------------


def log_mel_3d(wave: np.ndarray, sample_rate: int = 16000,
               cfg: ml_collections.ConfigDict | None = None) -> np.ndarray:
  """The per-file librosa reference: mono `(S,)` wave -> `(F, n_mels, 3)` float32.

  Args:
    wave: mono samples at `sample_rate`; resampled with soxr to `cfg.sample_rate` if different.
    sample_rate: rate of `wave` in Hz.
    cfg: `config.features` (default `base_config().features`).

  Returns:
    `(F, M, 3)` float32 with F = `num_frames(len(resampled wave))`; channels (static, Δ, ΔΔ).

  Raises:
    ValueError: not 1-D, or fewer samples than one window.
  """
  fe = _front_end(cfg)
  wave = np.asarray(wave, dtype=np.float32)
  if wave.ndim != 1:
    raise ValueError(f"log_mel_3d: expected a mono 1-D wave, got shape {wave.shape}")
  if sample_rate != fe.sample_rate:
    wave = soxr.resample(wave, sample_rate, fe.sample_rate, quality="HQ").astype(np.float32)
  frames = num_frames(wave.size, fe)
  if frames == 0:
    raise ValueError(f"log_mel_3d: {wave.size} samples at {fe.sample_rate} Hz is shorter than one "
                     f"window ({fe.win_length} samples)")
  lpad = (fe.n_fft - fe.win_length) // 2  # = librosa's pad_center of the window inside n_fft
  y = np.pad(wave, (lpad, fe.n_fft - fe.win_length - lpad))
  mel = librosa.feature.melspectrogram(
      y=y, sr=fe.sample_rate, n_fft=fe.n_fft, hop_length=fe.hop_length, win_length=fe.win_length,
      window="hamming", center=False, power=2.0, n_mels=fe.n_mels, fmin=fe.fmin, fmax=fe.fmax)
  static = np.log(mel + np.float32(fe.log_floor))  # (M, F)
  d1 = librosa.feature.delta(static, width=fe.delta_width, mode="nearest", axis=-1)
  d2 = librosa.feature.delta(d1, width=fe.delta_width, mode="nearest", axis=-1)
  out = np.stack([static, d1, d2], axis=-1).transpose(1, 0, 2).astype(np.float32)
  chex.assert_shape(out, (frames, fe.n_mels, 3))
  return out


BACKENDS = ("jax", "librosa")


def compute(waves: Sequence[np.ndarray], cfg: ml_collections.ConfigDict) -> list[np.ndarray]:
  """`(F_i, M, 3)` features of mono waves at `cfg.sample_rate`, in order, with `cfg.backend`:
  "jax" -> the batched `extract`, "librosa" -> the per-file reference `log_mel_3d`.

  Raises:
    ValueError: an unknown backend, or a wave `extract` rejects.
  """
  backend = str(cfg.backend)
  if backend not in BACKENDS:
    raise ValueError(f"unknown features.backend {backend!r}; choose one of {', '.join(BACKENDS)}")
  if not waves:
    return []
  if backend == "jax":
    return extract(list(waves), cfg)
  return [log_mel_3d(w, int(cfg.sample_rate), cfg) for w in waves]


def stream_features(blocks: Iterable[np.ndarray], cfg: ml_collections.ConfigDict,
                    chunk_frames: int) -> Iterator[tuple[int, np.ndarray]]:
  """`compute`'s features of a long wave given as consecutive blocks, `chunk_frames` frames at a
  time, holding about one chunk of samples: yields `(first_frame, (n, M, 3))` for frames
  `[first_frame, first_frame + n)`, consecutive from 0, each chunk (but the last, which ends the
  wave) exactly `chunk_frames` frames.

  Every frame equals the whole wave's (`compute([np.concatenate(blocks)], cfg)[0]`, to float32
  rounding): a chunk is computed with `2·delta_n` context frames on each side (Δ reads frames
  t ± delta_n, ΔΔ reads Δ at t ± delta_n), and the deltas clamp at the wave's real ends only.

  Args:
    blocks: mono float32 waves at `cfg.sample_rate` (e.g. `audio.read_blocks`), any sizes.
    chunk_frames: frames per chunk (> 0).
  """
  if chunk_frames <= 0:
    raise ValueError(f"stream_features: chunk_frames must be > 0, got {chunk_frames}")
  fe = _front_end(cfg)
  hop, win, ctx = fe.hop_length, fe.win_length, 2 * fe.delta_n
  buf, buf_start, first = np.zeros(0, np.float32), 0, 0  # buf holds samples [buf_start, ...)

  def chunk(stop: int | None) -> np.ndarray:  # frames [first, stop) of the wave (None: to its end)
    f0 = max(0, first - ctx)
    end = None if stop is None else (stop + ctx - 1) * hop + win - buf_start
    return compute([buf[f0 * hop - buf_start:end]], cfg)[0][first - f0:
                                                            None if stop is None else stop - f0]

  for block in blocks:
    buf = np.concatenate([buf, np.asarray(block, np.float32)])
    while buf_start + buf.size >= (first + chunk_frames + ctx - 1) * hop + win:
      yield first, chunk(first + chunk_frames)
      first += chunk_frames
      keep = max(0, first - ctx) * hop  # the next chunk's first sample
      buf, buf_start = buf[keep - buf_start:], keep
  if num_frames(buf_start + buf.size, fe) > first:
    yield first, chunk(None)
