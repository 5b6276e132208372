"""One conv layer, XLA's convolution against reduced-multiplication (Winograd) forms, forward and
forward + both gradients, interleaved (issue 23).

  python -m benchmarks.winograd_probe [--batch 8] [--shape 150,20,256,256] [--rounds 5]
      [--variants xla,freq2,freq4,...] [--xla-options tuned]

Every round times each variant once (forward, then forward + input and kernel gradients), the
order rotated by one each round, so that a machine shared with other work slows all alike; the
table gives the
median over the rounds and the spread (min-max), the GEMM multiplications of the forward
against the direct convolution's, the direct convolution's FLOPs per second ("effective"), and
the largest error of the output and of both gradients against XLA's float32 convolution
(max |a - b| / max |b|). Compiled with the train step's XLA options (`--xla-options`, as
benchmarks/step.py). The load header says whether the figures may be read as results.

Variants (transforms: ssa_jax/models/winograd.py; model.conv_impl="winograd" is time4):
  xla          lax.conv_general_dilated (the model's conv_impl="xla")
  freqM        F(M, 3) along frequency, one XLA (5, 1) convolution per Winograd point
  timeM        F(M, 5) along time, one XLA (1, 3) convolution per Winograd point
  freqM_dotk   F(M, 3) along frequency, the 5 time taps stacked into K: one batched GEMM
               (batch = the points, K = 5·Ci) on 5 time-shifted copies of the transformed input
  2dMxN        F(M, 5) along time x F(N, 3) along frequency, one batched GEMM (K = Ci)
"""

from __future__ import annotations

import argparse
import statistics
import sys
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from benchmarks import loadcheck
from benchmarks.step import timed
from ssa_jax import xla_options
from ssa_jax.models import winograd

DEFAULT_VARIANTS = "xla,freq4,freq6,time2,time3,time4,freq4_dotk,2d4x2"


def xla_conv(x, w):
  return lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def freq_dotk(x, w, m: int):
  """F(m, kf) along frequency; the kt time taps stacked into K (one batched GEMM)."""
  kt = w.shape[0]
  b, t, f, ci = x.shape
  lo = (kt - 1) // 2
  xs = jnp.stack(winograd.input_transform(x, 2, m, w.shape[1]))  # (n, B, T, nt, Ci)
  xs = jnp.pad(xs, ((0, 0), (0, 0), (lo, kt - 1 - lo), (0, 0), (0, 0)))
  xk = jnp.concatenate([xs[:, :, d:d + t] for d in range(kt)], axis=-1)  # (n, B, T, nt, kt·Ci)
  n, nt = xs.shape[0], xs.shape[3]
  ws = winograd.kernel_transform(w, 1, m).reshape(n, kt * ci, -1)  # (n, kt·Ci, Co)
  ys = lax.dot_general(xk.reshape(n, b * t * nt, kt * ci), ws, (((2,), (1,)), ((0,), (0,))))
  ys = ys.reshape(n, b, t, nt, -1)
  return winograd.output_transform(list(ys), 2, m, f)


def conv_2d(x: jax.Array, w: jax.Array, mt: int = 2, mf: int = 2) -> jax.Array:
  """x (B, T, F, Ci), w (kt, kf, Ci, Co) -> (B, T, F, Co): F(mt, kt) x F(mf, kf), one batched
  GEMM over the nt·nf Winograd points (K = Ci)."""
  kt, kf = w.shape[:2]
  b, t, f, ci = x.shape
  co = w.shape[-1]
  by_freq = winograd.input_transform(x, 2, mf, kf)  # nf x (B, T, tf, Ci)
  # nt·nf point arrays, (q, p) order
  pts = [xt for xf in by_freq for xt in winograd.input_transform(xf, 1, mt, kt)]
  nt, nf = mt + kt - 1, mf + kf - 1
  tt, tf = pts[0].shape[1:3]
  xs = jnp.stack(pts).reshape(nf * nt, b * tt * tf, ci)
  ws = winograd.kernel_transform(winograd.kernel_transform(w, 0, mt), 1, mf)  # (nf, nt, Ci, Co)
  ys = lax.dot_general(xs, ws.reshape(nf * nt, ci, co), (((2,), (1,)), ((0,), (0,))))
  ys = ys.reshape(nf, nt, b, tt, tf, co)
  by_freq = [winograd.output_transform(list(ys[q]), 1, mt, t) for q in range(nf)]
  return winograd.output_transform(by_freq, 2, mf, f)


def variant(name: str) -> tuple[Callable, str, int, int]:
  """(fn(x, w), multiplication kind, mt, mf) of a variant name."""
  if name == "xla":
    return xla_conv, "direct", 0, 0
  if name.startswith("freq") and name.endswith("_dotk"):
    m = int(name[4:-5])
    return (lambda x, w: freq_dotk(x, w, m)), "freq", 0, m
  if name.startswith("freq"):
    m = int(name[4:])
    return (lambda x, w: winograd.conv_1d(x, w, 2, m)), "freq", 0, m
  if name.startswith("time"):
    m = int(name[4:])
    return (lambda x, w: winograd.conv_1d(x, w, 1, m)), "time", m, 0
  if name.startswith("2d"):
    mt, mf = (int(v) for v in name[2:].split("x"))
    return (lambda x, w: conv_2d(x, w, mt, mf)), "2d", mt, mf
  raise SystemExit(f"unknown variant {name!r}")


def rel(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def main(argv: list[str] | None = None) -> str:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--shape", default="150,20,256,256", help="T,F,Ci,Co (paper conv3-6)")
  p.add_argument("--rounds", type=int, default=5)
  p.add_argument("--variants", default=DEFAULT_VARIANTS)
  p.add_argument("--xla-options", default="tuned", choices=xla_options.OPTION_NAMES)
  args = p.parse_args(argv)
  t, f, ci, co = (int(v) for v in args.shape.split(","))
  names = [v.strip() for v in args.variants.split(",") if v.strip()]
  opts = xla_options.compiler_options(args.xla_options)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((args.batch, t, f, ci)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((5, 3, ci, co)) / np.sqrt(15 * ci), jnp.float32)
  dy = jnp.asarray(rng.standard_normal((args.batch, t, f, co)), jnp.float32)

  fns = {}
  for name in names:
    fn, kind, mt, mf = variant(name)
    fwd = jax.jit(fn, compiler_options=opts)

    def both(x_, w_, dy_, fn=fn):
      y, vjp = jax.vjp(fn, x_, w_)
      return (y, *vjp(dy_))

    fns[name] = (fwd, jax.jit(both, compiler_options=opts), kind, mt, mf)
  ref = fns[names[0]][1](x, w, dy) if names[0] == "xla" else jax.jit(
      lambda a, b, c: (xla_conv(a, b), *jax.vjp(xla_conv, a, b)[1](c)), compiler_options=opts)(
          x, w, dy)
  errors = {}
  for name, (fwd, both, *_) in fns.items():  # compile, warm up, check
    jax.block_until_ready(fwd(x, w))
    out = jax.block_until_ready(both(x, w, dy))
    errors[name] = [rel(a, b) for a, b in zip(out, ref)]
    print(f"{name}: compiled; errors y {errors[name][0]:.1e} dx {errors[name][1]:.1e} "
          f"dw {errors[name][2]:.1e}", file=sys.stderr, flush=True)
  monitor = loadcheck.LoadMonitor.start()
  times = {n: ([], []) for n in names}
  for r in range(args.rounds):
    order = names[r % len(names):] + names[:r % len(names)]  # each variant leads a round in turn
    for name in order:
      fwd, both = fns[name][:2]
      times[name][0].append(timed(lambda: jax.block_until_ready(fwd(x, w))))
      times[name][1].append(timed(lambda: jax.block_until_ready(both(x, w, dy))))
    print(f"round {r + 1}/{args.rounds}: " + ", ".join(
        f"{n} {v[0][-1]:.3f}/{v[1][-1]:.3f}" for n, v in times.items()), file=sys.stderr,
          flush=True)
  readings = monitor.stop()
  shape = (args.batch, t, f, ci)
  direct = winograd.multiplications(shape, (5, 3, ci, co), "direct")
  base = {k: statistics.median(v) for k, v in zip(("f", "b"), times[names[0]])}
  lines = [loadcheck.header(readings), "",
           f"One layer x {shape} -> {co}, kernel (5, 3), float32, XLA options {args.xla_options}, "
           f"{args.rounds} interleaved rounds; seconds: median (min-max); effective GFLOP/s = "
           f"the direct convolution's FLOPs ({2 * direct / 1e9:.1f} G forward, 3x that with "
           f"both gradients) / median time; ratios against {names[0]}.", "",
           "| variant | GEMM mults / direct | forward s | fwd eff. GFLOP/s | fwd ratio | "
           "fwd + both grads s | eff. GFLOP/s | ratio | rel. error y / dx / dw |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
  for name, (_, _, kind, mt, mf) in fns.items():
    tf, tb = times[name]
    mf_, mb = statistics.median(tf), statistics.median(tb)
    mults = winograd.multiplications(shape, (5, 3, ci, co), kind, mt, mf) / direct
    lines.append(
        f"| {name} | {mults:.3f} | {mf_:.3f} ({min(tf):.3f}-{max(tf):.3f}) | "
        f"{2 * direct / mf_ / 1e9:.0f} | {mf_ / base['f']:.2f} | {mb:.3f} "
        f"({min(tb):.3f}-{max(tb):.3f}) | {6 * direct / mb / 1e9:.0f} | {mb / base['b']:.2f} | "
        + " / ".join(f"{e:.1e}" for e in errors[name]) + " |")
  text = "\n".join(lines)
  print(text, flush=True)
  return text


if __name__ == "__main__":
  main()
