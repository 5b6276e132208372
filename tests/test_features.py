"""Tests for ssa_jax.features against independent oracles.

Oracles: python_speech_features' `delta` for Δ/ΔΔ, a plain numpy STFT (scipy window, np.fft) for the
static channel's framing, the librosa reference for the JAX path, numpy moments for normalisation.
"""

from __future__ import annotations

import hypothesis
import hypothesis.strategies as st
import librosa
import numpy as np
import pytest
import scipy.signal
import soxr
from python_speech_features.base import delta as psf_delta

from ssa_jax import features, frontend
from ssa_jax.config import base_config

CFG = base_config().features
SETTINGS = hypothesis.settings(max_examples=12, deadline=None, derandomize=True)


def speech_like(seconds: float, seed: int, rate: int = 16000) -> np.ndarray:
  """A harmonic tone (f0 ~140 Hz with vibrato), syllable-rate amplitude modulation, a little noise."""
  rng = np.random.default_rng(seed)
  t = np.arange(int(rate * seconds)) / rate
  f0 = 140.0 * (1 + 0.05 * np.sin(2 * np.pi * 5.5 * t)) * (1 + 0.2 * rng.random())
  phase = 2 * np.pi * np.cumsum(f0) / rate
  tone = sum(np.sin(k * phase) / k for k in range(1, 25))
  envelope = 0.5 * (1 + np.sin(2 * np.pi * 4.0 * t + rng.random() * 6)) ** 2
  wave = 0.2 * envelope * tone + 0.003 * rng.standard_normal(t.size)
  return wave.astype(np.float32)


def noise(seconds: float, seed: int) -> np.ndarray:
  return (0.1 * np.random.default_rng(seed).standard_normal(int(16000 * seconds))).astype(np.float32)


def rel_error(got: np.ndarray, ref: np.ndarray) -> np.ndarray:
  """Per channel: max |got - ref| / max |ref| over all frames and bands.

  The error is relative to the channel's scale (its largest magnitude), not element-wise: Δ and ΔΔ
  cross zero, where an element-wise relative error is meaningless.
  """
  return np.abs(got - ref).max(axis=(0, 1)) / np.abs(ref).max(axis=(0, 1))


# --- frame count -----------------------------------------------------------------------------


def _moments(x: np.ndarray, min_std: float) -> tuple[np.ndarray, np.ndarray]:
  """The oracle of the speaker statistics: mean and floored population std over axis 0 of
  `x (n, M, C)`, whole-array float64 -> float32."""
  x = x.astype(np.float64)
  mean = x.mean(axis=0)
  std = np.sqrt(np.mean((x - mean) ** 2, axis=0))
  return mean.astype(np.float32), np.maximum(std, min_std).astype(np.float32)

def test_num_frames_formula():
  assert features.num_frames(1600, CFG) == 8  # 100 ms
  assert features.num_frames(48000, CFG) == 298  # 3 s
  assert features.num_frames(399, CFG) == 0
  assert features.num_frames(400, CFG) == 1
  assert features.num_frames(559, CFG) == 1
  assert features.num_frames(560, CFG) == 2


@SETTINGS
@hypothesis.given(seconds=st.floats(0.1, 20.0), rate=st.integers(8000, 48000),
                  seed=st.integers(0, 2**16))
def test_frame_count_any_length_and_rate(seconds, rate, seed):
  n = max(int(round(seconds * rate)), int(np.ceil(0.1 * rate)))
  wave = (0.1 * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)
  feats = features.log_mel_3d(wave, sample_rate=rate, cfg=CFG)
  resampled = soxr.resample(wave, rate, 16000, quality="HQ") if rate != 16000 else wave
  expected = 1 + (resampled.size - 400) // 160
  assert feats.shape == (expected, 40, 3) and feats.dtype == np.float32
  assert np.isfinite(feats).all()
  duration = n / rate
  # 25 ms bound of the formula, plus one 16 kHz sample for the resampler's length rounding.
  assert abs(feats.shape[0] * 0.010 - duration) < 0.025 + 1 / 16000


# --- the librosa reference against independent oracles -----------------------------------------

@pytest.mark.parametrize("make", [noise, speech_like])
def test_deltas_equal_python_speech_features(make):
  feats = features.log_mel_3d(make(2.0, seed=1), 16000, CFG)
  static, d1, d2 = feats[..., 0], feats[..., 1], feats[..., 2]
  ref_d1 = psf_delta(static.astype(np.float64), 2)  # (frames, features)
  ref_d2 = psf_delta(ref_d1, 2)
  np.testing.assert_allclose(d1, ref_d1, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(d2, ref_d2, rtol=1e-5, atol=1e-5)


def test_static_equals_numpy_stft_with_documented_framing():
  """Frame t = samples [160 t, 160 t + 400), periodic Hamming, |rfft_512|^2, Slaney mel, log."""
  wave = speech_like(1.3, seed=2)
  feats = features.log_mel_3d(wave, 16000, CFG)
  n = 1 + (wave.size - 400) // 160
  frames = np.stack([wave[160 * t:160 * t + 400] for t in range(n)]).astype(np.float64)
  window = scipy.signal.get_window("hamming", 400, fftbins=True)
  power = np.abs(np.fft.rfft(frames * window, n=512)) ** 2
  mel_fb = librosa.filters.mel(sr=16000, n_fft=512, n_mels=40, fmin=0.0, fmax=8000.0,
                               dtype=np.float64)
  static = np.log(power @ mel_fb.T + 1e-6)
  assert feats.shape == (n, 40, 3)
  np.testing.assert_allclose(feats[..., 0], static, rtol=1e-4, atol=1e-4)


def test_log_mel_3d_rejects_short_and_non_mono():
  with pytest.raises(ValueError, match="shorter than one window"):
    features.log_mel_3d(np.ones(399, np.float32), 16000, CFG)
  with pytest.raises(ValueError, match="mono"):
    features.log_mel_3d(np.ones((2, 1600), np.float32), 16000, CFG)


# --- the batched JAX path against the librosa reference ----------------------------------------

# Largest |JAX - librosa| over a channel's largest |librosa|, per channel. The README quotes the
# rfft bound (measured 1.3e-6 for rfft, 3.0e-6 for matmul, float32 on a CPU).
BATCH_VS_LIBROSA = {"rfft": 2e-6, "matmul": 5e-6}


@pytest.mark.parametrize("dft", ["rfft", "matmul"])
def test_batch_matches_librosa(dft):
  waves = [noise(3.0, 0), speech_like(2.37, 1), noise(0.1, 2), speech_like(1.0, 3),
           speech_like(0.0253, 4), noise(1.5173, 5)]  # 0.0253 s = 404 samples: one frame
  lengths = np.array([w.size for w in waves])
  batch = np.zeros((len(waves), lengths.max()), np.float32)
  for i, w in enumerate(waves):
    batch[i, :w.size] = w
  feats, mask = features.log_mel_3d_batch(batch, lengths, CFG, dft=dft)
  feats, mask = np.asarray(feats), np.asarray(mask)
  assert feats.shape == (6, features.num_frames(lengths.max(), CFG), 40, 3)
  refs = [features.log_mel_3d(w, 16000, CFG) for w in waves]
  for i, ref in enumerate(refs):
    n = ref.shape[0]
    assert n == features.num_frames(lengths[i], CFG)
    np.testing.assert_array_equal(mask[i], np.arange(feats.shape[1]) < n)
    assert not feats[i, n:].any()  # padded frames are exactly 0
  got = np.concatenate([feats[i, :r.shape[0]] for i, r in enumerate(refs)])
  ref = np.concatenate(refs)
  assert (rel_error(got, ref) <= BATCH_VS_LIBROSA[dft]).all(), rel_error(got, ref)
  # The utterance-end 'nearest' clamp: the last real frames match the unpadded reference too.
  np.testing.assert_allclose(feats[1, refs[1].shape[0] - 3:refs[1].shape[0]], refs[1][-3:],
                             rtol=1e-3, atol=1e-3)


def test_batch_does_not_read_padding():
  wave = speech_like(1.2, seed=7)
  batch = np.zeros((2, 24000), np.float32)
  batch[:, :wave.size] = wave
  batch[1, wave.size:] = 5.0  # garbage after the real samples
  feats, mask = features.log_mel_3d_batch(batch, np.array([wave.size, wave.size]), CFG)
  np.testing.assert_array_equal(np.asarray(feats[0]), np.asarray(feats[1]))
  np.testing.assert_array_equal(np.asarray(mask[0]), np.asarray(mask[1]))


@SETTINGS
@hypothesis.given(lengths=st.lists(st.integers(0, 8000), min_size=3, max_size=3))
def test_batch_mask_marks_exactly_the_real_frames(lengths):
  rng = np.random.default_rng(sum(lengths))
  batch = np.zeros((3, 8000), np.float32)
  for i, n in enumerate(lengths):
    batch[i, :n] = 0.1 * rng.standard_normal(n)
  feats, mask = features.log_mel_3d_batch(batch, np.array(lengths), CFG)
  feats, mask = np.asarray(feats), np.asarray(mask)
  for i, n in enumerate(lengths):
    real = 1 + (n - 400) // 160 if n >= 400 else 0
    np.testing.assert_array_equal(mask[i], np.arange(mask.shape[1]) < real)
    assert np.isfinite(feats[i]).all() and not feats[i, real:].any()


def test_extract_input_order_and_few_compilations():
  waves = [speech_like(s, seed=i) for i, s in enumerate([1.0, 0.3, 2.2, 1.05, 0.5, 1.9, 0.31])]
  before = frontend._log_mel_3d_batch._cache_size()
  out = features.extract(waves, CFG, batch_size=3)
  compiled = frontend._log_mel_3d_batch._cache_size() - before
  # 3 batches (sorted: 0.3/0.31/0.5 s, 1.0/1.05/1.9 s, 2.2 s) -> at most 3 buckets.
  assert compiled <= 3
  assert len(out) == len(waves)
  for w, f in zip(waves, out):
    ref = features.log_mel_3d(w, 16000, CFG)
    assert f.shape == ref.shape
    assert (rel_error(f, ref) <= 1e-4).all()
  with pytest.raises(ValueError, match="wave 1 has 100 samples"):
    features.extract([waves[0], np.ones(100, np.float32)], CFG)


def test_extract_wave_whose_frames_fill_its_bucket():
  # 100 frames = the smallest bucket exactly, plus 159 trailing samples that no frame reads.
  wave = speech_like((99 * 160 + 400 + 159) / 16000, seed=9)
  (out,) = features.extract([wave], CFG)
  ref = features.log_mel_3d(wave, 16000, CFG)
  assert out.shape == ref.shape == (100, 40, 3)
  assert (rel_error(out, ref) <= 1e-4).all()


def test_bucket_frames_is_monotone_and_bounded():
  previous = 0
  sizes = set()
  for f in range(1, 2000):
    b = features.bucket_frames(f)
    assert f <= b <= max(100, int(np.ceil(f * 1.25 / 25) * 25) + 25)
    assert b >= previous
    previous = b
    sizes.add(b)
  assert len(sizes) <= 16  # 20 s in at most 16 compiled shapes


# --- segmentation ------------------------------------------------------------------------------

@SETTINGS
@hypothesis.given(total=st.integers(1, 400), seg=st.integers(2, 60), min_frac=st.floats(0, 1))
def test_segments_reassemble_the_features(total, seg, min_frac):
  min_frames = int(min_frac * seg)
  feats = np.random.default_rng(total).standard_normal((total, 2, 3)).astype(np.float32) + 3.0
  segs, mask = features.segment(feats, seg, min_frames)
  n = segs.shape[0]
  assert segs.shape == (n, seg, 2, 3) and mask.shape == (n, seg) and mask.dtype == bool
  real = segs[mask]
  kept = real.shape[0]
  np.testing.assert_array_equal(real, feats[:kept])
  assert not segs[~mask].any()
  dropped = total - kept
  assert dropped == 0 or (dropped < min_frames and n >= 1 and kept % seg == 0)
  assert n >= 1
  if total < seg:
    assert n == 1 and kept == total
  # Real frames are a prefix of each segment.
  for m in mask:
    assert (np.diff(m.astype(int)) <= 0).all()


def test_segment_examples():
  feats = np.ones((720, 40, 3), np.float32)
  segs, mask = features.segment(feats[:650], 300, 100)  # tail of 50 < 100: dropped
  assert segs.shape == (2, 300, 40, 3) and mask.all()
  segs, mask = features.segment(feats[:720], 300, 100)  # tail of 120 kept, padded
  assert segs.shape == (3, 300, 40, 3) and mask[2].sum() == 120
  segs, mask = features.segment(feats[:8], 300, 100)  # short utterance: one padded segment
  assert segs.shape == (1, 300, 40, 3) and mask.sum() == 8
  with pytest.raises(ValueError, match="no frames"):
    features.segment(feats[:0])


# --- per-speaker normalisation -----------------------------------------------------------------

def _segments(seed=0, n=12, t=20, m=4, c=3):
  rng = np.random.default_rng(seed)
  speakers = np.array(["a", "b", "c"] * (n // 3))
  offset = {"a": 0.0, "b": 5.0, "c": -3.0}
  scale = {"a": 1.0, "b": 3.0, "c": 0.2}
  segs = np.stack([rng.standard_normal((t, m, c)) * scale[s] + offset[s] for s in speakers])
  mask = np.ones((n, t), bool)
  for i in range(n):
    mask[i, t - rng.integers(0, t // 2):] = False
  segs[~mask] = 0.0
  return segs.astype(np.float32), mask, speakers


def test_normalized_speakers_have_zero_mean_unit_std():
  segs, mask, spk = _segments()
  stats = features.fit_speaker_stats(segs, mask, spk)
  out = features.normalize(segs, mask, spk, stats)
  assert out.dtype == np.float32 and out.shape == segs.shape
  assert not out[~mask].any()
  for s in np.unique(spk):
    real = out[spk == s][mask[spk == s]].astype(np.float64)  # (frames, M, C)
    np.testing.assert_allclose(real.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(real.std(axis=0), 1.0, atol=1e-4)
    # The stored statistics are numpy's moments of the raw real frames.
    raw = segs[spk == s][mask[spk == s]].astype(np.float64)
    i = stats.speakers.index(s)
    np.testing.assert_allclose(stats.mean[i], raw.mean(axis=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stats.std[i], raw.std(axis=0), rtol=1e-5)


def test_stats_use_only_fitted_real_frames():
  segs, mask, spk = _segments()
  train = np.arange(len(spk)) < 9
  stats = features.fit_speaker_stats(segs[train], mask[train], spk[train])
  changed = segs.copy()
  changed[~train] += 100.0  # held-out segments
  changed[~mask] = 77.0  # padded frames of every segment
  again = features.fit_speaker_stats(changed[train], mask[train], spk[train])
  for field in ("mean", "std", "global_mean", "global_std"):
    np.testing.assert_array_equal(getattr(stats, field), getattr(again, field))
  out = features.normalize(changed, mask, spk, stats)
  assert not out[~mask].any()


def test_unseen_speaker_fallbacks():
  segs, mask, spk = _segments()
  seen = spk != "b"
  stats = features.fit_speaker_stats(segs[seen], mask[seen], spk[seen])
  raw = segs[~seen][mask[~seen]].astype(np.float64)
  glob = features.normalize(segs[~seen], mask[~seen], spk[~seen], stats, fallback="global")
  allreal = segs[seen][mask[seen]].astype(np.float64)
  np.testing.assert_allclose(glob[mask[~seen]], (raw - allreal.mean(0)) / allreal.std(0),
                             rtol=1e-4, atol=1e-4)
  own = features.normalize(segs[~seen], mask[~seen], spk[~seen], stats, fallback="self")
  np.testing.assert_allclose(own[mask[~seen]].mean(0), 0.0, atol=1e-5)
  np.testing.assert_allclose(own[mask[~seen]].std(0), 1.0, atol=1e-4)
  with pytest.raises(ValueError, match="fallback"):
    features.normalize(segs, mask, spk, stats, fallback="zero")


def test_constant_band_is_floored_not_infinite():
  segs, mask, spk = _segments()
  segs[..., 1, 0] = np.where(mask, -13.8, 0.0)  # a band at the log floor everywhere
  stats = features.fit_speaker_stats(segs, mask, spk)
  assert (stats.std > 0).all()
  out = features.normalize(segs, mask, spk, stats)
  assert np.isfinite(out).all() and not out[..., 1, 0].any()


@pytest.mark.parametrize("ids", [["a", "b", "c"], [3, 1, 2]])
def test_stats_round_trip_through_npz_without_pickle(tmp_path, ids):
  segs, mask, spk = _segments()
  spk = np.array([ids[["a", "b", "c"].index(s)] for s in spk])
  stats = features.fit_speaker_stats(segs, mask, spk)
  np.savez(tmp_path / "stats.npz", **stats.to_arrays())
  with np.load(tmp_path / "stats.npz", allow_pickle=False) as z:
    back = features.SpeakerStats.from_arrays(z)
  assert back.speakers == stats.speakers
  np.testing.assert_array_equal(features.normalize(segs, mask, spk, back),
                                features.normalize(segs, mask, spk, stats))


# --- statistics and normalisation from row indices, a chunk at a time (no whole copies) -------


@pytest.mark.parametrize("chunk", [2, 256])
def test_indexed_stats_and_normalize_equal_the_copying_forms(monkeypatch, chunk):
  monkeypatch.setattr(frontend, "_CHUNK", chunk)  # 2: many chunks per speaker
  segs, mask, spk = _segments()
  idx = np.array([7, 0, 3, 4, 10, 1, 8, 5])  # unordered, a subset
  stats = features.fit_speaker_stats(segs, mask, spk, index=idx)
  ref = features.fit_speaker_stats(segs[idx], mask[idx], spk[idx])
  assert stats.speakers == ref.speakers
  np.testing.assert_array_equal(stats.frames, ref.frames)
  for field in ("mean", "std", "global_mean", "global_std"):
    np.testing.assert_allclose(getattr(stats, field), getattr(ref, field), rtol=1e-6, atol=1e-7)
  # ... and both are the whole-array float64 moments (the implementation before chunking).
  for i, s in enumerate(stats.speakers):
    rows = idx[spk[idx] == s]
    m, d = _moments(segs[rows][mask[rows]], 1e-3)
    np.testing.assert_allclose(stats.mean[i], m, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(stats.std[i], d, rtol=1e-6)
  g_mean, g_std = _moments(segs[idx][mask[idx]], 1e-3)
  np.testing.assert_allclose(stats.global_mean, g_mean, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(stats.global_std, g_std, rtol=1e-6)
  for fallback in ("global", "self"):
    part = features.fit_speaker_stats(segs, mask, spk, index=idx[spk[idx] != "b"])
    buf = np.full((len(idx),) + segs.shape[1:], np.nan, np.float32)
    got = features.normalize(segs, mask, spk, part, fallback, index=idx, out=buf)
    assert got is buf
    want = features.normalize(segs[idx], mask[idx], spk[idx], part, fallback)
    np.testing.assert_array_equal(got, want)
    # the pre-chunking formula: (x - mean) / std per speaker, padded frames 0
    i = part.speakers.index("a")
    rows = idx[spk[idx] == "a"]
    np.testing.assert_array_equal(got[spk[idx] == "a"],
                                  np.where(mask[rows][..., None, None],
                                           (segs[rows] - part.mean[i]) / part.std[i], 0.0))
  with pytest.raises(ValueError, match="out must be"):
    features.normalize(segs, mask, spk, stats, index=idx, out=np.zeros((1,) + segs.shape[1:]))


def test_indexed_stats_and_normalize_make_no_whole_copies(monkeypatch):
  """Memory: beyond the output, fitting and normalising hold a few chunks, not the data."""
  import tracemalloc  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(frontend, "_CHUNK", 64)  # 64 of the 2048 rows: temporaries ~ 4 chunks
  rng = np.random.default_rng(0)
  n, t, m, c = 2048, 100, 10, 3
  segs = rng.standard_normal((n, t, m, c), dtype=np.float32)  # 24.6 MB
  mask = np.ones((n, t), bool)
  mask[:, 80:] = False
  spk = np.repeat(np.array(["a", "b", "c", "d"]), n // 4)
  idx = np.arange(0, n, 1)
  out = np.empty_like(segs)
  tracemalloc.start()
  try:
    stats = features.fit_speaker_stats(segs, mask, spk, index=idx)
    _, fit_peak = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    features.normalize(segs, mask, spk, stats, index=idx, out=out)
    _, norm_peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  assert fit_peak < 0.2 * segs.nbytes, fit_peak  # the copying form needed ~4x segs.nbytes
  assert norm_peak < 0.2 * segs.nbytes, norm_peak
