"""Inference throughput of the deployable paths on the same weights (project issue 22, item 7).

  python -m benchmarks.inference [--config NAME|FILE[:ARG]] [--models ssa_crnn,acrnn]
      [--batches 1,16] [--repeats 3] [--warmup 1] [--wait-quiet SECONDS] [--json out.json]

For each model (default: SSA-CRNN and ACRNN at the paper's sizes, the base config; `--config
quickstart` for a fast check) one set of random weights (`tests/weights.vigorous`: O(1)
activations, BatchNorm statistics away from their initial values; `model.logit_scale` set to 1
so that the probabilities of random weights are not saturated and the correctness guard means
something; the scale costs one multiply) runs batches of normalised 3 s segments x (B, T, M, 3)
float32 with masks (B, T) (`benchmarks.step.fake_arrays`: real lengths from T/3 to T) on four
paths:

  jax export   `ssa_jax.serving.load(file).outputs(x, mask)`: the file `ssa_jax.export.
               export_predictor` writes, deserialized and jitted by the light runtime (XLA's
               default options, all cores);
  onnxruntime  `ssa_jax.onnx_export.build_onnx_model` in an onnxruntime session, CPU execution
               provider, intra-op threads = the machine's cores;
  torch eager  `tests/torch_reference.py` with the weights copied by its `load_flax_variables`
               (`benchmarks.step.TorchRunner`'s model and batch, its `infer` forward: eval mode,
               `torch.inference_mode`, float32, channels-last, threads = cores);
  jax eval     the in-checkout jitted eval step (`ssa_jax.inference.make_eval_step`, the options
               training and `bin.predict` compile it with): the reference.

Timing (`benchmarks.step.timed` / `stats`): per model and batch size, each path's first call
(compiles where it compiles), `--warmup - 1` more untimed calls, then `--repeats` rounds in which
the paths take turns (a shared machine slows all alike); median and min-max wall seconds, read
after the probabilities are on the host (numpy) on every path. Columns: segments/s (B / median);
real-time factor (median seconds per second of audio: B segments of T frames at the hop);
ratio to PyTorch eager's segments/s; setup s (building the deployable artefact and loading it:
export + `serving.load`, ONNX graph + session, torch model + weight copy; the eval step has
none), first-call extra s (first call - median: compilation); max |p - p_eval| (the largest
absolute difference of any probability of the last timed call from the JAX eval step's on the
same batch: a correctness guard, expected < 1e-4).

The first line printed is `benchmarks/loadcheck.py`'s header (QUIET or LOADED — no verdict); only
a quiet run prints the goal verdict: the fastest deployable path (jax export or onnxruntime) >=
`GOAL_RATIO` x PyTorch eager's segments/s, per model and batch size. `--json` writes the rows,
the machine description and the load readings.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import types
from typing import Any, Callable

import jax
import numpy as np

from benchmarks import loadcheck, step
from ssa_jax import export, inference, models, onnx_export, parallel, predict, serving
from tests.weights import vigorous

GOAL_RATIO = 1.2  # issue 22: fastest deployable path >= 1.2 x PyTorch eager segments/s
EXPORT, ONNX, TORCH, EVAL = "jax export", "onnxruntime", "torch eager", "jax eval"
PATHS = (EXPORT, ONNX, TORCH, EVAL)
DEPLOYABLE = (EXPORT, ONNX)


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, Any]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="",
                      help="packaged config name or file, NAME|FILE[:ARG]; default: base (paper)")
  parser.add_argument("--models", default="ssa_crnn,acrnn")
  parser.add_argument("--batches", default="1,16",
                      help="batch sizes, comma-separated; powers of two or the largest (the "
                           "light runtime pads a call to the next power of two, at most the "
                           "largest batch: other sizes would time padded rows on that path)")
  parser.add_argument("--repeats", type=int, default=3, help="timed rounds after the warm-up")
  parser.add_argument("--warmup", type=int, default=1, help="untimed calls, the first compiles")
  parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                      help="first wait up to this long for the 1-minute load average to fall "
                           "to 0.5 (benchmarks/loadcheck.py)")
  parser.add_argument("--json", default="", help="write the rows and machine info here")
  args = parser.parse_args(argv)
  args.models = [m.strip() for m in args.models.split(",") if m.strip()]
  if not args.models or set(args.models) - {"ssa_crnn", "acrnn"}:
    parser.error(f"--models takes ssa_crnn and/or acrnn, got {','.join(args.models)!r}")
  try:
    args.batches = [int(b) for b in args.batches.split(",") if b.strip()]
  except ValueError:
    parser.error(f"--batches takes integers, got {args.batches!r}")
  if not args.batches or min(args.batches) < 1 or args.repeats < 1 or args.warmup < 1:
    parser.error("--batches, --repeats and --warmup must be >= 1")
  config = step.load_config(args.config)
  config.model.logit_scale = 1.0  # unsaturated probabilities of random weights (module docstring)
  return args, config


def model_setup(config, name: str, batch: int) -> tuple[Any, Any, dict[str, Any]]:
  """(config, flax model, vigorous variables) of `name` at the config's sizes (module
  docstring: logit_scale 1)."""
  cfg = step.model_config(config, name, types.SimpleNamespace(
      dtype="float32", conv_impl="", lstm_impl="", batch=batch))
  model = models.build_model(cfg.model)
  frames, mels = int(cfg.features.segment_frames), int(cfg.features.n_mels)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                          jax.ShapeDtypeStruct((1, frames, mels, 3), np.float32),
                          jax.ShapeDtypeStruct((1, frames), bool))
  return cfg, model, vigorous(shapes, seed=1)


def _setup(make: Callable[[], Any]) -> tuple[Any, float]:
  t0 = time.perf_counter()
  made = make()
  return made, time.perf_counter() - t0


def bench_model(config, name: str, args, tmp: str) -> list[dict[str, Any]]:
  """The rows of one model: every path at every batch size (module docstring)."""
  import torch  # pylint: disable=g-import-not-at-top
  from tests import torch_reference  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import  (imported before the setup times)
  cfg, model, variables = model_setup(config, name, max(args.batches))
  frames, hop, rate = (int(cfg.features.segment_frames), int(cfg.features.hop_length),
                       int(cfg.features.sample_rate))
  segment_s = frames * hop / rate
  arrays = step.fake_arrays(max(args.batches), cfg, seed=0)
  cores = os.cpu_count() or 1

  def export_and_load():
    predictor = predict.Predictor(model, variables, cfg, tuple(cfg.data.classes))
    path = os.path.join(tmp, f"{name}.npz")
    export.export_predictor(predictor, path)
    return serving.load(path, batch_size=max(args.batches))

  served, export_s = _setup(export_and_load)
  sess, onnx_s = _setup(lambda: onnx_export.session(onnx_export.build_onnx_model(
      variables, cfg.model, frames=frames, mels=int(cfg.features.n_mels)), threads=cores))
  eval_fn = inference.make_eval_step(model, parallel.make_mesh())
  device_vars = jax.device_put(variables)
  print(f"{name}: exported in {export_s:.1f} s, ONNX session in {onnx_s:.1f} s", file=sys.stderr,
        flush=True)

  rows = []
  for b in args.batches:
    x, mask = arrays["x"][:b], arrays["mask"][:b]
    batch = {k: v[:b] for k, v in arrays.items()}
    runner, torch_s = _setup(lambda: step.TorchRunner(cfg, batch, variables, "cpu", "float32"))
    runner.model.eval()

    def torch_probs():  # `TorchRunner.infer`'s forward, its probabilities kept
      with torch.inference_mode():
        logits, _ = runner.model(runner.x, runner.mask)
      return torch.softmax(logits.float(), -1).numpy()

    calls = {EXPORT: lambda: served.outputs(x, mask)["probs"],
             ONNX: lambda: onnx_export.run_session(sess, x, mask)["probabilities"],
             TORCH: torch_probs,
             EVAL: lambda: np.asarray(eval_fn(device_vars, {"x": x, "mask": mask})["probs"])}
    probs: dict[str, np.ndarray] = {}  # each path's last output (the correctness guard)
    kept = {k: (lambda k=k, fn=fn: probs.__setitem__(k, fn())) for k, fn in calls.items()}
    setup = {EXPORT: export_s, ONNX: onnx_s, TORCH: torch_s, EVAL: 0.0}
    first = {k: step.timed(fn) for k, fn in kept.items()}
    for _ in range(args.warmup - 1):
      for fn in kept.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in calls}
    for i in range(args.repeats):
      for k, fn in kept.items():
        times[k].append(step.timed(fn))
      print(f"{name} batch {b} round {i + 1}/{args.repeats}: " +
            ", ".join(f"{k} {v[-1]:.3f} s" for k, v in times.items()), file=sys.stderr, flush=True)
    reference = np.asarray(probs[EVAL], np.float64)
    for k in PATHS:
      st = step.stats(times[k])
      rows.append({"model": name, "batch": b, "path": k, "time_s": st,
                   "segments_per_s": b / st["median"],
                   "real_time_factor": st["median"] / (b * segment_s),
                   "setup_s": setup[k], "first_call_extra_s": first[k] - st["median"],
                   "max_abs_diff": float(np.max(np.abs(np.asarray(probs[k], np.float64)
                                                       - reference)))})
    torch_rate = next(r["segments_per_s"] for r in rows[-len(PATHS):] if r["path"] == TORCH)
    for r in rows[-len(PATHS):]:
      r["ratio_torch"] = r["segments_per_s"] / torch_rate
  return rows


def goal_checks(rows: list[dict[str, Any]]) -> list[tuple[str, float, bool]]:
  """(model and batch, fastest deployable segments/s / PyTorch eager's, met) per model and batch."""
  checks = []
  for key in dict.fromkeys((r["model"], r["batch"]) for r in rows):
    group = [r for r in rows if (r["model"], r["batch"]) == key]
    best = max((r for r in group if r["path"] in DEPLOYABLE), key=lambda r: r["segments_per_s"])
    checks.append((f"{key[0]} batch {key[1]} ({best['path']})", best["ratio_torch"],
                   best["ratio_torch"] >= GOAL_RATIO))
  return checks


def format_table(rows: list[dict[str, Any]], readings: dict[str, Any], cores: int) -> str:
  lines = [loadcheck.header(readings)]
  if readings.get("quiet"):
    for name, ratio, met in goal_checks(rows):
      lines.append(f"  {'MET ' if met else 'MISSED'} {name}: fastest deployable path / PyTorch "
                   f"eager segments/s >= {GOAL_RATIO}: {ratio:.2f}")
  lines += ["", "| model | batch | path | segments/s | real-time factor | median s (min-max) | "
                "x PyTorch eager | setup s | first-call extra s | max abs diff p vs JAX eval |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    t = r["time_s"]
    lines.append(f"| {r['model']} | {r['batch']} | {r['path']} | {r['segments_per_s']:.4g} | "
                 f"{r['real_time_factor']:.3g} | {t['median']:.3g} ({t['min']:.3g}-{t['max']:.3g}) "
                 f"| {r['ratio_torch']:.2f} | {r['setup_s']:.1f} | {r['first_call_extra_s']:.1f} "
                 f"| {r['max_abs_diff']:.2g} |")
  lines.append("")
  lines.append(f"float32 on the CPU, {cores} cores: XLA all cores, onnxruntime intra-op threads "
               f"{cores}, torch threads {cores}. Real-time factor: compute seconds per second of "
               f"audio (3 s per segment). Setup: export + serving.load / ONNX graph + session / "
               f"torch model + weight copy (per model, shared by the batch sizes; torch per batch).")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
  """Runs the table, prints it under the load header (and the goal verdict if quiet), returns
  what `--json` writes."""
  args, config = parse_args(argv)
  if args.wait_quiet > 0:
    loadcheck.wait_for_quiet(args.wait_quiet, log=lambda m: print(m, file=sys.stderr, flush=True))
  info = step.machine()
  import onnxruntime  # pylint: disable=g-import-not-at-top
  info["onnxruntime"] = onnxruntime.__version__
  monitor = loadcheck.LoadMonitor.start()
  t0 = time.perf_counter()
  rows = []
  with tempfile.TemporaryDirectory(prefix="ssa_jax_inference_bench_") as tmp:
    for name in args.models:
      rows.extend(bench_model(config, name, args, tmp))
  wall = time.perf_counter() - t0
  readings = monitor.stop()
  text = format_table(rows, readings, os.cpu_count() or 1)
  out = {"rows": rows, "machine": info, "load": readings, "args": dict(vars(args)),
         "wall_s": wall, "text": text}
  print(text, flush=True)
  print(f"wall {wall:.0f} s", file=sys.stderr)
  if args.json:
    loadcheck.write_json(args.json, out)
  return out


if __name__ == "__main__":
  main()
