"""SSA-CRNN (seed §2.3, Figure 1): speaker branch C_sp and emotion branch C_em joined by the SSA.

  apply(variables, x (B, T, M, C), mask (B, T) bool, train=False) -> (logits (B, K), aux)
  aux: emotion_logits (B, K), z_em (B, E), mask (B, T'), speaker_logits (B, S), z_sp (B, E),
       alpha_sp_self (B, T') (the speaker branch's self attention), alpha_em (B, T'),
       alpha_sp (B, T') (the two halves of the joint SSA softmax), logit_scale ().
Both branches see the same input; the loss (in ssa_jax/train.py) is CE_em + w * CE_sp
(w = `train.speaker_loss_weight`, 1 in the paper).

Beyond the paper (docs/DESIGN.md "Beyond the paper: unseen speakers"; all off by default):
  speaker_loss="aam"   the speaker classifier is `CosineClassifier` (no bias): aux adds
                       speaker_cosine (B, S) = cos(theta) between L2-normalised z_sp and class
                       weights, and speaker_logits = aam_scale * speaker_cosine (no margin: the
                       train step adds it, `speaker.aam_logits`).
  speaker_dropout=p    train=True only: each example's speaker half of the SSA is dropped with
                       probability p (rng stream "dropout"); aux adds speaker_kept (B,) bool.
  detach_speaker=True  (a call argument, `train.speaker_stop_gradient`) the SSA reads
                       stop_gradient(h_sp): no gradient from the emotion side into C_sp.
"""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import flax.linen as nn

from ssa_jax import speaker as speaker_lib
from ssa_jax.models.acrnn import ACRNN
from ssa_jax.models.attention import SSA_MODES, SelfAttention, SelfSpeakerAttention
from ssa_jax.models.crnn import check_inputs


def check_speaker_options(m: "SSACRNN") -> None:
  """The unseen-speaker settings' check (a one-line ValueError naming the config field)."""
  if m.speaker_loss not in speaker_lib.SPEAKER_LOSSES:
    raise ValueError(f"model.speaker_loss must be one of {speaker_lib.SPEAKER_LOSSES}, "
                     f"got {m.speaker_loss!r}")
  if not 0.0 <= float(m.aam_margin) < math.pi / 2:
    raise ValueError(f"model.aam_margin must be in [0, pi/2) radians, got {m.aam_margin}")
  if not 0.0 < float(m.aam_scale) < float("inf"):
    raise ValueError(f"model.aam_scale must be a positive number, got {m.aam_scale}")
  if not 0.0 <= float(m.speaker_dropout) <= 1.0:
    raise ValueError(f"model.speaker_dropout must be a probability in [0, 1], "
                     f"got {m.speaker_dropout}")


class CosineClassifier(nn.Module):
  """z (B, E) -> cos(theta) (B, S) between l2-normalised z and the l2-normalised columns of the
  parameter `kernel` (E, S) (lecun normal; no bias)."""

  num_classes: int

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (z.shape[-1], self.num_classes))
    return speaker_lib.l2_normalize(z.astype(jnp.float32)) @ speaker_lib.l2_normalize(kernel, 0)


class SSACRNN(ACRNN):
  """Self Speaker Attentive CRNN. Attributes as ACRNN plus `num_speakers` (> 0), `ssa`
  (`model.ssa`: full | self_only | speaker_only, SelfSpeakerAttention's mode) and the
  unseen-speaker options `speaker_loss` (softmax | aam), `aam_margin` (radians, [0, pi/2)),
  `aam_scale` (> 0) and `speaker_dropout` (a probability) (the module docstring; meaning and
  defaults: ssa_jax/config.py), checked once when the module is made."""

  num_speakers: int
  ssa: str
  speaker_loss: str
  aam_margin: float
  aam_scale: float
  speaker_dropout: float

  def __post_init__(self):
    if int(self.num_speakers) <= 0:
      raise ValueError(f"model.name='ssa_crnn' needs model.num_speakers > 0 (the number of "
                       f"training speakers), got {self.num_speakers}")
    if self.ssa not in SSA_MODES:
      raise ValueError(f"model.ssa must be one of {SSA_MODES}, got {self.ssa!r}")
    check_speaker_options(self)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None, train: bool = False,
               detach_speaker: bool = False):
    mask = check_inputs(x, mask)
    act = lambda y: nn.leaky_relu(y, self.leaky_slope)

    h_sp, pmask = self.crnn("crnn_sp")(x, mask, train)
    c_sp, alpha_sp_self = SelfAttention(name="attention_sp")(h_sp, pmask)
    z_sp = act(nn.Dense(self.embed_dim, name="embed_sp")(c_sp))
    extra = {}
    if self.speaker_loss == "aam":
      cosine = CosineClassifier(self.num_speakers, name="speaker_classifier")(z_sp)
      speaker_logits = self.aam_scale * cosine
      chex.assert_shape(cosine, (x.shape[0], self.num_speakers))
      extra["speaker_cosine"] = cosine
    else:
      speaker_logits = nn.Dense(self.num_speakers, name="speaker_classifier")(z_sp)

    h_em, _ = self.crnn("crnn_em")(x, mask, train)
    keep = None
    if train and self.speaker_dropout > 0:
      keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - self.speaker_dropout,
                                  (x.shape[0],))
      extra["speaker_kept"] = keep
    h_sp_ssa = jax.lax.stop_gradient(h_sp) if detach_speaker else h_sp
    c_em, alpha_em, alpha_sp = SelfSpeakerAttention(self.ssa, name="ssa")(
        h_em, h_sp_ssa, pmask, keep)
    z_em = act(nn.Dense(self.embed_dim, name="embed")(c_em))
    logits, scale = self.emotion_head(z_em)
    b = x.shape[0]
    chex.assert_shape([logits, speaker_logits, z_em, z_sp, alpha_em, alpha_sp],
                      [(b, self.num_classes), (b, self.num_speakers), (b, self.embed_dim),
                       (b, self.embed_dim), pmask.shape, pmask.shape])
    aux = {"emotion_logits": logits, "z_em": z_em, "mask": pmask,
           "speaker_logits": speaker_logits, "z_sp": z_sp, "alpha_sp_self": alpha_sp_self,
           "alpha_em": alpha_em, "alpha_sp": alpha_sp, "logit_scale": scale, **extra}
    return logits, aux
