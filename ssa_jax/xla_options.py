"""XLA compiler options of the jitted train and eval steps (`jax.jit(..., compiler_options=...)`).

  jax.jit(step, ..., compiler_options=compiler_options("tuned"))   the steps' options; None off CPU
  step_compiler_options()        the same, as a function of the backend
  CPU_OPTION_SETS, OPTION_NAMES  the named sets (benchmarks/step.py --xla-options takes the names)

Why: the CPU train step spends most of its time in convolutions, and with jaxlib 0.10's defaults
the kernel gradient (a "convolution" whose window is the whole T x F image and whose output is
the small kt x kf kernel) goes to the YNNPACK library path, which ran at about half the rate of
the forward convolution. Compiling the steps with YNNPACK's convolutions off (XLA's Eigen
convolutions instead) took the kernel gradient of a 256 -> 256 layer (batch 8, CPU seconds on a
shared 2-core machine: directions, not results) from 0.53 to 0.28 s, while the forward and input
gradient went 0.20 -> 0.23 s. The eval step takes the same options: at batch 40 XLA's YNNPACK
forward ran the paper-size inference ~11 % slower than Eigen's (benchmarks/RESULTS.md, "What was
tried", and its quiet run give the sizes).
"""

from __future__ import annotations

from typing import Mapping

import jax

# jaxlib 0.10 CPU: the library fusions YNNPACK may take; "" leaves all convolutions to XLA/Eigen.
_YNN_OPTION = "xla_cpu_experimental_ynn_fusion_type"

# Named sets of XLA CPU compiler options (benchmarks/step.py --xla-options takes these names).
CPU_OPTION_SETS: dict[str, dict[str, str] | None] = {
    "default": None,  # XLA's defaults: YNNPACK convolutions, dots and their fusions
    "eigen": {_YNN_OPTION: ""},  # every YNNPACK fusion off: XLA's Eigen convolutions and dots
    # Eigen convolutions, YNNPACK dots (the dense layer, the BLSTM, the attention)
    "eigen_conv": {_YNN_OPTION: "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"},
}
STEP_OPTION_SET = "eigen"  # the train and eval steps' option set on CPU


def cpu_compiler_options(name: str, backend: str | None = None) -> dict[str, str] | None:
  """The options of `CPU_OPTION_SETS[name]` on CPU; None on other backends."""
  if name not in CPU_OPTION_SETS:
    raise ValueError(f"unknown XLA option set {name!r}; choose one of {sorted(CPU_OPTION_SETS)}")
  backend = backend or jax.default_backend()
  return CPU_OPTION_SETS[name] if backend == "cpu" else None


OPTION_NAMES = ("tuned", *CPU_OPTION_SETS)  # what `compiler_options` takes by name


def compiler_options(spec: str | Mapping[str, str] | None,
                     backend: str | None = None) -> Mapping[str, str] | None:
  """The XLA options of a step's `compiler_options` argument: "tuned" (`step_compiler_options`,
  as training compiles its steps), a name of `CPU_OPTION_SETS` ("default": XLA's own), or a dict
  / None passed through."""
  if spec == "tuned":
    return step_compiler_options(backend)
  if isinstance(spec, str):
    return cpu_compiler_options(spec, backend)
  return spec


def step_compiler_options(backend: str | None = None) -> dict[str, str] | None:
  """XLA compiler options for the jitted train and eval steps: `jax.jit(..., compiler_options=...)`.

  On CPU, `CPU_OPTION_SETS[STEP_OPTION_SET]`: YNNPACK's convolutions off (its kernel gradient
  was slower than Eigen's in the measurements of the module docstring, and its forward at the
  eval batch of 40); None elsewhere.
  """
  return cpu_compiler_options(STEP_OPTION_SET, backend)
