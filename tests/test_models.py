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

from conftest import tiny_config
from ssa_jax.models import ACRNN, SSACRNN, build_model

SETTINGS = settings(max_examples=3, deadline=None, derandomize=True)


def tiny_cfg(name: str, **overrides) -> ml_collections.ConfigDict:
  """The shared tiny model config (tests/tiny_config.py) with two conv layers of 3 and 4 filters
  (these property tests compile many variants; unequal widths catch a swapped axis), 3 speakers
  for SSA-CRNN, then `overrides` (model fields)."""
  model = {"model.conv_features": (3, 4), "model.num_speakers": 3 if name == "ssa_crnn" else 0}
  model.update({f"model.{k}": v for k, v in overrides.items()})
  return tiny_config(name, overrides=model).model


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
    assert set(aux) == {"emotion_logits", "z_em", "mask", "alpha", "logit_scale"}
    chex.assert_shape(aux["alpha"], (b, tp))
    self_alphas = [aux["alpha"]]
  else:
    assert set(aux) == {"emotion_logits", "z_em", "mask", "speaker_logits", "z_sp",
                        "alpha_sp_self", "alpha_em", "alpha_sp", "logit_scale"}
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


def test_logit_scale_resolution():
  """'auto' is num_classes * embed_dim; 'learned' starts at logit_scale_init; bad values fail."""
  from ssa_jax.configs import acrnn, quickstart, ssa_crnn_r
  from ssa_jax.models import resolve_logit_scale
  paper = ssa_crnn_r.get_config().model
  paper.logit_scale = "auto"
  assert resolve_logit_scale(paper) == (4.0 * 128, 4.0 * 128)
  assert resolve_logit_scale(acrnn.get_config().model) == (1.0, 1.0)
  assert resolve_logit_scale(quickstart.get_config("acrnn").model) == (1.0, 1.0)
  assert resolve_logit_scale(tiny_cfg("acrnn", logit_scale=16)) == (16.0, 16.0)
  assert resolve_logit_scale(tiny_cfg("acrnn", logit_scale="learned")) == ("learned", 32.0)  # 4 x 8
  assert resolve_logit_scale(tiny_cfg("acrnn", logit_scale="learned",
                                      logit_scale_init=3)) == ("learned", 3.0)
  for bad in (-1.0, 0, "hot", float("inf")):
    with pytest.raises(ValueError, match="logit_scale"):
      resolve_logit_scale(tiny_cfg("acrnn", logit_scale=bad))
  with pytest.raises(ValueError, match="classifier_bias"):
    build_model(tiny_cfg("acrnn", classifier_bias="sometimes"))
  with pytest.raises(ValueError, match="model.ssa"):
    build_model(tiny_cfg("ssa_crnn", ssa="both"))


@pytest.mark.parametrize("name", ["acrnn", "ssa_crnn"])
@pytest.mark.parametrize("bias", ["scaled", "unscaled", "none"])
@pytest.mark.parametrize("scale", [7.5, "learned"])
def test_emotion_head_against_numpy(name, bias, scale):
  """logits = s (z W + b) | s z W + b | s z W, with s fixed or exp(params['log_logit_scale'])."""
  x, mask = make_batch(1, 2, 8, 6, 3, [8, 5])
  model = build_model(tiny_cfg(name, logit_scale=scale, logit_scale_init=2.0,
                               classifier_bias=bias))
  variables = init(model, x, mask)
  params = variables["params"]
  assert ("bias" in params["classifier"]) == (bias != "none")
  assert ("log_logit_scale" in params) == (scale == "learned")
  logits, aux = model.apply(variables, x, mask)
  z = np.asarray(aux["z_em"], np.float64)
  w = np.asarray(params["classifier"]["kernel"], np.float64)
  b = np.asarray(params["classifier"]["bias"], np.float64) if bias != "none" else 0.0
  s = 7.5 if scale == 7.5 else np.exp(float(params["log_logit_scale"]))
  expected = {"scaled": s * (z @ w + b), "unscaled": s * (z @ w) + b, "none": s * (z @ w)}[bias]
  np.testing.assert_allclose(np.asarray(logits), expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(float(aux["logit_scale"]), s, rtol=1e-6)


def test_learned_logit_scale_starts_at_its_init():
  x, mask = make_batch(1, 2, 8, 6, 3, [8, 5])
  model = build_model(tiny_cfg("acrnn", logit_scale="learned", logit_scale_init=32.0))
  params = jax.eval_shape(model.init, jax.random.key(0), x, mask)["params"]
  assert params["log_logit_scale"].shape == ()
  real = model.init(jax.random.key(0), x, mask)["params"]["log_logit_scale"]
  np.testing.assert_allclose(float(real), np.log(32.0), rtol=1e-6)


def test_dense_before_batchnorm_has_no_bias():
  """BatchNorm subtracts the batch mean right after the per-frame dense layer: no bias there."""
  x, mask = make_batch(1, 2, 8, 6, 3, [8, 5])
  for name in ("acrnn", "ssa_crnn"):
    params = jax.eval_shape(build_model(tiny_cfg(name)).init, jax.random.key(0), x, mask)["params"]
    branches = ["crnn"] if name == "acrnn" else ["crnn_sp", "crnn_em"]
    for br in branches:
      assert set(params[br]["dense"]) == {"kernel"}
      assert set(params[br]["bn"]) == {"scale", "bias"}


@pytest.mark.parametrize("mode", ["self_only", "speaker_only"])
def test_ssa_ablations_mask_one_half(mode):
  """self_only: alpha_sp = 0 and the self half sums to 1; speaker_only the reverse; the full
  SSA's context restricted to the kept half, renormalised, is the same computation."""
  x, mask = make_batch(2, 3, 8, 6, 3, [8, 6, 4])
  full = build_model(tiny_cfg("ssa_crnn"))
  variables = init(full, x, mask)
  _, aux_full = full.apply(variables, x, mask)
  _, aux = build_model(tiny_cfg("ssa_crnn", ssa=mode)).apply(variables, x, mask)
  off, on = ("alpha_sp", "alpha_em") if mode == "self_only" else ("alpha_em", "alpha_sp")
  np.testing.assert_array_equal(np.asarray(aux[off]), 0.0)
  np.testing.assert_allclose(np.asarray(aux[on]).sum(-1), 1.0, rtol=1e-5)
  kept = np.asarray(aux_full[on], np.float64)
  np.testing.assert_allclose(np.asarray(aux[on]), kept / kept.sum(-1, keepdims=True), rtol=1e-4,
                             atol=1e-7)


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


def test_build_model_takes_the_model_section_as_it_is(tiny):
  """Model(**config.model): every field reaches the module unchanged (defaults live only in
  ssa_jax/config.py, so the modules have none), and a field no model has is an error."""
  from ssa_jax.models import ACRNN, SSACRNN
  tiny.model.num_speakers = 3
  model = build_model(tiny.model)
  assert isinstance(model, SSACRNN)
  for key, value in tiny.model.items():
    if key != "name":
      want = tuple(value) if isinstance(value, (list, tuple)) else value
      assert getattr(model, key) == want, key
  acrnn = build_model(tiny_cfg("acrnn"))
  assert type(acrnn) is ACRNN and not hasattr(acrnn, "num_speakers")
  with pytest.raises(TypeError):
    ACRNN()  # no defaults here: config.py declares them
  bad = tiny_cfg("acrnn")
  bad.unlock()
  bad.conv_featurez = (4,)
  with pytest.raises(TypeError, match="conv_featurez"):
    build_model(bad)
  other = tiny_cfg("acrnn")
  other.name = "resnet"
  with pytest.raises(ValueError, match="unknown model.name"):
    build_model(other)
