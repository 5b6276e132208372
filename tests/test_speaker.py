"""Unseen-speaker options (docs/DESIGN.md "Beyond the paper"): AAM-softmax against numpy and
PyTorch, gradient reversal, the speaker stop-gradient, speaker dropout and the adversary in the
real train step, and their config errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import fake_dataset, tiny_config
from ssa_jax import inference, input_pipeline, models, parallel, speaker, train

B, T, M = 6, 8, 4  # the tiny config's segments: 8 frames x 4 mel bands


def _model_cfg(**model):
  """The shared tiny SSA-CRNN with 3 speakers and two conv layers (fewer to compile)."""
  overrides = {"model.conv_features": (3, 4), "model.num_speakers": 3}
  overrides.update({f"model.{k}": v for k, v in model.items()})
  return tiny_config(overrides=overrides).model


def _batch(seed=0, b=B):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=(b, T, M, 3)).astype(np.float32))
  mask = jnp.asarray(np.arange(T)[None, :] < rng.integers(2, T + 1, size=b)[:, None])
  return x, mask


def _variables(model, x, mask):
  return model.init({"params": jax.random.PRNGKey(0)}, x, mask)


# ------------------------------------------------------------------------------- AAM-softmax


def _numpy_aam(cosine, labels, m, s):
  """The formula read from the paper: s cos(theta_y + m) for the target, s cos(theta_j) else."""
  theta = np.arccos(np.clip(cosine.astype(np.float64), -1, 1))
  out = s * np.cos(theta)
  rows = np.arange(len(labels))
  out[rows, labels] = s * np.cos(theta[rows, labels] + m)
  return out


def test_aam_logits_against_numpy():
  rng = np.random.default_rng(0)
  cosine = rng.uniform(-0.99, 0.99, size=(7, 5)).astype(np.float32)
  labels = rng.integers(0, 5, size=7)
  for m, s in [(0.2, 30.0), (0.0, 1.0), (0.5, 10.0)]:
    got = np.asarray(speaker.aam_logits(jnp.asarray(cosine), jnp.asarray(labels), m, s))
    np.testing.assert_allclose(got, _numpy_aam(cosine, labels, m, s), rtol=1e-5, atol=1e-4 * s)
  # The margin lowers exactly the target logits (cos is decreasing on [0, pi]).
  base = np.asarray(speaker.aam_logits(jnp.asarray(cosine), jnp.asarray(labels), 0.0, 30.0))
  marg = np.asarray(speaker.aam_logits(jnp.asarray(cosine), jnp.asarray(labels), 0.2, 30.0))
  target = np.zeros_like(base, bool)
  target[np.arange(7), labels] = True
  assert np.all(marg[target] < base[target]) and np.array_equal(marg[~target], base[~target])


def test_aam_loss_and_gradients_against_torch():
  """Cross-entropy of the AAM logits of the model's cosine head (L2-normalised embeddings and
  class weights), value and gradients w.r.t. embeddings and weights, against PyTorch (float64,
  theta by acos)."""
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(1)
  z = rng.normal(size=(6, 8)).astype(np.float32)
  w = rng.normal(size=(8, 5)).astype(np.float32)
  labels = rng.integers(0, 5, size=6)
  m, s = 0.2, 30.0

  def jax_loss(z, w):
    cosine = models.ssa_crnn.CosineClassifier(5).apply({"params": {"kernel": w}}, z)
    logits = speaker.aam_logits(cosine, jnp.asarray(labels), m, s)
    return optax.softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(labels)).mean()

  loss, (gz, gw) = jax.value_and_grad(jax_loss, argnums=(0, 1))(jnp.asarray(z), jnp.asarray(w))
  tz = torch.tensor(z, dtype=torch.float64, requires_grad=True)
  tw = torch.tensor(w, dtype=torch.float64, requires_grad=True)
  cos = torch.nn.functional.normalize(tz, dim=1) @ torch.nn.functional.normalize(tw, dim=0)
  theta = torch.acos(cos)
  onehot = torch.nn.functional.one_hot(torch.tensor(labels), 5).bool()
  tlogits = s * torch.where(onehot, torch.cos(theta + m), cos)
  tloss = torch.nn.functional.cross_entropy(tlogits, torch.tensor(labels))
  tloss.backward()
  np.testing.assert_allclose(float(loss), tloss.item(), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(gz), tz.grad.numpy(), rtol=2e-4, atol=1e-5)
  np.testing.assert_allclose(np.asarray(gw), tw.grad.numpy(), rtol=2e-4, atol=1e-5)


def test_aam_model_head_and_train_step_use_the_margin():
  """speaker_loss="aam": the head is a bias-free cosine classifier (aux speaker_cosine in [-1, 1],
  speaker_logits = s * cos); CE_sp in the step is the CE of the margin logits."""
  cfg = _model_cfg(speaker_loss="aam", aam_margin=0.3, aam_scale=12.0)
  model = models.build_model(cfg)
  x, mask = _batch()
  variables = _variables(model, x, mask)
  assert set(variables["params"]["speaker_classifier"]) == {"kernel"}
  _, aux = model.apply(variables, x, mask)
  cosine = np.asarray(aux["speaker_cosine"])
  assert cosine.shape == (B, 3) and np.all(np.abs(cosine) <= 1 + 1e-6)
  kernel = np.asarray(variables["params"]["speaker_classifier"]["kernel"], np.float64)
  z = np.asarray(aux["z_sp"], np.float64)
  ref = (z / np.linalg.norm(z, axis=1, keepdims=True)) @ (kernel / np.linalg.norm(kernel, axis=0))
  np.testing.assert_allclose(cosine, ref, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(np.asarray(aux["speaker_logits"]), 12.0 * cosine, rtol=1e-6)

  labels = np.array([0, 1, 2, 0, 1, 2])
  tx = optax.sgd(0.0)
  state = train.TrainState(step=jnp.int32(0), params=variables["params"],
                           batch_stats=variables["batch_stats"], opt_state=tx.init(
                               variables["params"]), bad_step=jnp.int32(-1))
  batch = {"x": x, "mask": mask, "label": jnp.asarray(labels % 4), "speaker": jnp.asarray(labels)}
  _, out = train.train_step(state, batch, model=model, tx=tx, constraint="none")
  (_, aux_t), _ = model.apply(variables, x, mask, train=True, mutable=["batch_stats"])
  margin = _numpy_aam(np.asarray(aux_t["speaker_cosine"]), labels, 0.3, 12.0)
  ce = np.mean(np.log(np.exp(margin).sum(1)) - margin[np.arange(B), labels])
  np.testing.assert_allclose(float(out["loss_sp"]), ce, rtol=1e-4)


# ------------------------------------------------------------------------- gradient reversal


def test_gradient_reversal_forward_identity_backward_negated():
  x = jnp.asarray(np.random.default_rng(2).normal(size=(4, 3)).astype(np.float32))
  g = jnp.asarray(np.random.default_rng(3).normal(size=(4, 3)).astype(np.float32))
  for lam in (0.0, 0.5, 2.0):
    y, vjp = jax.vjp(lambda v: speaker.gradient_reversal(v, jnp.float32(lam)), x)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(x))
    np.testing.assert_allclose(np.asarray(vjp(g)[0]), -lam * np.asarray(g), rtol=1e-6)
  # Inside a loss: d/dx of sum(w * R(x)) is -lam * w.
  w = jnp.arange(12.0).reshape(4, 3)
  grad = jax.grad(lambda v: jnp.sum(w * speaker.gradient_reversal(v, 0.7)))(x)
  np.testing.assert_allclose(np.asarray(grad), -0.7 * np.asarray(w), rtol=1e-6)
  assert jax.jit(lambda v: speaker.gradient_reversal(v, 0.7))(x).shape == (4, 3)


# ------------------------------------------------------------------------ stop-gradient


def _ce_grads(model, variables, x, mask, labels, speakers, detach):
  """Gradients of CE_em and of CE_sp w.r.t. the params, in training mode."""
  def ce(params, which):
    (logits, aux), _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]},
                                   x, mask, train=True, mutable=["batch_stats"],
                                   detach_speaker=detach)
    out = logits if which == "em" else aux["speaker_logits"]
    return optax.softmax_cross_entropy_with_integer_labels(
        out, labels if which == "em" else speakers).mean()
  return (jax.grad(ce)(variables["params"], "em"), jax.grad(ce)(variables["params"], "sp"))


SPEAKER_BRANCH = ("crnn_sp", "attention_sp", "embed_sp", "speaker_classifier")


def test_speaker_stop_gradient_cuts_only_the_emotion_loss_into_the_speaker_branch():
  model = models.build_model(_model_cfg())
  x, mask = _batch(4)
  variables = _variables(model, x, mask)
  labels, speakers = jnp.asarray([0, 1, 2, 3, 0, 1]), jnp.asarray([0, 1, 2, 0, 1, 2])
  g_em_on, g_sp_on = _ce_grads(model, variables, x, mask, labels, speakers, True)
  g_em_off, g_sp_off = _ce_grads(model, variables, x, mask, labels, speakers, False)
  # CE_em reaches the speaker branch through h_sp only (the SSA's keys and values): its CRNN.
  assert all(np.any(np.asarray(l) != 0.0) for l in jax.tree.leaves(g_em_off["crnn_sp"]))
  for name in SPEAKER_BRANCH:
    leaves_on = jax.tree.leaves(g_em_on[name])
    assert leaves_on and all(np.all(np.asarray(l) == 0.0) for l in leaves_on), name
  # The emotion branch still learns, and CE_sp's gradient is the same with and without it.
  assert any(np.any(np.asarray(l) != 0) for l in jax.tree.leaves(g_em_on["crnn_em"]))
  for a, b in zip(jax.tree.leaves(g_sp_on), jax.tree.leaves(g_sp_off)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # The forward pass is unchanged.
  out_on = model.apply(variables, x, mask, detach_speaker=True)
  out_off = model.apply(variables, x, mask)
  for a, b in zip(jax.tree.leaves(out_on), jax.tree.leaves(out_off)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# --------------------------------------------------------------------------- speaker dropout


def test_speaker_dropout_one_is_self_only_and_zero_changes_nothing():
  x, mask = _batch(5)
  full = models.build_model(_model_cfg())
  variables = _variables(full, x, mask)
  rngs = {"dropout": jax.random.PRNGKey(7)}
  kw = {"train": True, "mutable": ["batch_stats"]}
  (ref_logits, ref_aux), _ = models.build_model(_model_cfg(ssa="self_only")).apply(
      variables, x, mask, **kw)
  (logits, aux), _ = models.build_model(_model_cfg(speaker_dropout=1.0)).apply(
      variables, x, mask, rngs=rngs, **kw)
  np.testing.assert_array_equal(np.asarray(logits), np.asarray(ref_logits))
  for key in ("alpha_em", "alpha_sp", "z_em", "speaker_logits"):
    np.testing.assert_array_equal(np.asarray(aux[key]), np.asarray(ref_aux[key]))
  assert not np.asarray(aux["speaker_kept"]).any()
  (logits0, aux0), _ = models.build_model(_model_cfg(speaker_dropout=0.0)).apply(
      variables, x, mask, **kw)
  (logits_full, _), _ = full.apply(variables, x, mask, **kw)
  np.testing.assert_array_equal(np.asarray(logits0), np.asarray(logits_full))
  assert "speaker_kept" not in aux0 and np.asarray(aux0["alpha_sp"]).sum() > 0
  # Evaluation mode never drops (and needs no rng).
  ev = models.build_model(_model_cfg(speaker_dropout=1.0)).apply(variables, x, mask)
  ev_full = full.apply(variables, x, mask)
  for a, b in zip(jax.tree.leaves(ev), jax.tree.leaves(ev_full)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_speaker_dropout_rate_and_per_example_masking():
  """p = 0.3 over 2000 examples: the dropped share is within 4 standard errors of p, and a
  dropped example has alpha_sp = 0 while a kept one has a positive speaker mass."""
  n, p = 2000, 0.3
  x, mask = _batch(6, b=n)
  model = models.build_model(_model_cfg(speaker_dropout=p))
  variables = _variables(model, x, mask)
  (_, aux), _ = jax.jit(lambda v, r: model.apply(v, x, mask, train=True, mutable=["batch_stats"],
                                                 rngs={"dropout": r}))(
                                                     variables, jax.random.PRNGKey(3))
  kept = np.asarray(aux["speaker_kept"])
  mass = np.asarray(aux["alpha_sp"]).sum(-1)
  assert abs((~kept).mean() - p) < 4 * np.sqrt(p * (1 - p) / n), (~kept).mean()
  assert np.all(mass[~kept] == 0.0) and np.all(mass[kept] > 0.0)


def test_ssa_per_half_fixes_each_half_mass_and_keeps_each_half_softmax():
  """model.ssa_softmax="per_half": with both halves present each carries exactly 1/2 and, within
  a half, the weights are the joint model's renormalised (the same scores); a dropped speaker
  half leaves the self half all the mass. The parameters are the joint model's."""
  x, mask = _batch(8)
  joint = models.build_model(_model_cfg())
  per_half = models.build_model(_model_cfg(ssa_softmax="per_half", speaker_dropout=0.5))
  variables = _variables(joint, x, mask)
  assert (jax.tree.structure(_variables(per_half, x, mask)) == jax.tree.structure(variables))
  _, aux_j = joint.apply(variables, x, mask)
  _, aux_h = per_half.apply(variables, x, mask)
  for half in ("alpha_em", "alpha_sp"):
    got = np.asarray(aux_h[half], np.float64)
    np.testing.assert_allclose(got.sum(-1), 0.5, rtol=1e-6)
    ref = np.asarray(aux_j[half], np.float64)
    np.testing.assert_allclose(got, 0.5 * ref / ref.sum(-1, keepdims=True), rtol=1e-5, atol=1e-7)
  assert np.abs(np.asarray(aux_j["alpha_sp"]).sum(-1) - 0.5).max() > 1e-3  # joint: not fixed
  (_, aux_t), _ = per_half.apply(variables, x, mask, train=True, mutable=["batch_stats"],
                                 rngs={"dropout": jax.random.PRNGKey(1)})
  kept = np.asarray(aux_t["speaker_kept"])
  assert kept.any() and not kept.all()
  mass_em = np.asarray(aux_t["alpha_em"]).sum(-1)
  np.testing.assert_allclose(mass_em, np.where(kept, 0.5, 1.0), rtol=1e-6)


# ---------------------------------------------------------------- the real train step


@pytest.fixture(scope="module")
def arrays():
  ds = fake_dataset()
  utt = ds.seg_utt
  return {"x": ds.segments, "mask": ds.mask, "label": ds.labels[utt], "speaker": ds.speakers[utt]}


def _program(arrays, **options):
  """A tiny SSA-CRNN-r config with `options` (flattened keys), its model, optimizer, the
  initial state (replicated) and the jitted step built as `train.build_program` builds them."""
  cfg = tiny_config(overrides=options)
  cfg.model.num_speakers = 3
  model = models.build_model(cfg.model)
  tx = train.make_optimizer(cfg.train)
  mesh = parallel.make_mesh()
  rng = jax.random.PRNGKey(0)
  opts = train.speaker_step_options(cfg, rng)
  state = train.create_train_state(model, tx, rng, jnp.asarray(arrays["x"][:8]),
                                   jnp.asarray(arrays["mask"][:8]), "l1_sphere",
                                   adversary_speakers=3 if "adversarial_weight" in opts else 0)
  step = train.make_train_step(model, tx, "l1_sphere", mesh, **opts)
  local = next(input_pipeline.train_batches(arrays, 4, 8, seed=0, fold=0, epoch=0))
  return state, step, parallel.global_batch(local, mesh), opts, mesh


def test_default_options_add_nothing_to_the_step():
  cfg = tiny_config()
  assert train.speaker_step_options(cfg, jax.random.PRNGKey(0)) == {}


def test_train_step_with_every_option_is_pure_and_trains_the_adversary(arrays):
  state, step, batch, opts, mesh = _program(
      arrays, **{"model.speaker_loss": "aam", "model.speaker_dropout": 0.5,
                 "train.speaker_stop_gradient": True, "train.adversarial_weight": 0.5})
  assert set(opts) == {"speaker_stop_gradient", "adversarial_weight", "dropout_key"}
  adv0 = np.asarray(state.params[speaker.ADVERSARY]["kernel"])
  assert adv0.shape == (8, 3)
  copy = jax.tree.map(jnp.array, state)
  repl = parallel.replicated(mesh)
  s1, m1 = step(jax.device_put(state, repl), batch)
  s1b, m1b = step(jax.device_put(copy, repl), batch)  # same state and batch: same step
  for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(s1b)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert set(m1) >= {"loss_adv", "accuracy_adv", "loss_sp"}
  np.testing.assert_allclose(float(m1["loss"]), float(m1["loss_em"]) + float(m1["loss_sp"])
                             + float(m1["loss_adv"]), rtol=1e-5)
  assert not np.allclose(np.asarray(s1.params[speaker.ADVERSARY]["kernel"]), adv0)
  # The model ignores the adversary's entry: evaluation runs on the state's params as they are.
  out = inference.eval_step(inference.variables_of(s1), {"x": batch["x"], "mask": batch["mask"]},
                            model=models.build_model(tiny_config(overrides={
                                "model.num_speakers": 3, "model.speaker_loss": "aam"}).model))
  assert np.all(np.isfinite(np.asarray(out["probs"])))


def test_adversary_gradient_into_the_emotion_branch_is_reversed(arrays):
  """With only CE_adv in play, the gradient into the emotion branch is -lambda times the
  gradient of the same loss without reversal; the adversary's own gradient is unchanged."""
  cfg = tiny_config(overrides={"model.num_speakers": 3})
  model = models.build_model(cfg.model)
  x, mask = jnp.asarray(arrays["x"][:8]), jnp.asarray(arrays["mask"][:8])
  speakers = jnp.asarray(arrays["speaker"][:8])
  variables = _variables(model, x, mask)
  adv = speaker.adversary_init(jax.random.PRNGKey(1), 8, 3)

  def ce_adv(params, lam):
    (_, aux), _ = model.apply({"params": params["model"], "batch_stats": variables["batch_stats"]},
                              x, mask, train=True, mutable=["batch_stats"])
    z = aux["z_em"] if lam is None else speaker.gradient_reversal(aux["z_em"], lam)
    logits = speaker.adversary_logits(params["adv"], z)
    return optax.softmax_cross_entropy_with_integer_labels(logits, speakers).mean()

  params = {"model": variables["params"], "adv": adv}
  plain = jax.grad(ce_adv)(params, None)
  reversed_ = jax.grad(ce_adv)(params, jnp.float32(0.5))
  for a, b in zip(jax.tree.leaves(reversed_["model"]["crnn_em"]),
                  jax.tree.leaves(plain["model"]["crnn_em"])):
    np.testing.assert_allclose(np.asarray(a), -0.5 * np.asarray(b), rtol=1e-5, atol=1e-9)
  for a, b in zip(jax.tree.leaves(reversed_["adv"]), jax.tree.leaves(plain["adv"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# ------------------------------------------------------------------------------ config errors


@pytest.mark.parametrize("key,value,match", [
    ("model.speaker_loss", "arcface", "model.speaker_loss must be one of"),
    ("model.aam_margin", -0.1, "model.aam_margin"),
    ("model.aam_scale", 0.0, "model.aam_scale"),
    ("model.speaker_dropout", 1.5, "model.speaker_dropout"),
    ("model.ssa_softmax", "separate", "model.ssa_softmax must be one of"),
])
def test_bad_model_options_are_one_line(key, value, match):
  cfg = tiny_config(overrides={"model.num_speakers": 3, key: value})
  with pytest.raises(ValueError, match=match) as e:
    models.build_model(cfg.model)
  assert "\n" not in str(e.value)


def test_speaker_options_need_a_speaker_branch():
  cfg = tiny_config("acrnn", "none", {"model.speaker_dropout": 0.2})
  with pytest.raises(ValueError, match="need model.name='ssa_crnn'"):
    models.build_model(cfg.model)
  cfg = tiny_config("acrnn", "none", {"model.ssa_softmax": "per_half"})
  with pytest.raises(ValueError, match="need model.name='ssa_crnn'"):
    models.build_model(cfg.model)
  cfg = tiny_config("acrnn", "none", {"train.speaker_stop_gradient": True})
  with pytest.raises(ValueError, match="speaker_stop_gradient needs model.name='ssa_crnn'"):
    train.check_config(cfg, 0)
  cfg = tiny_config(overrides={"train.adversarial_weight": -1.0})
  with pytest.raises(ValueError, match="adversarial_weight must be a number >= 0"):
    train.check_config(cfg, 0)
  cfg = tiny_config("acrnn", "none", {"train.adversarial_weight": 0.3})
  train.check_config(cfg, 0)  # the adversary needs no speaker branch
