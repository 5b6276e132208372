"""Compatibility names for benchmarks/ (its own engineer's files): the layers moved to
`ssa_jax/models/layers.py`, the XLA compiler options to `ssa_jax/xla_options.py`. Library code
imports those modules, not this one."""

from ssa_jax.models.layers import (IMPLS, LSTM_IMPLS, Conv, HoistedBLSTM, HoistedLSTM,  # noqa: F401
                                   resolve_impl, resolve_lstm_impl, same_padding)
from ssa_jax.xla_options import (CPU_OPTION_SETS, OPTION_NAMES, STEP_OPTION_SET,  # noqa: F401
                                 compiler_options, cpu_compiler_options, step_compiler_options)
