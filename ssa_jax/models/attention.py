"""Self attention (seed Eq. 1-2) and Self Speaker Attention (seed Eq. 3-7, docs/DESIGN.md §3 reading).

Both run in float32 whatever the model's compute dtype, and give padded frames exactly zero
weight (`mask (B, T')` False). A fully padded example gets all-zero weights and a zero context.
"""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import flax.linen as nn


SSA_MODES = ("full", "self_only", "speaker_only")
SSA_SOFTMAX = ("joint", "per_half")


def masked_softmax(scores: jax.Array, mask: jax.Array) -> jax.Array:
  """Softmax over the last axis with masked entries exactly 0 (all-masked rows: all 0)."""
  scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
  return jnp.where(mask, jax.nn.softmax(scores, axis=-1), 0.0)


def ssa_weights(scores: jax.Array, mask: jax.Array, t: int, softmax: str = "joint") -> jax.Array:
  """The SSA's attention weights: scores, mask (B, N) (the self half's T' entries first, then
  the speaker half's N - T': frames and enrollment entries) -> alpha (B, N), masked entries 0.

  "joint" (the paper's Eq. 6): one softmax over all N entries, so the halves compete for one
  unit of mass. "per_half" (beyond the paper, `model.ssa_softmax`): a softmax within each half,
  each half then weighted 1/n, n the number of halves with an allowed entry (2; 1 when one half
  is masked out, as in self_only or a dropped speaker half). The mass on each half is then fixed
  (1/2), not learnt, and neither half can starve the other of gradient.
  """
  if softmax not in SSA_SOFTMAX:
    raise ValueError(f"model.ssa_softmax must be one of {SSA_SOFTMAX}, got {softmax!r}")
  if softmax == "joint":
    return masked_softmax(scores, mask)
  halves = [(scores[:, :t], mask[:, :t]), (scores[:, t:], mask[:, t:])]
  alphas = [masked_softmax(s, m) for s, m in halves]
  present = sum(m.any(axis=1).astype(scores.dtype) for _, m in halves)  # (B,)
  return jnp.concatenate(alphas, axis=1) / jnp.maximum(present, 1.0)[:, None]


class SelfAttention(nn.Module):
  """Eq. 1-2: alpha = softmax_t(h W_att), c = sum_t alpha_t h_t.

  Inputs h (B, T', d), mask (B, T') bool. Returns (c (B, d), alpha (B, T')).
  """

  @nn.compact
  def __call__(self, h: jax.Array, mask: jax.Array):
    b, t, d = h.shape
    chex.assert_shape(mask, (b, t))
    h = h.astype(jnp.float32)
    w_att = self.param("w_att", nn.initializers.normal(1.0 / math.sqrt(d)), (d,))
    alpha = masked_softmax(h @ w_att, mask)
    c = jnp.einsum("bt,btd->bd", alpha, h)
    return c, alpha


class SelfSpeakerAttention(nn.Module):
  """Eq. 3-7 (docs/DESIGN.md §3): attention of the emotion branch over itself and the speaker branch.

    q      = sum_t mask_t W^q_t h_em,t            W^q in R^{T'}      -> (B, d)
    a_em   = h_em W^k_em                          W^k_em in R^d      -> (B, T')
    a_sp   = (h_sp W^k_sp) q / sqrt(T')           W^k_sp in R^{dxd}  -> (B, T')
    alpha  = softmax([a_em, a_sp]) jointly over the 2T' entries, padded frames masked in both
             (`softmax`="per_half", beyond the paper: a softmax within each half, each half
             weighted 1/2; `ssa_weights`)
    c      = [sum_t alpha_t h_em,t W^v_em ; sum_t alpha_{T'+t} h_sp,t W^v_sp]  -> (B, 2d)

  Inputs h_em, h_sp (B, T', d), mask (B, T') bool. Returns (c (B, 2d), alpha_em (B, T'),
  alpha_sp (B, T')); alpha_em and alpha_sp together sum to 1. `W^q` ties the module to T'.

  `mode` (ablations, `model.ssa`): "full" (the paper), "self_only" (the speaker half masked out:
  alpha_sp = 0 and the second half of c is 0) or "speaker_only" (the self half masked out).
  The parameters are the same in every mode.

  Enrollment (beyond the paper, `model.enroll_k`; docs/DESIGN.md "Beyond the paper"): with
  `enroll (B, J, d)` (pooled speaker-branch states of other utterances of the speaker, in the
  space of h_sp) and `enroll_valid (B, J)`, the speaker half gets J more keys and values from the
  same matrices, a_en = (enroll W^k_sp) q / sqrt(T'), the softmax runs over the 2T' + J entries
  jointly and the speaker half of c adds sum_j alpha_{2T'+j} enroll_j W^v_sp; the returned
  alpha_sp is then (B, T' + J) (the frames, then the enrollment entries). Without `enroll` the
  computation is exactly the paper's (the same operations).
  """

  mode: str = "full"
  softmax: str = "joint"  # `model.ssa_softmax`: joint (the paper) | per_half (`ssa_weights`)

  @nn.compact
  def __call__(self, h_em: jax.Array, h_sp: jax.Array, mask: jax.Array,
               speaker_keep: jax.Array | None = None, enroll: jax.Array | None = None,
               enroll_valid: jax.Array | None = None):
    """`speaker_keep (B,) bool` (optional; `model.speaker_dropout`): False masks out the speaker
    half of that example, as mode "self_only" does for every example (its enrollment entries
    too). `enroll (B, J, d)`, `enroll_valid (B, J) bool` (optional, together): enrollment keys
    and values of the speaker half (the class docstring)."""
    b, t, d = h_em.shape
    chex.assert_shape([h_sp, mask], [(b, t, d), (b, t)])
    h_em = h_em.astype(jnp.float32)
    h_sp = h_sp.astype(jnp.float32)
    if self.has_variable("params", "w_q"):
      built_for = self.get_variable("params", "w_q").shape[0]
      if built_for != t:
        raise ValueError(f"SSA-CRNN's W^q was built for {built_for} pooled frames per segment "
                         f"but got {t}: feed segments of the length it was trained on")
    vec_init = nn.initializers.normal(1.0 / math.sqrt(d))
    w_q = self.param("w_q", nn.initializers.normal(1.0 / math.sqrt(t)), (t,))
    w_k_em = self.param("w_k_em", vec_init, (d,))
    mat_init = nn.initializers.lecun_normal()
    w_k_sp = self.param("w_k_sp", mat_init, (d, d))
    w_v_em = self.param("w_v_em", mat_init, (d, d))
    w_v_sp = self.param("w_v_sp", mat_init, (d, d))

    q = jnp.einsum("t,btd->bd", w_q, h_em * mask[:, :, None])
    a_em = h_em @ w_k_em
    keys = h_sp @ w_k_sp
    a_sp = jnp.einsum("btd,bd->bt", keys, q) / math.sqrt(t)
    if self.mode not in SSA_MODES:
      raise ValueError(f"model.ssa must be one of {SSA_MODES}, got {self.mode!r}")
    off = jnp.zeros_like(mask)
    halves = {"full": (mask, mask), "self_only": (mask, off), "speaker_only": (off, mask)}
    self_half, speaker_half = halves[self.mode]
    if speaker_keep is not None:
      chex.assert_shape(speaker_keep, (b,))
      speaker_half = speaker_half & speaker_keep[:, None]
    if enroll is not None:  # beyond the paper: enrollment entries appended to the speaker half
      return self._with_enrollment(h_em, h_sp, q, a_em, a_sp, self_half, speaker_half,
                                   speaker_keep, enroll, enroll_valid, w_k_sp, w_v_em, w_v_sp)
    alpha = ssa_weights(jnp.concatenate([a_em, a_sp], axis=1),
                        jnp.concatenate([self_half, speaker_half], axis=1), t, self.softmax)
    alpha_em, alpha_sp = alpha[:, :t], alpha[:, t:]
    c = jnp.concatenate([jnp.einsum("bt,btd->bd", alpha_em, h_em @ w_v_em),
                         jnp.einsum("bt,btd->bd", alpha_sp, h_sp @ w_v_sp)], axis=1)
    return c, alpha_em, alpha_sp

  def _with_enrollment(self, h_em, h_sp, q, a_em, a_sp, self_half, speaker_half, speaker_keep,
                       enroll, enroll_valid, w_k_sp, w_v_em, w_v_sp):
    """The SSA with J enrollment keys/values in the speaker half (class docstring); returns
    (c (B, 2d), alpha_em (B, T'), alpha_sp (B, T' + J))."""
    b, t, d = h_em.shape
    j = enroll.shape[1]
    chex.assert_shape([enroll, enroll_valid], [(b, j, d), (b, j)])
    enroll = enroll.astype(jnp.float32)
    a_en = jnp.einsum("bjd,bd->bj", enroll @ w_k_sp, q) / math.sqrt(t)
    enroll_half = enroll_valid.astype(bool) & (self.mode != "self_only")
    if speaker_keep is not None:
      enroll_half = enroll_half & speaker_keep[:, None]
    alpha = ssa_weights(jnp.concatenate([a_em, a_sp, a_en], axis=1),
                        jnp.concatenate([self_half, speaker_half, enroll_half], axis=1), t,
                        self.softmax)
    alpha_em, alpha_sp = alpha[:, :t], alpha[:, t:]
    values_sp = jnp.concatenate([h_sp, enroll], axis=1) @ w_v_sp  # (B, T' + J, d)
    c = jnp.concatenate([jnp.einsum("bt,btd->bd", alpha_em, h_em @ w_v_em),
                         jnp.einsum("bt,btd->bd", alpha_sp, values_sp)], axis=1)
    return c, alpha_em, alpha_sp
