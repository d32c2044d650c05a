#!/usr/bin/env bash
# The whole emoji-model recipe, start to finish: data -> tokenizer -> VQ stage 1 -> token cache
# -> VQ decoder fine-tune -> text encoder + transformer -> export -> check.
#
# Resumable: re-running it skips every finished stage (its output exists) and resumes the
# unfinished one from its last checkpoint (--resume). Stop it any time (kill the process
# group, or let --max-minutes stop a stage); run it again to continue.
#
#   cd tools/train && nohup nice -n 19 env OMP_NUM_THREADS=2 bash run_all.sh > runs/run_all.log 2>&1 &
#
# Environment knobs: PYTHON (default /work/pyenv/bin/python), RUNS (output folder, default
# runs), VQ_STEPS / DEC_STEPS / TR_STEPS (training steps), TR_DEVICE=cuda (or cuda:N: train the text
# encoder + transformer on a CUDA GPU the way the shipped model was: batch 512, bf16, balanced
# emoji, 3986 steps, then 2504 more from those weights; see README.md), TESSERA (a tessera binary: also
# compare its logits with diffusers' in the final check), SMOKE=1 (tiny models and a few steps,
# outputs in runs/smoke: checks the whole chain in a few minutes).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-/work/pyenv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
export PYTHONUNBUFFERED=1

if [ "${SMOKE:-0}" = 1 ]; then
  RUNS=${RUNS:-runs/smoke}
  VQ_STEPS=${VQ_STEPS:-6}; DEC_STEPS=${DEC_STEPS:-4}; TR_STEPS=${TR_STEPS:-6}
  VQ_SIZE="--channels 16 32 32 --groups 8 --codebook 64 --restart-every 3"
  TR_SIZE="--hidden 64 --layers 2 --heads 2 --intermediate 128 --in-channels 32 --block-channels 32 --block-heads 1 --eval-train-n 64"
  EVAL="--log-every 2 --eval-every 1000"
  CHECK="--guidance 1 4"
else
  RUNS=${RUNS:-runs}
  VQ_STEPS=${VQ_STEPS:-1800}; DEC_STEPS=${DEC_STEPS:-800}; TR_STEPS=${TR_STEPS:-4500}
  VQ_SIZE="--channels 32 64 128 --groups 16 --latent 8 --codebook 512"
  TR_SIZE="--hidden 256 --layers 6 --heads 4 --intermediate 512 --in-channels 64 --block-channels 128 --block-heads 2 --text-hidden 128 --text-layers 3 --text-heads 2 --text-proj 128"
  EVAL=""
  CHECK="--guidance 1 4 10"
fi
mkdir -p "$RUNS"
stamp() { echo "=== [$(date '+%Y-%m-%d %H:%M:%S')] $*"; }
T0=$(date +%s)

stamp "1/8 data (npm pack, composite, captions, split)"
$PY data.py

stamp "2/8 tokenizer"
$PY tokenizer.py --out "$RUNS/tokenizer"

if [ ! -f "$RUNS/vq/stage1/config.json" ]; then
  stamp "3/8 VQ stage 1 ($VQ_STEPS steps)"
  $PY train_vq.py --stage vq --out "$RUNS/vq" --steps "$VQ_STEPS" --batch 32 --lr 1e-3 $VQ_SIZE $EVAL --resume
else stamp "3/8 VQ stage 1: done"; fi

stamp "4/8 token cache"
$PY train_vq.py --stage cache --out "$RUNS/vq"

if [ ! -f "$RUNS/vq/final/config.json" ]; then
  stamp "5/8 VQ decoder fine-tune ($DEC_STEPS steps)"
  $PY train_vq.py --stage decoder --out "$RUNS/vq" --steps "$DEC_STEPS" --batch 32 --lr 3e-4 --warmup 50 $EVAL --resume
else stamp "5/8 VQ decoder: done"; fi

TR_DATA=(--tokens "$RUNS/vq/tokens.npz" --tokenizer "$RUNS/tokenizer")
if [ "${TR_DEVICE:-cpu}" != cpu ]; then
  # The shipped model's transformer stage (two phases; GPU runs are not bit-reproducible).
  TR_OUT="$RUNS/transformer_gpu"
  GPU_ARGS=(--device "$TR_DEVICE" --bf16 --batch 512 --per-group 2 --save-fp16 --eval-every 2000 --log-every 250)
  if [ ! -f "$RUNS/transformer_gpu_a/final/transformer/config.json" ]; then
    stamp "6/8 text encoder + transformer on $TR_DEVICE, phase 1 (${TR_GPU_STEPS1:-3986} steps, batch 512)"
    $PY train_transformer.py --out "$RUNS/transformer_gpu_a" "${TR_DATA[@]}" "${GPU_ARGS[@]}" \
      --steps "${TR_GPU_STEPS1:-3986}" --lr 1e-3 --warmup 500 $TR_SIZE $EVAL --resume
  fi
  if [ ! -f "$TR_OUT/final/transformer/config.json" ]; then
    stamp "6/8 text encoder + transformer on $TR_DEVICE, phase 2 (${TR_GPU_STEPS2:-2504} steps from phase 1's weights)"
    $PY train_transformer.py --out "$TR_OUT" "${TR_DATA[@]}" "${GPU_ARGS[@]}" --init-from "$RUNS/transformer_gpu_a/final" \
      --steps "${TR_GPU_STEPS2:-2504}" --lr 5e-4 --warmup 100 --seed 4322 $TR_SIZE $EVAL --resume
  else stamp "6/8 transformer ($TR_DEVICE): done"; fi
else
  TR_OUT="$RUNS/transformer"
  if [ ! -f "$TR_OUT/final/transformer/config.json" ]; then
    stamp "6/8 text encoder + transformer ($TR_STEPS steps)"
    $PY train_transformer.py --out "$TR_OUT" "${TR_DATA[@]}" \
      --steps "$TR_STEPS" --batch 32 --lr 6e-4 --warmup 200 $TR_SIZE $EVAL --resume
  else stamp "6/8 transformer: done"; fi
fi

stamp "7/8 export (fp16 AmusedPipeline folder)"
$PY export.py --out "$RUNS/export/emoji" --vq-dir "$RUNS/vq/final" --transformer-dir "$TR_OUT/final" \
  --tokenizer-dir "$RUNS/tokenizer"

stamp "8/8 check (image grid${TESSERA:+, tessera logits})"
$PY check.py "$RUNS/export/emoji" --out "$RUNS/check_grid.png" $CHECK ${TESSERA:+--tessera "$TESSERA"}

stamp "all done in $(( ($(date +%s) - T0) / 60 )) min (this invocation); pipeline: $RUNS/export/emoji"
