#!/usr/bin/env bash
# Gets this checkout ready for a lent GPU machine (the `device` tool's `run`) and prints the
# calls to make, with what each carries and whether it fits the 64 MiB that travels.
#
#   bash tools/dev/gpu-prep.sh          # build + stage everything, then print the calls
#   bash tools/dev/gpu-prep.sh sizes    # only check sizes and print the calls
#   bash tools/dev/gpu-prep.sh blank    # before the training call: empty the committed default
#                                       # model's weights and tools/train/v2's bases (it cannot
#                                       # carry them; it keeps tools/train/v2/vq2, its VQ_DIR)
#   bash tools/dev/gpu-prep.sh blank-base # before the warm-start training call (BASE_INIT): the
#                                       # same as blank, but the continued base's text encoder and
#                                       # transformer stay (BASE: tools/train/v2/model); to fit, the test
#                                       # fixtures and the fuzz corpus are emptied too
#   bash tools/dev/gpu-prep.sh blank-v2 # before the benchmark call: empty tools/train/v2's weights,
#                                       # the test fixtures but the default model's, and the fuzz
#                                       # corpus (the benchmark reads none of them; the default
#                                       # model, 37 MB, must travel, and its fixtures, 1.4 MB, for
#                                       # its tensor-core test)
#   bash tools/dev/gpu-prep.sh restore  # undo either (git checkout)
#
# What it stages (all ignored by git through .git/info/exclude or .gitignore):
#   .devbin/tessera.xz, .devbin/kernels.xz, .devbin/model_tests.xz  `tessera
#       --no-default-features`, the engine's kernel-test binary and tests/default_model.rs's,
#       stripped and xz-compressed (docs/benchmarks.md "Measuring on a GPU")
#   .gl/*.deb          the Vulkan loader (libvulkan1): the GPU machine has the NVIDIA driver
#       but no loader (/work/.library/device/README.md)
#   tools/bench/wheels diffusers for tools/bench/reference.py (fetch_wheels.sh)
#   tools/train/device/v2_data.xz  the training call's data (data_svg.py, then pack_v2.py pack;
#       PYTHON with tools/train/requirements.txt); its VQ is tools/train/v2/vq2, tracked
#       (tools/train/README "Training v2 on a GPU machine")
set -euo pipefail
cd "$(dirname "$0")/../.."
LIMIT=$((64 * 1024 * 1024))
MODEL=assets/models/emoji
V2=tools/train/v2
PY=${PYTHON:-python3}
# The base a warm-start training call continues (BASE_INIT): the best one kept in git.
BASE=${BASE:-$V2/model}
# What blank-base empties besides the default model: BASE's VQ, and the rest of tools/train/v2's
# pipeline folders (v2/vq2 stays: it is VQ_DIR)
if [ "$BASE" = "$V2/model" ]; then
  BASE_BLANK=("$V2/model/vqvae" "$V2/model/super_res")
else
  BASE_BLANK=("$BASE/vqvae" "$BASE/super_res" "$V2/model")
fi

exclude() { grep -qxF "$1" .git/info/exclude 2>/dev/null || echo "$1" >> .git/info/exclude; }
# bytes that travel: tracked + untracked-not-ignored files as they are now, plus the carried paths
tree_bytes() { git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1; }
carried_bytes() { local n=0 p; for p in "$@"; do n=$((n + $(du -sb "$p" 2>/dev/null | cut -f1 || echo 0))); done; echo "$n"; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
# bytes of the safetensors files under the given folders (0 when there are none)
weight_bytes() {
  local n=0 f
  while IFS= read -r -d '' f; do n=$((n + $(stat -c %s "$f"))); done < <(find "$@" -name '*.safetensors' -print0 2>/dev/null)
  echo "$n"
}
# (a folder that does not exist yet, such as v2/model before the base is trained, is skipped)
empty_weights() { find "$@" -name '*.safetensors' -exec sh -c ': > "$1"' _ {} \; 2>/dev/null || true; }
# what a training machine does not read: the tests' fixtures and the fuzz corpus, every file
EXTRA=(tests/fixtures fuzz/corpus)
empty_files() { find "$@" -type f -exec sh -c ': > "$1"' _ {} \; 2>/dev/null || true; }
# what the benchmark call keeps of them: the default model's fixtures (its tensor-core test)
KEEP=tests/fixtures/emoji

case "${1:-all}" in
  blank)
    empty_weights "$MODEL" "$V2/model"
    echo "emptied the weights under $MODEL and $V2/model; undo with: bash $0 restore"
    exit 0 ;;
  blank-base)
    empty_weights "$MODEL" "${BASE_BLANK[@]}"
    empty_files "${EXTRA[@]}"
    echo "emptied the weights under $MODEL and ${BASE_BLANK[*]}, and ${EXTRA[*]}; $BASE's text encoder and transformer stay; undo with: bash $0 restore"
    exit 0 ;;
  blank-v2)
    empty_weights "$V2"
    empty_files "${EXTRA[@]}"
    git checkout -- "$KEEP"
    echo "emptied the weights under $V2, and ${EXTRA[*]} but $KEEP; undo with: bash $0 restore"
    exit 0 ;;
  restore)
    git checkout -- "$MODEL" "$V2" "${EXTRA[@]}"
    echo "restored $MODEL, $V2 and ${EXTRA[*]}"
    exit 0 ;;
  all)
    exclude /.devbin/
    exclude /.gl/
    mkdir -p .devbin
    # a test binary's path: cargo test --no-run's executable for test target $2 of package $1
    test_bin() {
      cargo test --release -p "$1" --test "$2" --no-run --message-format=json 2>/dev/null \
        | python3 -c 'import json, sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == sys.argv[1]:
        print(m["executable"])' "$2" | tail -1
    }
    tests=$(test_bin tessera-engine kernels)
    model_tests=$(test_bin tessera default_model)
    [ -x "$tests" ] && [ -x "$model_tests" ] \
      || { echo "Error: no kernel-test or default-model test binary from cargo test --no-run" >&2; exit 1; }
    # after the test builds, which make target/release/tessera with the default features (the
    # embedded model, 37 MB more)
    cargo build --release -p tessera --no-default-features
    for pair in "target/release/tessera:tessera" "$tests:kernels" "$model_tests:model_tests"; do
      src=${pair%%:*} name=${pair##*:}
      strip -o ".devbin/$name" "$src"
      xz -6 -f ".devbin/$name"
    done
    [ -n "$(ls tools/bench/wheels/diffusers-*.whl 2>/dev/null)" ] || bash tools/bench/fetch_wheels.sh
    if [ ! -f tools/train/device/v2_data.xz ]; then
      (cd tools/train && { [ -f data/emoji_svg128.npz ] || "$PY" data_svg.py --sizes 64,128; } && "$PY" pack_v2.py pack)
    fi
    if [ -z "$(ls .gl/libvulkan1_*.deb 2>/dev/null)" ]; then
      mkdir -p .gl /tmp/amd64/partial
      o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
      # shellcheck disable=SC2086
      apt-get $o update -qq && (cd .gl && apt-get $o download libvulkan1)
    fi ;;
  sizes) ;;
  *) echo "Error: unknown command '$1' (all, sizes, blank, blank-base, blank-v2, restore)" >&2; exit 1 ;;
esac

tree=$(tree_bytes)
bench_carry=(.devbin .gl tools/bench/wheels)
train_carry=(tools/train/device tools/bench/wheels)
# the benchmark call travels with tools/train/v2's weights emptied (`blank-v2`), the training
# call with the default model's and v2/model's (`blank`), if they are not already
weights=$(weight_bytes "$MODEL")
v2_weights=$(weight_bytes "$V2")
extra=$(git ls-files -z -- "${EXTRA[@]}" | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
kept=$(git ls-files -z -- "$KEEP" | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
bench=$((tree - v2_weights - extra + kept + $(carried_bytes "${bench_carry[@]}")))
train=$((tree - weights - $(weight_bytes "$V2/model") + $(carried_bytes "${train_carry[@]}")))
warm=$((tree - weights - $(weight_bytes "${BASE_BLANK[@]}") - extra + $(carried_bytes "${train_carry[@]}")))
for f in .devbin/tessera.xz .devbin/kernels.xz .devbin/model_tests.xz tools/train/device/v2_data.xz \
         "$V2/vq2/result_vq2.json"; do
  [ -f "$f" ] || echo "missing: $f"
done
echo "working tree $(mib "$tree") (the default model's weights $(mib "$weights"), $V2's $(mib "$v2_weights")); limit $(mib "$LIMIT")"
echo "bench call:    $(mib "$bench") after blank-v2$([ "$bench" -le "$LIMIT" ] || echo '  OVER THE LIMIT')"
echo "training call: $(mib "$train") after blank$([ "$train" -le "$LIMIT" ] || echo '  OVER THE LIMIT')"
echo "warm-start training call: $(mib "$warm") after blank-base$([ "$warm" -le "$LIMIT" ] || echo '  OVER THE LIMIT')"
tok=""
tok_note=""
if [ -f "$V2/model/tokenizer/vocab.json" ]; then
  tok="TOKENIZER=v2/model/tokenizer"
  tok_note=" $tok: the tokenizer of the CPU-trained base (run_cpu_v2.sh)."
fi
cat <<EOF

1. The GPU-speed benchmark (first claim), ~4-5 minutes (docs/benchmarks.md). First \`bash $0 blank-v2\`.
run(command = "for f in .gl/*.deb; do dpkg -x \$f /; done; ldconfig; n=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json; [ -f \$n ] && export VK_DRIVER_FILES=\$n; xz -dkf .devbin/tessera.xz .devbin/kernels.xz .devbin/model_tests.xz && chmod +x .devbin/tessera .devbin/kernels .devbin/model_tests && TESSERA_BIN=.devbin/tessera KERNEL_TESTS=.devbin/kernels MODEL_TESTS=.devbin/model_tests OUT=\$OUT bash tools/bench/run_device.sh",
    carry = ["${bench_carry[0]}", "${bench_carry[1]}", "${bench_carry[2]}"], timeout_s = 420)

2. The default model v2's training, in what is left (tools/train/README.md): within 30 s of the first call's
   return the machine is still warm. TOTAL_MIN about 1.5 minutes under status's budget_left_s.
   Where tools/train/v2 holds a base, continue the best one ($BASE): the GPU's minutes all go to
   the base, on top of what it has seen (where it has super_res/, its text encoder stays frozen and
   that stage goes back beside the result: tools/train/README.md). First \`bash $0 restore && bash $0 blank-base\`, afterwards \`bash $0 restore\`.
run(command = "TOTAL_MIN=7 VQ_DIR=v2/vq2 BASE_INIT=${BASE#tools/train/} bash tools/train/run_device_v2.sh",
    carry = ["${train_carry[0]}", "${train_carry[1]}"], timeout_s = 480)
   Or the whole chain from scratch (base 4.25 and SR 2.5 minutes at most): first \`bash $0 restore && bash $0 blank\`.$tok_note
run(command = "TOTAL_MIN=7 VQ_DIR=v2/vq2 ${tok:+$tok }bash tools/train/run_device_v2.sh",
    carry = ["${train_carry[0]}", "${train_carry[1]}"], timeout_s = 480)
EOF
