"""Train-step and inference throughput of the JAX step against PyTorch, and (--profile) where a
step's time goes, per layer and direction.

  python -m benchmarks.step [--config configs/ssa_crnn_r.py] [--models ssa_crnn,acrnn]
      [--batch 40] [--steps 5] [--warmup 1] [--framework jax,torch] [--dtype float32,bfloat16]
      [--torch-dtype float32[,bfloat16]] [--torch-device auto|cpu|cuda] [--devices 1,2]
      [--conv-impl auto,xla] [--lstm-impl flax,hoisted]
      [--xla-options tuned,default,eigen,eigen_conv] [--eval-options tuned,default,eigen,eigen_conv]
      [--wait-quiet SECONDS] [--json out.json]
  python -m benchmarks.step --profile [--batch 8] [--steps 1] [same options]

Comma-separated values of --dtype, --devices, --conv-impl, --lstm-impl, --xla-options and
--eval-options give one JAX runner each (every combination), all from the same initial weights.

Timing (default). For each model, at the config's sizes (default: the paper's) and the batch:
* JAX: the train step users run, `ssa_jax.train.make_train_step` (jit, state donated), over a
  mesh of the first `--devices` devices (the data-parallel step of training; default all), and
  the jitted `make_eval_step`; compile time = first call - median step; 0 recompilations expected
  (the jit cache size after all steps, minus 1).
* PyTorch: `tests/torch_reference.py` (same shapes and parameter count, NAdam, Eq. 8
  projection), eager, channels-last, on `--torch-device` (auto: CUDA if torch sees a GPU; on the
  CPU threads = cores); `--torch-dtype bfloat16` runs it under `torch.autocast`. A JAX row is
  compared with the PyTorch row of its dtype, else the float32 one.
* Steps of the runners alternate (JAX, torch, JAX, ...) so that a machine shared with other
  work slows all alike; each time is read after `block_until_ready()` (torch: after
  `cuda.synchronize()`). Median, min, max of `--steps` steps after `--warmup` steps.
* FLOPs are XLA's cost analysis of the plain (conv_impl="xla") step and forward, the same count
  for both frameworks and every conv_impl: GFLOP/s is *effective*, counted against the direct
  convolution, so a runner that multiplies less (conv_impl="winograd") may exceed the GEMM
  rate; "conv mults % direct" is what its conv layers really multiply (`conv_multiplications`,
  transforms not counted); GFLOP/s = FLOPs / median time, against the float32 GEMM rate measured in
  the same run (2048^3 matmuls, best of 5, the higher of XLA's and torch's).
* data: one batch of the real input pipeline (`input_pipeline.train_batches` + `parallel.
  global_batch`) from an in-memory training set, as a fraction of the JAX step.
Prints a table; `--json` writes it with the machine's description.

Profile (`--profile`; `--steps` defaults to 1). One table per framework and model. Rows: each
conv layer (both branches of SSA-CRNN summed), the CRNN's glue (max-pool, leaky ReLU and mask
multiplies outside the conv modules), dense + BN, the BLSTM, attention / SSA, the head
(embedding, classifiers, loss), the optimizer update with the Eq. 8 projection, and what could not
be attributed. Columns: forward, input gradient ("backward" for non-conv rows), kernel gradient,
train-step total and share, then the inference (eval step) forward and its share. Seconds per step.
* JAX: `jax.profiler.trace` of the compiled train step (the one `ssa_jax.train` runs, state
  donated) and of the eval step; the trace's per-thunk events (each names its HLO instruction) are
  mapped to layers through the compiled HLO's `op_name` metadata, which carries flax's module path
  (`jit(step)/transpose(jvp(SSACRNN))/crnn_sp/conv3/conv_general_dilated`): `transpose(` marks the
  backward pass, no `jvp(` the optimizer update; instructions without metadata (copies, transposes
  and fusions XLA made) take the scope of their users, else of their operands. A convolution in a
  conv layer's backward is the kernel gradient when its output's spatial size is at most the
  kernel's, the input gradient otherwise (conv_impl="winograd": the transforms' fusions in the
  backward count as kernel gradient). Loops (the BLSTM scans) count through the thunks of their
  bodies, not the loop thunk itself. (CPU traces: a GPU trace names its kernels differently and is not
  attributed.)
* PyTorch (float32, on the CPU): `torch.profiler` of `tests/torch_reference.train_step` with
  every module's forward in a `record_function` scope (a module's own time excludes its child
  modules'); backward nodes (`autograd::engine::evaluate_function: ...`) are attributed to the
  module of the forward op with the same sequence number. oneDNN computes a conv layer's input
  and kernel gradients in one call (`ConvolutionBackward0`); its split between the two is
  estimated from an isolated `aten.convolution_backward` of the same shapes with one output at a
  time (marked `~`).
Event times are wall-clock durations of each op; XLA may run independent thunks concurrently, so
the sum of the ops can exceed the step's wall time (both are printed). Profiling adds overhead:
read the shares, and take absolute step times from the timing mode.

Numbers that hold (benchmarks/loadcheck.py): the run records the 1-minute load average before and
after, the CPU model and core count, and the other processes' share of the CPU time during the
run, and heads its output with `loadcheck.header`: "QUIET ..." or "LOADED — no verdict (...)".
Only a quiet timing run prints the verdict against the goals (JAX train step <= PyTorch's, JAX
inference segments/s >= PyTorch's, both >= 90 % of the GEMM rate). A loaded profile's shares
still hold roughly (both frameworks see the same load), its absolute seconds do not.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import glob
import importlib.util
import itertools
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, Iterable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import loadcheck
from ssa_jax import configs, input_pipeline, models, ops, parallel, train
from ssa_jax.models import layers
from ssa_jax.config import base_config

# ----------------------------------------------------------------------------------------------
# Models, batches and runners (both modes)
# ----------------------------------------------------------------------------------------------

NUM_SPEAKERS = 10  # IEMOCAP's ten speakers


def load_config(spec: str | None):
  """`get_config([ARG])` of a config `FILE[:ARG]` or packaged config `NAME[:ARG]` (`ssa_jax.
  configs.resolve`: quickstart, ssa_crnn_r, ...), or the base config (paper-size SSA-CRNN-r)."""
  if not spec:
    return base_config()
  try:
    path, _, arg = configs.resolve(spec).partition(":")
  except ValueError as e:
    raise SystemExit(str(e)) from None
  module_spec = importlib.util.spec_from_file_location("bench_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise SystemExit(f"{path}: a config file must define get_config()")
  return module.get_config(arg) if arg else module.get_config()


def model_config(config, name: str, args, dtype: str | None = None,
                 conv_impl: str | None = None, lstm_impl: str | None = None) -> Any:
  """The config of one benchmarked model: `args.dtype` / `args.conv_impl` unless given."""
  cfg = config.copy_and_resolve_references()
  cfg.model.name = name
  cfg.model.num_speakers = NUM_SPEAKERS if name == "ssa_crnn" else max(
      int(cfg.model.num_speakers), 0)
  cfg.model.dtype = dtype or args.dtype
  conv_impl = args.conv_impl if conv_impl is None else conv_impl
  if conv_impl:
    cfg.model.conv_impl = conv_impl  # a field the base config may not have yet
  lstm_impl = getattr(args, "lstm_impl", "") if lstm_impl is None else lstm_impl
  if lstm_impl:
    cfg.model.lstm_impl = lstm_impl
  cfg.train.batch_size = args.batch
  return cfg


def fake_arrays(n: int, cfg, seed: int) -> dict[str, np.ndarray]:
  """n segments (T, M, 3) with lengths from 1/3 of T to T, labels and speakers."""
  t, m = int(cfg.features.segment_frames), int(cfg.features.n_mels)
  rng = np.random.default_rng(seed)
  lengths = rng.integers(max(t // 3, 1), t + 1, n)
  mask = np.arange(t)[None, :] < lengths[:, None]
  x = rng.standard_normal((n, t, m, 3)).astype(np.float32) * mask[:, :, None, None]
  return {"x": x, "mask": mask,
          "label": (np.arange(n) % int(cfg.model.num_classes)).astype(np.int32),
          "speaker": rng.integers(0, NUM_SPEAKERS, n).astype(np.int32)}


class JaxRunner:
  """The project's jitted train and eval steps on one fixed batch.

  options / eval_options: the train / eval step's XLA options, "tuned" (`ops.
  step_compiler_options()`, as train.py, bin.evaluate and bin.predict compile both steps) or a
  name of `ops.CPU_OPTION_SETS` ("default": XLA's defaults). devices: a mesh over the first
  `devices` devices (the data-parallel step of training; 0 = all).
  """

  def __init__(self, cfg, batch: dict[str, np.ndarray], options: str = "default",
               eval_options: str = "tuned", devices: int = 0):
    self.mesh = parallel.make_mesh(jax.devices()[:devices] if devices else None)
    self.model = models.build_model(cfg.model)
    self.tx = train.make_optimizer(cfg.train)
    self.batch = parallel.global_batch(batch, self.mesh)
    init = jax.jit(lambda rng, x, mask: train.create_train_state(self.model, self.tx, rng, x, mask),
                   out_shardings=parallel.replicated(self.mesh))
    self.state = init(jax.random.PRNGKey(0), self.batch["x"], self.batch["mask"])
    self.options, self.eval_options = options, eval_options
    self.train_fn = train.make_train_step(
        self.model, self.tx, cfg.train.constraint, self.mesh,
        compiler_options=options)
    self.eval_fn = train.make_eval_step(self.model, self.mesh, eval_options)
    self.loss = float("nan")

  def variables(self) -> dict[str, Any]:
    return train.variables_of(self.state)

  def step(self) -> None:
    self.state, metrics = self.train_fn(self.state, self.batch)
    jax.block_until_ready((self.state, metrics))
    self.loss = float(metrics["loss"])

  def infer(self) -> None:
    jax.block_until_ready(self.eval_fn(self.variables(), self.batch))

  def recompilations(self) -> int:
    return self.train_fn._cache_size() - 1 + self.eval_fn._cache_size() - 1  # pylint: disable=protected-access


def cost_flops(lowered) -> float:
  """XLA's cost-analysis FLOPs of a lowered function: from the lowering (CPU), else from the
  compiled executable (GPU backends answer None before compiling); NaN where neither counts."""
  cost = lowered.cost_analysis() or lowered.compile().cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  return float(cost.get("flops", float("nan"))) if cost else float("nan")


def nominal_flops(cfg, runner: JaxRunner) -> tuple[float, float]:
  """XLA cost-analysis FLOPs of the train step and the forward with XLA's plain convolution."""
  plain = cfg.copy_and_resolve_references()
  plain.model.conv_impl = "xla"
  model = models.build_model(plain.model)
  step = train.make_train_step(model, runner.tx, cfg.train.constraint, runner.mesh)
  evaluate = train.make_eval_step(model, runner.mesh)
  abstract = lambda *args: jax.tree.map(  # noqa: E731
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), args)
  flops = lambda f, *args: cost_flops(f.lower(*abstract(*args)))  # noqa: E731
  return (flops(step, runner.state, runner.batch),
          flops(evaluate, runner.variables(), runner.batch))


def conv_multiplications(cfg, runner: JaxRunner) -> tuple[float, float]:
  """(direct, real) GEMM multiplications of the conv layers in one forward pass of the batch:
  direct = B·T·F·kt·kf·Ci·Co summed over the layers (both branches of SSA-CRNN); real = what the
  runner's `model.conv_impl` multiplies (`layers.conv_multiplications`, transforms not
  counted). Layer shapes from an abstract forward that records every `layers.Conv` call."""
  calls: list[tuple[tuple[int, ...], tuple[int, ...]]] = []

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, layers.Conv) and context.method_name == "__call__":
      mod, x = context.module, args[0]
      calls.append((tuple(x.shape), (*mod.kernel_size, x.shape[-1], mod.features)))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(lambda v, x, m: runner.model.apply(v, x, m, train=False),
                   runner.variables(), runner.batch["x"], runner.batch["mask"])
  impl = str(cfg.model.get("conv_impl", "auto"))
  least = int(cfg.model.get("winograd_min_channels", layers.WINOGRAD_MIN_CHANNELS))
  return (sum(layers.conv_multiplications(shape, k, "xla") for shape, k in calls),
          sum(layers.conv_multiplications(shape, k, impl, least) for shape, k in calls))


def torch_device(name: str = "auto") -> str:
  """"cuda" if asked, or if "auto" and torch sees a GPU; else "cpu"."""
  import torch  # pylint: disable=g-import-not-at-top
  if name == "auto":
    return "cuda" if torch.cuda.is_available() else "cpu"
  return name


class TorchRunner:
  """tests/torch_reference.py on the same batch and initial weights, channels-last, on `device`
  ("cpu": threads = cores; "cuda"); dtype "bfloat16" runs forward and loss under
  `torch.autocast` (parameters, gradients and the update float32, as the JAX bfloat16 runner)."""

  def __init__(self, cfg, batch: dict[str, np.ndarray], variables: Any, device: str = "cpu",
               dtype: str = "float32"):
    import torch  # pylint: disable=g-import-not-at-top
    from tests import torch_reference as tr  # pylint: disable=g-import-not-at-top
    self.torch, self.tr, self.device, self.dtype = torch, tr, device, dtype
    if device == "cpu":
      torch.set_num_threads(os.cpu_count() or 1)
    x = batch["x"]
    self.model = tr.build_torch_model(cfg.model, x.shape[1], x.shape[2], x.shape[3])
    tr.load_flax_variables(self.model, jax.device_get(variables))
    self.model = self.model.to(device=device, memory_format=torch.channels_last)
    self.opt = tr.make_optimizer(self.model, float(cfg.train.learning_rate))
    self.constraint = cfg.train.constraint
    put = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device)  # noqa: E731
    self.x = put(x)  # (B, T, M, C): its NCHW view is channels-last
    self.mask = put(batch["mask"])
    self.label = put(batch["label"]).long()
    self.speaker = put(batch["speaker"]).long()
    self.loss = float("nan")

  def _autocast(self):
    return self.torch.autocast(self.device, dtype=self.torch.bfloat16,
                               enabled=self.dtype == "bfloat16")

  def _sync(self) -> None:
    if self.device.startswith("cuda"):
      self.torch.cuda.synchronize()

  def step(self) -> None:
    with self._autocast():
      self.loss = self.tr.train_step(self.model, self.opt, self.x, self.mask, self.label,
                                     self.speaker, self.constraint)
    self._sync()

  def infer(self) -> None:
    self.model.eval()
    with self.torch.inference_mode(), self._autocast():
      self.model(self.x, self.mask)
    self._sync()

  def recompilations(self) -> int:
    return 0


# ----------------------------------------------------------------------------------------------
# Timing mode (default)
# ----------------------------------------------------------------------------------------------

def gemm_rates(n: int = 2048, rounds: int = 5, device: str = "cpu") -> dict[str, float]:
  """Best float32 GEMM GFLOP/s of XLA (default device) and of torch (on `device`),
  (n, n) @ (n, n), each precision as its framework defaults to (on a GPU both may use TF32)."""
  import torch  # pylint: disable=g-import-not-at-top
  a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), jnp.float32)
  mm = jax.jit(lambda u, v: u @ v)
  mm(a, a).block_until_ready()
  at = torch.from_numpy(np.array(a)).to(device)
  sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
  at @ at
  sync()
  best = {"xla": float("inf"), "torch": float("inf")}
  for _ in range(rounds):
    t0 = time.perf_counter()
    mm(a, a).block_until_ready()
    best["xla"] = min(best["xla"], time.perf_counter() - t0)
    t0 = time.perf_counter()
    at @ at
    sync()
    best["torch"] = min(best["torch"], time.perf_counter() - t0)
  return {k: 2 * n ** 3 / v / 1e9 for k, v in best.items()}


def timed(fn: Callable[[], None], cpu: list[float] | None = None) -> float:
  """Wall seconds of fn(); appends the process CPU seconds to `cpu` if given."""
  t0, c0 = time.perf_counter(), time.process_time()
  fn()
  if cpu is not None:
    cpu.append(time.process_time() - c0)
  return time.perf_counter() - t0


def data_time(cfg, arrays: dict[str, np.ndarray], batches: int, mesh) -> float:
  """Median seconds per batch of the real input pipeline, until the batch is on the device."""
  times = []
  it = input_pipeline.train_batches(arrays, int(cfg.model.num_classes), int(cfg.train.batch_size),
                                    seed=0, fold=0, epoch=0)
  for _ in range(batches):
    t0 = time.perf_counter()
    try:
      local = next(it)
    except StopIteration:
      break
    jax.block_until_ready(parallel.global_batch(local, mesh))
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def stats(times: list[float]) -> dict[str, float]:
  return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def jax_variants(args) -> list[tuple[str, str, str, str, str, int]]:
  """(train options, eval options, dtype, conv impl, BLSTM impl, devices) of each JAX runner."""
  return list(itertools.product(args.xla_options, args.eval_options, args.dtypes,
                                args.conv_impls, args.lstm_impls, args.devices))


def bench_model(config, name: str, args, gemm: float) -> list[dict[str, Any]]:
  cfg = model_config(config, name, args, dtype="float32", conv_impl="", lstm_impl="")
  arrays = fake_arrays(max(4 * args.batch, 64), cfg, seed=0)
  batch = {k: v[:args.batch] for k, v in arrays.items()}
  runners: dict[str, Any] = {}
  cfgs: dict[str, Any] = {}
  for options, eval_options, dtype, impl, lstm, ndev in jax_variants(args):  # same weights
    key = f"jax:{options}:{eval_options}:{dtype}:{impl}:{lstm}:{ndev}"
    cfgs[key] = model_config(config, name, args, dtype=dtype, conv_impl=impl, lstm_impl=lstm)
    runners[key] = JaxRunner(cfgs[key], batch, options, eval_options, ndev)
  first_jax = next(iter(runners.values()))
  flops_step, flops_fwd = nominal_flops(cfg, first_jax)
  if "torch" in args.framework:
    for dtype in args.torch_dtypes:
      runners[f"torch:{dtype}"] = TorchRunner(cfg, batch, first_jax.variables(),
                                              args.torch_device, dtype)
  if "jax" not in args.framework:
    runners = {k: r for k, r in runners.items() if k.startswith("torch")}
  first, failed = {}, {}
  for k, r in list(runners.items()):  # JAX: compile + one step
    try:
      first[k] = timed(r.step)
    except Exception as e:  # pylint: disable=broad-except
      if not k.startswith("torch"):
        raise
      failed[k] = (f"{type(e).__name__}: {e}".splitlines() or [""])[0][:200]  # e.g. autocast
      del runners[k]
      print(f"{name} {k}: dropped, its first step failed ({failed[k]})", file=sys.stderr,
            flush=True)
  for _ in range(max(args.warmup - 1, 0)):
    for r in runners.values():
      r.step()
  steps = {k: [] for k in runners}
  cpu = {k: [] for k in runners}
  for i in range(args.steps):
    for k, r in runners.items():
      steps[k].append(timed(r.step, cpu[k]))
    print(f"{name} step {i + 1}/{args.steps}: " +
          ", ".join(f"{k} {v[-1]:.2f} s" for k, v in steps.items()), file=sys.stderr, flush=True)
  first_infer = {k: timed(r.infer) for k, r in runners.items()}
  infers = {k: [] for k in runners}
  for _ in range(args.steps):
    for k, r in runners.items():
      infers[k].append(timed(r.infer))
  data_s = data_time(cfg, arrays, 5, first_jax.mesh)
  rows = []
  for k, r in runners.items():
    st, inf = stats(steps[k]), stats(infers[k])
    is_jax = k.startswith("jax")
    rcfg = cfgs.get(k, cfg)
    direct, real = conv_multiplications(rcfg, r) if is_jax else (1.0, 1.0)
    rows.append({
        "model": name, "framework": k.split(":")[0], "batch": args.batch,
        "dtype": str(rcfg.model.dtype) if is_jax else r.dtype,
        "devices": int(r.mesh.devices.size) if is_jax else 1,
        "device": str(r.mesh.devices.flat[0].platform) if is_jax else r.device,
        "xla_options": r.options if is_jax else "",
        "eval_options": r.eval_options if is_jax else "",
        "lstm_impl": (ops.resolve_lstm_impl(str(rcfg.model.get("lstm_impl", "auto"))) if is_jax
                      else "torch"),
        "conv_impl": (ops.resolve_impl(str(rcfg.model.get("conv_impl", "auto"))) if is_jax
                      else "torch"),
        "compile_s": (first[k] - st["median"] + first_infer[k] - inf["median"]) if is_jax
                     else 0.0,
        "step_s": st, "step_cpu_s": statistics.median(cpu[k]),
        "step_gflops": flops_step / st["median"] / 1e9,
        "infer_s": inf, "segments_per_s": args.batch / inf["median"],
        "infer_gflops": flops_fwd / inf["median"] / 1e9,
        "step_tflop": flops_step / 1e12, "infer_tflop": flops_fwd / 1e12,
        "conv_mults_pct_direct": 100 * real / direct,
        "data_s": data_s if is_jax else None,
        "recompilations": r.recompilations(), "loss": r.loss,
    })
    rows[-1]["step_pct_gemm"] = 100 * rows[-1]["step_gflops"] / gemm
    rows[-1]["infer_pct_gemm"] = 100 * rows[-1]["infer_gflops"] / gemm
  for k, why in failed.items():
    rows.append({"model": name, "framework": "torch", "dtype": k.split(":")[1], "failed": why})
  return rows


def measured(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """The rows that ran (not those whose first step failed)."""
  return [r for r in rows if "failed" not in r]


def torch_row_for(jax_row: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any] | None:
  """The PyTorch row a JAX row is compared with: same model and dtype, else float32."""
  torch_rows = {(r["model"], r["dtype"]): r for r in measured(rows) if r["framework"] == "torch"}
  return (torch_rows.get((jax_row["model"], jax_row["dtype"])) or
          torch_rows.get((jax_row["model"], "float32")))


def runner_name(j: dict[str, Any]) -> str:
  return (f"{j['model']} (XLA options {j['xla_options']} / {j.get('eval_options', '')}, conv "
          f"{j.get('conv_impl', '')}, BLSTM {j.get('lstm_impl', '')}, {j['dtype']}"
          f"{', %d devices' % j['devices'] if j.get('devices', 1) > 1 else ''})")


def machine() -> dict[str, Any]:
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  import flax  # pylint: disable=g-import-not-at-top
  import jaxlib  # pylint: disable=g-import-not-at-top
  info = {"cpu": cpu, "cores": os.cpu_count(), "backend": jax.default_backend(),
          "devices": [str(d) for d in jax.devices()],
          "device_kind": jax.devices()[0].device_kind, "python": platform.python_version(),
          "jax": jax.__version__, "jaxlib": jaxlib.__version__, "flax": flax.__version__,
          "numpy": np.__version__, "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")}
  try:
    import torch  # pylint: disable=g-import-not-at-top
    info["torch"] = torch.__version__
    info["torch_threads"] = torch.get_num_threads()
    info["torch_cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
  except ImportError:
    pass
  info["load_average"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
  return info


GOALS = {"step_ratio_max": 1.0, "infer_ratio_min": 1.0, "pct_gemm_min": 90.0}  # issue 14


def goal_checks(rows: list[dict[str, Any]]) -> list[tuple[str, str, float, bool]]:
  """(model, goal, value, met) for every JAX row that has a PyTorch row of the same model.

  Goals (GOALS): JAX train-step time / PyTorch's <= 1.0 (medians); JAX inference segments/s /
  PyTorch's >= 1.0; the JAX train step's and inference's GFLOP/s >= 90 % of the GEMM rate.
  """
  checks = []
  for j in measured(rows):
    t = torch_row_for(j, rows) if j["framework"] == "jax" else None
    if t is None:
      continue
    name = runner_name(j)
    step = j["step_s"]["median"] / t["step_s"]["median"]
    infer = j["segments_per_s"] / t["segments_per_s"]
    checks += [(name, "train step JAX / PyTorch <= 1.0", step, step <= GOALS["step_ratio_max"]),
               (name, "inference segments/s JAX / PyTorch >= 1.0", infer,
                infer >= GOALS["infer_ratio_min"]),
               (name, "train step % GEMM >= 90", j["step_pct_gemm"],
                j["step_pct_gemm"] >= GOALS["pct_gemm_min"]),
               (name, "inference % GEMM >= 90", j["infer_pct_gemm"],
                j["infer_pct_gemm"] >= GOALS["pct_gemm_min"])]
  return checks


def format_verdict(rows: list[dict[str, Any]], readings: dict[str, Any]) -> str:
  """The load header, then the goal checks only if the run was quiet."""
  lines = [loadcheck.header(readings)]
  if readings.get("quiet"):
    for name, goal, value, met in goal_checks(rows):
      lines.append(f"  {'MET ' if met else 'MISSED'} {name}: {goal}: {value:.2f}")
  return "\n".join(lines)


def format_table(rows: list[dict[str, Any]], gemm: dict[str, float]) -> str:
  head = ("| model | framework | conv | BLSTM | XLA options (train / eval) | devices | compile s | "
          "step median s (min-max) | step eff. GFLOP/s | conv mults % direct | % GEMM | CPU s/step | infer s | segments/s | "
          "infer GFLOP/s | % GEMM | data s (% step) | recompiles | loss |")
  lines = [head, "|" + "---|" * (head.count("|") - 1)]
  for r in rows:
    if "failed" in r:
      lines.append(f"| {r['model']} | {r['framework']} {r['dtype']} | failed: {r['failed']} |")
      continue
    st, inf = r["step_s"], r["infer_s"]
    data = (f"{r['data_s']:.3f} ({100 * r['data_s'] / st['median']:.1f} %)"
            if r["data_s"] is not None else "")
    lines.append(
        f"| {r['model']} | {r['framework']} | {r['conv_impl']}"
        f"{'' if r['dtype'] == 'float32' else ' ' + r['dtype']} | {r.get('lstm_impl', '')} | "
        f"{(r['xla_options'] + ' / ' + r.get('eval_options', '')) if r['framework'] == 'jax' else ''} | "
        f"{r.get('devices', 1)} {r.get('device', '')} | {r['compile_s']:.1f} | "
        f"{st['median']:.3g} ({st['min']:.3g}-{st['max']:.3g}) | {r['step_gflops']:.0f} | "
        f"{r.get('conv_mults_pct_direct', 100.0):.0f} | "
        f"{r['step_pct_gemm']:.0f} | {r['step_cpu_s']:.2g} | {inf['median']:.3g} | "
        f"{r['segments_per_s']:.4g} | {r['infer_gflops']:.0f} | {r['infer_pct_gemm']:.0f} | "
        f"{data} | {r['recompilations']} | {r['loss']:.4f} |")
  lines.append("")
  for j in measured(rows):
    t = torch_row_for(j, rows) if j["framework"] == "jax" else None
    if t is not None:
      lines.append(
          f"{runner_name(j)} against PyTorch {t['dtype']} on {t['device']}: JAX / PyTorch "
          f"train-step time {j['step_s']['median'] / t['step_s']['median']:.2f} (min / min "
          f"{j['step_s']['min'] / t['step_s']['min']:.2f}); inference segments/s JAX / PyTorch "
          f"{j['segments_per_s'] / t['segments_per_s']:.2f}; {j['step_tflop']:.2f} TFLOP per "
          f"step, {j['infer_tflop']:.2f} per forward")
  lines.append("CPU s/step: process CPU seconds per step (both cores busy: about 2x the wall "
               "time; PyTorch's OpenMP threads also count while they spin); loss: the last "
               "step's (runners of one dtype start from the same weights and batch)")
  lines.append(f"float32 GEMM rate: XLA {gemm['xla']:.0f} GFLOP/s, torch {gemm['torch']:.0f} "
               f"GFLOP/s (% GEMM uses the higher)")
  return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Profile mode (--profile): per layer and direction
# ----------------------------------------------------------------------------------------------

FWD, IN_GRAD, K_GRAD, INFER = "forward", "input grad", "kernel grad", "inference"
DIRECTIONS = (FWD, IN_GRAD, K_GRAD)
GLUE, DENSE_BN, BLSTM, ATTENTION, HEAD, OPTIMIZER, OTHER = (
    "CRNN glue (pool, act, mask)", "dense + BN", "BLSTM", "attention / SSA", "head + loss",
    "optimizer + Eq. 8", "other (unattributed)")


def row_order(num_convs: int) -> list[str]:
  return ([f"conv{i + 1}" for i in range(num_convs)] +
          [GLUE, DENSE_BN, BLSTM, ATTENTION, HEAD, OPTIMIZER, OTHER])


# ----------------------------------------------------------------------------------------------
# Layer and direction from a scope path (JAX op_name metadata or a torch module path)
# ----------------------------------------------------------------------------------------------

_CONV = re.compile(r"(?:^|/)(?:crnn(?:_sp|_em)?)/(conv\d+)(?:/|$)")


def jax_layer(op_name: str) -> tuple[str, str]:
  """(row, pass) of a JAX op_name; pass is "forward", "backward" or "update".

  `jit(step)/transpose(jvp(SSACRNN))/crnn_sp/conv3/conv_general_dilated` -> ("conv3", "backward").
  """
  body = op_name.split("/", 1)[1] if op_name.startswith("jit(") else op_name
  if "transpose(" in body:
    direction = "backward"
  elif "jvp(" in body or re.search(r"(?:^|/)(?:SSACRNN|ACRNN)(?:/|$)", body):
    direction = "forward"
  else:
    return OPTIMIZER, "update"
  conv = _CONV.search(body)
  if conv:
    return conv.group(1), direction
  parts = set(re.split(r"[/()]", body))
  if parts & {"dense", "bn"} and re.search(r"crnn(?:_sp|_em)?/", body):
    return DENSE_BN, direction
  if "blstm" in parts:
    return BLSTM, direction
  if parts & {"crnn", "crnn_sp", "crnn_em"}:
    return GLUE, direction
  if parts & {"attention", "attention_sp", "ssa"}:
    return ATTENTION, direction
  return HEAD, direction


def torch_layer(module_path: str) -> str:
  """Row of a torch module path (`crnn_sp.convs.2` -> conv3; "" -> head)."""
  parts = module_path.split(".") if module_path else []
  if len(parts) >= 3 and parts[0].startswith("crnn") and parts[1] == "convs":
    return f"conv{int(parts[2]) + 1}"
  if len(parts) >= 2 and parts[0].startswith("crnn"):
    return {"dense": DENSE_BN, "bn": DENSE_BN, "lstm": BLSTM}.get(parts[1], GLUE)
  if parts and parts[0].startswith("crnn"):
    return GLUE
  if parts and parts[0] in ("attention", "attention_sp", "ssa"):
    return ATTENTION
  return HEAD


# ----------------------------------------------------------------------------------------------
# Compiled HLO text -> instructions
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Instr:
  name: str
  opcode: str
  dims: tuple[int, ...] | None  # array shape (None for tuples)
  operands: list[str]
  calls: list[str]
  op_name: str | None
  computation: str


_HEAD = re.compile(r"^\s*(?:ROOT\s+)?%([\w.\-]+)\s*=\s*")
_COMP = re.compile(r"^(?:ENTRY\s+)?%([\w.\-]+)\s*\(.*\{\s*$")


def _split_shape(rest: str) -> tuple[str, str]:
  """('f32[2,3]{1,0}', 'opcode(...') from the text after '= '."""
  if rest.startswith("("):
    depth = 0
    for i, ch in enumerate(rest):
      depth += ch == "("
      depth -= ch == ")"
      if depth == 0:
        return rest[:i + 1], rest[i + 1:].lstrip()
  shape, _, tail = rest.partition(" ")
  return shape, tail


def parse_hlo(text: str) -> dict[str, Instr]:
  """Every instruction of a compiled module's text (`compiled.as_text()`), by name."""
  instrs: dict[str, Instr] = {}
  comp = ""
  for line in text.splitlines():
    m = _COMP.match(line)
    if m:
      comp = m.group(1)
      continue
    m = _HEAD.match(line)
    if not m:
      continue
    shape, tail = _split_shape(line[m.end():])
    opcode = tail.split("(", 1)[0].strip()
    dims = None
    sm = re.match(r"^[a-z]+\d*\[([\d,]*)\]", shape)
    if sm:
      dims = tuple(int(d) for d in sm.group(1).split(",") if d)
    args = tail[len(opcode) + 1:]
    depth, end = 1, len(args)
    for i, ch in enumerate(args):
      depth += ch == "("
      depth -= ch == ")"
      if depth == 0:
        end = i
        break
    operands = re.findall(r"%([\w.\-]+)", args[:end])
    attrs = args[end:]
    calls = re.findall(r"(?:calls|body|condition|to_apply|branch_computations)=\{?%([\w.\-]+)",
                       attrs)
    calls += re.findall(r",\s*%([\w.\-]+)", attrs.split("calls=", 1)[1].split("}", 1)[0]) \
        if "calls={" in attrs else []
    om = re.search(r'op_name="([^"]*)"', attrs)
    instrs[m.group(1)] = Instr(m.group(1), opcode, dims, operands, calls,
                               om.group(1) if om else None, comp)
  return instrs


def _called_ops(instrs: dict[str, Instr], by_comp: dict[str, list[Instr]], name: str,
                depth: int = 0) -> list[Instr]:
  """The instructions of the computations `name` calls (fusions, custom calls), recursively."""
  out = []
  if depth > 4:
    return out
  for comp in instrs[name].calls:
    for ins in by_comp.get(comp, []):
      out.append(ins)
      if ins.calls:
        out.extend(_called_ops(instrs, by_comp, ins.name, depth + 1))
  return out


def scope_of(instrs: dict[str, Instr]) -> dict[str, tuple[str | None, str]]:
  """(op_name, source) of every instruction: a fusion's convolution's or dot's op_name, else its
  own, else one inside the fusion it calls, else its users' (breadth first), else its operands';
  `source` names the instruction the op_name came from (itself unless propagated)."""
  by_comp: dict[str, list[Instr]] = collections.defaultdict(list)
  users: dict[str, list[str]] = collections.defaultdict(list)
  for ins in instrs.values():
    by_comp[ins.computation].append(ins)
    for o in ins.operands:
      users[o].append(ins.name)
  scope: dict[str, tuple[str | None, str]] = {}
  for name, ins in instrs.items():
    op = ins.op_name
    if ins.calls and ins.opcode in ("fusion", "custom-call"):
      inner = _called_ops(instrs, by_comp, name)
      heavy = [i.op_name for i in inner if i.op_name and i.opcode in ("convolution", "dot")]
      named = [i.op_name for i in inner if i.op_name]
      # a fusion around a convolution or dot is that op's (XLA names fusions by their root)
      op = heavy[-1] if heavy else (op or (named[-1] if named else None))
    scope[name] = (op, name)
  for neighbours in (users, {n: i.operands for n, i in instrs.items()}):
    for name in instrs:
      if scope[name][0] is not None:
        continue
      seen, frontier = {name}, list(neighbours.get(name, []))
      while frontier and scope[name][0] is None:
        nxt = []
        for n in frontier:
          if n in seen or n not in instrs:
            continue
          seen.add(n)
          if scope[n][0]:
            scope[name] = scope[n]
            break
          nxt.extend(neighbours.get(n, []))
        frontier = nxt[:64]
  return scope


def _by_computation(instrs: dict[str, Instr]) -> dict[str, list[Instr]]:
  by_comp: dict[str, list[Instr]] = collections.defaultdict(list)
  for ins in instrs.values():
    by_comp[ins.computation].append(ins)
  return by_comp


def _conv_kind(instrs: dict[str, Instr], by_comp: dict[str, list[Instr]], name: str,
               kernel_size: tuple[int, int]) -> str | None:
  """"kernel" / "input" for a convolution (or a fusion or custom call holding one) by its
  output's spatial size (kernel: at most the kernel's in each dimension, which also takes
  conv_impl="winograd"'s per-point (1, kf) or (kt, 1) kernels), "dot" for a dot, None otherwise."""
  ins = instrs[name]
  inner = [ins] + (_called_ops(instrs, by_comp, name) if ins.calls else [])
  for c in inner:
    if c.opcode == "convolution":
      spatial = tuple(c.dims[1:3]) if c.dims and len(c.dims) == 4 else None
      small = spatial is not None and all(s <= k for s, k in zip(spatial, kernel_size))
      return "kernel" if small else "input"
  return "dot" if any(i.opcode == "dot" for i in inner) else None


def classify_instrs(instrs: dict[str, Instr], kernel_size: tuple[int, int]
                    ) -> dict[str, tuple[str, str]]:
  """(row, column) of every instruction: column is one of DIRECTIONS or "update".

  In a conv layer's backward, the input-gradient convolution and what takes its scope from it
  are "input grad"; the kernel-gradient convolution (or GEMMs), the bias gradient and their
  transposes are "kernel grad".
  """
  by_comp = _by_computation(instrs)
  scope = scope_of(instrs)
  out = {}
  for name in instrs:
    op, source = scope[name]
    if op is None:
      out[name] = (OTHER, FWD)
      continue
    row, direction = jax_layer(op)
    if direction == "update":
      out[name] = (row, "update")
    elif direction == "forward":
      out[name] = (row, FWD)
    elif row.startswith("conv"):
      kind = _conv_kind(instrs, by_comp, source, kernel_size)
      out[name] = (row, IN_GRAD if kind == "input" else K_GRAD)
    else:
      out[name] = (row, IN_GRAD)
  return out


# ----------------------------------------------------------------------------------------------
# JAX
# ----------------------------------------------------------------------------------------------

_CONTAINERS = ("while", "conditional", "call")
_ASYNC = ("convolution", "dot", "custom-call", "sort")


def async_ops(hlo: dict[str, Instr]) -> list[str]:
  """Instructions whose thunks run asynchronously on the CPU (XLA's Eigen convolutions, dots)."""
  return [n for n, i in hlo.items() if i.opcode in _ASYNC]


def shared_time(intervals: dict[str, list[tuple[float, float]]]) -> dict[str, float]:
  """Wall time of each op, where ops in flight at the same time share it equally.

  `intervals`: op -> [(start, end), ...] (any time unit). Returns op -> total time; the values
  sum to the length of the union of all intervals (a sweep over their boundaries).
  """
  points = []
  for op, spans in intervals.items():
    for a, b in spans:
      if b > a:
        points += [(a, 1, op), (b, -1, op)]
  points.sort(key=lambda p: (p[0], p[1]))
  out: dict[str, float] = collections.defaultdict(float)
  active: collections.Counter = collections.Counter()
  last = None
  for t, kind, op in points:
    if last is not None and active and t > last:
      share = (t - last) / sum(active.values())
      for o, n in active.items():
        out[o] += share * n
    active[op] += kind
    if active[op] == 0:
      del active[op]
    last = t
  return dict(out)


def trace_events(fn, steps: int, skip: Iterable[str] = (), asynchronous: Iterable[str] = ()
                 ) -> tuple[dict[str, float], float]:
  """(seconds per step by HLO instruction name, wall seconds per step) of `fn()` x steps.

  An op runs for its thunk's trace event, except the `asynchronous` ones (XLA's own convolutions
  and dots: their thunk returns at once and the work finishes on the Eigen pool), which run
  until their `end: <op>` event; ops in flight together share the time (`shared_time`).
  (Synchronous thunks get `end:` events too, but those can wait behind other work.)
  `skip`: instruction names not to count (loops: their bodies' thunks count).
  """
  logdir = tempfile.mkdtemp(prefix="ssa_jax_profile_")
  with jax.profiler.trace(logdir):
    t0 = time.perf_counter()
    for _ in range(steps):
      fn()
    wall = (time.perf_counter() - t0) / steps
  files = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
  if not files:
    raise RuntimeError(f"jax.profiler.trace wrote no .xplane.pb under {logdir}")
  data = jax.profiler.ProfileData.from_file(files[0])
  skip, asynchronous = set(skip), set(asynchronous)
  starts: dict[int, tuple[str, float, float]] = {}  # flow id -> (op, start, end of its event)
  ends: dict[int, float] = {}
  for plane in data.planes:
    for line in plane.lines:
      for ev in line.events:
        stats = dict(ev.stats)
        op = stats.get("hlo_op")
        if op is not None and "_p" in stats:
          starts[int(stats["_p"])] = (str(op), ev.start_ns, ev.start_ns + ev.duration_ns)
        elif ev.name.startswith("end: ") and "_c" in stats:
          ends[int(stats["_c"])] = ev.start_ns + ev.duration_ns
  intervals: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
  for flow, (op, a, b) in starts.items():
    if op not in skip:
      intervals[op].append((a, max(b, ends.get(flow, b)) if op in asynchronous else b))
  shutil.rmtree(logdir, ignore_errors=True)
  return {op: t * 1e-9 / steps for op, t in shared_time(intervals).items()}, wall


def jax_table(instrs: dict[str, Instr], kernel_size, train_ops: dict[str, float],
              infer_instrs: dict[str, Instr], infer_ops: dict[str, float]
              ) -> dict[str, dict[str, float]]:
  """{row: {forward, input grad, kernel grad, update, inference}} seconds per step."""
  table: dict[str, dict[str, float]] = collections.defaultdict(lambda: collections.defaultdict(float))
  for ops, hlo, infer in ((train_ops, instrs, False), (infer_ops, infer_instrs, True)):
    where = classify_instrs(hlo, kernel_size)
    for name, secs in ops.items():
      ins = hlo.get(name)
      if ins is not None and ins.opcode in _CONTAINERS:
        continue  # its body's thunks are counted themselves
      row, col = where.get(name, (OTHER, FWD))
      table[row][INFER if infer else col] += secs
  return table


def profile_jax(cfg, batch: dict[str, np.ndarray], steps: int, options: str,
                eval_options: str = "tuned", devices: int = 0
                ) -> tuple[dict[str, dict[str, float]], dict[str, float], Any]:
  """Per-layer table, wall seconds {train, infer}, and the runner (for the torch weights)."""
  runner = JaxRunner(cfg, batch, options, eval_options, devices)
  compiled = runner.train_fn.lower(runner.state, runner.batch).compile()
  evaluate = runner.eval_fn.lower(runner.variables(), runner.batch).compile()
  state = {"s": runner.state}

  def train_once():
    state["s"], metrics = compiled(state["s"], runner.batch)
    jax.block_until_ready((state["s"], metrics))

  def infer_once():
    jax.block_until_ready(evaluate(train.variables_of(state["s"]), runner.batch))

  train_once()  # warm-up (allocations, thread pools)
  infer_once()
  train_hlo, infer_hlo = parse_hlo(compiled.as_text()), parse_hlo(evaluate.as_text())
  loops = lambda hlo: [n for n, i in hlo.items() if i.opcode in _CONTAINERS]  # noqa: E731
  train_ops, train_wall = trace_events(train_once, steps, loops(train_hlo), async_ops(train_hlo))
  infer_ops, infer_wall = trace_events(infer_once, steps, loops(infer_hlo), async_ops(infer_hlo))
  runner.state = state["s"]
  kernel = tuple(int(k) for k in cfg.model.kernel_size)
  table = jax_table(train_hlo, kernel, train_ops, infer_hlo, infer_ops)
  return table, {"train": train_wall, "infer": infer_wall}, runner


# ----------------------------------------------------------------------------------------------
# PyTorch
# ----------------------------------------------------------------------------------------------


def _scoped(model) -> list:
  """Puts every submodule's forward in a record_function("module::<path>") scope."""
  import torch  # pylint: disable=g-import-not-at-top
  handles, stack = [], []
  for path, module in model.named_modules():
    def pre(_m, _a, path=path):
      rf = torch.autograd.profiler.record_function(f"module::{path}")
      rf.__enter__()
      stack.append(rf)

    def post(_m, _a, _o):
      stack.pop().__exit__(None, None, None)
    handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
  return handles


def torch_events_table(events: Iterable[Any]) -> dict[str, dict[str, float]]:
  """{row: {forward, backward->input grad, update}} seconds from torch profiler events."""
  events = list(events)
  table: dict[str, dict[str, float]] = collections.defaultdict(lambda: collections.defaultdict(float))
  seq_module: dict[int, str] = {}
  def module_of(ev) -> str | None:
    p = ev
    while p is not None:
      if p.name.startswith("module::"):
        return p.name[len("module::"):]
      p = p.cpu_parent
    return None
  for ev in events:
    if ev.name.startswith("module::"):
      own = ev.cpu_time_total - sum(c.cpu_time_total for c in ev.cpu_children
                                    if c.name.startswith("module::"))
      table[torch_layer(ev.name[len("module::"):])][FWD] += own * 1e-6
    elif getattr(ev, "sequence_nr", -1) >= 0 and not ev.name.startswith("autograd::"):
      mod = module_of(ev)
      if mod is not None:
        seq_module.setdefault(ev.sequence_nr, mod)
  for ev in events:
    if ev.name.startswith("autograd::engine::evaluate_function:"):
      mod = seq_module.get(ev.sequence_nr)
      if "AccumulateGrad" in ev.name:
        table[OPTIMIZER]["update"] += ev.cpu_time_total * 1e-6
      elif mod is None:
        table[HEAD][IN_GRAD] += ev.cpu_time_total * 1e-6  # the loss's backward nodes
      else:
        table[torch_layer(mod)][IN_GRAD] += ev.cpu_time_total * 1e-6
    elif ev.name in ("loss",) and ev.cpu_parent is None:
      table[HEAD][FWD] += ev.cpu_time_total * 1e-6
    elif ev.name in ("optimizer", "eq8") and ev.cpu_parent is None:
      table[OPTIMIZER]["update"] += ev.cpu_time_total * 1e-6
  return table


def conv_backward_split(model, x, mask) -> dict[str, float]:
  """Kernel-gradient share of each conv layer's backward (its input needs a gradient), from
  isolated `aten.convolution_backward` calls with one output at a time, on the layer's shapes."""
  import torch  # pylint: disable=g-import-not-at-top
  shapes: dict[str, tuple] = {}
  hooks = []
  for path, module in model.named_modules():
    if isinstance(module, torch.nn.Conv2d):
      def rec(m, args, out, path=path):
        shapes[path] = (tuple(args[0].shape), m)
      hooks.append(module.register_forward_hook(rec))
  with torch.no_grad():
    model(x, mask)
  for h in hooks:
    h.remove()
  memo: dict[tuple, float] = {}
  split = {}
  for path, (shape, m) in shapes.items():
    key = (shape, tuple(m.weight.shape))
    if key not in memo:
      cl = torch.channels_last
      inp = torch.randn(shape).to(memory_format=cl)
      w = m.weight.detach().to(memory_format=cl)
      gy = torch.randn_like(torch.nn.functional.conv2d(inp, w, None, 1, m.padding))
      gy = gy.to(memory_format=cl)
      def run(mask_):
        best = float("inf")
        for _ in range(2):
          t0 = time.perf_counter()
          torch.ops.aten.convolution_backward(gy, inp, w, [w.shape[0]], [1, 1], list(m.padding),
                                              [1, 1], False, [0, 0], 1, mask_)
          best = min(best, time.perf_counter() - t0)
        return best
      t_in, t_k = run([True, False, False]), run([False, True, True])
      memo[key] = t_k / (t_in + t_k)
    split[path] = memo[key]
  return split


def profile_torch(cfg, batch: dict[str, np.ndarray], variables, steps: int
                  ) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
  import torch  # pylint: disable=g-import-not-at-top
  from torch.profiler import ProfilerActivity, profile  # pylint: disable=g-import-not-at-top
  runner = TorchRunner(cfg, batch, variables)
  runner.step()  # warm-up
  runner.infer()
  handles = _scoped(runner.model)
  try:
    def profiled(fn):  # (seconds per call, torch_events_table) over `steps` calls of fn
      with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
          fn()
        wall = (time.perf_counter() - t0) / steps
      return wall, torch_events_table(prof.events())
    train_wall, train_events = profiled(runner.step)
    infer_wall, infer = profiled(runner.infer)
  finally:
    for h in handles:
      h.remove()
  table: dict[str, dict[str, float]] = collections.defaultdict(lambda: collections.defaultdict(float))
  for row, cols in train_events.items():
    for col, secs in cols.items():
      table[row][col] += secs / steps
  for row, cols in infer.items():
    table[row][INFER] += cols.get(FWD, 0.0) / steps
  # split each conv layer's backward (input + kernel gradient in one oneDNN call)
  split = conv_backward_split(runner.model, runner.x, runner.mask)
  for layer in [r for r in table if r.startswith("conv")]:
    i = int(layer[4:]) - 1
    shares = [s for p, s in split.items() if p.endswith(f"convs.{i}")]
    bwd = table[layer].pop(IN_GRAD, 0.0)
    k_share = 1.0 if i == 0 else (float(np.mean(shares)) if shares else 0.5)  # conv1: no dx
    table[layer][K_GRAD] = bwd * k_share
    table[layer][IN_GRAD] = bwd * (1 - k_share)
  table["_split_estimated"] = {"flag": 1.0}
  return table, {"train": train_wall, "infer": infer_wall}


# ----------------------------------------------------------------------------------------------
# Table
# ----------------------------------------------------------------------------------------------


def format_profile(title: str, table: dict[str, dict[str, float]], wall: dict[str, float],
                   num_convs: int, estimated_split: bool = False) -> str:
  """A Markdown table: rows of `row_order`, time per step (s, or ms below 5 s a step) and shares."""
  rows = row_order(num_convs)
  total_train = sum(v for r in rows for c, v in table.get(r, {}).items() if c != INFER)
  total_infer = sum(table.get(r, {}).get(INFER, 0.0) for r in rows)
  unit, scale = ("s", 1.0) if total_train >= 5 else ("ms", 1e3)
  f = lambda v: f"{v * scale:.3f}" if unit == "s" else f"{v * scale:.2f}"  # noqa: E731
  est = "~" if estimated_split else ""
  lines = [f"**{title}**", "",
           f"| layer | forward {unit} | input grad / backward {unit} | kernel grad {unit} | "
           f"update {unit} | train total {unit} | % train | inference {unit} | % inference |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    c = table.get(r, {})
    tot = sum(v for k, v in c.items() if k != INFER)
    if tot == 0 and c.get(INFER, 0.0) == 0:
      continue
    conv = r.startswith("conv")
    lines.append(
        f"| {r} | {f(c.get(FWD, 0.0))} | {est if conv else ''}{f(c.get(IN_GRAD, 0.0))} | "
        f"{(est + f(c.get(K_GRAD, 0.0))) if conv else ''} | {f(c.get('update', 0.0))} | "
        f"{f(tot)} | {100 * tot / max(total_train, 1e-12):.1f} | {f(c.get(INFER, 0.0))} | "
        f"{100 * c.get(INFER, 0.0) / max(total_infer, 1e-12):.1f} |")
  lines.append(f"| **sum of ops** | | | | | **{f(total_train)}** | 100 | **{f(total_infer)}** | 100 |")
  lines.append(f"| wall per step (profiled; time in no op) | | | | | {f(wall['train'])} "
               f"({f(max(wall['train'] - total_train, 0))}) | | {f(wall['infer'])} "
               f"({f(max(wall['infer'] - total_infer, 0))}) | |")
  return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def _list(parser, value: str, allowed: Iterable[str], flag: str, empty_ok: bool = False
          ) -> list[str]:
  """Comma-separated values of `flag`, each in `allowed` ([""] for an empty value if empty_ok)."""
  items = [v.strip() for v in value.split(",") if v.strip()]
  if not items and empty_ok:
    return [""]
  if not items or set(items) - set(allowed):
    parser.error(f"{flag} takes {', '.join(allowed)}, got {value!r}")
  return items


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, Any]:
  """The parsed and checked arguments, and the config they name."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--profile", action="store_true",
                      help="per layer and direction times (jax.profiler, torch.profiler) "
                           "instead of the timing table")
  parser.add_argument("--config", default="", help="config file (get_config()); default: base")
  parser.add_argument("--models", default="ssa_crnn,acrnn")
  parser.add_argument("--batch", type=int, default=40)
  parser.add_argument("--steps", type=int, default=None,
                      help="timed steps after the warm-up (default 5; --profile: profiled steps, 1)")
  parser.add_argument("--warmup", type=int, default=1, help="untimed steps, the first compiles")
  parser.add_argument("--framework", default="jax,torch")
  parser.add_argument("--dtype", default="float32",
                      help="compute dtype(s) of JAX's convs and matmuls, comma-separated JAX "
                           "runners: float32 and/or bfloat16 (params and losses float32)")
  parser.add_argument("--torch-dtype", default="float32",
                      help="PyTorch runners: float32 and/or bfloat16 (torch.autocast)")
  parser.add_argument("--torch-device", default="auto", help="auto (CUDA if present), cpu, cuda")
  parser.add_argument("--devices", default="0",
                      help="JAX runners' mesh sizes, comma-separated (0 = all devices)")
  parser.add_argument("--conv-impl", default="",
                      help="JAX convolution(s) (ssa_jax.ops.IMPLS), comma-separated runners; "
                           "default: the config's")
  parser.add_argument("--xla-options", default="tuned",
                      help="JAX train-step compile options, comma-separated runners: tuned "
                           "(ops.step_compiler_options, as train.py) and/or names of "
                           "ops.CPU_OPTION_SETS (default = XLA's defaults, eigen, eigen_conv)")
  parser.add_argument("--eval-options", default="tuned",
                      help="JAX eval-step compile options, comma-separated runners: tuned "
                           "(ops.step_compiler_options, as train.py) and/or names of "
                           "ops.CPU_OPTION_SETS")
  parser.add_argument("--lstm-impl", default="",
                      help="JAX BLSTM implementation(s) (ops.LSTM_IMPLS), comma-separated "
                           "runners; default: the config's")
  parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                      help="first wait up to this long for the 1-minute load average to fall "
                           "to 0.5 (benchmarks/loadcheck.py)")
  parser.add_argument("--json", default="", help="write the rows and machine info here")
  args = parser.parse_args(argv)
  if args.steps is None:
    args.steps = 1 if args.profile else 5
  args.framework = _list(parser, args.framework, ("jax", "torch"), "--framework")
  args.xla_options = _list(parser, args.xla_options, ops.OPTION_NAMES, "--xla-options")
  args.eval_options = _list(parser, args.eval_options, ops.OPTION_NAMES, "--eval-options")
  args.lstm_impls = _list(parser, args.lstm_impl, ops.LSTM_IMPLS, "--lstm-impl", empty_ok=True)
  args.conv_impls = _list(parser, args.conv_impl, ops.IMPLS, "--conv-impl", empty_ok=True)
  args.dtypes = _list(parser, args.dtype, ("float32", "bfloat16"), "--dtype")
  args.torch_dtypes = _list(parser, args.torch_dtype, ("float32", "bfloat16"), "--torch-dtype")
  args.dtype = args.dtypes[0]
  if args.torch_device not in ("auto", "cpu", "cuda"):
    parser.error(f"--torch-device takes auto, cpu or cuda, got {args.torch_device!r}")
  try:
    args.devices = [int(d) for d in args.devices.split(",") if d.strip()]
  except ValueError:
    parser.error(f"--devices takes integers, got {args.devices!r}")
  if not args.devices or any(d < 0 or d > jax.device_count() for d in args.devices):
    parser.error(f"--devices takes 0 (all) to {jax.device_count()} (the devices present), got "
                 f"{args.devices}")
  if args.steps < 1 or args.warmup < 1 or args.batch < 1:
    parser.error("--steps, --warmup and --batch must be >= 1")
  for n in set(args.devices):
    if args.batch % (n or jax.device_count()):
      parser.error(f"--batch {args.batch} does not divide over {n or jax.device_count()} devices")
  config = load_config(args.config)
  if args.batch % int(config.model.num_classes):  # the input pipeline's balanced batches
    parser.error(f"--batch must be a multiple of the number of classes "
                 f"({int(config.model.num_classes)}): the data-time row uses emotion-balanced "
                 f"batches")
  args.torch_device = torch_device(args.torch_device) if "torch" in args.framework else "cpu"
  return args, config


def run_timing(config, args) -> tuple[str, dict[str, Any]]:
  info = machine()
  gemm = gemm_rates(device=args.torch_device)
  rate = max(gemm.values())
  rows = []
  for name in [m.strip() for m in args.models.split(",") if m.strip()]:
    rows.extend(bench_model(config, name, args, rate))
    print(f"{name} done", file=sys.stderr, flush=True)
  return format_table(rows, gemm), {"machine": info, "gemm_gflops": gemm, "rows": rows}


def run_profile(config, args) -> tuple[str, dict[str, Any]]:
  out: dict[str, Any] = {"tables": {}}
  texts = []
  for name in [m.strip() for m in args.models.split(",") if m.strip()]:
    arrays = None
    variables = None
    for options, eval_options, dtype, impl, lstm, ndev in jax_variants(args):
      cfg = model_config(config, name, args, dtype=dtype, conv_impl=impl, lstm_impl=lstm)
      arrays = fake_arrays(args.batch, cfg, seed=0) if arrays is None else arrays
      table, wall, runner = profile_jax(cfg, arrays, args.steps, options, eval_options, ndev)
      variables = runner.variables() if variables is None else variables
      if "jax" in args.framework:
        key = f"{name}/jax" + ("" if len(jax_variants(args)) == 1 else
                               f":{options}:{eval_options}:{dtype}:{impl}:{lstm}:{ndev}")
        title = (f"{name}, JAX (XLA options {options} / eval {eval_options}, conv "
                 f"{cfg.model.get('conv_impl', 'auto')}, BLSTM "
                 f"{cfg.model.get('lstm_impl', 'auto')}, {dtype}), batch {args.batch}")
        texts.append(format_profile(title, table, wall, len(cfg.model.conv_features)))
        out["tables"][key] = {"rows": {k: dict(v) for k, v in table.items()}, "wall": wall}
        print(f"{key} done", file=sys.stderr, flush=True)
      if "jax" not in args.framework:  # torch takes JAX's initial weights, one JAX runner is enough
        break
    if "torch" in args.framework:
      cfg = model_config(config, name, args, dtype="float32", conv_impl="", lstm_impl="")
      table, wall = profile_torch(cfg, arrays, variables, args.steps)
      table.pop("_split_estimated", None)
      title = f"{name}, PyTorch {__import__('torch').__version__} eager, batch {args.batch}"
      texts.append(format_profile(title, table, wall, len(cfg.model.conv_features),
                                  estimated_split=True))
      out["tables"][f"{name}/torch"] = {"rows": {k: dict(v) for k, v in table.items()},
                                        "wall": wall}
  texts.append("~: PyTorch's input / kernel gradient split estimated from isolated "
               "convolution_backward calls (one oneDNN call computes both)")
  return "\n\n".join(texts), out


def main(argv: list[str] | None = None) -> dict[str, Any]:
  """Runs the timing table (or, with --profile, the per-layer tables), prints it under the load
  header (and the goal verdict if quiet), returns what `--json` writes."""
  args, config = parse_args(argv)
  if "bfloat16" in args.dtypes and "torch" in args.framework and args.torch_dtypes == ["float32"]:
    print("note: bfloat16 applies to JAX only; PyTorch runs float32 (--torch-dtype bfloat16 for "
          "autocast)", file=sys.stderr)
  if args.wait_quiet > 0:
    loadcheck.wait_for_quiet(args.wait_quiet, log=lambda m: print(m, file=sys.stderr, flush=True))
  monitor = loadcheck.LoadMonitor.start()
  text, out = (run_profile if args.profile else run_timing)(config, args)
  readings = monitor.stop()
  head = format_verdict(out.get("rows", []), readings)
  if "machine" in out:
    out["machine"]["load_average_end"] = (list(os.getloadavg()) if hasattr(os, "getloadavg")
                                          else None)
  out.update({"load": readings, "args": dict(vars(args)), "text": head + "\n" + text})
  print(out["text"], flush=True)
  if args.json:
    loadcheck.write_json(args.json, out)
  return out


if __name__ == "__main__":
  main()
