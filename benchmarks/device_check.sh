#!/usr/bin/env bash
# The prepared accelerator check (issue 23, item 5): one run of at most 8 minutes on one NVIDIA GPU
# machine, from the repository root:
#
#   bash benchmarks/device_check.sh fetch     # on a machine with PyPI: the wheels -> benchmarks/wheels/
#   bash benchmarks/device_check.sh list      # the wheels it needs (pinned), one per line
#   bash benchmarks/device_check.sh           # on the accelerator machine (carry benchmarks/wheels/)
#   QUICK=1 bash benchmarks/device_check.sh   # on any CPU: tiny sizes, the same parts (tests/test_device_check.py)
#
# It assumes only what the accelerator machine has: Python 3.12 with jax 0.11 (CUDA), flax, optax,
# orbax-checkpoint, chex and torch (and their dependencies). What else the project needs (its
# other requirements in pyproject.toml and theirs) comes as wheels from $WHEELS (default
# benchmarks/wheels/, git-ignored): `fetch` downloads the pinned list below for CPython 3.12 on
# manylinux x86_64 (`pip download --only-binary=:all: --no-deps`); the check installs the
# requirements that do not import with `pip install --no-index --find-links $WHEELS`, then the
# project with `--no-deps` (its build backend, setuptools, is in the list too). Nothing is
# installed when everything already imports (so QUICK=1 on a development machine installs nothing).
#
# Parts (each also written to its own file; everything printed goes to $OUT/device_check.log too):
#   00_env.txt        nvidia-smi -L, Python, jax / jaxlib / flax / torch versions, jax.devices(), torch.cuda
#   01_install.txt    what was missing and what pip installed
#   02_step.txt/json  python -m benchmarks.step: the paper-size train step (batch 40) and inference,
#                     SSA-CRNN and ACRNN, JAX against PyTorch (on CUDA when torch sees a GPU), each in
#                     float32 and bfloat16 (torch: autocast), with compile times
#   03_parallel.txt/json  the data-parallel step (SSA-CRNN, JAX) on a mesh of 1 device and of all
#                     devices present (one GPU: the mesh of 1 only, said so)
#   04_fold.txt       python -m bin.train --config configs/quickstart.py --fold 3 end to end, its wall
#                     time; fold3/ holds its result.json, metrics.jsonl, config.json (the
#                     checkpoints stay in a temporary folder)
#   timings.txt       wall seconds and exit code of each part
# Output folder: $OUT if set (the device tool collects it), else a new temporary folder (printed).
#
# Budget: BUDGET seconds in all (default 470, under 8 minutes; QUICK=1: 900); each part runs under `timeout`
# with the smaller of its own cap and what is left, so the whole check ends in time even if a part
# hangs (a part cut off says "rc 124"). Expected on an H200 (an estimate, not yet run there):
# install ~30 s, step ~2-3 min (8 JAX compilations), parallel ~1 min, fold ~2 min (corpus
# generation and features on the CPU, ~45 s of it).
#
# QUICK=1: the tests' tiny config for the step parts (batch 4, 1 timed step), 2 forced CPU
# devices for the data-parallel part (XLA_FLAGS, when only a CPU is present), a 1-epoch fold.
# Knobs: PYTHON (default python), WHEELS, BUDGET, OUT, PARTS (default "step parallel fold": the
# parts after env and install to run, e.g. PARTS="step parallel" to rerun the steps only).

set -u -o pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python}
WHEELS=${WHEELS:-benchmarks/wheels}
QUICK=${QUICK:-0}
BUDGET=${BUDGET:-$([ "$QUICK" = "1" ] && echo 900 || echo 470)}  # QUICK on a shared CPU: more

# Wheels beyond the accelerator machine's packages: the project's requirements that it lacks and
# their own requirements, at the versions the project is tested with (Python 3.11 here; each has
# a CPython 3.12 manylinux or pure-Python wheel). `fetch` puts llvmlite (numba's, which librosa
# needs; 57 MiB) in $WHEELS/llvmlite/ and the others (~42 MiB) in $WHEELS/other/: the device tool
# carries 64 MiB a call, so carry the two folders in two calls (a short first call carrying
# benchmarks/wheels/llvmlite, then the check carrying benchmarks/wheels/other; a warm machine
# keeps what the first call brought). scipy and numpy come with jax.
LLVMLITE_PIN=llvmlite==0.50.0
WHEEL_PINS=(
  librosa==0.11.0 numba==0.68.1 soundfile==0.14.0 soxr==1.1.0 audioread==3.1.0
  pooch==1.9.0 lazy-loader==0.6 decorator==5.2.1 joblib==1.6.0 msgpack==1.2.4
  scikit-learn==1.9.1 threadpoolctl==3.8.0
  matplotlib==3.11.2 contourpy==1.3.3 cycler==0.12.1 fonttools==4.68.0 kiwisolver==1.5.1
  pillow==13.0.0 pyparsing==3.3.2 python-dateutil==2.9.0.post0 six==1.17.0 packaging==26.2
  tensorboardX==2.6.5 protobuf==7.36.2 ml-collections==1.1.0 PyYAML==6.0.3 absl-py==2.5.1
  tqdm==4.70.1 cffi==2.0.0 pycparser==3.0 platformdirs==4.14.9 requests==2.34.2
  charset-normalizer==3.4.7 idna==3.13 urllib3==2.7.0 certifi==2026.5.20 typing-extensions==4.15.0
  setuptools==84.2.1
)

case "${1:-run}" in
  list)
    printf '%s\n' "$LLVMLITE_PIN" "${WHEEL_PINS[@]}"
    exit 0 ;;
  fetch)
    download() {  # download DIR PIN...: CPython 3.12 manylinux x86_64 wheels, no dependencies
      local dir=$1; shift
      mkdir -p "$dir"
      "$PY" -m pip download --only-binary=:all: --no-deps --dest "$dir" \
        --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform any "$@"
    }
    download "$WHEELS/llvmlite" "$LLVMLITE_PIN" && download "$WHEELS/other" "${WHEEL_PINS[@]}"
    rc=$?
    du -sh "$WHEELS"/* >&2
    exit $rc ;;
  run) ;;
  *)
    echo "usage: [QUICK=1] bash benchmarks/device_check.sh [run|list|fetch]" >&2
    exit 2 ;;
esac

OUT=${OUT:-$(mktemp -d -t ssa_jax_device_check.XXXXXX)}
mkdir -p "$OUT"
WORK=$(mktemp -d -t ssa_jax_device_work.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
exec > >(tee -a "$OUT/device_check.log") 2>&1
echo "device check: output in $OUT (QUICK=$QUICK, budget $BUDGET s)"
START=$SECONDS
status=0
: > "$OUT/timings.txt"

part() {  # part NAME CAP COMMAND...: stdout+stderr -> NAME.txt and the log, timed, cut at the budget
  local name=$1 cap=$2; shift 2
  local left=$((BUDGET - (SECONDS - START)))
  local limit=$(( cap < left ? cap : left ))
  if [ "$limit" -le 5 ]; then
    echo "== $name: skipped, the budget of $BUDGET s is spent" | tee -a "$OUT/timings.txt"
    status=1
    return
  fi
  echo "== $name (at most $limit s): $*"
  if declare -F "$1" > /dev/null; then  # a function of this script: run it in a child bash
    set -- bash -c "$1"
  fi
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$OUT/$name.txt"
  local rc=${PIPESTATUS[0]}
  echo "   $name: rc $rc, $((SECONDS - t0)) s" | tee -a "$OUT/timings.txt"
  [ "$rc" -eq 0 ] || status=1
}

env_report() {
  { nvidia-smi -L 2>/dev/null || echo "nvidia-smi: none"; } | head -n 8
  "$PY" - <<'EOF'
import importlib, platform
print("python", platform.python_version(), platform.machine())
for m in ("jax", "jaxlib", "flax", "optax", "orbax.checkpoint", "chex", "torch", "numpy"):
  try:
    print(m, getattr(importlib.import_module(m), "__version__", "?"))
  except Exception as e:  # noqa: BLE001
    print(m, "MISSING", type(e).__name__)
import jax
print("jax.devices():", jax.devices())
try:
  import torch
  print("torch.cuda:", torch.cuda.is_available() and torch.cuda.get_device_name(0))
except ImportError:
  pass
EOF
}

missing_modules() {  # the project's requirements (pyproject.toml, as stated there) that do not import
  "$PY" - <<'EOF'
import importlib.util, re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
module = {"scikit-learn": "sklearn", "absl-py": "absl", "ml-collections": "ml_collections",
          "orbax-checkpoint": "orbax.checkpoint", "tensorboardX": "tensorboardX"}
def importable(m):
  try:
    return importlib.util.find_spec(m) is not None
  except ModuleNotFoundError:
    return False
name = lambda d: re.split(r"[<>=!~ \[;]", d, maxsplit=1)[0]  # noqa: E731
print(" ".join(d for d in deps if not importable(module.get(name(d), name(d)).replace("-", "_"))))
EOF
}

install() {
  local missing
  missing=$(missing_modules) || return 1
  if [ -n "$missing" ]; then
    echo "missing: $missing"
    if ! ls "$WHEELS"/*/*.whl > /dev/null 2>&1; then
      echo "no wheels in $WHEELS/*/: run 'bash benchmarks/device_check.sh fetch' where PyPI is reachable"
      return 1
    fi
    # only the missing requirements: the machine's jax, flax, optax, orbax and chex stay as they
    # are, whatever their versions (their own requirements come from the wheels or are there)
    "$PY" -m pip install --no-index --find-links "$WHEELS/llvmlite" --find-links "$WHEELS/other" \
      $missing || return 1
  else
    echo "every requirement of pyproject.toml imports: nothing to install"
  fi
  if "$PY" -m pip show ssa_jax > /dev/null 2>&1; then
    echo "ssa_jax already installed ($("$PY" -m pip show ssa_jax | grep -i -E '^(version|location|editable)' | tr '\n' ' '))"
  else
    "$PY" -m pip install --no-index --find-links "$WHEELS/other" --no-deps -e . || return 1
  fi
  "$PY" -c "import ssa_jax, librosa, matplotlib, sklearn, tensorboardX; print('imports ok')"
}

if [ "$QUICK" = "1" ]; then
  STEP=(--config tests/tiny_config.py --batch 4 --steps 1 --warmup 1)
  FOLD_EXTRA="--config.train.epochs=1"
  # a mesh of 2 when only a CPU is there: 2 forced host devices (ignored by a GPU backend)
  PAR_ENV=(env "XLA_FLAGS=${XLA_FLAGS:-} --xla_force_host_platform_device_count=2")
else
  STEP=(--batch 40 --steps 5 --warmup 2)
  FOLD_EXTRA=
  PAR_ENV=(env)
fi

fold() {
  local t0=$SECONDS
  "$PY" -m bin.train --config configs/quickstart.py --fold 3 --workdir "$WORK/quickstart" \
    $FOLD_EXTRA || return 1
  echo "quickstart fold 3 wall time: $((SECONDS - t0)) s"
  mkdir -p "$OUT/fold3"
  cp "$WORK"/quickstart/fold3/{result.json,metrics.jsonl,config.json} "$OUT/fold3/"
}
export -f env_report missing_modules install fold
export PY WHEELS WORK OUT FOLD_EXTRA

want() { [[ " ${PARTS:-step parallel fold} " == *" $1 "* ]]; }  # PARTS="step fold": a subset
part 00_env 60 env_report
part 01_install 120 install
want step && part 02_step 240 "$PY" -m benchmarks.step "${STEP[@]}" --models ssa_crnn,acrnn \
  --framework jax,torch --dtype float32,bfloat16 --torch-dtype float32,bfloat16 \
  --json "$OUT/02_step.json"
NDEV=$("${PAR_ENV[@]}" "$PY" -c "import jax; print(jax.device_count())" 2>/dev/null || echo 1)
if [ "$NDEV" -gt 1 ]; then
  DEVS="1,$NDEV"
else
  DEVS=1
  echo "one device: the data-parallel step runs on a mesh of 1 (the step above); nothing to scale"
fi
want parallel && part 03_parallel 120 "${PAR_ENV[@]}" "$PY" -m benchmarks.step "${STEP[@]}" --models ssa_crnn \
  --framework jax --devices "$DEVS" --json "$OUT/03_parallel.json"
want fold && part 04_fold 240 fold

echo "total: $((SECONDS - START)) s; status $status" | tee -a "$OUT/timings.txt"
echo "load headers:"
grep -h -E "^(QUIET|LOADED)" "$OUT"/0*.txt || true
exit $status
