"""Assemble the final aMUSEd pipeline folder (AmusedPipeline.save_pretrained layout) with
fp16 safetensors weights, plus MODEL_CARD.md, and verify it:

  OUT/model_index.json
  OUT/scheduler/scheduler_config.json          AmusedScheduler(mask_token_id = vocab_size - 1)
  OUT/text_encoder/{config.json,model.safetensors}
  OUT/tokenizer/{vocab.json,merges.txt,tokenizer.json,tokenizer_config.json,special_tokens_map.json}
  OUT/transformer/{config.json,diffusion_pytorch_model.safetensors}
  OUT/vqvae/{config.json,diffusion_pytorch_model.safetensors}
  OUT/MODEL_CARD.md
  OUT/tessera.json                             tessera's defaults for this model (diffusers ignores it)

Checks: AmusedPipeline.from_pretrained(OUT) loads; the fp16 weights give the same
transformer logits as the fp32 training weights (up to fp16 rounding); the tokenizer gives
identical ids to the trained one; total size <= --max-mb; one image generates.

Usage: python export.py --out ../../assets/models/emoji

The default model v2 (run_device_v2.sh): `--vq-dir` may be train_vq2.py's stage1/ or decoder/ (any VQModel
folder works; the card then reports result_vq2.json's PSNR and colour probe, and for decoder/ the
decoder stage's result_decoder.json, instead of the two train_vq.py stages), `--svg-data` describes data_svg.py's three SVG sets in the card, and
`--sources` names the attribution files the card includes (run_device_v2.sh: SOURCES_svg.md alone,
which credits emoji-data's names too; the PNG sets of SOURCES.md are not used).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

from common import DATA_DIR, MAX_LEN, MICRO_CONDS, RUNS_DIR, log

TOKENIZER_FILES = ["vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


@torch.no_grad()
def cond_logits(pipe, prompt: str, tokens: torch.Tensor) -> torch.Tensor:
    ids = pipe.tokenizer([prompt], padding="max_length", max_length=MAX_LEN, truncation=True, return_tensors="pt").input_ids
    out = pipe.text_encoder(ids, return_dict=True, output_hidden_states=True)
    micro = torch.tensor([MICRO_CONDS], dtype=torch.float32)
    return pipe.transformer(tokens, micro_conds=micro, pooled_text_emb=out.text_embeds, encoder_hidden_states=out.hidden_states[-2])


def probe_table(vq, before_path: Path) -> list[str]:
    """Card lines: tools/eval/colour_probe.py's disc probe of `vq` (the exported VQ, its fp16
    weights) beside `before_path` (colour_probe.py --json of the previous VQ), on the same
    palette (the before file's colours) at its size; [] without that file."""
    before = read_json(before_path)
    if not before:
        return []
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))
    import colour_probe  # tools/eval/colour_probe.py

    palette = [(r["colour"], tuple(r["rgb"])) for r in before["rows"]]
    after = colour_probe.probe_vq(vq, palette, size=before["size"], value_range="01")
    lines = [
        "Colour probe (`tools/eval/colour_probe.py`: flat discs on white, encoded and decoded, CIEDE2000",
        f"over the discs' interiors at {before['size']} px; the criterion is a mean ΔE00 <= 5), the shipped",
        "v1 VQ before and this VQ after:",
        "",
        "| colour | sRGB | v1 decoded | v1 ΔE00 | v2 decoded | v2 ΔE00 |",
        "|---|---|---|---:|---|---:|",
    ]
    for b, a in zip(before["rows"], after["rows"]):
        lines.append(f"| {b['colour']} | {tuple(b['rgb'])} | {tuple(b['decoded_mean_rgb'])} | {b['mean_de00']:.1f} "
                     f"| {tuple(a['decoded_mean_rgb'])} | {a['mean_de00']:.1f} |")
    lines += [f"| **mean over {len(palette)}** | | | **{before['mean_de00']:.1f}** | | **{after['mean_de00']:.1f}** |", ""]
    log(f"colour probe: mean ΔE00 {before['mean_de00']:.2f} (v1) -> {after['mean_de00']:.2f} over {len(palette)} colours")
    return lines


# The v2 recipes a card can name (--recipe) and how the card describes each.
RECIPES = {
    "run_device_v2.sh": "`tools/train/run_device_v2.sh` in one GPU command",
    "run_cpu_v2.sh": "`tools/train/run_cpu_v2.sh`, one stage per session on a 2-core CPU",
}


def model_card(out: Path, pipe, sizes: dict, args) -> str:
    te, tr, vq = pipe.text_encoder, pipe.transformer, pipe.vqvae
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    vq_res = read_json(args.vq_dir.parent / "result_decoder.json") or {}
    vq1_res = read_json(args.vq_dir.parent / "result_vq.json") or {}
    vq2_res = read_json(args.vq_dir.parent / "result_vq2.json") or {}  # train_vq2.py's stage1/
    tr_res = read_json(args.transformer_dir.parent / "result.json") or {}
    parts = []
    for path in args.sources or [DATA_DIR / "SOURCES.md"]:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        text = text.replace("# Training data: sources and licences", "## Training data: sources and licences")
        text = text.replace("\n## ", "\n### ").replace("\n### Training data", "\n## Training data")
        if text.startswith("# "):  # an addendum (SOURCES_svg.md): its title one level down
            text = "#" + text.replace(" (addendum to SOURCES.md)", "", 1)
        parts.append(text.strip())
    sources = "\n\n".join(p for p in parts if p)
    gflop = tr_res.get("transformer_forward_gflop")
    tc, uc, vc = te.config, tr.config, vq.config
    if args.svg_data:
        intro = [
            "A small text-to-image aMUSEd pipeline (diffusers `AmusedPipeline` layout) trained from scratch",
            "on emoji artwork: type an emoji name (`blue heart`, `grinning face`, `green apple`) and it",
            "draws a 64x64 emoji-like image in 12 parallel decoding steps. It is version 2 of tessera's",
            "default model, trained from scratch on SVG emoji (rasterized by `tools/train/data_svg.py`)",
            f"with {RECIPES[args.recipe]}.",
            "",
            "Contains material derived from Twemoji graphics (Copyright 2019 Twitter, Inc and other",
            "contributors, CC-BY 4.0), Noto Emoji graphics (Copyright Google Inc., Apache-2.0) and Fluent",
            "Emoji Flat graphics (Copyright (c) Microsoft Corporation, MIT); see \"Training data\" below.",
        ]
    else:
        intro = [
            "A small text-to-image aMUSEd pipeline (diffusers `AmusedPipeline` layout) trained from scratch",
            "on emoji artwork: type an emoji name (`blue heart`, `grinning face`, `green apple`) and it",
            "draws a 64x64 emoji-like image in 12 parallel decoding steps. It is tessera's embedded default",
            "model, trained from scratch on a 2-core CPU with `tools/train/run_all.sh`.",
            "",
            "Contains material derived from Twemoji graphics (Copyright 2019 Twitter, Inc and other",
            "contributors, CC-BY 4.0) and Noto Emoji graphics (Copyright Google Inc., Apache-2.0); see",
            "\"Training data\" below.",
        ]
    if vq2_res:
        vq_lines = [
            "1. VQ (`train_vq2.py`, one stage): encoder + EMA codebook (k-means initialised, dead codes",
            "   restarted) + decoder, L1 + MSE + image-gradient loss + an L1 term in CIELAB on token-sized",
            "   blocks, colour-balanced sampling and synthetic flat-colour images."
            + (f" Held-out PSNR {vq2_res['heldout_psnr_db']:.2f} dB" if "heldout_psnr_db" in vq2_res else "")
            + (f", colour probe mean ΔE00 {vq2_res['probe_de00']:.1f} (15 colours; with the 24 most frequent"
               f" fills {vq2_res['probe_fills_de00']:.1f})" if "probe_de00" in vq2_res else "")
            + ("." if "heldout_psnr_db" in vq2_res else ""),
        ]
        if args.vq_dir.name == "decoder" and "after" in vq_res:  # train_vq2.py --decoder-only's folder
            vq_lines.append(
                "   Then a decoder stage (`train_vq2.py --decoder-only`): encoder and codebook frozen (the same"
                f" tokens), post_quant_conv + decoder fine-tuned at {' and '.join(f'{s} px' for s in vq_res['sizes'])}"
                " in turn (one decoder serves both stages). Held-out PSNR "
                + ", ".join(f"{s} px {vq_res['before'][str(s)]['heldout_psnr_db']:.2f} -> "
                            f"{vq_res['after'][str(s)]['heldout_psnr_db']:.2f} dB" for s in vq_res["sizes"])
                + "; probe mean ΔE00 "
                + ", ".join(f"{s} px {vq_res['before'][str(s)]['probe_de00']:.2f} -> "
                            f"{vq_res['after'][str(s)]['probe_de00']:.2f}" for s in vq_res["sizes"])
                + "."
            )
        vq_lines.append("2. Text encoder + transformer trained together from scratch with the masked-token objective")
        probe_lines = probe_table(vq, args.probe_before)
    else:
        probe_lines = []
        vq_lines = [
            "1. VQ stage 1: encoder + codebook + decoder, L1 + MSE + image-gradient loss, codebook and",
            "   commitment losses, dead-code re-seeding."
            + (f" Held-out PSNR {vq1_res['heldout_psnr_db']:.2f} dB." if "heldout_psnr_db" in vq1_res else ""),
            "2. VQ stage 2: encoder and codebook frozen, decoder fine-tuned."
            + (f" Held-out PSNR {vq_res['heldout_psnr_db']:.2f} dB." if "heldout_psnr_db" in vq_res else ""),
            "3. Text encoder + transformer trained together from scratch with the masked-token objective",
        ]
    lines = [
        "# tessera emoji model",
        "",
        *intro,
        "",
        "## Components",
        "",
        "| component | class | parameters | key config |",
        "|---|---|---|---|",
        f"| tokenizer | CLIPTokenizer (byte-level BPE) | - | vocab {len(pipe.tokenizer)}, max length {pipe.tokenizer.model_max_length} |",
        f"| text_encoder | CLIPTextModelWithProjection | {n(te) / 1e6:.2f}M | hidden {tc.hidden_size}, {tc.num_hidden_layers} layers, {tc.num_attention_heads} heads, projection {tc.projection_dim}, {tc.hidden_act} |",
        f"| transformer | UVit2DModel | {n(tr) / 1e6:.2f}M | hidden {uc.hidden_size}, {uc.num_hidden_layers} layers, {uc.num_attention_heads} heads, blocks {uc.block_out_channels} ch (down/upsample {uc.downsample}), codebook {uc.codebook_size}, vocab {uc.vocab_size} (mask id {uc.vocab_size - 1}) |",
        f"| vqvae | VQModel | {n(vq) / 1e6:.2f}M | channels {list(vc.block_out_channels)}, latent {vc.latent_channels}, codebook {vc.num_vq_embeddings}, 64 px <-> 16x16 tokens |",
        f"| scheduler | AmusedScheduler | - | cosine, mask_token_id {pipe.scheduler.config.mask_token_id} |",
        "",
        f"Weights: fp16 safetensors, {sizes['total'] / 1e6:.1f} MB in all."
        + (f" One conditional transformer forward costs {gflop:.2f} GFLOP at 16x16 tokens." if gflop else ""),
        "",
        "Use: `AmusedPipeline.from_pretrained(DIR, dtype=torch.float32)(\"blue heart\", num_inference_steps=12,",
        "guidance_scale=4.0)` (64x64 output).",
        "",
        "## Training",
        "",
        "Recipe and exact command lines: `tools/train/` (README.md, "
        + (f"{args.recipe})." if args.svg_data else "run_all.sh)."),
        "",
        *vq_lines,
        "   (cosine masking ratio, 10 % empty-caption dropout for classifier-free guidance, 20 % of",
        "   samples corrupted with random tokens Paella-style), EMA weights exported.",
    ]
    if "heldout_ema" in tr_res:
        h = tr_res["heldout_ema"]
        lines.append(
            f"   Held-out (unseen emoji) masked-token accuracy: {h['acc@0.5'] * 100:.1f} % at 50 % masking, "
            f"{h['acc@0.9'] * 100:.1f} % at 90 % masking."
        )
    if args.training_note:
        lines.append(f"   {args.training_note}")
    if probe_lines:
        lines += ["", *probe_lines]
    lines += [
        "",
        "## Limitations",
        "",
        "- 64x64 base (a super_res/ stage, where present, samples 128x128 from it); tiny model, trained"
        if args.svg_data else "- 64x64 only; tiny model, trained for minutes: shapes and colours follow the prompt loosely,",
        *(["  for minutes: shapes and colours follow the prompt loosely,"] if args.svg_data else []),
        "  fine detail (faces, text on flags) is often wrong.",
        "- Knows emoji names (Unicode / emoji-data names, lower-cased) and little else.",
        "- Outputs imitate Noto Emoji, Twemoji and Fluent Emoji artwork; see the attribution below."
        if args.svg_data else "- Outputs imitate Noto Emoji and Twemoji artwork; see the attribution below.",
        "",
        sources.strip(),
        "",
    ]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--vq-dir", type=Path, default=RUNS_DIR / "vq" / "final")
    ap.add_argument("--transformer-dir", type=Path, default=RUNS_DIR / "transformer" / "final")
    ap.add_argument("--tokenizer-dir", type=Path, default=RUNS_DIR / "tokenizer")
    ap.add_argument("--max-mb", type=float, default=32.0)
    ap.add_argument("--no-card", action="store_true", help="do not write MODEL_CARD.md")
    ap.add_argument("--sources", type=Path, nargs="+", default=None,
                    help="attribution files the card includes, in order (default data/SOURCES.md; the v2 model: "
                         "data/SOURCES_svg.md)")
    ap.add_argument("--probe-before", type=Path,
                    default=Path(__file__).resolve().parents[1] / "eval" / "colour_probe_v1.json",
                    help="a v2 card (train_vq2.py's VQ) shows the colour probe of this colour_probe.py --json "
                         "(the shipped v1 VQ's) beside the new VQ's, on its palette")
    ap.add_argument("--svg-data", action="store_true",
                    help="the card describes data_svg.py's SVG sets (Noto, Twemoji, Fluent) and run_device_v2.sh")
    ap.add_argument("--recipe", choices=sorted(RECIPES), default="run_device_v2.sh",
                    help="v2 card: the recipe script it was trained with")
    ap.add_argument("--training-note", default="",
                    help="card: a line added to the transformer's training step (e.g. further sessions)")
    ap.add_argument("--guidance-scale", type=float, default=1.0,
                    help="tessera.json: the guidance scale tessera uses when none is given (chosen by tools/eval/sweep.py --guidance)")
    ap.add_argument("--choice-temperature", type=float, nargs=2, default=[2.0, 0.0], metavar=("T0", "T1"),
                    help="tessera.json: the aMUSEd sampler's re-masking temperature, start and end")
    args = ap.parse_args()

    from diffusers import AmusedPipeline, AmusedScheduler, UVit2DModel, VQModel
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer

    torch.set_num_threads(2)
    vq = VQModel.from_pretrained(str(args.vq_dir)).eval()
    te = CLIPTextModelWithProjection.from_pretrained(str(args.transformer_dir / "text_encoder"), dtype=torch.float32).eval()
    tr = UVit2DModel.from_pretrained(str(args.transformer_dir / "transformer")).float().eval()
    tok = CLIPTokenizer.from_pretrained(str(args.tokenizer_dir))
    assert tok.model_max_length == MAX_LEN
    assert te.config.eos_token_id == tok.eos_token_id and te.config.pad_token_id == tok.eos_token_id
    assert te.config.max_position_embeddings == MAX_LEN
    assert tr.config.codebook_size == vq.config.num_vq_embeddings < tr.config.vocab_size
    mask_id = tr.config.vocab_size - 1
    sched = AmusedScheduler(mask_token_id=mask_id, masking_schedule="cosine")
    ref_pipe = AmusedPipeline(vqvae=vq, tokenizer=tok, text_encoder=te, transformer=tr, scheduler=sched)

    g = torch.Generator().manual_seed(0)
    hw = tr.config.sample_size
    probe = torch.randint(0, tr.config.codebook_size, (1, hw, hw), generator=g)
    probe[torch.rand(1, hw, hw, generator=g) < 0.6] = mask_id
    ref_logits = cond_logits(ref_pipe, "blue heart", probe)

    if args.out.exists():
        shutil.rmtree(args.out)
    pipe16 = AmusedPipeline(
        vqvae=vq.to(torch.float16), tokenizer=tok, text_encoder=te.to(torch.float16),
        transformer=tr.to(torch.float16), scheduler=sched,
    )
    pipe16.save_pretrained(str(args.out), safe_serialization=True)
    # Tokenizer: ship exactly the trained files (vocab.json + merges.txt + tokenizer.json + configs).
    tok_out = args.out / "tokenizer"
    shutil.rmtree(tok_out)
    tok_out.mkdir()
    for f in TOKENIZER_FILES:
        shutil.copy2(args.tokenizer_dir / f, tok_out / f)
    for f in args.out.rglob("*"):
        if f.is_file() and f.suffix in (".bin", ".pt", ".pth", ".ckpt"):
            sys.exit(f"unexpected non-safetensors weight file {f}")

    # Reload with diffusers and verify.
    pipe = AmusedPipeline.from_pretrained(str(args.out), dtype=torch.float32)
    for comp in (pipe.text_encoder, pipe.transformer, pipe.vqvae):
        comp.eval()
    from safetensors import safe_open

    for f in args.out.rglob("*.safetensors"):
        with safe_open(str(f), "pt") as st:
            dts = {st.get_slice(k).get_dtype() for k in st.keys()}
        assert dts <= {"F16", "I64"}, f"{f}: {dts}"
    new_logits = cond_logits(pipe, "blue heart", probe)
    diff = (new_logits - ref_logits).abs().max().item()
    scale = ref_logits.abs().max().item()
    agree = (new_logits.argmax(1) == ref_logits.argmax(1)).float().mean().item()
    log(f"fp16 export vs fp32 training weights: max |logit diff| {diff:.4f} (max |logit| {scale:.2f}), argmax agreement {agree * 100:.1f} %")
    if agree < 0.95:
        log("WARNING: fp16 rounding changed more than 5 % of the argmax predictions on the probe")
    for text in ["", "blue heart", "côte d’ivoire flag", "thumbs up sign: dark skin tone"]:
        a = tok(text, padding="max_length", max_length=MAX_LEN, truncation=True).input_ids
        b = pipe.tokenizer(text, padding="max_length", max_length=MAX_LEN, truncation=True).input_ids
        assert a == b, text
    assert pipe.scheduler.config.mask_token_id == mask_id
    img = pipe("blue heart", num_inference_steps=12, guidance_scale=4.0, generator=torch.Generator().manual_seed(0)).images[0]
    assert img.size == (hw * 4, hw * 4), img.size
    RUNS_DIR.mkdir(parents=True, exist_ok=True)
    img.save(RUNS_DIR / "export_probe.png")

    defaults = {"guidance_scale": args.guidance_scale, "choice_temperature": args.choice_temperature}
    (args.out / "tessera.json").write_text(json.dumps(defaults, indent=2) + "\n", encoding="utf-8")

    sizes = {p.name: folder_size(p) for p in args.out.iterdir() if p.is_dir()}
    if not args.no_card:
        sizes["total"] = folder_size(args.out)
        (args.out / "MODEL_CARD.md").write_text(model_card(args.out, pipe, sizes, args), encoding="utf-8")
    sizes["total"] = folder_size(args.out)
    log("sizes: " + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in sizes.items()))
    if sizes["total"] > args.max_mb * 1e6:
        sys.exit(f"export is {sizes['total'] / 1e6:.1f} MB > {args.max_mb} MB")
    log(f"exported {args.out} ({sizes['total'] / 1e6:.1f} MB); AmusedPipeline.from_pretrained OK")


if __name__ == "__main__":
    main()
