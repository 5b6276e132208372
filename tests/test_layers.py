"""ssa_jax.models.layers: the Conv module (XLA's stride-1 SAME convolution) against flax.linen.Conv
(same parameters, values and gradients), against lax's "SAME" padding over random shapes and
against torch's conv2d gradients; HoistedBLSTM against flax's BLSTM; the XLA step options.

Error measure: rel(a, b) = max|a - b| / max|b|, required <= 1e-5 (float32).
"""

from __future__ import annotations

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import flax.linen as nn
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from jax import lax

from ssa_jax import xla_options
from ssa_jax.models import layers as ops  # the layers; the XLA options are xla_options

TOL = 1e-5


def rel(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  assert a.shape == b.shape, (a.shape, b.shape)
  return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def plain_conv(x, kernel):
  return lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))


def arrays(seed, b, t, f, ci, co, kt, kf):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((b, t, f, ci)).astype(np.float32)
  k = (rng.standard_normal((kt, kf, ci, co)) / np.sqrt(kt * kf * ci)).astype(np.float32)
  dy = rng.standard_normal((b, t, f, co)).astype(np.float32)
  return jnp.asarray(x), jnp.asarray(k), jnp.asarray(dy)


def _conv_apply(x, k, impl="auto"):
  """Our Conv with kernel k and a zero bias."""
  return ops.Conv(k.shape[-1], k.shape[:2], impl=impl).apply(
      {"params": {"kernel": k, "bias": jnp.zeros(k.shape[-1])}}, x)


@settings(max_examples=8, deadline=None)
@given(b=st.integers(1, 3), t=st.integers(1, 9), f=st.integers(1, 7), ci=st.integers(1, 5),
       co=st.integers(1, 5), kt=st.integers(1, 5), kf=st.integers(1, 4), seed=st.integers(0, 99))
def test_same_padding_is_xlas_same(b, t, f, ci, co, kt, kf, seed):
  """Odd and even kernels, kernels larger than the image, single rows and columns."""
  x, k, _ = arrays(seed, b, t, f, ci, co, kt, kf)
  assert ops.same_padding((kt, kf)) == tuple(
      lax.padtype_to_pads((t, f), (kt, kf), (1, 1), "SAME"))
  assert rel(_conv_apply(x, k), plain_conv(x, k)) == 0.0


def test_conv_gradients_match_torch_conv2d():
  """An independent reference: torch's input and weight gradients of conv2d (NCHW, padding
  (kt//2, kf//2))."""
  x, k, dy = arrays(1, 2, 12, 8, 3, 4, 5, 3)
  gx, gk = jax.grad(lambda x_, k_: jnp.sum(_conv_apply(x_, k_) * dy), argnums=(0, 1))(x, k)
  xt = torch.from_numpy(np.array(x)).permute(0, 3, 1, 2).requires_grad_(True)
  wt = torch.from_numpy(np.array(k)).permute(3, 2, 0, 1).requires_grad_(True)
  yt = F.conv2d(xt, wt, padding=(2, 1))
  yt.backward(torch.from_numpy(np.array(dy)).permute(0, 3, 1, 2))
  assert rel(gk, wt.grad.permute(2, 3, 1, 0).numpy()) <= TOL
  assert rel(gx, xt.grad.permute(0, 2, 3, 1).numpy()) <= TOL


@pytest.mark.parametrize("impl", ["xla", "auto"])
def test_conv_module_matches_flax_conv(impl):
  """Same parameter tree and initial values as nn.Conv(padding="SAME"); same outputs and grads."""
  x, _, _ = arrays(3, 2, 7, 6, 3, 4, 5, 3)
  ours, theirs = ops.Conv(4, (5, 3), impl=impl), nn.Conv(4, (5, 3), padding="SAME")
  key = jax.random.key(0)
  v_ours, v_theirs = ours.init(key, x), theirs.init(key, x)
  assert jax.tree.structure(v_ours) == jax.tree.structure(v_theirs)
  for a, b in zip(jax.tree.leaves(v_ours), jax.tree.leaves(v_theirs)):
    np.testing.assert_array_equal(a, b)
  v = jax.tree.map(lambda a: a + 0.1, v_theirs)  # non-zero bias
  assert rel(ours.apply(v, x), theirs.apply(v, x)) <= TOL
  g_ours = jax.grad(lambda v_: jnp.sum(jnp.sin(ours.apply(v_, x))))(v)
  g_theirs = jax.grad(lambda v_: jnp.sum(jnp.sin(theirs.apply(v_, x))))(v)
  for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_theirs)):
    assert rel(a, b) <= TOL


def test_bfloat16_compute_keeps_float32_params():
  x, _, _ = arrays(4, 2, 6, 4, 3, 4, 5, 3)
  conv = ops.Conv(4, (5, 3), dtype=jnp.bfloat16)
  v = conv.init(jax.random.key(0), x)
  assert v["params"]["kernel"].dtype == jnp.float32
  y = conv.apply(v, x)
  assert y.dtype == jnp.bfloat16
  ref = nn.Conv(4, (5, 3), padding="SAME").apply(v, x)
  assert rel(y.astype(jnp.float32), ref) <= 5e-2  # bfloat16 rounding
  g = jax.grad(lambda v_: jnp.sum(conv.apply(v_, x).astype(jnp.float32)))(v)
  assert g["params"]["kernel"].dtype == jnp.float32
  assert np.all(np.isfinite(np.asarray(g["params"]["kernel"])))


def test_bad_inputs_raise_clear_errors():
  with pytest.raises(ValueError, match="conv_impl"):
    ops.resolve_impl("cudnn")
  with pytest.raises(ValueError, match="conv_impl"):
    ops.resolve_impl("gemm")  # removed (issue 21)
  with pytest.raises(ValueError, match="NHWC"):
    ops.Conv(4, (5, 3)).init(jax.random.key(0), jnp.ones((2, 6, 4)))


def test_step_compiler_options_by_backend():
  assert xla_options.step_compiler_options("gpu") is None
  opts = xla_options.step_compiler_options("cpu")
  assert opts == {"xla_cpu_experimental_ynn_fusion_type": ""}
  # XLA accepts them, and the step's value is unchanged by them.
  x, k, dy = arrays(5, 2, 8, 6, 3, 4, 5, 3)
  f = lambda k_: jax.grad(lambda kk: jnp.sum(plain_conv(x, kk) * dy))(k_)  # noqa: E731
  tuned = jax.jit(f, compiler_options=xla_options.step_compiler_options())
  assert rel(tuned(k), jax.jit(f)(k)) <= TOL


# --- HoistedBLSTM against flax's nn.Bidirectional(nn.RNN(OptimizedLSTMCell)) ------------------

from ssa_jax.models.crnn import make_blstm  # noqa: E402


@pytest.mark.parametrize("lengths, unroll", [((9, 5, 2), 1), ((9, 9, 9), 3), (None, 1)])
def test_hoisted_blstm_matches_flax_bidirectional(lengths, unroll):
  """Same parameter tree and initial values; outputs and gradients (parameters and inputs) of a
  masked loss equal to float32 rounding, with sequence lengths (reverse within length)."""
  x = jax.random.normal(jax.random.PRNGKey(1), (3, 9, 6))
  lens = None if lengths is None else jnp.asarray(lengths)
  ref = make_blstm(4, name="blstm")
  new = ops.HoistedBLSTM(4, unroll=unroll, name="blstm")
  v_ref = ref.init(jax.random.PRNGKey(0), x, seq_lengths=lens)
  v_new = new.init(jax.random.PRNGKey(0), x, seq_lengths=lens)
  assert jax.tree.structure(v_ref) == jax.tree.structure(v_new)
  for a, b in zip(jax.tree.leaves(v_ref), jax.tree.leaves(v_new)):
    np.testing.assert_array_equal(a, b)  # same names, shapes, initialisers and RNG streams
  real = (jnp.ones((3, 9), bool) if lens is None
          else jnp.arange(9)[None, :] < lens[:, None])[..., None]
  w = jax.random.normal(jax.random.PRNGKey(2), (3, 9, 8))

  def loss(module, variables, x):
    return jnp.sum(module.apply(variables, x, seq_lengths=lens) * w * real)
  for module in (new,):
    y_ref = ref.apply(v_ref, x, seq_lengths=lens)
    y_new = module.apply(v_ref, x, seq_lengths=lens)
    assert rel(y_new * real, y_ref * real) <= TOL
    g_ref = jax.grad(loss, argnums=(1, 2))(ref, v_ref, x)
    g_new = jax.grad(loss, argnums=(1, 2))(module, v_ref, x)
    for a, b in zip(jax.tree.leaves(g_new), jax.tree.leaves(g_ref)):
      assert rel(a, b) <= TOL


def test_hoisted_blstm_bfloat16_and_model_switch():
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 6))
  new = ops.HoistedBLSTM(4, dtype=jnp.bfloat16)
  v = new.init(jax.random.PRNGKey(0), x)
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(v))
  ref = make_blstm(4, jnp.bfloat16)
  assert rel(new.apply(v, x), ref.apply(v, x)) <= 2e-2  # bfloat16 matmuls
  assert ops.resolve_lstm_impl("auto") in ("hoisted", "flax")
  assert isinstance(make_blstm(4, impl="hoisted"), ops.HoistedBLSTM)
  assert isinstance(make_blstm(4, impl="flax"), nn.Bidirectional)
  with pytest.raises(ValueError, match="lstm_impl"):
    ops.resolve_lstm_impl("cudnn")
