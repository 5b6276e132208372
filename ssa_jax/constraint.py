"""The Eq. 8 constraint on the emotion classifier FC^c (seed §2.4, docs/DESIGN.md §4).

For a classifier kernel W (n, K) fed with a batch x (N, n), every column must satisfy

    ||W[:, k]||_1 = r = N / (K ||sum_i x_i||_1).

`project_classifier` enforces it after each optimiser update, column by column:

  "l1_sphere"  the Euclidean projection onto the L1 sphere of radius r (the nearest point
               with L1 norm r): |w| projected onto the simplex {u >= 0, sum u = r}
               (`optax.projections.projection_simplex`), signs of w put back. Unlike
               `optax.projections.projection_l1_sphere`, a zero entry counts as positive
               (sign(0) := +1): optax multiplies by sign(0) = 0 and so loses that entry's share
               of the radius when the column lies inside the ball, leaving it off the sphere.
  "rescale"    w * r / ||w||_1 (same direction, the ACRNN-r "scale only" variant).
  "none"       the identity.

Edge cases (both value-dependent, handled without Python branching so the step stays jittable):
  - ||sum_i x_i||_1 == 0 (r infinite, e.g. all embeddings zero): the kernel is returned unchanged.
  - a zero column: both modes return the column (r/n, ..., r/n), the nearest point of the
    sphere to 0 (for "rescale" there is no direction to keep).
The inputs are the step's own embeddings and get no gradient (stop_gradient).

The step size the head sees (`train.head_step`, `head_step_transform`): with the constraint, a
column's entries are about r / E in size (E = embed_dim; r ~ 1 / (K mean ||z||_1), ~1e-2 at
quickstart sizes), while Adam moves every entry by about the learning rate per step, whatever
its size: at lr 1e-3 the head's kernel is rewritten by a multiple of itself at every step and
then projected back, and a scaled bias moves the logits by logit_scale * lr per step (0.13 at
quickstart, against lr for an unconstrained head). "relative" scales the optimizer's update
of each kernel column by ||w_k||_1 / sqrt(E) and a scaled bias's by 1 / s (s the logit scale):
each column then changes, relative to its own size, as a lecun-normal unconstrained column (entries
~1/sqrt(E)) does under the same optimizer, and the logit bias moves by lr per step.
"""

from __future__ import annotations

import math
from typing import Any

import chex
import jax
import jax.numpy as jnp
import optax

MODES = ("l1_sphere", "rescale", "none")
HEAD_STEPS = ("adam", "relative")


def classifier_radius(inputs: jax.Array, num_classes: int) -> jax.Array:
  """r = N / (K ||sum_i x_i||_1) for inputs (N, n); float32 scalar, inf if the sum is 0."""
  chex.assert_rank(inputs, 2)
  x = jax.lax.stop_gradient(inputs).astype(jnp.float32)
  total = jnp.sum(jnp.abs(jnp.sum(x, axis=0)))
  return jnp.float32(x.shape[0]) / (jnp.float32(num_classes) * total)


def _project_column_l1_sphere(w: jax.Array, radius: jax.Array) -> jax.Array:
  """Nearest point of {v : ||v||_1 = radius} to w (n,)."""
  sign = jnp.where(w >= 0, 1.0, -1.0).astype(w.dtype)
  return sign * optax.projections.projection_simplex(jnp.abs(w), radius)


def _rescale_column(w: jax.Array, radius: jax.Array) -> jax.Array:
  """w scaled to L1 norm `radius`; a zero column becomes (radius/n, ..., radius/n)."""
  norm = jnp.sum(jnp.abs(w))
  uniform = jnp.full_like(w, radius / w.shape[0])
  return jnp.where(norm > 0, w * (radius / jnp.where(norm > 0, norm, 1.0)), uniform)


def project_classifier(kernel: jax.Array, inputs: jax.Array, mode: str) -> jax.Array:
  """Applies the Eq. 8 constraint to kernel (n, K) given the batch inputs (N, n).

  Returns a kernel of the same shape and dtype whose columns have L1 norm
  `classifier_radius(inputs, K)` (mode "l1_sphere" or "rescale"), or `kernel` itself ("none").
  """
  if mode not in MODES:
    raise ValueError(f"train.constraint must be one of {MODES}, got {mode!r}")
  if kernel.ndim != 2 or inputs.ndim != 2 or inputs.shape[1] != kernel.shape[0]:
    raise ValueError(f"project_classifier needs kernel (n, K) and inputs (N, n), got kernel "
                     f"{kernel.shape} and inputs {inputs.shape}")
  if mode == "none":
    return kernel
  radius = classifier_radius(inputs, kernel.shape[1])
  finite = jnp.isfinite(radius)
  safe_radius = jnp.where(finite, radius, 1.0)
  column_fn = _project_column_l1_sphere if mode == "l1_sphere" else _rescale_column
  w = kernel.astype(jnp.float32)
  projected = jax.vmap(column_fn, in_axes=(1, None), out_axes=1)(w, safe_radius)
  return jnp.where(finite, projected, w).astype(kernel.dtype)


def head_step_transform(mode: str, embed_dim: int, logit_scale: float | str,
                        classifier_bias: str) -> optax.GradientTransformation:
  """An optax transformation placed after the optimizer that sets the step size of the head.

  "adam": the identity. "relative": the update of `params["classifier"]["kernel"]` (E, K) is
  multiplied column-wise by ||w_k||_1 / sqrt(E) (the current column's L1 norm, the Eq. 8 radius),
  and with `classifier_bias == "scaled"` the update of `params["classifier"]["bias"]` by 1 / s,
  s = `logit_scale` (a number) or exp(params["log_logit_scale"]) when it is "learned". Every
  other update passes unchanged. Needs `params` in `update` (optax passes them in the train step).
  """
  if mode not in HEAD_STEPS:
    raise ValueError(f"train.head_step must be one of {HEAD_STEPS}, got {mode!r}")
  if mode == "adam":
    return optax.identity()
  root_e = math.sqrt(int(embed_dim))

  def update_fn(updates: Any, state: optax.EmptyState, params: Any = None):
    if params is None:
      raise ValueError("head_step='relative' needs the parameters in the optimizer update")
    kernel = params["classifier"]["kernel"]
    column_norm = jnp.sum(jnp.abs(kernel.astype(jnp.float32)), axis=0, keepdims=True)
    head = dict(updates["classifier"])
    head["kernel"] = (head["kernel"] * (column_norm / root_e)).astype(head["kernel"].dtype)
    if classifier_bias == "scaled" and "bias" in head:
      s = (jnp.exp(params["log_logit_scale"]) if logit_scale == "learned"
           else jnp.float32(logit_scale))
      head["bias"] = (head["bias"] / s).astype(head["bias"].dtype)
    return {**updates, "classifier": head}, state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)
