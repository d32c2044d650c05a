#!/usr/bin/env bash
# One command for a GPU machine (issue: GPU speed). In about 3–5 minutes on an H100/H200 it
# writes to $OUT (default ./bench-out) at most six files:
#   env.txt          nvidia-smi, `tessera info` (adapter, features, limits)
#   kernel-tests.txt the engine's kernel tests on this adapter (prebuilt: KERNEL_TESTS)
#   tessera.jsonl    `tessera bench --json`: kernels once, then end to end for each model
#   reference.jsonl  diffusers/PyTorch on the same GPU, fp32 and fp16, same configurations
#   summary.md       both as markdown tables, with tessera ÷ diffusers ratios
#   log.txt          stderr of everything
#
# Inputs (all optional):
#   TESSERA_BIN   a prebuilt tessera (`cargo build --release -p tessera --no-default-features`
#                 here; that binary reads the default model from assets/models/emoji);
#                 without it, cargo builds one.
#   KERNEL_TESTS  the prebuilt kernel-test binary (`cargo test --release -p tessera-engine
#                 --test kernels --no-run` prints its path); skipped when absent.
#   MODEL_TESTS   the prebuilt tests/default_model.rs binary (`cargo test --release -p tessera
#                 --test default_model --no-run`): its tensor-core test runs the default model's
#                 two stages on this adapter's cooperative matrices against the PyTorch
#                 fixtures (tests/fixtures/emoji) with TESSERA_BIN; skipped when absent.
#   REF_MODELS    models the PyTorch reference runs (default: MODELS)
#   VARIANTS      extra amused-256 runs, one environment each (see below; empty: none)
#   MODELS        end-to-end models (default: default default@1 amused-256-random
#                 amused-512-random maskgit-256-random; NAME@1 runs a two-stage model's base
#                 stage alone, `--stages 1`: the embedded default model has two stages and
#                 diffusers runs its base folder alone, so its ratio comes from default@1);
#                 STEPS (12); SIZES (matmul sizes of the kernel table, default
#                 256,512,1024,2048).
#   Python with torch and transformers; diffusers comes from tools/bench/wheels when not
#   installed (tools/bench/fetch_wheels.sh fills it; carry that folder to the GPU machine).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-bench-out}"
mkdir -p "$OUT"
STEPS="${STEPS:-12}"
SIZES="${SIZES:-256,512,1024,2048}"
MODELS="${MODELS:-default default@1 amused-256-random amused-512-random maskgit-256-random}"
LOG="$OUT/log.txt"
: > "$LOG"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"

(nvidia-smi || true) > "$OUT/env.txt" 2>&1
if [ -z "${TESSERA_BIN:-}" ]; then
    cargo build --release -p tessera --no-default-features >> "$LOG" 2>&1
    TESSERA_BIN=./target/release/tessera
fi
"$TESSERA_BIN" info >> "$OUT/env.txt" 2>&1

if [ -n "${KERNEL_TESTS:-}" ] && [ -x "$KERNEL_TESTS" ]; then
    # Every kernel strategy the adapter supports, against the CPU reference; the adapter's
    # own kernel family (TESSERA_KERNELS unset) picks what a user would get.
    timeout 150 "$KERNEL_TESTS" --test-threads 4 > "$OUT/kernel-tests.txt" 2>&1 \
        || echo "kernel tests failed or timed out (exit $?)" >> "$OUT/kernel-tests.txt"
    # The tensor-core kernels' own tests (ignored on adapters without cooperative matrices;
    # here they must run, and fail where the adapter lacks them): the kernels, the
    # subgroup-width probe, and the start-up trial of every shape at least as wide as the
    # adapter's subgroups (on NVIDIA also M16W64, AMD's wave64 mapping).
    timeout 60 "$KERNEL_TESTS" --ignored coop >> "$OUT/kernel-tests.txt" 2>&1 \
        || echo "cooperative-matrix test failed or timed out (exit $?)" >> "$OUT/kernel-tests.txt"
fi
if [ -n "${MODEL_TESTS:-}" ] && [ -x "$MODEL_TESTS" ] && [ -x "$TESSERA_BIN" ]; then
    # The test binary runs TESSERA_BIN, not the one its build made, and reads the fixtures
    # under this checkout (tests/common: TESSERA_TEST_BIN, TESSERA_TEST_ROOT).
    TESSERA_TEST_BIN="$(realpath "$TESSERA_BIN")" TESSERA_TEST_ROOT="$PWD" timeout 90 \
        "$MODEL_TESTS" --ignored tensor_cores >> "$OUT/kernel-tests.txt" 2>&1 \
        || echo "default-model tensor-core test failed or timed out (exit $?)" >> "$OUT/kernel-tests.txt"
fi

: > "$OUT/tessera.jsonl"
first=1
for m in $MODELS; do
    stages=()
    case "$m" in *@1) stages=(--stages 1); m="${m%@1}" ;; esac
    kernels=--no-kernels
    [ "$first" = 1 ] && kernels=--model-shapes
    first=0
    # --profile: a second, per-kernel-timed run, whose breakdown lands in the JSON.
    echo "$(date +%T) bench $m ${stages[*]}" >> "$LOG"
    timeout 180 "$TESSERA_BIN" bench --json $kernels --profile --sizes "$SIZES" --budget 0.5 \
        --model "$m" --steps "$STEPS" "${stages[@]}" \
        >> "$OUT/tessera.jsonl" 2>> "$LOG" || echo "tessera bench $m failed (exit $?)" >> "$LOG"
done
PY="${PYTHON:-python3}"
if ! "$PY" -c "import diffusers, transformers" 2>/dev/null && [ -d tools/bench/wheels ]; then
    PYLIB="$(mktemp -d)"
    # diffusers and importlib_metadata; the rest of what it needs is in torch's environment.
    "$PY" -m pip install -q --no-index --no-deps --no-compile --find-links tools/bench/wheels \
        --target "$PYLIB" diffusers importlib_metadata >> "$LOG" 2>&1
    export PYTHONPATH="$PYLIB${PYTHONPATH:+:$PYTHONPATH}"
fi
: > "$OUT/reference.jsonl"
if "$PY" -c "import torch, diffusers, transformers" >> "$LOG" 2>&1; then
    # NAME and NAME@1 share one reference run (diffusers runs a base folder alone).
    for m in $(printf '%s\n' ${REF_MODELS:-$MODELS} | sed 's/@1$//' | awk '!seen[$0]++'); do
        case "$m" in
            maskgit-*) continue ;;  # no diffusers counterpart
            default) ref=assets/models/emoji ;;
            *) ref="$m" ;;
        esac
        echo "$(date +%T) reference $m" >> "$LOG"
        timeout 150 "$PY" tools/bench/reference.py --model "$ref" --steps "$STEPS" \
            --dtype float32 float16 >> "$OUT/reference.jsonl" 2>> "$LOG" \
            || echo "reference $m failed (exit $?)" >> "$LOG"
    done
else
    echo "no torch/diffusers: reference skipped" >> "$LOG"
fi
# The amused-256 configuration on other kernel choices, after the reference (they are the
# optional part): each VARIANTS word is one run's environment, assignments joined by commas —
# the static kernel choices without kernel tuning (TESSERA_TUNE=0: what tuning gained; the
# other runs are tuned, their choices persisted under ~/.cache/tessera/tune by the first run
# that measured them), every product on the sliced-K tensor-core matmul and on the 8×8-fragment-tile one (Coop128;
# neither chosen by default yet), attention on the plain flash kernel instead of the
# tensor-core one (chosen since 2026-11-30, not measured on a GPU before), the convolutions'
# tensor-core kernel with K in PyTorch's order instead of tap by tap (CoopTaps, chosen since
# 2026-12-01, not measured on a GPU before), the plain WGSL kernels (no cooperative matrices;
# also the fallback should their pipelines fail on this driver). TESSERA_SHADER_CHECKS=full|none
# are the other documented choices (docs/benchmarks.md, H200 section).
VARIANTS="${VARIANTS-TESSERA_TUNE=0 TESSERA_MATMUL=coop64slicedk TESSERA_MATMUL=coop128 TESSERA_ATTENTION=flash TESSERA_CONV=coop TESSERA_KERNELS=tiled}"
for v in $VARIANTS; do
    echo "$(date +%T) bench variant $v" >> "$LOG"
    env ${v//,/ } timeout 120 "$TESSERA_BIN" bench --json --no-kernels --profile \
        --model "${TILED_MODEL:-amused-256-random}" --steps "$STEPS" \
        >> "$OUT/tessera.jsonl" 2>> "$LOG" || echo "tessera bench variant $v failed (exit $?)" >> "$LOG"
done

"$PY" tools/bench/summarize.py "$OUT/tessera.jsonl" "$OUT/reference.jsonl" > "$OUT/summary.md" 2>> "$LOG"
cat "$OUT/summary.md"
