"""The Table 1 systems as flax.linen modules: ACRNN (one branch) and SSA-CRNN (two branches).

  model = build_model(config.model)
  variables = model.init(rng, x, mask)                      # {"params", "batch_stats"}
  logits, aux = model.apply(variables, x, mask, train=False)
  (logits, aux), updates = model.apply(variables, x, mask, train=True, mutable=["batch_stats"])

x (B, T, M, C) float32, mask (B, T) bool; aux keys in docs/ARCHITECTURE.md ("Model outputs").
The emotion classifier is the top-level Dense `classifier` (kernel (embed_dim, num_classes)).
"""

from __future__ import annotations

import math

import ml_collections

from ssa_jax import ops
from ssa_jax.speaker import SPEAKER_LOSSES

from ssa_jax.models.acrnn import ACRNN, CLASSIFIER_BIAS
from ssa_jax.models.attention import SSA_MODES, SelfAttention, SelfSpeakerAttention, masked_softmax
from ssa_jax.models.crnn import CRNN, compute_dtype, pool_mask
from ssa_jax.models.ssa_crnn import SSACRNN

__all__ = ["ACRNN", "CLASSIFIER_BIAS", "SSA_MODES", "SSACRNN", "CRNN", "SelfAttention", "SelfSpeakerAttention", "build_model",
           "masked_softmax", "pool_mask", "resolve_logit_scale", "speaker_options"]


def _positive_number(value, what: str) -> float:
  try:
    number = float(value)
  except (TypeError, ValueError):
    number = float("nan")
  if not number > 0 or number == float("inf"):
    raise ValueError(f"{what} must be a positive number, 'auto' or 'learned' where allowed; "
                     f"got {value!r}")
  return number


def resolve_logit_scale(model_cfg: ml_collections.ConfigDict) -> tuple[float | str, float]:
  """(`logit_scale` for the model: a positive float or "learned", its initial value).

  `model.logit_scale`: a positive number, "auto" (num_classes * embed_dim) or "learned" (a
  trained scalar initialised at `model.logit_scale_init`: a positive number or "auto").
  """
  auto = float(int(model_cfg.num_classes) * int(model_cfg.embed_dim))
  scale = model_cfg.get("logit_scale", 1.0)
  init = model_cfg.get("logit_scale_init", "auto")
  init = auto if init == "auto" else _positive_number(init, "model.logit_scale_init")
  if scale == "learned":
    return "learned", init
  scale = auto if scale == "auto" else _positive_number(scale, "model.logit_scale")
  return scale, scale


# --- Beyond the paper: unseen speakers (docs/DESIGN.md; config.py's block of the same name) ---
def speaker_options(model_cfg: ml_collections.ConfigDict) -> dict:
  """SSACRNN's unseen-speaker attributes from `model_cfg` (defaults where a field is absent, as in
  a config.json written before they existed): speaker_loss, aam_margin, aam_scale,
  speaker_dropout. A bad value, or a non-default one for a model without a speaker branch, is a
  one-line ValueError."""
  opts = {"speaker_loss": str(model_cfg.get("speaker_loss", "softmax")),
          "aam_margin": float(model_cfg.get("aam_margin", 0.2)),
          "aam_scale": float(model_cfg.get("aam_scale", 30.0)),
          "speaker_dropout": float(model_cfg.get("speaker_dropout", 0.0))}
  if opts["speaker_loss"] not in SPEAKER_LOSSES:
    raise ValueError(f"model.speaker_loss must be one of {SPEAKER_LOSSES}, "
                     f"got {opts['speaker_loss']!r}")
  if not 0.0 <= opts["aam_margin"] < math.pi / 2:
    raise ValueError(f"model.aam_margin must be in [0, pi/2) radians, got {opts['aam_margin']}")
  if not 0.0 < opts["aam_scale"] < float("inf"):
    raise ValueError(f"model.aam_scale must be a positive number, got {opts['aam_scale']}")
  if not 0.0 <= opts["speaker_dropout"] <= 1.0:
    raise ValueError(f"model.speaker_dropout must be a probability in [0, 1], "
                     f"got {opts['speaker_dropout']}")
  if model_cfg.name != "ssa_crnn" and (opts["speaker_loss"] != "softmax"
                                       or opts["speaker_dropout"] > 0):
    raise ValueError(f"model.speaker_loss / model.speaker_dropout need model.name='ssa_crnn' "
                     f"(a speaker branch), got model.name={model_cfg.name!r}")
  return opts
# --- end of the unseen-speaker block ---


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
      classifier_bias=str(model_cfg.get("classifier_bias", "scaled")),
  )
  kwargs["logit_scale"], kwargs["logit_scale_init"] = resolve_logit_scale(model_cfg)
  if kwargs["classifier_bias"] not in CLASSIFIER_BIAS:
    raise ValueError(f"model.classifier_bias must be one of {CLASSIFIER_BIAS}, "
                     f"got {kwargs['classifier_bias']!r}")
  if not kwargs["conv_features"]:
    raise ValueError("model.conv_features must name at least one conv layer")
  if len(kwargs["kernel_size"]) != 2 or len(kwargs["pool_size"]) != 2:
    raise ValueError(f"model.kernel_size and model.pool_size must be (time, freq) pairs, got "
                     f"{kwargs['kernel_size']} and {kwargs['pool_size']}")
  unseen = speaker_options(model_cfg)  # unseen-speaker options (validated for every model)
  if model_cfg.name == "acrnn":
    return ACRNN(**kwargs)
  if model_cfg.name == "ssa_crnn":
    if int(model_cfg.num_speakers) <= 0:
      raise ValueError(f"model.name='ssa_crnn' needs model.num_speakers > 0 (the number of "
                       f"training speakers), got {model_cfg.num_speakers}")
    ssa_mode = str(model_cfg.get("ssa", "full"))
    if ssa_mode not in SSA_MODES:
      raise ValueError(f"model.ssa must be one of {SSA_MODES}, got {ssa_mode!r}")
    return SSACRNN(num_speakers=int(model_cfg.num_speakers), ssa_mode=ssa_mode, **unseen,
                   **kwargs)
  raise ValueError(f"unknown model.name {model_cfg.name!r}; choose 'acrnn' or 'ssa_crnn'")
