"""The CRNN branch shared by ACRNN and SSA-CRNN (seed §2.2.1, docs/DESIGN.md §3).

  x (B, T, M, C) NHWC, mask (B, T) bool
    -> 6 x [conv k_t x k_f, SAME, leaky ReLU] with one max-pool after conv1
    -> reshape (B, T', F'·C_last) -> Dense (no bias) + BatchNorm + leaky ReLU per frame
    -> BLSTM (scan over time, per-example lengths)
    -> h (B, T', 2·lstm_units), pooled mask (B, T')

With `mask_padding`, activations are multiplied by the (pooled) frame mask after every conv
layer, the batch statistics of BatchNorm exclude padded frames, the BLSTM runs with sequence
lengths (the reverse direction starts at the last real frame) and `h` is zero on padded frames.
"""

from __future__ import annotations

from typing import Sequence

import chex
import jax
import jax.numpy as jnp
import flax.linen as nn

from ssa_jax.models import layers

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(name: str) -> jnp.dtype:
  """Maps `model.dtype` ("float32" | "bfloat16") to a jnp dtype."""
  if name not in _DTYPES:
    raise ValueError(f"model.dtype must be one of {sorted(_DTYPES)}, got {name!r}")
  return _DTYPES[name]


def pool_mask(mask: jax.Array, pool_t: int) -> jax.Array:
  """Pools a frame mask (B, T) like a VALID max-pool of window/stride `pool_t` over time.

  A pooled frame is real if any of its `pool_t` input frames is real (no real frame is dropped;
  with lengths that are multiples of `pool_t` no pooled frame mixes real and padded frames).
  Returns (B, T // pool_t) bool.
  """
  b, t = mask.shape
  tp = t // pool_t
  return mask[:, : tp * pool_t].reshape(b, tp, pool_t).any(axis=-1)


def check_inputs(x: jax.Array, mask: jax.Array | None) -> jax.Array:
  """Validates `x (B, T, M, C)` and `mask (B, T)`; returns the mask (all True if None)."""
  if x.ndim != 4:
    raise ValueError(f"model input must be (batch, frames, mels, channels), got shape {x.shape}")
  if mask is None:
    return jnp.ones(x.shape[:2], bool)
  if mask.shape != x.shape[:2]:
    raise ValueError(f"mask must have shape (batch, frames) = {x.shape[:2]}, got {mask.shape}")
  return mask.astype(bool)


def make_blstm(units: int, dtype: jnp.dtype = jnp.float32, name: str | None = None,
               impl: str = "flax") -> nn.Module:
  """A BLSTM: two `nn.RNN` scans of `OptimizedLSTMCell(units)`; the backward one runs on each
  sequence reversed within its length (`seq_lengths`) and its outputs are put back in order.

  `blstm(y (B, T, F), seq_lengths=(B,) or None) -> (B, T, 2·units)` ([forward ; backward]).
  Parameters: `forward_rnn/cell` and `backward_rnn/cell`, each with input kernels `ii, if, ig, io`
  (F, units) and recurrent kernels `hi, hf, hg, ho` (units, units) carrying the gate biases.
  `impl="hoisted"`: `layers.HoistedBLSTM`, the same function and parameters with the input
  projection out of the time loop.
  """
  if layers.resolve_lstm_impl(impl) == "hoisted":
    return layers.HoistedBLSTM(units, dtype=dtype, name=name)
  cell = lambda: nn.OptimizedLSTMCell(units, dtype=dtype, parent=None)
  return nn.Bidirectional(nn.RNN(cell(), parent=None), nn.RNN(cell(), parent=None), name=name)


class CRNN(nn.Module):
  """Convolutional recurrent feature extractor (one branch of Figure 1).

  Attributes:
    conv_features: filters of the conv layers (paper: 128, 256 x 5).
    kernel_size: (time, freq) kernel of every conv layer.
    pool_size: (time, freq) VALID max-pool after conv1.
    dense_units: per-frame dense layer size before the BLSTM.
    lstm_units: BLSTM cells per direction.
    leaky_slope: negative slope of the leaky ReLUs.
    bn_momentum: BatchNorm running-average momentum (flax convention: weight of the old value).
    mask_padding: mask padded frames (see module docstring).
    dtype: compute dtype of convs, dense and LSTM (parameters stay float32).
    conv_impl: "auto" | "xla" | "winograd", the convolution's implementation (`layers.Conv`;
      "auto": "winograd" on CPU, "xla" elsewhere).
    winograd_min_channels: under "winograd", the layers with at least this many input channels
      run Winograd (the others XLA's convolution).
    lstm_impl: "auto" | "flax" | "hoisted", the BLSTM's implementation (`make_blstm`).
  """

  conv_features: Sequence[int]
  kernel_size: Sequence[int]
  pool_size: Sequence[int]
  dense_units: int
  lstm_units: int
  leaky_slope: float
  # Defaults only for building the branch alone (tests/test_parity_torch.py); the models pass
  # config.model's values (ssa_jax/config.py declares them).
  bn_momentum: float = 0.99
  mask_padding: bool = True
  dtype: jnp.dtype = jnp.float32
  conv_impl: str = "auto"
  lstm_impl: str = "auto"
  winograd_min_channels: int = layers.WINOGRAD_MIN_CHANNELS

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array, train: bool = False):
    """x (B, T, M, C), mask (B, T) bool -> (h (B, T', 2·lstm_units) float32, mask (B, T'))."""
    b, t, m, _ = x.shape
    pt, pf = self.pool_size
    chex.assert_shape(mask, (b, t))
    act = lambda y: nn.leaky_relu(y, self.leaky_slope)
    frame_mask = mask[:, :, None, None].astype(self.dtype)
    y = x.astype(self.dtype)
    if self.mask_padding:
      y = y * frame_mask
    for i, feats in enumerate(self.conv_features):
      y = layers.Conv(feats, tuple(self.kernel_size), dtype=self.dtype, impl=self.conv_impl,
                   winograd_min_channels=self.winograd_min_channels, name=f"conv{i + 1}")(y)
      y = act(y)
      if i == 0:
        y = nn.max_pool(y, (pt, pf), strides=(pt, pf), padding="VALID")
        mask = pool_mask(mask, pt)
        frame_mask = mask[:, :, None, None].astype(self.dtype)
      if self.mask_padding:
        y = y * frame_mask
    tp, fp = t // pt, m // pf
    chex.assert_shape(y, (b, tp, fp, self.conv_features[-1]))
    y = y.reshape(b, tp, fp * self.conv_features[-1])

    # No bias: the BatchNorm right after subtracts the batch mean, so a bias here would get an
    # exactly-zero gradient (BN's own `bias` is the shift).
    y = nn.Dense(self.dense_units, use_bias=False, dtype=self.dtype, name="dense")(y)
    bn_mask = mask[:, :, None] if self.mask_padding else None
    y = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, epsilon=1e-5,
                     dtype=self.dtype, name="bn")(y, mask=bn_mask)
    y = act(y)
    lengths = None
    if self.mask_padding:
      y = y * mask[:, :, None].astype(self.dtype)
      lengths = mask.sum(axis=1).astype(jnp.int32)
    blstm = make_blstm(self.lstm_units, self.dtype, name="blstm", impl=self.lstm_impl)
    h = blstm(y, seq_lengths=lengths).astype(jnp.float32)
    if self.mask_padding:
      h = h * mask[:, :, None]
    chex.assert_shape(h, (b, tp, 2 * self.lstm_units))
    return h, mask
