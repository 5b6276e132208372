"""studies/corpus_learnability.py: its per-utterance statistics against a direct computation, and
its classifiers on toy data where the answer is known (a cue that each speaker group uses the
other way round defeats the pooled classifier, not the per-speaker one)."""

from types import SimpleNamespace

import numpy as np
import pytest

from studies import corpus_learnability


def test_utterance_stats_against_direct_computation():
  rng = np.random.default_rng(0)
  segs = rng.normal(size=(5, 6, 3, 2))
  mask = np.ones((5, 6), bool)
  mask[1, 4:] = mask[4, 2:] = False
  seg_utt = np.array([0, 0, 1, 2, 2])
  ds = SimpleNamespace(segments=segs, mask=mask, seg_utt=seg_utt, utt_ids=("a", "b", "c"))
  got = corpus_learnability.utterance_stats(ds)
  assert got.shape == (3, 2 * 3 * 2)
  for u in range(3):
    frames = np.concatenate([segs[i][mask[i]] for i in np.flatnonzero(seg_utt == u)])  # (F, M, C)
    np.testing.assert_allclose(got[u], np.concatenate([frames.mean(0).ravel(),
                                                       frames.std(0).ravel()]), atol=1e-9)


def _swapped_toy(seed=0, per_cell=30):
  """2 classes, 4 speakers; feature 0 is +label for speakers 0-1 and -label for 2-3 (plus noise),
  feature 1 is noise: a pooled linear classifier cannot tell the classes, a per-speaker one can."""
  rng = np.random.default_rng(seed)
  speakers = np.repeat(np.arange(4), 2 * per_cell)
  labels = np.tile(np.repeat([0, 1], per_cell), 4)
  sign = np.where(speakers < 2, 1.0, -1.0)
  x = np.stack([sign * (2 * labels - 1) * 3.0, np.zeros(len(labels))], 1)
  x = x + rng.normal(0, 0.5, x.shape)
  idx = rng.permutation(len(labels))
  return x, labels, speakers, np.sort(idx[:len(idx) * 4 // 5]), np.sort(idx[len(idx) * 4 // 5:])


def test_fold_scores_pooled_fails_where_per_speaker_succeeds():
  x, labels, speakers, train, valid = _swapped_toy()
  got = corpus_learnability.fold_scores(x, labels, speakers, train, valid, 2)
  assert got["per-speaker"] == pytest.approx(1.0)
  assert got["pooled"] < 0.75  # chance is 0.5; the cue averages out over the two groups
  assert len(got["pooled_recalls"]) == 2


def test_loso_scores_on_unseen_speakers():
  x, labels, speakers, _, _ = _swapped_toy(seed=1)
  got = corpus_learnability.loso_scores(x, labels, speakers, 2)
  # each held-out speaker's group uses the cue the other way round from half the training
  # speakers: the speaker-normalised pooled classifier is at chance or worse on it
  assert got["loso"] < 0.75 and len(got["loso_recalls"]) == 2
  x[:, 0] = np.abs(x[:, 0]) * (2 * labels - 1)  # the same cue direction for every speaker
  assert corpus_learnability.loso_scores(x, labels, speakers, 2)["loso"] == pytest.approx(1.0)
