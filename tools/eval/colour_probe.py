"""Colour probe for a VQ tokenizer: flat discs of emoji fill colours on white, encoded and
decoded, compared in CIEDE2000 over the discs' interiors (the default-model issue's
tokenizer criterion: mean ΔE00 ≤ 5).

    python tools/eval/colour_probe.py [--vq assets/models/emoji/vqvae] [--size 64]
        [--data tools/train/data/emoji64.npz] [--fills tools/train/data/fill_colours.json]
        [--top 24] [--json out.json]

The palette: saturated primaries and secondaries, the emoji fills the issue names (Noto's
green and purple among them), and with --data the --top most frequent fill colours of the
training images (pixels quantized to 16 levels per channel, near-white and near-black left
out; each bin's mean colour); with --fills the --top first fills of data_svg.py's
fill_colours.json (its "all" list: flat pixels only, bright colours kept). Each disc has
radius 0.35·size on a white square; ΔE00 is averaged over the pixels at least 3 px inside
its edge (the VQ's blocks blur the rim).

Needs torch, diffusers and Pillow (tools/eval/requirements.txt).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

# (name, sRGB) — saturated primaries/secondaries and emoji fills the issue calls out.
PALETTE = [
    ("red", (255, 0, 0)),
    ("green", (0, 255, 0)),
    ("blue", (0, 0, 255)),
    ("yellow", (255, 255, 0)),
    ("cyan", (0, 255, 255)),
    ("magenta", (255, 0, 255)),
    ("orange", (255, 128, 0)),
    ("purple", (128, 0, 255)),
    ("emoji green (Noto)", (67, 160, 71)),
    ("emoji purple (Noto)", (142, 36, 170)),
    ("emoji red heart", (244, 67, 54)),
    ("emoji orange", (255, 152, 0)),
    ("emoji yellow", (253, 216, 53)),
    ("emoji blue", (30, 136, 229)),
    ("emoji brown", (121, 85, 72)),
]


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB in [0, 255] (any shape ending in 3) → CIELAB (D65)."""
    c = rgb.astype(np.float64) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array(
        [
            [0.4124564, 0.3575761, 0.1804375],
            [0.2126729, 0.7151522, 0.0721750],
            [0.0193339, 0.1191920, 0.9503041],
        ]
    )
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    L = 116 * f[..., 1] - 16
    a = 500 * (f[..., 0] - f[..., 1])
    b = 200 * (f[..., 1] - f[..., 2])
    return np.stack([L, a, b], axis=-1)


def ciede2000(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """CIEDE2000 colour difference (kL = kC = kH = 1), elementwise over [..., 3]."""
    L1, a1, b1 = np.moveaxis(lab1, -1, 0)
    L2, a2, b2 = np.moveaxis(lab2, -1, 0)
    C1 = np.hypot(a1, b1)
    C2 = np.hypot(a2, b2)
    Cm = (C1 + C2) / 2
    G = 0.5 * (1 - np.sqrt(Cm**7 / (Cm**7 + 25.0**7)))
    a1p, a2p = (1 + G) * a1, (1 + G) * a2
    C1p, C2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360
    dLp = L2 - L1
    dCp = C2p - C1p
    dh = h2p - h1p
    dh = np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh))
    dh = np.where(C1p * C2p == 0, 0.0, dh)
    dHp = 2 * np.sqrt(C1p * C2p) * np.sin(np.radians(dh) / 2)
    Lpm = (L1 + L2) / 2
    Cpm = (C1p + C2p) / 2
    hsum = h1p + h2p
    hpm = np.where(
        C1p * C2p == 0,
        hsum,
        np.where(
            np.abs(h1p - h2p) <= 180,
            hsum / 2,
            np.where(hsum < 360, (hsum + 360) / 2, (hsum - 360) / 2),
        ),
    )
    T = (
        1
        - 0.17 * np.cos(np.radians(hpm - 30))
        + 0.24 * np.cos(np.radians(2 * hpm))
        + 0.32 * np.cos(np.radians(3 * hpm + 6))
        - 0.20 * np.cos(np.radians(4 * hpm - 63))
    )
    dtheta = 30 * np.exp(-(((hpm - 275) / 25) ** 2))
    Rc = 2 * np.sqrt(Cpm**7 / (Cpm**7 + 25.0**7))
    Sl = 1 + 0.015 * (Lpm - 50) ** 2 / np.sqrt(20 + (Lpm - 50) ** 2)
    Sc = 1 + 0.045 * Cpm
    Sh = 1 + 0.015 * Cpm * T
    Rt = -np.sin(np.radians(2 * dtheta)) * Rc
    return np.sqrt(
        (dLp / Sl) ** 2 + (dCp / Sc) ** 2 + (dHp / Sh) ** 2 + Rt * (dCp / Sc) * (dHp / Sh)
    )


# Sharma, Wu & Dalal (2005), "The CIEDE2000 color-difference formula: implementation notes,
# supplementary test data": pairs 1, 2 and 7 of their table.
SHARMA_PAIRS = [
    ((50.0, 2.6772, -79.7751), (50.0, 0.0, -82.7485), 2.0425),
    ((50.0, 3.1571, -77.2803), (50.0, 0.0, -82.7485), 2.8615),
    ((50.0, 0.0, 0.0), (50.0, -1.0, 2.0), 2.3669),
]


def self_test() -> None:
    for lab1, lab2, want in SHARMA_PAIRS:
        got = float(ciede2000(np.array(lab1), np.array(lab2)))
        assert abs(got - want) < 1e-4, (lab1, lab2, got, want)
        got = float(ciede2000(np.array(lab2), np.array(lab1)))
        assert abs(got - want) < 1e-4, "not symmetric"
    # sRGB white is L* 100, a* = b* = 0.
    assert np.allclose(srgb_to_lab(np.array([255, 255, 255])), [100, 0, 0], atol=1e-3)


def frequent_fills(npz: str, top: int) -> list[tuple[str, tuple[int, int, int]]]:
    """The `top` most frequent fill colours of the training images (see the module doc)."""
    images = np.load(npz)["images"].reshape(-1, 3).astype(np.int64)
    keep = (images.max(axis=1) < 235) & (images.max(axis=1) > 25)
    px = images[keep]
    bins = (px // 16) @ np.array([256, 16, 1])
    counts = np.bincount(bins, minlength=4096)
    out = []
    for b in np.argsort(counts)[::-1][:top]:
        mean = px[bins == b].mean(axis=0).round().astype(int)
        out.append((f"data fill #{len(out) + 1} ({counts[b]} px)", tuple(int(v) for v in mean)))
    return out


def disc_image(rgb, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A disc of `rgb` on white, and the mask of its interior (≥ 3 px inside the edge)."""
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - (size - 1) / 2, xx - (size - 1) / 2)
    radius = 0.35 * size
    img = np.full((size, size, 3), 255, np.uint8)
    img[r <= radius] = rgb
    return img, r <= radius - 3


def probe_vq(vq, palette=None, size: int = 64, value_range: str = "01") -> dict:
    """Encode -> quantize -> decode one disc per palette colour with an in-memory VQModel and
    return {"rows": [...], "mean_de00": float} (the table main() prints). For training
    scripts (tools/train/train_vq2.py). value_range is the pixel range fed to the model:
    "01" = [0, 1], the range AmusedPipeline uses (its VaeImageProcessor has
    do_normalize=False) and tools/train's VQ is trained on; "pm1" = [-1, 1], what main() fed
    before 2026-11-30 (kept to compare with earlier reports)."""
    import torch

    palette = list(PALETTE) if palette is None else palette
    imgs, masks = zip(*(disc_image(rgb, size) for _, rgb in palette))
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255.0
    if value_range == "pm1":
        x = x * 2 - 1
    was_training = vq.training
    vq.eval()
    with torch.no_grad():
        y = vq.decode(vq.encode(x.to(next(vq.parameters()).device)).latents).sample.cpu()
    vq.train(was_training)
    if value_range == "pm1":
        y = (y + 1) / 2
    outs = (y.permute(0, 2, 3, 1).clamp(0, 1) * 255).round().byte().numpy()
    rows = []
    for (name, rgb), img, inner, out in zip(palette, imgs, masks, outs):
        de = ciede2000(srgb_to_lab(img[inner]), srgb_to_lab(out[inner]))
        rows.append({"colour": name, "rgb": list(rgb),
                     "decoded_mean_rgb": [int(v) for v in out[inner].mean(axis=0).round()],
                     "mean_de00": float(de.mean())})
    return {"rows": rows, "mean_de00": float(np.mean([r["mean_de00"] for r in rows]))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vq", default="assets/models/emoji/vqvae")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--data", help="an images npz of tools/train, for its frequent fills: data.py's "
                    "emoji64.npz or data_svg.py's emoji_svg64.npz / emoji_svg128.npz")
    ap.add_argument("--fills", help="fill_colours.json of tools/train/data_svg.py: add its first --top fills")
    ap.add_argument("--top", type=int, default=24)
    ap.add_argument("--json", help="write the table here too")
    ap.add_argument("--range", choices=["01", "pm1"], default="01",
                    help="pixel range fed to the VQ: 01 = [0, 1], AmusedPipeline's and the one "
                    "tools/train trains on (default); pm1 = [-1, 1], what this script fed before "
                    "2026-11-30 (its 27.1 on the shipped VQ was measured so)")
    args = ap.parse_args()
    self_test()

    from diffusers import VQModel

    vq = VQModel.from_pretrained(args.vq).eval()
    palette = list(PALETTE)
    if args.data:
        palette += frequent_fills(args.data, args.top)
    if args.fills:
        with open(args.fills) as f:
            fills = json.load(f)["all"]["fills"][: args.top]
        palette += [(f"svg fill #{x['rank']} {x['hex']}", tuple(x["rgb"])) for x in fills]
    result = probe_vq(vq, palette, args.size, args.range)
    rows = result["rows"]
    print("| colour | sRGB | decoded (mean over the interior) | mean ΔE00 |")
    print("|---|---|---|---:|")
    for r in rows:
        print(
            f"| {r['colour']} | {tuple(r['rgb'])} | {tuple(r['decoded_mean_rgb'])} | "
            f"{r['mean_de00']:.1f} |"
        )
    overall = float(np.mean([r["mean_de00"] for r in rows]))
    print(f"\nmean ΔE00 over {len(rows)} colours: {overall:.1f} (criterion: ≤ 5)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"vq": args.vq, "size": args.size, "rows": rows, "mean_de00": overall}, f,
                      indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
