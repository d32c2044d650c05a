#!/usr/bin/env bash
# The default model v2's whole training chain as ONE command for a lent GPU machine (one H200,
# torch + transformers, no diffusers, no network, no rasterizer; one command of at most 10
# minutes). README.md, "Training v2 on a GPU machine (run_device_v2.sh)", has the exact `run` call.
#
#   0. install diffusers from tools/bench/wheels (when python3 lacks it)
#   1. unpack device/v2_data.xz (pack_v2.py pack, made here) -> RUNS/data: 128 px + 64 px SVG sets;
#      tokenizer.py: a CLIP-format BPE tokenizer (TOKENIZER_VOCAB = 2048 entries) learned from
#      their training captions (v1's tokenizer, learned from v1's captions, splits "fluent"
#      and "purple" into pieces; TOKENIZER=DIR uses a folder made elsewhere instead)
#   2. train_vq2.py        colour-faithful VQ (1024 codes), fp32 on the GPU, VQ_MIN minutes
#   3. train_super_res.py --stage cache   hi 32x32 / lo 16x16 tokens of every image through that VQ
#   4. train_transformer.py   text encoder + UVit2D (the shipped model's sizes) on the lo tokens,
#                             bf16, batch 1024, emoji-balanced, BASE_MIN minutes
#   5. export.py           fp16 AmusedPipeline folder RUNS/export/v2 (+ MODEL_CARD.md) with the new VQ
#   6. train_super_res.py --stage train   SR stage on the hi tokens, base text encoder frozen, SR_MIN
#   7. train_super_res.py --stage export  -> RUNS/export/v2/super_res/ (+ card section, preview)
#   8. pack into $OUT (<= 8 files): log.txt, summary.txt, v2_result.tar.part-NN (15 MB parts of
#      one tar: model/ = the two-stage folder, runs/ = logs, result JSONs, previews), and
#      sr_tokens.npz when it fits.
#
# Every training stage gets --budget-minutes (steps set from its measured speed, so the cosine
# schedule ends on time and the final weights are written) and --finish-minutes (a hard stop a
# little later). Budgets shrink when the run is behind its deadline (TOTAL_MIN from the start),
# so the last stages, not the command, absorb a slow start.
#
# Environment: PYTHON (python3), OUT (runs/v2/out; the device tool sets it), RUNS (runs/v2),
# PACK (device/v2_data.xz), VQ_DIR (a VQ trained elsewhere: train_vq2.py's OUT folder; default
# v2/vq2, the one run_cpu_v2.sh keeps in git, when it exists (not with SMOKE=1); instead of
# training one from scratch, it is fine-tuned here for VQ_MIN = 1 minute — a warm restart, kept only if its held-out PSNR is higher — and
# base/SR get 3.5/2 minutes; VQ_MIN=0, the default when its result_vq2.json already has a
# held-out PSNR of 28 dB or more, uses it as it is, with 4.25/2.5),
# TOKENIZER (a tokenizer folder to use instead of learning one), TOKENIZER_VOCAB (2048),
# CACHE_LIMIT (cache only that many images: a dry run), DEVICE (cuda), VQ_MIN / BASE_MIN / SR_MIN (1.75 / 3.25 / 1.75 minutes
# of training; the rest of the chain is expected to take ~2.2 min), TOTAL_MIN (9.3: the whole
# command's deadline, under the device tool's 10-minute limit), VQ_BATCH (128), BASE_BATCH (1024),
# SR_BATCH (1024: the transformer steps are bound by the host side, so twice the shipped
# model's 512 costs far less than twice the time; a batch that does not fit the GPU's memory
# is halved in the first steps), OMP_NUM_THREADS (8).
# BASE_INIT=DIR (an AmusedPipeline folder of these sizes, e.g. v2/model, the base kept in git
# by run_cpu_v2.sh): the base is a warm restart from DIR's text encoder and transformer with DIR's
# tokenizer (train_transformer.py --init-from; fresh optimiser, cosine from BASE_INIT_LR, 5e-4,
# after 200 warm-up steps), so the GPU's samples add to those DIR has seen instead of starting
# over; the card says so. With it, SR_MIN defaults to 0: no super-resolution stage here (the
# returned folder is the base alone; run_cpu_v2.sh trains the SR stage on the CPU against it),
# and the base gets the minutes (BASE_MIN 6.5; TOTAL_MIN shrinks it as usual). SR_MIN=0 skips
# the SR stage in any run. Where DIR has super_res/ (its files may be emptied to travel), the base's
# text encoder is frozen (train_transformer.py --freeze-text-encoder; FREEZE_TEXT=0 trains it), so
# DIR's super-resolution stage, which cross-attends to it, stays valid: copy it back beside the
# returned base instead of adapting it again.
# SMOKE=1: the same chain on the CPU with tiny models, 300 images for the SR cache and
# budgets of a few seconds (outputs in runs/smoke/v2, OUT runs/smoke/v2/out); checks the chain
# end to end in a few minutes.
set -uo pipefail
cd "$(dirname "$0")"  # tools/train
T0=$(date +%s)
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
ROOT=$(cd ../.. && pwd)
PACK=${PACK:-device/v2_data.xz}
# The VQ kept in git by run_cpu_v2.sh (v2/vq2) is the default VQ_DIR when there is one.
if [ -z "${VQ_DIR:-}" ] && [ "${SMOKE:-0}" != 1 ] && [ -f v2/vq2/result_vq2.json ]; then VQ_DIR=v2/vq2; fi
TOKENIZER_VOCAB=${TOKENIZER_VOCAB:-2048}
positive() { awk -v m="$1" 'BEGIN { exit !(m > 0) }'; }  # is the number $1 above 0?
if [ -n "${BASE_INIT:-}" ]; then
  [ -f "$BASE_INIT/transformer/config.json" ] && [ -f "$BASE_INIT/text_encoder/config.json" ] \
    || { echo "Error: BASE_INIT=$BASE_INIT is not a base pipeline folder (transformer/, text_encoder/)" >&2; exit 1; }
  TOKENIZER=${TOKENIZER:-$BASE_INIT/tokenizer}
  # Its tokens are VQ_DIR's as they are: a VQ trained or fine-tuned here would give other ids.
  if [ -z "${VQ_DIR:-}" ] || positive "${VQ_MIN:-0}"; then
    echo "Error: BASE_INIT continues a base trained on VQ_DIR's tokens: VQ_DIR is needed, VQ_MIN must be 0" >&2
    exit 1
  fi
  VQ_MIN=0
  SR_MIN=${SR_MIN:-0}
  if ! positive "$SR_MIN" && [ "${SMOKE:-0}" != 1 ]; then BASE_MIN=${BASE_MIN:-6.5}; fi
fi

if [ "${SMOKE:-0}" = 1 ]; then
  RUNS=${RUNS:-runs/smoke/v2}
  OUT=${OUT:-$RUNS/out}
  DEVICE=${DEVICE:-cpu}
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
  VQ_MIN=${VQ_MIN:-0.3}; BASE_MIN=${BASE_MIN:-0.3}; SR_MIN=${SR_MIN:-0.3}; TOTAL_MIN=${TOTAL_MIN:-30}
  VQ_BATCH=${VQ_BATCH:-8}; BASE_BATCH=${BASE_BATCH:-8}; SR_BATCH=${SR_BATCH:-8}
  VQ_ARGS="--channels 16 32 32 --groups 8 --codebook 64 --kmeans-batches 2 --restart-every 3 --probe-every 40 --eval-every 40 --eval-n 64 --log-every 10"
  CACHE_ARGS="--limit 300 --eval-n 32 --cache-batch 64"
  BASE_ARGS="--hidden 64 --layers 2 --heads 2 --intermediate 128 --in-channels 32 --block-channels 32 --block-heads 1
             --text-hidden 32 --text-layers 1 --text-heads 2 --text-proj 32 --eval-train-n 64 --log-every 10 --eval-every 40
             --lr 6e-4 --warmup 80"
  SR_ARGS="--hidden 32 --layers 1 --heads 2 --intermediate 64 --in-channels 16 --block-channels 16 --block-heads 2
           --micro-dim 8 --low-res-hidden 16 --low-res-layers 1 --low-res-heads 2 --low-res-intermediate 32
           --log-every 10 --eval-every 40 --eval-n 64 --eval-train-n 32 --lr 6e-4 --warmup 80"
  BF16=""
else
  SIZE="--hidden 256 --layers 6 --heads 4 --intermediate 512 --in-channels 64 --block-channels 128 --block-heads 2
        --text-hidden 128 --text-layers 3 --text-heads 2 --text-proj 128"
fi
if [ "${SMOKE:-0}" != 1 ] && [ "${DEVICE:-cuda}" = cpu ]; then
  # CPU-only alternative: the same chain with CPU batch sizes and hours-long budgets (no resume:
  # one long invocation; see README.md for the per-stage commands with --resume instead)
  RUNS=${RUNS:-runs/v2cpu}
  OUT=${OUT:-$RUNS/out}
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
  VQ_MIN=${VQ_MIN:-160}; BASE_MIN=${BASE_MIN:-135}; SR_MIN=${SR_MIN:-240}
  TOTAL_MIN=${TOTAL_MIN:-$(awk -v a="$VQ_MIN" -v b="$BASE_MIN" -v c="$SR_MIN" 'BEGIN { print a + b + c + 60 }')}
  VQ_BATCH=${VQ_BATCH:-32}; BASE_BATCH=${BASE_BATCH:-32}; SR_BATCH=${SR_BATCH:-32}
  VQ_ARGS="--probe-every 250 --eval-every 250 --eval-n 128 --log-every 25"
  CACHE_ARGS=""
  BASE_ARGS="$SIZE --eval-every 500 --log-every 25 --lr 6e-4 --warmup 200"
  SR_ARGS="--eval-every 500 --log-every 25 --lr 6e-4 --warmup 200"
  BF16=""
elif [ "${SMOKE:-0}" != 1 ]; then
  RUNS=${RUNS:-runs/v2}
  OUT=${OUT:-$RUNS/out}
  DEVICE=${DEVICE:-cuda}
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
  if [ -n "${VQ_DIR:-}" ]; then  # a short fine-tune of that VQ; the rest to the transformers
    # ... unless it already meets the tokenizer's PSNR target (>= 28 dB held out): then as it is
    if [ -z "${VQ_MIN:-}" ] && "$PY" -c 'import json, sys; sys.exit(0 if json.load(open(sys.argv[1]))["heldout_psnr_db"] >= 28 else 1)' \
         "$VQ_DIR/result_vq2.json" 2>/dev/null; then
      VQ_MIN=0
    fi
    VQ_MIN=${VQ_MIN:-1}
    if positive "$VQ_MIN"; then
      BASE_MIN=${BASE_MIN:-3.5}; SR_MIN=${SR_MIN:-2}
    else
      BASE_MIN=${BASE_MIN:-4.25}; SR_MIN=${SR_MIN:-2.5}
    fi
  fi
  VQ_MIN=${VQ_MIN:-1.75}; BASE_MIN=${BASE_MIN:-3.25}; SR_MIN=${SR_MIN:-1.75}; TOTAL_MIN=${TOTAL_MIN:-9.3}
  VQ_BATCH=${VQ_BATCH:-128}; BASE_BATCH=${BASE_BATCH:-1024}; SR_BATCH=${SR_BATCH:-1024}
  # train_vq2.py's defaults: run_all.sh's VQ sizes with 1024 codes; probe/eval every 500 steps
  VQ_ARGS="--probe-every 500 --eval-every 500 --log-every 100"
  CACHE_ARGS="--cache-batch 512"
  # the shipped model's sizes (README "Models") and its GPU recipe's flags (run_all.sh TR_DEVICE=cuda)
  BASE_ARGS="$SIZE --eval-every 1000 --log-every 250 --lr 1e-3 --warmup 500"
  # train_super_res.py's default size; README's GPU flags (warm-up shortened: ~1000 steps fit)
  SR_ARGS="--eval-every 1000 --log-every 250 --lr 1e-3 --warmup 300"
  BF16="--bf16"
fi
# A deadline shorter than the budgets need (TOTAL_MIN: e.g. what a lent GPU has left after the
# speed benchmark) shrinks the two transformers' budgets in proportion, leaving ~2.3 minutes for
# the rest of the chain; without this the base would absorb the whole shortfall.
read -r BASE_MIN SR_MIN < <(awk -v t="$TOTAL_MIN" -v v="$VQ_MIN" -v b="$BASE_MIN" -v s="$SR_MIN" -v o=2.3 \
  'BEGIN { room = t - o - v; if (room < b + s) { f = room / (b + s); if (f < 0.1) f = 0.1; b *= f; s *= f }
           printf "%.2f %.2f\n", b, s }')
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac
DATA=${DATA:-$RUNS/data}
mkdir -p "$OUT" "$RUNS"
rm -f "$OUT/log.txt" "$OUT/summary.txt" "$OUT"/v2_result.tar.part-* "$OUT/sr_tokens.npz"  # an earlier run's
exec > >(tee -a "$OUT/log.txt") 2>&1
DEADLINE_S=$(awk -v m="$TOTAL_MIN" 'BEGIN { printf "%d", m * 60 }')
STAGES="$RUNS/stages.tsv"
: > "$STAGES"

stamp() { echo "=== [$(date '+%H:%M:%S') +$(( $(date +%s) - T0 ))s] $*"; }
# run_stage NAME CMD...: runs it, records "NAME rc seconds" in $STAGES; returns its status.
run_stage() {
  local name=$1 t=$(date +%s) rc
  shift
  stamp "$name: $*"
  "$@"
  rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - t ))" >> "$STAGES"
  stamp "$name: exit $rc after $(( $(date +%s) - t ))s"
  return $rc
}
# fit WANT_MIN RESERVE_S: minutes for a training stage: WANT_MIN, or less when the deadline
# minus RESERVE_S (what the stages after it need) leaves less; at least 0.2.
fit() {
  awk -v want="$1" -v res="$2" -v left="$(( DEADLINE_S - ($(date +%s) - T0) ))" \
    'BEGIN { b = (left - res) / 60; if (b > want) b = want; if (b < 0.2) b = 0.2; printf "%.2f", b }'
}
secs() { awk -v m="$1" 'BEGIN { printf "%d", m * 60 }'; }
plus() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a + b }'; }
# Seconds each non-training part is expected to take on the GPU machine (python start, CUDA
# init, k-means, final evaluations and saves, the CPU-side exports); only used to size the
# budgets (estimates: correct them from the stages' seconds in the first real run's summary).
OVH_VQ=15 OVH_CACHE=20 OVH_BASE=15 OVH_EXPORT=20 OVH_SR=15 OVH_SREXPORT=25 OVH_PACK=10

finish() {
  stamp "pack results into $OUT"
  local tarball="$RUNS/v2_result.tar" keep="$RUNS/pack_tmp"
  rm -rf "$keep" && mkdir -p "$keep/runs"
  [ -d "$RUNS/export/v2" ] && cp -r "$RUNS/export/v2" "$keep/model"
  for f in vq2/log_vq2.txt vq2/curve_vq2.jsonl vq2/result_vq2.json vq2/recon_vq2.png vq2/stage1/config.json \
           sr/log_cache.txt sr/log.txt sr/log_export.txt sr/result.json sr/export_preview.png \
           base/log.txt base/result.json stages.tsv; do
    [ -f "$RUNS/$f" ] && mkdir -p "$keep/runs/$(dirname "$f")" && cp "$RUNS/$f" "$keep/runs/$f"
  done
  [ -f runs/export_probe.png ] && cp runs/export_probe.png "$keep/runs/export_probe.png"
  "$PY" - "$RUNS" "$OUT/summary.txt" "$T0" <<'PYEOF'
import json, os, subprocess, sys, time
from pathlib import Path
runs, out, t0 = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
rd = lambda p: json.loads((runs / p).read_text()) if (runs / p).exists() else {}
vq, base, sr = rd("vq2/result_vq2.json"), rd("base/result.json"), rd("sr/result.json")
L = [f"tessera default model v2 (run_device_v2.sh), {time.strftime('%Y-%m-%d %H:%M:%S')}, {time.time() - t0:.0f} s in all"]
try:
    L.append("gpu: " + subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout.strip())
except Exception:
    L.append("gpu: (no nvidia-smi)")
L.append("stages (name, exit status, seconds):")
if (runs / "stages.tsv").exists():
    for line in (runs / "stages.tsv").read_text().splitlines():
        L.append("  " + line.replace("\t", "  "))
if vq:
    L.append(f"VQ (train_vq2.py): probe mean dE00 {vq.get('probe_de00', float('nan')):.2f} (15 colours; <= 5 wanted), "
             f"{vq.get('probe_fills_de00', float('nan')):.2f} with 24 fills; held-out PSNR {vq.get('heldout_psnr_db', float('nan')):.2f} dB "
             f"(>= 28 wanted); codes used on held-out {vq.get('heldout_codes_used')}; {vq.get('steps')} steps at batch "
             f"{vq.get('batch')}, {vq.get('minutes', 0):.2f} min of training; worst {vq.get('worst')}")
cache_log = runs / "sr" / "log_cache.txt"
if cache_log.exists():
    L += ["token cache: " + l.strip() for l in cache_log.read_text().splitlines()[-4:]]
def acc(r):
    h = r.get("heldout_ema") or {}
    return f"held-out acc (EMA) {h.get('acc@0.5', float('nan')) * 100:.1f} % at 50 % masking, {h.get('acc@0.9', float('nan')) * 100:.1f} % at 90 %"
if base:
    L.append(f"base transformer: {acc(base)}; {base.get('steps')} steps at batch {base.get('batch')}, "
             f"{base.get('minutes', 0):.2f} min; params text {base.get('params_text', 0) / 1e6:.2f}M + transformer {base.get('params_transformer', 0) / 1e6:.2f}M")
if sr:
    pc = sr.get("parent_copy_heldout")
    L.append(f"super-res: {acc(sr)} (copy-the-parent baseline {pc * 100 if pc is not None else float('nan'):.1f} %); "
             f"{sr.get('steps')} steps at batch {sr.get('batch')}, {sr.get('minutes', 0):.2f} min; {sr.get('params', 0) / 1e6:.2f}M params")
model = runs / "export" / "v2"
if model.exists():
    size = lambda p: sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    parts = {d.name: size(d) for d in sorted(model.iterdir()) if d.is_dir()}
    sr_mb = parts.get("super_res", 0) / 1e6
    L.append(f"model folder: {size(model) / 1e6:.2f} MB in all (base {(size(model) / 1e6 - sr_mb):.2f} MB, super_res {sr_mb:.2f} MB): "
             + ", ".join(f"{k} {v / 1e6:.2f}" for k, v in parts.items()))
out.write_text("\n".join(L) + "\n")
print("\n".join(L))
PYEOF
  cp "$OUT/summary.txt" "$keep/runs/summary.txt" 2>/dev/null
  tar -cf "$tarball" -C "$keep" .
  rm -f "$OUT"/v2_result.tar.part-*
  split -b 15M -d "$tarball" "$OUT/v2_result.tar.part-"
  local n total
  n=$(ls "$OUT" | wc -l)
  total=$(du -cb "$OUT"/* | tail -1 | cut -f1)
  if [ -f "$RUNS/sr/sr_tokens.npz" ] && [ "$n" -lt 8 ] \
     && [ $(( total + $(stat -c %s "$RUNS/sr/sr_tokens.npz") )) -lt $(( 60 * 1024 * 1024 )) ] \
     && [ "$(stat -c %s "$RUNS/sr/sr_tokens.npz")" -lt $(( 16 * 1024 * 1024 )) ]; then
    cp "$RUNS/sr/sr_tokens.npz" "$OUT/sr_tokens.npz"
  fi
  # What comes back: at most 8 files, 16 MiB each, 64 MiB together.
  local missing=""
  for p in model/model_index.json model/tessera.json model/MODEL_CARD.md model/text_encoder/model.safetensors \
           model/tokenizer/vocab.json model/transformer/diffusion_pytorch_model.safetensors \
           model/vqvae/diffusion_pytorch_model.safetensors model/scheduler/scheduler_config.json \
           model/super_res/model_index.json model/super_res/tessera.json model/super_res/transformer/config.json \
           model/super_res/transformer/diffusion_pytorch_model.safetensors model/super_res/scheduler/scheduler_config.json; do
    case "$p" in model/super_res/*) positive "$SR_MIN" || continue ;; esac
    tar -tf "$tarball" "./$p" > /dev/null 2>&1 || missing="$missing $p"
  done
  ls -l "$OUT"
  local verdict="complete two-stage folder in model/"
  positive "$SR_MIN" || verdict="complete base folder in model/ (SR_MIN $SR_MIN: no super_res/; run_cpu_v2.sh trains it)"
  [ -n "$missing" ] && verdict="INCOMPLETE, the tar lacks:$missing"
  stamp "result: $(ls "$OUT" | wc -l) files, $(du -cb "$OUT"/* | tail -1 | cut -f1) bytes; $verdict"
  rm -rf "$keep" "$tarball"
}
trap finish EXIT

stamp "v2 chain: device $DEVICE, budgets VQ $VQ_MIN / base $BASE_MIN / SR $SR_MIN min, deadline $TOTAL_MIN min, runs $RUNS, out $OUT"
if [ "$DEVICE" != cpu ]; then
  nvidia-smi -L || true
fi

# 0. diffusers from the carried wheels (run_device.sh's way) when this python lacks it
if ! "$PY" -c "import diffusers" 2>/dev/null; then
  PYLIB="$(mktemp -d)"
  run_stage wheels "$PY" -m pip install -q --no-index --no-deps --no-compile --find-links "$ROOT/tools/bench/wheels" \
    --target "$PYLIB" diffusers importlib_metadata || exit 1
  export PYTHONPATH="$PYLIB${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)" || exit 1
if [ "$DEVICE" != cpu ]; then
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || { echo "no CUDA device"; exit 1; }
fi

# 1. data
run_stage unpack "$PY" pack_v2.py unpack --pack "$PACK" --data-dir "$DATA" || exit 1
if [ -z "${TOKENIZER:-}" ]; then
  TOKENIZER="$RUNS/tokenizer"
  run_stage tokenizer "$PY" tokenizer.py --captions "$DATA/captions_svg.json" --vocab-size "$TOKENIZER_VOCAB" \
    --out "$TOKENIZER" --force || exit 1
fi

# 2. VQ: trained here, or (VQ_DIR) one trained elsewhere (train_vq2.py's OUT folder: stage1/ and
# result_vq2.json), e.g. on the project machine's CPU, which leaves this run's minutes to the
# transformers
rm -rf "$RUNS/vq2" "$RUNS/vq2_tune" "$RUNS/sr" "$RUNS/base" "$RUNS/export/v2"  # no stale outputs from an earlier run
if [ -n "${VQ_DIR:-}" ]; then
  mkdir -p "$RUNS/vq2"
  if positive "$VQ_MIN"; then
    # A warm restart from VQ_DIR (its architecture, weights and codebook; fresh optimiser, lr
    # 3e-4 after 100 warm-up steps): kept if its held-out PSNR beats VQ_DIR's.
    RESERVE=$(( OVH_VQ + OVH_CACHE + $(secs "$BASE_MIN") + OVH_BASE + OVH_EXPORT + $(secs "$SR_MIN") + OVH_SR + OVH_SREXPORT + OVH_PACK ))
    B=$(fit "$VQ_MIN" "$RESERVE")
    run_stage vq2_tune "$PY" train_vq2.py --out "$RUNS/vq2_tune" --init-from "$VQ_DIR/stage1" --data-dir "$DATA" \
      --device "$DEVICE" --batch "$VQ_BATCH" --lr 3e-4 --warmup 100 --steps 1000000 --budget-minutes "$B" \
      --finish-minutes "$(plus "$B" 0.15)" $VQ_ARGS
    if "$PY" - "$VQ_DIR/result_vq2.json" "$RUNS/vq2_tune/result_vq2.json" <<'PYEOF'
import json, sys
psnr = lambda p: json.load(open(p))["heldout_psnr_db"]
try:
    was, now = psnr(sys.argv[1]), psnr(sys.argv[2])
except Exception as e:  # no result: keep VQ_DIR's
    print(f"fine-tuned VQ: no result ({e}); keeping VQ_DIR's")
    sys.exit(1)
print(f"fine-tuned VQ: held-out PSNR {was:.2f} -> {now:.2f} dB: {'kept' if now > was else 'VQ_DIR kept'}")
sys.exit(0 if now > was else 1)
PYEOF
    then
      rm -rf "$RUNS/vq2" && mv "$RUNS/vq2_tune" "$RUNS/vq2"
    fi
  fi
  if [ ! -f "$RUNS/vq2/stage1/diffusion_pytorch_model.safetensors" ]; then
    stamp "VQ from $VQ_DIR as it is"
    cp -r "$VQ_DIR/stage1" "$RUNS/vq2/stage1" || exit 1
    for f in result_vq2.json log_vq2.txt curve_vq2.jsonl recon_vq2.png; do
      [ -f "$VQ_DIR/$f" ] && cp "$VQ_DIR/$f" "$RUNS/vq2/$f"
    done
    # its decoder stage (train_vq2.py --decoder-only: same encoder and codebook, so the same
    # tokens), which the exported folders decode with
    if [ -d "$VQ_DIR/decoder" ]; then cp -r "$VQ_DIR/decoder" "$RUNS/vq2/decoder" || exit 1; fi
  fi
else
  RESERVE=$(( OVH_VQ + OVH_CACHE + $(secs "$BASE_MIN") + OVH_BASE + OVH_EXPORT + $(secs "$SR_MIN") + OVH_SR + OVH_SREXPORT + OVH_PACK ))
  B=$(fit "$VQ_MIN" "$RESERVE")
  # (a failure after the weights are saved, e.g. in the final report, still lets the chain go on)
  run_stage vq2 "$PY" train_vq2.py --out "$RUNS/vq2" --data-dir "$DATA" --device "$DEVICE" --batch "$VQ_BATCH" \
    --steps 1000000 --budget-minutes "$B" --finish-minutes "$(plus "$B" 0.15)" $VQ_ARGS \
    || [ -f "$RUNS/vq2/stage1/diffusion_pytorch_model.safetensors" ] || exit 1
fi

# 3. token cache (hi 32x32 from 128 px, lo 16x16 from 64 px)
CACHE=(train_super_res.py --stage cache --out "$RUNS/sr" --vq "$RUNS/vq2/stage1" --data-dir "$DATA" --force)
# CACHE_LIMIT=N: only N images (a dry run of the real sizes on a CPU)
[ -n "${CACHE_LIMIT:-}" ] && CACHE_ARGS="$CACHE_ARGS --limit $CACHE_LIMIT"
run_stage cache "$PY" "${CACHE[@]}" --device "$DEVICE" $CACHE_ARGS \
  || { [ "$DEVICE" != cpu ] && run_stage cache_on_cpu "$PY" "${CACHE[@]}" --device cpu; } || exit 1

# 4. base: text encoder + transformer on the lo tokens
# (SR_MIN 0: no SR stage, so nothing of it is reserved)
if positive "$SR_MIN"; then SR_RESERVE=$(( $(secs "$SR_MIN") + OVH_SR + OVH_SREXPORT )); else SR_RESERVE=0; fi
RESERVE=$(( OVH_BASE + OVH_EXPORT + SR_RESERVE + OVH_PACK ))
B=$(fit "$BASE_MIN" "$RESERVE")
INIT=()
NOTE=""
if [ -n "${BASE_INIT:-}" ]; then
  # A warm restart: the learning rate and warm-up of BASE_ARGS give way to the later flags.
  INIT=(--init-from "$BASE_INIT" --lr "${BASE_INIT_LR:-5e-4}" --warmup 200)
  FROZEN=""
  if [ -d "$BASE_INIT/super_res" ] && [ "${FREEZE_TEXT:-1}" = 1 ]; then
    INIT+=(--freeze-text-encoder)
    FROZEN=" with the text encoder frozen (so the super-resolution stage trained against it stays valid)"
  fi
  case "$BASE_INIT" in /*) SHOWN=$BASE_INIT ;; *) SHOWN=tools/train/$BASE_INIT ;; esac
  NOTE="Not from scratch in this run: warm-started from the base in $SHOWN (trained as its own card \
says), then trained further on a GPU by run_device_v2.sh with BASE_INIT (fresh optimiser, cosine from peak LR \
${BASE_INIT_LR:-5e-4})$FROZEN; the accuracy above is after that."
fi
run_stage base "$PY" train_transformer.py --out "$RUNS/base" --tokens "$RUNS/sr/sr_tokens.npz" --tokens-key lo \
  --tokenizer "$TOKENIZER" --device "$DEVICE" $BF16 --batch "$BASE_BATCH" --per-group 2 --save-fp16 \
  --steps 1000000 --budget-minutes "$B" --finish-minutes "$(plus "$B" 0.15)" $BASE_ARGS "${INIT[@]}" \
  || [ -f "$RUNS/base/final/transformer/config.json" ] || exit 1

# 5. the base pipeline folder with the new VQ
rm -rf "$RUNS/export/v2"
VQ_EXPORT="$RUNS/vq2/stage1"  # the decoder stage's VQ where there is one (a fine-tuned VQ_DIR has none)
[ -f "$RUNS/vq2/decoder/config.json" ] && VQ_EXPORT="$RUNS/vq2/decoder"
run_stage export "$PY" export.py --out "$RUNS/export/v2" --vq-dir "$VQ_EXPORT" --transformer-dir "$RUNS/base/final" \
  --tokenizer-dir "$TOKENIZER" --svg-data --sources "$DATA/SOURCES_svg.md" --training-note "$NOTE" || exit 1
if ! positive "$SR_MIN"; then
  stamp "SR_MIN $SR_MIN: no super-resolution stage in this run; chain done"
  exit 0
fi

# 6. super-resolution stage on the hi tokens, conditioned by the exported base's text encoder
RESERVE=$(( OVH_SR + OVH_SREXPORT + OVH_PACK ))
B=$(fit "$SR_MIN" "$RESERVE")
run_stage sr "$PY" train_super_res.py --stage train --out "$RUNS/sr" --base "$RUNS/export/v2" --device "$DEVICE" $BF16 \
  --batch "$SR_BATCH" --steps 1000000 --budget-minutes "$B" --finish-minutes "$(plus "$B" 0.15)" $SR_ARGS || exit 1

# 7. super_res/ into the base folder (+ the card's SR section and the preview)
run_stage sr_export "$PY" train_super_res.py --stage export --out "$RUNS/sr" --model-out "$RUNS/export/v2" \
  --base "$RUNS/export/v2" --card || exit 1
stamp "chain done"
