"""Tests of the built-in generated corpus (ssa_jax/corpora/synthetic.py).

Acoustic checks use librosa (YIN F0, RMS, spectral centroid) as the independent measurement.
"""

from __future__ import annotations

import os

import librosa
import ml_collections
import numpy as np
import pytest
import soundfile as sf

from ssa_jax import io as io_lib
from ssa_jax.config import EMOTIONS
from ssa_jax.corpora import synthetic
from ssa_jax.corpora.base import CorpusError

SR = 16000


def _cfg(num_speakers=2, num_phrases=2, repetitions=1, seed=0) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(num_speakers=num_speakers, num_phrases=num_phrases,
                                        repetitions=repetitions, seed=seed))


def _voiced_f0(y: np.ndarray) -> np.ndarray:
  """YIN F0 (Hz) on the frames whose RMS is within 20 dB of the loudest frame."""
  f0 = librosa.yin(y, fmin=60, fmax=500, sr=SR, frame_length=1024, hop_length=160)
  rms = librosa.feature.rms(y=y, frame_length=1024, hop_length=160)[0]
  n = min(len(f0), len(rms))
  return f0[:n][rms[:n] > 0.1 * rms.max()]


def _stats(y: np.ndarray) -> np.ndarray:
  """A handful of per-utterance acoustic statistics (librosa)."""
  f0 = _voiced_f0(y)
  st = 12 * np.log2(f0 / 100)
  rms = librosa.feature.rms(y=y, frame_length=400, hop_length=160)[0]
  active = rms > 0.1 * rms.max()
  cent = librosa.feature.spectral_centroid(y=y, sr=SR, n_fft=512, hop_length=160)[0][:len(rms)]
  return np.array([np.median(st), np.std(st), 20 * np.log10(np.mean(rms[active])),
                   np.mean(active), len(y) / SR, np.log(np.mean(cent[active]))])


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
  """3 speakers x 4 phrases x 2 repetitions x 4 emotions (96 utterances)."""
  cache = tmp_path_factory.mktemp("cache")
  listing = synthetic.generate(_cfg(3, 4, 2), str(cache), EMOTIONS)
  audio = {u.utt_id: sf.read(u.path, dtype="float32")[0] for u in listing.utterances}
  return listing, audio


def test_synthesize_is_deterministic_per_utterance():
  a = synthetic.synthesize(1, 1, 2, 0, _cfg())
  b = synthetic.synthesize(1, 1, 2, 0, _cfg())
  assert a.dtype == np.float32 and a.ndim == 1
  np.testing.assert_array_equal(a, b)
  # Another seed, another repetition, another emotion: different audio.
  assert not np.array_equal(a[:16000], synthetic.synthesize(1, 1, 2, 0, _cfg(seed=1))[:16000])
  rep = synthetic.synthesize(1, 1, 2, 1, _cfg(repetitions=2))
  assert not np.array_equal(a[:16000], rep[:16000])
  # Reproducible on its own: does not depend on what was generated before.
  synthetic.synthesize(0, 0, 0, 0, _cfg(seed=5))
  np.testing.assert_array_equal(a, synthetic.synthesize(1, 1, 2, 0, _cfg()))


def test_generate_is_deterministic(tmp_path):
  la = synthetic.generate(_cfg(), str(tmp_path / "a"), EMOTIONS)
  lb = synthetic.generate(_cfg(), str(tmp_path / "b"), EMOTIONS)
  key = lambda l: [(u.utt_id, u.speaker, u.label, u.phrase, os.path.basename(u.path)) for u in l.utterances]
  assert key(la) == key(lb)
  for ua, ub in zip(la.utterances, lb.utterances):
    with open(ua.path, "rb") as fa, open(ub.path, "rb") as fb:
      assert fa.read() == fb.read(), ua.utt_id
  lc = synthetic.generate(_cfg(seed=1), str(tmp_path / "a"), EMOTIONS)
  assert lc.root != la.root
  ya = sf.read(la.utterances[0].path)[0]
  yc = sf.read(lc.utterances[0].path)[0]
  assert ya.shape != yc.shape or not np.array_equal(ya, yc)


def test_listing_structure(small_corpus):
  listing, audio = small_corpus
  assert listing.corpus == "synthetic" and listing.classes == EMOTIONS and not listing.skipped
  assert len(listing.utterances) == 3 * 4 * 2 * 4
  ids = [u.utt_id for u in listing.utterances]
  assert len(set(ids)) == len(ids)
  assert {u.speaker for u in listing.utterances} == {"spk00F", "spk01M", "spk02F"}
  assert {u.phrase for u in listing.utterances} == {"p00", "p01", "p02", "p03"}
  counts = listing.counts()
  assert all(n == 8 for row in counts.values() for n in row.values())
  for u in listing.utterances:
    assert os.path.isabs(u.path) and os.path.basename(u.path) == f"{u.utt_id}.wav"
    assert u.utt_id == f"{u.speaker}_{u.label}_{u.phrase}_r{u.utt_id[-1]}"
    info = sf.info(u.path)
    assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "PCM_16")


def test_audio_is_valid(small_corpus):
  listing, audio = small_corpus
  for uid, y in audio.items():
    assert 1.0 <= len(y) / SR <= 6.0, uid
    assert np.all(np.isfinite(y)), uid
    assert np.max(np.abs(y)) <= 1.0, uid
    assert np.sqrt(np.mean(y ** 2)) > 1e-3, uid  # far above the -75 dBFS floor: speech is there
  # A direct float32 render is in range too (no 16-bit clipping hides anything).
  y = synthetic.synthesize(0, 3, 2, 1, _cfg(3, 4, 2))
  assert np.max(np.abs(y)) <= 1.0 and np.all(np.isfinite(y))


def test_both_sexes_have_documented_f0(small_corpus):
  listing, audio = small_corpus
  med = {}
  for spk in ("spk00F", "spk01M"):
    f0 = np.concatenate([_voiced_f0(audio[u.utt_id]) for u in listing.utterances if u.speaker == spk])
    med[spk] = np.median(f0)
  assert 150 < med["spk00F"] < 320, med
  assert 70 < med["spk01M"] < 160, med
  assert med["spk00F"] > 1.25 * med["spk01M"], med  # base F0 ranges differ by >= 1.30x


def _per_emotion_means(listing, audio, speaker, column):
  stats = {u.utt_id: _stats(audio[u.utt_id]) for u in listing.utterances if u.speaker == speaker}
  return np.array([np.mean([stats[u.utt_id][column] for u in listing.utterances
                            if u.speaker == speaker and u.label == e]) for e in EMOTIONS])


def test_emotion_strategies_differ_between_speakers(small_corpus):
  listing, audio = small_corpus
  speakers = ("spk00F", "spk01M", "spk02F")
  for column in (0, 2):  # median F0 (semitones), level (dB)
    orders = {tuple(np.argsort(_per_emotion_means(listing, audio, s, column))) for s in speakers}
    assert len(orders) > 1, (column, orders)
  # The designed strategies themselves: the speakers map the classes to distinct permutations.
  strategies = [synthetic.speaker_strategies(0, s, 4) for s in range(3)]
  assert not np.allclose(strategies[0], strategies[1])


def test_emotions_separable_within_speaker(small_corpus):
  """Leave-one-out nearest centroid on 6 librosa statistics, trained per speaker."""
  listing, audio = small_corpus
  correct = total = 0
  for spk in sorted({u.speaker for u in listing.utterances}):
    utts = [u for u in listing.utterances if u.speaker == spk]
    x = np.array([_stats(audio[u.utt_id]) for u in utts])
    x = (x - x.mean(0)) / (x.std(0) + 1e-9)
    y = np.array([EMOTIONS.index(u.label) for u in utts])
    for i in range(len(utts)):
      keep = np.arange(len(utts)) != i
      cent = np.stack([x[keep & (y == k)].mean(0) for k in range(4)])
      correct += int(np.argmin(np.linalg.norm(cent - x[i], axis=1)) == y[i])
      total += 1
  assert correct / total > 0.7, correct / total  # chance is 0.25


def test_cache_is_reused(tmp_path):
  listing = synthetic.generate(_cfg(), str(tmp_path), EMOTIONS)
  files = sorted(os.listdir(listing.root))
  assert files == sorted([os.path.basename(u.path) for u in listing.utterances] + ["listing.json"])
  mtimes = {f: os.stat(os.path.join(listing.root, f)).st_mtime_ns for f in files}
  again = synthetic.generate(_cfg(), str(tmp_path), EMOTIONS)
  assert again == listing
  assert {f: os.stat(os.path.join(listing.root, f)).st_mtime_ns for f in files} == mtimes
  assert sorted(os.listdir(listing.root)) == files


def test_incomplete_folder_is_regenerated(tmp_path):
  listing = synthetic.generate(_cfg(), str(tmp_path), EMOTIONS)
  first = listing.utterances[0].path
  with open(first, "rb") as f:
    good = f.read()
  # No listing.json (interrupted run) and a truncated wav left behind: everything is redone.
  os.remove(os.path.join(listing.root, "listing.json"))
  with open(first, "wb") as f:
    f.write(good[:100])
  stale = io_lib.temporary_name(os.path.join(listing.root, "stale.wav"))  # a killed writer's
  with open(stale, "wb") as f:
    f.write(b"x")
  os.utime(stale, (0, 0))  # old: no live generation owns it
  again = synthetic.generate(_cfg(), str(tmp_path), EMOTIONS)
  assert again == listing
  with open(first, "rb") as f:
    assert f.read() == good
  assert not any(".tmp" in n for n in os.listdir(listing.root))
  # A wav missing under a complete listing: also regenerated.
  os.remove(listing.utterances[-1].path)
  assert synthetic.generate(_cfg(), str(tmp_path), EMOTIONS) == listing
  assert os.path.isfile(listing.utterances[-1].path)


def test_interrupted_generation_is_not_used(tmp_path, monkeypatch):
  calls = []
  real = synthetic._write_one

  def failing(job):
    if len(calls) == 3:
      raise KeyboardInterrupt
    calls.append(job)
    real(job)

  monkeypatch.setattr(synthetic, "_write_one", failing)
  with pytest.raises(KeyboardInterrupt):
    synthetic.generate(_cfg(), str(tmp_path), EMOTIONS)
  folder = synthetic.corpus_dir(_cfg(), str(tmp_path), EMOTIONS)
  assert not os.path.exists(os.path.join(folder, "listing.json"))
  monkeypatch.setattr(synthetic, "_write_one", real)
  listing = synthetic.generate(_cfg(), str(tmp_path), EMOTIONS)
  assert len(listing.utterances) == 2 * 2 * 4 and all(os.path.isfile(u.path) for u in listing.utterances)


def test_cache_key_depends_on_config_and_classes(tmp_path):
  base = synthetic.corpus_dir(_cfg(), str(tmp_path), EMOTIONS)
  assert base.startswith(str(tmp_path) + os.sep + "synthetic-")
  assert synthetic.corpus_dir(_cfg(seed=1), str(tmp_path), EMOTIONS) != base
  assert synthetic.corpus_dir(_cfg(num_phrases=3), str(tmp_path), EMOTIONS) != base
  assert synthetic.corpus_dir(_cfg(), str(tmp_path), ("a", "b", "c", "d")) != base
  assert synthetic.corpus_dir(_cfg(), "~/x", EMOTIONS).startswith(os.path.expanduser("~/x"))


def test_custom_class_names(tmp_path):
  listing = synthetic.generate(_cfg(1, 1, 1), str(tmp_path), ("calm", "excited"))
  assert [u.label for u in listing.utterances] == ["calm", "excited"]
  assert listing.utterances[0].utt_id == "spk00F_calm_p00_r0"


@pytest.mark.parametrize("field,value", [("num_speakers", 0), ("repetitions", -1), ("seed", -2),
                                         ("num_phrases", 1.5)])
def test_bad_config_is_a_clear_error(tmp_path, field, value):
  cfg = _cfg().to_dict()  # a plain mapping, so a wrongly typed value gets through to the check
  cfg[field] = value
  with pytest.raises(CorpusError, match=field):
    synthetic.generate(cfg, str(tmp_path), EMOTIONS)


def test_bad_classes_and_indices_are_clear_errors(tmp_path):
  with pytest.raises(CorpusError, match="classes"):
    synthetic.generate(_cfg(), str(tmp_path), ("only",))
  with pytest.raises(CorpusError, match="duplicate"):
    synthetic.generate(_cfg(), str(tmp_path), ("a", "a"))
  with pytest.raises(CorpusError, match="speaker index 2"):
    synthetic.synthesize(2, 0, 0, 0, _cfg())
  with pytest.raises(CorpusError, match="emotion index 4"):
    synthetic.synthesize(0, 0, 4, 0, _cfg())
