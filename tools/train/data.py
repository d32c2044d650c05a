"""Fetch and prepare the emoji training data.

Sources (fetched with `npm pack`, nothing is installed):
  emoji-datasource-google@16.0.0   Noto Emoji art, 64x64 PNG   (Apache-2.0)
  emoji-datasource-twitter@16.0.0  Twemoji art, 64x64 PNG      (CC-BY-4.0)
Both packages also carry emoji.json (MIT, Cal Henderson / iamcal emoji-data) with
names, short names, categories and skin-tone variants.

Output in tools/train/data/ (git-ignored):
  emoji-datasource-*.tgz   the packed npm tarballs (cache; read directly, not extracted)
  emoji64.npz              images uint8 [N,64,64,3] (RGBA composited on white),
                           heldout bool [N], style uint8 [N] (0 google, 1 twitter)
  captions.json            one record per image: caption, short names, style, ...
  SOURCES.md               sources, versions, licences and attribution (for the model card)

Captions are the emoji.json names lower-cased ("blue heart", "grinning face"); skin-tone
variants get ": <tone> skin tone" appended the way Unicode names them. The held-out split
(~5 %) is by emoji (all styles and skin tones of one emoji fall on the same side), fixed by
a hash of the emoji's code points, with the showcase prompts of check.py forced into train.

Usage: python data.py [--force]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import tarfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from common import CAPTIONS_JSON, DATA_DIR, DATASET_NPZ, log, npm_pack_spec, write_json

VERSION = "16.0.0"
STYLES = ("google", "twitter")
PACKAGES = {s: f"emoji-datasource-{s}" for s in STYLES}
ART = {
    "google": {
        "name": "Noto Emoji",
        "author": "Google Inc.",
        "license": "Apache-2.0",
        "url": "https://github.com/googlefonts/noto-emoji",
    },
    "twitter": {
        "name": "Twemoji",
        "author": "Twitter, Inc. and other contributors (graphics maintained at github.com/jdecked/twemoji)",
        "license": "CC-BY-4.0",
        "url": "https://github.com/jdecked/twemoji",
    },
}
SKIN_TONES = {
    "1F3FB": "light skin tone",
    "1F3FC": "medium-light skin tone",
    "1F3FD": "medium skin tone",
    "1F3FE": "medium-dark skin tone",
    "1F3FF": "dark skin tone",
}
HELDOUT_PER_MILLE = 50
SPLIT_SALT = "tessera-emoji-split-v1"

# Prompts check.py renders; their emoji always stay in the training split.
SHOWCASE = [
    "blue heart", "grinning face", "green apple", "red apple", "cat face", "dog face",
    "slice of pizza", "rocket", "fire", "rainbow", "sun with face", "thumbs up sign",
    "birthday cake", "deciduous tree", "snowman", "ghost", "face with tears of joy",
    "banana", "robot face", "panda face", "crown", "strawberry", "octopus", "sunflower",
]


def npm_pack(style: str, force: bool) -> Path:
    return npm_pack_spec(
        f"{PACKAGES[style]}@{VERSION}", DATA_DIR / f"{PACKAGES[style]}-{VERSION}.tgz", force
    )


def short_name_words(sn: str) -> str:
    return sn.replace("_", " ").replace("-", " ").strip()


def composite_on_white(png_bytes: bytes, size: int = 64) -> np.ndarray:
    """RGBA PNG -> uint8 [size,size,3], alpha-composited on white (resized if needed)."""
    im = Image.open(io.BytesIO(png_bytes)).convert("RGBA")
    if im.size != (size, size):
        im = im.resize((size, size), Image.LANCZOS)
    a = np.asarray(im, dtype=np.float32) / 255.0
    rgb = a[..., :3] * a[..., 3:4] + (1.0 - a[..., 3:4])
    return np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)


def emoji_variants(e: dict) -> list[tuple[dict, str, str]]:
    """(entry, caption, unified) for an emoji.json entry and each of its skin-tone variants."""
    base_caption = e["name"].lower()
    variants = [(e, base_caption, e["unified"])]
    for tone_key, var in (e.get("skin_variations") or {}).items():
        tones = ", ".join(SKIN_TONES[t] for t in tone_key.split("-"))
        variants.append((var, f"{base_caption}: {tones}", var["unified"]))
    return variants


def is_heldout(group: str, base_caption: str) -> bool:
    """Held-out split by emoji: `group` is the base emoji's unified code points."""
    if base_caption in SHOWCASE:
        return False
    h = hashlib.sha256(f"{SPLIT_SALT}:{group}".encode()).digest()
    return int.from_bytes(h[:4], "big") % 1000 < HELDOUT_PER_MILLE


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--force", action="store_true", help="re-fetch and rebuild even if outputs exist")
    args = ap.parse_args()

    out_npz = DATA_DIR / DATASET_NPZ
    if out_npz.exists() and (DATA_DIR / CAPTIONS_JSON).exists() and not args.force:
        log(f"{out_npz} exists; nothing to do (use --force to rebuild)")
        return

    t0 = time.time()
    # Read each tarball once, sequentially (random access into a .tgz is slow).
    files = {}
    for s in STYLES:
        with tarfile.open(npm_pack(s, args.force), "r:gz") as t:
            files[s] = {m.name: t.extractfile(m).read() for m in t if m.isfile()}

    emoji_json = {}
    pkg_meta = {}
    for s in STYLES:
        emoji_json[s] = json.loads(files[s]["package/emoji.json"])
        pkg_meta[s] = json.loads(files[s]["package/package.json"])
        assert pkg_meta[s]["version"] == VERSION, pkg_meta[s]["version"]
    # Both packages ship the same emoji.json; use the first, check the second agrees on names.
    emojis = emoji_json[STYLES[0]]
    assert [e["unified"] for e in emojis] == [e["unified"] for e in emoji_json[STYLES[1]]]
    emojis = sorted(emojis, key=lambda e: e["sort_order"])

    images, records, heldout, style_ids = [], [], [], []
    missing = {s: 0 for s in STYLES}
    for e in emojis:
        base_caption = e["name"].lower()
        group = e["unified"]
        variants = emoji_variants(e)
        held = is_heldout(group, base_caption)
        for si, s in enumerate(STYLES):
            for var, caption, unified in variants:
                path = f"package/img/{s}/64/{var['image']}"
                if not var.get(f"has_img_{s}", False) or path not in files[s]:
                    missing[s] += 1
                    continue
                images.append(composite_on_white(files[s][path]))
                records.append(
                    {
                        "caption": caption,
                        "short_names": [short_name_words(x) for x in e["short_names"]],
                        "style": s,
                        "category": e["category"].lower(),
                        "subcategory": e["subcategory"],
                        "unified": unified,
                        "group": group,
                        "heldout": held,
                    }
                )
                heldout.append(held)
                style_ids.append(si)

    images = np.stack(images)
    heldout = np.array(heldout, dtype=bool)
    np.savez(out_npz, images=images, heldout=heldout, style=np.array(style_ids, dtype=np.uint8))
    write_json(
        DATA_DIR / CAPTIONS_JSON,
        {
            "sources": {s: f"{PACKAGES[s]}@{VERSION}" for s in STYLES},
            "heldout_rule": f"sha256('{SPLIT_SALT}:' + unified of base emoji)[:4] % 1000 < {HELDOUT_PER_MILLE}, showcase prompts kept in train",
            "records": records,
        },
    )

    n_groups = len({r["group"] for r in records})
    n_held_groups = len({r["group"] for r in records if r["heldout"]})
    write_sources(len(records), int(heldout.sum()), n_groups, n_held_groups, missing)
    log(
        f"wrote {out_npz.name}: {len(records)} images ({int(heldout.sum())} held out, "
        f"{n_held_groups}/{n_groups} emoji held out), missing images {missing}, "
        f"{len({r['caption'] for r in records})} distinct captions, {time.time() - t0:.0f}s"
    )


def write_sources(n_images, n_held, n_groups, n_held_groups, missing):
    lines = [
        "# Training data: sources and licences",
        "",
        "The emoji model was trained on 64x64 emoji images and their names, taken from two",
        f"npm packages of the emoji-data project (https://github.com/iamcal/emoji-data), version {VERSION}:",
        "",
        "| package | art | art licence | images used |",
        "|---|---|---|---|",
    ]
    for s in STYLES:
        lines.append(
            f"| `{PACKAGES[s]}@{VERSION}` | {ART[s]['name']} ({ART[s]['url']}) | {ART[s]['license']} | "
            f"64 px PNGs from `img/{s}/64/` |"
        )
    lines += [
        "",
        "Names, short names, categories and skin-tone variants come from `emoji.json` in the",
        "same packages (emoji-data, Copyright (c) 2013 Cal Henderson, MIT licence).",
        "",
        "## Attribution",
        "",
        "- Twemoji graphics: Copyright 2019 Twitter, Inc. and other contributors (now maintained",
        "  at https://github.com/jdecked/twemoji), licensed under CC-BY 4.0",
        "  (https://creativecommons.org/licenses/by/4.0/). The images were composited on white,",
        "  paired with captions and used to train this model; the model's outputs are derived",
        "  from them.",
        "- Noto Emoji graphics: Copyright Google Inc., licensed under the Apache License 2.0",
        "  (https://www.apache.org/licenses/LICENSE-2.0).",
        "- emoji-data (emoji.json): Copyright (c) 2013 Cal Henderson, MIT licence.",
        "",
        "## Preparation",
        "",
        "- RGBA images alpha-composited on a white background, kept at 64x64.",
        "- Caption = emoji name as written in emoji.json, lower-cased (e.g. `blue heart`,",
        "  `grinning face`); skin-tone variants append `: <tone> skin tone`. During training the",
        "  caption is sometimes followed by one of the emoji's short names and/or a style word",
        "  (`noto` or `twemoji`).",
        f"- {n_images} images in all (images listed but absent, skipped: {missing}),",
        f"  {n_held} of them ({n_held_groups} of {n_groups} emoji, all styles and skin tones of each)",
        "  held out from training for evaluation.",
        "",
    ]
    (DATA_DIR / "SOURCES.md").write_text("\n".join(lines), encoding="utf-8")


if __name__ == "__main__":
    main()
