#!/usr/bin/env bash
# The v1 default model: dataset -> StyleGAN2 -> e4e -> SDIC ->
# attribute classifier -> InterFaceGAN directions -> held-out evaluation. v0's commands are kept
# as history in tools/train_default_model_v0.sh. Every stage resumes where it stopped, so
# re-running this script after an interruption continues the work.
#
#   bash tools/train_default_model.sh                  # everything, from the repository root
#   STAGES=data,stylegan2 bash tools/train_default_model.sh   # only some stages
#   WORK=/elsewhere bash tools/train_default_model.sh
#
# v1 fine-tunes v0 stage by stage (init=default): a 2-core CPU session cannot retrain the stack
# from scratch, and with init every session's compute adds up. Stop a stage with SIGTERM (it
# saves); the next stage reads that stage's exports.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-/work}
DATA=$WORK/data
RUNS=$WORK/runs/v1
STAGES=${STAGES:-data,stylegan2,fid,e4e,sdic,directions,package}
V0_COMMIT=${V0_COMMIT:-92f1419}  # a commit whose bundled model is v0, for the generator FID of v0 vs v1
SG_STEPS=${SG_STEPS:-100000}     # an upper bound: stop (SIGTERM saves) once val/fid stops improving
SG_THREADS=${SG_THREADS:-2}      # 1 when another job shares the 2-core machine
# bf16 + channels-last only pay on CPUs with avx512_bf16 (grep avx512_bf16 /proc/cpuinfo); on an
# AVX2-only CPU bf16 is emulated and several times slower: SG_PRECISION=fp32 SG_CHANNELS_LAST=false
E4E_STEPS=${E4E_STEPS:-5000}    # v1 packaged 3,000; v1.1 resumed it to 5,000 (val MSE 0.0698 -> 0.0662)
SDIC_STEPS=${SDIC_STEPS:-9000}   # fine-tuning v0's DIPN and DICN (v0 trained them from scratch for 4,462); v1 3,000; v1.1 was stopped (SIGTERM) at 8,788

want() { [[ ",$STAGES," == *",$1,"* ]]; }
resume() {  # --resume once a run folder has a checkpoint
    [ -f "$1/checkpoints/last.pt" ] && echo --resume || true
}

# 1. data: 30,000 training faces (seed 0) and 5,000 held-out faces (seed 1, never trained on;
#    the FID reference and the evaluation set), 64x64
if want data; then
    python -m tools.faces_dataset.build --seed 0 --count 30000 --size 64 --out "$DATA/faces64" --workers 1 --quiet
    python -m tools.faces_dataset.build --seed 1 --count 5000 --size 64 --out "$DATA/faces64_heldout" --workers 1 --quiet
fi

# 2. StyleGAN2 64x64, StyleGAN2's own discriminator (configs/stylegan2_faces64.yaml, as v0), started
#    from v0's generator (init=default: the bundled model's, 49 kimg) so every session's compute
#    adds up instead of restarting; the discriminator starts fresh. FID of 500 g_ema samples vs
#    the 500 validation images (a 2 % split of the training folder, not trained on) at every
#    validation (run.val_every, 2,500 steps). v1: val/fid 127.1 at step 2,500 and 104.6 at step
#    5,000 (median 0.91 step/s at batch 16, bf16, 2 threads); the v1 export is step 7,000 (v0 +
#    112 kimg, 2.3 h), stopped there for the other stages' time. bf16 autocast + channels-last: about 2x faster per step than fp32 on a CPU with
#    AVX-512 BF16 (docs/training.md, Speed). The projected discriminator was tried first
#    (configs/stylegan2_faces64_projected.yaml) and lost at 0.6-1.3 kimg from scratch; in
#    fine-tuning (stage 2p) it wins FID but collapses diversity, measured after the bundled
#    generator was made.
if want stylegan2; then
    python -m sdic.cli.main train stylegan2 configs/stylegan2_faces64.yaml init=default \
        data.path="$DATA/faces64/images" run.out="$RUNS/stylegan2" run.steps="$SG_STEPS" \
        run.threads="$SG_THREADS" run.precision="${SG_PRECISION:-bf16}" run.channels_last="${SG_CHANNELS_LAST:-true}" run.progress=false \
        run.checkpoint_every=100 fid_every=1000 fid_samples=500 $(resume "$RUNS/stylegan2")
fi

# 2p. (opt-in: STAGES=stylegan2p; not part of the bundled model) the next generator: fine-tune the
#     bundled one with the projected discriminator + DiffAugment. benchmarks/bench_projected.py
#     measured it against the standard discriminator on the same budget (docs/training.md,
#     "Projected vs standard, measured"): FID (1,000 samples) 92.2 -> 72.7 after 4.8 kimg, where
#     the standard discriminator went to 148.7, but sample diversity (pairwise LPIPS) fell from
#     0.195 to 0.070 after 14.4 kimg: check it (tools/generator_fid.py --diversity) on every
#     snapshot before using one; e4e and SDIC must then be re-tuned on it (init=default).
if want stylegan2p; then
    python -m sdic.cli.main train stylegan2 configs/stylegan2_faces64_projected.yaml init=default \
        data.path="$DATA/faces64/images" run.out="$RUNS/stylegan2_projected" run.steps="${SGP_STEPS:-300}" \
        run.threads="$SG_THREADS" run.precision="${SG_PRECISION:-bf16}" run.channels_last="${SG_CHANNELS_LAST:-true}" run.progress=false \
        run.checkpoint_every=100 run.keep_every=100 fid_every=100 fid_samples=500 $(resume "$RUNS/stylegan2_projected")
fi

# 2b. generator FID, v0 against v1, in one run: 5,000 samples (seeds 0-4,999, truncation 1) of each
#     against the 5,000 held-out faces (tools/generator_fid.py; v0's generator read from git)
if want fid; then
    [ -s "$RUNS/v0_faces64.safetensors" ] || git show "$V0_COMMIT:src/sdic/data/models/faces64.safetensors" > "$RUNS/v0_faces64.safetensors"
    python -m tools.generator_fid "$RUNS/v0_faces64.safetensors" "$RUNS/stylegan2/stylegan2.safetensors" \
        --reference "$DATA/faces64_heldout/images" --count 5000 --stats-cache "$DATA/faces64_heldout_fid5000.npz" \
        --out "$RUNS/generator_fid.json" --threads "$SG_THREADS"
fi

# 3. e4e on the frozen v1 generator, its encoder started from v0's (init=default), every W+ delta
#    on from the start (v0's encoder already uses them all)
if want e4e; then
    python -m sdic.cli.main train e4e configs/e4e_faces64.yaml generator="$RUNS/stylegan2/stylegan2.safetensors" \
        init=default data.path="$DATA/faces64/images" data.val_path="$DATA/faces64_heldout/images" \
        run.out="$RUNS/e4e" run.steps="$E4E_STEPS" optim.lr=3e-4 progressive_start=-1 \
        run.val_every=500 run.image_every=500 run.progress=false run.threads="$SG_THREADS" \
        run.precision="${SG_PRECISION:-bf16}" $(resume "$RUNS/e4e")
fi

# 4. SDIC (DIPN + DICN) on the frozen v1 e4e and generator, started from v0's DIPN/DICN (init=default)
if want sdic; then
    python -m sdic.cli.main train sdic configs/sdic_faces64.yaml e4e="$RUNS/e4e/e4e.safetensors" init=default \
        data.path="$DATA/faces64/images" data.val_path="$DATA/faces64_heldout/images" \
        run.out="$RUNS/sdic" run.steps="$SDIC_STEPS" run.batch_size=4 \
        run.val_every=500 run.image_every=500 run.progress=false run.threads="$SG_THREADS" \
        run.precision="${SG_PRECISION:-bf16}" $(resume "$RUNS/sdic")
fi

# 5. attribute classifier on the dataset's labels, then directions in the generator's W
if want directions; then
    [ -f "$RUNS/attr_classifier.safetensors" ] || python -m sdic.cli.main directions train-classifier \
        "$DATA/faces64" -o "$RUNS/attr_classifier.safetensors" --heldout "$DATA/faces64_heldout" --threads "$SG_THREADS"
    # the stored useful ranges: side effects up to 0.35 (0.25 closed glasses' range to 0 .. 0: every
    # direction moves the classifier's fatness score), over one factor grid for all directions,
    # -8 .. 8 in steps of 0.5. The default grid (+-3 std of w along each direction) is too short
    # for smile, whose boundary normal lies where w barely varies (std 0.14): it ended at +-0.42
    # and v1's stored range with it, while sampled faces flip from factor 2-4 (43 % at 2, 86 % at
    # 4; on inverted faces smile stays weak at any factor: docs/default_model.md). v1.1's files
    # were v1's vectors re-assessed on this grid with `directions assess --update` (one more
    # pass); `train --factors` does it in one.
    python -m sdic.cli.main directions train "$RUNS/stylegan2/stylegan2.safetensors" \
        --classifier "$RUNS/attr_classifier.safetensors" -o "$RUNS/directions" --samples 5000 --threads "$SG_THREADS" \
        --samples-cache "$RUNS/direction_samples.safetensors" --max-side-effect 0.35 --factors $(seq -8 0.5 8)
fi

# 6. package it, then the model card's held-out table (e4e vs SDIC, the first 300 held-out faces as for v0)
if want package; then
    python -m tools.package_default_model "$RUNS/sdic/sdic.safetensors" "$RUNS/directions" \
        --name faces64 --directions-set facesjs
    python -m sdic.cli.main evaluate default "$DATA/faces64_heldout/images/000[0-2]??.png" -o "$RUNS/heldout_eval_v11" --batch-size 16
    # the directions on 200 inverted held-out faces (docs/default_model.md, v0's figures: same command)
    python -m sdic.cli.main directions assess-inverted default "$DATA/faces64_heldout" \
        --classifier "$RUNS/attr_classifier.safetensors" -o "$RUNS/assess_inverted_v11" --count 200 --steps 7 --threads "$SG_THREADS"
fi
