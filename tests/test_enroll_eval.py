"""The post-training tools with enrollment (`model.enroll_k`), and paired comparisons on the same
scored utterances (`train.exclude_enroll_k`).

Two tiny leave-one-speaker-out runs of fold 1 (speaker 1 unseen), 1 epoch each: "k2"
(model.enroll_k=2) and "x2" (no enrollment, train.exclude_enroll_k=2). The references run the
restored model directly (`model.apply`, `models.speaker_states`, no `inference` batching) and
pool, count and average with numpy: bin.evaluate's metrics and Figure 3, bin.speaker_eer /
bin.probe's embeddings equal them with the fold's enrollment and scored utterances; the x2
run's UAR equals numpy's on the k2 run's subset; a model without enrollment is evaluated as
before (every validation utterance, no enrollment)."""

from __future__ import annotations

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import fake_dataset, tiny_config
from ssa_jax import enroll, evaluate, features, fold as fold_lib, inference, models, parallel
from ssa_jax import predict, speaker_eval, summary, train

FOLD = 1  # loso: speaker 1 is the unseen validation speaker


def _config(**overrides):
  cfg = tiny_config(overrides={"train.split": "loso", "model.conv_features": (3, 4),
                               "train.checkpoint_every_minutes": 0.0, "train.epochs": 1,
                               **overrides})
  return cfg


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  ds = fake_dataset()
  out = {"ds": ds}
  for name, overrides in (("k2", {"model.enroll_k": 2}), ("x2", {"train.exclude_enroll_k": 2})):
    workdir = str(tmp_path_factory.mktemp(name))
    out[name] = train.train_and_evaluate(_config(**overrides), workdir, FOLD, dataset=ds)
    out[name + "_dir"] = os.path.join(workdir, f"fold{FOLD}")
  return out


def _speaker_segments(ds, p, speaker):
  """All segments of `speaker` normalised as the fold normalises its validation set (the whole
  set at once; fallback "self" for the unseen speaker): (seg indices, x, mask)."""
  seg_utt = np.asarray(ds.seg_utt)
  seg = np.flatnonzero(np.asarray(ds.speakers)[seg_utt] == speaker)
  names = np.asarray(ds.speaker_names)[np.asarray(ds.speakers)[seg_utt]]
  x = features.normalize(ds.segments, ds.mask, names, p.stats,
                         p.config.features.norm_fallback, index=seg)
  return seg, x, np.asarray(ds.mask[seg], bool)


def _apply(p, x, mask, context=None):
  """(probs (n, K) float64, aux) of the restored model run directly; `context` (J, d): every
  segment's enrollment entries."""
  kwargs = {}
  if context is not None:
    n, j = x.shape[0], context.shape[0]
    kwargs["enroll"] = {"context": jnp.broadcast_to(jnp.asarray(context), (n,) + context.shape),
                        "valid": jnp.ones((n, j), bool)}
  logits, aux = p.model.apply(p.variables, jnp.asarray(x), jnp.asarray(mask), train=False,
                              **kwargs)
  return np.asarray(jax.nn.softmax(logits.astype(jnp.float32)), np.float64), aux


def _context(p, ds, x, mask, seg, utts):
  """(J, d): each enrollment utterance's mean pooled speaker state over its segments."""
  seg_utt = np.asarray(ds.seg_utt)[seg]
  states = np.asarray(models.speaker_states(p.model, p.variables, jnp.asarray(x),
                                            jnp.asarray(mask)), np.float64)
  return np.stack([states[seg_utt == u].mean(0) for u in utts]).astype(np.float32)


def _pooled(values, seg_utt, utts, how):
  return np.stack([(values[seg_utt == u].max(0) if how == "max" else values[seg_utt == u].mean(0))
                   for u in utts])


def _uar(truth, pred, k):
  cm = np.zeros((k, k), np.int64)
  np.add.at(cm, (truth, pred), 1)
  support = cm.sum(1)
  return float(np.mean(np.diag(cm)[support > 0] / support[support > 0])), cm


def _reference(runs, name, with_enrollment):
  """The validation speaker's utterances scored by hand: (scored utterance indices, their
  pooled predictions, their pooled z_em / z_sp, confusion, UAR, per segment outputs)."""
  ds = runs["ds"]
  p = predict.load_predictor(runs[name + "_dir"])
  seg, x, mask = _speaker_segments(ds, p, FOLD)
  ids = list(ds.utt_ids)
  excluded = [ids.index(u) for u in runs[name]["scored"]["excluded"]]
  context = _context(p, ds, x, mask, seg, excluded) if with_enrollment else None
  probs, aux = _apply(p, x, mask, context)
  seg_utt = np.asarray(ds.seg_utt)[seg]
  scored = np.setdiff1d(np.unique(seg_utt), excluded)
  pred = _pooled(probs, seg_utt, scored, "max").argmax(-1)
  truth = np.asarray(ds.labels)[scored]
  uar, cm = _uar(truth, pred, len(ds.classes))
  emb = {k: _pooled(np.asarray(aux[k], np.float64), seg_utt, scored, "mean")
         for k in ("z_em", "z_sp")}
  return {"scored": scored, "cm": cm, "uar": uar, "emb": emb, "seg_utt": seg_utt,
          "probs": probs, "aux": aux, "p": p, "x": x, "mask": mask, "seg": seg}


def test_evaluate_with_the_folds_enrollment(runs, tmp_path):
  ds, result = runs["ds"], runs["k2"]
  assert result["scored"]["enroll_k"] == 2 and len(result["scored"]["excluded"]) == 2
  ref = _reference(runs, "k2", with_enrollment=True)
  report = evaluate.evaluate_fold(runs["k2_dir"], out_dir=tmp_path, dataset=ds)
  # result.json's numbers, and numpy's on the scored utterances read with their enrollment.
  assert report["confusion"] == result["confusion"] == ref["cm"].tolist()
  assert report["uar"] == result["uar"] == pytest.approx(ref["uar"], abs=1e-12)
  assert report["valid_utterances"] == len(ref["scored"]) == 14  # 16 - the 2 enrolled
  assert report["scored"] == result["scored"]
  # Figure 3 of the first scored utterance: the evaluation's own rows (with enrollment).
  u = int(ref["scored"][0])
  assert report["attention_utterance"] == ds.utt_ids[u]
  rows = ref["seg_utt"] == u
  plain, _ = _apply(ref["p"], ref["x"][rows], ref["mask"][rows])
  assert not np.allclose(plain, ref["probs"][rows], atol=1e-6)  # enrollment changes it
  fd = fold_lib.prepare_fold(ref["p"].config, ds, FOLD, stats=ref["p"].stats,
                                      with_train=False)
  fake = {"probs": np.zeros((len(fd.valid_seg), 4)), "alpha_sp": np.arange(len(fd.valid_seg))}
  mask, out = evaluate.attention_outputs(u, ds, fd, FOLD, ref["p"].config, fake, None)
  np.testing.assert_array_equal(out["alpha_sp"], np.flatnonzero(fd.valid_seg_utt == 0))
  np.testing.assert_array_equal(mask, ref["mask"][rows])
  # An enrollment utterance was never scored: one line naming it, before anything runs.
  enrolled = result["scored"]["excluded"][0]
  with pytest.raises(ValueError, match=f"{enrolled}.*not scored"):
    evaluate.evaluate_fold(runs["k2_dir"], utterance=enrolled, out_dir=tmp_path, dataset=ds)


def test_training_utterance_attention_uses_its_speakers_enrollment(runs):
  """A training utterance (known speaker 0) is read with k of speaker 0's training utterances,
  the evaluation rule's choice (enroll.evaluation_plan), whose contexts are computed by hand."""
  ds = runs["ds"]
  p = predict.load_predictor(runs["k2_dir"])
  fd = fold_lib.prepare_fold(p.config, ds, FOLD, stats=p.stats, with_train=False)
  seg, x, mask = _speaker_segments(ds, p, 0)
  seg_utt = np.asarray(ds.seg_utt)[seg]
  u = int(seg_utt[0])
  plan = enroll.evaluation_plan(ds.speakers, fd.train_utt, [u], 2, int(p.config.seed), FOLD)
  chosen = plan.speaker_utts[0]
  assert len(chosen) == 2 and np.all(np.asarray(ds.speakers)[chosen] == 0)
  context = _context(p, ds, x, mask, seg, chosen)
  want, _ = _apply(p, x[seg_utt == u], mask[seg_utt == u], context)
  mesh = parallel.make_mesh()
  eval_fn = inference.make_eval_step(p.model, mesh, aux_keys=evaluate.FIGURE_AUX)
  states_fn = inference.make_states_step(p.model, mesh)

  def run(arrays, enrollment):
    arrays = inference.with_enrollment(arrays, enrollment, states_fn, p.variables, 8, mesh)
    return inference.model_outputs(eval_fn, p.variables, arrays, 8, mesh)
  _, out = evaluate.attention_outputs(u, ds, fd, FOLD, p.config, {}, run)
  np.testing.assert_allclose(out["probs"], want, rtol=1e-5, atol=1e-6)


def test_speaker_embeddings_with_the_folds_enrollment(runs):
  ds, result = runs["ds"], runs["k2"]
  ref = _reference(runs, "k2", with_enrollment=True)
  emb = speaker_eval.fold_embeddings(runs["k2_dir"], "valid", dataset=ds)
  assert emb.utt_ids == tuple(ds.utt_ids[u] for u in ref["scored"])
  assert emb.enroll_k == 2 and emb.excluded == tuple(result["scored"]["excluded"])
  for key in ("z_em", "z_sp"):
    np.testing.assert_allclose(emb.embeddings[key], ref["emb"][key], rtol=1e-5, atol=1e-6)
  # The training utterances: all of them, each speaker's read with k of its training utterances.
  train_emb = speaker_eval.fold_embeddings(runs["k2_dir"], "train", dataset=ds)
  assert train_emb.excluded == () and len(train_emb.utt_ids) == 32
  p = ref["p"]
  seg, x, mask = _speaker_segments(ds, p, 2)
  seg_utt = np.asarray(ds.seg_utt)[seg]
  train_utt = np.flatnonzero(np.asarray(ds.speakers) != FOLD)
  chosen = enroll.evaluation_plan(ds.speakers, train_utt, train_utt, 2, 0, FOLD).speaker_utts[2]
  _, aux = _apply(p, x, mask, _context(p, ds, x, mask, seg, chosen))
  want = _pooled(np.asarray(aux["z_em"], np.float64), seg_utt, np.unique(seg_utt), "mean")
  ids = list(train_emb.utt_ids)
  got = train_emb.embeddings["z_em"][[ids.index(ds.utt_ids[u]) for u in np.unique(seg_utt)]]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_a_run_without_enrollment_scores_the_same_subset(runs):
  """exclude_enroll_k=2: the same utterances left out as the k2 run; its UAR equals numpy's
  from its own per-utterance predictions on that subset (not on the whole set)."""
  ds, k2, x2 = runs["ds"], runs["k2"], runs["x2"]
  assert x2["scored"] == k2["scored"]
  assert x2["counts"]["valid_enroll_excluded"] == k2["counts"]["valid_enroll_excluded"]
  ref = _reference(runs, "x2", with_enrollment=False)
  assert len(ref["scored"]) == sum(x2["counts"]["valid_utterances"].values()) == 14
  assert x2["confusion"] == ref["cm"].tolist()
  assert x2["uar"] == pytest.approx(ref["uar"], abs=1e-12)
  # Paired: the same utterances, so the pair is made, and the table names the subset.
  s_k2 = summary.summarize({FOLD: k2}, name="k2", system="SSA k2", split="loso")
  s_x2 = summary.summarize({FOLD: x2}, name="x2", system="SSA x2", split="loso")
  (entry,) = summary.compare_systems([s_x2, s_k2])
  assert "error" not in entry and entry["folds"] == [FOLD]
  assert entry["uar"]["mean"] == pytest.approx(k2["uar"] - x2["uar"], abs=1e-12)
  md = summary.render_compare([s_x2, s_k2], paired=[entry])
  assert "scored utterances |" in md
  assert md.count("without 2 enrollment utterances of unseen speakers (k 2, over the folds)") == 2
  # The same run scored on every utterance (k = 0 without the exclusion) is not paired.
  whole = {**x2, "scored": {"enroll_k": 0, "excluded": []}}
  s_whole = summary.summarize({FOLD: whole}, name="k0", system="SSA k0", split="loso")
  (entry,) = summary.compare_systems([s_whole, s_k2])
  assert "uar" not in entry and "train.exclude_enroll_k=2" in entry["error"]
  assert "| all |" in summary.render_compare([s_whole, s_k2], paired=[entry])


def test_a_model_without_enrollment_is_evaluated_as_before(runs, tmp_path):
  """The x2 checkpoint with exclude_enroll_k=0 is a plain k = 0 run: every validation utterance
  is scored and read alone, by bin.evaluate and bin.speaker_eer / bin.probe alike."""
  fold_dir = tmp_path / f"fold{FOLD}"
  shutil.copytree(runs["x2_dir"], fold_dir)
  cfg = json.loads((fold_dir / "config.json").read_text())
  cfg["train"]["exclude_enroll_k"] = 0
  (fold_dir / "config.json").write_text(json.dumps(cfg))
  ds = runs["ds"]
  result = {**runs["x2"], "scored": {"enroll_k": 0, "excluded": []}}
  ref = _reference({**runs, "plain": result, "plain_dir": str(fold_dir)}, "plain", False)
  assert len(ref["scored"]) == 16
  report = evaluate.evaluate_fold(str(fold_dir), out_dir=tmp_path / "fig", dataset=ds)
  assert report["confusion"] == ref["cm"].tolist() and report["valid_utterances"] == 16
  assert report["scored"] == {"enroll_k": 0, "excluded": []}
  emb = speaker_eval.fold_embeddings(str(fold_dir), "valid", dataset=ds)
  assert emb.enroll_k == 0 and emb.excluded == () and len(emb.utt_ids) == 16
  for key in ("z_em", "z_sp"):
    np.testing.assert_allclose(emb.embeddings[key], ref["emb"][key], rtol=1e-5, atol=1e-6)
