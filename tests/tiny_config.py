"""The tests' one tiny config: the model, features and batches small enough for a CPU test.

  tiny_config()                                   # SSA-CRNN-r; conftest's `tiny` fixture
  tiny_config("acrnn", "none", {"features.segment_frames": 40})   # flattened overrides
  python -m bin.train --config tests/tiny_config.py:acrnn ...     # as a config file (arg: model)

Every test file starts from it and names what it changes (with the reason next to it), so a
change here reaches all of them. 6 conv layers of 4 filters (2x2 pool), dense 8, BLSTM 2 x 4,
embedding 8; segments of 8 frames x 4 mel bands; batches of 8; learning rate 3e-3; 2 epochs.
`model.num_speakers` is left to training (filled in from the data); set it to build an SSA-CRNN
by hand.
"""

from __future__ import annotations

from typing import Any, Mapping

from ssa_jax.config import base_config


def tiny_config(model: str = "ssa_crnn", constraint: str = "l1_sphere",
                overrides: Mapping[str, Any] | None = None):
  """The tiny config of `model` ("acrnn" | "ssa_crnn") and `train.constraint`, then `overrides`
  ({"model.lstm_units": 5, ...}; a key that does not exist is a KeyError/AttributeError)."""
  c = base_config()
  c.name = "tiny"
  c.model.name = model
  c.model.conv_features = (4, 4, 4, 4, 4, 4)
  c.model.dense_units = 8
  c.model.lstm_units = 4
  c.model.embed_dim = 8
  c.features.segment_frames = 8
  c.features.min_segment_frames = 2
  c.features.n_mels = 4
  c.train.constraint = constraint
  if constraint == "none":
    c.model.logit_scale = 1.0  # as configs/: the temperature is for Eq. 8-constrained classifiers
  c.train.batch_size = 8
  c.train.eval_batch_size = 8
  c.train.learning_rate = 3e-3
  c.train.epochs = 2
  c.train.patience = 0
  c.train.log_every = 2
  if overrides:
    c.update_from_flattened_dict(dict(overrides))
  return c


def get_config(model: str = "ssa_crnn"):
  """The config-file form (`--config tests/tiny_config.py[:acrnn]`)."""
  return tiny_config(model)
