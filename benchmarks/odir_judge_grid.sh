#!/usr/bin/env bash
# The paper's 5-class grid re-read with the ImageNet-pretrained judge and labeler (issue 27, item 4): the odir-cpu
# preset as shipped (ddpm img2img 0.5, policy relabel, `recipe: auto` = tf_efficientnet_lite0 from its ImageNet
# weights at 128 px where `retinaug[imagenet]` is installed), real-only vs + synthetic and + traditional, paired over
# seeds on the same held-out patients; then the audit of the same images with ImageNet features beside the labeler's.
#   bash benchmarks/odir_judge_grid.sh [RUN]        # RUN default runs/grid27; resumable: re-run to continue
#   SEEDS (default 3), ONLY (default 5class-syn-x1,5class-trad-x1; e.g. add 5class-syn-x2,5class-trad-x2 later:
#   finished fits are kept), THREADS (default 1, pinned to core ${CORE:-1}).
set -euo pipefail
run="${1:-runs/grid27}"
only="${ONLY:-5class-syn-x1,5class-trad-x1}"
pin=(env OMP_NUM_THREADS="${THREADS:-1}" taskset -c "${CORE:-1}")
"${pin[@]}" retinaug run --preset odir-cpu --out "$run" --set "experiments.seeds=${SEEDS:-3}" \
  --set "experiments.only=[$only]" --set selection.enabled=false
# The same synthetic images audited in ImageNet feature space (FID floors of both extractors, issue 27 item 3); CAS
# does not depend on the features: the run's quality/audit.json has it
[ -f "$run/quality-imagenet/audit.json" ] || "${pin[@]}" retinaug audit --synthetic "$run/label" --data "$run/data" \
  --labeler "$run/labeler" --extractor imagenet --no-cas --out "$run/quality-imagenet"
