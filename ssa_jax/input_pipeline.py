"""Emotion-balanced training batches and padded evaluation batches, as numpy (docs/DESIGN.md §5).

Training (seed §3.2, "emotionally balanced mini-batches of 40"):
  * every batch holds `batch_size / num_classes` segments of each class (an error if it does not
    divide), in a shuffled order, so shapes are fixed and the step compiles once;
  * an epoch is ceil(max class count / per_class) batches: the largest class is seen exactly once
    (one permutation), every other class cycles through fresh seeded permutations of itself
    (sampling with replacement across cycles, each segment at most once per cycle), so every
    training segment is seen at least once per epoch;
  * the order is a pure function of (seed, fold, epoch): resuming needs only (epoch, batch index).

Batches are dicts of numpy arrays:
  x       float32 (B, T, M, C)  normalised features (padded frames 0)
  mask    bool    (B, T)        real frames
  label   int32   (B,)          emotion class
  speaker int32   (B,)          speaker index
With several processes each process yields only its own contiguous rows of the global batch
(`process_index`, `process_count`); `parallel.global_batch` assembles the global array.
"""

from __future__ import annotations

import math
from typing import Iterator, Mapping

import numpy as np

Batch = dict[str, np.ndarray]
KEYS = ("x", "mask", "label", "speaker")


def per_class_size(batch_size: int, num_classes: int) -> int:
  if num_classes <= 0 or batch_size <= 0 or batch_size % num_classes:
    raise ValueError(f"train.batch_size={batch_size} must be a positive multiple of the number of "
                     f"classes ({num_classes}) for emotion-balanced batches")
  return batch_size // num_classes


def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
  return np.bincount(np.asarray(labels, np.int64), minlength=num_classes)


def batches_per_epoch(labels: np.ndarray, num_classes: int, batch_size: int) -> int:
  """ceil(largest class count / per-class share of a batch)."""
  counts = class_counts(labels, num_classes)
  return int(math.ceil(counts.max() / per_class_size(batch_size, num_classes)))


def epoch_indices(labels: np.ndarray, num_classes: int, batch_size: int, seed: int, fold: int,
                  epoch: int, class_names: tuple[str, ...] | None = None) -> np.ndarray:
  """(num_batches, batch_size) int64 positions into `labels` for one epoch; pure in its args.

  Raises:
    ValueError: a class without any training segment, or a batch size that does not divide.
  """
  labels = np.asarray(labels, np.int64)
  per_class = per_class_size(batch_size, num_classes)
  counts = class_counts(labels, num_classes)
  if len(counts) > num_classes:
    raise ValueError(f"labels go up to {len(counts) - 1} but there are {num_classes} classes")
  empty = np.flatnonzero(counts == 0)
  if empty.size:
    names = [class_names[i] if class_names else str(i) for i in empty]
    raise ValueError(f"class(es) {', '.join(names)} have no training segments; balanced batches "
                     f"need every class")
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
  return {k: arrays[k][idx] for k in KEYS}


def train_batches(arrays: Mapping[str, np.ndarray], num_classes: int, batch_size: int, seed: int,
                  fold: int, epoch: int, start_batch: int = 0, process_index: int = 0,
                  process_count: int = 1,
                  class_names: tuple[str, ...] | None = None) -> Iterator[Batch]:
  """Yields this process's rows of each balanced batch of `epoch`, from `start_batch` on.

  Args:
    arrays: training segments {x (N,T,M,C), mask (N,T), label (N,), speaker (N,)}.
  """
  idx = epoch_indices(arrays["label"], num_classes, batch_size, seed, fold, epoch, class_names)
  rows = _local_rows(batch_size, process_index, process_count)
  for b in range(start_batch, idx.shape[0]):
    yield _take(arrays, idx[b, rows])


def eval_batches(arrays: Mapping[str, np.ndarray], batch_size: int, process_index: int = 0,
                 process_count: int = 1) -> Iterator[tuple[Batch, int]]:
  """Yields (this process's rows of a fixed-size batch, number of real rows in the GLOBAL batch).

  The segments are taken in order; the last batch is padded by repeating the first segment (real
  data, so no all-masked input reaches the model); callers drop the outputs past the real count.
  """
  n = len(arrays["label"])
  rows = _local_rows(batch_size, process_index, process_count)
  for start in range(0, n, batch_size):
    idx = np.arange(start, start + batch_size)
    real = min(batch_size, n - start)
    idx[real:] = 0
    yield _take(arrays, idx[rows]), real
