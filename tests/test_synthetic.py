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


def _cfg(num_speakers=2, num_phrases=2, repetitions=1, seed=0, **knobs) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(num_speakers=num_speakers, num_phrases=num_phrases,
                                        repetitions=repetitions, seed=seed, **knobs))


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


# ----------------------------------------------------------------------------------------------
# Corpus knobs: class_weights, strategies, num_speakers.

IEMOCAP_COUNTS = np.array([1099, 284, 289, 608])  # improvised IEMOCAP: neu, hap, ang, sad


def test_iemocap_weights_match_the_proportions():
  # Default sizes: 8 speakers x 12 phrases = 96 groups of 2 repetitions per balanced class.
  kept = synthetic.kept_phrases(_cfg(8, 12, 2, class_weights="iemocap"), 4)
  assert kept.shape == (8, 4, 12)
  counts = 2 * kept.sum(axis=(0, 2))
  # Hand computation: 96 groups x 1099 / 1099, x 284 / 1099 = 24.8, x 289 / 1099 = 25.2,
  # x 608 / 1099 = 53.1 groups, rounded, 2 utterances each.
  np.testing.assert_array_equal(counts, [192, 50, 50, 106])
  np.testing.assert_allclose(counts / counts.sum(), IEMOCAP_COUNTS / IEMOCAP_COUNTS.sum(), atol=0.003)
  assert kept.sum(axis=2).min() >= 2  # at least 2 phrases per (speaker, class)
  assert kept[:, 0].all()  # the largest class keeps every phrase
  # Deterministic from the seed; another seed keeps other phrases (same counts).
  np.testing.assert_array_equal(kept, synthetic.kept_phrases(_cfg(8, 12, 2, class_weights="iemocap"), 4))
  other = synthetic.kept_phrases(_cfg(8, 12, 2, seed=1, class_weights="iemocap"), 4)
  assert not np.array_equal(other, kept)
  np.testing.assert_array_equal(2 * other.sum(axis=(0, 2)), counts)
  for n in (10, 20):  # more speakers: the same proportions
    c = synthetic.kept_phrases(_cfg(n, 12, 2, class_weights="iemocap"), 4).sum(axis=(0, 2))
    np.testing.assert_allclose(c / c.sum(), IEMOCAP_COUNTS / IEMOCAP_COUNTS.sum(), atol=0.004)
  # Few phrases: the floor of 2 phrases per (speaker, class) wins over the proportions.
  few = synthetic.kept_phrases(_cfg(4, 4, 1, class_weights="iemocap"), 4)
  np.testing.assert_array_equal(few.sum(axis=2).min(axis=0), [4, 2, 2, 2])
  assert synthetic.kept_phrases(_cfg(8, 12, 2), 4).all()  # balanced: everything


def test_iemocap_corpus_drops_whole_repetition_groups(tmp_path):
  cfg = _cfg(4, 8, 2, class_weights="iemocap")
  listing = synthetic.generate(cfg, str(tmp_path), EMOTIONS)
  groups = {}
  for u in listing.utterances:
    groups.setdefault((u.speaker, u.label, u.phrase), []).append(u.utt_id)
  assert all(len(g) == 2 for g in groups.values())  # both repetitions or none
  per_class = {e: sum(u.label == e for u in listing.utterances) for e in EMOTIONS}
  kept = synthetic.kept_phrases(cfg, 4)
  assert per_class == {e: 2 * int(kept[:, i].sum()) for i, e in enumerate(EMOTIONS)}
  # Hand computation: 32 groups per class x (1, 284/1099, 289/1099, 608/1099), rounded.
  assert per_class == {"neu": 64, "hap": 16, "ang": 16, "sad": 36}
  for (spk, label, _), _ in groups.items():
    assert sum(1 for k in groups if k[:2] == (spk, label)) >= 2
  # A kept utterance is the balanced corpus's utterance (the knob only selects).
  u = next(u for u in listing.utterances if u.label == "hap")
  s, p, r = int(u.speaker[3:5]), int(u.phrase[1:]), int(u.utt_id[-1])
  y = synthetic.synthesize(s, p, EMOTIONS.index("hap"), r, _cfg(4, 8, 2))
  np.testing.assert_allclose(sf.read(u.path, dtype="float32")[0], y, atol=1.0 / 32768)


def _class_pair_diffs(vectors, pairs, classes_a, classes_b):
  """RMS per dimension of v[a, ea] - v[b, eb] over speaker pairs and class pairs."""
  d = [vectors[a][ea] - vectors[b][eb] for a, b in pairs for ea, eb in zip(classes_a, classes_b)]
  return float(np.sqrt(np.mean(np.square(d))))


def test_shared_strategies_agree_up_to_the_idiosyncratic_noise():
  pairs = [(a, b) for a in range(10) for b in range(a + 1, 10)]
  classes = range(4)
  shared = [synthetic.speaker_strategies(0, s, 4, "shared") for s in range(10)]
  per_speaker = [synthetic.speaker_strategies(0, s, 4, "per_speaker") for s in range(10)]
  # Two independent N(0, 0.4^2) offsets differ by N(0, 2 x 0.4^2): RMS 0.566 per dimension.
  assert 0.45 < _class_pair_diffs(shared, pairs, classes, classes) < 0.7
  assert _class_pair_diffs(per_speaker, pairs, classes, classes) > 1.0
  # Nearest class centroid of the other speakers, for each speaker: right everywhere under
  # shared (speaker-independent), often wrong under per_speaker.
  def loso_nearest_centroid(vectors):
    right = 0
    for s in range(len(vectors)):
      cent = np.mean([vectors[o] for o in range(len(vectors)) if o != s], axis=0)  # (4, 8)
      right += sum(int(np.argmin(np.linalg.norm(cent - vectors[s][e], axis=1)) == e) for e in classes)
    return right / (4 * len(vectors))
  assert loso_nearest_centroid(shared) == 1.0
  assert loso_nearest_centroid(per_speaker) < 0.7
  # The default mode is today's corpus: per_speaker is what speaker_strategies gave before.
  np.testing.assert_array_equal(per_speaker[3], synthetic.speaker_strategies(0, 3, 4))


@pytest.mark.parametrize("num_speakers", [8, 10, 20])
def test_swapped_groups_hold_both_sexes_and_swap_hap_and_ang(num_speakers):
  groups = [synthetic.speaker_group(s) for s in range(num_speakers)]
  names = [synthetic.speaker_name(s) for s in range(num_speakers)]
  for g in (0, 1):
    sexes = {n[-1] for n, k in zip(names, groups) if k == g}
    assert sexes == {"F", "M"}, (g, names, groups)
  assert abs(groups.count(0) - groups.count(1)) <= 1
  v = [synthetic.speaker_strategies(0, s, 4, "swapped") for s in range(num_speakers)]
  a_spk = [s for s in range(num_speakers) if groups[s] == 0]
  b_spk = [s for s in range(num_speakers) if groups[s] == 1]
  cross = [(a, b) for a in a_spk for b in b_spk]
  within = [(a, b) for a in a_spk for b in a_spk if a < b] + [(a, b) for a in b_spk for b in b_spk if a < b]
  hap, ang = EMOTIONS.index("hap"), EMOTIONS.index("ang")
  # Across the groups, A's hap is B's ang and the other way round (up to the noise, RMS 0.566) ...
  assert _class_pair_diffs(v, cross, [hap, ang], [ang, hap]) < 0.7
  assert _class_pair_diffs(v, cross, [hap, ang], [hap, ang]) > 0.8  # 1.30 |P_hap - P_ang| + noise
  # Each B speaker's hap is nearest to A's ang centroid (and its ang to A's hap), among A's classes.
  cent_a = np.mean([v[a] for a in a_spk], axis=0)
  for b in b_spk:
    assert np.argmin(np.linalg.norm(cent_a - v[b][hap], axis=1)) == ang, b
    assert np.argmin(np.linalg.norm(cent_a - v[b][ang], axis=1)) == hap, b
  # ... within a group they agree, and neu and sad agree everywhere.
  assert _class_pair_diffs(v, within, [hap, ang], [hap, ang]) < 0.7
  assert _class_pair_diffs(v, cross + within, [0, 3], [0, 3]) < 0.7


def test_strategy_modes_keep_the_class_separation_comparable():
  """Mean distance between a speaker's class strategies, 20 speakers: within 10 % across modes."""
  iu = np.triu_indices(4, 1)
  mean_sep = {}
  for mode in synthetic.STRATEGIES:
    d = [np.linalg.norm(v[:, None] - v[None], axis=-1)[iu]
         for v in (synthetic.speaker_strategies(0, s, 4, mode) for s in range(20))]
    mean_sep[mode] = float(np.mean(d))
    assert np.min(d) >= 2.0 - 1e-9 or mode == "per_speaker", (mode, np.min(d))
  ref = mean_sep["per_speaker"]
  assert all(abs(m / ref - 1) < 0.1 for m in mean_sep.values()), mean_sep


def test_many_speakers_alternate_sexes(tmp_path):
  listing = synthetic.generate(_cfg(20, 1, 1), str(tmp_path), ("neu", "ang"))
  speakers = sorted({u.speaker for u in listing.utterances})
  assert len(speakers) == 20 and len(listing.utterances) == 40
  assert sum(s.endswith("F") for s in speakers) == 10
  assert speakers[-1] == "spk19M"


def test_strategies_change_the_audio():
  base = synthetic.synthesize(1, 0, 1, 0, _cfg())
  np.testing.assert_array_equal(base, synthetic.synthesize(1, 0, 1, 0, _cfg(strategies="per_speaker")))
  for mode in ("shared", "swapped"):
    cfg = _cfg(num_speakers=4, strategies=mode)
    y = synthetic.synthesize(1, 0, 1, 0, cfg)
    assert y.shape != base.shape or not np.array_equal(y, base), mode


def test_cache_key_records_each_knob(tmp_path):
  old_style = synthetic.corpus_dir(_cfg(8, 12, 2), str(tmp_path), EMOTIONS)  # no knob fields
  explicit = synthetic.corpus_dir(_cfg(8, 12, 2, class_weights="balanced", strategies="per_speaker"),
                                  str(tmp_path), EMOTIONS)
  assert explicit == old_style  # defaults leave the default corpus where it was
  dirs = {synthetic.corpus_dir(_cfg(8, 12, 2, **{k: v}), str(tmp_path), EMOTIONS)
          for k, v in (("class_weights", "iemocap"), ("strategies", "shared"), ("strategies", "swapped"))}
  dirs |= {synthetic.corpus_dir(_cfg(8, 12, 2, class_weights="iemocap", strategies="swapped"),
                                str(tmp_path), EMOTIONS),
           synthetic.corpus_dir(_cfg(10, 12, 2), str(tmp_path), EMOTIONS)}
  assert len(dirs) == 5 and old_style not in dirs


def test_knob_recorded_in_listing(tmp_path):
  listing = synthetic.generate(_cfg(4, 2, 1, strategies="swapped"), str(tmp_path), EMOTIONS)
  import json
  meta = json.load(open(os.path.join(listing.root, "listing.json")))
  assert meta["config"]["strategies"] == "swapped" and "class_weights" not in meta["config"]


@pytest.mark.parametrize("knobs,classes,match", [
    (dict(strategies="personal"), EMOTIONS, "strategies must be one of .*'personal'"),
    (dict(class_weights="imbalanced"), EMOTIONS, "class_weights must be one of .*'imbalanced'"),
    (dict(class_weights=None), EMOTIONS, "class_weights .*None"),
    (dict(strategies="swapped", num_speakers=2), EMOTIONS, "num_speakers >= 4.*got 2"),
    (dict(strategies="swapped", num_speakers=4), ("neu", "hap"), "at least 3 classes, got 2"),
    (dict(class_weights="iemocap"), EMOTIONS + ("fear",), "4 classes, got 5"),
])
def test_bad_knob_is_a_clear_value_error(tmp_path, knobs, classes, match):
  cfg = _cfg(**{"num_speakers": 2, **knobs})
  with pytest.raises(ValueError, match=match):
    synthetic.generate(cfg, str(tmp_path), classes)
  assert not os.listdir(tmp_path)  # nothing written


# ----------------------------------------------------------------------------------------------
# The held-out test subset (test_phrases, test_speakers), voice_linked, many speakers.

# corpus_dir of base_config().data.synthetic before the test_* knobs existed (computed with that code).
DEFAULT_CORPUS_FOLDER = "synthetic-7a1369a45a1f"


def test_default_corpus_key_is_unchanged_by_the_test_knobs(tmp_path):
  from ssa_jax.config import base_config
  syn = base_config().data.synthetic
  assert (syn.test_phrases, syn.test_speakers) == (0, 0)
  assert os.path.basename(synthetic.corpus_dir(syn, str(tmp_path), EMOTIONS)) == DEFAULT_CORPUS_FOLDER
  old_style = synthetic.corpus_dir(_cfg(8, 12, 2), str(tmp_path), EMOTIONS)  # no test_* fields
  assert synthetic.corpus_dir(_cfg(8, 12, 2, test_phrases=0, test_speakers=0), str(tmp_path), EMOTIONS) == old_style
  dirs = {synthetic.corpus_dir(_cfg(8, 12, 2, **k), str(tmp_path), EMOTIONS)
          for k in (dict(test_phrases=1), dict(test_speakers=1), dict(test_phrases=1, test_speakers=1))}
  assert len(dirs) == 3 and old_style not in dirs


def _plan_counts(plan, n_classes):
  """subset -> (class counts, speaker -> count) of a corpus plan's repetition groups."""
  out = {}
  for s, e, p, subset in plan:
    cls, spk = out.setdefault(subset, (np.zeros(n_classes, int), {}))
    cls[e] += 1
    spk[s] = spk.get(s, 0) + 1
  return out


@pytest.mark.parametrize("class_weights", ["balanced", "iemocap"])
def test_test_subset_counts_are_balanced_whatever_the_class_weights(class_weights):
  cfg = _cfg(8, 12, 2, class_weights=class_weights, test_phrases=19, test_speakers=2)
  plan = synthetic.corpus_plan(cfg, 4)
  counts = _plan_counts(plan, 4)
  # Training part: exactly kept_phrases of the corpus without a test subset.
  kept = synthetic.kept_phrases(_cfg(8, 12, 2, class_weights=class_weights), 4)
  assert sorted((s, e, p) for s, e, p, sub in plan if sub == "") == sorted(zip(*np.nonzero(kept)))
  # Test part: 8 speakers x 19 phrases + 2 speakers x 31 phrases per class, x 2 repetitions.
  np.testing.assert_array_equal(2 * counts["test"][0], [2 * (8 * 19 + 2 * 31)] * 4)
  assert 2 * 8 * 19 == 304
  assert counts["test"][1] == {**{s: 19 * 4 for s in range(8)}, 8: 31 * 4, 9: 31 * 4}
  assert set(counts[""][1]) == set(range(8))  # test speakers have no training utterance
  for s, e, p, sub in plan:
    assert (sub == "test") == (s >= 8 or p >= 12), (s, e, p, sub)
  assert len(set((s, e, p) for s, e, p, _ in plan)) == len(plan)
  # Without the knobs: only the training part, unchanged.
  assert {sub for *_, sub in synthetic.corpus_plan(_cfg(8, 12, 2, class_weights=class_weights), 4)} == {""}


def test_generated_test_subset_is_marked_recorded_and_read_back(tmp_path):
  import json
  cfg = _cfg(2, 1, 1, test_phrases=1, test_speakers=1)
  classes = ("neu", "ang")
  listing = synthetic.generate(cfg, str(tmp_path), classes)
  subset = {u.utt_id: u.subset for u in listing.utterances}
  assert subset == {
      **{f"spk0{s}{'F' if s % 2 == 0 else 'M'}_{c}_p00_r0": "" for s in (0, 1) for c in classes},
      **{f"spk0{s}{'F' if s % 2 == 0 else 'M'}_{c}_p01_r0": "test" for s in (0, 1) for c in classes},
      **{f"spk02F_{c}_p0{p}_r0": "test" for c in classes for p in (0, 1)}}
  assert listing.subset_counts() == {"train": {"neu": 2, "ang": 2}, "test": {"neu": 4, "ang": 4}}
  meta = json.load(open(os.path.join(listing.root, "listing.json")))
  assert {u["utt_id"]: u.get("subset", "") for u in meta["utterances"]} == subset
  assert meta["config"]["test_phrases"] == 1 and meta["config"]["test_speakers"] == 1
  assert synthetic.generate(cfg, str(tmp_path), classes) == listing  # read back from the cache
  lines = listing.report().splitlines()
  assert lines[1].split()[-1] == "test" and lines[-1].split() == ["test", "4", "4", "8"]
  assert lines[-2].split() == ["train", "2", "2", "4"]
  # The training utterances are the corpus-without-test's, byte for byte.
  y = synthetic.synthesize(1, 0, 1, 0, _cfg(2, 1, 1), num_classes=2)
  np.testing.assert_allclose(sf.read(os.path.join(listing.root, "spk01M_ang_p00_r0.wav"), dtype="float32")[0],
                             y, atol=1.0 / 32768)
  with pytest.raises(CorpusError, match="speaker index 3 out of range"):
    synthetic.synthesize(3, 0, 0, 0, cfg)
  with pytest.raises(CorpusError, match="phrase index 2 out of range"):
    synthetic.synthesize(2, 2, 0, 0, cfg)


@pytest.mark.parametrize("knobs,match", [
    (dict(test_phrases=-1), "test_phrases must be >= 0, got -1"),
    (dict(test_speakers=1.5), "test_speakers must be an integer"),
    (dict(strategies="voice_linked", num_speakers=3, test_speakers=2), "num_speakers >= 4.*got 3"),
])
def test_bad_test_knobs_are_clear_errors(tmp_path, knobs, match):
  cfg = {**_cfg().to_dict(), **knobs}
  with pytest.raises(CorpusError, match=match):
    synthetic.generate(cfg, str(tmp_path), EMOTIONS)


def test_voice_linked_groups_follow_the_voice():
  n = 16
  groups = np.array([synthetic.speaker_group(s) for s in range(n)])
  female = np.array([s % 2 == 0 for s in range(n)])
  for g in (0, 1):  # both sexes in each group, equally many
    assert female[groups == g].sum() == (~female[groups == g]).sum() == n // 4
  linked = [synthetic.speaker_params(0, s, "voice_linked") for s in range(n)]
  plain = [synthetic.speaker_params(0, s, "swapped") for s in range(n)]
  for s in range(n):  # strategies as swapped; the voice the same but for the group's traits
    np.testing.assert_array_equal(synthetic.speaker_strategies(0, s, 4, "voice_linked"),
                                  synthetic.speaker_strategies(0, s, 4, "swapped"))
    assert {k for k in plain[s] if not np.array_equal(plain[s][k], linked[s][k])} \
        <= set(synthetic.VOICE_TRAITS)
    assert plain[s]["tremor_hz"] == 5.5 and plain[s]["tremor_db"] == 0.0
  trait = lambda name, g: np.array([linked[s][name] for s in range(n) if groups[s] == g])  # noqa: E731
  assert trait("tremor_hz", 0).max() < 5.0 < 6.5 < trait("tremor_hz", 1).min()  # disjoint rates
  assert trait("accent_st", 0).max() < trait("accent_st", 1).min()
  assert trait("rate", 0).min() > 1.0 > trait("rate", 1).max()  # group B speaks faster
  for name in ("tremor_st", "tremor_db"):  # depths drawn alike: only the rate tells the group
    assert abs(trait(name, 0).mean() - trait(name, 1).mean()) < 0.5 * trait(name, 0).std() + 0.15
  # Sex does not tell the group: the F0 ranges are the sexes', in both groups.
  f0 = np.array([p["f0"] for p in linked])
  assert set(np.round(f0[groups == 0] > 150)) == set(np.round(f0[groups == 1] > 150)) == {0, 1}


def test_voice_linked_changes_only_the_audio_of_its_mode():
  y = synthetic.synthesize(1, 0, 1, 0, _cfg(4, 1, 1, strategies="voice_linked"))
  base = synthetic.synthesize(1, 0, 1, 0, _cfg(4, 1, 1, strategies="swapped"))
  assert y.shape != base.shape or not np.array_equal(y, base)
  assert np.all(np.isfinite(y)) and np.max(np.abs(y)) <= 1.0


def test_32_speakers_every_strategy(tmp_path):
  n = 32
  names = [synthetic.speaker_name(s) for s in range(n)]
  assert len(set(names)) == n and sum(x.endswith("F") for x in names) == 16
  for mode in synthetic.STRATEGIES:
    voices = [synthetic.speaker_params(0, s, mode) for s in range(n)]
    assert len({(round(v["f0"], 6), round(v["vtl"], 6)) for v in voices}) == n, mode  # distinct voices
    v = [synthetic.speaker_strategies(0, s, 4, mode) for s in range(n)]
    assert all(np.all(np.isfinite(x)) and x.shape == (4, 8) for x in v)
  base = [synthetic.strategy_base(0, s, 4, "per_speaker") for s in range(n)]
  assert len({b.tobytes() for b in base[:24]}) == 24  # K! = 24 distinct permutations ...
  for s in range(24, n):  # ... which repeat beyond
    np.testing.assert_array_equal(base[s], base[s - 24])
  groups = np.array([synthetic.speaker_group(s) for s in range(n)])
  for g in (0, 1):  # grouped modes: 8 F + 8 M in each group
    assert sum(names[s].endswith("F") for s in np.flatnonzero(groups == g)) == 8
    assert (groups == g).sum() == 16
  listing = synthetic.generate(_cfg(28, 1, 1, test_speakers=4), str(tmp_path), ("neu", "ang"))
  assert len(listing.utterances) == 32 * 2 and len(listing.counts()) == 32
  assert {u.speaker for u in listing.utterances if u.subset == "test"} == set(names[28:])
