"""Layers of the models that flax does not have in the needed form (docs/DESIGN.md §3).

  Conv(features, kernel_size, impl="xla" | "winograd" | "auto")   stride-1 SAME 2-D conv, NHWC;
                     the parameters of flax.linen.Conv
  HoistedBLSTM(features)(x (B, T, F), seq_lengths (B,)) -> (B, T, 2·features)   the default BLSTM
                     (`model.lstm_impl="auto"`): nn.Bidirectional(nn.RNN(OptimizedLSTMCell))'s
                     function and parameters, with the input projection out of the time loop

The convolution is XLA's own (`lax.conv_general_dilated`); on CPU the steps compile it with
Eigen's kernel gradient (`ssa_jax/xla_options.py`). `impl="winograd"` computes the same function
with 0.4x the multiplications: Winograd F(4, kt) along time, one XLA (1, kf) convolution per
Winograd point (`ssa_jax/models/winograd.py`, issue 23; the probe is in benchmarks/RESULTS.md).
A custom-VJP variant whose kernel gradient was one GEMM per kernel tap (`model.conv_impl="gemm"`)
gained nothing over that and was removed (issue 21; benchmarks/RESULTS.md, "What was tried").
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from ssa_jax.models import winograd

Array = jax.Array
_DN = ("NHWC", "HWIO", "NHWC")
IMPLS = ("auto", "xla", "winograd")
# conv_impl="winograd": F(WINOGRAD_TILE, k) along WINOGRAD_AXIS (1 time, 2 frequency), the other
# axis's taps by XLA convolutions per Winograd point; float32 error ~2-3e-6 relative
# (tests/test_winograd.py). Layers with fewer input channels (conv1: 3; quickstart: 8-16) keep
# the XLA convolution: there the transforms cost more than the multiplications they save.
WINOGRAD_AXIS = 1
WINOGRAD_TILE = 4
WINOGRAD_MIN_CHANNELS = 32


def same_padding(kernel_size: Sequence[int]) -> tuple[tuple[int, int], ...]:
  """XLA's SAME padding for stride 1: (low, high) = ((k-1)//2, k-1-(k-1)//2) per spatial dim."""
  return tuple(((k - 1) // 2, k - 1 - (k - 1) // 2) for k in kernel_size)


def _conv(x: Array, kernel: Array, precision: Any = None) -> Array:
  return lax.conv_general_dilated(x, kernel, (1, 1), same_padding(kernel.shape[:2]),
                                  dimension_numbers=_DN, precision=precision)


def uses_winograd(impl: str, kernel_shape: Sequence[int],
                  min_channels: int = WINOGRAD_MIN_CHANNELS) -> bool:
  """Whether a (kt, kf, Ci, Co) layer runs Winograd under `impl` (after `resolve_impl`): >= 2
  kernel taps along WINOGRAD_AXIS and >= `min_channels` input channels
  (`model.winograd_min_channels`)."""
  return (impl == "winograd" and kernel_shape[WINOGRAD_AXIS - 1] >= 2 and
          kernel_shape[2] >= min_channels)


def conv_multiplications(x_shape: Sequence[int], kernel_shape: Sequence[int], impl: str,
                         min_channels: int = WINOGRAD_MIN_CHANNELS) -> float:
  """GEMM multiplications of one forward pass of `Conv` on x (B, T, F, Ci) with a (kt, kf, Ci,
  Co) kernel under `impl` (the direct count B·T·F·kt·kf·Ci·Co unless `uses_winograd`)."""
  impl = resolve_impl(impl)
  if not uses_winograd(impl, kernel_shape, min_channels):
    return winograd.multiplications(x_shape, kernel_shape, "direct")
  kind = "time" if WINOGRAD_AXIS == 1 else "freq"
  return winograd.multiplications(x_shape, kernel_shape, kind, mt=WINOGRAD_TILE,
                                  mf=WINOGRAD_TILE)


def resolve_impl(impl: str, backend: str | None = None) -> str:
  """Checks `model.conv_impl`; "auto" -> "winograd" on CPU (measured faster there, quiet:
  benchmarks/RESULTS.md, issue 23), "xla" on other backends (cuDNN's / the TPU's own kernels).
  `backend`: default `jax.default_backend()`."""
  if impl not in IMPLS:
    raise ValueError(f"model.conv_impl must be one of {IMPLS}, got {impl!r}")
  if impl != "auto":
    return impl
  return "winograd" if (backend or jax.default_backend()) == "cpu" else "xla"


class Conv(nn.Module):
  """A stride-1 SAME 2-D convolution with bias, NHWC; parameters as `flax.linen.Conv`.

  Same parameter names, shapes and initialisers as `nn.Conv(features, kernel_size, padding="SAME")`
  (`kernel` (kt, kf, Ci, Co) lecun-normal, `bias` (Co,) zeros), so checkpoints and initial values
  are interchangeable. `impl`: "xla" (`lax.conv_general_dilated`), "winograd"
  (`winograd.conv_1d`, F(4, k) along WINOGRAD_AXIS, for layers with >= `winograd_min_channels`
  inputs; the XLA convolution for the others) or "auto" (CPU: "winograd", else "xla"). `dtype` is
  the compute dtype (inputs and kernel cast to it); parameters stay `param_dtype`.
  """

  features: int
  kernel_size: Sequence[int]
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  precision: Any = None
  impl: str = "auto"
  winograd_min_channels: int = WINOGRAD_MIN_CHANNELS
  kernel_init: Callable = nn.initializers.lecun_normal()
  bias_init: Callable = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """x (B, T, F, Ci) -> (B, T, F, features)."""
    if x.ndim != 4:
      raise ValueError(f"Conv expects NHWC input (batch, time, freq, channels), got {x.shape}")
    kt, kf = self.kernel_size
    kernel = self.param("kernel", self.kernel_init, (kt, kf, x.shape[-1], self.features),
                        self.param_dtype)
    bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    if uses_winograd(resolve_impl(self.impl), kernel.shape, self.winograd_min_channels):
      y = winograd.conv_1d(x, kernel, WINOGRAD_AXIS, WINOGRAD_TILE, self.precision)
    else:
      y = _conv(x, kernel, self.precision)
    if bias is not None:
      y = y + bias
    return y


# ----------------------------------------------------------------------------------------------
# BLSTM with the input projection hoisted out of the time loop
# ----------------------------------------------------------------------------------------------

LSTM_IMPLS = ("auto", "flax", "hoisted")


def resolve_lstm_impl(impl: str) -> str:
  """Checks `model.lstm_impl`; "auto" -> "hoisted" (benchmarks/RESULTS.md, "What was tried")."""
  if impl not in LSTM_IMPLS:
    raise ValueError(f"model.lstm_impl must be one of {LSTM_IMPLS}, got {impl!r}")
  return "hoisted" if impl == "auto" else impl


class _LSTMCellParams(nn.Module):
  """The parameters of `flax.linen.OptimizedLSTMCell(features)`, same names, shapes and
  initialisers (`i{i,f,g,o}/kernel` (F, H) lecun-normal, `h{i,f,g,o}/kernel` (H, H) orthogonal
  with `bias` (H,) zeros), returned concatenated in gate order i, f, g, o:
  (input kernel (F, 4H), recurrent kernel (H, 4H), bias (4H,))."""

  features: int
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, in_features: int) -> tuple[Array, Array, Array]:
    h = self.features
    ki, kh, bh = [], [], []
    for g in "ifgo":  # the cell's own order of creation
      k, _ = nn.recurrent.DenseParams(h, use_bias=False, param_dtype=self.param_dtype,
                                      kernel_init=nn.initializers.lecun_normal(),
                                      name=f"i{g}")(jnp.zeros((1, in_features)))
      r, b = nn.recurrent.DenseParams(h, use_bias=True, param_dtype=self.param_dtype,
                                      kernel_init=nn.initializers.orthogonal(),
                                      bias_init=nn.initializers.zeros_init(),
                                      name=f"h{g}")(jnp.zeros((1, h)))
      ki.append(k)
      kh.append(r)
      bh.append(b)
    return (jnp.concatenate(ki, axis=-1), jnp.concatenate(kh, axis=-1),
            jnp.concatenate(bh, axis=-1))


class HoistedLSTM(nn.Module):
  """One direction of a BLSTM, the same function and parameters as
  `nn.RNN(nn.OptimizedLSTMCell(features))` (zero initial carry), with the input projection of
  all time steps done before the loop as one GEMM (B·T rows instead of T GEMMs of B rows; its
  gradients, dX and dW_i, become one GEMM each as well). The loop keeps h W_h + b and the gates.

  `__call__(x (B, T, F), seq_lengths (B,) or None) -> (B, T, features)`; with `reverse`, each
  sequence is processed backwards within its length and returned in the original order
  (`flax.linen.recurrent.flip_sequences`, as nn.Bidirectional's backward RNN).
  Parameters under `cell/`: see `_LSTMCellParams`.
  """

  features: int
  reverse: bool = False
  dtype: Any = None
  param_dtype: Any = jnp.float32
  unroll: int = 1

  @nn.compact
  def __call__(self, x: Array, seq_lengths: Array | None = None) -> Array:
    b, t, _ = x.shape
    w_i, w_h, bias = _LSTMCellParams(self.features, self.param_dtype, name="cell")(x.shape[-1])
    if self.reverse:
      x = nn.recurrent.flip_sequences(x, seq_lengths, num_batch_dims=1, time_major=False)
    x, w_i, w_h, bias = nn.dtypes.promote_dtype(x, w_i, w_h, bias, dtype=self.dtype)
    xw = jnp.swapaxes(jnp.dot(x, w_i), 0, 1)  # (T, B, 4H), time major for the scan

    def step(carry, xw_t):
      c, h = carry
      h_, w_h_, bias_ = nn.dtypes.promote_dtype(h, w_h, bias, dtype=self.dtype)
      z = (jnp.dot(h_, w_h_) + bias_) + xw_t  # the cell's (h W_h + b) + x W_i
      i, f, g, o = jnp.split(z, 4, axis=-1)
      c = nn.sigmoid(f) * c + nn.sigmoid(i) * jnp.tanh(g)
      h = nn.sigmoid(o) * jnp.tanh(c)
      return (c, h), h

    zeros = jnp.zeros((b, self.features), self.param_dtype)  # the cell's carry_init
    _, hs = jax.lax.scan(step, (zeros, zeros), xw, unroll=self.unroll)
    hs = jnp.swapaxes(hs, 0, 1)
    if self.reverse:
      hs = nn.recurrent.flip_sequences(hs, seq_lengths, num_batch_dims=1, time_major=False)
    return hs


class HoistedBLSTM(nn.Module):
  """`[forward ; backward]` HoistedLSTMs: the function and parameter tree of
  `nn.Bidirectional(nn.RNN(OptimizedLSTMCell(units)), nn.RNN(OptimizedLSTMCell(units)))`
  (`forward_rnn/cell/...`, `backward_rnn/cell/...`)."""

  features: int
  dtype: Any = None
  unroll: int = 1

  @nn.compact
  def __call__(self, x: Array, seq_lengths: Array | None = None) -> Array:
    """x (B, T, F), seq_lengths (B,) or None -> (B, T, 2·features)."""
    fwd = HoistedLSTM(self.features, False, self.dtype, unroll=self.unroll, name="forward_rnn")
    bwd = HoistedLSTM(self.features, True, self.dtype, unroll=self.unroll, name="backward_rnn")
    return jnp.concatenate([fwd(x, seq_lengths), bwd(x, seq_lengths)], axis=-1)
