"""Quick start: the paper's architecture scaled down, on the built-in generated corpus.

  python -m bin.train --config configs/quickstart.py --fold 3            # SSA-CRNN-r
  python -m bin.train --config configs/quickstart.py:acrnn --fold 3      # ACRNN
  python -m bin.train --config configs/quickstart.py:acrnn_r --fold 3    # ACRNN-r

Same layers as the paper configs (6 convs, pool after conv1, dense, BLSTM, attention, embedding,
batch 40), fewer filters and cells, so that a fold trains in a few minutes on a 2-core CPU.
"""

from ssa_jax.config import base_config

SYSTEMS = {
    "ssa_crnn_r": ("ssa_crnn", "l1_sphere"),
    "acrnn": ("acrnn", "none"),
    "acrnn_r": ("acrnn", "l1_sphere"),
}


def get_config(system: str = "ssa_crnn_r"):
  if system not in SYSTEMS:
    raise ValueError(f"unknown system {system!r}; choose one of {sorted(SYSTEMS)}")
  c = base_config()
  c.name = f"quickstart_{system}"
  c.model.name, c.train.constraint = SYSTEMS[system]
  c.model.conv_features = (8, 16, 16, 16, 16, 16)
  c.model.dense_units = 64
  c.model.lstm_units = 32
  c.model.embed_dim = 32
  c.train.learning_rate = 1e-3
  c.train.epochs = 12
  c.train.patience = 0
  return c
