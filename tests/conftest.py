"""Shared fixtures: the tiny config (`tiny`, from tests/tiny_config.py, the one every test file
starts from), a small fake Dataset (separable classes, speaker offsets), and `vigorous`, model
variables drawn so that a wrong mask, gate order or padding changes the outputs.

Also turns on JAX's persistent compilation cache in a temporary folder for the whole session
(before anything compiles): the same tiny model compiled by several tests is compiled once.
"""

from __future__ import annotations

import atexit
import dataclasses
import shutil
import tempfile

import jax
import numpy as np
import pytest

from tiny_config import tiny_config  # noqa: F401  (re-exported: `from conftest import tiny_config`)

_XLA_CACHE = tempfile.mkdtemp(prefix="ssa_jax_test_xla_")
atexit.register(shutil.rmtree, _XLA_CACHE, ignore_errors=True)
jax.config.update("jax_compilation_cache_dir", _XLA_CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


@dataclasses.dataclass
class FakeDataset:
  """Same fields as `ssa_jax.data.Dataset` (docs/ARCHITECTURE.md)."""
  segments: np.ndarray
  mask: np.ndarray
  seg_utt: np.ndarray
  utt_ids: tuple
  labels: np.ndarray
  speakers: np.ndarray
  phrases: tuple
  classes: tuple
  speaker_names: tuple
  listing: object = None


def fake_dataset(num_speakers=3, num_classes=4, per_cell=4, frames=8, mels=4, seed=0):
  """Utterances of 1-2 segments; class c raises mel band c; each speaker has its own offset."""
  rng = np.random.default_rng(seed)
  segs, masks, seg_utt, labels, speakers, phrases = [], [], [], [], [], []
  u = 0
  for s in range(num_speakers):
    for c in range(num_classes):
      for r in range(per_cell):
        for _ in range(1 + (r % 2)):
          x = rng.normal(size=(frames, mels, 3)).astype(np.float32) + 0.5 * s
          x[:, c % mels, 0] += 2.0
          m = np.ones(frames, bool)
          m[frames - 1 - (r % 3):] = False
          x[~m] = 0.0
          segs.append(x)
          masks.append(m)
          seg_utt.append(u)
        labels.append(c)
        speakers.append(s)
        phrases.append(f"p{r}")
        u += 1
  return FakeDataset(
      segments=np.stack(segs), mask=np.stack(masks), seg_utt=np.asarray(seg_utt, np.int32),
      utt_ids=tuple(f"u{i}" for i in range(u)), labels=np.asarray(labels, np.int32),
      speakers=np.asarray(speakers, np.int32), phrases=tuple(phrases),
      classes=("neu", "hap", "ang", "sad")[:num_classes],
      speaker_names=tuple(f"spk{s}" for s in range(num_speakers)))


def vigorous(shapes, seed=1):
  """Variables of the given shapes (`jax.eval_shape(model.init, ...)`) drawn so that activations
  are O(1) and biases and BatchNorm statistics non-zero: a wrong mask, gate order or padding
  changes the outputs. Kernels: 1.5 normal / sqrt(fan-in); vectors: 0.3 normal (W^q: normal /
  sqrt(T')); BN variances uniform in [0.5, 2]."""
  rng = np.random.default_rng(seed)

  def redraw(path, leaf):
    name = jax.tree_util.keystr(path)
    if "var" in name:
      return rng.uniform(0.5, 2.0, leaf.shape).astype(np.float32)
    if leaf.ndim >= 2:
      fan_in = int(np.prod(leaf.shape[:-1]))
      return (1.5 * rng.normal(size=leaf.shape) / np.sqrt(fan_in)).astype(np.float32)
    if leaf.ndim == 1 and "w_q" in name:
      return (rng.normal(size=leaf.shape) / np.sqrt(leaf.shape[0])).astype(np.float32)
    return (0.3 * rng.normal(size=leaf.shape)).astype(np.float32)
  return jax.tree_util.tree_map_with_path(redraw, shapes)


@pytest.fixture
def tiny():
  """A fresh tiny SSA-CRNN-r config (tests/tiny_config.py); change it freely."""
  return tiny_config()


@pytest.fixture(scope="session")
def fake():
  return fake_dataset()
