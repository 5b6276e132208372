"""ACRNN (Chen et al. 2018; seed §2.2): one CRNN branch + self attention + embedding + classifier.

  apply(variables, x (B, T, M, C), mask (B, T) bool, train=False) -> (logits (B, K), aux)
  aux: emotion_logits (B, K), z_em (B, E), mask (B, T'), alpha (B, T'), logit_scale ()

The emotion head (docs/DESIGN.md, "Eq. 8 head") is shared with SSA-CRNN:

  logits = s * (z W) + b        classifier_bias="unscaled"
  logits = s * (z W + b)        classifier_bias="scaled"
  logits = s * (z W)            classifier_bias="none"

W (E, K) is `params["classifier"]["kernel"]` (the matrix Eq. 8 constrains, projected in the train
step), b (K,) `params["classifier"]["bias"]` (absent with "none"). The temperature s is the fixed
`logit_scale` (a number), or, with `logit_scale="learned"`, exp of the scalar parameter
`params["log_logit_scale"]`, initialised at log(`logit_scale_init`).
"""

from __future__ import annotations

import math
from typing import Sequence

import chex
import jax
import jax.numpy as jnp
import flax.linen as nn

from ssa_jax.models.attention import SelfAttention
from ssa_jax.models.crnn import CRNN, check_inputs

CLASSIFIER_BIAS = ("scaled", "unscaled", "none")


class Classifier(nn.Module):
  """FC^c without its bias applied: z (B, E) -> (z W (B, K), b (K,) or None).

  Parameters `kernel` (E, K) (lecun normal) and `bias` (K,) (zeros), named as `nn.Dense`'s.
  """

  num_classes: int
  use_bias: bool = True

  @nn.compact
  def __call__(self, z: jax.Array):
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (z.shape[-1], self.num_classes))
    bias = self.param("bias", nn.initializers.zeros, (self.num_classes,)) if self.use_bias else None
    return z @ kernel, bias


class ACRNN(nn.Module):
  """Attention-based CRNN for emotion. Attributes as `config.model` (see ssa_jax/config.py);
  `logit_scale` is a positive number or "learned" (resolved by `models.build_model`)."""

  num_classes: int = 4
  conv_features: Sequence[int] = (128, 256, 256, 256, 256, 256)
  kernel_size: Sequence[int] = (5, 3)
  pool_size: Sequence[int] = (2, 2)
  dense_units: int = 768
  lstm_units: int = 128
  embed_dim: int = 128
  leaky_slope: float = 0.01
  bn_momentum: float = 0.99
  mask_padding: bool = True
  dtype: jnp.dtype = jnp.float32
  conv_impl: str = "auto"
  lstm_impl: str = "auto"
  logit_scale: float | str = 1.0  # the softmax temperature s of the emotion head, or "learned"
  logit_scale_init: float = 1.0  # initial s when logit_scale == "learned"
  classifier_bias: str = "scaled"  # scaled | unscaled | none (see the module docstring)

  def crnn(self, name: str) -> CRNN:
    return CRNN(self.conv_features, self.kernel_size, self.pool_size, self.dense_units,
                self.lstm_units, self.leaky_slope, self.bn_momentum, self.mask_padding,
                self.dtype, self.conv_impl, lstm_impl=self.lstm_impl, name=name)

  def emotion_head(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """z (B, E) -> (emotion logits (B, K), the temperature s ()). Call from a compact method."""
    if self.classifier_bias not in CLASSIFIER_BIAS:
      raise ValueError(f"model.classifier_bias must be one of {CLASSIFIER_BIAS}, "
                       f"got {self.classifier_bias!r}")
    zw, bias = Classifier(self.num_classes, self.classifier_bias != "none", name="classifier")(z)
    if self.logit_scale == "learned":
      log_s = self.param("log_logit_scale", nn.initializers.constant(
          math.log(self.logit_scale_init)), (), jnp.float32)
      scale = jnp.exp(log_s)
    else:
      scale = jnp.float32(self.logit_scale)
    if self.classifier_bias == "scaled":
      logits = scale * (zw + bias)
    elif self.classifier_bias == "unscaled":
      logits = scale * zw + bias
    else:
      logits = scale * zw
    return logits, scale

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None, train: bool = False):
    mask = check_inputs(x, mask)
    h, pmask = self.crnn("crnn")(x, mask, train)
    c, alpha = SelfAttention(name="attention")(h, pmask)
    z = nn.leaky_relu(nn.Dense(self.embed_dim, name="embed")(c), self.leaky_slope)
    logits, scale = self.emotion_head(z)
    chex.assert_shape([logits, z, alpha], [(x.shape[0], self.num_classes),
                                           (x.shape[0], self.embed_dim), pmask.shape])
    aux = {"emotion_logits": logits, "z_em": z, "mask": pmask, "alpha": alpha,
           "logit_scale": scale}
    return logits, aux
