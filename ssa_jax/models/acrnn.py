"""ACRNN (Chen et al. 2018; seed §2.2): one CRNN branch + self attention + embedding + classifier.

  apply(variables, x (B, T, M, C), mask (B, T) bool, train=False) -> (logits (B, K), aux)
  aux: emotion_logits (B, K), z_em (B, E), mask (B, T'), alpha (B, T')
"""

from __future__ import annotations

from typing import Sequence

import chex
import jax
import jax.numpy as jnp
import flax.linen as nn

from ssa_jax.models.attention import SelfAttention
from ssa_jax.models.crnn import CRNN, check_inputs


class ACRNN(nn.Module):
  """Attention-based CRNN for emotion. Attributes as `config.model` (see ssa_jax/config.py)."""

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
  logit_scale: float = 1.0  # emotion logits = logit_scale * classifier(z) (softmax temperature)

  def crnn(self, name: str) -> CRNN:
    return CRNN(self.conv_features, self.kernel_size, self.pool_size, self.dense_units,
                self.lstm_units, self.leaky_slope, self.bn_momentum, self.mask_padding,
                self.dtype, self.conv_impl, lstm_impl=self.lstm_impl, name=name)

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None, train: bool = False):
    mask = check_inputs(x, mask)
    h, pmask = self.crnn("crnn")(x, mask, train)
    c, alpha = SelfAttention(name="attention")(h, pmask)
    z = nn.leaky_relu(nn.Dense(self.embed_dim, name="embed")(c), self.leaky_slope)
    logits = self.logit_scale * nn.Dense(self.num_classes, name="classifier")(z)
    chex.assert_shape([logits, z, alpha], [(x.shape[0], self.num_classes),
                                           (x.shape[0], self.embed_dim), pmask.shape])
    aux = {"emotion_logits": logits, "z_em": z, "mask": pmask, "alpha": alpha}
    return logits, aux
