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
  ssa_softmax="per_half"  a softmax within each half of the SSA, each half weighted 1/2
                       (`attention.ssa_weights`): the halves no longer compete for the mass.
  speaker_dropout=p    train=True only: each example's speaker half of the SSA is dropped with
                       probability p (rng stream "dropout"); aux adds speaker_kept (B,) bool.
  detach_speaker=True  (a call argument, `train.speaker_stop_gradient`) the SSA reads
                       stop_gradient(h_sp): no gradient from the emotion side into C_sp.
  enroll               (a call argument; `model.enroll_k` > 0 trains with it) enrollment: the
                       SSA's speaker half also attends to the pooled speaker-branch states of
                       other utterances of the speaker (`SelfSpeakerAttention`), given either as
                         {"x" (B, k, T, M, C), "mask" (B, k, T), "valid" (B, k)}: one segment of
                           each of k other utterances, run through C_sp with the batch (in
                           training mode its batch statistics include them) and pooled by
                           C_sp's own self attention (Eq. 1-2) into c_sp,j (B, k, d); or
                         {"context" (B, J, d), "valid" (B, J)}: those pooled states computed
                           beforehand (`speaker_states`; evaluation and prediction).
                       Entries with valid False are masked out. aux adds alpha_enroll (B, J)
                       (alpha_sp stays the frames' (B, T')); with detach_speaker the states are
                       stop-gradiented too. No parameter is added: enroll=None is the paper's
                       model, the same operations.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import chex
import jax
import jax.numpy as jnp
import flax.linen as nn

from ssa_jax import speaker as speaker_lib
from ssa_jax.models.acrnn import ACRNN, branch
from ssa_jax.models.attention import SSA_MODES, SSA_SOFTMAX, SelfAttention, SelfSpeakerAttention
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
  if m.ssa_softmax not in SSA_SOFTMAX:
    raise ValueError(f"model.ssa_softmax must be one of {SSA_SOFTMAX}, got {m.ssa_softmax!r}")
  if isinstance(m.enroll_k, bool) or not isinstance(m.enroll_k, int) or m.enroll_k < 0:
    raise ValueError(f"model.enroll_k must be an integer >= 0 (0: no enrollment), "
                     f"got {m.enroll_k!r}")


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
  `aam_scale` (> 0), `speaker_dropout` (a probability), `enroll_k` (>= 0; the number of
  enrollment utterances training supplies, the module docstring's `enroll`) and `ssa_softmax`
  (joint | per_half: how the SSA's weights are normalised, `attention.ssa_weights`) (meaning and
  defaults: ssa_jax/config.py), checked once when the module is made."""

  num_speakers: int
  ssa: str
  speaker_loss: str
  aam_margin: float
  aam_scale: float
  speaker_dropout: float
  enroll_k: int
  ssa_softmax: str

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
               detach_speaker: bool = False, enroll: Mapping[str, jax.Array] | None = None):
    mask = check_inputs(x, mask)
    act = lambda y: nn.leaky_relu(y, self.leaky_slope)

    enroll_states = None
    if enroll is not None and "x" in enroll:  # enrollment segments: through C_sp with the batch
      h_sp, pmask, c_sp, alpha_sp_self, enroll_states = self._speaker_branch_with_enrollment(
          x, mask, enroll["x"], enroll["mask"], train)
    else:
      h_sp, pmask = self.crnn("crnn_sp")(x, mask, train)
      c_sp, alpha_sp_self = SelfAttention(name="attention_sp")(h_sp, pmask)
      if enroll is not None:
        enroll_states = enroll["context"]
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
    enroll_args = ()
    if enroll_states is not None:  # enrollment: extra keys/values of the speaker half
      if detach_speaker:
        enroll_states = jax.lax.stop_gradient(enroll_states)
      enroll_args = (enroll_states, enroll["valid"])
    c_em, alpha_em, alpha_sp = SelfSpeakerAttention(self.ssa, self.ssa_softmax, name="ssa")(
        h_em, h_sp_ssa, pmask, keep, *enroll_args)
    if enroll_args:
      t = pmask.shape[1]
      extra["alpha_enroll"], alpha_sp = alpha_sp[:, t:], alpha_sp[:, :t]
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

  def _speaker_branch_with_enrollment(self, x, mask, enroll_x, enroll_mask, train):
    """C_sp on the batch x (B, T, M, C) and the enrollment segments (B, k, T, M, C) in one call
    (one set of batch statistics in training mode); returns the batch's (h_sp (B, T', d),
    pooled mask (B, T'), c_sp (B, d), its attention (B, T')) and the enrollment segments' pooled
    states (B, k, d). Call from the compact `__call__`."""
    b, k = x.shape[0], enroll_x.shape[1]
    chex.assert_shape([enroll_x, enroll_mask], [(b, k) + x.shape[1:], (b, k, x.shape[1])])
    both_x = jnp.concatenate([x, enroll_x.reshape((b * k,) + x.shape[1:])])
    both_mask = jnp.concatenate([mask, enroll_mask.reshape(b * k, -1).astype(bool)])
    h, pmask = self.crnn("crnn_sp")(both_x, both_mask, train)
    c, alpha = SelfAttention(name="attention_sp")(h, pmask)
    return h[:b], pmask[:b], c[:b], alpha[:b], c[b:].reshape(b, k, -1)


def speaker_states(model: SSACRNN, variables: Mapping[str, Any], x: jax.Array,
                   mask: jax.Array) -> jax.Array:
  """The pooled speaker-branch states c_sp (B, d) of segments x (B, T, M, C), mask (B, T), in
  evaluation mode: C_sp's BLSTM states h_sp pooled by its own self attention (Eq. 1-2), the
  enrollment entries of `SSACRNN.__call__(enroll={"context": ...})`. Only the speaker branch
  runs (its parameters and batch statistics from the model's `variables`)."""
  mask = check_inputs(x, mask)
  params, stats = variables["params"], variables.get("batch_stats", {})
  h, pmask = branch(model).apply({"params": params["crnn_sp"],
                                     "batch_stats": stats["crnn_sp"]}, x, mask, False)
  c, _ = SelfAttention().apply({"params": params["attention_sp"]}, h, pmask)
  return c
