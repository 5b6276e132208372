"""Tests for ssa_jax.audio: decoding, down-mix, resampling and every bad-audio error."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from ssa_jax.audio import AudioError, load_audio, validate_wave


def _sine(freq: float, rate: int, seconds: float, amp: float = 0.5) -> np.ndarray:
  t = np.arange(int(round(rate * seconds))) / rate
  return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_mono_16k_float_is_returned_unchanged(tmp_path):
  wave = _sine(440.0, 16000, 0.5)
  path = tmp_path / "a.wav"
  sf.write(path, wave, 16000, subtype="FLOAT")
  out = load_audio(path)
  assert out.dtype == np.float32 and out.shape == wave.shape
  np.testing.assert_array_equal(out, wave)


def test_pcm16_is_scaled_to_unit_range(tmp_path):
  wave = _sine(440.0, 16000, 0.5, amp=0.5)
  path = tmp_path / "a.wav"
  sf.write(path, wave, 16000, subtype="PCM_16")
  out = load_audio(path)
  np.testing.assert_allclose(out, wave, atol=1.0 / 32768 + 1e-7)


def test_stereo_is_downmixed_by_averaging(tmp_path):
  left = _sine(300.0, 16000, 0.3, amp=0.6)
  right = _sine(1000.0, 16000, 0.3, amp=0.2)
  path = tmp_path / "st.flac"
  sf.write(path, np.stack([left, right], axis=1), 16000, subtype="PCM_24")
  out = load_audio(path)
  assert out.ndim == 1 and out.shape == left.shape
  np.testing.assert_allclose(out, (left + right) / 2, atol=1e-6)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_other_rates_are_resampled_to_16k(tmp_path, rate):
  seconds = 0.75
  path = tmp_path / f"r{rate}.wav"
  sf.write(path, _sine(440.0, rate, seconds), rate, subtype="FLOAT")
  out = load_audio(path, sample_rate=16000)
  n_in = int(round(rate * seconds))
  assert abs(out.size - n_in * 16000 / rate) <= 1
  # Independent check of the content: the analytic 440 Hz sine sampled at 16 kHz (edges excluded,
  # where the resampling filter sees the signal's start and end).
  ref = _sine(440.0, 16000, out.size / 16000)
  np.testing.assert_allclose(out[200:-200], ref[200:-200], atol=2e-3)


def _assert_audio_error(path, match: str):
  with pytest.raises(AudioError, match=match) as info:
    load_audio(path)
  assert str(info.value).startswith(str(path))
  return info.value


def test_missing_file(tmp_path):
  _assert_audio_error(tmp_path / "nope.wav", "not found")


def test_directory_is_not_a_file(tmp_path):
  _assert_audio_error(tmp_path, "not a regular file")


def test_zero_byte_file(tmp_path):
  path = tmp_path / "empty.wav"
  path.write_bytes(b"")
  _assert_audio_error(path, "empty file")


def test_text_file_named_wav(tmp_path):
  path = tmp_path / "text.wav"
  path.write_text("this is not audio, just some text\n" * 20)
  err = _assert_audio_error(path, "unreadable or corrupt")
  assert isinstance(err.__cause__, Exception)  # chained from the soundfile error


def test_truncated_header(tmp_path):
  good = tmp_path / "good.wav"
  sf.write(good, _sine(440.0, 16000, 0.5), 16000)
  path = tmp_path / "trunc.wav"
  path.write_bytes(good.read_bytes()[:20])
  _assert_audio_error(path, "unreadable or corrupt")


def test_no_samples(tmp_path):
  path = tmp_path / "nosamples.wav"
  sf.write(path, np.zeros(0, np.float32), 16000)
  _assert_audio_error(path, "no samples")


def test_shorter_than_100ms(tmp_path):
  path = tmp_path / "short.wav"
  sf.write(path, _sine(440.0, 16000, 0.099), 16000)
  _assert_audio_error(path, "too short")


def test_exactly_100ms_is_accepted(tmp_path):
  path = tmp_path / "ok.wav"
  sf.write(path, _sine(440.0, 16000, 0.1), 16000)
  assert load_audio(path).size == 1600


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(tmp_path, bad):
  wave = _sine(440.0, 16000, 0.5)
  wave[1234] = bad
  path = tmp_path / "nan.wav"
  sf.write(path, wave, 16000, subtype="FLOAT")
  _assert_audio_error(path, "NaN or infinite.*sample 1234")


def test_non_finite_in_one_stereo_channel(tmp_path):
  wave = np.stack([_sine(440.0, 16000, 0.5)] * 2, axis=1)
  wave[99, 1] = np.nan
  path = tmp_path / "nan2.wav"
  sf.write(path, wave, 16000, subtype="FLOAT")
  _assert_audio_error(path, "NaN or infinite")


def test_all_zero(tmp_path):
  path = tmp_path / "silence.wav"
  sf.write(path, np.zeros(8000, np.float32), 16000)
  _assert_audio_error(path, "all samples are zero")


def test_validate_wave_in_memory():
  good = _sine(440.0, 16000, 0.2)
  out = validate_wave(good.astype(np.float64), "utt1", 16000)
  assert out.dtype == np.float32
  with pytest.raises(AudioError, match="^utt1: expected a mono"):
    validate_wave(np.zeros((2, 4000)), "utt1", 16000)
  with pytest.raises(AudioError, match="^utt1: too short"):
    validate_wave(good[:1000], "utt1", 16000)
  with pytest.raises(AudioError, match="^utt1: all samples are zero"):
    validate_wave(np.zeros(4000), "utt1", 16000)
