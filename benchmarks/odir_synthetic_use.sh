#!/usr/bin/env bash
# Issue 28's question on real ODIR with the ImageNet-pretrained labeler and judge: the `synthetic-use` set — the x1
# synthetic pool mixed, pretrain-then-fine-tune, stochastic replacement (alpha 0.5), loss weight 0.5, soft labels,
# allocation by need — each paired against real-only and traditional x1 over seeds.
# It runs in a copy of benchmarks/odir_judge_grid.sh's run folder (same split, generator, synthetic pool, labeler;
# the finished real-only and traditional fits are reused), labelled with policy `all` (POLICY): the img2img child
# keeps its parent's class. Under the grid's `relabel`, the 128 px labeler reads almost every 64 px synthetic G, A
# and H image as another class (a size effect: benchmarks/lowres_control.py), so x1 held 33 G, 1 A and 5 H rows.
#   cp -a runs/grid27 runs/synuse && bash benchmarks/odir_synthetic_use.sh runs/synuse   # resumable: re-run it
#   SEEDS (default 3); SETS (default synthetic-use) the named sets; ONLY (default: the whole set) names scenarios to run; one fit at a time with THREADS
#   (default 1) torch threads on CORES (default 1). 2 threads on both cores are faster only with nothing else
#   running: another job on one core slowed a 2-thread fit ~7x here (5 img/s against ~35). WORKERS=2 runs two
#   1-thread fits side by side on Ray (110 s per 1,226-image epoch per worker here, with other work on the cores).
#   FOLDS=5 in a new folder runs the whole odir-cpu pipeline once per patient-level fold (generator, pool and labeler
#   of each fold trained on its train patients; RUN/pooled/ pools the folds with the corrected resampled t-test).
# synthetic.ratio 2.5 keeps the grid's pool (x2 x margin 1.25): allocation need may ask a class for more than 1x.
set -euo pipefail
run="${1:?give the run folder: a copy of runs/grid27}"
if [ "${WORKERS:-1}" -gt 1 ]; then
  # each Ray fit sets its own torch threads (ray.num_cpus, 1); THREADS (default 2) is for the stages before them
  executor=(--set experiments.executor=ray --set "experiments.workers=$WORKERS"); threads="${THREADS:-2}"
else
  executor=(--set experiments.executor=local); threads="${THREADS:-1}"
fi
OMP_NUM_THREADS="$threads" taskset -c "${CORES:-1}" retinaug run --preset odir-cpu --out "$run" --set "data.folds=${FOLDS:-1}" \
  --set "experiments.seeds=${SEEDS:-3}" --set "experiments.sets=[${SETS:-synthetic-use}]" --set "experiments.only=[${ONLY:-}]" \
  "${executor[@]}" --set selection.enabled=false --set synthetic.ratio=2.5 --set "label.policy=${POLICY:-all}"
