"""Speaker identity in embeddings (ssa_jax/speaker_eval.py): verification trials, cosine-scored
EER and the linear probe on synthetic embeddings whose answer is known, then on a tiny trained
run with every unseen-speaker option on (which also checks that its training resumes exactly)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import fake_dataset, tiny_config
from ssa_jax import metrics, speaker_eval, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _clusters(num_speakers=6, per_speaker=12, dims=16, spread=0.0, seed=0):
  """Embeddings: speaker s at a random unit centre times `spread`, plus N(0, 1) noise."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(num_speakers, dims))
  centres /= np.linalg.norm(centres, axis=1, keepdims=True)
  speakers = np.repeat(np.arange(num_speakers), per_speaker)
  return spread * centres[speakers] + rng.normal(size=(len(speakers), dims)), speakers


def test_verification_trials_pairs():
  speakers = np.array([0, 0, 1, 1, 1, 2, 0, 3])
  t = speaker_eval.verification_trials(speakers, num_different=5, seed=1)
  first, second, same = t["first"], t["second"], t["same"]
  assert np.all(first < second)
  assert same.sum() == 3 + 3  # C(3, 2) for speakers 0 and 1, none for 2 and 3
  assert np.array_equal(speakers[first] == speakers[second], same)
  want_same = {(i, j) for i in range(8) for j in range(i + 1, 8) if speakers[i] == speakers[j]}
  assert set(zip(first[same].tolist(), second[same].tolist())) == want_same
  diff = list(zip(first[~same].tolist(), second[~same].tolist()))
  assert len(diff) == 5 and len(set(diff)) == 5  # sampled without replacement
  again = speaker_eval.verification_trials(speakers, num_different=5, seed=1)
  other = speaker_eval.verification_trials(speakers, num_different=5, seed=2)
  assert all(np.array_equal(t[k], again[k]) for k in t)
  assert not np.array_equal(t["first"], other["first"]) or not np.array_equal(
      t["second"], other["second"])
  # More asked for than exist: all of them (28 pairs, 6 same-speaker).
  every = speaker_eval.verification_trials(speakers, num_different=100)
  assert (~every["same"]).sum() == 28 - 6 and len(every["same"]) == 28


def test_cosine_scores_and_eer_on_known_embeddings():
  e = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
  np.testing.assert_allclose(speaker_eval.cosine_scores(e, [0, 0, 0], [1, 2, 3]),
                             [1.0, 0.0, np.sqrt(0.5)])
  separated, speakers = _clusters(spread=20.0)
  assert speaker_eval.speaker_eer(separated, speakers)["eer"] == 0.0
  noise, speakers = _clusters(spread=0.0, per_speaker=30, seed=1)
  report = speaker_eval.speaker_eer(noise, speakers, num_different=4000)
  assert 0.4 < report["eer"] < 0.6  # no speaker information: chance
  assert report["target_trials"] == 6 * 30 * 29 // 2 and report["nontarget_trials"] == 4000
  partial, speakers = _clusters(spread=1.5, per_speaker=30, seed=2)
  assert 0.02 < speaker_eval.speaker_eer(partial, speakers)["eer"] < 0.4
  # The EER is the one of metrics.equal_error_rate on the trials' cosine scores.
  t = speaker_eval.verification_trials(speakers, 10000, 0)
  scores = speaker_eval.cosine_scores(partial, t["first"], t["second"])
  assert speaker_eval.speaker_eer(partial, speakers)["eer"] == metrics.equal_error_rate(
      scores, t["same"])
  with pytest.raises(ValueError, match="at least 2 speakers"):
    speaker_eval.speaker_eer(partial[:5], np.zeros(5, int))


def test_linear_probe_on_embeddings_with_a_known_answer():
  separated, speakers = _clusters(spread=10.0)
  sep = speaker_eval.linear_probe(separated, speakers)
  assert sep["accuracy"] == 1.0 and sep["chance"] == pytest.approx(1 / 6)
  assert sep["train_utterances"] + sep["test_utterances"] == len(speakers)
  noise, speakers = _clusters(num_speakers=4, per_speaker=60, spread=0.0, seed=3)
  chance = speaker_eval.linear_probe(noise, speakers)
  assert abs(chance["accuracy"] - 0.25) < 0.12, chance  # 120 test utterances: SE ~0.04
  # Identity in two coordinates only (the corners of a square), among 14 noise ones: a linear
  # probe finds it.
  rng = np.random.default_rng(4)
  speakers = np.repeat(np.arange(4), 40)
  two = rng.normal(size=(160, 16))
  corners = 4.0 * np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]])
  two[:, [3, 9]] = corners[speakers] + rng.normal(scale=0.5, size=(160, 2))
  assert speaker_eval.linear_probe(two, speakers)["accuracy"] > 0.95
  train_idx, test_idx = speaker_eval.probe_split(speakers, 0.25, seed=0)
  assert len(np.intersect1d(train_idx, test_idx)) == 0 and len(test_idx) == 40
  assert np.all(np.bincount(speakers[test_idx]) == 10)


def test_pool_segments_means_per_utterance():
  values = np.array([[1.0, 2.0], [3.0, 4.0], [10.0, 0.0]])
  np.testing.assert_allclose(speaker_eval.pool_segments(values, np.array([0, 0, 1]), 2),
                             [[2.0, 3.0], [10.0, 0.0]])
  with pytest.raises(ValueError, match="no segment"):
    speaker_eval.pool_segments(values, np.array([0, 0, 0]), 2)


def test_trained_run_with_every_option_resumes_and_is_scored(tmp_path):
  """A tiny SSA-CRNN-r with AAM, speaker dropout, stop-gradient and the adversary: 2 epochs in
  one go and 1 + 1 resumed give the same result.json (the dropout key is a function of the step);
  then its validation utterances are embedded and scored."""
  ds = fake_dataset()
  cfg = tiny_config(overrides={
      "model.speaker_loss": "aam", "model.speaker_dropout": 0.3,
      "train.speaker_stop_gradient": True, "train.adversarial_weight": 0.5, "train.epochs": 2})
  full = train.train_and_evaluate(cfg, str(tmp_path / "full"), 0, dataset=ds)
  cfg.train.epochs = 1
  train.train_and_evaluate(cfg, str(tmp_path / "resumed"), 0, dataset=ds)
  cfg.train.epochs = 2
  resumed = train.train_and_evaluate(cfg, str(tmp_path / "resumed"), 0, dataset=ds)
  for r in (full, resumed):
    r.pop("timing")
  assert resumed == full
  lines = [json.loads(l) for l in (tmp_path / "full" / "fold0" / "metrics.jsonl").read_text()
           .splitlines()]
  assert all(0.0 <= l["train_adversary_accuracy"] <= 1.0 for l in lines)

  fold_dir = str(tmp_path / "full" / "fold0")
  emb = speaker_eval.fold_embeddings(fold_dir, "valid", dataset=ds)
  n_valid = sum(full["counts"]["valid_utterances"].values())
  assert emb.embeddings["z_sp"].shape == (n_valid, 8) == emb.embeddings["z_em"].shape
  assert emb.fold == 0 and emb.step == full["best_step"] and len(emb.utt_ids) == n_valid
  ids = list(ds.utt_ids)
  assert np.array_equal(emb.speakers, ds.speakers[[ids.index(u) for u in emb.utt_ids]])
  report = speaker_eval.speaker_eer(speaker_eval.embedding_of(emb, "z_sp"), emb.speakers)
  assert 0.0 <= report["eer"] <= 1.0 and report["speakers"] == 3
  both = speaker_eval.fold_embeddings(fold_dir, "all", dataset=ds)
  assert both.embeddings["z_em"].shape[0] == len(ds.utt_ids)
  np.testing.assert_allclose(both.embeddings["z_em"][:n_valid], emb.embeddings["z_em"],
                             rtol=1e-6)  # the same utterances, the same embeddings
  probe = speaker_eval.linear_probe(both.embeddings["z_em"], both.speakers)
  assert 0.0 <= probe["accuracy"] <= 1.0 and probe["speakers"] == 3


def test_embedding_of_names_what_is_missing():
  emb = speaker_eval.FoldEmbeddings({"z_em": np.zeros((2, 3))}, np.zeros(2, int), ("a",),
                                    ("u0", "u1"), 0, "valid", None)
  with pytest.raises(ValueError, match="no z_sp"):
    speaker_eval.embedding_of(emb, "z_sp")


@pytest.mark.parametrize("command", ["bin.speaker_eer", "bin.probe"])
def test_clis_reject_a_folder_that_is_not_a_trained_fold(tmp_path, command):
  p = subprocess.run([sys.executable, "-m", command, "--workdir", str(tmp_path)], cwd=REPO,
                     env={**os.environ, "PYTHONPATH": REPO}, capture_output=True, text=True,
                     timeout=300)
  assert p.returncode == 1
  assert p.stderr.strip().startswith("error:") and "config.json" in p.stderr
  assert len(p.stderr.strip().splitlines()) == 1
