"""Prediction on audio files with a tiny model built here: probabilities, pooling recomputed from
the returned segment posteriors, any sample rate / stereo / 0.1 s, bad files reported, the CLI."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import soundfile as sf

from conftest import tiny_config
from ssa_jax import audio, features, predict
from ssa_jax.models import build_model

SEG = 40  # 0.4 s segments: files of 0.1 to 1.3 s give 1 to 3 of them (the counts below)


def predict_config():
  """The shared tiny ACRNN; segments of SEG frames (at least 10 kept); batches of 4 segments."""
  return tiny_config("acrnn", overrides={"features.segment_frames": SEG,
                                         "features.min_segment_frames": 10,
                                         "train.eval_batch_size": 4})


def _tone(seconds, sr, seed, channels=1):
  rng = np.random.default_rng(seed)
  t = np.arange(int(seconds * sr)) / sr
  x = 0.3 * np.sin(2 * np.pi * (150 + 50 * seed) * t) + 0.05 * rng.normal(size=t.shape)
  return np.stack([x, 0.5 * x], axis=1) if channels == 2 else x


@pytest.fixture(scope="module")
def predictor():
  c = predict_config()
  model = build_model(c.model)
  mels = int(c.features.n_mels)
  x = np.zeros((1, SEG, mels, 3), np.float32)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), x, np.ones((1, SEG), bool))
  rng = np.random.default_rng(0)
  segs = rng.normal(size=(6, SEG, mels, 3)).astype(np.float32)
  stats = features.fit_speaker_stats(segs, np.ones((6, SEG), bool), np.array([0, 0, 1, 1, 2, 2]))
  return predict.Predictor(model, variables, c, tuple(c.data.classes), stats)


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp("audio")
  sf.write(d / "a_16k.wav", _tone(1.3, 16000, 1), 16000)
  sf.write(d / "b_stereo_44k.wav", _tone(0.9, 44100, 2, channels=2), 44100)
  sf.write(d / "c_short.flac", _tone(0.1, 16000, 3), 16000)          # 0.1 s: 8 frames
  (d / "sub").mkdir()
  sf.write(d / "sub" / "d_8k.wav", _tone(0.7, 8000, 4), 8000)
  (d / "sub" / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
  (d / "notes.txt").write_text("not audio")
  return d


@pytest.mark.parametrize("pooling", ["max", "mean"])
def test_probabilities_and_pooling(predictor, audio_dir, pooling):
  files = predict.find_audio_files([audio_dir])
  assert [os.path.basename(f) for f in files] == ["a_16k.wav", "b_stereo_44k.wav", "c_short.flac",
                                                  "corrupt.wav", "d_8k.wav"]
  res = predict.predict_files(predictor, files, pooling=pooling)
  bad = [r for r in res if "error" in r]
  assert len(bad) == 1 and bad[0]["error"].startswith(str(audio_dir / "sub" / "corrupt.wav"))
  good = [r for r in res if "error" not in r]
  assert len(good) == 4
  n_segs = {os.path.basename(r["path"]): len(r["segments"]) for r in good}
  # Frames 1 + (S - 400) // 160 at 16 kHz: 128 -> 3 segments of 40 (tail of 8 < 10 dropped),
  # 88 -> 2, 8 -> 1 (a short file is one padded segment), 68 -> 2 (tail of 28 kept).
  assert n_segs == {"a_16k.wav": 3, "b_stereo_44k.wav": 2, "c_short.flac": 1, "d_8k.wav": 2}
  classes = list(predictor.classes)
  for r in good:
    p = np.array([r["probabilities"][c] for c in classes])
    assert p.sum() == pytest.approx(1.0, abs=1e-9) and np.all(p >= 0)
    seg = np.array([[s["probabilities"][c] for c in classes] for s in r["segments"]])
    np.testing.assert_allclose(seg.sum(axis=1), 1.0, atol=1e-5)
    pooled = seg.max(axis=0) if pooling == "max" else seg.mean(axis=0)
    np.testing.assert_allclose(p, pooled / pooled.sum(), rtol=1e-9)
    assert r["label"] == classes[int(np.argmax(pooled))]
    assert [s["label"] for s in r["segments"]] == [classes[i] for i in seg.argmax(axis=1)]
    assert r["pooling"] == pooling
  short = next(r for r in good if r["path"].endswith("c_short.flac"))
  assert short["segments"][0]["end_s"] == pytest.approx(0.08)  # 8 frames of 10 ms


def test_norm_train_uses_global_statistics(predictor, audio_dir):
  path = str(audio_dir / "a_16k.wav")
  f = features.compute([audio.load_audio(path)], predictor.config.features)[0]
  segs, mask = features.segment(f, SEG, 10)
  out = predict.normalize_utterance(segs, mask, "train", predictor.stats)
  ref = (segs - predictor.stats.global_mean) / predictor.stats.global_std
  np.testing.assert_allclose(out[mask], ref[mask], rtol=1e-5, atol=1e-5)
  assert np.all(out[~mask] == 0)
  own = predict.normalize_utterance(segs, mask, "self", predictor.stats)
  np.testing.assert_allclose(own[mask].mean(axis=0), 0.0, atol=1e-4)
  a = predict.predict_files(predictor, [path], norm="train")[0]
  b = predict.predict_files(predictor, [path], norm="self")[0]
  assert a["norm"] == "train" and b["norm"] == "self"
  assert a["segments"][0]["probabilities"] != b["segments"][0]["probabilities"]


def test_segment_outputs_match_a_direct_model_call(predictor, audio_dir):
  path = str(audio_dir / "b_stereo_44k.wav")
  r = predict.predict_files(predictor, [path], batch_size=2)[0]
  wave = sf.read(path)[0].mean(axis=1)
  f = features.log_mel_3d(wave.astype(np.float32), 44100, predictor.config.features)
  segs, mask = features.segment(f, SEG, 10)
  x = predict.normalize_utterance(segs, mask, "self", None)
  logits, _ = jax.jit(predictor.model.apply)(predictor.variables, x, mask)  # eval mode
  ref = np.asarray(jax.nn.softmax(logits))
  got = np.array([[s["probabilities"][c] for c in predictor.classes] for s in r["segments"]])
  np.testing.assert_allclose(got, ref, atol=2e-3)
