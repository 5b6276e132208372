"""Feature throughput: the per-file librosa reference vs the batched JAX front end.

  python -m benchmarks.features [--rounds 5] [--devices 1] [--dft rfft|matmul|both] [--json out.json]

Prints seconds of audio processed per wall-clock second for
* librosa: `features.log_mel_3d` one 3 s utterance at a time (after one warm-up call);
* jax: `features.log_mel_3d_batch` on 64 x 3 s per batch (compiled and warmed up first,
  `block_until_ready()` before reading the clock); with `--devices N > 1` the process gets N CPU
  devices (XLA_FLAGS, set before JAX starts) and the batch is sharded over them.
The two are timed in alternating rounds in the same process (the machine may be shared, so each
round's conditions are alike for both); the table reports the median and the best round (contention only slows a round down) and the
ratios to librosa.

numpy's OpenBLAS is pinned to one thread by default (`--blas-threads 1`): with its default threads
on a busy 2-core machine, librosa's small mel matmul spins and librosa slows down 5-10x, which
would flatter the JAX path (`--blas-threads 0` shows that). Levers measured (2-core EPYC, shared):
`jnp.fft.rfft` beats the windowed-DFT matmul ~2x (the matmul costs 41 MFLOP per audio second);
framing by padded windowed pieces summed (one fused pass) beats slices + concatenate + pad (four
passes) by ~20 % end to end; log, mel and the deltas are < 15 % of the time; the rest is XLA's FFT,
so the batched path stays FFT-bound at ~3x librosa. Sharding the batch over 2 CPU devices
(`--devices 2`) was slower on the busy machine (no idle core); not measured on an idle one.

The first line printed says whether the machine was quiet (benchmarks/loadcheck.py: load average
<= 0.5 at the start, other processes <= 10 % of the CPU time during the run) or
"LOADED — no verdict"; quote only quiet runs. `--json` writes the table (per path: every round's
seconds of audio per second, median, best, ratios to librosa), the load readings and the arguments.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--seconds", type=float, default=3.0)
  parser.add_argument("--librosa-files", type=int, default=16, help="files per librosa round")
  parser.add_argument("--devices", type=int, default=1, help="CPU devices to shard the batch over")
  parser.add_argument("--dft", default="both", choices=["rfft", "matmul", "both"])
  parser.add_argument("--blas-threads", type=int, default=1,
                      help="OpenBLAS/OMP threads for numpy (librosa's mel matmul); 0: leave as is "
                           "(takes effect only if numpy is not imported yet)")
  parser.add_argument("--json", default="", help="write the table and the load readings here")
  args = parser.parse_args(argv)
  if args.rounds < 1 or args.batch < 1 or args.librosa_files < 1 or args.seconds <= 0:
    parser.error("--rounds, --batch, --librosa-files and --seconds must be positive")
  if args.blas_threads > 0:  # before numpy is imported
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
      os.environ[var] = str(args.blas_threads)
  if args.devices > 1:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={args.devices}")
  from benchmarks import loadcheck  # pylint: disable=g-import-not-at-top
  monitor = loadcheck.LoadMonitor.start()  # before JAX starts and compiles

  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax.sharding import Mesh, NamedSharding, PartitionSpec  # pylint: disable=g-import-not-at-top

  from ssa_jax import features  # pylint: disable=g-import-not-at-top
  from ssa_jax.config import base_config  # pylint: disable=g-import-not-at-top

  cfg = base_config().features
  rate = cfg.sample_rate
  samples = int(args.seconds * rate)
  rng = np.random.default_rng(0)
  t = np.arange(samples) / rate
  f0 = 140 * (1 + 0.05 * np.sin(2 * np.pi * 5 * t))
  tone = sum(np.sin(k * 2 * np.pi * np.cumsum(f0) / rate) / k for k in range(1, 20))
  waves = (0.1 * tone[None] * rng.uniform(0.5, 1.5, (args.batch, 1))
           + 0.01 * rng.standard_normal((args.batch, samples))).astype(np.float32)
  lengths = np.full(args.batch, samples, np.int32)

  devices = jax.devices()[:args.devices]
  sharding = NamedSharding(Mesh(np.array(devices), ("data",)), PartitionSpec("data"))
  waves_dev = jax.device_put(waves, sharding)
  lengths_dev = jax.device_put(lengths, sharding)
  dfts = ["rfft", "matmul"] if args.dft == "both" else [args.dft]

  features.log_mel_3d(waves[0], rate, cfg)  # warm-up (librosa caches, filterbank)
  for dft in dfts:  # compile + warm-up
    jax.block_until_ready(features.log_mel_3d_batch(waves_dev, lengths_dev, cfg, dft=dft))

  audio_librosa = args.librosa_files * args.seconds
  audio_batch = args.batch * args.seconds
  speed: dict[str, list[float]] = {"librosa": []} | {f"jax {d}": [] for d in dfts}
  for r in range(args.rounds):
    start = time.perf_counter()
    for i in range(args.librosa_files):
      features.log_mel_3d(waves[(r + i) % args.batch], rate, cfg)
    speed["librosa"].append(audio_librosa / (time.perf_counter() - start))
    for dft in dfts:
      start = time.perf_counter()
      jax.block_until_ready(features.log_mel_3d_batch(waves_dev, lengths_dev, cfg, dft=dft))
      speed[f"jax {dft}"].append(audio_batch / (time.perf_counter() - start))

  readings = monitor.stop()
  print(loadcheck.header(readings))
  base_med = statistics.median(speed["librosa"])
  base_best = max(speed["librosa"])
  print(f"device: {jax.devices()[0].platform} x {len(devices)} (of {jax.device_count()}), "
        f"cpus: {os.cpu_count()}, OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', '-')}, "
        f"load avg {os.getloadavg()[0]:.1f}, rounds: {args.rounds}, batch {args.batch} x {args.seconds} s")
  print(f"{'path':<13}{'median s/s':>12}{'best s/s':>10}{'best ms/audio s':>17}"
        f"{'ratio (median)':>16}{'ratio (best)':>14}")
  rows = []
  for name, values in speed.items():
    med, best = statistics.median(values), max(values)
    rows.append({"path": name, "audio_s_per_s": values, "median": med, "best": best,
                 "ms_per_audio_s_best": 1000 / best, "ratio_median": med / base_med,
                 "ratio_best": best / base_best})
    print(f"{name:<13}{med:>12.0f}{best:>10.0f}{1000 / best:>17.4f}"
          f"{med / base_med:>15.2f}x{best / base_best:>13.2f}x")
  out = {"args": vars(args), "load": readings, "rows": rows,
         "devices": f"{jax.devices()[0].platform} x {len(devices)}", "cpus": os.cpu_count(),
         "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS")}
  if args.json:
    loadcheck.write_json(args.json, out)
  return out


if __name__ == "__main__":
  main()
