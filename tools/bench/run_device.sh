#!/usr/bin/env bash
# One command for a GPU machine: build tessera, run its benchmark and the PyTorch reference on the
# same adapter, and write both JSON results (and the environment) to $OUT (default: ./bench-out).
# Needs: Rust toolchain, Vulkan driver; for the reference, Python with
# tools/fixtures/requirements.txt (CUDA torch).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-bench-out}"
mkdir -p "$OUT"
MODEL="${MODEL:-amused-256-random}"
STEPS="${STEPS:-12}"
(nvidia-smi || true) > "$OUT/env.txt" 2>&1
cargo build --release -p tessera
./target/release/tessera info >> "$OUT/env.txt" 2>&1
./target/release/tessera bench --json --model "$MODEL" --steps "$STEPS" > "$OUT/tessera.json"
if python3 -c "import torch, diffusers" 2>/dev/null; then
    python3 tools/bench/reference.py --model "$MODEL" --steps "$STEPS" --dtype float32 > "$OUT/torch-fp32.json"
    python3 tools/bench/reference.py --model "$MODEL" --steps "$STEPS" --dtype float16 > "$OUT/torch-fp16.json" || true
fi
cat "$OUT"/*.json
