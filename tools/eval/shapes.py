"""Shape check for the emoji model: does a prompt draw its emoji's outline?

For every prompt in --prompts, tessera renders --per-prompt images (seeds --seed .. and
--batch); each image's ink mask (pixels with any channel below --ink-below on the white
background) is compared by intersection over union (IoU) with the real outlines of every
prompted emoji (both art styles, plain emoji without skin-tone variants, from
tools/train/data). An image counts as recognised when its nearest real outline is its own
emoji's. Prints a per-prompt table and the overall share recognised (chance: 1 / number of
prompts), writes --out (JSON).

Renders larger than the outlines (a two-stage model's 128 px output) are box-downsampled to
their 64 px before the ink mask is taken.

Colour is ignored on purpose (tests/default_model.rs checks colours); this measures outline
only, so prompts should have distinct outlines (one apple, not red and green).

Usage (repository root; tessera needs a Vulkan adapter, here the software one):
  WGPU_BACKEND=vulkan XDG_RUNTIME_DIR=/tmp python tools/eval/shapes.py \\
      --model assets/models/emoji --tessera target/release/tessera
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tools" / "train"))
from common import load_dataset  # noqa: E402

# Emoji with distinct outlines (one apple only: red and green share a shape). The emoji
# fixtures' silhouettes.png (tools/fixtures/make_emoji_fixtures.py) holds the same set.
PROMPTS = ["blue heart", "red apple", "thumbs up sign", "fire", "rainbow", "deciduous tree",
           "cat face", "grinning face", "rocket"]
INK_BELOW = 200


def ink(img: np.ndarray, below: int = INK_BELOW) -> np.ndarray:
    """Pixels that are ink: any colour channel below `below` (the background is white)."""
    return img[..., :3].min(axis=-1) < below


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def render(args, prompt: str, seed: int, out_dir: Path) -> list[np.ndarray]:
    stem = out_dir / f"{prompt.replace(' ', '-')}-{seed}.png"
    cmd = [str(args.tessera), "--render", str(stem), "--model", str(args.model), "--prompt", prompt,
           "--seed", str(seed), "--batch", str(args.per_prompt)] + args.extra.split()
    env = dict(os.environ)
    env.setdefault("WGPU_BACKEND", "vulkan")
    env.setdefault("XDG_RUNTIME_DIR", "/tmp")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
    if proc.returncode != 0:
        sys.exit(f"error: tessera failed ({proc.returncode}) on {prompt!r}:\n{' '.join(cmd)}\n{proc.stderr[-3000:]}")
    files = [stem] if args.per_prompt == 1 else [stem.with_name(f"{stem.stem}-{k + 1}.png")
                                                for k in range(args.per_prompt)]
    return [Image.open(f).convert("RGB") for f in files]


def at_size(img: Image.Image, side: int) -> np.ndarray:
    """The render at the real outlines' size: a two-stage model's output (128 px) is compared
    with the 64 px outlines after a box downsample, as the base stage sees an image."""
    if img.size != (side, side):
        img = img.resize((side, side), Image.Resampling.BOX)
    return np.asarray(img)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=REPO / "assets/models/emoji")
    ap.add_argument("--tessera", type=Path, default=REPO / "target/release/tessera")
    ap.add_argument("--prompts", nargs="+", default=PROMPTS)
    ap.add_argument("--per-prompt", type=int, default=4, help="images per prompt (one tessera --batch)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ink-below", type=int, default=INK_BELOW)
    ap.add_argument("--extra", default="", help="more tessera options, e.g. \"--guidance 3\"")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--keep", type=Path, default=None, help="keep the renders in this folder")
    ap.add_argument("--out", type=Path, default=HERE / "runs" / "shapes.json")
    args = ap.parse_args()

    images, records, _ = load_dataset()
    real = {}
    for p in args.prompts:
        idx = [i for i, r in enumerate(records) if r["caption"] == p]
        if not idx:
            sys.exit(f"error: no real image is captioned {p!r}")
        real[p] = [ink(images[i], args.ink_below) for i in idx]

    out_dir = args.keep or Path(tempfile.mkdtemp(prefix="tessera-shapes-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, hits, total, t0 = [], 0, 0, time.time()
    for p in args.prompts:
        for k, img in enumerate(render(args, p, args.seed, out_dir)):
            m = ink(at_size(img, images.shape[1]), args.ink_below)
            scores = {q: max(iou(m, r) for r in real[q]) for q in args.prompts}
            nearest = max(scores, key=scores.get)
            margin = scores[p] - max(v for q, v in scores.items() if q != p)
            rows.append({"prompt": p, "image": k, "own_iou": scores[p], "nearest": nearest, "margin": margin})
            hits += nearest == p
            total += 1
    print("| prompt | recognised | mean own IoU | mean margin | nearest when wrong |")
    print("|---|---:|---:|---:|---|")
    for p in args.prompts:
        r = [x for x in rows if x["prompt"] == p]
        wrong = sorted({x["nearest"] for x in r if x["nearest"] != p})
        print(f"| {p} | {sum(x['nearest'] == p for x in r)} / {len(r)} | {np.mean([x['own_iou'] for x in r]):.2f} "
              f"| {np.mean([x['margin'] for x in r]):+.2f} | {', '.join(wrong) or '-'} |")
    print(f"\nrecognised {hits} / {total} ({hits / total:.0%}; chance {1 / len(args.prompts):.0%}), "
          f"{time.time() - t0:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model": str(args.model), "seed": args.seed, "per_prompt": args.per_prompt,
                                    "extra": args.extra, "ink_below": args.ink_below, "recognised": hits,
                                    "images": total, "rows": rows}, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
