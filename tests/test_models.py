"""Property tests of the flax models (ssa_jax/models): shapes, attention, masking, jit/vmap."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from ssa_jax.config import base_config
from ssa_jax.models import ACRNN, SSACRNN, build_model

SETTINGS = settings(max_examples=3, deadline=None, derandomize=True)


def tiny_cfg(name: str, **overrides) -> ml_collections.ConfigDict:
  c = base_config().model
  c.name = name
  c.conv_features = (3, 4)
  c.dense_units = 8
  c.lstm_units = 5
  c.embed_dim = 6
  c.num_speakers = 3 if name == "ssa_crnn" else 0
  for k, v in overrides.items():
    c[k] = v
  return c


def make_batch(seed: int, b: int, t: int, m: int, c: int, lengths):
  x = jax.random.normal(jax.random.key(seed), (b, t, m, c), jnp.float32)
  mask = jnp.arange(t)[None, :] < jnp.asarray(lengths)[:, None]
  return x, mask


def init(model, x, mask=None, seed=0):
  """Random variables of the right structure, without compiling `model.init`.

  (Compiling init, orthogonal LSTM initialisers included, dominates the test time on 2 cores;
  `test_init_gives_params_and_batch_stats` runs the real init.) Params ~ N(0, 0.3^2),
  running means ~ N(0, 0.1^2), running variances in [0.5, 1.5].
  """
  shapes = jax.eval_shape(model.init, jax.random.key(0), x, mask)
  rng = np.random.default_rng(seed)
  def fill(path, leaf):
    name = jax.tree_util.keystr(path)
    if "'var'" in name:
      return jnp.asarray(rng.uniform(0.5, 1.5, leaf.shape), leaf.dtype)
    scale = 0.1 if "'mean'" in name else 0.3
    return jnp.asarray(scale * rng.standard_normal(leaf.shape), leaf.dtype)
  return jax.tree_util.tree_map_with_path(fill, shapes)


def attention_weights(aux):
  if "alpha" in aux:
    return aux["alpha"]
  return jnp.concatenate([aux["alpha_em"], aux["alpha_sp"]], axis=1)


def check_outputs(model_cfg, logits, aux, b, tp):
  k, e = model_cfg.num_classes, model_cfg.embed_dim
  chex.assert_shape([logits, aux["emotion_logits"], aux["z_em"], aux["mask"]],
                    [(b, k), (b, k), (b, e), (b, tp)])
  chex.assert_trees_all_equal(logits, aux["emotion_logits"])
  if model_cfg.name == "acrnn":
    assert set(aux) == {"emotion_logits", "z_em", "mask", "alpha"}
    chex.assert_shape(aux["alpha"], (b, tp))
    self_alphas = [aux["alpha"]]
  else:
    assert set(aux) == {"emotion_logits", "z_em", "mask", "speaker_logits", "z_sp",
                        "alpha_sp_self", "alpha_em", "alpha_sp"}
    chex.assert_shape([aux["speaker_logits"], aux["z_sp"], aux["alpha_sp_self"],
                       aux["alpha_em"], aux["alpha_sp"]],
                      [(b, model_cfg.num_speakers), (b, e), (b, tp), (b, tp), (b, tp)])
    self_alphas = [aux["alpha_sp_self"]]
  pmask = np.asarray(aux["mask"])
  for alpha in self_alphas + [attention_weights(aux)]:
    alpha = np.asarray(alpha)
    full_mask = np.tile(pmask, (1, alpha.shape[1] // tp))
    assert (alpha >= 0).all()
    np.testing.assert_allclose(alpha.sum(axis=1), 1.0, rtol=1e-5)
    assert (alpha[~full_mask] == 0).all(), "masked frames must get exactly zero attention"
  chex.assert_tree_all_finite((logits, aux))


@SETTINGS
@given(name=st.sampled_from(["acrnn", "ssa_crnn"]), b=st.integers(1, 3),
       half_t=st.integers(2, 6), m=st.sampled_from([4, 6, 8]), c=st.sampled_from([1, 3]),
       conv=st.integers(2, 4), hidden=st.integers(2, 6), data=st.data())
def test_shapes_attention_and_masked_values(name, b, half_t, m, c, conv, hidden, data):
  t = 2 * half_t
  lengths = data.draw(st.lists(st.integers(1, half_t), min_size=b, max_size=b))
  lengths = [2 * n for n in lengths]
  cfg = tiny_cfg(name, conv_features=(conv, conv + 1), lstm_units=hidden,
                 dense_units=hidden + 2, embed_dim=hidden + 1)
  model = build_model(cfg)
  x, mask = make_batch(b, b, t, m, c, lengths)
  variables = init(model, x, mask)
  apply = jax.jit(model.apply)
  logits, aux = apply(variables, x, mask)
  check_outputs(cfg, logits, aux, b, t // 2)
  np.testing.assert_array_equal(aux["mask"], np.asarray(mask)[:, ::2])
  # Whatever the padded frames hold, no output changes.
  x2 = jnp.where(mask[:, :, None, None], x, 100.0 * jax.random.normal(jax.random.key(7), x.shape))
  logits2, aux2 = apply(variables, x2, mask)
  chex.assert_trees_all_close((logits2, aux2), (logits, aux), atol=1e-6, rtol=1e-6)


@SETTINGS
@given(b=st.integers(1, 3), half_t=st.integers(2, 5), extra=st.integers(1, 3), data=st.data())
def test_acrnn_appended_padding_changes_nothing(b, half_t, extra, data):
  t, m = 2 * half_t, 6
  lengths = [2 * n for n in data.draw(st.lists(st.integers(1, half_t), min_size=b, max_size=b))]
  cfg = tiny_cfg("acrnn")
  model = build_model(cfg)
  x, mask = make_batch(3, b, t, m, 2, lengths)
  variables = init(model, x, mask)
  logits, aux = jax.jit(model.apply)(variables, x, mask)
  pad = 2 * extra
  x_long = jnp.concatenate([x, jax.random.normal(jax.random.key(9), (b, pad, m, 2))], axis=1)
  mask_long = jnp.concatenate([mask, jnp.zeros((b, pad), bool)], axis=1)
  logits_l, aux_l = jax.jit(model.apply)(variables, x_long, mask_long)
  chex.assert_trees_all_close(logits_l, logits, atol=1e-6, rtol=1e-6)
  chex.assert_trees_all_close(aux_l["z_em"], aux["z_em"], atol=1e-6, rtol=1e-6)
  chex.assert_trees_all_close(aux_l["alpha"][:, : t // 2], aux["alpha"], atol=1e-6, rtol=1e-6)
  assert (np.asarray(aux_l["alpha"][:, t // 2:]) == 0).all()


@pytest.mark.parametrize("name", ["acrnn", "ssa_crnn"])
def test_jit_vmap_and_single_trace(name):
  chex.clear_trace_counter()
  cfg = tiny_cfg(name)
  model = build_model(cfg)
  x, mask = make_batch(0, 2, 8, 4, 3, [8, 4])
  variables = init(model, x, mask)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def forward(variables, x, mask):
    return model.apply(variables, x, mask)

  for seed in range(3):
    xs, _ = make_batch(seed, 2, 8, 4, 3, [8, 4])
    forward(variables, xs, mask)

  # vmap over an extra leading axis equals a loop over it.
  xv = jnp.stack([x, 2.0 * x, -x])
  maskv = jnp.stack([mask, mask, jnp.ones_like(mask)])
  vmapped = jax.jit(jax.vmap(model.apply, in_axes=(None, 0, 0)))(variables, xv, maskv)
  for i in range(3):
    looped = forward(variables, xv[i], maskv[i])
    chex.assert_trees_all_close(jax.tree.map(lambda a: a[i], vmapped), looped,
                                atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["acrnn", "ssa_crnn"])
def test_train_mode_updates_batch_stats_from_real_frames_only(name):
  cfg = tiny_cfg(name)
  model = build_model(cfg)
  x, mask = make_batch(0, 3, 8, 4, 3, [8, 4, 2])
  variables = init(model, x, mask)
  assert set(variables) == {"params", "batch_stats"}
  train_apply = jax.jit(functools.partial(model.apply, train=True, mutable=["batch_stats"]))
  (logits, aux), updates = train_apply(variables, x, mask)
  check_outputs(cfg, logits, aux, 3, 4)
  old, new = variables["batch_stats"], updates["batch_stats"]
  chex.assert_trees_all_equal_shapes(old, new)
  for a, b in zip(jax.tree.leaves(old), jax.tree.leaves(new)):
    assert not np.allclose(a, b), "a training step must move the running statistics"
  x2 = jnp.where(mask[:, :, None, None], x, 50.0)
  _, updates2 = train_apply(variables, x2, mask)
  chex.assert_trees_all_close(updates2, updates, atol=1e-6, rtol=1e-6)
  # Eval mode uses the running statistics: the batch composition does not matter.
  eval_all, _ = jax.jit(model.apply)(variables, x, mask)
  eval_one, _ = jax.jit(model.apply)(variables, x[:1], mask[:1])
  chex.assert_trees_all_close(eval_one, eval_all[:1], atol=1e-5, rtol=1e-5)


def test_init_gives_params_and_batch_stats():
  model = build_model(tiny_cfg("acrnn"))
  x, mask = make_batch(0, 2, 4, 4, 3, [4, 2])
  variables = model.init(jax.random.key(0), x, mask)
  assert set(variables) == {"params", "batch_stats"}
  chex.assert_trees_all_equal_shapes(variables, init(model, x, mask))
  chex.assert_tree_all_finite(variables)
  assert isinstance(model, ACRNN)


@pytest.mark.parametrize("name", ["acrnn", "ssa_crnn"])
def test_classifier_is_top_level_dense(name):
  cfg = tiny_cfg(name)
  model = build_model(cfg)
  x, mask = make_batch(0, 2, 4, 4, 3, [4, 2])
  params = jax.eval_shape(model.init, jax.random.key(0), x, mask)["params"]
  chex.assert_shape(params["classifier"]["kernel"], (cfg.embed_dim, cfg.num_classes))
  if name == "ssa_crnn":
    assert isinstance(model, SSACRNN)
    chex.assert_shape(params["speaker_classifier"]["kernel"], (cfg.embed_dim, cfg.num_speakers))


def test_bfloat16_compute_keeps_float32_params_and_outputs():
  cfg32, cfg16 = tiny_cfg("ssa_crnn"), tiny_cfg("ssa_crnn", dtype="bfloat16")
  x, mask = make_batch(0, 2, 8, 4, 3, [8, 6])
  variables = init(build_model(cfg32), x, mask)
  shapes16 = jax.eval_shape(build_model(cfg16).init, jax.random.key(0), x, mask)
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(shapes16))
  chex.assert_trees_all_equal_shapes(shapes16, variables)
  logits32, _ = jax.jit(build_model(cfg32).apply)(variables, x, mask)
  logits16, aux16 = jax.jit(build_model(cfg16).apply)(variables, x, mask)
  assert logits16.dtype == jnp.float32 and aux16["alpha_em"].dtype == jnp.float32
  np.testing.assert_allclose(logits16, logits32, atol=0.05, rtol=0.05)


def test_mask_padding_off_and_default_mask():
  cfg = tiny_cfg("acrnn", mask_padding=False)
  model = build_model(cfg)
  x, _ = make_batch(0, 2, 8, 4, 3, [8, 8])
  variables = init(model, x)
  logits, aux = jax.jit(model.apply)(variables, x)
  check_outputs(cfg, logits, aux, 2, 4)


def test_bad_configs_and_inputs_raise_clear_errors():
  with pytest.raises(ValueError, match="num_speakers"):
    build_model(tiny_cfg("ssa_crnn", num_speakers=0))
  with pytest.raises(ValueError, match="unknown model.name"):
    build_model(tiny_cfg("transformer"))
  with pytest.raises(ValueError, match="model.dtype"):
    build_model(tiny_cfg("acrnn", dtype="float16"))
  model = build_model(tiny_cfg("acrnn"))
  x, mask = make_batch(0, 2, 8, 4, 3, [8, 8])
  with pytest.raises(ValueError, match="mask must have shape"):
    model.init(jax.random.key(0), x, mask[:, :4])
  with pytest.raises(ValueError, match="batch, frames, mels, channels"):
    model.init(jax.random.key(0), x[..., 0], mask)
  ssa = build_model(tiny_cfg("ssa_crnn"))
  variables = init(ssa, x, mask)
  with pytest.raises(ValueError, match="built for 4 pooled frames"):
    ssa.apply(variables, x[:, :4], mask[:, :4])


def test_logit_scale_resolution_and_effect():
  """0 means num_classes * embed_dim; the emotion logits are the scaled classifier output."""
  from configs import acrnn, acrnn_r, quickstart, ssa_crnn_r
  from ssa_jax.models import resolve_logit_scale
  assert resolve_logit_scale(ssa_crnn_r.get_config().model) == 4 * 128
  assert resolve_logit_scale(acrnn_r.get_config().model) == 4 * 128
  assert resolve_logit_scale(acrnn.get_config().model) == 1.0
  assert resolve_logit_scale(quickstart.get_config("acrnn").model) == 1.0
  qs = quickstart.get_config("acrnn_r").model
  assert resolve_logit_scale(qs) == qs.num_classes * qs.embed_dim
  with pytest.raises(ValueError, match="logit_scale"):
    resolve_logit_scale(tiny_cfg("acrnn", logit_scale=-1.0))
  for name in ("acrnn", "ssa_crnn"):
    x, mask = make_batch(1, 2, 8, 6, 3, [8, 5])
    model = build_model(tiny_cfg(name, logit_scale=7.5))
    variables = model.init(jax.random.key(0), x, mask)
    logits, aux = model.apply(variables, x, mask)
    clf = variables["params"]["classifier"]
    expected = 7.5 * (np.asarray(aux["z_em"]) @ np.asarray(clf["kernel"]) + np.asarray(clf["bias"]))
    np.testing.assert_allclose(np.asarray(logits), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["acrnn", "ssa_crnn"])
def test_lstm_impls_same_tree_and_values(name):
  """model.lstm_impl "hoisted" (ssa_jax.ops.HoistedBLSTM) and "flax" (nn.Bidirectional of
  nn.RNN): the same parameter tree, and the same logits and batch statistics in both modes."""
  x, mask = make_batch(1, 3, 8, 4, 3, [8, 6, 4])
  flax_m = build_model(tiny_cfg(name, lstm_impl="flax"))
  hoist_m = build_model(tiny_cfg(name, lstm_impl="hoisted"))
  shapes = jax.eval_shape(flax_m.init, jax.random.key(0), x, mask)
  assert jax.tree.structure(shapes) == jax.tree.structure(
      jax.eval_shape(hoist_m.init, jax.random.key(0), x, mask))
  variables = init(flax_m, x, mask)
  for train in (False, True):
    kw = {"mutable": ["batch_stats"]} if train else {}
    out_f = flax_m.apply(variables, x, mask, train=train, **kw)
    out_h = hoist_m.apply(variables, x, mask, train=train, **kw)
    for a, b in zip(jax.tree.leaves(out_h), jax.tree.leaves(out_f)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
