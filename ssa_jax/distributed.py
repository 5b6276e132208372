"""Several hosts: starting JAX's distributed runtime from flags or a detected cluster (docs/DESIGN.md §6).

Every process runs the same program (`python -m bin.train ...` on each host). After
`jax.distributed.initialize`, `jax.devices()` lists the devices of all processes, so the mesh of
`ssa_jax.parallel` spans every host; each process feeds only its own rows of each global batch
(`parallel.global_batch`), all processes draw the same seeded batch order, and only process 0
writes config.json / metrics.jsonl / result.json / summaries (orbax coordinates the checkpoints).

When is `jax.distributed.initialize` called (`plan`; the rule of `bin.train` and `bin.crossval`):
  --distributed=off   never: one process with its local devices (the three flags below: an error).
  --coordinator HOST:PORT, --num_processes N, --process_id I  (any of them given)
                      `initialize(coordinator_address=..., num_processes=..., process_id=...)`;
                      a missing one is left to JAX's cluster detection, so it needs one of the
                      clusters below (else a one-line error names the missing flags).
  --distributed=auto  (the default) without those flags: `initialize()` with no arguments iff the
                      environment shows a multi-process job (`detect_cluster`):
                        Slurm      SLURM_JOB_ID, SLURM_STEP_NODELIST, SLURM_NTASKS, SLURM_PROCID,
                                   SLURM_LOCALID all set (JAX's own test), and SLURM_NTASKS > 1
                        Open MPI   OMPI_MCA_orte_hnp_uri set, OMPI_COMM_WORLD_SIZE > 1 (if set)
                        Cloud TPU  TPU_WORKER_HOSTNAMES / TPU_PROCESS_ADDRESSES listing > 1 host,
                                   MEGASCALE_COORDINATOR_ADDRESS set, or JAX found a Cloud TPU VM
                                   (libtpu with TPU chips; the hosts come from the GCE metadata)
                      else nothing is called: one process, as on a laptop or a single GPU node.
  --distributed=on    `initialize()` with no arguments in any case (JAX's detection decides; for
                      environments it knows and the list above does not, e.g. Kubernetes).

This must happen before anything touches a JAX device: the CLIs call `initialize_from_flags`
first thing in `main`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Mapping

MODES = ("auto", "on", "off")

# Environment variables that mark a multi-process job (documented in the module docstring).
SLURM_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
              "SLURM_LOCALID")
OMPI_URI = "OMPI_MCA_orte_hnp_uri"
TPU_HOST_LISTS = ("TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES")
TPU_MEGASCALE = "MEGASCALE_COORDINATOR_ADDRESS"

_HOST_PORT = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.\-]+):(\d{1,5})$")


class DistributedError(ValueError):
  """A bad or incomplete multi-host setting; the message is one line and names the flag."""


@dataclasses.dataclass(frozen=True)
class Plan:
  """What `initialize` will do: `kwargs` for `jax.distributed.initialize`, or None (one process).

  `reason` says why, in words (the CLIs print it when they start the distributed runtime).
  """
  kwargs: dict[str, Any] | None
  reason: str


def _int_env(environ: Mapping[str, str], name: str) -> int | None:
  try:
    return int(environ[name])
  except (KeyError, ValueError):
    return None


def _on_cloud_tpu_vm() -> bool:
  """True when JAX's start-up found libtpu and TPU chips (set when `jax` is imported)."""
  try:
    from jax._src import cloud_tpu_init  # pylint: disable=import-outside-toplevel
  except ImportError:  # a JAX without this module: rely on the environment variables only
    return False
  return bool(getattr(cloud_tpu_init, "running_in_cloud_tpu_vm", False))


def detect_cluster(environ: Mapping[str, str] | None = None,
                   cloud_tpu_vm: bool | None = None) -> str | None:
  """The name of a detected multi-process cluster ("slurm", "openmpi", "tpu"), or None.

  Args:
    environ: the environment (default `os.environ`).
    cloud_tpu_vm: whether this is a Cloud TPU VM (default: ask JAX).
  """
  environ = os.environ if environ is None else environ
  if all(v in environ for v in SLURM_VARS) and (_int_env(environ, "SLURM_NTASKS") or 0) > 1:
    return "slurm"
  if OMPI_URI in environ and (_int_env(environ, "OMPI_COMM_WORLD_SIZE") or 2) > 1:
    return "openmpi"
  hosts = [h for v in TPU_HOST_LISTS for h in environ.get(v, "").split(",") if h.strip()]
  if len(hosts) > 1 or environ.get(TPU_MEGASCALE):
    return "tpu"
  if cloud_tpu_vm is None:
    cloud_tpu_vm = _on_cloud_tpu_vm()
  return "tpu" if cloud_tpu_vm else None


def _check_coordinator(coordinator: str) -> None:
  m = _HOST_PORT.match(coordinator)
  if not m or not 0 < int(m.group(2)) < 65536:
    raise DistributedError(f"--coordinator={coordinator!r}: expected HOST:PORT (e.g. "
                           f"10.0.0.1:1234), the address of process 0, the same on every process")


def plan(coordinator: str | None = None, num_processes: int | None = None,
         process_id: int | None = None, mode: str = "auto",
         environ: Mapping[str, str] | None = None, cloud_tpu_vm: bool | None = None) -> Plan:
  """Decides whether and how to call `jax.distributed.initialize` (the rule in the docstring).

  Raises:
    DistributedError: an unknown mode, a malformed or incomplete set of flags.
  """
  if mode not in MODES:
    raise DistributedError(f"--distributed={mode!r}: must be one of {', '.join(MODES)}")
  given = {"coordinator": coordinator, "num_processes": num_processes, "process_id": process_id}
  given = {k: v for k, v in given.items() if v is not None and v != ""}
  if mode == "off":
    if given:
      raise DistributedError(f"--distributed=off contradicts {', '.join('--' + k for k in given)}")
    return Plan(None, "--distributed=off: one process")
  if coordinator:
    _check_coordinator(coordinator)
  if num_processes is not None and num_processes < 1:
    raise DistributedError(f"--num_processes={num_processes}: must be at least 1")
  if process_id is not None and process_id < 0:
    raise DistributedError(f"--process_id={process_id}: must be at least 0")
  if num_processes is not None and process_id is not None and process_id >= num_processes:
    raise DistributedError(f"--process_id={process_id} must be below --num_processes="
                           f"{num_processes} (processes are numbered 0..{num_processes - 1})")
  cluster = detect_cluster(environ, cloud_tpu_vm)
  if given:
    missing = [f"--{k}" for k in ("coordinator", "num_processes", "process_id") if k not in given]
    if missing and cluster is None and mode != "on":
      raise DistributedError(f"{', '.join(missing)} missing: give --coordinator HOST:PORT, "
                             f"--num_processes N and --process_id I on every process (no "
                             f"Slurm / Open MPI / TPU cluster detected to fill them in)")
    kwargs = {"coordinator_address": coordinator or None, "num_processes": num_processes,
              "process_id": process_id}
    source = cluster or "JAX's detection"
    how = f"flags ({', '.join(missing)} from {source})" if missing else "flags"
    return Plan(kwargs, f"jax.distributed.initialize from {how}")
  if mode == "on":
    return Plan({}, "--distributed=on: jax.distributed.initialize() (JAX's cluster detection)")
  if cluster is not None:
    return Plan({}, f"{cluster} cluster detected: jax.distributed.initialize()")
  return Plan(None, "no cluster detected and no --coordinator: one process")


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, mode: str = "auto",
               timeout_s: int = 300) -> Plan:
  """Starts the distributed runtime as `plan` decides (a no-op if it is already running).

  Must run before anything touches a JAX device. `timeout_s`: how long process 0 waits for the
  others (and the others for process 0) before giving up with a one-line error.

  Raises:
    DistributedError: bad flags, or the runtime could not start (message says why).
  """
  p = plan(coordinator, num_processes, process_id, mode)
  import jax  # pylint: disable=import-outside-toplevel
  if p.kwargs is None or jax.distributed.is_initialized():
    return p
  # Cross-process collectives on CPU (tests, CPU-only clusters); GPU and TPU use their own.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    jax.distributed.initialize(**p.kwargs, initialization_timeout=int(timeout_s))
  except (ValueError, TypeError, RuntimeError) as e:  # XlaRuntimeError is a RuntimeError
    first = " ".join(str(e).split())[:300]
    raise DistributedError(f"jax.distributed.initialize failed ({p.reason}): "
                           f"{type(e).__name__}: {first}") from e
  return p


def is_main_process() -> bool:
  """True on process 0 (the one that writes files); True without a distributed runtime."""
  import jax  # pylint: disable=import-outside-toplevel
  return jax.process_index() == 0


def describe() -> str:
  """'process I of N, L local / G global devices (platform)' (for logs)."""
  import jax  # pylint: disable=import-outside-toplevel
  return (f"process {jax.process_index()} of {jax.process_count()}, "
          f"{jax.local_device_count()} local / {jax.device_count()} global "
          f"{jax.default_backend()} devices")


# ----------------------------------------------------------------------------------------------
# Command-line flags shared by bin.train and bin.crossval
# ----------------------------------------------------------------------------------------------


def define_flags() -> dict[str, Any]:
  """Defines --coordinator, --num_processes, --process_id, --distributed (absl); returns holders."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  return {
      "coordinator": flags.DEFINE_string(
          "coordinator", None,
          "HOST:PORT of process 0 (several hosts; the same on every process)."),
      "num_processes": flags.DEFINE_integer(
          "num_processes", None, "Number of processes (several hosts)."),
      "process_id": flags.DEFINE_integer(
          "process_id", None, "This process's index, 0..num_processes-1 (several hosts)."),
      "distributed": flags.DEFINE_enum(
          "distributed", "auto", list(MODES),
          "auto: start jax.distributed when --coordinator / --num_processes / --process_id are "
          "given or a Slurm / Open MPI / Cloud TPU multi-host job is detected; on: always call "
          "jax.distributed.initialize(); off: never (one process)."),
  }


def initialize_from_flags(holders: Mapping[str, Any], timeout_s: int = 300) -> Plan:
  """`initialize` with the values of the flags from `define_flags`."""
  return initialize(holders["coordinator"].value, holders["num_processes"].value,
                    holders["process_id"].value, holders["distributed"].value, timeout_s)
