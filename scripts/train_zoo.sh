#!/usr/bin/env bash
# Train the shipped zoo and the AE4AD sweep on the demo data (one GPU; runs in parallel processes).
#   EPOCHS=400 JOBS=12 bash scripts/train_zoo.sh runs/zoo
# Then: python scripts/publish_zoo.py runs/zoo   (copies the chosen runs into assets/models as float16 + cards)
set -euo pipefail
OUT=${1:-runs/zoo}
EPOCHS=${EPOCHS:-400}
JOBS=${JOBS:-12}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
# 1. the sweep: AE for each d, 3 seeds (seed 0 of each d becomes the zoo's ae-dD)
$PY -m ae4ad_core.cli sweep --data demo --d 1,2,4,8,16,32,64,128 --seeds 3 --epochs "$EPOCHS" \
    --jobs "$JOBS" --out "$OUT/sweep" -- --float16 &
# 2. the VAE (KL and combined modes) and rate-distortion AEs (entropy-controlled, d up to 128)
for spec in "vae 16 0" "rdae 128 0.0003" "rdae 128 0.001" "rdae 128 0.003"; do
  set -- $spec
  name="$1-d$2"; [ "$1" = rdae ] && name="rdae-d$2-rw$3"
  $PY -m ae4ad_core.training --data demo --kind "$1" --d "$2" --rate-weight "${3:-0}" --epochs "$EPOCHS" \
      --float16 --quiet --name "$name" --out "$OUT/extra" &
done
wait
echo "done: $OUT"
