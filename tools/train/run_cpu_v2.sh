#!/usr/bin/env bash
# The default model v2's chain on the project machine's CPU, one stage per session.
#
# A project machine keeps nothing from one session to the next but git: runs/, data/ and the
# Python environment are gone, and so is a half-trained checkpoint. So every stage here runs to
# its end within one invocation, on a schedule sized to the time it has (--budget-minutes: the
# steps are set from the speed measured at steps 20-60, so the cosine schedule ends on time),
# and writes what it finished into KEEP (tools/train/v2/, tracked), which is then committed;
# the next session's invocation starts from there:
#
#   KEEP/vq2/     train_vq2.py --bf16, kept with fp16 weights (--keep; held-out PSNR and colour
#                 probe re-measured on them). Used as it is by the later stages and by
#                 run_device_v2.sh (VQ_DIR).
#   KEEP/model/   the base AmusedPipeline folder (export.py: the learned 2048-entry tokenizer, text
#                 encoder, UVit2D, the VQ above; fp16), then, in a later session, the same folder
#                 with super_res/ (train_super_res.py --stage export --card): the two-stage model.
#
# A stage starts only with at least its minimum (VQ_MIN_MIN, BASE_MIN_MIN, SR_MIN_MIN minutes)
# left; with less, or after finishing one, the script exits 3: commit KEEP and run it again in the
# next session. Exit 0: KEEP/model is the finished two-stage folder (then tools/train/README.md's
# "Installing it as the default model"). Anything else: a stage failed (its log says which).
#
#   cd tools/train && nohup nice -n 19 env PYTHON=… MINUTES=150 bash run_cpu_v2.sh >> runs/v2cpu/chain.log 2>&1 &
#   git add v2 && git commit …                       # after it exits 3 or 0
#
# Each session also rebuilds what is not kept (about 15 minutes, included in MINUTES): the SVG
# data (data_svg.py --sizes 64,128, ~2 minutes), the tokenizer (base session only) and the token
# cache through KEEP/vq2's fp16 weights (~9 minutes; deterministic, so every stage sees the
# tokens the shipped VQ gives).
#
# Speeds on the 2-core EPYC (AVX-512 BF16), idle, batch 32: VQ 0.57 s/step (bf16; fp32 1.21);
# base 0.56 s/step compiled (torch.compile, ~80 s to compile; eager bf16 0.73); SR ~1.3-1.8 s/step.
#
# Environment: MINUTES (150: this invocation's share of the session), PYTHON (python3), KEEP (v2),
# RUNS (runs/v2cpu), DATA (data), OMP_NUM_THREADS (2), VQ_MAX / BASE_MAX / SR_MAX (the longest a
# stage trains: 110 / 120 / 120 minutes), VQ_MIN_MIN / BASE_MIN_MIN / SR_MIN_MIN (60 / 75 / 75);
# MORE_BASE=1 (one more base session, stage 2b below) with LR_MORE (its peak learning rate, 3e-4)
# and MORE_PREFIX (its logs' prefix in KEEP, base_more);
# SR_FROM=DIR (stage 3 warm-starts from a finished SR stage: DIR/super_res, e.g. the one trained
# against the base that a GPU run continued, kept aside before the new base replaced KEEP/model;
# peak LR 3e-4, and SR_MAX defaults to 60 minutes).
set -u
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
KEEP=${KEEP:-v2}
RUNS=${RUNS:-runs/v2cpu}
DATA=${DATA:-data}
MINUTES=${MINUTES:-150}
VQ_MAX=${VQ_MAX:-110}; BASE_MAX=${BASE_MAX:-120}
if [ -n "${SR_FROM:-}" ]; then SR_MAX=${SR_MAX:-60}; SR_MIN_MIN=${SR_MIN_MIN:-30}; else SR_MAX=${SR_MAX:-120}; fi
VQ_MIN_MIN=${VQ_MIN_MIN:-60}; BASE_MIN_MIN=${BASE_MIN_MIN:-75}; SR_MIN_MIN=${SR_MIN_MIN:-75}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
T0=$(date +%s)
mkdir -p "$RUNS" "$KEEP"

stamp() { echo "=== [$(date '+%F %H:%M:%S') +$(( $(date +%s) - T0 ))s] $*"; }
# minutes left of this invocation's share, less a reserve for the final evaluation and export
left() { awk -v m="$MINUTES" -v e="$(( $(date +%s) - T0 ))" 'BEGIN { printf "%.1f", m - e / 60 - 8 }'; }
smaller() { awk -v a="$1" -v b="$2" 'BEGIN { print (a < b) ? a : b }'; }
# the training budget for a stage (its maximum, or what is left; printed), or exit 3 below its minimum
budget() {
  local l b
  l=$(left)
  b=$(smaller "$l" "$2")
  if awk -v b="$b" -v m="$3" 'BEGIN { exit !(b < m) }'; then
    stamp "$1 needs at least $3 minutes, $l are left: commit $KEEP and run again in the next session" >&2
    exit 3
  fi
  echo "$b"
}
done_stage() { stamp "$1 done: commit $KEEP (git add $KEEP && git commit), then run again in the next session"; exit 3; }
finish() { awk -v b="$1" 'BEGIN { printf "%.1f", b + 5 }'; }  # --finish-minutes: a hard stop a little later

stamp "v2 CPU chain: keep $KEEP, runs $RUNS, $MINUTES minutes, $OMP_NUM_THREADS threads"
[ -f "$DATA/emoji_svg128.npz" ] && [ -f "$DATA/captions_svg.json" ] \
  || "$PY" data_svg.py --sizes 64,128 || exit 1

# 1. VQ (one session)
if [ ! -f "$KEEP/vq2/result_vq2.json" ]; then
  b=$(budget vq2 "$VQ_MAX" "$VQ_MIN_MIN") || exit $?
  stamp "vq2 for $b minutes"
  "$PY" train_vq2.py --out "$RUNS/vq2" --data-dir "$DATA" --bf16 --steps 1000000 --budget-minutes "$b" \
    --finish-minutes "$(finish "$b")" --probe-every 500 --eval-every 500 --resume || exit 1
  "$PY" train_vq2.py --out "$RUNS/vq2" --data-dir "$DATA" --keep "$KEEP/vq2" || exit 1
  done_stage vq2
fi

cache() {
  if [ ! -f "$RUNS/sr/sr_tokens.npz" ]; then
    stamp "token cache through $KEEP/vq2"
    "$PY" train_super_res.py --stage cache --out "$RUNS/sr" --vq "$KEEP/vq2/stage1" --data-dir "$DATA" || exit 1
  fi
}

# KEEP/PREFIX_log.txt and KEEP/PREFIX_result.json from the run folder FROM
keep_logs() { for f in log.txt result.json; do [ -f "$1/$f" ] && cp "$1/$f" "$KEEP/$2_$f"; done; }

# One base session: text encoder + UVit2D at train_transformer.py's defaults (the shipped model's
# sizes, run_device_v2.sh's SIZE) and the CPU recipe's batch, trained into RUNS/NAME with the
# tokenizer TOKENIZER and peak learning rate LR (more train_transformer.py arguments follow), then
# exported with that tokenizer as KEEP/model (replacing it; NOTE: a line for its card's training
# section) and its log kept as KEEP/PREFIX_*.
base_session() {
  local name=$1 tokenizer=$2 lr=$3 prefix=$4 note=$5 b
  shift 5
  cache
  b=$(budget base "$BASE_MAX" "$BASE_MIN_MIN") || exit $?
  stamp "$prefix for $b minutes"
  "$PY" train_transformer.py --out "$RUNS/$name" --tokens "$RUNS/sr/sr_tokens.npz" --tokens-key lo \
    --tokenizer "$tokenizer" --device cpu --bf16 --compile --batch 32 --per-group 2 --save-fp16 \
    --steps 1000000 --budget-minutes "$b" --finish-minutes "$(finish "$b")" --eval-every 500 --log-every 25 \
    --lr "$lr" --warmup 200 "$@" || exit 1
  local vq="$KEEP/vq2/stage1"  # the decoder stage's VQ (same tokens, train_vq2.py --decoder-only) if kept
  [ -f "$KEEP/vq2/decoder/config.json" ] && vq="$KEEP/vq2/decoder"
  "$PY" export.py --out "$RUNS/export/$name" --vq-dir "$vq" --transformer-dir "$RUNS/$name/final" \
    --tokenizer-dir "$tokenizer" --svg-data --sources "$DATA/SOURCES_svg.md" \
    --recipe run_cpu_v2.sh --training-note "$note" || exit 1
  # A super-resolution stage (MORE_BASE=1 after stage 3, which froze the text encoder it
  # cross-attends to) stays with the new base, and so does its card section.
  local kept="$RUNS/$name/kept"
  rm -rf "$kept"
  if [ -d "$KEEP/model/super_res" ]; then
    mkdir -p "$kept" && mv "$KEEP/model/super_res" "$KEEP/model/MODEL_CARD.md" "$kept/" || exit 1
  fi
  rm -rf "$KEEP/model" && mkdir -p "$KEEP/model" && cp -r "$RUNS/export/$name/." "$KEEP/model/" || exit 1
  if [ -d "$kept/super_res" ]; then
    mv "$kept/super_res" "$KEEP/model/" && "$PY" -c 'import sys; from train_super_res import carry_card_section; \
carry_card_section(*sys.argv[1:])' "$kept/MODEL_CARD.md" "$KEEP/model/MODEL_CARD.md" || exit 1
    stamp "super_res/ and its card section carried over to the new base"
  fi
  keep_logs "$RUNS/$name" "$prefix"
  done_stage "$prefix"
}

# 2. base (one session), with a tokenizer learned from v2's captions
if [ ! -f "$KEEP/model/model_index.json" ]; then
  [ -f "$RUNS/tokenizer/vocab.json" ] || "$PY" tokenizer.py --captions "$DATA/captions_svg.json" \
    --vocab-size 2048 --out "$RUNS/tokenizer" --force || exit 1
  base_session base "$RUNS/tokenizer" 6e-4 base "" --resume
fi

# 2b. MORE_BASE=1 (a session instead of 3, as many times as wanted): more training for the kept
# base, which one CPU session leaves far short of the shipped model's shapes (v2/README.md). A warm
# restart: from KEEP/model's weights (--init-from; fresh optimiser, its own cosine schedule from
# LR_MORE) with KEEP/model's own tokenizer (a retrained one would differ in its ids: tokenizer.py),
# exported over KEEP/model. Once KEEP/model has super_res/, that stage cross-attends to the base's
# frozen text encoder, so the session trains the transformer alone (--freeze-text-encoder) and the
# super-resolution stage stays valid: super_res/ and its card section are carried over to the new
# export.
if [ "${MORE_BASE:-0}" = 1 ]; then
  rm -rf "$RUNS/base_more"
  FREEZE=()
  [ -d "$KEEP/model/super_res" ] && FREEZE=(--freeze-text-encoder)  # base_session carries super_res/ over
  # Logs kept as KEEP/<MORE_PREFIX>N_*; the card's training note is the kept one's with this
  # session added.
  prefix=${MORE_PREFIX:-base_more}
  n=$(( $(ls "$KEEP/$prefix"*_result.json 2> /dev/null | wc -l) + 1 ))
  old_note=$(awk '/masked-token accuracy:/ {on = 1; next} on && /^ *$/ {exit} on' "$KEEP/model/MODEL_CARD.md" \
    | sed 's/^ *//' | tr '\n' ' ' | sed 's/ *$//')
  base_session base_more "$KEEP/model/tokenizer" "${LR_MORE:-3e-4}" "$prefix$n" \
    "${old_note:+$old_note }Then one more CPU session (run_cpu_v2.sh MORE_BASE=1, logs tools/train/v2/$prefix${n}_*): \
a warm restart (fresh optimiser, cosine from peak LR ${LR_MORE:-3e-4})${FREEZE:+ with the text encoder frozen, so \
that the super-resolution stage trained against it stays valid}; the accuracy above is after it." \
    --init-from "$KEEP/model" "${FREEZE[@]}"
fi

# 3. super-resolution (one session), conditioned by the kept base's frozen text encoder; with
# SR_FROM, a warm start from that SR stage's weights (fresh optimiser, lower peak LR)
if [ ! -d "$KEEP/model/super_res" ]; then
  cache
  b=$(budget sr "$SR_MAX" "$SR_MIN_MIN") || exit $?
  SR_START=(--lr 6e-4)
  if [ -n "${SR_FROM:-}" ]; then
    [ -d "$SR_FROM/super_res" ] || { stamp "SR_FROM=$SR_FROM has no super_res/" >&2; exit 1; }
    SR_START=(--lr "${LR_SR_FROM:-3e-4}" --init-from "$SR_FROM")
  fi
  stamp "super-resolution for $b minutes"
  "$PY" train_super_res.py --stage train --out "$RUNS/sr" --base "$KEEP/model" --device cpu --bf16 --compile \
    --batch 32 --steps 1000000 --budget-minutes "$b" --finish-minutes "$(finish "$b")" --eval-every 500 \
    --log-every 25 "${SR_START[@]}" --warmup 200 --resume || exit 1
  "$PY" train_super_res.py --stage export --out "$RUNS/sr" --model-out "$KEEP/model" --base "$KEEP/model" \
    --card || exit 1
  keep_logs "$RUNS/sr" sr
fi
stamp "chain done: $KEEP/model (commit it; then tools/train/README.md, \"Installing it as the default model\")"
