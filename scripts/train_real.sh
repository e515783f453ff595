#!/usr/bin/env bash
# The real-patient zoo and its README figures: leave-one-patient-out cross-validation on the BraTS 2013 patients,
# FLAIR and T1c. Every fold trains on two patients' tumour-free slices, chooses its map scoring on validation,
# calibrates on a third patient's normals and is tested on the fourth; the pat0006 fold's models are registered
# in assets/models (the app's demo patient is pat0006). Resumable: rows already in runs/cv_*.jsonl are skipped.
#   bash scripts/train_real.sh [DATA]      # DATA: folder of BraTS patient folders (default ../shared/data/brats2013)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data/brats2013}
EPOCHS=${EPOCHS:-50}
mkdir -p runs
cv() { ae4ad crossval --data "$DATA" --ship-fold brats_2013_pat0006_1 --ship-root assets/models --keep-root runs/folds \
  --epochs "$EPOCHS" "$@"; }
cv --sequence flair --out runs/cv_flair.jsonl --models intensity,ae-d1,ae-d2,ae-d4,ae-d8,ae-d16,ae-d32,ae-d64,ae-d128
cv --sequence flair --out runs/cv_flair.jsonl --models vae-d16,rdae-d128
cv --sequence t1c --out runs/cv_t1c.jsonl --models intensity,ae-d1,ae-d4,ae-d16,ae-d64,vae-d16,rdae-d128
# ship the AE at the label-free d (16 for both sequences in the README's run), not the whole sweep
for seq in flair t1c; do for d in 1 2 4 8 32 64 128; do rm -rf "assets/models/$seq-ae-d$d"; done; done
ae4ad crossval --finalise runs/cv_flair.jsonl runs/cv_t1c.jsonl --ship-root assets/models  # README tables, cards
