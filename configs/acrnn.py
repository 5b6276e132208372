"""`--config configs/acrnn.py` from the checkout: the config is ssa_jax/configs/acrnn.py
(`--config acrnn` from any folder)."""

from ssa_jax.configs.acrnn import get_config  # noqa: F401
