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
# runs), VQ_STEPS / DEC_STEPS / TR_STEPS (training steps), TESSERA (a tessera binary: also
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

if [ ! -f "$RUNS/transformer/final/transformer/config.json" ]; then
  stamp "6/8 text encoder + transformer ($TR_STEPS steps)"
  $PY train_transformer.py --out "$RUNS/transformer" --tokens "$RUNS/vq/tokens.npz" --tokenizer "$RUNS/tokenizer" \
    --steps "$TR_STEPS" --batch 32 --lr 6e-4 --warmup 200 $TR_SIZE $EVAL --resume
else stamp "6/8 transformer: done"; fi

stamp "7/8 export (fp16 AmusedPipeline folder)"
$PY export.py --out "$RUNS/export/emoji" --vq-dir "$RUNS/vq/final" --transformer-dir "$RUNS/transformer/final" \
  --tokenizer-dir "$RUNS/tokenizer"

stamp "8/8 check (image grid${TESSERA:+, tessera logits})"
$PY check.py "$RUNS/export/emoji" --out "$RUNS/check_grid.png" $CHECK ${TESSERA:+--tessera "$TESSERA"}

stamp "all done in $(( ($(date +%s) - T0) / 60 )) min (this invocation); pipeline: $RUNS/export/emoji"
