"""Where the time of a train step (and of inference) goes, per layer and direction, JAX and PyTorch.

  python benchmarks/profile_step.py [--config configs/ssa_crnn_r.py] [--models ssa_crnn,acrnn]
      [--batch 40] [--steps 1] [--framework jax,torch] [--xla-options tuned|default]
      [--conv-impl auto|xla|gemm|split] [--quick] [--json out.json]

`--quick`: batch 8 (the layers keep the paper's sizes), 1 step, for a first look in minutes.

One table per framework and model. Rows: each conv layer (both branches of SSA-CRNN summed), the
CRNN's glue (max-pool, leaky ReLU and mask multiplies outside the conv modules), dense + BN, the
BLSTM, attention / SSA, the head (embedding, classifiers, loss), the optimizer update with the Eq. 8
projection, and what could not be attributed. Columns: forward, input gradient ("backward" for
non-conv rows), kernel gradient, train-step total and share, then the inference (eval step)
forward and its share. Seconds per step.

* JAX: `jax.profiler.trace` of the compiled train step (the one `ssa_jax.train` runs, state
  donated) and of the eval step; the trace's per-thunk events (each names its HLO instruction) are
  mapped to layers through the compiled HLO's `op_name` metadata, which carries flax's module path
  (`jit(step)/transpose(jvp(SSACRNN))/crnn_sp/conv3/conv_general_dilated`): `transpose(` marks the
  backward pass, no `jvp(` the optimizer update; instructions without metadata (copies, transposes
  and fusions XLA made) take the scope of their users, else of their operands. A convolution in a
  conv layer's backward is the kernel gradient when its output's spatial size is the kernel's, the
  input gradient otherwise; a dot there (conv_impl="gemm") is a kernel gradient. Loops (the BLSTM
  scans) count through the thunks of their bodies, not the loop thunk itself.
* PyTorch: `torch.profiler` of `benchmarks/torch_reference.train_step` with every module's forward
  in a `record_function` scope (a module's own time excludes its child modules'); backward nodes
  (`autograd::engine::evaluate_function: ...`) are attributed to the module of the forward op with
  the same sequence number. oneDNN computes a conv layer's input and kernel gradients in one call
  (`ConvolutionBackward0`); its split between the two is estimated from an isolated
  `aten.convolution_backward` of the same shapes with one output at a time (marked `~`).
Event times are wall-clock durations of each op; XLA may run independent thunks concurrently, so
the sum of the ops can exceed the step's wall time (both are printed). Profiling adds overhead:
read the shares, and take absolute step times from benchmarks/step.py. The load header
(benchmarks/loadcheck.py) says whether the machine was quiet; a loaded run's shares still hold
roughly (both frameworks see the same load), its absolute seconds do not.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import glob
import os
import re
import shutil
import sys
import tempfile
import time
from typing import Any, Iterable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from benchmarks import loadcheck  # pylint: disable=g-import-not-at-top
from benchmarks import step as step_bench  # pylint: disable=g-import-not-at-top
from ssa_jax import train as ssa_train  # pylint: disable=g-import-not-at-top

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
  output's spatial size, "dot" for a dot, None otherwise."""
  ins = instrs[name]
  inner = [ins] + (_called_ops(instrs, by_comp, name) if ins.calls else [])
  for c in inner:
    if c.opcode == "convolution":
      spatial = tuple(c.dims[1:3]) if c.dims and len(c.dims) == 4 else None
      return "kernel" if spatial == tuple(kernel_size) else "input"
  return "dot" if any(i.opcode == "dot" for i in inner) else None


def classify_instrs(instrs: dict[str, Instr], kernel_size: tuple[int, int]
                    ) -> dict[str, tuple[str, str]]:
  """(row, column) of every instruction: column is one of DIRECTIONS or "update".

  In a conv layer's backward, the input-gradient convolution and what takes its scope from it
  are "input grad"; the kernel-gradient convolution (or GEMMs), the bias gradient and their
  transposes are "kernel grad".
  """
  by_comp: dict[str, list[Instr]] = collections.defaultdict(list)
  for ins in instrs.values():
    by_comp[ins.computation].append(ins)
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
                eval_options: str = "tuned"
                ) -> tuple[dict[str, dict[str, float]], dict[str, float], Any]:
  """Per-layer table, wall seconds {train, infer}, and the runner (for the torch weights)."""
  runner = step_bench.JaxRunner(cfg, batch, options, eval_options)
  train = runner.train_fn.lower(runner.state, runner.batch).compile()
  evaluate = runner.eval_fn.lower(runner.variables(), runner.batch).compile()
  state = {"s": runner.state}

  def train_once():
    state["s"], metrics = train(state["s"], runner.batch)
    jax.block_until_ready((state["s"], metrics))

  def infer_once():
    jax.block_until_ready(evaluate(ssa_train.variables_of(state["s"]), runner.batch))

  train_once()  # warm-up (allocations, thread pools)
  infer_once()
  train_hlo, infer_hlo = parse_hlo(train.as_text()), parse_hlo(evaluate.as_text())
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
  runner = step_bench.TorchRunner(cfg, batch, variables)
  runner.step()  # warm-up
  runner.infer()
  handles = _scoped(runner.model)
  try:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
      t0 = time.perf_counter()
      for _ in range(steps):
        runner.step()
      train_wall = (time.perf_counter() - t0) / steps
    train = torch_events_table(prof.events())
    with profile(activities=[ProfilerActivity.CPU]) as prof:
      t0 = time.perf_counter()
      for _ in range(steps):
        runner.infer()
      infer_wall = (time.perf_counter() - t0) / steps
    infer = torch_events_table(prof.events())
  finally:
    for h in handles:
      h.remove()
  table: dict[str, dict[str, float]] = collections.defaultdict(lambda: collections.defaultdict(float))
  for row, cols in train.items():
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


def main(argv: list[str] | None = None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="", help="config file (get_config()); default: base")
  parser.add_argument("--models", default="ssa_crnn,acrnn")
  parser.add_argument("--batch", type=int, default=40)
  parser.add_argument("--steps", type=int, default=1, help="profiled steps (after a warm-up)")
  parser.add_argument("--framework", default="jax,torch")
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--conv-impl", default="", help="JAX convolution (ssa_jax.ops); default: the config's")
  parser.add_argument("--xla-options", default="tuned",
                      help="train step: tuned (as train.py) or a name of ops.CPU_OPTION_SETS")
  parser.add_argument("--eval-options", default="tuned",
                      help="eval step: tuned (as train.py) or a name of ops.CPU_OPTION_SETS")
  parser.add_argument("--lstm-impl", default="", help="BLSTM (ops.LSTM_IMPLS); default: the config's")
  parser.add_argument("--quick", action="store_true", help="batch 8, 1 step")
  parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                      help="first wait up to this long for the 1-minute load average to fall "
                           "to 0.5 (benchmarks/loadcheck.py)")
  parser.add_argument("--json", default="")
  args = parser.parse_args(argv)
  if args.quick:
    args.batch, args.steps = 8, 1
  frameworks = [f.strip() for f in args.framework.split(",") if f.strip()]
  if set(frameworks) - {"jax", "torch"} or not frameworks:
    parser.error(f"--framework takes jax and/or torch, got {args.framework!r}")
  config = step_bench.load_config(args.config)
  if args.wait_quiet > 0:
    loadcheck.wait_for_quiet(args.wait_quiet, log=lambda m: print(m, file=sys.stderr, flush=True))
  monitor = loadcheck.LoadMonitor.start()
  out: dict[str, Any] = {"args": vars(args), "tables": {}}
  texts = []
  for name in [m.strip() for m in args.models.split(",") if m.strip()]:
    cfg = step_bench.model_config(config, name, args)
    arrays = step_bench.fake_arrays(args.batch, cfg, seed=0)
    n_convs = len(cfg.model.conv_features)
    runner = None
    if "jax" in frameworks or "torch" in frameworks:  # torch takes JAX's initial weights
      table, wall, runner = profile_jax(cfg, arrays, args.steps, args.xla_options,
                                        args.eval_options)
      if "jax" in frameworks:
        title = (f"{name}, JAX (XLA options {args.xla_options} / eval {args.eval_options}, conv "
                 f"{cfg.model.get('conv_impl', 'auto')}, BLSTM {cfg.model.get('lstm_impl', 'auto')}, "
                 f"{args.dtype}), batch {args.batch}")
        texts.append(format_profile(title, table, wall, n_convs))
        out["tables"][f"{name}/jax"] = {"rows": {k: dict(v) for k, v in table.items()}, "wall": wall}
        print(texts[-1] + "\n", flush=True)
    if "torch" in frameworks:
      table, wall = profile_torch(cfg, arrays, runner.variables(), args.steps)
      table.pop("_split_estimated", None)
      title = f"{name}, PyTorch {__import__('torch').__version__} eager, batch {args.batch}"
      texts.append(format_profile(title, table, wall, n_convs, estimated_split=True))
      out["tables"][f"{name}/torch"] = {"rows": {k: dict(v) for k, v in table.items()}, "wall": wall}
      print(texts[-1] + "\n", flush=True)
  readings = monitor.stop()
  out["load"] = readings
  head = loadcheck.header(readings)
  print(head)
  print("~: PyTorch's input / kernel gradient split estimated from isolated convolution_backward "
        "calls (one oneDNN call computes both)")
  out["text"] = head + "\n\n" + "\n\n".join(texts)
  if args.json:
    loadcheck.write_json(args.json, out)
  return out


if __name__ == "__main__":
  main()
