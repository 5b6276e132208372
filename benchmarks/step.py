"""Train-step and inference throughput: the JAX step of ssa_jax.train against PyTorch eager.

  python benchmarks/step.py [--config configs/ssa_crnn_r.py] [--models ssa_crnn,acrnn]
      [--batch 40] [--steps 5] [--warmup 1] [--framework jax,torch] [--dtype float32,bfloat16]
      [--conv-impl auto,gemm,xla] [--lstm-impl flax,hoisted]
      [--xla-options tuned,default,eigen,eigen_conv] [--eval-options tuned,default,eigen,eigen_conv]
      [--wait-quiet SECONDS] [--json out.json]

For each model, at the config's sizes (default: the paper's) and the given batch:
* JAX: the train step users run, `ssa_jax.train.make_train_step` (jit, state donated), and the
  jitted `make_eval_step`; compile time = first call - median step; 0 recompilations expected
  (the jit cache size after all steps, minus 1).
* PyTorch: `tests/torch_reference.py` (same shapes and parameter count, NAdam, Eq. 8
  projection), eager, channels-last convolutions, threads = cores.
* Steps of the two frameworks alternate (JAX, torch, JAX, ...) so that a machine shared with other
  work slows both alike; each time is read after `block_until_ready()`. Median, min, max of
  `--steps` steps after `--warmup` steps.
* FLOPs are XLA's cost analysis of the plain (conv_impl="xla") step and forward, the same count
  for both frameworks; GFLOP/s = FLOPs / median time, against the float32 GEMM rate measured in
  the same run (2048^3 matmuls, best of 5, the higher of XLA's and torch's).
* data: one batch of the real input pipeline (`input_pipeline.train_batches` + `parallel.
  global_batch`) from an in-memory training set, as a fraction of the JAX step.
Prints a table; `--json` writes it with the machine's description.

Numbers that hold (benchmarks/loadcheck.py): the run records the 1-minute load average before and
after, the CPU model and core count, and the other processes' share of the CPU time during the
run. Only a quiet run (load average <= 0.5 at the start and others <= 10 % of the CPU time during
it) prints the verdict against the goals (JAX train step <= PyTorch's, JAX inference segments/s
>= PyTorch's, both >= 90 % of the GEMM rate); otherwise the table is headed "LOADED — no verdict".
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from benchmarks import loadcheck  # pylint: disable=g-import-not-at-top
from ssa_jax import input_pipeline, models, ops, parallel, train  # pylint: disable=g-import-not-at-top
from ssa_jax.config import base_config  # pylint: disable=g-import-not-at-top

NUM_SPEAKERS = 10  # IEMOCAP's ten speakers


def load_config(path: str | None):
  """`get_config()` of a config file, or the base config (paper-size SSA-CRNN-r)."""
  if not path:
    return base_config()
  if not os.path.isfile(path):
    raise SystemExit(f"{path}: no such config file")
  spec = importlib.util.spec_from_file_location("bench_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise SystemExit(f"{path}: a config file must define get_config()")
  return module.get_config()


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


def gemm_rates(n: int = 2048, rounds: int = 5) -> dict[str, float]:
  """Best float32 GEMM GFLOP/s of XLA and of torch on (n, n) @ (n, n)."""
  import torch  # pylint: disable=g-import-not-at-top
  a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), jnp.float32)
  mm = jax.jit(lambda u, v: u @ v)
  mm(a, a).block_until_ready()
  at = torch.from_numpy(np.array(a))
  at @ at
  best = {"xla": float("inf"), "torch": float("inf")}
  for _ in range(rounds):
    t0 = time.perf_counter()
    mm(a, a).block_until_ready()
    best["xla"] = min(best["xla"], time.perf_counter() - t0)
    t0 = time.perf_counter()
    at @ at
    best["torch"] = min(best["torch"], time.perf_counter() - t0)
  return {k: 2 * n ** 3 / v / 1e9 for k, v in best.items()}


class JaxRunner:
  """The project's jitted train and eval steps on one fixed batch.

  options / eval_options: the train / eval step's XLA options, "tuned" (`ops.
  step_compiler_options()`, as train.py, bin.evaluate and bin.predict compile both steps) or a
  name of `ops.CPU_OPTION_SETS` ("default": XLA's defaults).
  """

  def __init__(self, cfg, batch: dict[str, np.ndarray], options: str = "default",
               eval_options: str = "tuned"):
    self.mesh = parallel.make_mesh()
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


def nominal_flops(cfg, runner: JaxRunner) -> tuple[float, float]:
  """XLA cost-analysis FLOPs of the train step and the forward with XLA's plain convolution."""
  plain = cfg.copy_and_resolve_references()
  plain.model.conv_impl = "xla"
  model = models.build_model(plain.model)
  step = train.make_train_step(model, runner.tx, cfg.train.constraint, runner.mesh)
  evaluate = train.make_eval_step(model, runner.mesh)
  abstract = lambda *args: jax.tree.map(  # noqa: E731
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), args)
  flops = lambda f, *args: float(f.lower(*abstract(*args)).cost_analysis()["flops"])  # noqa: E731
  return (flops(step, runner.state, runner.batch),
          flops(evaluate, runner.variables(), runner.batch))


class TorchRunner:
  """tests/torch_reference.py on the same batch and initial weights, channels-last."""

  def __init__(self, cfg, batch: dict[str, np.ndarray], variables: Any):
    import torch  # pylint: disable=g-import-not-at-top
    from tests import torch_reference as tr  # pylint: disable=g-import-not-at-top
    self.torch, self.tr = torch, tr
    torch.set_num_threads(os.cpu_count() or 1)
    x = batch["x"]
    self.model = tr.build_torch_model(cfg.model, x.shape[1], x.shape[2], x.shape[3])
    tr.load_flax_variables(self.model, jax.device_get(variables))
    self.model = self.model.to(memory_format=torch.channels_last)
    self.opt = tr.make_optimizer(self.model, float(cfg.train.learning_rate))
    self.constraint = cfg.train.constraint
    self.x = torch.from_numpy(np.ascontiguousarray(x))  # (B, T, M, C): NCHW view is channels-last
    self.mask = torch.from_numpy(batch["mask"])
    self.label = torch.from_numpy(batch["label"]).long()
    self.speaker = torch.from_numpy(batch["speaker"]).long()
    self.loss = float("nan")

  def step(self) -> None:
    self.loss = self.tr.train_step(self.model, self.opt, self.x, self.mask, self.label,
                                   self.speaker, self.constraint)

  def infer(self) -> None:
    self.model.eval()
    with self.torch.inference_mode():
      self.model(self.x, self.mask)

  def recompilations(self) -> int:
    return 0


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


def bench_model(config, name: str, args, gemm: float) -> list[dict[str, Any]]:
  cfg = model_config(config, name, args, dtype="float32", conv_impl="", lstm_impl="")
  arrays = fake_arrays(max(4 * args.batch, 64), cfg, seed=0)
  batch = {k: v[:args.batch] for k, v in arrays.items()}
  runners: dict[str, Any] = {}
  cfgs: dict[str, Any] = {}
  variants = itertools.product(args.xla_options, args.eval_options, args.dtypes,
                               args.conv_impls, args.lstm_impls)
  for options, eval_options, dtype, impl, lstm in variants:  # all start from the same weights
    key = f"jax:{options}:{eval_options}:{dtype}:{impl}:{lstm}"
    cfgs[key] = model_config(config, name, args, dtype=dtype, conv_impl=impl, lstm_impl=lstm)
    runners[key] = JaxRunner(cfgs[key], batch, options, eval_options)
  first_jax = next(iter(runners.values()))
  flops_step, flops_fwd = nominal_flops(cfg, first_jax)
  if "torch" in args.framework:
    runners["torch"] = TorchRunner(cfg, batch, first_jax.variables())
  if "jax" not in args.framework:
    runners = {"torch": runners["torch"]}
  first = {k: timed(r.step) for k, r in runners.items()}  # JAX: compile + one step
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
  data_s = data_time(cfg, arrays, 5, parallel.make_mesh())
  rows = []
  for k, r in runners.items():
    st, inf = stats(steps[k]), stats(infers[k])
    is_jax = k.startswith("jax")
    rcfg = cfgs.get(k, cfg)
    rows.append({
        "model": name, "framework": k.split(":")[0], "batch": args.batch,
        "dtype": str(rcfg.model.dtype) if is_jax else "float32",
        "xla_options": r.options if is_jax else "",
        "eval_options": r.eval_options if is_jax else "",
        "lstm_impl": (ops.resolve_lstm_impl(str(rcfg.model.get("lstm_impl", "auto"))) if is_jax
                      else "torch"),
        "conv_impl": (ops.resolve_impl(str(rcfg.model.get("conv_impl", "auto"))) if is_jax
                      else "torch"),
        "compile_s": (first[k] - st["median"] + first_infer[k] - inf["median"]) if is_jax
                     else 0.0,
        "step_s": st, "step_cpu_s": statistics.median(cpu[k]), "step_gflops": flops_step / st["median"] / 1e9,
        "infer_s": inf, "segments_per_s": args.batch / inf["median"],
        "infer_gflops": flops_fwd / inf["median"] / 1e9,
        "step_tflop": flops_step / 1e12, "infer_tflop": flops_fwd / 1e12,
        "data_s": data_s if is_jax else None,
        "recompilations": r.recompilations(), "loss": r.loss,
    })
    rows[-1]["step_pct_gemm"] = 100 * rows[-1]["step_gflops"] / gemm
    rows[-1]["infer_pct_gemm"] = 100 * rows[-1]["infer_gflops"] / gemm
  return rows


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
          "devices": [str(d) for d in jax.devices()], "python": platform.python_version(),
          "jax": jax.__version__, "jaxlib": jaxlib.__version__, "flax": flax.__version__,
          "numpy": np.__version__, "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")}
  try:
    import torch  # pylint: disable=g-import-not-at-top
    info["torch"] = torch.__version__
    info["torch_threads"] = torch.get_num_threads()
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
  torch_rows = {r["model"]: r for r in rows if r["framework"] == "torch"}
  checks = []
  for j in rows:
    t = torch_rows.get(j["model"])
    if j["framework"] != "jax" or t is None:
      continue
    name = (f"{j['model']} ({j['xla_options']} / {j.get('eval_options', '')}, "
            f"{j.get('conv_impl', '')}, {j.get('lstm_impl', '')}, {j['dtype']})")
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
  head = ("| model | framework | conv | BLSTM | XLA options (train / eval) | compile s | step median s (min-max) | step GFLOP/s | "
          "% GEMM | CPU s/step | infer s | segments/s | infer GFLOP/s | % GEMM | data s (% step) | "
          "recompiles |")
  lines = [head, "|" + "---|" * (head.count("|") - 1)]
  for r in rows:
    st, inf = r["step_s"], r["infer_s"]
    data = (f"{r['data_s']:.3f} ({100 * r['data_s'] / st['median']:.1f} %)"
            if r["data_s"] is not None else "")
    lines.append(
        f"| {r['model']} | {r['framework']} | {r['conv_impl']}"
        f"{'' if r['framework'] == 'torch' or r['dtype'] == 'float32' else ' ' + r['dtype']} | "
        f"{r.get('lstm_impl', '')} | "
        f"{(r['xla_options'] + ' / ' + r.get('eval_options', '')) if r['framework'] == 'jax' else ''} | "
        f"{r['compile_s']:.1f} | "
        f"{st['median']:.2f} ({st['min']:.2f}-{st['max']:.2f}) | {r['step_gflops']:.0f} | "
        f"{r['step_pct_gemm']:.0f} | {r['step_cpu_s']:.1f} | {inf['median']:.2f} | {r['segments_per_s']:.2f} | "
        f"{r['infer_gflops']:.0f} | {r['infer_pct_gemm']:.0f} | {data} | {r['recompilations']} |")
  lines.append("")
  torch_rows = {r["model"]: r for r in rows if r["framework"] == "torch"}
  for j in rows:
    t = torch_rows.get(j["model"])
    if j["framework"] == "jax" and t is not None:
      lines.append(
          f"{j['model']} (XLA options {j['xla_options']} / {j.get('eval_options', '')}, conv "
          f"{j['conv_impl']}, BLSTM {j.get('lstm_impl', '')}, {j['dtype']}): "
          f"JAX / PyTorch train-step time "
          f"{j['step_s']['median'] / t['step_s']['median']:.2f} (min / min "
          f"{j['step_s']['min'] / t['step_s']['min']:.2f}); inference segments/s JAX / PyTorch "
          f"{j['segments_per_s'] / t['segments_per_s']:.2f}; {j['step_tflop']:.2f} TFLOP per "
          f"step, {j['infer_tflop']:.2f} per forward")
  lines.append("CPU s/step: process CPU seconds per step (both cores busy: about 2x the wall "
               "time; PyTorch's OpenMP threads also count while they spin)")
  lines.append(f"float32 GEMM rate: XLA {gemm['xla']:.0f} GFLOP/s, torch {gemm['torch']:.0f} "
               f"GFLOP/s (% GEMM uses the higher)")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="", help="config file (get_config()); default: base")
  parser.add_argument("--models", default="ssa_crnn,acrnn")
  parser.add_argument("--batch", type=int, default=40)
  parser.add_argument("--steps", type=int, default=5, help="timed steps (after the warm-up)")
  parser.add_argument("--warmup", type=int, default=1, help="untimed steps, the first compiles")
  parser.add_argument("--framework", default="jax,torch")
  parser.add_argument("--dtype", default="float32",
                      help="compute dtype(s) of JAX's convs and matmuls, comma-separated JAX "
                           "runners: float32 and/or bfloat16 (params and losses float32)")
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
  args.framework = [f.strip() for f in args.framework.split(",") if f.strip()]
  bad = set(args.framework) - {"jax", "torch"}
  if bad or not args.framework:
    parser.error(f"--framework takes jax and/or torch, got {sorted(bad) or 'nothing'}")
  args.xla_options = [o.strip() for o in args.xla_options.split(",") if o.strip()]
  if set(args.xla_options) - set(ops.OPTION_NAMES) or not args.xla_options:
    parser.error(f"--xla-options takes {', '.join(ops.OPTION_NAMES)}, got {args.xla_options}")
  args.eval_options = [o.strip() for o in args.eval_options.split(",") if o.strip()]
  if set(args.eval_options) - set(ops.OPTION_NAMES) or not args.eval_options:
    parser.error(f"--eval-options takes {', '.join(ops.OPTION_NAMES)}, got {args.eval_options}")
  args.lstm_impls = [c.strip() for c in args.lstm_impl.split(",")] if args.lstm_impl else [""]
  if set(args.lstm_impls) - set(ops.LSTM_IMPLS) - {""}:
    parser.error(f"--lstm-impl takes {', '.join(ops.LSTM_IMPLS)}, got {args.lstm_impl!r}")
  if args.steps < 1 or args.warmup < 1 or args.batch < 1:
    parser.error("--steps, --warmup and --batch must be >= 1")
  args.dtypes = [d.strip() for d in args.dtype.split(",") if d.strip()]
  if set(args.dtypes) - {"float32", "bfloat16"} or not args.dtypes:
    parser.error(f"--dtype takes float32 and/or bfloat16, got {args.dtype!r}")
  args.dtype = args.dtypes[0]
  args.conv_impls = [c.strip() for c in args.conv_impl.split(",")] if args.conv_impl else [""]
  if set(args.conv_impls) - set(ops.IMPLS) - {""}:
    parser.error(f"--conv-impl takes {', '.join(ops.IMPLS)}, got {args.conv_impl!r}")
  if "bfloat16" in args.dtypes and "torch" in args.framework:
    print("note: bfloat16 applies to JAX only; PyTorch runs float32")
  config = load_config(args.config)
  if args.batch % int(config.model.num_classes):  # the input pipeline's balanced batches
    parser.error(f"--batch must be a multiple of the number of classes "
                 f"({int(config.model.num_classes)}): the data-time row uses emotion-balanced "
                 f"batches")
  if args.wait_quiet > 0:
    loadcheck.wait_for_quiet(args.wait_quiet, log=lambda m: print(m, file=sys.stderr, flush=True))
  monitor = loadcheck.LoadMonitor.start()
  info = machine()
  gemm = gemm_rates()
  rate = max(gemm.values())
  rows = []
  for name in [m.strip() for m in args.models.split(",") if m.strip()]:
    rows.extend(bench_model(config, name, args, rate))
    print(f"{name} done", flush=True)
  readings = monitor.stop()
  info["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
  table = format_verdict(rows, readings) + "\n" + format_table(rows, gemm)
  print(table)
  out = {"machine": info, "load": readings, "gemm_gflops": gemm,
         "args": {k: v for k, v in vars(args).items()}, "rows": rows, "table": table}
  if args.json:
    loadcheck.write_json(args.json, out)
  return out


if __name__ == "__main__":
  main()
