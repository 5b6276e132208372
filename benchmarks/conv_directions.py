"""One 256 -> 256 conv layer of the paper's CRNN, each direction on its own: XLA's algorithms
(YNNPACK, Eigen), the GEMM formulations of ssa_jax.ops, and PyTorch's oneDNN.

  python benchmarks/conv_directions.py [--batch 8] [--rounds 3] [--json out.json]

Shapes: x (B, 150, 20, 256), kernel 5 x 3, SAME, stride 1 (conv2-conv6 after the pool); 2·B·150·
20·256·256·15 FLOP per direction (47 GFLOP at B = 8). Rows, each jitted on its own with the
named XLA option set (`ssa_jax.ops.CPU_OPTION_SETS`: "default" = YNNPACK, "eigen" = YNNPACK off):
* forward, input gradient (`jax.vjp` in x), kernel gradient (`jax.vjp` in the kernel);
* the input gradient written as a forward convolution of the flipped kernel (what a custom VJP
  would run instead of `jax.vjp`'s window-reversed convolution);
* forward as 5 row-shifted GEMMs over a frequency im2col (K = 3·256), kernel gradient as
  15 per-tap GEMMs (`ops.conv_kernel_grad`);
* PyTorch: `conv2d` and `aten.convolution_backward` with one output at a time, channels-last,
  threads = cores.
Every variant runs once per round, alternating, so a shared machine slows all alike; the table
gives the best wall and process-CPU seconds of `--rounds` and GFLOP per wall second. The header
says whether the machine was quiet (benchmarks/loadcheck.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
from jax import lax  # pylint: disable=g-import-not-at-top

from benchmarks import loadcheck  # pylint: disable=g-import-not-at-top
from ssa_jax import ops  # pylint: disable=g-import-not-at-top

T, F, C, KT, KF = 150, 20, 256, 5, 3
_DN = ("NHWC", "HWIO", "NHWC")


def conv(x, k):
  return lax.conv_general_dilated(x, k, (1, 1), ops.same_padding((KT, KF)), dimension_numbers=_DN)


def input_grad(k, dy):
  return jax.vjp(lambda x: conv(x, k), jnp.zeros(dy.shape[:3] + (C,), dy.dtype))[1](dy)[0]


def input_grad_flipped(k, dy):
  """The input gradient as a plain forward convolution: dy * (k flipped in time and frequency,
  channel axes swapped), padded (high, low) where the forward pads (low, high)."""
  pad = tuple((hi, lo) for lo, hi in ops.same_padding((KT, KF)))
  return lax.conv_general_dilated(dy, jnp.flip(k, (0, 1)).swapaxes(2, 3), (1, 1), pad,
                                  dimension_numbers=_DN)


def kernel_grad(x, dy):
  return jax.vjp(lambda k: conv(x, k), jnp.zeros((KT, KF, C, C), x.dtype))[1](dy)[0]


def forward_gemm(x, k):
  """The forward as KT GEMMs of the frequency im2col, each reading a row-shifted window."""
  b, t, f, ci = x.shape
  (lt, ht), (lf, hf) = ops.same_padding((KT, KF))
  xp = jnp.pad(x, ((0, 0), (lt, ht), (lf, hf), (0, 0)))
  cols = jnp.concatenate([xp[:, :, j:j + f, :] for j in range(KF)], axis=-1)  # (B, T+4, F, 3C)
  rows = b * (t + KT - 1) * f
  cols = jnp.pad(cols.reshape(rows, KF * ci), ((0, (KT - 1) * f), (0, 0)))
  out = sum(lax.dot(lax.slice_in_dim(cols, i * f, i * f + rows), k[i].reshape(KF * ci, -1))
            for i in range(KT))
  return out.reshape(b, t + KT - 1, f, -1)[:, :t]


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--json", default="")
  args = parser.parse_args(argv)
  monitor = loadcheck.LoadMonitor.start()
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(os.cpu_count() or 1)
  rng = np.random.default_rng(0)
  b = args.batch
  x = jnp.asarray(rng.standard_normal((b, T, F, C)), jnp.float32)
  dy = jnp.asarray(rng.standard_normal((b, T, F, C)), jnp.float32)
  k = jnp.asarray(rng.standard_normal((KT, KF, C, C)) * 0.05, jnp.float32)
  variants = {}
  for opts in ("default", "eigen"):
    o = ops.cpu_compiler_options(opts)
    variants[f"JAX forward, {opts}"] = (jax.jit(conv, compiler_options=o), (x, k))
    variants[f"JAX input grad, {opts}"] = (jax.jit(input_grad, compiler_options=o), (k, dy))
    variants[f"JAX input grad as a forward conv of the flipped kernel, {opts}"] = (
        jax.jit(input_grad_flipped, compiler_options=o), (k, dy))
    variants[f"JAX kernel grad, {opts}"] = (jax.jit(kernel_grad, compiler_options=o), (x, dy))
    variants[f"JAX forward as 5 GEMMs, {opts}"] = (jax.jit(forward_gemm, compiler_options=o),
                                                   (x, k))
    variants[f"JAX kernel grad as 15 GEMMs (ops.conv_kernel_grad), {opts}"] = (
        jax.jit(lambda x_, d_: ops.conv_kernel_grad(x_, d_, (KT, KF)), compiler_options=o),
        (x, dy))
  ref = {"forward": conv(x, k), "input grad": input_grad(k, dy), "kernel grad": kernel_grad(x, dy)}
  err = {"forward as 5 GEMMs": ref["forward"] - variants["JAX forward as 5 GEMMs, eigen"][0](x, k),
         "input grad as a forward conv of the flipped kernel":
             ref["input grad"] - input_grad_flipped(k, dy),
         "kernel grad as GEMMs": ref["kernel grad"] - ops.conv_kernel_grad(x, dy, (KT, KF))}
  cl = torch.channels_last
  tx = torch.from_numpy(np.asarray(x)).permute(0, 3, 1, 2).contiguous(memory_format=cl)
  tdy = torch.from_numpy(np.asarray(dy)).permute(0, 3, 1, 2).contiguous(memory_format=cl)
  tw = torch.from_numpy(np.asarray(k)).permute(3, 2, 0, 1).contiguous(memory_format=cl)
  pad = [p[0] for p in ops.same_padding((KT, KF))]
  def backward(mask):
    return lambda: torch.ops.aten.convolution_backward(tdy, tx, tw, [C], [1, 1], pad, [1, 1],
                                                       False, [0, 0], 1, mask)
  variants["PyTorch forward (oneDNN)"] = (lambda: torch.nn.functional.conv2d(tx, tw, None, 1, pad), ())
  variants["PyTorch input grad"] = (backward([True, False, False]), ())
  variants["PyTorch kernel grad"] = (backward([False, True, False]), ())
  for fn, a in variants.values():  # compile / warm up
    jax.block_until_ready(fn(*a))
  wall = {n: [] for n in variants}
  cpu = {n: [] for n in variants}
  for _ in range(args.rounds):
    for n, (fn, a) in variants.items():
      c0, t0 = time.process_time(), time.perf_counter()
      jax.block_until_ready(fn(*a))
      wall[n].append(time.perf_counter() - t0)
      cpu[n].append(time.process_time() - c0)
  readings = monitor.stop()
  gflop = 2 * b * T * F * C * C * KT * KF / 1e9
  lines = [loadcheck.header(readings), "",
           f"one 256 -> 256 layer, batch {b}, 150 x 20, kernel 5 x 3: {gflop:.1f} GFLOP per "
           f"direction; best of {args.rounds}", "",
           "| variant | wall s | CPU s | GFLOP/s |", "|---|---:|---:|---:|"]
  rows = []
  for n in variants:
    w, c = min(wall[n]), min(cpu[n])
    rows.append({"variant": n, "wall_s": w, "cpu_s": c, "gflops": gflop / w})
    lines.append(f"| {n} | {w:.3f} | {c:.3f} | {gflop / w:.0f} |")
  lines.append("")
  for n, e in err.items():
    lines.append(f"{n}: max |error| / max |value| = "
                 f"{float(jnp.max(jnp.abs(e))) / float(jnp.max(jnp.abs(ref[n.split(' as')[0]]))):.1e}")
  text = "\n".join(lines)
  print(text)
  out = {"load": readings, "rows": rows, "table": text, "args": vars(args)}
  if args.json:
    loadcheck.write_json(args.json, out)
  return out


if __name__ == "__main__":
  main()
