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
from ssa_jax.models import layers
from ssa_jax.models.crnn import CRNN, check_inputs, compute_dtype

CLASSIFIER_BIAS = ("scaled", "unscaled", "none")


def _positive_number(value, what: str) -> float:
  try:
    number = float(value)
  except (TypeError, ValueError):
    number = float("nan")
  if not number > 0 or number == float("inf"):
    raise ValueError(f"{what} must be a positive number, 'auto' or 'learned' where allowed; "
                     f"got {value!r}")
  return number


def resolve_logit_scale(logit_scale: float | str, logit_scale_init: float | str,
                        num_classes: int, embed_dim: int) -> tuple[float | str, float]:
  """(the emotion head's temperature s: a positive float or "learned", its initial value).

  `logit_scale`: a positive number, "auto" (num_classes * embed_dim) or "learned" (a trained
  scalar initialised at `logit_scale_init`: a positive number or "auto").
  """
  auto = float(int(num_classes) * int(embed_dim))
  init = auto if logit_scale_init == "auto" else _positive_number(logit_scale_init,
                                                                   "model.logit_scale_init")
  if logit_scale == "learned":
    return "learned", init
  scale = auto if logit_scale == "auto" else _positive_number(logit_scale, "model.logit_scale")
  return scale, scale


def check_settings(m: "ACRNN") -> None:
  """The one check of the model settings (a one-line ValueError naming the config field)."""
  if m.classifier_bias not in CLASSIFIER_BIAS:
    raise ValueError(f"model.classifier_bias must be one of {CLASSIFIER_BIAS}, "
                     f"got {m.classifier_bias!r}")
  if not m.conv_features:
    raise ValueError("model.conv_features must name at least one conv layer")
  if len(m.kernel_size) != 2 or len(m.pool_size) != 2:
    raise ValueError(f"model.kernel_size and model.pool_size must be (time, freq) pairs, got "
                     f"{tuple(m.kernel_size)} and {tuple(m.pool_size)}")
  compute_dtype(m.dtype)
  layers.resolve_impl(m.conv_impl)
  if not isinstance(m.winograd_min_channels, int) or m.winograd_min_channels < 1:
    raise ValueError(f"model.winograd_min_channels must be an integer >= 1, got "
                     f"{m.winograd_min_channels!r}")
  layers.resolve_lstm_impl(m.lstm_impl)
  resolve_logit_scale(m.logit_scale, m.logit_scale_init, m.num_classes, m.embed_dim)


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


def branch(m: "ACRNN", name: str | None = None) -> CRNN:
  """The CRNN branch of model `m`'s settings: a submodule `name` inside a compact method, a
  top-level module outside one (applied to `variables["params"][name]`: `ssa_crnn.speaker_states`)."""
  return CRNN(m.conv_features, m.kernel_size, m.pool_size, m.dense_units, m.lstm_units,
              m.leaky_slope, m.bn_momentum, m.mask_padding, compute_dtype(m.dtype), m.conv_impl,
              lstm_impl=m.lstm_impl, winograd_min_channels=m.winograd_min_channels, name=name)


class ACRNN(nn.Module):
  """Attention-based CRNN for emotion. Attributes: `config.model`'s fields as they are (their
  meaning and defaults: ssa_jax/config.py; `models.build_model(config.model)` builds it), checked
  once when the module is made (`check_settings`)."""

  num_classes: int
  conv_features: Sequence[int]
  kernel_size: Sequence[int]
  pool_size: Sequence[int]
  dense_units: int
  lstm_units: int
  embed_dim: int
  leaky_slope: float
  bn_momentum: float
  mask_padding: bool
  dtype: str  # "float32" | "bfloat16" (`crnn.compute_dtype`)
  conv_impl: str
  lstm_impl: str
  winograd_min_channels: int
  logit_scale: float | str  # the softmax temperature s of the emotion head, "auto" or "learned"
  logit_scale_init: float | str  # initial s when logit_scale == "learned" (a number or "auto")
  classifier_bias: str  # scaled | unscaled | none (see the module docstring)

  def __post_init__(self):
    check_settings(self)
    super().__post_init__()

  @property
  def scale(self) -> tuple[float | str, float]:
    """(s: a positive number or "learned", its initial value), "auto" resolved."""
    return resolve_logit_scale(self.logit_scale, self.logit_scale_init, self.num_classes,
                               self.embed_dim)

  def crnn(self, name: str) -> CRNN:
    return branch(self, name)

  def emotion_head(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """z (B, E) -> (emotion logits (B, K), the temperature s ()). Call from a compact method."""
    zw, bias = Classifier(self.num_classes, self.classifier_bias != "none", name="classifier")(z)
    value, init = self.scale
    if value == "learned":
      log_s = self.param("log_logit_scale", nn.initializers.constant(math.log(init)), (),
                         jnp.float32)
      scale = jnp.exp(log_s)
    else:
      scale = jnp.float32(value)
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
