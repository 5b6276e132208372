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

import chex
import jax
import jax.numpy as jnp
import flax.linen as nn

from ssa_jax import speaker as speaker_lib
from ssa_jax.models.acrnn import ACRNN
from ssa_jax.models.attention import SelfAttention, SelfSpeakerAttention
from ssa_jax.models.crnn import check_inputs


class CosineClassifier(nn.Module):
  """z (B, E) -> cos(theta) (B, S) between l2-normalised z and the l2-normalised columns of the
  parameter `kernel` (E, S) (lecun normal; no bias)."""

  num_classes: int

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (z.shape[-1], self.num_classes))
    return speaker_lib.l2_normalize(z.astype(jnp.float32)) @ speaker_lib.l2_normalize(kernel, 0)


class SSACRNN(ACRNN):
  """Self Speaker Attentive CRNN. Attributes as ACRNN plus `num_speakers` (> 0), `ssa_mode` and
  the unseen-speaker options (module docstring; validated by `models.build_model`)."""

  num_speakers: int = 0
  ssa_mode: str = "full"  # full | self_only | speaker_only (SelfSpeakerAttention.mode)
  speaker_loss: str = "softmax"  # softmax | aam
  aam_margin: float = 0.2
  aam_scale: float = 30.0
  speaker_dropout: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None, train: bool = False,
               detach_speaker: bool = False):
    if self.num_speakers <= 0:
      raise ValueError(f"SSA-CRNN needs model.num_speakers > 0, got {self.num_speakers}")
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
    c_em, alpha_em, alpha_sp = SelfSpeakerAttention(self.ssa_mode, name="ssa")(
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
