"""Single-program data parallelism: a device `Mesh` with a `data` axis (docs/DESIGN.md §6).

The batch is sharded along `data` (`P("data")`), parameters and optimizer state are replicated
(`P()`); `jax.jit` with these shardings inserts the gradient all-reduce itself (no pmap, no manual
pmean). Each process feeds only its own rows of the global batch; `global_batch` assembles them
with `jax.make_array_from_process_local_data`, which is the same call on one host or many.
"""

from __future__ import annotations

from typing import Mapping

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices: list[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh over all (global) devices, axis name "data".

  The devices are ordered by process (then id), so each process's devices hold one contiguous
  block of the batch, block p for process p: the order `global_batch` and the input pipeline's
  per-process rows assume (on some platforms `jax.devices()` interleaves the hosts).
  """
  devices = jax.devices() if devices is None else devices
  devices = sorted(devices, key=lambda d: (d.process_index, d.id))
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over `data`."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_batch_size(global_batch_size: int, mesh: Mesh, what: str = "batch size") -> None:
  """Raises a one-line ValueError unless the global batch divides over devices and processes."""
  n = mesh.devices.size
  if global_batch_size % n:
    raise ValueError(f"{what} {global_batch_size} does not divide by the number of devices ({n})")
  if global_batch_size % jax.process_count():
    raise ValueError(f"{what} {global_batch_size} does not divide by the number of processes "
                     f"({jax.process_count()})")


def global_batch(local: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """This process's rows -> global arrays sharded along `data` (the rows of all processes, in
  process order, form the global batch)."""
  sharding = data_sharding(mesh)
  out = {}
  for k, v in local.items():
    v = np.asarray(v)
    global_shape = (v.shape[0] * jax.process_count(),) + v.shape[1:]
    out[k] = jax.make_array_from_process_local_data(sharding, v, global_shape)
  return out


def to_host(x: jax.Array) -> np.ndarray:
  """The whole (global) value of a possibly sharded array as numpy, on every process."""
  if jax.process_count() == 1:
    return np.asarray(x)
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))
