"""`--config configs/ssa_crnn_r.py` from the checkout: the config is ssa_jax/configs/ssa_crnn_r.py
(`--config ssa_crnn_r` from any folder)."""

from ssa_jax.configs.ssa_crnn_r import get_config  # noqa: F401
