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


# --------------------------------------------------------------------------- arrays and embeddings


def _p(results, key="probabilities"):
  return np.array([[s[key][c] for c in sorted(s[key])] for r in results for s in r["segments"]])


def test_predict_waves_equals_predict_files_on_the_same_audio(predictor, tmp_path):
  rng = np.random.default_rng(5)
  waves = [_tone(1.3, 16000, 1).astype(np.float32),                      # mono float
           _tone(0.9, 44100, 2, channels=2).astype(np.float32),          # (samples, channels)
           (_tone(0.7, 16000, 4) * 20000).astype(np.int16)]              # int16 PCM
  rates = [16000, 44100, 16000]
  paths = []
  for i, (w, sr) in enumerate(zip(waves, rates)):
    paths.append(str(tmp_path / f"w{i}.wav"))
    sf.write(paths[-1], w, sr, subtype="PCM_16" if w.dtype == np.int16 else "FLOAT")
  from_files = predict.predict_files(predictor, paths, pooling="mean")
  from_arrays = [predict.predict_waves(predictor, w, sr, names=[f"x{i}"], pooling="mean")[0]
                 for i, (w, sr) in enumerate(zip(waves, rates))]
  assert [r["name"] for r in from_arrays] == ["x0", "x1", "x2"]
  np.testing.assert_allclose(_p(from_arrays), _p(from_files), atol=1e-6)
  for a, f in zip(from_arrays, from_files):
    assert a["label"] == f["label"] and a["duration_s"] == f["duration_s"]
    assert [s["end_s"] for s in a["segments"]] == [s["end_s"] for s in f["segments"]]
  # A list at one rate runs together and gives the same as one at a time.
  both = predict.predict_waves(predictor, [waves[0], waves[2]], 16000, pooling="mean")
  assert [r["name"] for r in both] == ["wave[0]", "wave[1]"]
  np.testing.assert_allclose(_p(both), _p([from_files[0], from_files[2]]), atol=1e-6)


@pytest.mark.parametrize("wave,words", [
    (np.full(8000, np.nan, np.float32), ["bad:", "NaN"]),
    (np.zeros((2, 16000), np.float32), ["bad:", "looks like (channels, samples)"]),
    (np.zeros((4, 4, 4), np.float32), ["bad:", "shape (4, 4, 4)"]),
    (np.zeros(16000, np.float32), ["bad:", "all samples are zero"]),
    (np.ones(100, np.float32), ["bad:", "too short"]),
    (np.ones(16000, np.uint8), ["bad:", "unsigned"]),
])
def test_predict_waves_names_a_bad_array(predictor, wave, words):
  good = _tone(1.0, 16000, 1)
  with pytest.raises(ValueError) as e:
    predict.predict_waves(predictor, [good, wave], 16000, names=["good", "bad"])
  for w in words:
    assert w in str(e.value)


def test_embeddings_equal_the_models_own_z_em(predictor, tmp_path):
  """z_em per segment and their mean against model.apply on segments built here from the
  librosa reference features and numpy statistics (no predict code on the reference side).
  SSA-CRNN's z_sp: tests/test_cli_eval.py (`bin.predict --embeddings`)."""
  p = predictor
  fcfg = p.config.features
  wave = _tone(2.1, 22050, 7, channels=2)
  sf.write(tmp_path / "s.wav", wave, 22050, subtype="FLOAT")
  from_array = predict.embed(p, wave, 22050)[0]
  bad = str(tmp_path / "bad.wav")
  open(bad, "wb").write(b"RIFFjunk")
  from_file, failed = predict.embed(p, [tmp_path / "s.wav", bad])
  assert failed["path"] == bad and failed["error"].startswith(bad)
  f = features.log_mel_3d(wave.astype(np.float32).mean(axis=1), 22050, fcfg)
  assert f.shape[0] == 208  # 2.1 s: 5 segments of 40 frames, the tail of 8 < 10 dropped
  f = f[:5 * SEG]
  x = ((f - f.mean(axis=0)) / np.maximum(f.std(axis=0), 1e-3)).reshape(5, SEG, -1, 3)
  _, aux = jax.jit(p.model.apply)(p.variables, x, np.ones((5, SEG), bool))
  emb_dim = int(p.config.model.embed_dim)
  for got in (from_array, from_file):
    assert got["z_em_segments"].shape == (5, emb_dim) and got["z_em"].shape == (emb_dim,)
    np.testing.assert_allclose(got["z_em_segments"], np.asarray(aux["z_em"]), atol=2e-4)
    np.testing.assert_allclose(got["z_em"], np.asarray(aux["z_em"]).mean(axis=0), atol=2e-4)
    np.testing.assert_allclose(got["start_s"], np.arange(5) * SEG * 0.01)
    assert "z_sp" not in got  # ACRNN: no speaker branch
  assert from_array["name"] == "wave[0]" and from_file["path"] == str(tmp_path / "s.wav")
  with pytest.raises(ValueError, match="arrays need their sample_rate"):
    predict.embed(p, wave)


@pytest.mark.parametrize("fmt", predict.FORMATS)
def test_formats_written_a_file_at_a_time(predictor, audio_dir, fmt):
  files = predict.find_audio_files([audio_dir])
  results = predict.predict_files(predictor, files)
  classes = list(predictor.classes)
  f = predict.Formatter(fmt, classes, {"classes": classes})
  text = f.head() + "".join(f.result(r) for r in results) + f.tail(1)
  good = [r for r in results if "error" not in r]
  if fmt == "json":
    assert json.loads(text) == json.loads(json.dumps({"classes": classes, "files": results,
                                                      "failed": 1}))
    empty = predict.Formatter(fmt, classes)
    assert json.loads(empty.head() + empty.tail(0)) == {"files": [], "failed": 0}
  elif fmt == "jsonl":
    assert [json.loads(l) for l in text.splitlines()] == json.loads(json.dumps(results))
  elif fmt == "csv":
    import csv, io  # pylint: disable=g-import-not-at-top,multiple-imports
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == ["path", "segment", "start_s", "end_s", "label", *classes]
    assert len(rows) == sum(len(r["segments"]) for r in good)
    np.testing.assert_allclose([[float(x[c]) for c in classes] for x in rows],
                               [[s["probabilities"][c] for c in classes]
                                for r in good for s in r["segments"]], atol=1e-6)
    assert [float(x["end_s"]) for x in rows] == [round(s["end_s"], 2) for r in good
                                                  for s in r["segments"]]
  else:
    assert text.count("segment ") == sum(len(r["segments"]) for r in good)
    assert "corrupt" not in text  # a failed file is the CLI's error line, not a table entry


def test_stack_embeddings(predictor, audio_dir):
  files = predict.find_audio_files([audio_dir])
  emb = predict.embed(predictor, files)
  arrays = predict.stack_embeddings(emb)
  good = [e for e in emb if "error" not in e]
  assert list(arrays["paths"]) == [e["path"] for e in good]
  assert list(arrays["failed"]) == [str(audio_dir / "sub" / "corrupt.wav")]
  assert arrays["z_em"].shape == (4, int(predictor.config.model.embed_dim))
  assert arrays["z_em_segments"].shape == (8, arrays["z_em"].shape[1])  # 3 + 2 + 1 + 2 segments
  np.testing.assert_array_equal(arrays["segment_file"], [0, 0, 0, 1, 1, 2, 3, 3])
  np.testing.assert_allclose(arrays["z_em"][1], arrays["z_em_segments"][3:5].mean(axis=0),
                             rtol=1e-6)


# --------------------------------------------------------------------------- long files


def test_read_blocks_equal_load_audio(tmp_path):
  path = str(tmp_path / "x.wav")
  sf.write(path, _tone(1.7, 44100, 2, channels=2), 44100, subtype="FLOAT")
  blocks = list(predict.audio.read_blocks(path, 16000, block_s=0.13))
  assert len(blocks) > 10
  np.testing.assert_array_equal(np.concatenate(blocks), predict.audio.load_audio(path, 16000))
  nan = _tone(1.0, 16000, 3)
  nan[12345] = np.nan
  sf.write(path, nan, 16000, subtype="FLOAT")
  with pytest.raises(predict.audio.AudioError, match=r"x\.wav: NaN or infinite samples \(first "
                     r"at sample 12345\)"):
    list(predict.audio.read_blocks(path, 16000, block_s=0.1))
  sf.write(path, np.zeros(20000), 16000)
  with pytest.raises(predict.audio.AudioError, match="digital silence"):
    list(predict.audio.read_blocks(path, 16000, block_s=0.1))


@pytest.mark.parametrize("backend", ["jax", "librosa"])
def test_stream_features_equal_the_whole_wave(predictor, backend):
  fcfg = predictor.config.features.copy_and_resolve_references()
  fcfg.backend = backend
  wave = _tone(2.0, 16000, 3).astype(np.float32)
  whole = features.compute([wave], fcfg)[0]  # 198 frames
  cuts = np.cumsum([1000, 777, 3, 5000, 9000])
  pieces = list(features.stream_features(np.split(wave, cuts), fcfg, chunk_frames=40))
  assert [first for first, _ in pieces] == [0, 40, 80, 120, 160]
  assert [f.shape[0] for _, f in pieces[:-1]] == [40] * 4
  scale = np.abs(whole).max(axis=(0, 1))
  np.testing.assert_allclose(np.concatenate([f for _, f in pieces]) / scale, whole / scale,
                             atol=1e-6)


@pytest.mark.parametrize("norm,seconds,segments", [
    ("self", 40.37, 101),   # 4035 frames: 100 segments of 40 and a tail of 35 >= 10, kept
    ("train", 40.05, 100)])  # 4003 frames: the tail of 3 < 10 dropped
def test_a_streamed_long_file_equals_the_whole_file(predictor, tmp_path, norm, seconds, segments):
  """~40 s at 44.1 kHz stereo, streamed 2 segments (0.8 s) at a time: the same per-segment
  posteriors and timeline as read whole."""
  path = str(tmp_path / "long.wav")
  rng = np.random.default_rng(0)
  t = np.arange(int(seconds * 44100)) / 44100
  x = 0.3 * np.sin(2 * np.pi * (150 + 40 * np.sin(t / 3)) * t) * (1 + np.sin(t)) \
      + 0.05 * rng.normal(size=t.shape)
  sf.write(path, np.stack([x, 0.6 * x], axis=1), 44100)
  whole = predict.predict_files(predictor, [path], norm=norm)[0]
  ticks = []
  streamed = next(predict.iter_predict_files(predictor, [path], norm=norm, stream_above_s=0,
                                             block_segments=2, progress=ticks.append))
  assert len(whole["segments"]) == segments
  np.testing.assert_allclose(_p([streamed]), _p([whole]), atol=1e-5)
  assert [s["end_s"] for s in streamed["segments"]] == [s["end_s"] for s in whole["segments"]]
  assert streamed["duration_s"] == whole["duration_s"] and streamed["label"] == whole["label"]
  assert len(ticks) > 40 and sum(ticks) == pytest.approx(whole["duration_s"])
