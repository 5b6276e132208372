"""Data parallelism over devices and processes (docs/DESIGN.md §6): results must not depend on either.

The device count is fixed when JAX starts, so each configuration runs `tests/_dp_worker.py` in its
own subprocess (fake CPU devices via XLA_FLAGS; processes joined with `jax.distributed` over
127.0.0.1, CPU collectives over gloo):
  * 8 devices vs 1 device: the same 5 train steps (the real jitted step over `parallel.make_mesh`,
    `chex.assert_max_traces(n=1)`) give the same losses, parameters and evaluation posteriors;
  * 2 processes x 2 devices vs 1 process x 4 devices: the same, every process holds the same
    state, and a whole fold (`train.train_and_evaluate`, 1 epoch, then resumed from the orbax
    checkpoint for a 2nd) gives the same result, written by process 0 only.
Workers run under a deadline and are killed in a `finally`, on failure too. Also in-process: the
rule that decides when `jax.distributed.initialize` is called, the batch-size error, the CLI flags.

Tolerances: "relative" for parameters is max |difference| / max |parameter| over the whole tree.
Excluded from it (and checked against a loose bound instead) are the biases of the per-frame
dense layers, which feed batch norm: their gradient is 0 up to float rounding, so where they go
depends on summation order, not on the parallelism (see `_dp_worker._steps`).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import types

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given, settings

from ssa_jax import distributed, parallel

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(REPO, "tests", "_dp_worker.py")
DEADLINE_S = 300  # per group of workers; they normally take 10-40 s each
RTOL = 1e-5
STEPS = 5


# ----------------------------------------------------------------------------------------------
# Running workers
# ----------------------------------------------------------------------------------------------


def _free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices: int) -> dict[str, str]:
  """CPU only, `devices` fake devices; O0 codegen (only compile time changes, on every side)."""
  env = dict(os.environ)
  flags = [f for f in env.get("XLA_FLAGS", "").split()
           if not f.startswith(("--xla_force_host_platform_device_count",
                                "--xla_backend_optimization_level"))]
  flags += [f"--xla_force_host_platform_device_count={devices}",
            "--xla_backend_optimization_level=0"]
  env.update(XLA_FLAGS=" ".join(flags), JAX_PLATFORMS="cpu")
  return env


def _run(jobs: list[tuple[list[str], int]], logdir, deadline_s: float = DEADLINE_S) -> None:
  """Runs worker jobs [(args, devices)] at the same time; all must exit 0 before the deadline.

  Every process is killed in the `finally`, whatever happens (timeout, failure, interrupt).
  """
  procs, logs = [], []
  try:
    for i, (args, devices) in enumerate(jobs):
      log = open(os.path.join(logdir, f"worker{i}.log"), "w+")  # pylint: disable=R1732
      logs.append(log)
      procs.append(subprocess.Popen([sys.executable, WORKER, *args], cwd=REPO, env=_env(devices),
                                    stdout=log, stderr=subprocess.STDOUT))
    end = time.monotonic() + deadline_s
    for p in procs:
      try:
        p.wait(timeout=max(end - time.monotonic(), 0.1))
      except subprocess.TimeoutExpired:
        break
    failed = [i for i, p in enumerate(procs) if p.poll() != 0]
    if failed:
      tails = []
      for i in failed:
        logs[i].seek(0)
        text = logs[i].read().replace("\r", "\n")
        state = "timed out" if procs[i].poll() is None else f"exit code {procs[i].poll()}"
        tails.append(f"--- worker {i} {jobs[i][0]} ({state}):\n" + text[-3000:])
      pytest.fail("worker(s) failed:\n" + "\n".join(tails))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
      p.wait()
    for log in logs:
      log.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """All configurations at once (they fill the cores while the two gloo processes wait):
  one process each with 1 device, 8 devices (steps) and 4 devices (steps + a 2-epoch fold), and
  two processes x 2 devices (steps, then the fold trained 1 epoch and resumed for a 2nd)."""
  d = tmp_path_factory.mktemp("dp")
  port = _free_port()
  multi = ["--workdir", str(d / "run2x2"), "--resume",
           "--coordinator", f"127.0.0.1:{port}", "--num_processes", "2"]
  _run([(["--steps", str(d / f"p{i}.npz"), "--fold", str(d / f"p{i}.json"),
          "--cache_dir", str(d / f"xla_cache{i}"), "--process_id", str(i), *multi], 2)
        for i in range(2)] + [
      (["--steps", str(d / "d1.npz")], 1),
      (["--steps", str(d / "d8.npz")], 8),
      (["--steps", str(d / "d4.npz"), "--fold", str(d / "d4.json"), "--workdir", str(d / "run4"),
        "--cache_dir", str(d / "xla_cache")], 4)], str(d))
  return d


# ----------------------------------------------------------------------------------------------
# Comparisons
# ----------------------------------------------------------------------------------------------


def _load(path) -> dict[str, np.ndarray]:
  with np.load(path) as z:
    return {k: z[k] for k in z.files}


def _params(run: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  return {k[len("param"):]: v.astype(np.float64) for k, v in run.items() if k.startswith("param")}


def _max_rel(a: np.ndarray, b: np.ndarray) -> float:
  return float(np.max(np.abs(a - b) / np.abs(a)))


def _assert_same_training(ref: dict[str, np.ndarray], run: dict[str, np.ndarray]) -> dict:
  """Losses and posteriors to RTOL, parameters to RTOL of the largest one; returns the numbers."""
  assert int(ref["step"]) == int(run["step"]) == STEPS
  assert int(ref["bad_step"]) == int(run["bad_step"]) == -1
  assert int(ref["cache_size"]) == int(run["cache_size"]) == 1  # and assert_max_traces(n=1) held
  np.testing.assert_allclose(run["losses"], ref["losses"], rtol=RTOL)
  assert ref["probs"].shape == (72, 4)  # every segment, in order (the last batch was padded)
  np.testing.assert_allclose(run["probs"], ref["probs"], rtol=RTOL)
  p_ref, p_run = _params(ref), _params(run)
  assert sorted(p_ref) == sorted(p_run)
  scale = max(np.abs(v).max() for v in p_ref.values())
  diffs = {k: float(np.abs(p_run[k] - p_ref[k]).max()) for k in p_ref}
  worst = max((d, k) for k, d in diffs.items())
  assert worst[0] <= RTOL * scale, (worst, scale)
  return {"loss": _max_rel(ref["losses"], run["losses"]), "probs": _max_rel(ref["probs"],
          run["probs"]), "params": worst[0] / scale, "worst": worst[1]}


def test_8_devices_train_like_1_device(runs):
  one, eight = _load(runs / "d1.npz"), _load(runs / "d8.npz")
  assert (int(one["mesh_size"]), int(eight["mesh_size"])) == (1, 8)
  assert int(eight["local_devices"]) == 8 and int(eight["process_count"]) == 1
  assert np.ptp(one["losses"]) > 1e-3  # the steps really trained: the loss moves
  print("1 vs 8 devices, max relative differences:", _assert_same_training(one, eight))


def test_2_processes_train_like_1_process_with_4_devices(runs):
  ref = _load(runs / "d4.npz")
  p0, p1 = _load(runs / "p0.npz"), _load(runs / "p1.npz")
  assert int(ref["process_count"]) == 1 and int(ref["local_devices"]) == 4
  for p in (p0, p1):
    assert (int(p["process_count"]), int(p["local_devices"]), int(p["mesh_size"])) == (2, 2, 4)
  # Both processes hold the same replicated state and saw the same metrics and posteriors.
  assert sorted(p0) == sorted(p1)
  for k in p0:
    np.testing.assert_array_equal(p0[k], p1[k], err_msg=k)
  print("1 process x 4 vs 2 processes x 2, max relative differences:",
        _assert_same_training(ref, p0))


def test_2_process_fold_resumes_and_matches_1_process(runs):
  with open(runs / "d4.json") as f:
    ref = json.load(f)
  with open(runs / "p0.json") as f:
    r0 = json.load(f)
  with open(runs / "p1.json") as f:
    r1 = json.load(f)
  assert (ref["process_count"], ref["device_count"]) == (1, 4)
  assert (r0["process_count"], r0["device_count"]) == (2, 4)
  assert r0 == r1  # every process computes the same result (gathered posteriors)
  loss_ref = ref.pop("last_train_loss")
  loss = r0.pop("last_train_loss")
  assert loss == pytest.approx(loss_ref, rel=RTOL)
  for r in (ref, r0):
    r.pop("process_count")
  assert r0 == ref  # best epoch, UAR, WA, segment UAR, confusion, counts, config
  # Only process 0 wrote (the workers' other processes refuse to), once per evaluation: epoch 1
  # by the first call, epoch 2 by the call that resumed from the epoch-1 checkpoint.
  fold = runs / "run2x2" / "fold0"
  lines = [json.loads(l) for l in (fold / "metrics.jsonl").read_text().splitlines()]
  assert [l["epoch"] for l in lines] == [1, 2]
  ref_lines = [json.loads(l) for l in
               (runs / "run4" / "fold0" / "metrics.jsonl").read_text().splitlines()]
  np.testing.assert_allclose([l["train_loss"] for l in lines],
                             [l["train_loss"] for l in ref_lines], rtol=RTOL)
  written = json.loads((fold / "result.json").read_text())
  assert written["uar"] == r0["uar"] and written["confusion"] == r0["confusion"]
  steps = sorted(int(s) for s in os.listdir(fold / "checkpoints") if s.isdigit())
  assert lines[-1]["step"] in steps and written["best_step"] in steps


# ----------------------------------------------------------------------------------------------
# When jax.distributed.initialize is called (no JAX runtime involved)
# ----------------------------------------------------------------------------------------------

SLURM = {"SLURM_JOB_ID": "77", "SLURM_STEP_NODELIST": "node[1-2]", "SLURM_NTASKS": "2",
         "SLURM_PROCID": "1", "SLURM_LOCALID": "0"}


@pytest.mark.parametrize("environ, tpu_vm, cluster", [
    ({}, False, None),
    ({"HOME": "/root", "SLURM_JOB_ID": "77"}, False, None),  # a Slurm job, not a task step
    (SLURM, False, "slurm"),
    ({**SLURM, "SLURM_NTASKS": "1"}, False, None),  # one task: nothing to coordinate
    ({"OMPI_MCA_orte_hnp_uri": "1531576320.0;tcp://10.0.0.1:34911"}, False, "openmpi"),
    ({"OMPI_MCA_orte_hnp_uri": "x", "OMPI_COMM_WORLD_SIZE": "1"}, False, None),
    ({"TPU_WORKER_HOSTNAMES": "t1,t2"}, False, "tpu"),
    ({"TPU_WORKER_HOSTNAMES": "t1"}, False, None),
    ({"MEGASCALE_COORDINATOR_ADDRESS": "t1:8080"}, False, "tpu"),
    ({}, True, "tpu"),  # JAX found a Cloud TPU VM (hosts from the GCE metadata)
])
def test_auto_mode_initializes_only_on_a_detected_cluster(environ, tpu_vm, cluster):
  assert distributed.detect_cluster(environ, tpu_vm) == cluster
  p = distributed.plan(environ=environ, cloud_tpu_vm=tpu_vm)
  assert p.kwargs == (None if cluster is None else {})  # {}: initialize() with no arguments
  assert distributed.plan(mode="on", environ=environ, cloud_tpu_vm=tpu_vm).kwargs == {}
  assert distributed.plan(mode="off", environ=environ, cloud_tpu_vm=tpu_vm).kwargs is None


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 64), i=st.integers(0, 70), host=st.sampled_from(
    ["127.0.0.1", "node-3.cluster", "[::1]", "tpu-vm-0"]), port=st.integers(1, 65535))
def test_explicit_flags_are_passed_through_or_refused(n, i, host, port):
  coordinator = f"{host}:{port}"
  if i < n:
    p = distributed.plan(coordinator, n, i, environ={}, cloud_tpu_vm=False)
    assert p.kwargs == {"coordinator_address": coordinator, "num_processes": n, "process_id": i}
  else:
    with pytest.raises(distributed.DistributedError, match="must be below --num_processes"):
      distributed.plan(coordinator, n, i, environ={}, cloud_tpu_vm=False)


@pytest.mark.parametrize("kwargs, message", [
    ({"coordinator": "127.0.0.1:1234"}, "--num_processes, --process_id missing"),
    ({"num_processes": 2, "process_id": 0}, "--coordinator missing"),
    ({"coordinator": "localhost", "num_processes": 2, "process_id": 0}, "expected HOST:PORT"),
    ({"coordinator": "h:0", "num_processes": 2, "process_id": 0}, "expected HOST:PORT"),
    ({"coordinator": "h:70000", "num_processes": 2, "process_id": 0}, "expected HOST:PORT"),
    ({"coordinator": "h:1", "num_processes": 0, "process_id": 0}, "at least 1"),
    ({"coordinator": "h:1", "num_processes": 2, "process_id": -1}, "at least 0"),
    ({"coordinator": "h:1", "num_processes": 2, "process_id": 0, "mode": "off"}, "contradicts"),
    ({"mode": "yes"}, "must be one of auto, on, off"),
])
def test_bad_or_incomplete_flags_are_one_line_errors(kwargs, message):
  with pytest.raises(distributed.DistributedError, match=message) as e:
    distributed.plan(**kwargs, environ={}, cloud_tpu_vm=False)
  assert "\n" not in str(e.value)


def test_missing_flags_are_left_to_a_detected_cluster():
  p = distributed.plan("10.0.0.1:1234", environ=SLURM, cloud_tpu_vm=False)
  assert p.kwargs == {"coordinator_address": "10.0.0.1:1234", "num_processes": None,
                      "process_id": None} and "slurm" in p.reason


def test_batch_size_must_divide_over_devices():
  mesh8 = types.SimpleNamespace(devices=np.empty(8, object))  # the size is all it reads
  parallel.check_batch_size(40, mesh8)
  with pytest.raises(ValueError, match=r"^train.batch_size 36 does not divide by the number of "
                     r"devices \(8\)$"):
    parallel.check_batch_size(36, mesh8, "train.batch_size")


@pytest.mark.parametrize("cli", ["bin.train", "bin.crossval"])
def test_cli_refuses_bad_distributed_flags_in_one_line(cli, tmp_path):
  r = subprocess.run([sys.executable, "-m", cli, "--coordinator", "127.0.0.1:1234",
                      "--num_processes", "2", "--process_id", "2", "--workdir", str(tmp_path)],
                     cwd=REPO, env=_env(1), capture_output=True, text=True, timeout=120)
  assert r.returncode == 1, r.stderr
  err = [l for l in r.stderr.splitlines() if l.strip()]
  assert err == ["error: --process_id=2 must be below --num_processes=2 (processes are numbered "
                 "0..1)"], r.stderr
