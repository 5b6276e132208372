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


def _fake_study(tmp_path, figures):
  """A replicates workdir with compare.json, finished runs (result.json) and cached figures:
  figures {label: {draw: dict}}; a draw whose value is None has no result.json (unfinished)."""
  from ssa_jax import replicates  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top
  labels = list(figures)
  (tmp_path / "compare.json").write_text(json.dumps({"systems": [{"system": l} for l in labels]}))
  for label, sub in zip(labels, replicates.subdirs(labels)):
    for draw, figs in figures[label].items():
      fold = tmp_path / sub / f"draw{draw}" / "fold0"
      fold.mkdir(parents=True)
      if figs is not None:
        (fold / "result.json").write_text("{}")
        (fold / "speaker_figures.json").write_text(json.dumps(figs))
  return tmp_path


def test_speaker_figures_tables_every_finished_run_with_paired_t(tmp_path):
  """studies/speaker_figures.py: finds the finished runs of each system by its label's folder,
  reads their cached figures, and gives means with Student's CI and paired differences against
  the reference that agree with scipy over the draws both systems finished."""
  import scipy.stats  # pylint: disable=g-import-not-at-top
  from studies import speaker_figures  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  fig = lambda eer: {"eer_test": eer, "probe_test": float(rng.uniform(20, 60)),
                     "probe_test_chance": 100 / 13, "probe_train": float(rng.uniform(50, 90)),
                     "probe_train_chance": 100 / 16}
  ref = {d: fig(float(rng.uniform(10, 30))) for d in (300, 301, 302, 303)}
  aam = {300: fig(8.0), 301: fig(12.5), 302: fig(9.0), 303: None}  # 303 unfinished
  acrnn = {d: {**fig(None), "eer_test": None} for d in (300, 301, 302)}
  work = _fake_study(tmp_path, {"SSA-CRNN-r": ref, "aam [x=1]": aam, "ACRNN-r": acrnn})
  table = speaker_figures.main(["--workdir", str(work), "--reference", "SSA-CRNN-r"])
  rows = {r["system"]: r for r in table["systems"]}
  assert rows["aam [x=1]"]["draws"] == [300, 301, 302] and rows["SSA-CRNN-r"]["draws"] == [
      300, 301, 302, 303]
  assert rows["ACRNN-r"]["eer_test"] is None  # no speaker branch
  eers = [8.0, 12.5, 9.0]
  half = scipy.stats.t.ppf(0.975, 2) * np.std(eers, ddof=1) / np.sqrt(3)
  assert rows["aam [x=1]"]["eer_test"]["mean"] == pytest.approx(np.mean(eers))
  assert rows["aam [x=1]"]["eer_test"]["ci"] == pytest.approx(half)
  diff = rows["aam [x=1]"]["eer_test_diff"]
  ref_eers = [ref[d]["eer_test"] for d in (300, 301, 302)]
  res = scipy.stats.ttest_rel(eers, ref_eers)
  assert diff["n"] == 3 and diff["mean"] == pytest.approx(np.mean(np.subtract(eers, ref_eers)))
  assert diff["p"] == pytest.approx(res.pvalue)
  assert rows["ACRNN-r"]["probe_train_chance"] == pytest.approx(100 / 16)
  text = (work / "speaker_figures.md").read_text()
  assert "| aam [x=1] | 301 | 12.50 |" in text and f"p = {res.pvalue:.3f}" in text


def test_speaker_figures_computes_once_and_names_a_missing_study(tmp_path):
  from studies import speaker_figures  # pylint: disable=g-import-not-at-top
  with pytest.raises(FileNotFoundError, match="no compare.json"):
    speaker_figures.study_runs(str(tmp_path))
  fold = tmp_path / "fold0"
  fold.mkdir()
  calls = []
  compute = lambda d: calls.append(d) or {"eer_test": 1.0}
  assert speaker_figures.cached_figures(str(fold), compute) == {"eer_test": 1.0}
  assert speaker_figures.cached_figures(str(fold), compute) == {"eer_test": 1.0}
  assert calls == [str(fold)]
  with pytest.raises(ValueError, match="reference 'X' is not a system"):
    speaker_figures.tabulate({"A": {0: {"eer_test": 1.0}}}, "X")
