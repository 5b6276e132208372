"""`--config configs/acrnn_r.py` from the checkout: the config is ssa_jax/configs/acrnn_r.py
(`--config acrnn_r` from any folder)."""

from ssa_jax.configs.acrnn_r import get_config  # noqa: F401
