"""Pack / unpack the default model v2's training data for a GPU machine (run_device_v2.sh).

A GPU machine gets the git working tree plus a few carried paths (64 MiB in all) and has no
SVG rasterizer, so data_svg.py cannot run there. This script ships the least that rebuilds every
input of the v2 chain (train_vq2.py, train_super_res.py --stage cache, train_transformer.py via
the SR token cache, export.py's model card):

  pack    (here)  data/emoji_svg_pack.npz (data_svg.py) -> one xz file, default
                  device/v2_data.xz (git-ignored; carry it): the 128 px images as raw uint8
                  [N,128,128,3] (the 64 px set is NOT packed: it is rebuilt as the 2x2 box mean
                  of the 128 px, rounded), heldout / style / hue, and the small files the chain
                  reads: captions_svg.json (the pack's captions_json), fill_colours.json,
                  SOURCES.md, SOURCES_svg.md. About 17 MB for all 10,439 images (xz preset 6).
  unpack  (there) -> DATA/emoji_svg128.npz, DATA/emoji_svg64.npz (np.savez, data_svg.py's keys:
                  images, heldout, style, hue), DATA/captions_svg.json, DATA/fill_colours.json,
                  DATA/SOURCES.md, DATA/SOURCES_svg.md (DATA = --data-dir, default data/).
                  Checks the SHA-256 of every blob against the pack's header. A few seconds.
  verify  (here)  unpack into a scratch folder and compare with the real data/ files: the
                  128 px images, labels and small files exactly, the rebuilt 64 px against
                  data_svg.py's separately rasterised emoji_svg64.npz (mean |difference| must
                  stay under 1/255; data_svg.py measured ~0.5/255).

File layout: one xz stream (lzma, FORMAT_XZ) holding b"TESSV2P1", a little-endian uint64 header
length, the header (JSON: per blob its name, kind "array" with dtype/shape or "file", byte size
and SHA-256), then the blobs in header order.

Examples:
  python pack_v2.py pack                      # -> device/v2_data.xz
  python pack_v2.py verify                    # unpack to a temp folder, compare with data/
  python pack_v2.py unpack --data-dir data    # on the GPU machine (run_device_v2.sh does it)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import shutil
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA_DIR = HERE / "data"
DEFAULT_PACK = HERE / "device" / "v2_data.xz"
MAGIC = b"TESSV2P1"
SMALL_FILES = ("fill_colours.json", "SOURCES.md", "SOURCES_svg.md")


def sha256(b: bytes | memoryview) -> str:
    return hashlib.sha256(b).hexdigest()


def box_downsample(images128: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """[N,2S,2S,3] uint8 -> [N,S,S,3] uint8: mean of each 2x2 block, rounded half up."""
    n, h, w, c = images128.shape
    out = np.empty((n, h // 2, w // 2, c), np.uint8)
    for i in range(0, n, chunk):
        x = images128[i : i + chunk].astype(np.uint16)
        s = x[:, 0::2, 0::2] + x[:, 1::2, 0::2] + x[:, 0::2, 1::2] + x[:, 1::2, 1::2]
        out[i : i + chunk] = ((s + 2) // 4).astype(np.uint8)
    return out


def pack(args):
    t0 = time.time()
    src = args.data_dir / "emoji_svg_pack.npz"
    if not src.exists():
        sys.exit(f"{src} not found: run data_svg.py first")
    z = np.load(src)
    arrays = {
        "images128": np.ascontiguousarray(z["images128"]),
        "heldout": z["heldout"].astype(bool),
        "style": z["style"].astype(np.uint8),
        "hue": z["hue"].astype(np.uint8),
    }
    files = {"captions_svg.json": bytes(z["captions_json"])}
    for name in SMALL_FILES:
        p = args.data_dir / name
        if not p.exists():
            sys.exit(f"{p} not found (data_svg.py / data.py write it)")
        files[name] = p.read_bytes()
    n = arrays["images128"].shape[0]
    recs = json.loads(files["captions_svg.json"].decode("utf-8"))["records"]
    assert len(recs) == n == len(arrays["heldout"]), "captions and images disagree"
    assert all(bool(r["heldout"]) == h for r, h in zip(recs, arrays["heldout"])), "captions' heldout differs"

    blobs, header = [], {"format": 1, "created": time.strftime("%Y-%m-%d %H:%M:%S"), "source": src.name, "blobs": []}
    for name, a in arrays.items():
        b = memoryview(a).cast("B")
        header["blobs"].append({"name": name, "kind": "array", "dtype": str(a.dtype), "shape": list(a.shape),
                                "nbytes": b.nbytes, "sha256": sha256(b)})
        blobs.append(b)
    for name, b in files.items():
        header["blobs"].append({"name": name, "kind": "file", "nbytes": len(b), "sha256": sha256(b)})
        blobs.append(b)
    hb = json.dumps(header, indent=1).encode("utf-8")
    args.pack.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.pack.with_suffix(args.pack.suffix + ".tmp")
    with lzma.open(tmp, "wb", format=lzma.FORMAT_XZ, preset=args.preset) as f:
        f.write(MAGIC + struct.pack("<Q", len(hb)) + hb)
        for b in blobs:
            for i in range(0, len(b), 1 << 24):
                f.write(b[i : i + (1 << 24)])
    tmp.replace(args.pack)
    raw = sum(x["nbytes"] for x in header["blobs"])
    print(f"wrote {args.pack}: {args.pack.stat().st_size / 1e6:.2f} MB ({raw / 1e6:.1f} MB raw, {n} images, "
          f"xz preset {args.preset}) in {time.time() - t0:.0f}s")


def read_pack(path: Path) -> tuple[dict, dict]:
    """-> (header, {name: bytes}), every blob's SHA-256 checked."""
    with lzma.open(path, "rb") as f:
        if f.read(len(MAGIC)) != MAGIC:
            sys.exit(f"{path}: not a v2 data pack")
        (hl,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(hl).decode("utf-8"))
        blobs = {}
        for b in header["blobs"]:
            data = f.read(b["nbytes"])
            if len(data) != b["nbytes"] or sha256(data) != b["sha256"]:
                sys.exit(f"{path}: blob {b['name']} is damaged (size or SHA-256 differs)")
            blobs[b["name"]] = data
    return header, blobs


def unpack(args):
    t0 = time.time()
    header, blobs = read_pack(args.pack)
    t_read = time.time() - t0
    arrays = {b["name"]: np.frombuffer(blobs[b["name"]], dtype=b["dtype"]).reshape(b["shape"])
              for b in header["blobs"] if b["kind"] == "array"}
    out = args.data_dir
    out.mkdir(parents=True, exist_ok=True)
    labels = {k: arrays[k] for k in ("heldout", "style", "hue")}
    im128 = arrays["images128"]
    im64 = box_downsample(im128)
    # data_svg.py's layout: uncompressed npz, keys images / heldout / style / hue.
    np.savez(out / "emoji_svg128.npz", images=im128, **labels)
    np.savez(out / "emoji_svg64.npz", images=im64, **labels)
    for b in header["blobs"]:
        if b["kind"] == "file":
            (out / b["name"]).write_bytes(blobs[b["name"]])
    print(f"unpacked {args.pack} ({args.pack.stat().st_size / 1e6:.1f} MB) -> {out}: {im128.shape[0]} images, "
          f"emoji_svg128.npz + emoji_svg64.npz (2x2 box mean) + "
          f"{', '.join(b['name'] for b in header['blobs'] if b['kind'] == 'file')} "
          f"in {time.time() - t0:.1f}s (decompress {t_read:.1f}s)")


def verify(args):
    """Unpack into a scratch folder and compare with the real data/ folder."""
    scratch = Path(tempfile.mkdtemp(prefix="v2pack_"))
    try:
        unpack(argparse.Namespace(pack=args.pack, data_dir=scratch))
        ok = True
        for size in (128, 64):
            a, b = np.load(scratch / f"emoji_svg{size}.npz"), np.load(args.data_dir / f"emoji_svg{size}.npz")
            if a.files != b.files:
                print(f"emoji_svg{size}.npz: keys {a.files} vs {b.files}")
                ok = False
            for k in ("heldout", "style", "hue"):
                same = a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k])
                ok &= same
                print(f"emoji_svg{size}.npz {k}: {'identical' if same else 'DIFFERS'} ({a[k].dtype})")
            ia, ib = a["images"], b["images"]
            if ia.shape != ib.shape:
                print(f"emoji_svg{size}.npz images: shape {ia.shape} vs {ib.shape}")
                ok = False
                continue
            d = np.abs(ia.astype(np.int16) - ib.astype(np.int16))
            mean = float(d.mean())
            if size == 128:
                same = bool(np.array_equal(ia, ib))
                ok &= same
                print(f"emoji_svg128.npz images: {'identical' if same else 'DIFFER'} {ia.shape}")
            else:
                good = mean < 1.0
                ok &= good
                print(f"emoji_svg64.npz images (2x2 box mean of 128 px vs rasterised at 64 px): mean |diff| "
                      f"{mean:.3f}/255 ({'ok' if good else 'TOO LARGE'}: < 1/255 wanted), max {int(d.max())}, "
                      f"pixels equal {float((d == 0).mean()) * 100:.1f} %, within 1: {float((d <= 1).mean()) * 100:.1f} %")
        for name in ("captions_svg.json",) + SMALL_FILES:
            same = (scratch / name).read_bytes() == (args.data_dir / name).read_bytes()
            ok &= same
            print(f"{name}: {'identical' if same else 'DIFFERS'}")
        print("verify:", "OK" if ok else "FAILED")
        return 0 if ok else 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["pack", "unpack", "verify"])
    ap.add_argument("--pack", type=Path, default=DEFAULT_PACK, help=f"the pack file (default {DEFAULT_PACK.relative_to(HERE)})")
    ap.add_argument("--data-dir", type=Path, default=DATA_DIR,
                    help="pack/verify: where data_svg.py's outputs are; unpack: where to write (default data/)")
    ap.add_argument("--preset", type=int, default=6, help="pack: xz preset (0-9)")
    args = ap.parse_args()
    return {"pack": pack, "unpack": unpack, "verify": verify}[args.command](args) or 0


if __name__ == "__main__":
    sys.exit(main())
