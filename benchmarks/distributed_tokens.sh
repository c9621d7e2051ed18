#!/bin/bash
# Tokens/s of one process (2 threads) vs 2 gloo ranks (1 thread each) at the same global batch, CPU.
#   benchmarks/distributed_tokens.sh DATA_DIR [OUT_DIR] [REPEATS]
# Prints: repeat, launch (d1: batch 32; d1a: batch 16 x 2 micro-batches; d2: 2 ranks x batch 16),
# tokens/s, wall seconds, final MLM loss (d1a and d2 must agree: the same micro-batches).
set -euo pipefail
DATA=${1:?dataset directory}; OUT=${2:-runs/bench}; REPEATS=${3:-2}
COMMON=(--data "$DATA" --preset tiny --steps 60 train.log_every=20 train.diag_every=0 train.ckpt_every=100000
        train.progress=false train.device=cpu train.tensorboard=off model.positions=learned train.precision=fp32)
for rep in $(seq "$REPEATS"); do
  rm -rf "$OUT/d1" "$OUT/d1a" "$OUT/d2"
  OMP_NUM_THREADS=2 python -m predrecon train --out "$OUT/d1" "${COMMON[@]}" train.batch_size=32 > /dev/null
  OMP_NUM_THREADS=2 python -m predrecon train --out "$OUT/d1a" "${COMMON[@]}" train.batch_size=16 optim.accum_steps=2 > /dev/null
  OMP_NUM_THREADS=1 torchrun --nproc-per-node 2 -m predrecon train --out "$OUT/d2" "${COMMON[@]}" train.batch_size=16 \
      > /dev/null 2>&1
  for r in d1 d1a d2; do
    python -c "import json; s = json.load(open('$OUT/$r/summary.json')); \
print($rep, '$r', round(s['tokens_per_s']), round(s['wall_s'], 1), round(s['loss_mlm'], 4))"
  done
done
