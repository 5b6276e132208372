"""Training batches (emotion-balanced or proportional) and padded evaluation batches, as numpy
(docs/DESIGN.md §5).

Two ways to draw training batches (`config.train.batch_sampling`, SAMPLING):

"balanced" (seed §3.2, "emotionally balanced mini-batches of 40"):
  * every batch holds `batch_size / num_classes` segments of each class (an error if it does not
    divide), in a shuffled order, so shapes are fixed and the step compiles once;
  * an epoch is ceil(max class count / per_class) batches: the largest class is seen exactly once
    (one permutation), every other class cycles through fresh seeded permutations of itself
    (sampling with replacement across cycles, each segment at most once per cycle), so every
    training segment is seen at least once per epoch;
  * the order is a pure function of (seed, fold, epoch): resuming needs only (epoch, batch index).

"proportional" (the corpus's class proportions):
  * each epoch is one seeded permutation of all N training segments cut into ceil(N / batch_size)
    batches of batch_size; the last partial batch is filled by wrapping around to the start of
    the permutation (fixed shapes), so every segment is seen once per epoch, plus the
    ceil(N / B) * B - N wrapped ones a second time;
  * no class need be in every batch, but every class must have training segments (the same
    error as balanced batches);
  * also a pure function of (seed, fold, epoch).

Batches are dicts of numpy arrays:
  x       float32 (B, T, M, C)  normalised features (padded frames 0)
  mask    bool    (B, T)        real frames
  label   int32   (B,)          emotion class
  speaker int32   (B,)          speaker index
With enrollment (`model.enroll_k` = k > 0, ssa_jax/enroll.py; the training arrays then carry
`utt` (N,), each segment's utterance) a training batch also holds
  enroll_x     float32 (B, k, T, M, C)  one segment of each of k other utterances of the row's
                                        speaker (never the row's own utterance)
  enroll_mask  bool    (B, k, T)
  enroll_valid bool    (B, k)           False: the speaker has no other training utterance
drawn for the global batch from (seed, fold, epoch, batch index): pure, as the batch order.
Evaluation batches pass on `enroll_context (N, k, d)` / `enroll_valid (N, k)` rows when the
arrays have them (`inference.enrollment_arrays`).
Evaluation batches (`eval_batches`) have a fixed number of rows, the last one padded by repeating
the first segment; `batch_rows(n, batch_size)` is that number for a prediction of n segments (the
next power of two, at most the batch size). Numpy only: the light runtime (`ssa_jax.serving`)
batches with it too.
With several processes each process yields only its own contiguous rows of the global batch
(`process_index`, `process_count`); `parallel.global_batch` assembles the global array.
"""

from __future__ import annotations

import math
from typing import Iterator, Mapping

import numpy as np

from ssa_jax import enroll as enroll_lib

Batch = dict[str, np.ndarray]
KEYS = ("x", "mask", "label", "speaker") + enroll_lib.TRAIN_KEYS + ("enroll_context",)
SAMPLING = ("balanced", "proportional")
PROPORTIONAL_STREAM = 1 << 20  # rng (seed, fold, epoch, this): apart from balanced's per-class keys


def check_sampling(sampling: str, batch_size: int, num_classes: int) -> None:
  """A one-line ValueError for an unknown `train.batch_sampling` or a batch size it cannot use
  (balanced: a positive multiple of the number of classes; proportional: positive)."""
  if sampling not in SAMPLING:
    raise ValueError(f"train.batch_sampling must be one of {SAMPLING}, got {sampling!r}")
  if sampling == "balanced":
    per_class_size(batch_size, num_classes)
  elif not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
    raise ValueError(f"train.batch_size must be a positive integer, got {batch_size!r}")


def per_class_size(batch_size: int, num_classes: int) -> int:
  if num_classes <= 0 or batch_size <= 0 or batch_size % num_classes:
    raise ValueError(f"train.batch_size={batch_size} must be a positive multiple of the number of "
                     f"classes ({num_classes}) for emotion-balanced batches")
  return batch_size // num_classes


def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
  return np.bincount(np.asarray(labels, np.int64), minlength=num_classes)


def batches_per_epoch(labels: np.ndarray, num_classes: int, batch_size: int,
                      sampling: str = "balanced") -> int:
  """balanced: ceil(largest class count / per-class share of a batch); proportional:
  ceil(number of segments / batch_size)."""
  check_sampling(sampling, batch_size, num_classes)
  if sampling == "proportional":
    return int(math.ceil(len(labels) / batch_size))
  counts = class_counts(labels, num_classes)
  return int(math.ceil(counts.max() / per_class_size(batch_size, num_classes)))


def _check_classes(labels: np.ndarray, num_classes: int,
                   class_names: tuple[str, ...] | None) -> np.ndarray:
  """Per-class counts (K,) of `labels`; an error for a label >= K or a class without segments."""
  counts = class_counts(labels, num_classes)
  if len(counts) > num_classes:
    raise ValueError(f"labels go up to {len(counts) - 1} but there are {num_classes} classes")
  empty = np.flatnonzero(counts == 0)
  if empty.size:
    names = [class_names[i] if class_names else str(i) for i in empty]
    raise ValueError(f"class(es) {', '.join(names)} have no training segments; training needs "
                     f"every class")
  return counts


def proportional_indices(num_segments: int, batch_size: int, seed: int, fold: int,
                         epoch: int) -> np.ndarray:
  """(ceil(N / B), B) int64: a permutation of 0..N-1 seeded by (seed, fold, epoch), cut into
  batches, the last one filled by wrapping around to the permutation's start; pure in its args."""
  if num_segments <= 0:
    raise ValueError("no training segments")
  perm = np.random.default_rng([seed, fold, epoch, PROPORTIONAL_STREAM]).permutation(num_segments)
  num_batches = int(math.ceil(num_segments / batch_size))
  return np.resize(perm, num_batches * batch_size).reshape(num_batches, batch_size)


def epoch_indices(labels: np.ndarray, num_classes: int, batch_size: int, seed: int, fold: int,
                  epoch: int, class_names: tuple[str, ...] | None = None,
                  sampling: str = "balanced") -> np.ndarray:
  """(num_batches, batch_size) int64 positions into `labels` for one epoch; pure in its args.

  `sampling`: "balanced" | "proportional" (the module docstring).

  Raises:
    ValueError: a class without any training segment, an unknown sampling, or a batch size it
      cannot use.
  """
  labels = np.asarray(labels, np.int64)
  check_sampling(sampling, batch_size, num_classes)
  counts = _check_classes(labels, num_classes, class_names)
  if sampling == "proportional":
    return proportional_indices(len(labels), batch_size, seed, fold, epoch)
  per_class = per_class_size(batch_size, num_classes)
  num_batches = int(math.ceil(counts.max() / per_class))
  needed = num_batches * per_class
  columns = []
  for c in range(num_classes):
    members = np.flatnonzero(labels == c)
    rng = np.random.default_rng([seed, fold, epoch, c])
    cycles = int(math.ceil(needed / len(members)))
    draws = np.concatenate([rng.permutation(members) for _ in range(cycles)])[:needed]
    columns.append(draws.reshape(num_batches, per_class))
  idx = np.concatenate(columns, axis=1)  # (num_batches, B), grouped by class
  order_rng = np.random.default_rng([seed, fold, epoch, num_classes])
  order = order_rng.permuted(np.tile(np.arange(batch_size), (num_batches, 1)), axis=1)
  return np.take_along_axis(idx, order, axis=1)


def _local_rows(batch_size: int, process_index: int, process_count: int) -> slice:
  if batch_size % process_count:
    raise ValueError(f"batch size {batch_size} does not divide by the process count "
                     f"{process_count}")
  per = batch_size // process_count
  return slice(process_index * per, (process_index + 1) * per)


def _take(arrays: Mapping[str, np.ndarray], idx: np.ndarray) -> Batch:
  return {k: arrays[k][idx] for k in KEYS if k in arrays}


def train_batches(arrays: Mapping[str, np.ndarray], num_classes: int, batch_size: int, seed: int,
                  fold: int, epoch: int, start_batch: int = 0, process_index: int = 0,
                  process_count: int = 1, class_names: tuple[str, ...] | None = None,
                  sampling: str = "balanced", enroll_k: int = 0) -> Iterator[Batch]:
  """Yields this process's rows of each batch of `epoch` (`sampling`: "balanced" |
  "proportional"), from `start_batch` on; with `enroll_k` > 0 also the enroll_* keys (module
  docstring).

  Args:
    arrays: training segments {x (N,T,M,C), mask (N,T), label (N,), speaker (N,)} (and utt
      (N,) for enrollment).
  """
  idx = epoch_indices(arrays["label"], num_classes, batch_size, seed, fold, epoch, class_names,
                      sampling)
  rows = _local_rows(batch_size, process_index, process_count)
  pool = enroll_lib.utterance_pool(arrays["utt"], arrays["speaker"]) if enroll_k > 0 else None
  for b in range(start_batch, idx.shape[0]):
    batch = _take(arrays, idx[b, rows])
    if pool is not None:  # drawn for the global batch: the same rows whatever the processes
      extra = enroll_lib.training_batch(arrays, pool, idx[b], enroll_k,
                                        enroll_lib.training_rng(seed, fold, epoch, b))
      batch.update({k: v[rows] for k, v in extra.items()})
    yield batch


def batch_rows(n: int, batch_size: int, num_devices: int = 1) -> int:
  """Rows of the fixed batch for n segments: the next power of two >= n, rounded up to a
  multiple of `num_devices`, at most `batch_size` (which the caller keeps divisible)."""
  rows = 1
  while rows < min(n, batch_size):
    rows *= 2
  rows = -(-rows // num_devices) * num_devices
  return min(rows, max(batch_size, 1))


def eval_batches(arrays: Mapping[str, np.ndarray], batch_size: int, process_index: int = 0,
                 process_count: int = 1) -> Iterator[tuple[Batch, int]]:
  """Yields (this process's rows of a fixed-size batch, number of real rows in the GLOBAL batch).

  `arrays`: {x (N,T,M,C), mask (N,T)} and, where present, label / speaker (N,). The segments
  are taken in order; the last batch is padded by repeating the first segment (real data, so no
  all-masked input reaches the model); callers drop the outputs past the real count.
  """
  n = len(arrays["mask"])
  rows = _local_rows(batch_size, process_index, process_count)
  for start in range(0, n, batch_size):
    idx = np.arange(start, start + batch_size)
    real = min(batch_size, n - start)
    idx[real:] = 0
    yield _take(arrays, idx[rows]), real
