#!/usr/bin/env bash
# One command for a GPU machine: build tessera, run its benchmark and the PyTorch reference on the
# same adapter, and write both JSON results (and the environment) to $OUT (default: ./bench-out).
# Needs: Rust toolchain (or TESSERA_BIN, a tessera binary built elsewhere: a
# `cargo build --release -p tessera --no-default-features` binary is ~25 MB smaller and reads
# the default model from assets/models/emoji), Vulkan driver; for the reference, Python with
# tools/fixtures/requirements.txt (CUDA torch).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-bench-out}"
mkdir -p "$OUT"
MODEL="${MODEL:-amused-256-random}"
STEPS="${STEPS:-12}"
(nvidia-smi || true) > "$OUT/env.txt" 2>&1
if [ -z "${TESSERA_BIN:-}" ]; then
    cargo build --release -p tessera
    TESSERA_BIN=./target/release/tessera
fi
"$TESSERA_BIN" info >> "$OUT/env.txt" 2>&1
"$TESSERA_BIN" bench --json --model "$MODEL" --steps "$STEPS" > "$OUT/tessera.json"
"$TESSERA_BIN" bench --json --no-kernels --model default --steps "$STEPS" > "$OUT/tessera-default.json"
if python3 -c "import torch, diffusers" 2>/dev/null; then
    python3 tools/bench/reference.py --model "$MODEL" --steps "$STEPS" --dtype float32 > "$OUT/torch-fp32.json"
    python3 tools/bench/reference.py --model "$MODEL" --steps "$STEPS" --dtype float16 > "$OUT/torch-fp16.json" || true
fi
cat "$OUT"/*.json
