"""Enrollment (`model.enroll_k`, docs/DESIGN.md "Beyond the paper"): the SSA with enrollment
keys/values against numpy; k = 0 is the paper's model; the segments path equals the precomputed
context path; the training draw (never the utterance itself, only its speaker, pure in its
seed); the evaluation rule (unseen speakers' enrollment utterances are never scored); a tiny
training run with enroll_k=2 that resumes to the same result; prediction with --enroll."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf

from conftest import fake_dataset, tiny_config
from ssa_jax import enroll, fold as fold_lib, input_pipeline, models, predict, train
from ssa_jax.models import SelfSpeakerAttention

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
B, T, M = 5, 8, 4  # the tiny config's segments: 8 frames x 4 mel bands


def _model_cfg(**model):
  """The shared tiny SSA-CRNN with 3 speakers and two conv layers (fewer to compile)."""
  overrides = {"model.conv_features": (3, 4), "model.num_speakers": 3}
  overrides.update({f"model.{k}": v for k, v in model.items()})
  return tiny_config(overrides=overrides).model


def _segments(rng, *lead):
  x = rng.normal(size=lead + (T, M, 3)).astype(np.float32)
  mask = np.arange(T) < rng.integers(2, T + 1, size=lead)[..., None]
  return jnp.asarray(x), jnp.asarray(mask)


# ------------------------------------------------------------------------- the attention


def _numpy_softmax(scores, allowed):
  """Softmax over the allowed entries of each row, the others 0 (a row with none: all 0)."""
  top = np.where(allowed, scores, -np.inf).max(1, keepdims=True)
  w = np.where(allowed, np.exp(scores - np.where(np.isfinite(top), top, 0.0)), 0.0)
  return w / np.maximum(w.sum(1, keepdims=True), 1e-300)


def _numpy_ssa(h_em, h_sp, mask, enroll_states, valid, p, mode, keep, softmax="joint"):
  """The speaker half with enrollment entries, read from the equations (float64): scores
  a_em = h_em W^k_em, a_sp = (h_sp W^k_sp) q / sqrt(T'), a_en = (e W^k_sp) q / sqrt(T'), one
  softmax over the allowed entries ("per_half": one over the self half's, one over the speaker
  half's [a_sp, a_en], each halved when both halves have an allowed entry), c = [sum alpha_em
  h_em W^v_em ; sum alpha_sp h_sp W^v_sp + sum alpha_en e W^v_sp]."""
  h_em, h_sp, e = (np.asarray(a, np.float64) for a in (h_em, h_sp, enroll_states))
  p = {k: np.asarray(v, np.float64) for k, v in p.items()}
  t = h_em.shape[1]
  q = np.einsum("t,btd->bd", p["w_q"], h_em * mask[..., None])
  scores = np.concatenate([h_em @ p["w_k_em"],
                           np.einsum("btd,bd->bt", h_sp @ p["w_k_sp"], q) / math.sqrt(t),
                           np.einsum("bjd,bd->bj", e @ p["w_k_sp"], q) / math.sqrt(t)], axis=1)
  speaker_on = (mode != "self_only") & keep[:, None]
  allowed = np.concatenate([mask & (mode != "speaker_only"), mask & speaker_on,
                            valid & speaker_on], axis=1)
  if softmax == "joint":
    alpha = _numpy_softmax(scores, allowed)
  else:
    halves = [np.s_[:, :t], np.s_[:, t:]]
    alpha = np.concatenate([_numpy_softmax(scores[h], allowed[h]) for h in halves], 1)
    alpha /= np.maximum(sum(allowed[h].any(1) for h in halves), 1)[:, None]
  a_em, a_sp, a_en = alpha[:, :t], alpha[:, t:2 * t], alpha[:, 2 * t:]
  c_em = np.einsum("bt,btd->bd", a_em, h_em @ p["w_v_em"])
  c_sp = (np.einsum("bt,btd->bd", a_sp, h_sp @ p["w_v_sp"])
          + np.einsum("bj,bjd->bd", a_en, e @ p["w_v_sp"]))
  return np.concatenate([c_em, c_sp], 1), a_em, np.concatenate([a_sp, a_en], 1)


@pytest.mark.parametrize("softmax", ["joint", "per_half"])
@pytest.mark.parametrize("mode", ["full", "self_only", "speaker_only"])
def test_ssa_with_enrollment_against_numpy(mode, softmax):
  rng = np.random.default_rng(0)
  t, d, j = 6, 5, 3
  h_em, h_sp = rng.normal(size=(2, B, t, d)).astype(np.float32)
  e = rng.normal(size=(B, j, d)).astype(np.float32)
  mask = np.arange(t) < np.array([6, 4, 2, 5, 6])[:, None]
  valid = np.array([[1, 1, 1], [1, 0, 1], [0, 0, 0], [1, 1, 0], [0, 1, 1]], bool)
  keep = np.array([True, True, True, False, True])
  ssa = SelfSpeakerAttention(mode, softmax)
  params = ssa.init(jax.random.PRNGKey(1), h_em, h_sp, mask)["params"]
  c, a_em, a_sp = ssa.apply({"params": params}, h_em, h_sp, mask, keep, e, valid)
  want = _numpy_ssa(h_em, h_sp, mask, e, valid, params, mode, keep, softmax)
  for got, ref in zip((c, a_em, a_sp), want):
    np.testing.assert_allclose(np.asarray(got), ref, rtol=2e-5, atol=2e-6)
  assert a_sp.shape == (B, t + j)
  if mode != "self_only":  # the entries carry mass, exactly the valid ones of kept examples
    on = np.asarray(a_sp[:, t:]) > 0
    np.testing.assert_array_equal(on, valid & keep[:, None])


def test_k0_and_the_enrollment_paths():
  """model.enroll_k only says what training supplies: the parameters and, without enrollment
  inputs, the outputs are those of the model without it (k = 0), and all-invalid entries change
  nothing. In evaluation mode, enrollment segments run through C_sp inside the model give what
  the standalone `speaker_states` + context gives, and the entries matter. In training mode,
  with detach_speaker the emotion logits send no gradient into C_sp (through the enrollment
  states either)."""
  rng = np.random.default_rng(2)
  k = 2
  x, mask = _segments(rng, B)
  ex, em = _segments(rng, B, k)
  valid = jnp.asarray(rng.random((B, k)) < 0.7)
  m0, model = models.build_model(_model_cfg()), models.build_model(_model_cfg(enroll_k=k))
  v = jax.jit(model.init)(jax.random.PRNGKey(0), x, mask)
  assert jax.tree.structure(jax.eval_shape(m0.init, jax.random.PRNGKey(0), x, mask)) == \
      jax.tree.structure(v)
  apply = jax.jit(model.apply)
  plain, aux = apply(v, x, mask)
  l0, aux0 = jax.jit(m0.apply)(v, x, mask)  # the model without the field
  np.testing.assert_array_equal(np.asarray(l0), np.asarray(plain))
  assert "alpha_enroll" not in aux and set(aux0) == set(aux)
  off = {"context": jnp.ones((B, k, 8)), "valid": jnp.zeros((B, k), bool)}
  l_off, aux_off = apply(v, x, mask, enroll=off)
  np.testing.assert_allclose(np.asarray(l_off), np.asarray(plain), rtol=1e-6, atol=1e-6)
  assert float(jnp.abs(aux_off["alpha_enroll"]).max()) == 0.0

  logits_seg, aux_seg = apply(v, x, mask, enroll={"x": ex, "mask": em, "valid": valid})
  states = jax.jit(lambda v, x, m: models.speaker_states(model, v, x, m))(
      v, ex.reshape((B * k, T, M, 3)), em.reshape(B * k, T))
  logits_ctx, aux_ctx = apply(v, x, mask, enroll={"context": states.reshape(B, k, -1),
                                                  "valid": valid})
  np.testing.assert_allclose(np.asarray(logits_seg), np.asarray(logits_ctx), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(aux_seg["alpha_enroll"]),
                             np.asarray(aux_ctx["alpha_enroll"]), rtol=1e-5, atol=1e-6)
  assert np.abs(np.asarray(plain) - np.asarray(logits_ctx)).max() > 1e-4

  enr = {"x": ex, "mask": em, "valid": jnp.ones((B, k), bool)}

  def logits_sum(sp_params):  # detached: C_sp's parameters reach the logits only through h_sp
    (logits, _), _ = model.apply({**v, "params": {**v["params"], "crnn_sp": sp_params}}, x, mask,
                                 train=True, mutable=["batch_stats"], detach_speaker=True,
                                 enroll=enr)
    return logits.sum()
  grads = jax.jit(jax.grad(logits_sum))(v["params"]["crnn_sp"])
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads))


# ------------------------------------------------------------------------- training draw


def test_training_draw_same_speaker_other_utterances():
  fd = fold_lib.prepare_fold(tiny_config(), fake_dataset(num_speakers=3, per_cell=3), 0)
  arrays = fd.train
  pool = enroll.utterance_pool(arrays["utt"], arrays["speaker"])
  rows = np.arange(len(arrays["utt"]))
  for k in (1, 3, 40):  # 40: more than any speaker has, so utterances repeat
    pos, valid = enroll.training_draw(pool, rows, arrays["utt"], arrays["speaker"], k,
                                      enroll.training_rng(0, 0, 0, 0))
    assert pos.shape == (len(rows), k) and valid.all()
    assert np.all(arrays["utt"][pos] != arrays["utt"][rows][:, None])  # never itself
    assert np.all(arrays["speaker"][pos] == arrays["speaker"][rows][:, None])  # its speaker
    if k == 3:  # distinct utterances when the speaker has enough
      assert all(len(set(u)) == k for u in arrays["utt"][pos].tolist())
  again, _ = enroll.training_draw(pool, rows, arrays["utt"], arrays["speaker"], 3,
                                  enroll.training_rng(0, 0, 0, 0))
  other, _ = enroll.training_draw(pool, rows, arrays["utt"], arrays["speaker"], 3,
                                  enroll.training_rng(0, 0, 0, 1))
  first, _ = enroll.training_draw(pool, rows, arrays["utt"], arrays["speaker"], 3,
                                  enroll.training_rng(0, 0, 0, 0))
  assert np.array_equal(again, first) and not np.array_equal(again, other)
  # A speaker with a single utterance: no valid entry (filled with the row's own segment).
  lone = enroll.utterance_pool(np.array([7, 7, 8]), np.array([0, 0, 1]))
  pos, valid = enroll.training_draw(lone, np.array([0, 2]), np.array([7, 7, 8]),
                                    np.array([0, 0, 1]), 2, enroll.training_rng(0, 0, 0, 0))
  assert not valid.any() and np.array_equal(pos, [[0, 0], [2, 2]])


def test_train_batches_carry_enrollment_pure_in_the_batch():
  cfg = tiny_config()
  fd = fold_lib.prepare_fold(cfg, fake_dataset(), 0)
  kw = dict(seed=0, fold=0, epoch=1, class_names=fd.classes, enroll_k=2)
  full = list(input_pipeline.train_batches(fd.train, 4, 8, **kw))
  b = full[2]
  assert b["enroll_x"].shape == (8, 2, T, M, 3) and b["enroll_mask"].shape == (8, 2, T)
  assert b["enroll_valid"].shape == (8, 2) and b["enroll_valid"].all()
  resumed = next(input_pipeline.train_batches(fd.train, 4, 8, start_batch=2, **kw))
  halves = [next(iter(list(input_pipeline.train_batches(fd.train, 4, 8, process_index=i,
                                                        process_count=2, **kw))[2:3]))
            for i in (0, 1)]
  for key in enroll.TRAIN_KEYS:
    np.testing.assert_array_equal(resumed[key], b[key])
    np.testing.assert_array_equal(np.concatenate([h[key] for h in halves]), b[key])
  # Each enrollment segment is a training segment of the row's speaker from another utterance.
  x = fd.train["x"].reshape(len(fd.train["x"]), -1)
  for i in range(8):
    row = np.flatnonzero((x == b["x"][i].reshape(-1)).all(1))[0]
    for j in range(2):
      src = np.flatnonzero((x == b["enroll_x"][i, j].reshape(-1)).all(1))
      assert len(src) == 1
      assert fd.train["speaker"][src[0]] == fd.train["speaker"][row]
      assert fd.train["utt"][src[0]] != fd.train["utt"][row]


# ------------------------------------------------------------------------- evaluation rule


def test_evaluation_known_speakers_enroll_from_training_and_score_all():
  data = fake_dataset()
  plain = fold_lib.prepare_fold(tiny_config(), data, 0)
  fd = fold_lib.prepare_fold(tiny_config(overrides={"model.enroll_k": 2}), data, 0)
  np.testing.assert_array_equal(fd.valid_utt, plain.valid_utt)  # every utterance scored
  np.testing.assert_array_equal(fd.valid["x"], plain.valid["x"])
  e = fd.valid_enroll
  assert e.excluded.size == 0 and np.isin(e.utt, fd.train_utt).all()
  spk = np.asarray(data.speakers)
  assert np.all(spk[e.utt[e.index]] == fd.valid["speaker"][:, None]) and e.valid.all()
  assert e.index.shape == (len(fd.valid_seg), 2)


def test_evaluation_unseen_speaker_enrollment_is_never_scored():
  data = fake_dataset()
  cfg = tiny_config(overrides={"train.split": "loso", "model.enroll_k": 3})
  plain = fold_lib.prepare_fold(tiny_config(overrides={"train.split": "loso"}), data, 1)
  fd = fold_lib.prepare_fold(cfg, data, 1)
  e = fd.valid_enroll
  assert len(e.excluded) == 3 and len(e.utt) == 3
  np.testing.assert_array_equal(np.sort(e.utt), e.excluded)
  assert not np.isin(e.excluded, fd.valid_utt).any()  # never scored
  seg_utt = np.asarray(data.seg_utt)
  assert not np.isin(seg_utt[fd.valid_seg], e.excluded).any()
  np.testing.assert_array_equal(np.union1d(fd.valid_utt, e.excluded), plain.valid_utt)
  # The scored segments are normalised exactly as without enrollment (whole set's statistics).
  keep = np.isin(seg_utt[plain.valid_seg], fd.valid_utt)
  np.testing.assert_array_equal(fd.valid["x"], plain.valid["x"][keep])
  assert sum(fd.counts["valid_enroll_excluded"].values()) == 3
  assert np.all(np.asarray(data.speakers)[e.utt] == 1)
  # At most n - 1 of a speaker's n utterances: one is always left to score.
  n = len(plain.valid_utt)
  big = fold_lib.prepare_fold(tiny_config(overrides={"train.split": "loso",
                                                     "model.enroll_k": 10 * n}), data, 1)
  assert len(big.valid_utt) == 1 and len(big.valid_enroll.excluded) == n - 1


# ------------------------------------------------------------------------- training + resume


def _config():
  cfg = tiny_config(overrides={"model.enroll_k": 2, "train.checkpoint_every_minutes": 0.0,
                               "model.conv_features": (3, 4)})  # two conv layers: faster compile
  cfg.train.epochs = 2
  return cfg


def _read(workdir):
  with open(os.path.join(workdir, "fold0", "result.json")) as f:
    result = json.load(f)
  for k in ("timing", "config"):
    result.pop(k)
  return result


@pytest.fixture(scope="module")
def enroll_run(tmp_path_factory):
  """An uninterrupted tiny enroll_k=2 run (2 epochs)."""
  workdir = str(tmp_path_factory.mktemp("enroll_run"))
  train.train_and_evaluate(_config(), workdir, 0, dataset=fake_dataset())
  return workdir


def test_training_runs_and_resumes_to_the_same_result(enroll_run, tmp_path, monkeypatch):
  ref = _read(enroll_run)
  assert 0 < ref["speaker_mass"] <= 1 and "valid_enroll_excluded" in ref["counts"]
  real = input_pipeline.train_batches

  class Killed(Exception):
    pass

  def killed(*args, epoch, start_batch=0, **kwargs):
    for b, batch in enumerate(real(*args, epoch=epoch, start_batch=start_batch, **kwargs),
                              start=start_batch):
      if (epoch, b) == (1, 3):
        raise Killed()
      yield batch
  cfg = _config()
  cfg.train.checkpoint_every_steps = 3
  workdir = str(tmp_path)
  monkeypatch.setattr(train.input_pipeline, "train_batches", killed)
  with pytest.raises(Killed):
    train.train_and_evaluate(cfg, workdir, 0, dataset=fake_dataset())
  monkeypatch.setattr(train.input_pipeline, "train_batches", real)
  train.train_and_evaluate(cfg, workdir, 0, dataset=fake_dataset())
  assert _read(workdir) == ref  # bit for bit: the same enrollment draws after the resume


# ------------------------------------------------------------------------- prediction


def _tone(seconds, seed):
  rng = np.random.default_rng(seed)
  t = np.arange(int(seconds * 16000)) / 16000
  return 0.3 * np.sin(2 * np.pi * (140 + 30 * seed) * t) + 0.05 * rng.normal(size=t.shape)


def test_predict_with_enrollment(enroll_run, tmp_path):
  fold = os.path.join(enroll_run, "fold0")
  for i, s in enumerate((0.5, 0.3, 0.2)):
    sf.write(tmp_path / f"e{i}.wav", _tone(s, i), 16000)
  sf.write(tmp_path / "target.wav", _tone(0.4, 5), 16000)
  (tmp_path / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage")
  p = predict.load_predictor(fold)
  files = [str(tmp_path / f"e{i}.wav") for i in range(3)]
  ctx = predict.enrollment_context(p, files)
  assert ctx.shape == (3, 8) and np.isfinite(ctx).all()
  # Each file's entry is the mean of its segments' pooled states, whatever the other files.
  np.testing.assert_allclose(predict.enrollment_context(p, files[1:2])[0], ctx[1], rtol=1e-5,
                             atol=1e-6)
  target = [str(tmp_path / "target.wav")]
  with_ctx = predict.predict_files(p, target, enroll_context=ctx)[0]
  without = predict.predict_files(p, target)[0]
  assert with_ctx["label"] in p.classes
  assert with_ctx["probabilities"] != without["probabilities"]
  with pytest.raises(ValueError, match="broken.wav"):
    predict.enrollment_context(p, files + [str(tmp_path / "broken.wav")])
  no_enroll = predict.Predictor(p.model, p.variables, tiny_config(), p.classes, p.stats)
  with pytest.raises(ValueError, match="model.enroll_k > 0"):
    predict.enrollment_context(no_enroll, files)
  # The CLI: a bad enrollment file is one line naming it, exit 1, nothing predicted.
  env = {**os.environ, "PYTHONPATH": REPO}
  out = subprocess.run([sys.executable, "-m", "bin.predict", "--workdir", fold, target[0],
                        "--enroll", files[0], "--enroll", str(tmp_path / "broken.wav")],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  lines = [l for l in out.stderr.splitlines() if l.startswith("error")]
  assert out.returncode == 1 and len(lines) == 1 and "broken.wav" in lines[0], out.stderr
  assert "Traceback" not in out.stderr and out.stdout == ""
