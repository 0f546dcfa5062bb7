#!/usr/bin/env bash
# The 5-class scenario grid with the img2img generator chosen by benchmarks/generators_odir.py, on real ODIR-5K:
# real-only, + synthetic x1 and x2 (ddpm-all, img2img from real TRAIN parents), + traditional x1, 5 seeds, paired
# against real-only on the same test patients. Reuses the benchmark's prepared data, labeler and ddpm-all generator
# (run generators_odir.py first, or `generators_odir.py --rows ddpm-all --train-only` for the generator alone), so
# only sampling, labeling and the classifier fits run here (~1 h on one core).
#   bash benchmarks/odir_img2img_grid.sh WORK [STRENGTH] [POLICY]   # WORK: the generators_odir.py --work folder
#   POLICY: the label stage's policy, relabel (the default: off-class images take the labeler's class) or agree
#   (they are dropped); RATIO (default 2.5): synthetic images sampled per real train image of a class (agree keeps
#   fewer, so give it more: 3.5); GENERATOR (default ddpm-all): which row's generator of generators_odir.py, e.g.
#   ldm-128; ONLY (default the four below): comma-separated scenarios, e.g. 5class-trad-x1,5class-syn-x1-trad-x1
#   (synthetic on top of traditional, paired against traditional alone); INIT (default scratch): the classifier's
#   experiments.train.init, e.g. all-classes (warm start from an 8-class fit on the same train patients)
set -euo pipefail
work="${1:?usage: odir_img2img_grid.sh WORK [STRENGTH] [POLICY]}"
strength="${2:-0.5}"
policy="${3:-relabel}"
ratio="${RATIO:-2.5}"
generator="${GENERATOR:-ddpm-all}"
init="${INIT:-scratch}"
run="$work/grid-img2img-$strength"
[ "$generator" = ddpm-all ] || run="$work/grid-$generator-img2img-$strength"
[ "$policy" = relabel ] || run="$run-$policy"
[ "$init" = scratch ] || run="$run-init-$init"
mkdir -p "$run"
[ -e "$run/data" ] || cp -r "$work/data" "$run/data"
cat > "$run/grid.yaml" <<EOF
experiments:
  sets: [paper-5class-synthetic, paper-5class-vs-traditional, synthetic-on-traditional]
  only: [${ONLY:-5class-syn-x1,5class-syn-x2,5class-trad-x1,5class-syn-x1-trad-x1}]
EOF
retinaug generate --generator "$work/rows/$generator/generator" --data "$run/data" --out "$run/synthetic" \
  --ratio "$ratio" --classes G,C,A,H,M --mode img2img --strength "$strength" --steps 20 --guidance 2.0 \
  --batch-size 32 --precision auto
retinaug label --model "$work/labeler" --synthetic "$run/synthetic" --out "$run/label" --policy "$policy" --threshold 0.3
retinaug augment --data "$run/data" --out "$run/augment" --ratio 1
retinaug experiment --run "$run" --preset odir-cpu --config "$run/grid.yaml" --set "experiments.train.init=$init"
