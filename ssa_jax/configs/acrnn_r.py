"""ACRNN-r (Table 1): ACRNN with the Eq. 8 L1 constraint projected onto the classifier's columns.

  python -m bin.train --config configs/acrnn_r.py --fold 0 --config.data.corpus=iemocap \
      --config.data.root=/data/IEMOCAP_full_release
"""

from ssa_jax.config import base_config


def get_config():
  c = base_config()
  c.name = "acrnn_r"
  c.model.name = "acrnn"
  c.train.constraint = "l1_sphere"
  return c
