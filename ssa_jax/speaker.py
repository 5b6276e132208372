"""Training-side pieces for speakers never heard in training (docs/DESIGN.md "Beyond the paper").

  l2_normalize(x, axis)                    x / ||x||_2 along `axis` (norm floored at 1e-12)
  aam_logits(cosine, labels, margin, scale) additive angular margin softmax logits (ArcFace)
  gradient_reversal(x, lam)                identity forward, -lam * g backward (Ganin et al. 2016)
  adversary_init(rng, embed_dim, num_speakers) / adversary_logits(params, z)
                                           the linear speaker classifier of `train.adversarial_weight`

Pure jax functions; the model (ssa_jax/models/ssa_crnn.py) and the train step (ssa_jax/train.py)
call them. The evaluation side (EER, verification trials, linear probe) is ssa_jax/speaker_eval.py.
"""

from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp

SPEAKER_LOSSES = ("softmax", "aam")
ADVERSARY = "speaker_adversary"  # its key in the train state's params (outside the model's)


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
  """x / max(||x||_2, eps) along `axis` (any shape; a zero vector stays zero)."""
  sq = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(sq, eps * eps))


def aam_logits(cosine: jax.Array, labels: jax.Array, margin: float, scale: float) -> jax.Array:
  """Additive angular margin softmax logits (ArcFace; Xiang et al., "Margin Matters", 2019).

  Args:
    cosine: (B, S) cos(theta_j) between the L2-normalised embedding and the L2-normalised weight
      of class j (values in [-1, 1]).
    labels: (B,) int, the true class y of each row.
    margin: m (radians, >= 0); scale: s (> 0).

  Returns:
    (B, S) float32: s * cos(theta_y + m) in the true class's column, s * cos(theta_j) elsewhere.
    cos(theta + m) = cos(theta) cos(m) - sin(theta) sin(m), sin(theta) = sqrt(1 - cos^2) (>= 0,
    theta in [0, pi]; its argument floored at 1e-7 so that the gradient stays finite at |cos| = 1).
    No "easy margin" or threshold variant: the literal formula for every theta.
  """
  chex.assert_rank(cosine, 2)
  chex.assert_shape(labels, cosine.shape[:1])
  cosine = cosine.astype(jnp.float32)
  sine = jnp.sqrt(jnp.maximum(1.0 - jnp.square(cosine), 1e-7))
  target = cosine * jnp.cos(margin) - sine * jnp.sin(margin)
  onehot = jax.nn.one_hot(labels, cosine.shape[1], dtype=bool)
  return scale * jnp.where(onehot, target, cosine)


@jax.custom_vjp
def gradient_reversal(x: jax.Array, lam: float) -> jax.Array:
  """The identity in the forward pass; the gradient g of its output becomes -lam * g (any shape;
  `lam` a float or a float scalar array, receiving no gradient)."""
  del lam
  return x


def _reversal_fwd(x, lam):
  return x, lam


def _reversal_bwd(lam, g):
  return (jax.tree.map(lambda t: (-lam * t).astype(t.dtype), g), jnp.zeros_like(lam))


gradient_reversal.defvjp(_reversal_fwd, _reversal_bwd)


def adversary_init(rng: jax.Array, embed_dim: int, num_speakers: int) -> dict[str, jax.Array]:
  """Parameters of the adversarial speaker classifier: kernel (E, S) lecun-normal, bias (S,) 0."""
  kernel = jax.nn.initializers.lecun_normal()(rng, (embed_dim, num_speakers), jnp.float32)
  return {"kernel": kernel, "bias": jnp.zeros((num_speakers,), jnp.float32)}


def adversary_logits(params: Any, z: jax.Array) -> jax.Array:
  """z (B, E) -> speaker logits (B, S) = z W + b of `adversary_init`'s parameters."""
  chex.assert_rank(z, 2)
  return z.astype(jnp.float32) @ params["kernel"] + params["bias"]
