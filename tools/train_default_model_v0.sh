#!/usr/bin/env bash
# HISTORY: the exact commands that made the v0 default model (the first bundled model; model card
# docs/default_model.md). Kept unchanged as the record of v0; tools/train_default_model.sh is v1.
# v0: dataset -> StyleGAN2 -> e4e -> SDIC -> attribute classifier ->
# InterFaceGAN directions -> held-out evaluation. Every stage resumes where it stopped, so
# re-running this script after an interruption continues the work.
#
#   bash tools/train_default_model.sh            # everything, from the repository root
#   WORK=/elsewhere bash tools/train_default_model.sh
#
# Budgets (steps) are the ones used for the shipped model; raise them for a better one.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-/work}
DATA=$WORK/data
RUNS=$WORK/runs/faces64
SG_STEPS=${SG_STEPS:-3061}
E4E_STEPS=${E4E_STEPS:-3000}
SDIC_STEPS=${SDIC_STEPS:-4462}

resume() {  # --resume once a run folder has a checkpoint
    [ -f "$1/checkpoints/last.pt" ] && echo --resume || true
}

# 1. data: 30,000 training faces (seed 0) and 300 held-out faces (seed 1), 64x64
python -m tools.faces_dataset.build --seed 0 --count 30000 --size 64 --out "$DATA/faces64" --workers 2 --quiet
python -m tools.faces_dataset.build --seed 1 --count 300 --size 64 --out "$DATA/faces64_heldout" --workers 2 --quiet

# 2. StyleGAN2 64x64 (about 1 step/s on 2 cores)
sdic train stylegan2 configs/stylegan2_faces64.yaml data.path="$DATA/faces64/images" \
    run.out="$RUNS/stylegan2" run.steps="$SG_STEPS" run.channels_last=true run.val_every=1000 \
    run.image_every=500 run.progress=false run.threads=2 $(resume "$RUNS/stylegan2")

# 3. e4e on the frozen generator; the progressive schedule is compressed to the step budget
sdic train e4e configs/e4e_faces64.yaml generator="$RUNS/stylegan2/stylegan2.safetensors" \
    data.path="$DATA/faces64/images" data.val_path="$DATA/faces64_heldout/images" \
    run.out="$RUNS/e4e" run.steps="$E4E_STEPS" optim.lr=3e-4 progressive_start=200 progressive_every=150 \
    run.val_every=500 run.image_every=500 run.progress=false run.threads=2 $(resume "$RUNS/e4e")

# 4. SDIC (DIPN + DICN) on the frozen e4e and generator
sdic train sdic configs/sdic_faces64.yaml e4e="$RUNS/e4e/e4e.safetensors" \
    data.path="$DATA/faces64/images" data.val_path="$DATA/faces64_heldout/images" \
    run.out="$RUNS/sdic" run.steps="$SDIC_STEPS" run.batch_size=4 \
    run.val_every=500 run.image_every=500 run.progress=false run.threads=2 $(resume "$RUNS/sdic")

# 5. attribute classifier on the dataset's labels, then directions in the generator's W
[ -f "$WORK/runs/attr_classifier.safetensors" ] || sdic directions train-classifier "$DATA/faces64" \
    -o "$WORK/runs/attr_classifier.safetensors" --heldout "$DATA/faces64_heldout" --threads 2
sdic directions train "$RUNS/stylegan2/stylegan2.safetensors" --classifier "$WORK/runs/attr_classifier.safetensors" \
    -o "$RUNS/directions" --samples 5000 --threads 2 --samples-cache "$RUNS/direction_samples.safetensors"

# 6. package it (src/sdic/data/models/faces64.safetensors + directions/facesjs), then the model
#    card's held-out table: all 500 held-out faces, e4e vs SDIC
python -m tools.package_default_model "$RUNS/sdic/sdic.safetensors" "$RUNS/directions" \
    --name faces64 --directions-set facesjs
sdic evaluate default "$DATA/faces64_heldout/images" -o "$RUNS/heldout_eval" --batch-size 16
