"""Check an exported emoji pipeline folder.

1. Loads it with diffusers' AmusedPipeline (float32) and renders a labelled grid of images
   for ~16 prompts (PNG): one row per guidance scale in --guidance, or one image per prompt.
2. Optionally (--tessera BIN) compares diffusers' conditional logits with tessera's:
     BIN forward --model DIR --tokens IN.safetensors --prompt P --out OUT.safetensors
   IN holds `tokens` int64 [1,h,w] (a partly masked token grid; mask id = vocab_size - 1),
   OUT must hold `logits` f32 [1,h*w,codebook] with logits[0, row*w + col, code].
   micro_conds = [W, H, 0, 0, 6] with W, H the output size in px.

Usage:
  python check.py MODEL_DIR [--out grid.png] [--tessera path/to/tessera]
Exit status 1 if the tessera comparison fails.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

MAX_LEN = 77

PROMPTS = [
    "blue heart", "grinning face", "green apple", "red apple",
    "cat face", "dog face", "slice of pizza", "rocket",
    "fire", "rainbow", "sun with face", "thumbs up sign",
    "birthday cake", "deciduous tree", "ghost", "face with tears of joy",
]


def label_grid(sections: list[list[Image.Image]], labels: list[str], section_titles: list[str],
               cols: int = 8, scale: int = 2) -> Image.Image:
    """One block per section (guidance scale), `cols` images a row, each image captioned."""
    cell = sections[0][0].size[0] * scale
    lab_h, title_h = 14, 16
    rows_per = (len(labels) + cols - 1) // cols
    w = cell * min(cols, len(labels))
    h = len(sections) * (title_h + rows_per * (cell + lab_h))
    grid = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(grid)
    y0 = 0
    for title, images in zip(section_titles, sections):
        d.text((2, y0 + 2), title, fill="black")
        y0 += title_h
        for i, im in enumerate(images):
            x, y = (i % cols) * cell, y0 + (i // cols) * (cell + lab_h)
            grid.paste(im.resize((cell, cell), Image.NEAREST), (x, y))
            d.text((x + 2, y + cell + 1), labels[i][: cell // 6], fill="black")
        y0 += rows_per * (cell + lab_h)
    return grid


@torch.no_grad()
def diffusers_logits(pipe, prompt: str, tokens: torch.Tensor, width: int, height: int) -> torch.Tensor:
    ids = pipe.tokenizer([prompt], padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids
    out = pipe.text_encoder(ids, return_dict=True, output_hidden_states=True)
    micro = torch.tensor([[width, height, 0, 0, 6]], dtype=out.hidden_states[-2].dtype)
    logits = pipe.transformer(tokens, micro_conds=micro, pooled_text_emb=out.text_embeds,
                              encoder_hidden_states=out.hidden_states[-2])
    b, c, h, w = logits.shape
    return logits.reshape(b, c, h * w).permute(0, 2, 1).contiguous()


def compare_tessera(pipe, model_dir: Path, tessera: str, prompts: list[str], atol: float, rtol: float) -> bool:
    from safetensors.torch import load_file, save_file

    hw = pipe.transformer.config.sample_size
    px = hw * pipe.vae_scale_factor
    mask_id = pipe.scheduler.config.mask_token_id
    codebook = pipe.transformer.config.codebook_size
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for i, prompt in enumerate(prompts):
            g = torch.Generator().manual_seed(100 + i)
            tokens = torch.randint(0, codebook, (1, hw, hw), generator=g)
            ratio = [1.0, 0.7, 0.3, 0.0][i % 4]
            tokens[torch.rand(1, hw, hw, generator=g) < ratio] = mask_id
            inp, outp = Path(tmp) / f"in{i}.safetensors", Path(tmp) / f"out{i}.safetensors"
            save_file({"tokens": tokens.to(torch.int64).contiguous()}, str(inp))
            t0 = time.time()
            cmd = [tessera, "forward", "--model", str(model_dir), "--tokens", str(inp), "--prompt", prompt, "--out", str(outp)]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                print(f"tessera failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout}\n{r.stderr}")
                return False
            got = load_file(str(outp))["logits"].float()
            ref = diffusers_logits(pipe, prompt, tokens, px, px)
            if got.shape != ref.shape:
                print(f"{prompt!r}: shape {tuple(got.shape)} != {tuple(ref.shape)}")
                ok = False
                continue
            diff = (got - ref).abs().max().item()
            scale = ref.abs().max().item()
            agree = (got.argmax(-1) == ref.argmax(-1)).float().mean().item()
            passed = diff <= atol + rtol * scale
            ok &= passed
            print(
                f"tessera vs diffusers {prompt!r} (mask ratio {ratio}): max |diff| {diff:.2e}, max |logit| {scale:.2f}, "
                f"argmax agreement {agree * 100:.1f} %, {time.time() - t0:.1f}s -> {'ok' if passed else 'FAIL'}"
            )
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("--out", type=Path, default=None, help="grid PNG (default: runs/check_grid.png next to this script)")
    ap.add_argument("--prompts", nargs="+", default=PROMPTS)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--guidance", type=float, nargs="+", default=[1.0, 4.0, 10.0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cols", type=int, default=8, help="images per grid row")
    ap.add_argument("--tessera", default=None, help="path to a tessera binary: also compare logits")
    ap.add_argument("--atol", type=float, default=1e-3)
    ap.add_argument("--rtol", type=float, default=1e-3)
    args = ap.parse_args()
    out = args.out or Path(__file__).resolve().parent / "runs" / "check_grid.png"

    from diffusers import AmusedPipeline

    torch.set_num_threads(2)
    pipe = AmusedPipeline.from_pretrained(str(args.model), dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    rows = []
    t0 = time.time()
    for gs in args.guidance:
        g = torch.Generator().manual_seed(args.seed)
        res = pipe(args.prompts, num_inference_steps=args.steps, guidance_scale=gs, generator=g)
        rows.append(res.images)
    dt = time.time() - t0
    titles = [f"guidance {gs:g}, {args.steps} steps, seed {args.seed}" for gs in args.guidance]
    grid = label_grid(rows, args.prompts, titles, cols=args.cols)
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out)
    n = len(args.prompts) * len(args.guidance)
    print(f"wrote {out}: {n} images ({args.steps} steps) in {dt:.1f}s ({dt / n:.2f} s/image on CPU)")
    arr = np.stack([np.asarray(im, dtype=np.float32) for row in rows for im in row])
    print(f"mean pixel {arr.mean():.1f}, per-image std of means {arr.mean(axis=(1, 2, 3)).std():.1f} "
          f"(0 would mean every image is the same flat colour)")

    if args.tessera:
        ok = compare_tessera(pipe, args.model, args.tessera, args.prompts[:4], args.atol, args.rtol)
        print("tessera comparison:", "PASSED" if ok else "FAILED")
        sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
