"""Subprocess worker for tests/test_parallel.py (not a test module): one JAX process.

The device count must be fixed before JAX starts, so each configuration runs in its own process:

  XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/_dp_worker.py --steps OUT.npz
  python tests/_dp_worker.py --steps OUT.npz --fold OUT.json --workdir DIR [--resume] \\
      --coordinator 127.0.0.1:PORT --num_processes 2 --process_id I   # one of several processes

--steps: the real jitted train step (`train.make_train_step`, in `chex.assert_max_traces(n=1)`)
       over `parallel.make_mesh()` for 5 fixed balanced batches of the tiny SSA-CRNN-r; each process
       feeds only its rows (`input_pipeline.train_batches(process_index=...)` +
       `parallel.global_batch`). Then the evaluation step's posteriors of every segment, gathered
       with `parallel.to_host`. Writes losses (5,), posteriors (72, 4), the step's compile count,
       device / process counts and every parameter leaf (this process's copy) to OUT.npz.
--fold: `train.train_and_evaluate` for 2 epochs on a small fake dataset into --workdir (with
       --resume: 1 epoch, then a second call resumes from its checkpoint for the 2nd); on processes
       other than 0 the file writers of ssa_jax.train raise, so a write there fails the run.
       Writes result.json's content (without wall-clock timing) to OUT.json.
--cache_dir: JAX's persistent compilation cache (the fold's train step reuses the steps' program).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]  # the repository (ssa_jax) and tests/ (conftest)

# pylint: disable=wrong-import-position
import chex  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from conftest import fake_dataset, tiny_config  # noqa: E402  # (sets a compilation cache dir)
from ssa_jax import distributed, features, inference, input_pipeline, models, parallel, train  # noqa: E402
from ssa_jax import io as io_lib  # noqa: E402
# pylint: enable=wrong-import-position

STEPS = 5
EVAL_BATCH = 16  # 72 segments: the last evaluation batch is padded
_T0 = time.time()


def _mark(what: str) -> None:
  """Progress on stderr (the test shows it when a worker fails or hangs)."""
  print(f"[worker {os.getpid()}] {what}: {time.time() - _T0:.1f} s wall, "
        f"{time.process_time():.1f} s cpu", file=sys.stderr, flush=True)



def _args() -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--steps")
  p.add_argument("--fold")
  p.add_argument("--workdir")
  p.add_argument("--resume", action="store_true")
  p.add_argument("--cache_dir")
  p.add_argument("--coordinator")
  p.add_argument("--num_processes", type=int)
  p.add_argument("--process_id", type=int)
  return p.parse_args()


def _initial_state(model, tx, x, mask):
  """A fixed TrainState from a numpy RNG (the shapes from `jax.eval_shape(model.init)`).

  The same on every process and device count, and without compiling `model.init` (a forward pass)
  in every subprocess; the step under test does not care how the parameters were initialised.
  """
  shapes = jax.eval_shape(lambda: model.init({"params": jax.random.PRNGKey(0)}, x, mask,
                                             train=False))
  rng = np.random.default_rng(0)

  def value(path, leaf):
    name = jax.tree_util.keystr(path)
    if name.endswith("['var']") or name.endswith("['scale']"):
      return np.ones(leaf.shape, leaf.dtype)
    if name.endswith("['mean']"):
      return np.zeros(leaf.shape, leaf.dtype)
    std = 1.0 / np.sqrt(np.prod(leaf.shape[:-1])) if len(leaf.shape) > 1 else 0.1
    return (std * rng.standard_normal(leaf.shape)).astype(leaf.dtype)

  variables = jax.tree_util.tree_map_with_path(value, shapes)
  params = variables["params"]
  return train.TrainState(step=np.int32(0), params=params, batch_stats=variables["batch_stats"],
                          opt_state=tx.init(params),
                          bad_step=np.int32(-1))


def _steps(out: str) -> None:
  cfg = tiny_config()
  # Near-flat directions get gradients of float-rounding size whose sign depends on the
  # summation order (here a last-conv bias whose channel stays in the leaky ReLU's linear part,
  # so the batch norm after the dense layer cancels it: 1 vs 8 devices differ by 3e-3 on it after
  # 5 steps at eps=1e-8, and the posteriors by 1.7e-4). NAdam with eps=1e-8 turns such noise into
  # steps of +-learning_rate; eps=1e-3 keeps it at the noise level, so the comparison measures
  # the data parallelism.
  cfg.train.eps = 1e-3
  ds = fake_dataset()
  cfg.model.num_speakers = len(ds.speaker_names)
  batch_size = int(cfg.train.batch_size)
  model = models.build_model(cfg.model)
  tx = train.make_optimizer(cfg.train)
  mesh = parallel.make_mesh()
  parallel.check_batch_size(batch_size, mesh)
  parallel.check_batch_size(EVAL_BATCH, mesh)
  utt = ds.seg_utt
  stats = features.fit_speaker_stats(ds.segments, ds.mask, ds.speakers[utt])
  arrays = {"x": features.normalize(ds.segments, ds.mask, ds.speakers[utt], stats),
            "mask": ds.mask, "label": ds.labels[utt], "speaker": ds.speakers[utt]}
  state = jax.device_put(
      _initial_state(model, tx, arrays["x"][:batch_size], arrays["mask"][:batch_size]),
      parallel.replicated(mesh))
  _mark("initial state placed")
  chex.clear_trace_counter()
  step = train.make_train_step(model, tx, cfg.train.constraint, mesh, max_traces=1)
  batches = input_pipeline.train_batches(
      arrays, len(ds.classes), batch_size, seed=0, fold=0, epoch=0,
      process_index=jax.process_index(), process_count=jax.process_count())
  losses = []
  for _, local in zip(range(STEPS), batches):
    assert local["x"].shape[0] == batch_size // jax.process_count(), local["x"].shape
    state, m = step(state, parallel.global_batch(local, mesh))
    losses.append(m["loss"])
  losses = np.asarray([float(l) for l in jax.device_get(losses)], np.float64)
  _mark(f"{STEPS} train steps")
  # Evaluation-mode posteriors of every segment, in segment order (the last batch padded): a
  # process that fed or gathered the wrong rows would put another segment's posterior here.
  eval_fn = inference.make_eval_step(model, mesh)
  probs = np.concatenate([
      parallel.to_host(eval_fn(inference.variables_of(state),
                                   parallel.global_batch(local, mesh))["probs"])[:real]
      for local, real in input_pipeline.eval_batches(arrays, EVAL_BATCH, jax.process_index(),
                                                     jax.process_count())])
  leaves = jax.tree_util.tree_flatten_with_path(state.params)[0]
  params = {f"param{jax.tree_util.keystr(k)}": np.asarray(v.addressable_data(0))
            for k, v in leaves}
  np.savez(out, losses=losses, probs=probs,
           cache_size=step._cache_size(),  # pylint: disable=protected-access
           step=int(state.step), bad_step=int(state.bad_step),
           mesh_size=mesh.devices.size, process_count=jax.process_count(),
           local_devices=jax.local_device_count(), **params)


def _fold(out: str, workdir: str, resume: bool) -> None:
  if jax.process_index() != 0:
    def refuse(path, *_, **__):
      raise AssertionError(f"process {jax.process_index()} wrote {path}")
    io_lib.write_with = refuse  # every atomic write of ssa_jax.io goes through it
    io_lib.append_jsonl = refuse
  fold_data = lambda: fake_dataset(per_cell=2)  # noqa: E731  # 4 batches per epoch
  cfg = tiny_config()
  cfg.train.eps = 1e-3  # as in _steps (and the same compiled step: a persistent-cache hit)
  cfg.train.eval_batch_size = EVAL_BATCH
  if resume:
    cfg.train.epochs = 1
    train.train_and_evaluate(cfg, workdir, 0, dataset=fold_data())
    _mark("fold: epoch 1")
  cfg.train.epochs = 2
  result = train.train_and_evaluate(cfg, workdir, 0, dataset=fold_data())
  result.pop("timing")
  result["process_count"] = jax.process_count()
  result["device_count"] = jax.device_count()
  with open(out, "w") as f:
    json.dump(result, f)


def main() -> None:
  a = _args()
  if a.cache_dir:
    jax.config.update("jax_compilation_cache_dir", a.cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  distributed.initialize(a.coordinator, a.num_processes, a.process_id,
                         mode="auto" if a.coordinator else "off", timeout_s=60)
  _mark(f"started, {distributed.describe()}")
  if a.steps:
    _steps(a.steps)
    _mark("steps done")
  if a.fold:
    _fold(a.fold, a.workdir, a.resume)
    _mark("fold done")
  if jax.process_count() > 1:
    jax.distributed.shutdown()


if __name__ == "__main__":
  main()
