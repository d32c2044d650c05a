"""Build emoji training sets at 64, 128 and 256 px from SVG emoji (a second data builder
beside data.py: more emoji per name, a third art style, and sharp images at any size).

Sources (fetched with `npm pack`, nothing is installed; package.json, info.json, icons.json
and chars.json are read straight from the tarballs):
  @iconify-json/noto@1.2.9               Noto Emoji SVGs, Google          (Apache-2.0)  style 0 "noto"
  @iconify-json/twemoji@1.2.5            Twemoji SVGs, Twitter/jdecked    (CC-BY-4.0)   style 1 "twemoji"
  @iconify-json/fluent-emoji-flat@1.2.6  Fluent Emoji Flat SVGs, Microsoft (MIT)        style 2 "fluent"
The licences are checked against each package's own package.json and info.json at build
time (the build stops on a mismatch or on any share-alike licence). Names, short names,
categories and skin-tone variants come from emoji.json of emoji-datasource-google@16.0.0,
the same file data.py uses (fetched through data.py's npm_pack).

Iconify sets map code points to icon names in chars.json ("1f34f" -> "green-apple"; keys are
lower-case, '-'-joined and without U+FE0F). Each emoji.json entry and each of its skin-tone
variants (data.py's emoji_variants) is joined to an icon by its code points with FE0F
removed. Icons and aliases that no code point names are skipped and counted, and so are
chars entries whose code points emoji.json 16.0 does not list (newer emoji: no name).
An icon is resolved the Iconify way (set-level width/height/left/top defaults, per-icon
overrides, alias chains whose rotations add up and whose flips toggle), turned into a full
SVG document (view box = the icon's box, flips then quarter turns applied as one transform,
non-square boxes centred in the square by the default preserveAspectRatio), rasterized with
resvg (PyPI `resvg_py`, a self-contained wheel) directly at each size and composited on
white with data.py's composite_on_white. Captions and the held-out split are data.py's
(is_heldout on the base emoji), so the same emoji are held out in both data sets.

Output in tools/train/data/ (git-ignored):
  iconify-json-*.tgz        the packed npm tarballs (cache; read directly, not extracted)
  emoji_svg{S}.npz          for S in --sizes (default 64, 128, 256), uncompressed like
                            emoji64.npz: images uint8 [N,S,S,3], heldout bool [N],
                            style uint8 [N] (0 noto, 1 twemoji, 2 fluent),
                            hue uint8 [N] (dominant hue, index into HUES below)
                            (the same N images in the same order at every size)
  captions_svg.json         one record per image, data.py's record format (caption,
                            short_names, style, category, subcategory, unified, group,
                            heldout) plus style_id, icon (Iconify name) and hue
  emoji_svg_pack.npz        the 64 and 128 px sets with np.savez_compressed, for shipping the
                            training set to another machine: images64, images128, heldout,
                            style, hue, captions_json (the bytes of captions_svg.json, uint8)
  fill_colours.json         the --top most frequent flat fill colours of the training images
                            and the share of images per dominant hue (for colour-balanced
                            sampling and the tokenizer's colour probe), once over all training
                            images ("all") and once without skin-tone variants ("base_emoji")
  SOURCES_svg.md            sources, versions, licences and attribution (addendum to
                            data.py's SOURCES.md, for the model card)
  emoji_svg_sheet.png       contact sheet of a few emoji in every style at 64 and 128 px

Fill colours: pixels quantized to 16 levels per channel (as tools/eval/colour_probe.py
does); a pixel counts only if its four neighbours fall in the same bin (that drops
anti-aliased edges and thin lines) and it is not near-white (all channels >= 235); each
bin is reported with its mean colour. Hues: a counted pixel with HSV saturation >= 0.15,
chroma (max - min) >= 0.1 and value >= 0.2 is chromatic and gets one of red/orange/yellow/
green/blue/purple/pink/brown by hue_class(); an image's dominant hue is its most frequent
class, or "grey" when fewer than 10 % of its counted pixels are chromatic ("pink" and
"grey" come on top of the seven hues the colour-balance design asked for; every image gets
exactly one class).

Usage: nice -n 19 python data_svg.py [--sizes 64,128,256] [--workers 2] [--force]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from common import DATA_DIR, log, npm_pack_spec, write_json
from data import HELDOUT_PER_MILLE, SPLIT_SALT, composite_on_white, emoji_variants, is_heldout, short_name_words
from data import npm_pack as npm_pack_png

STYLES = ("noto", "twemoji", "fluent")
SETS = {
    "noto": {
        "package": "@iconify-json/noto",
        "version": "1.2.9",
        "license": "Apache-2.0",
        "name": "Noto Emoji",
        "copyright": "Copyright Google Inc.",
        "url": "https://github.com/googlefonts/noto-emoji",
        "license_url": "https://www.apache.org/licenses/LICENSE-2.0",
    },
    "twemoji": {
        "package": "@iconify-json/twemoji",
        "version": "1.2.5",
        "license": "CC-BY-4.0",
        "name": "Twemoji",
        "copyright": "Copyright 2019 Twitter, Inc. and other contributors (graphics now maintained "
        "at https://github.com/jdecked/twemoji)",
        "url": "https://github.com/jdecked/twemoji",
        "license_url": "https://creativecommons.org/licenses/by/4.0/",
    },
    "fluent": {
        "package": "@iconify-json/fluent-emoji-flat",
        "version": "1.2.6",
        "license": "MIT",
        "name": "Fluent Emoji (Flat style)",
        "copyright": "Copyright (c) Microsoft Corporation",
        "url": "https://github.com/microsoft/fluentui-emoji",
        "license_url": "https://github.com/microsoft/fluentui-emoji/blob/main/LICENSE",
    },
}
EMOJI_JSON_SOURCE = "google"  # data.py's package whose emoji.json names the emoji

CAPTIONS_SVG = "captions_svg.json"
PACK_NPZ = "emoji_svg_pack.npz"
PACK_SIZES = (64, 128)
PACK_LIMIT_MB = 30.0
SHEET_SIZES = (64, 128)
SHEET_CAPTIONS = [
    "green apple", "purple heart", "red apple", "blue heart", "orange heart", "brown heart",
    "yellow heart", "green heart", "grinning face", "rocket", "rainbow",
    "thumbs up sign: medium skin tone", "watermelon", "swan", "keycap 5",
    "white right pointing backhand index", "black rightwards arrow", "egypt flag",
]

# Iconify defaults for an icon's box and transformations (IconifyJSON format).
ICON_DEFAULTS = {"left": 0, "top": 0, "width": 16, "height": 16, "rotate": 0, "hFlip": False, "vFlip": False}
BOX_KEYS = ("left", "top", "width", "height")

HUES = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "grey")
NEAR_WHITE = 235
QUANT = 16


# --------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------


def tarball_path(style: str) -> Path:
    pkg = SETS[style]["package"].lstrip("@").replace("/", "-")
    return DATA_DIR / f"{pkg}-{SETS[style]['version']}.tgz"


def npm_pack(style: str, force: bool) -> Path:
    spec = f"{SETS[style]['package']}@{SETS[style]['version']}"
    return npm_pack_spec(spec, tarball_path(style), force)


def read_iconify(style: str, force: bool) -> dict:
    """package.json, info.json, icons.json and chars.json of one set; licence checked."""
    wanted = {"package.json", "info.json", "icons.json", "chars.json"}
    out = {}
    with tarfile.open(npm_pack(style, force), "r:gz") as t:
        for m in t:
            name = m.name.removeprefix("package/")
            if m.isfile() and name in wanted:
                out[name.removesuffix(".json")] = json.loads(t.extractfile(m).read())
    missing = {w.removesuffix(".json") for w in wanted} - set(out)
    if missing:
        sys.exit(f"{tarball_path(style).name}: no {sorted(missing)}")
    meta, info = out["package"], out["info"]
    want = SETS[style]
    if meta["name"] != want["package"] or meta["version"] != want["version"]:
        sys.exit(f"{tarball_path(style).name}: is {meta['name']}@{meta['version']}")
    spdx = {meta.get("license"), info.get("license", {}).get("spdx")}
    if spdx != {want["license"]}:
        sys.exit(f"{want['package']}: licence {sorted(map(str, spdx))}, expected {want['license']}")
    if any("SA" in s.split("-") for s in spdx):
        sys.exit(f"{want['package']}: share-alike licence {spdx}; not used")
    return out


def load_emojis(force: bool) -> list[dict]:
    """emoji.json from data.py's emoji-datasource package, in sort order (as data.py)."""
    with tarfile.open(npm_pack_png(EMOJI_JSON_SOURCE, force), "r:gz") as t:
        emojis = json.loads(t.extractfile("package/emoji.json").read())
    return sorted(emojis, key=lambda e: e["sort_order"])


def char_key(unified: str) -> str:
    """emoji.json 'unified' ("2764-FE0F") -> Iconify chars.json key ("2764")."""
    return "-".join(p for p in unified.lower().split("-") if p != "fe0f")


# --------------------------------------------------------------------------------------
# Iconify icon -> SVG document
# --------------------------------------------------------------------------------------


def resolve_icon(icon_set: dict, name: str, depth: int = 0) -> dict:
    """Full icon (body, box, transformations) for an icon or alias name of an IconifyJSON
    set: set-level defaults, then the icon's own values; an alias takes its parent's and
    overrides body/box, adds its rotation and toggles the flips."""
    icons, aliases = icon_set["icons"], icon_set.get("aliases", {})
    if name in icons:
        icon = dict(ICON_DEFAULTS)
        icon.update({k: icon_set[k] for k in ICON_DEFAULTS if k in icon_set})
        icon.update(icons[name])
        return icon
    if name not in aliases or depth > 16:
        raise KeyError(f"{icon_set.get('prefix')}:{name}")
    alias = aliases[name]
    icon = resolve_icon(icon_set, alias["parent"], depth + 1)
    for k in BOX_KEYS + ("body",):
        if k in alias:
            icon[k] = alias[k]
    icon["rotate"] = (icon["rotate"] + alias.get("rotate", 0)) % 4
    icon["hFlip"] = icon["hFlip"] != bool(alias.get("hFlip", False))
    icon["vFlip"] = icon["vFlip"] != bool(alias.get("vFlip", False))
    return icon


def _num(v: float) -> str:
    return f"{v:.6g}"


def svg_document(icon: dict, size: int) -> str:
    """A standalone SVG of `icon` rendered size x size. Flips and quarter turns (clockwise,
    as Iconify's `rotate`) become one affine transform mapping the icon's box onto
    [0, w'] x [0, h']; a non-square box is centred (preserveAspectRatio default)."""
    left, top, w, h = (float(icon[k]) for k in BOX_KEYS)
    # 3x3 affine matrix acting on column vectors (x, y, 1).
    m = np.array([[1.0, 0, -left], [0, 1.0, -top], [0, 0, 1]])
    if icon["hFlip"]:
        m = np.array([[-1.0, 0, w], [0, 1, 0], [0, 0, 1]]) @ m
    if icon["vFlip"]:
        m = np.array([[1.0, 0, 0], [0, -1, h], [0, 0, 1]]) @ m
    for _ in range(int(icon["rotate"]) % 4):
        # A quarter turn clockwise (y points down): (x, y) -> (h - y, x); the box turns w x h -> h x w.
        m = np.array([[0.0, -1, h], [1, 0, 0], [0, 0, 1]]) @ m
        w, h = h, w
    body = icon["body"]
    if np.allclose(m, np.eye(3)):
        view = f"0 0 {_num(w)} {_num(h)}"
    elif np.allclose(m[:2, :2], np.eye(2)):  # a pure translation: keep the original box
        view = f"{_num(left)} {_num(top)} {_num(w)} {_num(h)}"
    else:
        a, c, e, b, d, f = m[:2].ravel()
        body = f'<g transform="matrix({_num(a)} {_num(b)} {_num(c)} {_num(d)} {_num(e)} {_num(f)})">{body}</g>'
        view = f"0 0 {_num(w)} {_num(h)}"
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
        f'width="{size}" height="{size}" viewBox="{view}">{body}</svg>'
    )


def render(task: tuple[dict, tuple[int, ...]]) -> tuple[list[np.ndarray], list[float]]:
    """Worker: one icon at each size -> (uint8 [S,S,3] images on white, seconds per size)."""
    import resvg_py

    icon, sizes = task
    images, secs = [], []
    for s in sizes:
        t0 = time.perf_counter()
        png = resvg_py.svg_to_bytes(svg_string=svg_document(icon, s), skip_system_fonts=True)
        images.append(composite_on_white(bytes(png), s))
        secs.append(time.perf_counter() - t0)
    return images, secs


# --------------------------------------------------------------------------------------
# Colour statistics
# --------------------------------------------------------------------------------------


def rgb_to_hsv(px: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 [..., 3] -> hue in degrees [0, 360), saturation and value in [0, 1]."""
    x = px.astype(np.float32) / 255.0
    mx, mn = x.max(axis=-1), x.min(axis=-1)
    d = mx - mn
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    safe = np.where(d > 0, d, 1.0)
    h = np.where(mx == r, (g - b) / safe % 6, np.where(mx == g, (b - r) / safe + 2, (r - g) / safe + 4))
    h = np.where(d > 0, h * 60.0, 0.0)
    s = np.where(mx > 0, d / np.where(mx > 0, mx, 1.0), 0.0)
    return h, s, mx


def hue_class(px: np.ndarray) -> np.ndarray:
    """uint8 [..., 3] -> index into HUES. Hue sectors (degrees): red < 17 or >= 345,
    orange 17-38 (Noto's red apple is at 15, Fluent's orange heart at 18.5), yellow 38-70,
    green 70-165, blue 165-250, purple 250-295, pink 295-345. Warm hues (< 50 or >= 345)
    that are darker or duller (value < 0.8 and saturation < 0.85) count as brown; light
    pastel ones (saturation < 0.5, value >= 0.8) as pink when reddish (>= 340 or < 5) and
    as orange otherwise (peach, beige, the lighter skin tones). Pixels with saturation
    < 0.15, chroma (max - min) < 0.1 or value < 0.2 are grey (the chroma floor keeps
    Twemoji's blue-tinted near-blacks grey)."""
    h, s, v = rgb_to_hsv(px)
    cls = np.select(
        [h < 17, h < 38, h < 70, h < 165, h < 250, h < 295, h < 345],
        [0, 1, 2, 3, 4, 5, 6],
        default=0,
    ).astype(np.uint8)
    warm = (h < 50) | (h >= 345)
    cls[warm & (v < 0.8) & (s < 0.85)] = HUES.index("brown")
    pastel = warm & (s < 0.5) & (v >= 0.8)
    cls[pastel] = np.where((h[pastel] >= 340) | (h[pastel] < 5), HUES.index("pink"), HUES.index("orange"))
    cls[(s < 0.15) | (s * v < 0.1) | (v < 0.2)] = HUES.index("grey")
    return cls


def flat_pixels(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mask [N,S,S] of counted pixels (not near-white; same 16-level bin as all four
    neighbours; the outer ring of pixels left out) and the bin index [N,S,S] (r*256+g*16+b)."""
    q = (images // QUANT).astype(np.int32)
    bins = q[..., 0] * 256 + q[..., 1] * 16 + q[..., 2]
    inner = bins[:, 1:-1, 1:-1]
    same = (
        (inner == bins[:, :-2, 1:-1])
        & (inner == bins[:, 2:, 1:-1])
        & (inner == bins[:, 1:-1, :-2])
        & (inner == bins[:, 1:-1, 2:])
    )
    mask = np.zeros(bins.shape, bool)
    mask[:, 1:-1, 1:-1] = same
    mask &= images.min(axis=-1) < NEAR_WHITE
    return mask, bins


def colour_stats(images: np.ndarray, style: np.ndarray, train: np.ndarray, base: np.ndarray,
                 top: int, chunk: int = 256) -> tuple[np.ndarray, dict]:
    """Dominant hue of every image, and the fill-colour / hue-share summary (a dict for
    fill_colours.json) over the training images, and again over the training images that
    are not skin-tone variants (`base`: one image per emoji and style, so the many people
    emoji in five skin tones do not dominate)."""
    n = len(images)
    views = {"all": train, "base_emoji": train & base}
    counts = {v: np.zeros(4096, np.int64) for v in views}
    sums = {v: np.zeros((4096, 3), np.float64) for v in views}
    images_with = {v: np.zeros(4096, np.int64) for v in views}  # images where the bin covers >= 1 %
    dominant = np.zeros(n, np.uint8)
    for i in range(0, n, chunk):
        im = images[i : i + chunk]
        mask, bins = flat_pixels(im)
        cls = hue_class(im)
        for j in range(len(im)):
            k, mj = i + j, mask[j]
            c = np.bincount(cls[j][mj], minlength=len(HUES))[: HUES.index("grey")]
            enough = c.sum() >= 0.1 * max(int(mj.sum()), 1)
            dominant[k] = int(np.argmax(c)) if enough else HUES.index("grey")
            if not train[k]:
                continue
            b = bins[j][mj]
            bc = np.bincount(b, minlength=4096)
            px = im[j][mj].astype(np.float64)
            bsum = np.stack([np.bincount(b, weights=px[:, ch], minlength=4096) for ch in range(3)], 1)
            for v, sel in views.items():
                if sel[k]:
                    counts[v] += bc
                    sums[v] += bsum
                    images_with[v] += bc >= 0.01 * mj.size

    def fills(v: str) -> list[dict]:
        total = int(counts[v].sum())
        out = []
        for b in np.argsort(counts[v])[::-1][:top]:
            mean = (sums[v][b] / counts[v][b]).round().astype(np.uint8)
            out.append(
                {
                    "rank": len(out) + 1,
                    "rgb": [int(x) for x in mean],
                    "hex": "#" + "".join(f"{int(x):02x}" for x in mean),
                    "hue": HUES[int(hue_class(mean[None])[0])],
                    "pixel_share": round(float(counts[v][b]) / total, 5),
                    "images_covering_1pct": int(images_with[v][b]),
                }
            )
        return out

    def shares(sel: np.ndarray) -> dict:
        c = np.bincount(dominant[sel], minlength=len(HUES))
        return {h: round(float(c[i]) / max(int(sel.sum()), 1), 4) for i, h in enumerate(HUES)}

    summary = {}
    for v, sel in views.items():
        summary[v] = {
            "images": int(sel.sum()),
            "counted_pixels": int(counts[v].sum()),
            "fills": fills(v),
            "dominant_hue_share": shares(sel),
            "dominant_hue_share_by_style": {s: shares(sel & (style == si)) for si, s in enumerate(STYLES)},
            "dominant_hue_count": {h: int(((dominant == i) & sel).sum()) for i, h in enumerate(HUES)},
        }
    return dominant, summary


# --------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------


def contact_sheet(images: dict[int, np.ndarray], records: list[dict], path: Path) -> list[str]:
    """Rows = SHEET_CAPTIONS, columns = style x SHEET_SIZES (64 px shown at 2x, nearest)."""
    cell, label_w = max(SHEET_SIZES), 300
    by_key = {(r["caption"], r["style"]): i for i, r in enumerate(records)}
    rows = [c for c in SHEET_CAPTIONS if any((c, s) in by_key for s in STYLES)]
    cols = [(s, size) for s in STYLES for size in SHEET_SIZES if size in images]
    sheet = Image.new("RGB", (label_w + cell * len(cols), 20 + cell * len(rows)), (200, 200, 200))
    draw = ImageDraw.Draw(sheet)
    for ci, (s, size) in enumerate(cols):
        draw.text((label_w + ci * cell + 4, 4), f"{s} {size}px", fill=(0, 0, 0))
    for ri, caption in enumerate(rows):
        y = 20 + ri * cell
        draw.text((4, y + cell // 2), caption, fill=(0, 0, 0))
        for ci, (s, size) in enumerate(cols):
            i = by_key.get((caption, s))
            if i is None:
                continue
            im = Image.fromarray(images[size][i]).resize((cell, cell), Image.NEAREST)
            sheet.paste(im, (label_w + ci * cell, y))
    sheet.save(path)
    return [c for c in SHEET_CAPTIONS if c not in rows]


def write_sources(meta: dict, counts: dict, n_images: int, n_held: int, n_groups: int,
                  n_held_groups: int, sizes: list[int]) -> None:
    lines = [
        "# Training data from SVG emoji: sources and licences (addendum to SOURCES.md)",
        "",
        "`data_svg.py` rasterizes SVG emoji from three Iconify JSON packages on the npm registry",
        f"at {', '.join(map(str, sizes))} px and names them with `emoji.json` (emoji-data, see SOURCES.md):",
        "",
        "| style id | package | art | licence (package.json / info.json) | images used |",
        "|---|---|---|---|---|",
    ]
    for si, s in enumerate(STYLES):
        m = meta[s]
        lines.append(
            f"| {si} `{s}` | `{m['package']}@{m['version']}` | {SETS[s]['name']} ({SETS[s]['url']}); "
            f"author per info.json: {m['author']} | {m['license']} / {m['info_license']} | {counts[s]['images']} |"
        )
    lines += [
        "",
        "No share-alike set is used.",
        "",
        "## Attribution",
        "",
        f"- Twemoji graphics: {SETS['twemoji']['copyright']}, licensed under CC-BY 4.0",
        f"  ({SETS['twemoji']['license_url']}). The SVGs were rasterized, composited on white,",
        "  paired with captions and used to train this model; the model's outputs are derived",
        "  from them.",
        f"- Noto Emoji graphics: {SETS['noto']['copyright']}, licensed under the Apache License 2.0",
        f"  ({SETS['noto']['license_url']}); rasterized from SVG and composited on white.",
        f"- Fluent Emoji (Flat style) graphics: {SETS['fluent']['copyright']}, MIT licence",
        f"  ({SETS['fluent']['license_url']}): \"Permission is hereby granted, free of charge, to any",
        "  person obtaining a copy of this software ... The above copyright notice and this",
        "  permission notice shall be included in all copies or substantial portions of the",
        "  Software.\" (full text at the link); rasterized from SVG and composited on white.",
        "- The SVG data was packaged in IconifyJSON format by the Iconify project",
        "  (https://github.com/iconify/icon-sets); the packages carry the art's licences.",
        "- emoji-data (emoji.json, names): Copyright (c) 2013 Cal Henderson, MIT licence.",
        "",
        "## Preparation",
        "",
        "- Each icon rendered with resvg (PyPI resvg_py) straight at the target size, RGBA",
        "  alpha-composited on a white background (as data.py).",
        "- Captions: data.py's (emoji.json name lower-cased, `: <tone> skin tone` for skin-tone",
        "  variants); style words `noto`, `twemoji`, `fluent`.",
        f"- {n_images} images per size; {n_held} of them ({n_held_groups} of {n_groups} emoji, all",
        "  styles and skin tones of each) held out by data.py's rule, so the same emoji are",
        "  held out as in emoji64.npz.",
        "",
    ]
    (DATA_DIR / "SOURCES_svg.md").write_text("\n".join(lines), encoding="utf-8")


def write_pack(images: dict[int, np.ndarray], heldout, style, hue) -> tuple[float, dict]:
    """emoji_svg_pack.npz (compressed); returns its size in MB and, when over the limit,
    the compressed size of each part so a subset that fits can be chosen."""
    caps = np.frombuffer((DATA_DIR / CAPTIONS_SVG).read_bytes(), np.uint8)
    arrays = {f"images{s}": images[s] for s in PACK_SIZES if s in images}
    path = DATA_DIR / PACK_NPZ
    np.savez_compressed(path, **arrays, heldout=heldout, style=style, hue=hue, captions_json=caps)
    mb = path.stat().st_size / 1e6
    parts = {}
    if mb > PACK_LIMIT_MB:
        import zlib

        for key, arr in arrays.items():
            for si, s in enumerate(STYLES):
                parts[f"{key} {s}"] = round(len(zlib.compress(arr[style == si].tobytes(), 6)) / 1e6, 1)
        parts["captions_json"] = round(len(zlib.compress(caps.tobytes(), 6)) / 1e6, 1)
    return mb, parts


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="64,128,256", help="image sizes in px, comma-separated")
    ap.add_argument("--workers", type=int, default=2, help="rasterizer processes")
    ap.add_argument("--stats-size", type=int, default=128, help="size the colour statistics use")
    ap.add_argument("--top", type=int, default=24, help="fill colours to report")
    ap.add_argument("--force", action="store_true", help="re-fetch and rebuild even if outputs exist")
    args = ap.parse_args()
    sizes = sorted({int(s) for s in args.sizes.split(",")})
    stats_size = args.stats_size if args.stats_size in sizes else sizes[0]

    outs = [DATA_DIR / f"emoji_svg{s}.npz" for s in sizes] + [DATA_DIR / CAPTIONS_SVG]
    if all(p.exists() for p in outs) and not args.force:
        log(f"{', '.join(p.name for p in outs)} exist; nothing to do (use --force to rebuild)")
        return

    t_start = time.time()
    sets = {s: read_iconify(s, args.force) for s in STYLES}
    emojis = load_emojis(args.force)
    meta = {
        s: {
            "package": sets[s]["package"]["name"],
            "version": sets[s]["package"]["version"],
            "license": sets[s]["package"]["license"],
            "author": sets[s]["info"].get("author", {}).get("name", "?"),
            "info_license": sets[s]["info"].get("license", {}).get("spdx", "?"),
        }
        for s in STYLES
    }

    # Join emoji.json (every emoji and skin-tone variant, in data.py's order) to the icons.
    known = {char_key(u) for e in emojis for _, _, u in emoji_variants(e)}
    tasks, records = [], []
    counts = {}
    for s in STYLES:
        chars, iconset = sets[s]["chars"], sets[s]["icons"]
        named = set(chars.values())
        counts[s] = {
            "images": 0,
            "missing": 0,  # emoji.json entries with no icon in this set
            "chars_without_name": sum(k not in known for k in chars),  # newer than emoji.json 16.0
            "icons_without_chars": sum(n not in named for n in iconset["icons"]),
            "aliases_without_chars": sum(n not in named for n in iconset.get("aliases", {})),
            "chars_to_alias": sum(v in iconset.get("aliases", {}) for v in chars.values()),
        }
    for e in emojis:
        base_caption = e["name"].lower()
        group = e["unified"]
        held = is_heldout(group, base_caption)
        for si, s in enumerate(STYLES):
            chars, iconset = sets[s]["chars"], sets[s]["icons"]
            for _var, caption, unified in emoji_variants(e):
                name = chars.get(char_key(unified))
                if name is None:
                    counts[s]["missing"] += 1
                    continue
                tasks.append((resolve_icon(iconset, name), tuple(sizes)))
                counts[s]["images"] += 1
                records.append(
                    {
                        "caption": caption,
                        "short_names": [short_name_words(x) for x in e["short_names"]],
                        "style": s,
                        "style_id": si,
                        "category": e["category"].lower(),
                        "subcategory": e["subcategory"],
                        "unified": unified,
                        "group": group,
                        "heldout": held,
                        "icon": f"{iconset['prefix']}:{name}",
                    }
                )
    n = len(records)
    log(f"{n} images to render at {sizes} px; per style: " + json.dumps(counts))

    # Rasterize: every icon at every size in one task; results land in preallocated arrays.
    images = {s: np.empty((n, s, s, 3), np.uint8) for s in sizes}
    cpu = {s: 0.0 for s in sizes}
    t0 = time.time()
    with mp.get_context("fork").Pool(args.workers) as pool:
        for i, (ims, secs) in enumerate(pool.imap(render, tasks, chunksize=16)):
            for s, im, sec in zip(sizes, ims, secs):
                images[s][i] = im
                cpu[s] += sec
            if (i + 1) % 2000 == 0 or i + 1 == n:
                log(f"  rendered {i + 1}/{n} ({time.time() - t0:.0f}s)")
    t_render = time.time() - t0
    log(f"rasterized in {t_render:.0f}s wall; worker CPU seconds per size: "
        + ", ".join(f"{s}px {cpu[s]:.0f}s" for s in sizes))

    heldout = np.array([r["heldout"] for r in records], dtype=bool)
    style = np.array([r["style_id"] for r in records], dtype=np.uint8)

    t0 = time.time()
    base = np.array([r["unified"] == r["group"] for r in records], dtype=bool)
    hue, stats = colour_stats(images[stats_size], style, ~heldout, base, args.top)
    for r, h in zip(records, hue):
        r["hue"] = HUES[h]
    stats = {
        "source": f"emoji_svg{stats_size}.npz, training images (heldout false); 'all': every one, "
        "'base_emoji': without the skin-tone variants",
        "method": (
            f"pixels quantized to {QUANT} levels per channel; counted when all four neighbours are in the "
            f"same bin and not near-white (all channels >= {NEAR_WHITE}); fills = most frequent bins "
            "(mean colour); dominant hue = most frequent hue class among counted chromatic pixels "
            "(saturation >= 0.15, chroma >= 0.1, value >= 0.2), grey when under 10 % are chromatic; see data_svg.py hue_class"
        ),
        "hues": list(HUES),
        **stats,
    }
    write_json(DATA_DIR / "fill_colours.json", stats)
    log(f"colour statistics in {time.time() - t0:.0f}s")

    t0 = time.time()
    for s in sizes:
        np.savez(DATA_DIR / f"emoji_svg{s}.npz", images=images[s], heldout=heldout, style=style, hue=hue)
    write_json(
        DATA_DIR / CAPTIONS_SVG,
        {
            "sources": {s: f"{meta[s]['package']}@{meta[s]['version']}" for s in STYLES},
            "licenses": {s: meta[s]["license"] for s in STYLES},
            "names": f"emoji.json of emoji-datasource-{EMOJI_JSON_SOURCE}@16.0.0",
            "styles": {str(si): s for si, s in enumerate(STYLES)},
            "sizes": sizes,
            "hues": list(HUES),
            "heldout_rule": f"sha256('{SPLIT_SALT}:' + unified of base emoji)[:4] % 1000 < {HELDOUT_PER_MILLE}, showcase prompts kept in train (data.py)",
            "counts": counts,
            "records": records,
        },
    )
    pack_mb, pack_parts = write_pack(images, heldout, style, hue) if all(s in images for s in PACK_SIZES) else (0.0, {})
    t_write = time.time() - t0

    n_groups = len({r["group"] for r in records})
    n_held_groups = len({r["group"] for r in records if r["heldout"]})
    write_sources(meta, counts, n, int(heldout.sum()), n_groups, n_held_groups, sizes)
    left_out = contact_sheet(images, records, DATA_DIR / "emoji_svg_sheet.png")
    if left_out:
        log(f"contact sheet: no image for {left_out}")

    # Checks the log should show: colours of named emoji, split consistency with data.py.
    for caption in ("green apple", "purple heart", "red apple", "heavy black heart", "pink heart",
                    "blue heart", "orange heart", "yellow heart", "green heart", "brown heart",
                    "black heart", "white heart"):
        got = {r["style"]: r["hue"] for r in records if r["caption"] == caption}
        log(f"  dominant hue of {caption!r}: {got}")
    png_captions = DATA_DIR / "captions.json"
    if png_captions.exists():
        png = json.loads(png_captions.read_text(encoding="utf-8"))["records"]
        png_held = {r["group"]: r["heldout"] for r in png}
        both = [r for r in records if r["group"] in png_held]
        bad = sum(png_held[r["group"]] != r["heldout"] for r in both)
        log(f"held-out split vs data.py's captions.json: {len({r['group'] for r in both})} shared emoji, "
            f"{bad} disagreements")

    for s in sizes:
        log(f"emoji_svg{s}.npz: {(DATA_DIR / f'emoji_svg{s}.npz').stat().st_size / 1e6:.0f} MB")
    if pack_mb:
        log(f"{PACK_NPZ}: {pack_mb:.1f} MB (limit {PACK_LIMIT_MB:.0f} MB)")
        if pack_parts:
            log(f"  over the limit; compressed size of each part (MB): {json.dumps(pack_parts)}")
    per_style = {s: int((style == si).sum()) for si, s in enumerate(STYLES)}
    log(
        f"wrote {n} images per size {per_style} ({int(heldout.sum())} held out, {n_held_groups}/{n_groups} "
        f"emoji held out); render {t_render:.0f}s, write {t_write:.0f}s, total {time.time() - t_start:.0f}s"
    )


if __name__ == "__main__":
    main()
