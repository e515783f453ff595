#!/usr/bin/env bash
# Pack the outcome of scripts/train_zoo.sh into archives small enough to move (<16 MB each):
# zoo*.tar = the weights to ship (seed 0 of each d, the VAE, the rate-distortion AEs); sweep.tar.gz = every card
# of the sweep (no weights) and the sweep table/plots.
set -euo pipefail
SRC=${1:-runs/zoo}
DST=${2:-runs/packed}
mkdir -p "$DST"
cd "$SRC"
tar cf "$DST/zoo1.tar" sweep/models/ae-d1-seed0 sweep/models/ae-d2-seed0 sweep/models/ae-d4-seed0
tar cf "$DST/zoo2.tar" sweep/models/ae-d8-seed0 sweep/models/ae-d16-seed0 sweep/models/ae-d32-seed0
tar cf "$DST/zoo3.tar" sweep/models/ae-d64-seed0 sweep/models/ae-d128-seed0 extra/vae-d16
tar cf "$DST/zoo4.tar" extra/rdae-d128-rw0.0003 extra/rdae-d128-rw0.001 extra/rdae-d128-rw0.003
tar czf "$DST/sweep.tar.gz" --exclude=model.safetensors --exclude=checkpoint.pt sweep extra
ls -la "$DST"
