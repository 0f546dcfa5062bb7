#!/usr/bin/env bash
# Issue 28's question on real ODIR, in the run folder of benchmarks/odir_judge_grid.sh (same data split, generator,
# synthetic pool, ImageNet-pretrained labeler and judge): the `synthetic-use` set — the x1 synthetic pool mixed,
# pretrain-then-fine-tune, stochastic replacement (alpha 0.5), loss weight 0.5, soft labels, allocation by need —
# each paired against real-only and traditional x1 over seeds. Finished fits of the grid are reused.
#   bash benchmarks/odir_synthetic_use.sh [RUN]     # RUN default runs/grid27; resumable: re-run to continue
#   SEEDS (default 3), THREADS (default 1, pinned to core ${CORE:-1}).
# synthetic.ratio 2.5 keeps the grid's pool (x2 x margin 1.25): allocation need may ask a class for more than 1x.
set -euo pipefail
run="${1:-runs/grid27}"
pin=(env OMP_NUM_THREADS="${THREADS:-1}" taskset -c "${CORE:-1}")
"${pin[@]}" retinaug run --preset odir-cpu --out "$run" --set "experiments.seeds=${SEEDS:-3}" \
  --set "experiments.sets=[synthetic-use]" --set "experiments.only=[]" --set selection.enabled=false \
  --set synthetic.ratio=2.5
