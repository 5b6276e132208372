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

from ssa_jax.models import acrnn as _acrnn
from ssa_jax.models.acrnn import ACRNN, CLASSIFIER_BIAS
from ssa_jax.models.attention import (SSA_MODES, SSA_SOFTMAX, SelfAttention, SelfSpeakerAttention,
                                      masked_softmax, ssa_weights)
from ssa_jax.models.crnn import CRNN, compute_dtype, pool_mask
from ssa_jax.models.ssa_crnn import SSACRNN, speaker_states

__all__ = ["ACRNN", "CLASSIFIER_BIAS", "MODELS", "SSA_MODES", "SSA_SOFTMAX", "SSACRNN", "CRNN",
           "SelfAttention", "SelfSpeakerAttention", "build_model", "compute_dtype", "masked_softmax",
           "pool_mask", "resolve_logit_scale", "speaker_states", "ssa_weights"]

MODELS = {"acrnn": ACRNN, "ssa_crnn": SSACRNN}  # model.name -> module
# config.model fields only SSA-CRNN takes (the speaker branch; the last six: unseen speakers)
SSA_ONLY = ("num_speakers", "ssa", "speaker_loss", "aam_margin", "aam_scale", "speaker_dropout",
            "enroll_k", "ssa_softmax")


def resolve_logit_scale(model_cfg: ml_collections.ConfigDict) -> tuple[float | str, float]:
  """(`model.logit_scale` resolved: a positive float or "learned", its initial value);
  `acrnn.resolve_logit_scale` on the config's fields (the optimizer's "relative" head step)."""
  return _acrnn.resolve_logit_scale(model_cfg.logit_scale, model_cfg.logit_scale_init,
                                    model_cfg.num_classes, model_cfg.embed_dim)


# --- Beyond the paper: unseen speakers (docs/DESIGN.md; config.py's block of the same name) ---
# The speaker-branch options' "off" values (the paper's model): a model without a speaker branch
# must leave them there. aam_margin / aam_scale only act with speaker_loss="aam".
SPEAKER_OPTIONS_OFF = {"speaker_loss": "softmax", "speaker_dropout": 0, "enroll_k": 0,
                       "ssa_softmax": "joint"}


def _check_no_speaker_options(name: str, fields: dict) -> None:
  """A model without a speaker branch ignores the SSA-only fields, but any of
  `SPEAKER_OPTIONS_OFF` set away from its off value is a one-line ValueError. (SSACRNN checks
  their values when it is made.)"""
  if any(fields.get(k, off) != off for k, off in SPEAKER_OPTIONS_OFF.items()):
    raise ValueError(f"{' / '.join('model.' + k for k in SPEAKER_OPTIONS_OFF)} need "
                     f"model.name='ssa_crnn' (a speaker branch), got model.name={name!r}")
# --- end of the unseen-speaker block ---


def build_model(model_cfg: ml_collections.ConfigDict) -> ACRNN:
  """`MODELS[model_cfg.name](**the other fields of model_cfg)`: the module takes the config's
  model section as it is (JSON lists as tuples; ACRNN leaves out the SSA-only fields). Defaults
  live in ssa_jax/config.py only; the module checks its settings once, when it is made.

  Raises:
    ValueError: an unknown model.name or a bad setting (the message names the field).
  """
  fields = {k: tuple(v) if isinstance(v, list) else v for k, v in model_cfg.items()}
  name = fields.pop("name")
  if name not in MODELS:
    raise ValueError(f"unknown model.name {name!r}; choose one of {', '.join(MODELS)}")
  if name == "acrnn":
    _check_no_speaker_options(name, fields)
    fields = {k: v for k, v in fields.items() if k not in SSA_ONLY}
  return MODELS[name](**fields)
