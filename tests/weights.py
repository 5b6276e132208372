"""`vigorous`: random model variables for parity tests and benchmarks (`from conftest import
vigorous` in tests; `from tests.weights import vigorous` from the repository root, e.g.
benchmarks/inference.py). No side effects on import (conftest.py sets a compilation cache)."""

from __future__ import annotations

import jax
import numpy as np


def vigorous(shapes, seed=1):
  """Variables of the given shapes (`jax.eval_shape(model.init, ...)`) drawn so that activations
  are O(1) and biases and BatchNorm statistics non-zero: a wrong mask, gate order or padding
  changes the outputs. Kernels: 1.5 normal / sqrt(fan-in); vectors: 0.3 normal (W^q: normal /
  sqrt(T')); BN variances uniform in [0.5, 2]."""
  rng = np.random.default_rng(seed)

  def redraw(path, leaf):
    name = jax.tree_util.keystr(path)
    if "var" in name:
      return rng.uniform(0.5, 2.0, leaf.shape).astype(np.float32)
    if leaf.ndim >= 2:
      fan_in = int(np.prod(leaf.shape[:-1]))
      return (1.5 * rng.normal(size=leaf.shape) / np.sqrt(fan_in)).astype(np.float32)
    if leaf.ndim == 1 and "w_q" in name:
      return (rng.normal(size=leaf.shape) / np.sqrt(leaf.shape[0])).astype(np.float32)
    return (0.3 * rng.normal(size=leaf.shape)).astype(np.float32)
  return jax.tree_util.tree_map_with_path(redraw, shapes)
