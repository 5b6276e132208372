"""The Table 1 systems as flax.linen modules: ACRNN (one branch) and SSA-CRNN (two branches).

  model = build_model(config.model)
  variables = model.init(rng, x, mask)                      # {"params", "batch_stats"}
  logits, aux = model.apply(variables, x, mask, train=False)
  (logits, aux), updates = model.apply(variables, x, mask, train=True, mutable=["batch_stats"])

x (B, T, M, C) float32, mask (B, T) bool; aux keys in docs/ARCHITECTURE.md ("Model outputs").
The emotion classifier is the top-level Dense `classifier` (kernel (embed_dim, num_classes)).
"""

from __future__ import annotations

import ml_collections

from ssa_jax import ops

from ssa_jax.models.acrnn import ACRNN
from ssa_jax.models.attention import SelfAttention, SelfSpeakerAttention, masked_softmax
from ssa_jax.models.crnn import CRNN, compute_dtype, pool_mask
from ssa_jax.models.ssa_crnn import SSACRNN

__all__ = ["ACRNN", "SSACRNN", "CRNN", "SelfAttention", "SelfSpeakerAttention", "build_model",
           "masked_softmax", "pool_mask", "resolve_logit_scale"]


def resolve_logit_scale(model_cfg: ml_collections.ConfigDict) -> float:
  """`model.logit_scale`, with 0 meaning num_classes * embed_dim (see ssa_jax/config.py)."""
  scale = float(model_cfg.get("logit_scale", 1.0))
  if scale < 0:
    raise ValueError(f"model.logit_scale must be >= 0 (0: num_classes * embed_dim), got {scale}")
  return scale or float(int(model_cfg.num_classes) * int(model_cfg.embed_dim))


def build_model(model_cfg: ml_collections.ConfigDict) -> ACRNN:
  """Returns the module named by `model_cfg.name` ("acrnn" | "ssa_crnn") with its sizes."""
  kwargs = dict(
      num_classes=int(model_cfg.num_classes),
      conv_features=tuple(int(f) for f in model_cfg.conv_features),
      kernel_size=tuple(int(k) for k in model_cfg.kernel_size),
      pool_size=tuple(int(p) for p in model_cfg.pool_size),
      dense_units=int(model_cfg.dense_units),
      lstm_units=int(model_cfg.lstm_units),
      embed_dim=int(model_cfg.embed_dim),
      leaky_slope=float(model_cfg.leaky_slope),
      bn_momentum=float(model_cfg.bn_momentum),
      mask_padding=bool(model_cfg.mask_padding),
      dtype=compute_dtype(model_cfg.dtype),
      conv_impl=ops.resolve_impl(str(model_cfg.get("conv_impl", "auto"))),
      lstm_impl=ops.resolve_lstm_impl(str(model_cfg.get("lstm_impl", "auto"))),
      logit_scale=resolve_logit_scale(model_cfg),
  )
  if not kwargs["conv_features"]:
    raise ValueError("model.conv_features must name at least one conv layer")
  if len(kwargs["kernel_size"]) != 2 or len(kwargs["pool_size"]) != 2:
    raise ValueError(f"model.kernel_size and model.pool_size must be (time, freq) pairs, got "
                     f"{kwargs['kernel_size']} and {kwargs['pool_size']}")
  if model_cfg.name == "acrnn":
    return ACRNN(**kwargs)
  if model_cfg.name == "ssa_crnn":
    if int(model_cfg.num_speakers) <= 0:
      raise ValueError(f"model.name='ssa_crnn' needs model.num_speakers > 0 (the number of "
                       f"training speakers), got {model_cfg.num_speakers}")
    return SSACRNN(num_speakers=int(model_cfg.num_speakers), **kwargs)
  raise ValueError(f"unknown model.name {model_cfg.name!r}; choose 'acrnn' or 'ssa_crnn'")
