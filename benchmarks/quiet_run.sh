#!/usr/bin/env bash
# The one quiet run behind benchmarks/RESULTS.md's tables (issue 14). Run it on a machine with
# nothing else running, from the repository root:
#
#   bash benchmarks/quiet_run.sh OUTDIR            # paper sizes, ~20 min on the 2-core machine
#   PROFILE=0 bash benchmarks/quiet_run.sh OUTDIR  # without the profile, ~15 min
#   QUICK=1 bash benchmarks/quiet_run.sh OUTDIR    # tiny sizes: checks the script end to end
#
# Knobs (environment): QUICK=1 (quickstart config, batch 4 = one segment per class, 1 timed step, no waits);
# PROFILE=0 skips the profile (part 3); PYTHON (default: python); WAIT_QUIET seconds that each
# part first waits for the 1-minute load average to fall to 0.5 (default 180; the previous part's
# own load takes ~90 s to decay below 0.5 on 2 cores).
#
# Writes into OUTDIR (created; files of an earlier run there are overwritten):
#   00_uptime_before.txt, 99_uptime_after.txt      `uptime` and the load average around the run
#   01_idle.txt / .json    loadcheck over a 15 s idle sample before anything starts (the other
#                          processes' CPU share with nothing of ours running)
#   02_step.txt / .json    python -m benchmarks.step, paper sizes, batch 40: SSA-CRNN and ACRNN; JAX float32
#                          and bfloat16 (train.py's train and eval steps with their "tuned" XLA
#                          options, the config's conv and BLSTM), PyTorch float32; the float32
#                          GEMM rate of XLA and torch measured in the same process; the load
#                          header (QUIET / LOADED — no verdict) and, only if quiet, the goal verdict
#   03_profile.txt / .json python -m benchmarks.step --profile at batch 8 (layers at paper size), float32,
#                          both models and frameworks: per layer and direction shares (the absolute
#                          seconds come from 02_step, profiling adds overhead)
#   timings.txt            wall seconds of each part
#   *.err                  each part's stderr (progress lines)
# Quote a table only if its header line says QUIET.
#
# Budget at paper size on the quiet 2-core machine (issue 14's quiet figures: SSA-CRNN step ~40 s
# in JAX and in PyTorch, ACRNN ~20 s; XLA's bfloat16 convolutions cost about the CPU time of its
# float32 ones on this CPU, which has no avx512_bf16): part 2 = per runner compile + 1 warm-up + 2
# timed steps + 3 inference batches: SSA-CRNN JAX ~3.3 min per dtype, PyTorch ~2.4 min; ACRNN about
# half; ~15 min with the GEMM rate and the FLOP count. Part 3 ~3-4 min after ~1.5 min for the load
# to decay. Total ~20 min (~15 min with PROFILE=0); an estimate, not yet timed on a quiet machine.

set -u -o pipefail

if [ $# -ne 1 ]; then
  echo "usage: [QUICK=1] [PROFILE=0] bash benchmarks/quiet_run.sh OUTDIR" >&2
  exit 2
fi
OUT=$1
PY=${PYTHON:-python}
QUICK=${QUICK:-0}
PROFILE=${PROFILE:-1}
cd "$(dirname "$0")/.."
mkdir -p "$OUT"

if [ "$QUICK" = "1" ]; then
  CONFIG=(--config configs/quickstart.py)
  STEP_SIZE=(--batch 4 --steps 1 --warmup 1)
  PROF_SIZE=(--batch 4 --steps 1)
  WAIT=${WAIT_QUIET:-0}
  IDLE_S=2
else
  CONFIG=()
  STEP_SIZE=(--batch 40 --steps 2 --warmup 1)
  PROF_SIZE=(--batch 8 --steps 1)
  WAIT=${WAIT_QUIET:-180}
  IDLE_S=15
fi

status=0
: > "$OUT/timings.txt"
part() {  # part NAME COMMAND...: runs it, stdout -> NAME.txt, stderr -> NAME.err, times it
  local name=$1; shift
  local t0=$SECONDS
  echo "== $name: $*" | tee -a "$OUT/timings.txt" >&2
  "$@" > "$OUT/$name.txt" 2> "$OUT/$name.err"
  local rc=$?
  echo "   $name: rc $rc, $((SECONDS - t0)) s" | tee -a "$OUT/timings.txt" >&2
  if [ $rc -ne 0 ]; then
    status=1
    tail -n 20 "$OUT/$name.err" >&2
  fi
}

{ date -u; uptime; } > "$OUT/00_uptime_before.txt"
part 01_idle "$PY" -m benchmarks.loadcheck --sample "$IDLE_S" --json "$OUT/01_idle.json"
part 02_step "$PY" -m benchmarks.step "${CONFIG[@]}" "${STEP_SIZE[@]}" --models ssa_crnn,acrnn \
  --framework jax,torch --dtype float32,bfloat16 --xla-options tuned --eval-options tuned \
  --wait-quiet "$WAIT" --json "$OUT/02_step.json"
if [ "$PROFILE" = "1" ]; then
  part 03_profile "$PY" -m benchmarks.step --profile "${CONFIG[@]}" "${PROF_SIZE[@]}" \
    --models ssa_crnn,acrnn --framework jax,torch --wait-quiet "$WAIT" --json "$OUT/03_profile.json"
fi
{ date -u; uptime; } > "$OUT/99_uptime_after.txt"

echo "total: $SECONDS s" | tee -a "$OUT/timings.txt" >&2
echo "load headers:" >&2
grep -h -E "^(QUIET|LOADED)" "$OUT"/0*.txt >&2 || true
exit $status
