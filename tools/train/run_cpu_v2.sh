#!/usr/bin/env bash
# The default model v2's chain on the project machine's CPU, spread over as many sessions as it
# takes: every invocation continues where the last one stopped and returns before MINUTES (a
# session's wall-clock share) are up. Same stages and sizes as run_device_v2.sh, CPU batch sizes
# and learning rates, bf16 autocast (1.3-1.5x faster on a CPU with AVX-512 BF16), fixed
# schedules (BASE_STEPS, SR_STEPS) so that a resumed run is the run that would have gone
# straight through (train_transformer.py / train_super_res.py --resume are exact). A GPU run (run_device_v2.sh) supersedes it; pass this run's tokenizer to that one
# (TOKENIZER=RUNS/tokenizer) to keep the two comparable.
#
#   nohup nice -n 19 env MINUTES=150 bash run_cpu_v2.sh >> runs/v2cpu/chain.log 2>&1 &
#
# Stages (each skipped once its output exists): unpack the pack (pack_v2.py), tokenizer
# (tokenizer.py --captions, 2048 entries), VQ (VQ_DIR as it is, default device/vq2: it meets the
# tokenizer targets), token cache (train_super_res.py --stage cache), base (train_transformer.py
# on the lo tokens), export (export.py -> RUNS/export/v2), super-resolution (train_super_res.py
# --stage train), its export (--stage export --card). Exit 0: the chain is done; 3: out of time,
# run it again; anything else: a stage failed (its log says which).
#
# Environment: MINUTES (150), RUNS (runs/v2cpu), PYTHON (python3), OMP_NUM_THREADS (2),
# BASE_STEPS (16000), SR_STEPS (6000), VQ_DIR (device/vq2), PACK (device/v2_data.xz).
set -u
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
RUNS=${RUNS:-runs/v2cpu}
DATA=$RUNS/data
TOK=$RUNS/tokenizer
VQ_DIR=${VQ_DIR:-device/vq2}
PACK=${PACK:-device/v2_data.xz}
BASE_STEPS=${BASE_STEPS:-16000}
SR_STEPS=${SR_STEPS:-6000}
MINUTES=${MINUTES:-150}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
T0=$(date +%s)
mkdir -p "$RUNS"

stamp() { echo "=== [$(date '+%F %H:%M:%S') +$(( $(date +%s) - T0 ))s] $*"; }
# minutes left of this invocation's share, less a reserve for the checkpoint and final evaluation
left() { awk -v m="$MINUTES" -v e="$(( $(date +%s) - T0 ))" 'BEGIN { printf "%.1f", m - e / 60 - 4 }'; }
# run a training stage in the time left: 0 done, 3 out of time (checkpointed), else failed
train() {
  local l
  l=$(left)
  if awk -v l="$l" 'BEGIN { exit !(l < 2) }'; then stamp "no time left for $1"; exit 3; fi
  stamp "$1 for at most $l minutes: ${*:2}"
  "${@:2}" --resume --max-minutes "$l"
  local rc=$?
  stamp "$1: exit $rc"
  [ "$rc" = 0 ] || exit "$rc"
}

stamp "v2 CPU chain: runs $RUNS, base $BASE_STEPS / SR $SR_STEPS steps, $MINUTES minutes, $OMP_NUM_THREADS threads"
[ -f "$DATA/captions_svg.json" ] || "$PY" pack_v2.py unpack --pack "$PACK" --data-dir "$DATA" || exit 1
[ -f "$TOK/vocab.json" ] || "$PY" tokenizer.py --captions "$DATA/captions_svg.json" --vocab-size 2048 \
  --out "$TOK" --force || exit 1
if [ ! -f "$RUNS/vq2/stage1/diffusion_pytorch_model.safetensors" ]; then
  mkdir -p "$RUNS/vq2" && cp -r "$VQ_DIR/stage1" "$VQ_DIR/result_vq2.json" "$RUNS/vq2/" || exit 1
fi
if [ ! -f "$RUNS/sr/sr_tokens.npz" ]; then
  stamp "token cache"
  "$PY" train_super_res.py --stage cache --out "$RUNS/sr" --vq "$RUNS/vq2/stage1" --data-dir "$DATA" || exit 1
fi

# base: train_transformer.py's default size (the shipped model's, run_device_v2.sh's SIZE), the
# CPU recipe's batch and learning rate
if [ ! -f "$RUNS/base/final/transformer/config.json" ]; then
  train base "$PY" train_transformer.py --out "$RUNS/base" --tokens "$RUNS/sr/sr_tokens.npz" --tokens-key lo \
    --tokenizer "$TOK" --device cpu --bf16 --batch 32 --per-group 2 --save-fp16 --steps "$BASE_STEPS" \
    --eval-every 500 --log-every 25 --lr 6e-4 --warmup 200
fi
if [ ! -f "$RUNS/export/v2/model_index.json" ]; then
  stamp "export the base pipeline"
  "$PY" export.py --out "$RUNS/export/v2" --vq-dir "$RUNS/vq2/stage1" --transformer-dir "$RUNS/base/final" \
    --tokenizer-dir "$TOK" --svg-data --sources "$DATA/SOURCES_svg.md" || exit 1
fi

# super-resolution: train_super_res.py's default size, conditioned by the exported base's text encoder
if [ ! -f "$RUNS/sr/final/config.json" ]; then
  train sr "$PY" train_super_res.py --stage train --out "$RUNS/sr" --base "$RUNS/export/v2" --device cpu --bf16 \
    --batch 32 --steps "$SR_STEPS" --eval-every 500 --log-every 25 --lr 6e-4 --warmup 200
fi
if [ ! -d "$RUNS/export/v2/super_res" ]; then
  stamp "export the super-resolution stage"
  "$PY" train_super_res.py --stage export --out "$RUNS/sr" --model-out "$RUNS/export/v2" --base "$RUNS/export/v2" \
    --card || exit 1
fi
stamp "chain done: $RUNS/export/v2"
