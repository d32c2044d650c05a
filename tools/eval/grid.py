"""Sample grid of the embedded model, rendered by tessera itself (docs/emoji-samples.png).

    python tools/eval/grid.py --tessera target/release/tessera --out docs/emoji-samples.png

Renders each prompt with `tessera --render` (default model unless --model; fixed seeds; the
model's defaults: amused sampler, 12 steps, its tessera.json's guidance and choice temperature,
else guidance 10), then tiles the images, each scaled
up ×2 with nearest neighbour, with its prompt written underneath.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

PROMPTS = [
    "blue heart", "green heart", "grinning face", "red apple",
    "green apple", "cat face", "dog face", "slice of pizza",
    "rocket", "fire", "rainbow", "sun with face",
    "birthday cake", "deciduous tree", "ghost", "thumbs up sign",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tessera", default="target/release/tessera")
    ap.add_argument("--model", default=None, help="model folder (default: tessera's embedded model)")
    ap.add_argument("--out", type=Path, default=Path("docs/emoji-samples.png"))
    ap.add_argument("--seeds", default="1,2", help="comma-separated seeds: one row block per seed")
    ap.add_argument("--cols", type=int, default=8)
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--extra", default="", help="more tessera options, e.g. \"--guidance 3 --choice-temperature 0\"")
    args = ap.parse_args()
    env = dict(os.environ, WGPU_BACKEND=os.environ.get("WGPU_BACKEND", "vulkan"),
               XDG_RUNTIME_DIR=os.environ.get("XDG_RUNTIME_DIR", "/tmp"), RUST_LOG="error")
    seeds = [int(s) for s in args.seeds.split(",")]
    tiles: list[tuple[Image.Image, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            for i, prompt in enumerate(PROMPTS):
                out = Path(tmp) / f"{seed}-{i}.png"
                cmd = [args.tessera, "--render", str(out), "--prompt", prompt, "--seed", str(seed)]
                if args.model:
                    cmd += ["--model", args.model]
                cmd += args.extra.split()
                subprocess.run(cmd, check=True, env=env, capture_output=True)
                tiles.append((Image.open(out).convert("RGB").copy(), prompt))
    w, h = tiles[0][0].size
    tw, th = w * args.scale, h * args.scale
    label_h = 14
    cols = args.cols
    rows = (len(tiles) + cols - 1) // cols
    pad = 6
    grid = Image.new("RGB", (cols * (tw + pad) + pad, rows * (th + label_h + pad) + pad), "white")
    draw = ImageDraw.Draw(grid)
    for k, (img, prompt) in enumerate(tiles):
        x = pad + (k % cols) * (tw + pad)
        y = pad + (k // cols) * (th + label_h + pad)
        grid.paste(img.resize((tw, th), Image.NEAREST), (x, y))
        draw.text((x, y + th + 1), prompt[:22], fill=(60, 60, 60))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.out, optimize=True)
    print(f"wrote {args.out}: {len(tiles)} samples, seeds {seeds}")


if __name__ == "__main__":
    main()
