"""ACRNN (Table 1, first of our rows): one emotion branch with self attention, no constraint,
at the paper's sizes (Chen et al. 2018 with a 128-d embedding).

  python -m bin.train --config configs/acrnn.py --fold 0 --config.data.corpus=iemocap \
      --config.data.root=/data/IEMOCAP_full_release

About half the SSA-CRNN-r step time (one branch).
"""

from ssa_jax.config import base_config


def get_config():
  c = base_config()
  c.name = "acrnn"
  c.model.name = "acrnn"
  c.train.constraint = "none"
  c.model.logit_scale = 1.0  # an unconstrained classifier learns its own scale
  return c
