#!/usr/bin/env bash
# Downloads the wheels tools/bench/reference.py needs on the lent GPU machine into
# tools/bench/wheels (ignored by git), for run_device.sh to install offline. That machine's
# Python (3.12) has torch, transformers, huggingface_hub, numpy and Pillow but not diffusers
# (/work/.library/device/KINDS.md lists its packages); diffusers' other needs are there too,
# except importlib_metadata. Pure-Python wheels, about 5 MB.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p wheels
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp -d wheels diffusers==0.42.1 importlib_metadata
du -sh wheels
