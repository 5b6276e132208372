"""Winograd (Toom-Cook) minimal filtering for the stride-1 SAME convolutions of the conv stack.

  toom_cook(m, r) -> (AT (m, n), G (n, r), BT (n, n))     1-D F(m, r), n = m + r - 1
  input_transform(x, axis, m, r) -> [P arrays]             tiles along `axis`, Bᵀ applied
  output_transform(ys, axis, m, size) -> array             Aᵀ applied, tiles put back in order
  kernel_transform(w, axis, m) -> (P, ...)                 G applied along `axis` of the kernel
  conv_1d(x (B, T, F, Ci), w (kt, kf, Ci, Co), axis, m) -> (B, T, F, Co)
      F(m, kf) along frequency (axis 2; the kt time taps direct: one XLA convolution (kt, 1) per
      Winograd point on the transformed tiles, n = m + kf - 1 of them) or F(m, kt) along time
      (axis 1; one (1, kf) convolution per point).

Correlation as in `lax.conv_general_dilated` (no kernel flip); SAME padding as
`layers.same_padding`. The transforms are strided slices and weighted sums that XLA fuses; JAX
differentiates them: the transposes are again Winograd-form (the input gradient runs the per-point
convolutions' input gradients between the transposed transforms, the kernel gradient the
per-point kernel gradients, then Gᵀ), with the same multiplication count as the forward.
float32 error grows with the tile: F(4, 3) and F(4, 5) stay near 3e-6 (tests/test_winograd.py).
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Array = jax.Array

# Interpolation points (the last one, infinity, is implicit): the usual small, symmetric choices.
POINTS = (0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5, 3.0, -3.0)


@functools.lru_cache(maxsize=None)
def toom_cook(m: int, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Transform matrices of the correlation F(m, r): y = Aᵀ [(G g) ⊙ (Bᵀ d)], d of length
  n = m + r - 1, y_i = Σ_k g_k d_{i+k}. Points: the first n - 1 of `POINTS` and infinity.

  Returns float64 (AT (m, n), G (n, r), BT (n, n)); each finite row of Bᵀ is scaled to a largest
  entry of 1 (its factor moved into G's row), which keeps the transformed inputs at the scale
  of the inputs.
  """
  n = m + r - 1
  if not 2 <= n <= len(POINTS) + 1:
    raise ValueError(f"F({m}, {r}) needs {n} points; at most {len(POINTS) + 1} are defined")
  pts = np.asarray(POINTS[:n - 1], np.float64)

  def vander(k: int) -> np.ndarray:  # (n, k): a degree-(k-1) polynomial at the points, infinity
    v = np.zeros((n, k))
    v[:-1] = pts[:, None] ** np.arange(k)
    v[-1, -1] = 1.0
    return v

  bt = np.linalg.inv(vander(n)).T
  g = vander(r)
  scale = np.abs(bt).max(axis=1)
  return vander(m).T, g * scale[:, None], bt / scale[:, None]


def _tiles(size: int, m: int) -> int:
  return -(-size // m)


def input_transform(x: Array, axis: int, m: int, r: int) -> list[Array]:
  """SAME-pads `x` along `axis` for a length-r kernel, cuts it into ceil(size/m) tiles of
  n = m + r - 1 (overlapping by r - 1) and applies Bᵀ: n arrays, each x's shape with `axis`
  of length ceil(size/m). Strided slices and sums only (no gather)."""
  _, _, bt = toom_cook(m, r)
  n, size = m + r - 1, x.shape[axis]
  nt = _tiles(size, m)
  lo = (r - 1) // 2
  pad = [(0, 0)] * x.ndim
  pad[axis] = (lo, nt * m + r - 1 - size - lo)
  xp = jnp.pad(x, pad)
  cuts = [lax.slice_in_dim(xp, u, u + (nt - 1) * m + 1, stride=m, axis=axis) for u in range(n)]
  return [_combine(bt[p], cuts) for p in range(n)]


def output_transform(ys: Sequence[Array], axis: int, m: int, size: int) -> Array:
  """Aᵀ applied to the n point arrays (tiles along `axis`), the m outputs of each tile put back
  in order along `axis` and cut to `size`."""
  n = len(ys)
  at, _, _ = toom_cook(m, n - m + 1)
  outs = jnp.stack([_combine(at[i], ys) for i in range(m)], axis=axis + 1)
  shape = list(ys[0].shape)
  shape[axis] *= m
  return lax.slice_in_dim(outs.reshape(shape), 0, size, axis=axis)


def kernel_transform(w: Array, axis: int, m: int) -> Array:
  """G applied along `axis` of the kernel: (n, *w.shape without axis)."""
  _, g, _ = toom_cook(m, w.shape[axis])
  return jnp.tensordot(jnp.asarray(g, w.dtype), w, axes=[[1], [axis]],
                       precision=lax.Precision.HIGHEST)


def _combine(coeffs: np.ndarray, arrays: Sequence[Array]) -> Array:
  """Σ_i coeffs[i] arrays[i] over the non-zero coefficients (±1 without a multiply)."""
  out = None
  for c, a in zip(coeffs, arrays):
    if c == 0:
      continue
    term = a if c == 1 else (-a if c == -1 else a * jnp.asarray(c, a.dtype))
    out = term if out is None else out + term
  return out if out is not None else jnp.zeros_like(arrays[0])


def conv_1d(x: Array, w: Array, axis: int = 2, m: int = 4, precision=None) -> Array:
  """x (B, T, F, Ci), w (kt, kf, Ci, Co) -> (B, T, F, Co): F(m, k) along `axis` (1 time, 2
  frequency; k the kernel's size there), the other axis's taps direct: one XLA convolution per
  Winograd point on the transformed tiles (kernel (kt, 1) or (1, kf), SAME along that axis)."""
  if axis not in (1, 2):
    raise ValueError(f"axis must be 1 (time) or 2 (frequency), got {axis}")
  k = w.shape[axis - 1]
  xs = input_transform(x, axis, m, k)  # n x (B, T, tiles, Ci) or (B, tiles, F, Ci)
  ws = jnp.expand_dims(kernel_transform(w, axis - 1, m), axis)  # (n, 1, kf, ..) / (n, kt, 1, ..)
  pads = [(0, 0), (0, 0)]
  other = w.shape[2 - axis]
  pads[2 - axis] = ((other - 1) // 2, other - 1 - (other - 1) // 2)
  ys = [lax.conv_general_dilated(xp, wp, (1, 1), pads, precision=precision,
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
        for xp, wp in zip(xs, ws)]
  return output_transform(ys, axis, m, x.shape[axis])


def multiplications(shape: Sequence[int], kernel: Sequence[int], impl: str, mt: int = 0,
                    mf: int = 0) -> float:
  """Multiplications in the GEMMs of one forward pass of a layer x (B, T, F, Ci) -> Co with a
  (kt, kf, Ci, Co) kernel: "direct" B·T·F·kt·kf·Ci·Co; "freq" (conv_1d along frequency,
  F(mf, kf)); "time" (along time, F(mt, kt)); "2d" (F(mt, kt) x F(mf, kf), one GEMM per point;
  benchmarks/winograd_probe.py). Transforms not counted (O(n) per element, not O(Ci·Co))."""
  b, t, f, ci = shape
  kt, kf, _, co = kernel
  if impl == "direct":
    return float(b * t * f * kt * kf * ci * co)
  if impl == "freq":
    return float(b * t * _tiles(f, mf) * (mf + kf - 1) * kt * ci * co)
  if impl == "time":
    return float(b * _tiles(t, mt) * (mt + kt - 1) * f * kf * ci * co)
  if impl == "2d":
    return float(b * _tiles(t, mt) * (mt + kt - 1) * _tiles(f, mf) * (mf + kf - 1) * ci * co)
  raise ValueError(f"unknown impl {impl!r}")
