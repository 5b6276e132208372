"""SSA-CRNN-r (Table 1, last row): speaker branch + emotion branch joined by the Self Speaker
Attention, Eq. 8 constraint on the emotion classifier, at the paper's sizes.

  python -m bin.train --config configs/ssa_crnn_r.py --fold 0 --config.data.corpus=iemocap \
      --config.data.root=/data/IEMOCAP_full_release

About 27 s per training step (batch 40) on a quiet 2-core CPU (benchmarks/RESULTS.md): use an
accelerator.
"""

from ssa_jax.config import base_config


def get_config():
  return base_config()
