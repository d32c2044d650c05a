#!/usr/bin/env bash
# Runs the engine's kernel tests — the tensor-core (cooperative-matrix) kernels included — on
# the CPU, through a newer lavapipe: Mesa's software Vulkan driver offers
# VK_KHR_cooperative_matrix (8×8×8 f16 fragments, 8-wide subgroups) in Mesa 26 (checked:
# 26.2.6), but the project machine's Debian bookworm ships 22.3, and the 25.0 of
# bookworm-backports has no cooperative matrices either. So this script keeps a minimal Debian sid
# root file system (debootstrap, ~250 MB) with sid's mesa-vulkan-drivers and runs the test
# binary built on the host inside it (chroot; the host's repository is bind-mounted at the
# same path). Needs root, debootstrap and the Debian mirror; not part of CI (sid moves).
#
#   tools/dev/coop-lavapipe.sh                 # build the tests; run every kernel test (ignored
#                                              # too), the embedded model on the tensor-core
#                                              # path (tests/default_model.rs, ignored test),
#                                              # and the tensor-core kernel tests compiled for
#                                              # 16- and 32-wide subgroups
#   tools/dev/coop-lavapipe.sh -- coop_kernels # pass arguments to the kernel-test binary instead
#   tools/dev/coop-lavapipe.sh --info          # `tessera info` there (needs a built binary)
#   tools/dev/coop-lavapipe.sh --setup         # only make the root file system (exit 1: could not)
#   tools/dev/coop-lavapipe.sh --run 'CMD'     # CMD there, from the repository (read-only; write
#                                              # to /tmp, which is the root's own)
#
# Environment: SID_ROOT (/work/sid), MIRROR (http://deb.debian.org/debian).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SID_ROOT=${SID_ROOT:-/work/sid}
MIRROR=${MIRROR:-http://deb.debian.org/debian}

if [ ! -e "$SID_ROOT/usr/lib/x86_64-linux-gnu/libvulkan_lvp.so" ]; then
  command -v debootstrap > /dev/null || apt-get install -y -q debootstrap > /dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -q debootstrap > /dev/null; }
  echo "setting up $SID_ROOT (Debian sid with mesa-vulkan-drivers)…" >&2
  debootstrap --variant=minbase --include=libvulkan1,mesa-vulkan-drivers sid "$SID_ROOT" "$MIRROR" \
    > "$SID_ROOT.debootstrap.log" 2>&1 || { tail -20 "$SID_ROOT.debootstrap.log" >&2; exit 1; }
fi
# The repository goes in read-only and both mounts come out again on exit, so that removing
# the root file system can never reach the repository.
mkdir -p "$SID_ROOT$ROOT" "$SID_ROOT/proc"
unmount() {
  umount "$SID_ROOT$ROOT" 2> /dev/null || true
  umount "$SID_ROOT/proc" 2> /dev/null || true
}
trap unmount EXIT
mountpoint -q "$SID_ROOT/proc" || mount --bind /proc "$SID_ROOT/proc"
if ! mountpoint -q "$SID_ROOT$ROOT"; then
  mount --bind "$ROOT" "$SID_ROOT$ROOT"
  mount -o remount,bind,ro "$SID_ROOT$ROOT"
fi
in_sid() { chroot "$SID_ROOT" env XDG_RUNTIME_DIR=/tmp WGPU_BACKEND=vulkan bash -c "cd '$ROOT' && $*"; }

if [ "${1:-}" = --setup ]; then
  in_sid "true"
  exit
fi
if [ "${1:-}" = --run ]; then
  in_sid "$2"
  exit
fi
if [ "${1:-}" = --info ]; then
  in_sid target/release/tessera info
  exit
fi
cd "$ROOT"
cargo build --release -p tessera-engine -p tessera --tests 2>&1 | grep -E "^(error|warning)" || true
newest() { ls -t target/release/deps/"$1"-* | grep -v '\.d$' | head -1; }
KT=$(newest kernels)
echo "lavapipe: $(strings "$SID_ROOT/usr/lib/x86_64-linux-gnu/libvulkan_lvp.so" | grep -m1 -o 'Mesa [0-9][0-9.]*' || echo '?')" >&2
if [ "${1:-}" = -- ]; then
  shift
  in_sid "$KT $*"
  exit
fi
# Every kernel test (the cooperative-matrix ones included), then the embedded model end to end
# on the tensor-core path (TESSERA_KERNELS=coop) against diffusers' fixtures and the plain kernels.
in_sid "$KT --include-ignored --test-threads 2"
in_sid "$(newest default_model) --ignored tensor_cores"
# The tensor-core kernels again as compiled for 16- and 32-wide subgroups (256- and
# 512-invocation tiles: 512-bit lavapipe, Apple GPUs), which run right, repeating work, on
# lavapipe's 8-wide ones (TESSERA_COOP_SHAPE; lavapipe itself crashes compiling any
# cooperative-matrix kernel at 512 bits, so it cannot run them natively).
for shape in m8w16 m8w32; do
  in_sid "TESSERA_COOP_SHAPE=$shape $KT coop_kernels --include-ignored --test-threads 2"
done
