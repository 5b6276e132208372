"""`--config configs/quickstart.py[:SYSTEM]` from the checkout: the config is
ssa_jax/configs/quickstart.py (`--config quickstart[:SYSTEM]` from any folder)."""

from ssa_jax.configs.quickstart import SYSTEMS, get_config  # noqa: F401
