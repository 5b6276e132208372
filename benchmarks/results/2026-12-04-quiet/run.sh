#!/bin/bash
# Quiet run for issue 23 (winograd vs xla vs PyTorch), 2026-12-04. Study paused, no helpers, no tests.
cd /work/main
OUT=/work/bench_q/out; mkdir -p $OUT
{ date -u; uptime; } > $OUT/00_uptime_before.txt
python -m benchmarks.loadcheck --sample 10 --json $OUT/01_idle.json > $OUT/01_idle.txt 2>&1
/usr/bin/time -v python -m benchmarks.step --batch 40 --steps 2 --warmup 1 --models ssa_crnn,acrnn \
  --framework jax,torch --dtype float32 --conv-impl xla,winograd --xla-options tuned --eval-options tuned \
  --wait-quiet 60 --json $OUT/02_step.json > $OUT/02_step.txt 2> $OUT/02_step.err
{ date -u; uptime; } > $OUT/02b_uptime.txt
python -m benchmarks.winograd_probe --batch 40 --rounds 3 --variants xla,time4,freq4 > $OUT/03_probe.txt 2> $OUT/03_probe.err
{ date -u; uptime; } > $OUT/99_uptime_after.txt
python -m benchmarks.inference --json $OUT/04_inference.json --wait-quiet 60 > $OUT/04_inference.txt 2> $OUT/04_inference.err
{ date -u; uptime; } > $OUT/99b_uptime_after.txt
