"""Is a difference between Winograd and XLA training runs bias or chaos? (issue 23, study P2)

  python -m benchmarks.winograd_divergence [--fold 0] [--epochs 4] [--eps 3e-6]

Not a timing. Trains quickstart SSA-CRNN-r on one fold three times from the same initial state
on the same batches: (a) XLA's convolution, (b) Winograd on every conv layer (`conv_impl=winograd`,
`winograd_min_channels=1`, the arm of STUDIES P2), (c) XLA's convolution with the initial
parameters perturbed by a relative `eps` (each entry times 1 + eps * N(0, 1); eps = 3e-6 is the
Winograd layers' measured float32 error, tests/test_winograd.py). Prints, at steps 1, 2, 5, 10,
... the relative distance ||p - p_a|| / ||p_a|| of all parameters of (b) and of (c) from (a),
and the training loss of each. If (b) moves away from (a) like (c) does, the end-of-training
differences between the arms are the chaos of training amplifying a 1e-6 difference (seed noise
in effect); a systematic error in Winograd's arithmetic would instead show (b) leaving (a) at
once, orders of magnitude faster than (c).
"""

from __future__ import annotations

import argparse
import dataclasses

import jax
from jax.flatten_util import ravel_pytree
import numpy as np

from ssa_jax import input_pipeline, parallel, train
from ssa_jax.configs import quickstart

CHECK_STEPS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


def flat(tree) -> np.ndarray:
  """All leaves in one float64 vector (norms of parameter differences)."""
  return np.asarray(ravel_pytree(tree)[0], np.float64)


def perturb(params, eps: float, seed: int = 0):
  """Each entry times 1 + eps * N(0, 1), in its own dtype (leaves drawn in tree order)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda a: (np.asarray(a) * (1.0 + eps * rng.standard_normal(np.shape(a))))
      .astype(np.asarray(a).dtype), params)


def run_arm(config, fd, fold: int, epochs: int, eps: float) -> dict[int, tuple[np.ndarray, float]]:
  """{step: (flattened params after it, its training loss)} at CHECK_STEPS."""
  mesh = parallel.make_mesh()
  program = train.build_program(config, fd, fold, mesh)
  state = program.init_fn(program.rng, program.example["x"], program.example["mask"])
  if eps > 0:
    state = dataclasses.replace(state, params=jax.device_put(
        perturb(jax.device_get(state.params), eps), parallel.replicated(mesh)))
  out, step = {}, 0
  for epoch in range(epochs):
    for local in input_pipeline.train_batches(
        fd.train, fd.num_classes, int(config.train.batch_size), seed=int(config.seed), fold=fold,
        epoch=epoch, class_names=fd.classes, sampling=str(config.train.batch_sampling)):
      state, metrics = program.train_fn(state, parallel.global_batch(local, mesh))
      step += 1
      if step in CHECK_STEPS:
        out[step] = (flat(jax.device_get(state.params)), float(metrics["loss"]))
  return out


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--fold", type=int, default=0)
  parser.add_argument("--epochs", type=int, default=4)
  parser.add_argument("--eps", type=float, default=3e-6)
  args = parser.parse_args(argv)
  arms = {"xla": ({"conv_impl": "xla"}, 0.0),
          "winograd": ({"conv_impl": "winograd", "winograd_min_channels": 1}, 0.0),
          "perturbed": ({"conv_impl": "xla"}, args.eps)}
  base = quickstart.get_config()
  fd = train.load_fold(base, args.fold)  # once: the arms differ only in the model's settings
  results = {}
  for name, (model_over, eps) in arms.items():
    config = base.copy_and_resolve_references()
    config.model.update(model_over)
    results[name] = run_arm(config, fd, args.fold, args.epochs, eps)
  rows = []
  print(f"quickstart SSA-CRNN-r fold {args.fold}, {args.epochs} epochs; relative parameter distance "
        f"from the XLA run (perturbed: initial parameters x (1 + {args.eps:g} N(0, 1)))")
  print("| step | Winograd vs XLA | perturbed XLA vs XLA | loss XLA | loss Winograd | loss perturbed |")
  print("|---:|---:|---:|---:|---:|---:|")
  for step in sorted(results["xla"]):
    ref, loss = results["xla"][step]
    dist = {k: float(np.linalg.norm(results[k][step][0] - ref) / np.linalg.norm(ref))
            for k in ("winograd", "perturbed")}
    rows.append({"step": step, **dist, "loss": {k: results[k][step][1] for k in results}})
    print(f"| {step} | {dist['winograd']:.2e} | {dist['perturbed']:.2e} | {loss:.4f} | "
          f"{results['winograd'][step][1]:.4f} | {results['perturbed'][step][1]:.4f} |")
  return rows


if __name__ == "__main__":
  main()
