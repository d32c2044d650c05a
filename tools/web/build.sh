#!/usr/bin/env bash
# Builds the browser version into target/web/: the engine and its egui page compiled to
# WebAssembly (wgpu's WebGPU backend), bound to JavaScript by wasm-bindgen-cli, beside the
# default model's files (served to the page, cached by the browser).
#
#   tools/web/build.sh            # then: tools/web/serve.sh, open http://127.0.0.1:8080/
#
# wasm-bindgen-cli is the one tool (its version must equal the wasm-bindgen crate's, read from
# Cargo.lock): it is what trunk itself runs, without trunk's dev server and asset pipeline,
# which this page does not need.
set -euo pipefail
cd "$(dirname "$0")/../.."

rustup target add wasm32-unknown-unknown >/dev/null
version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock)
if ! wasm-bindgen --version 2>/dev/null | grep -q " $version\$"; then
    cargo install wasm-bindgen-cli --version "$version"
fi
cargo build --release -p tessera-web --target wasm32-unknown-unknown
out=target/web
rm -rf "$out"
mkdir -p "$out/models"
wasm-bindgen --target web --no-typescript --out-dir "$out" \
    target/wasm32-unknown-unknown/release/tessera_web.wasm
cp web/index.html "$out/"
cp -r assets/models/emoji "$out/models/emoji"
# The files the page fetches, relative to models/emoji/.
(cd "$out/models/emoji" && find . -type f ! -name files.json ! -name MODEL_CARD.md | sed 's|^\./||' | sort \
    | python3 -c 'import json, sys; print(json.dumps([l.strip() for l in sys.stdin]))' > files.json)
ls -la "$out"
