"""SSA-CRNN (seed §2.3, Figure 1): speaker branch C_sp and emotion branch C_em joined by the SSA.

  apply(variables, x (B, T, M, C), mask (B, T) bool, train=False) -> (logits (B, K), aux)
  aux: emotion_logits (B, K), z_em (B, E), mask (B, T'), speaker_logits (B, S), z_sp (B, E),
       alpha_sp_self (B, T') (the speaker branch's self attention), alpha_em (B, T'),
       alpha_sp (B, T') (the two halves of the joint SSA softmax), logit_scale ().
Both branches see the same input; the loss (in ssa_jax/train.py) is CE_em + w * CE_sp
(w = `train.speaker_loss_weight`, 1 in the paper).
"""

from __future__ import annotations

import chex
import jax
import flax.linen as nn

from ssa_jax.models.acrnn import ACRNN
from ssa_jax.models.attention import SSA_MODES, SelfAttention, SelfSpeakerAttention
from ssa_jax.models.crnn import check_inputs


class SSACRNN(ACRNN):
  """Self Speaker Attentive CRNN. Attributes as ACRNN plus `num_speakers` (> 0) and `ssa`
  (`model.ssa`: full | self_only | speaker_only, SelfSpeakerAttention's mode)."""

  num_speakers: int
  ssa: str

  def __post_init__(self):
    if int(self.num_speakers) <= 0:
      raise ValueError(f"model.name='ssa_crnn' needs model.num_speakers > 0 (the number of "
                       f"training speakers), got {self.num_speakers}")
    if self.ssa not in SSA_MODES:
      raise ValueError(f"model.ssa must be one of {SSA_MODES}, got {self.ssa!r}")
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None, train: bool = False):
    mask = check_inputs(x, mask)
    act = lambda y: nn.leaky_relu(y, self.leaky_slope)

    h_sp, pmask = self.crnn("crnn_sp")(x, mask, train)
    c_sp, alpha_sp_self = SelfAttention(name="attention_sp")(h_sp, pmask)
    z_sp = act(nn.Dense(self.embed_dim, name="embed_sp")(c_sp))
    speaker_logits = nn.Dense(self.num_speakers, name="speaker_classifier")(z_sp)

    h_em, _ = self.crnn("crnn_em")(x, mask, train)
    c_em, alpha_em, alpha_sp = SelfSpeakerAttention(self.ssa, name="ssa")(h_em, h_sp, pmask)
    z_em = act(nn.Dense(self.embed_dim, name="embed")(c_em))
    logits, scale = self.emotion_head(z_em)
    b = x.shape[0]
    chex.assert_shape([logits, speaker_logits, z_em, z_sp, alpha_em, alpha_sp],
                      [(b, self.num_classes), (b, self.num_speakers), (b, self.embed_dim),
                       (b, self.embed_dim), pmask.shape, pmask.shape])
    aux = {"emotion_logits": logits, "z_em": z_em, "mask": pmask,
           "speaker_logits": speaker_logits, "z_sp": z_sp, "alpha_sp_self": alpha_sp_self,
           "alpha_em": alpha_em, "alpha_sp": alpha_sp, "logit_scale": scale}
    return logits, aux
