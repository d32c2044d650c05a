"""Colour check for the emoji model: does a prompt that names a colour get that colour?

The default model v2's colour target: over seeds 1-3, at least 95 % of renders have the named
colour as the dominant hue of their non-white pixels, for 26 emoji names: {red, orange,
yellow, green, blue, purple, brown} heart; large {...} circle; large {...} square; red apple;
green apple; green book; blue book; orange book.

For every prompt and seed, tessera renders one image (at the model's output size: both stages
of a two-stage model unless --extra says otherwise). Pixels that are not near-white (some
channel below 235) are classed with tools/train/data_svg.py's hue_class (the classes the
training data's colour balance uses: red/orange/yellow/green/blue/purple/pink/brown/grey); the
dominant hue is the most frequent chromatic class, or grey when fewer than 10 % of the ink
pixels are chromatic. Prints a per-prompt table and the share of renders whose dominant hue is
the named one; writes --out (JSON).

Usage (repository root):
  WGPU_BACKEND=vulkan XDG_RUNTIME_DIR=/tmp python tools/eval/colours.py \\
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
from data_svg import HUES, NEAR_WHITE, hue_class  # noqa: E402

COLOURS = ["red", "orange", "yellow", "green", "blue", "purple", "brown"]
PROMPTS = (
    [f"{c} heart" for c in COLOURS]
    + [f"large {c} circle" for c in COLOURS]
    + [f"large {c} square" for c in COLOURS]
    + ["red apple", "green apple", "green book", "blue book", "orange book"]
)
CHROMATIC_SHARE = 0.10


def named_colour(prompt: str) -> str:
    return next(c for c in COLOURS if c in prompt.split())


def dominant_hue(img: np.ndarray) -> tuple[str, dict]:
    """The dominant hue of the non-white pixels of an RGB uint8 image, and the class shares."""
    px = img.reshape(-1, 3)
    px = px[px.min(axis=1) < NEAR_WHITE]
    if len(px) == 0:
        return "grey", {}
    cls = hue_class(px)
    counts = np.bincount(cls, minlength=len(HUES))
    shares = {h: round(float(n) / len(px), 3) for h, n in zip(HUES, counts) if n}
    grey = HUES.index("grey")
    chromatic = counts.copy()
    chromatic[grey] = 0
    if chromatic.sum() < CHROMATIC_SHARE * len(px):
        return "grey", shares
    return HUES[int(chromatic.argmax())], shares


def render(args, prompt: str, seed: int, out_dir: Path) -> np.ndarray:
    path = out_dir / f"{prompt.replace(' ', '-')}-{seed}.png"
    cmd = [str(args.tessera), "--render", str(path), "--model", str(args.model), "--prompt", prompt,
           "--seed", str(seed)] + args.extra.split()
    env = dict(os.environ)
    env.setdefault("WGPU_BACKEND", "vulkan")
    env.setdefault("XDG_RUNTIME_DIR", "/tmp")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
    if proc.returncode != 0:
        sys.exit(f"error: tessera failed ({proc.returncode}) on {prompt!r}:\n{' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return np.asarray(Image.open(path).convert("RGB"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=REPO / "assets/models/emoji")
    ap.add_argument("--tessera", type=Path, default=REPO / "target/release/tessera")
    ap.add_argument("--prompts", nargs="+", default=PROMPTS)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--extra", default="", help="more tessera options, e.g. \"--stages 1\"")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--keep", type=Path, default=None, help="keep the renders in this folder")
    ap.add_argument("--out", type=Path, default=HERE / "runs" / "colours.json")
    args = ap.parse_args()
    for p in args.prompts:
        named_colour(p)  # every prompt names one of COLOURS

    out_dir = args.keep or Path(tempfile.mkdtemp(prefix="tessera-colours-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, t0 = [], time.time()
    for p in args.prompts:
        for seed in args.seeds:
            hue, shares = dominant_hue(render(args, p, seed, out_dir))
            rows.append({"prompt": p, "seed": seed, "named": named_colour(p), "dominant": hue, "shares": shares})
    hits = sum(r["dominant"] == r["named"] for r in rows)
    print("| prompt | right | dominant hues |")
    print("|---|---:|---|")
    for p in args.prompts:
        r = [x for x in rows if x["prompt"] == p]
        print(f"| {p} | {sum(x['dominant'] == x['named'] for x in r)} / {len(r)} | "
              f"{', '.join(x['dominant'] for x in r)} |")
    print(f"\nnamed colour dominant in {hits} / {len(rows)} renders ({hits / len(rows):.0%}; target 95 %), "
          f"{time.time() - t0:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model": str(args.model), "seeds": args.seeds, "extra": args.extra,
                                    "right": hits, "renders": len(rows), "rows": rows}, indent=1) + "\n",
                        encoding="utf-8")


if __name__ == "__main__":
    main()
