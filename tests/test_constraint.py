"""Tests of the Eq. 8 constraint (ssa_jax/constraint.py) against references written from the
definition: brute force over sign patterns with scipy root finding for the nearest point."""

from __future__ import annotations

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.optimize
from hypothesis import given, settings, strategies as st

from ssa_jax.constraint import classifier_radius, project_classifier

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)
project = jax.jit(project_classifier, static_argnums=2)


def draw_problem(seed: int, n: int, k: int, batch: int, zeros: bool):
  rng = np.random.default_rng(seed)
  kernel = rng.normal(size=(n, k)) * rng.choice([0.01, 1.0, 30.0])
  if zeros:
    kernel[rng.random((n, k)) < 0.3] = 0.0
  inputs = rng.normal(size=(batch, n)) + rng.normal()
  return kernel.astype(np.float32), inputs.astype(np.float32)


def reference_radius(inputs: np.ndarray, num_classes: int) -> float:
  """N / (K * ||sum_i x_i||_1), in float64."""
  x = inputs.astype(np.float64)
  return x.shape[0] / (num_classes * np.abs(x.sum(axis=0)).sum())


def reference_nearest_on_sphere(w: np.ndarray, r: float) -> tuple[np.ndarray, float]:
  """argmin_v ||w - v||_2 subject to ||v||_1 = r, by brute force over the 2^n faces.

  On the face of sign pattern s ({v : s_i v_i >= 0, sum_i s_i v_i = r}) the KKT conditions give
  v_i = s_i max(s_i w_i - theta, 0) with theta such that sum_i max(s_i w_i - theta, 0) = r,
  found here with brentq; the answer is the face point closest to w.
  """
  w = w.astype(np.float64)
  best, best_dist = None, np.inf
  for signs in itertools.product([-1.0, 1.0], repeat=w.size):
    s = np.asarray(signs)
    u = s * w
    g = lambda theta: np.maximum(u - theta, 0.0).sum() - r
    theta = scipy.optimize.brentq(g, u.min() - r - 1.0, u.max(), xtol=1e-14, rtol=1e-14)
    v = s * np.maximum(u - theta, 0.0)
    dist = np.linalg.norm(w - v)
    if dist < best_dist:
      best, best_dist = v, dist
  return best, best_dist


@SETTINGS
@given(seed=st.integers(0, 2**31), n=st.integers(1, 8), k=st.integers(1, 5),
       batch=st.integers(1, 6), zeros=st.booleans(), mode=st.sampled_from(["l1_sphere", "rescale"]))
def test_every_column_lands_on_the_sphere(seed, n, k, batch, zeros, mode):
  kernel, inputs = draw_problem(seed, n, k, batch, zeros)
  r = reference_radius(inputs, k)
  np.testing.assert_allclose(classifier_radius(jnp.asarray(inputs), k), r, rtol=1e-5)
  out = np.asarray(project(jnp.asarray(kernel), jnp.asarray(inputs), mode))
  chex.assert_shape(out, kernel.shape)
  assert out.dtype == kernel.dtype
  np.testing.assert_allclose(np.abs(out).sum(axis=0), r, rtol=1e-5)
  if mode == "rescale":  # parallel to the input column, same orientation
    norms = np.abs(kernel).sum(axis=0)
    nonzero = norms > 0
    np.testing.assert_allclose(out[:, nonzero] * norms[nonzero], kernel[:, nonzero] * r,
                               rtol=1e-5, atol=1e-6 * r * norms.max())


@SETTINGS
@given(seed=st.integers(0, 2**31), n=st.integers(1, 4), k=st.integers(1, 3),
       zeros=st.booleans())
def test_l1_sphere_is_the_nearest_point(seed, n, k, zeros):
  kernel, inputs = draw_problem(seed, n, k, 4, zeros)
  r = reference_radius(inputs, k)
  out = np.asarray(project(jnp.asarray(kernel), jnp.asarray(inputs), "l1_sphere"), np.float64)
  for j in range(k):
    ref, ref_dist = reference_nearest_on_sphere(kernel[:, j], r)
    dist = np.linalg.norm(kernel[:, j] - out[:, j])
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-4, atol=1e-5 * r)
    if not zeros:  # generic column: the nearest point is unique
      np.testing.assert_allclose(out[:, j], ref, rtol=1e-4, atol=1e-5 * r)


def test_inside_ball_with_zero_entry_reaches_the_sphere():
  # r = 4. optax's projection_l1_sphere would return (2.5, 0): off the sphere.
  # The nearest points are (2.5, +-1.5).
  kernel = jnp.array([[1.0], [0.0]])
  inputs = jnp.array([[0.25, 0.0], [0.25, 0.0]])  # r = N / (K ||sum x||_1) = 2 / (1 * 0.5) = 4

  out = np.asarray(project_classifier(kernel, inputs, "l1_sphere"))
  np.testing.assert_allclose(np.abs(out[:, 0]), [2.5, 1.5], rtol=1e-6)
  _, ref_dist = reference_nearest_on_sphere(np.array([1.0, 0.0]), 4.0)
  np.testing.assert_allclose(np.linalg.norm(out[:, 0] - [1.0, 0.0]), ref_dist, rtol=1e-6)


@pytest.mark.parametrize("mode", ["l1_sphere", "rescale"])
def test_column_already_on_sphere_is_unchanged(mode):
  rng = np.random.default_rng(0)
  inputs = rng.normal(size=(5, 6)).astype(np.float32)
  r = reference_radius(inputs, 3)
  kernel = rng.normal(size=(6, 3))
  kernel = (kernel / np.abs(kernel).sum(axis=0) * r).astype(np.float32)
  out = project(jnp.asarray(kernel), jnp.asarray(inputs), mode)
  np.testing.assert_allclose(out, kernel, rtol=1e-5, atol=1e-7)


def test_none_is_identity_and_edge_cases():
  rng = np.random.default_rng(1)
  kernel = jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)
  inputs = jnp.asarray(rng.normal(size=(5, 4)), jnp.float32)
  chex.assert_trees_all_equal(project(kernel, inputs, "none"), kernel)
  # sum_i x_i = 0: the radius is infinite and the kernel is left unchanged.
  whole = jnp.round(4.0 * inputs)  # small integers: the sum below is exactly 0
  balanced = jnp.concatenate([whole, -whole])
  assert np.isinf(classifier_radius(balanced, 3))
  for mode in ("l1_sphere", "rescale"):
    chex.assert_trees_all_equal(project(kernel, balanced, mode), kernel)
  # A zero column becomes the uniform point (r/n, ..., r/n) in both modes.
  zero_col = kernel.at[:, 1].set(0.0)
  r = reference_radius(np.asarray(inputs), 3)
  for mode in ("l1_sphere", "rescale"):
    out = np.asarray(project(zero_col, inputs, mode))
    np.testing.assert_allclose(out[:, 1], np.full(4, r / 4), rtol=1e-5)


def test_no_gradient_through_inputs_and_bad_arguments():
  kernel = jnp.ones((3, 2))
  inputs = jnp.arange(12.0).reshape(4, 3)
  for mode in ("l1_sphere", "rescale"):
    grad = jax.grad(lambda x: jnp.sum(project_classifier(kernel, x, mode) ** 2))(inputs)
    chex.assert_trees_all_equal(grad, jnp.zeros_like(inputs))
  with pytest.raises(ValueError, match="train.constraint"):
    project_classifier(kernel, inputs, "l2")
  with pytest.raises(ValueError, match=r"kernel \(n, K\) and inputs \(N, n\)"):
    project_classifier(kernel, inputs[:, :2], "rescale")


# ----------------------------------------------------------------------------------------------
# train.head_step: the head's step size (constraint.head_step_transform, train.make_optimizer)


def _head_params(rng, e: int, k: int, learned: bool):
  params = {"classifier": {"kernel": rng.normal(size=(e, k)).astype(np.float32) * 1e-3,
                           "bias": rng.normal(size=(k,)).astype(np.float32)},
            "embed": {"kernel": rng.normal(size=(6, e)).astype(np.float32)}}
  if learned:
    params["log_logit_scale"] = np.float32(np.log(37.0))
  return jax.tree.map(jnp.asarray, params)


@pytest.mark.parametrize("learned", [False, True])
def test_relative_head_step_scales_nadam_updates(learned):
  """'relative' = NAdam's own update, then the kernel columns times ||w_k||_1 / sqrt(E) and the
  scaled bias divided by the logit scale, every other leaf unchanged (reference in numpy)."""
  from ssa_jax import config as config_lib, train
  e, k = 8, 4
  cfg = config_lib.base_config()
  cfg.train.head_step = "relative"
  cfg.train.learning_rate = 1e-3
  cfg.model.embed_dim, cfg.model.num_classes = e, k
  cfg.model.logit_scale = "learned" if learned else 24.0
  rng = np.random.default_rng(0)
  params = _head_params(rng, e, k, learned)
  plain = train.make_optimizer(_with(cfg.train, head_step="adam"))
  tx = train.make_optimizer(cfg.train, cfg.model)
  s_plain, s_tx = plain.init(params), tx.init(params)
  for step in range(3):
    grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=np.shape(p)), jnp.float32), params)
    ref, s_plain = plain.update(grads, s_plain, params)
    got, s_tx = tx.update(grads, s_tx, params)
    w = np.asarray(params["classifier"]["kernel"], np.float64)
    scale = np.exp(float(params["log_logit_scale"])) if learned else 24.0
    want_kernel = np.asarray(ref["classifier"]["kernel"]) * np.abs(w).sum(0) / np.sqrt(e)
    np.testing.assert_allclose(got["classifier"]["kernel"], want_kernel, rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(got["classifier"]["bias"],
                               np.asarray(ref["classifier"]["bias"]) / scale, rtol=1e-5)
    np.testing.assert_allclose(got["embed"]["kernel"], ref["embed"]["kernel"], rtol=1e-6)
    if learned:
      np.testing.assert_allclose(got["log_logit_scale"], ref["log_logit_scale"], rtol=1e-6)
    params = optax.apply_updates(params, got)


def _with(cd, **changes):
  out = cd.copy_and_resolve_references()
  for key, value in changes.items():
    out[key] = value
  return out


def test_relative_head_step_unscaled_bias_is_unchanged():
  from ssa_jax.constraint import head_step_transform
  params = _head_params(np.random.default_rng(1), 6, 3, False)
  tx = head_step_transform("relative", 6, 10.0, "unscaled")
  updates = jax.tree.map(jnp.ones_like, params)
  got, _ = tx.update(updates, tx.init(params), params)
  np.testing.assert_array_equal(got["classifier"]["bias"], np.ones(3, np.float32))


def test_head_step_errors():
  from ssa_jax import config as config_lib, train
  from ssa_jax.constraint import head_step_transform
  with pytest.raises(ValueError, match="train.head_step must be one of"):
    head_step_transform("sgd", 8, 1.0, "scaled")
  cfg = config_lib.base_config()
  cfg.train.head_step = "relative"
  with pytest.raises(ValueError, match="needs the model config"):
    train.make_optimizer(cfg.train)
  cfg.train.head_step = "fast"
  with pytest.raises(ValueError, match="train.head_step must be one of"):
    train.check_config(cfg, 0)


def test_step_reports_head_update_ratio():
  """The train step's head_update_ratio equals ||W_new - W_old||_1 / ||W_old||_1 computed from
  the states in numpy, for both head steps."""
  from conftest import fake_dataset, tiny_config
  from ssa_jax import features, input_pipeline, models, parallel, train
  ds = fake_dataset()
  utt = ds.seg_utt
  stats = features.fit_speaker_stats(ds.segments, ds.mask, ds.speakers[utt])
  arrays = {"x": features.normalize(ds.segments, ds.mask, ds.speakers[utt], stats),
            "mask": ds.mask, "label": ds.labels[utt], "speaker": ds.speakers[utt]}
  mesh = parallel.make_mesh()
  batches = [parallel.global_batch(b, mesh) for b in
             input_pipeline.train_batches(arrays, 4, 8, seed=0, fold=0, epoch=0)][:4]
  ratios = {}
  for head_step in ("adam", "relative"):
    cfg = tiny_config("acrnn", "l1_sphere", {"train.head_step": head_step})
    model = models.build_model(cfg.model)
    tx = train.make_optimizer(cfg.train, cfg.model)
    step = train.make_train_step(model, tx, "l1_sphere", mesh)
    state = train.create_train_state(model, tx, jax.random.PRNGKey(0), batches[0]["x"],
                                     batches[0]["mask"], "l1_sphere")
    seen = []
    for batch in batches:
      before = np.asarray(state.params["classifier"]["kernel"], np.float64)
      state, m = step(state, batch)
      after = np.asarray(state.params["classifier"]["kernel"], np.float64)
      want = np.abs(after - before).sum() / np.abs(before).sum()
      np.testing.assert_allclose(float(m["head_update_ratio"]), want, rtol=1e-4)
      seen.append(want)
    ratios[head_step] = np.mean(seen)
  assert all(r > 0 for r in ratios.values()), ratios


def test_relative_head_starts_dense_on_the_sphere():
  """head_step='relative' starts from the lecun kernel rescaled onto the Eq. 8 sphere (every
  entry kept, direction unchanged); the default l1_sphere start zeroes entries."""
  from conftest import fake_dataset, tiny_config
  from ssa_jax import models, train
  ds = fake_dataset()
  x, mask = ds.segments[:8], ds.mask[:8]
  kernels = {}
  for head_step in ("adam", "relative"):
    cfg = tiny_config("acrnn", "l1_sphere", {"train.head_step": head_step})
    model = models.build_model(cfg.model)
    tx = train.make_optimizer(cfg.train, cfg.model)
    state = train.create_train_state(model, tx, jax.random.PRNGKey(0), x, mask, "l1_sphere",
                                     init_projection=train.initial_projection(cfg.train))
    kernels[head_step] = np.asarray(state.params["classifier"]["kernel"], np.float64)
  raw = np.asarray(models.build_model(cfg.model).init(jax.random.PRNGKey(0), x, mask)
                   ["params"]["classifier"]["kernel"], np.float64)
  dense, sparse = kernels["relative"], kernels["adam"]
  np.testing.assert_allclose(np.abs(dense).sum(0), np.abs(sparse).sum(0), rtol=1e-5)  # same r
  np.testing.assert_allclose(dense / np.abs(dense).sum(0), raw / np.abs(raw).sum(0), rtol=1e-5)
  assert np.all(dense != 0) and np.any(sparse == 0)
  assert train.initial_projection(tiny_config("acrnn", "none").train) == "none"
