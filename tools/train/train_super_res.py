"""Train the super-resolution (SR) stage of a two-stage aMUSEd model (Muse, section 2.4): a
SuperResTransformer (super_res_model.py) that predicts the 128 px image's 32x32 VQ tokens from
the prompt and the base stage's 16x16 tokens of the same image at 64 px.

Stages (run in this order; each one writes into --out, default runs/sr):

  --stage cache   Encode every image of data_svg.py's index-aligned sets with one VQ (--vq, a
                  diffusers VQModel folder) through the inference path (train_vq.encode_ids:
                  pixels in [0, 1] as AmusedPipeline feeds the VQ): emoji_svg128.npz ->
                  hi [N,32,32], emoji_svg64.npz -> lo [N,16,16] (the 64 px set is what the
                  base model trains on, so lo is exactly what the base would have to produce).
                  Writes OUT/sr_tokens.npz (uint16 hi / lo, dataset index, heldout, style, the
                  records' captions as JSON, image sizes, codebook size), so the train and
                  export stages need no data/ folder (e.g. on a GPU machine). `--device cuda`
                  encodes on a GPU; train_transformer.py trains the base on this cache's lo
                  grids (`--tokens OUT/sr_tokens.npz --tokens-key lo`).
  --stage train   Text encoder + tokenizer FROZEN from a base AmusedPipeline folder (--base);
                  conditioning exactly as the base uses it (pooled = text_embeds, hidden =
                  hidden_states[-2]) with micro-conds [128, 128, 0, 0, 6] of the high-res image.
                  Objective: train_transformer.py's masked-token objective on the HR tokens
                  (its corrupt(): cosine masking ratio, CE over masked positions, --paella of
                  the samples corrupted with random codes and scored everywhere, since tessera
                  runs the SR stage with the base's sampler kind), caption dropout to "" (the
                  LR tokens always stay: guidance drops the text only), and LR-token noise
                  (--low-res-noise of the LR ids replaced by random codes: the base's samples
                  are imperfect). AdamW + warm-up + cosine, grad clip 1, EMA (exported),
                  held-out / train token accuracy at 50 % and 90 % masking every --eval-every
                  steps, checkpoint every --ckpt-minutes, --resume, --max-minutes /
                  --stop-after (exit 3), --budget-minutes / --finish-minutes (end on time with
                  the final weights written), `--device cuda --bf16` for a GPU, --info / --bench.
                  Writes OUT/ckpt.pt, OUT/log.txt, OUT/final/ (EMA, fp32), OUT/result.json.
  --stage export  Writes --model-out DIR/super_res/ (save_super_res_folder, fp16 weights) and
                  DIR/super_res/tessera.json ({"steps": --sr-steps}); DIR must be a base
                  pipeline folder (--copy-base copies --base into it first when DIR has no
                  model_index.json). Checks the SR config against DIR's base as tessera does,
                  reloads with SuperResTransformer.from_pretrained and compares its logits with
                  the training EMA weights, checks diffusers still opens DIR as its base, and
                  renders OUT/export_preview.png (two-stage samples + held-out SR from true LR
                  tokens) unless --no-preview; --card adds a super-resolution section to DIR's
                  MODEL_CARD.md.

Examples:
  python train_super_res.py --stage cache --vq runs/vq2/stage1
  python train_super_res.py --stage train --steps 4000 --resume
  python train_super_res.py --stage export --model-out runs/sr/model --copy-base
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from common import (
    DATA_DIR,
    HERE,
    MAX_LEN,
    RUNS_DIR,
    add_budget_args,
    amp_context,
    die,
    load_checkpoint,
    log,
    rng_state,
    sample_caption,
    save_checkpoint,
    set_rng_state,
    setup_torch,
    write_json,
)
from super_res_model import SuperResTransformer, save_super_res_folder
from train_transformer import (
    CaptionIds,
    adamw,
    add_uvit_args,
    corrupt,
    encode_text,
    masked_token_scores,
    to_device,
    train_loop,
    uvit_config,
)
from train_vq import decode_ids, encode_ids, save_grid, to_tensor
from train_vq import evaluate as vq_evaluate

DEFAULT_BASE = HERE.parent.parent / "assets" / "models" / "emoji"
CACHE_NAME = "sr_tokens.npz"
AESTHETIC = 6.0
RECORD_KEYS = ("caption", "short_names", "style", "group", "heldout")


# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def perplexity(ids: np.ndarray, k: int) -> float:
    p = np.bincount(ids.ravel().astype(np.int64), minlength=k) / ids.size
    return float(math.exp(-(p * np.log(np.maximum(p, 1e-12))).sum()))


def parent_agreement(hi: np.ndarray, lo: np.ndarray) -> float:
    """Fraction of HR tokens whose code equals their LR parent's (the 2x2 block's LR token):
    a predictor that copies the parent scores exactly this."""
    return float((np.repeat(np.repeat(lo, 2, axis=1), 2, axis=2) == hi).mean())


def micro_conds_for(px: int, batch: int, device, dtype=torch.float32) -> torch.Tensor:
    """[W, H, crop_top, crop_left, aesthetic] of the high-res image, as AmusedPipeline builds it."""
    return torch.tensor([[float(px), float(px), 0.0, 0.0, AESTHETIC]], dtype=dtype, device=device).expand(batch, -1)


def load_cache(path: Path) -> dict:
    if not path.exists():
        die(f"{path} not found: run --stage cache first (or pass --cache)")
    z = np.load(path)
    c = {k: z[k] for k in z.files}
    c["records"] = json.loads(bytes(c.pop("records_json")).decode("utf-8"))
    for k in ("codebook_size", "hi_px", "lo_px"):
        c[k] = int(c[k])
    c["vq"] = str(c["vq"])
    assert len(c["records"]) == c["hi"].shape[0] == c["lo"].shape[0] == c["heldout"].shape[0]
    return c


def load_text_stack(base: Path, device):
    """The base pipeline's tokenizer and text encoder, frozen (fp32 whatever the files hold)."""
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(str(base / "tokenizer"))
    te = CLIPTextModelWithProjection.from_pretrained(str(base / "text_encoder"), dtype=torch.float32)
    te = te.float().eval().to(device)
    for p in te.parameters():
        p.requires_grad_(False)
    return tok, te


class TextCond:
    """Caption list -> (pooled text_embeds, hidden_states[-2]) from the frozen text encoder."""

    def __init__(self, te, tokenizer, amp):
        self.te, self.ids, self.amp = te, CaptionIds(tokenizer), amp
        self.device = next(te.parameters()).device

    @torch.no_grad()
    def __call__(self, captions: list[str]):
        with amp_context(self.amp, self.device):
            return encode_text(self.te, to_device(self.ids(captions), self.device))


def sr_forward(model, inp: torch.Tensor, lo: torch.Tensor, cond, micro: torch.Tensor, hw: int) -> torch.Tensor:
    """inp [B, hw*hw] (ids or mask), lo [B, s, s] -> logits [B, hw*hw, codebook]."""
    pooled, hidden = cond
    logits = model(inp.view(-1, hw, hw), lo, hidden, pooled, micro)
    b, c = logits.shape[:2]
    return logits.reshape(b, c, -1).permute(0, 2, 1)


def noisy_low_res(lo: torch.Tensor, g: torch.Generator, frac: float, codebook: int) -> torch.Tensor:
    """Replace a fraction `frac` of the LR ids (each independently) with uniform random codes."""
    if frac <= 0:
        return lo
    flip = torch.rand(lo.shape, generator=g) < frac
    return torch.where(flip, torch.randint(0, codebook, lo.shape, generator=g), lo)


# --------------------------------------------------------------------------------------
# Stage 1: token cache
# --------------------------------------------------------------------------------------


@torch.no_grad()
def cache_stage(args):
    from diffusers import VQModel

    setup_torch(args.seed)
    if args.vq is None:
        die("--stage cache needs --vq DIR (a diffusers VQModel folder, e.g. runs/vq2/stage1)")
    out_path = args.cache or args.out / CACHE_NAME
    log_path = args.out / "log_cache.txt"
    if out_path.exists() and not args.force:
        log(f"{out_path} exists; nothing to do (--force rebuilds it)", log_path)
        return
    device = torch.device(args.device)
    vq = VQModel.from_pretrained(str(args.vq)).float().eval().to(device)
    k = vq.config.num_vq_embeddings
    records = json.loads((args.data_dir / "captions_svg.json").read_text(encoding="utf-8"))["records"]
    z_hi, z_lo = np.load(args.data_dir / "emoji_svg128.npz"), np.load(args.data_dir / "emoji_svg64.npz")
    heldout, style = z_lo["heldout"].astype(bool), z_lo["style"]
    # The two sets are rasterised separately from the same SVGs, index by index.
    for key in ("heldout", "style", "hue"):
        if not np.array_equal(z_hi[key], z_lo[key]):
            die(f"emoji_svg128.npz and emoji_svg64.npz disagree on {key}: not index-aligned")
    if len(records) != len(heldout) or any(bool(r["heldout"]) != h for r, h in zip(records, heldout)):
        die("captions_svg.json does not match the npz files")
    n = len(records)
    index = np.arange(n) if not args.limit or args.limit >= n else np.linspace(0, n - 1, args.limit).round().astype(np.int64)
    t0 = time.time()
    img_hi, img_lo = z_hi["images"][index], z_lo["images"][index]
    log(f"loaded {len(index)} of {n} images (128 and 64 px) in {time.time() - t0:.0f}s; VQ {args.vq}, codebook {k}, "
        f"device {device}", log_path)
    hi, lo = [], []
    for i in range(0, len(index), args.cache_batch):
        hi.append(encode_ids(vq, to_tensor(img_hi[i : i + args.cache_batch]).to(device)).cpu().numpy().astype(np.uint16))
        lo.append(encode_ids(vq, to_tensor(img_lo[i : i + args.cache_batch]).to(device)).cpu().numpy().astype(np.uint16))
        if (i // args.cache_batch) % 10 == 0:
            log(f"  cache {min(i + args.cache_batch, len(index))}/{len(index)} images, {time.time() - t0:.0f}s", log_path)
    hi, lo = np.concatenate(hi), np.concatenate(lo)
    assert hi.shape[1] == 2 * lo.shape[1], (hi.shape, lo.shape)
    recs = [{key: records[i][key] for key in RECORD_KEYS} for i in index]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out_path, hi=hi, lo=lo, index=index.astype(np.int32), heldout=heldout[index], style=style[index],
        codebook_size=k, hi_px=img_hi.shape[1], lo_px=img_lo.shape[1], vq=str(args.vq),
        records_json=np.frombuffer(json.dumps(recs, ensure_ascii=False).encode("utf-8"), dtype=np.uint8),
    )
    held = np.nonzero(heldout[index])[0]
    sel = held[np.linspace(0, len(held) - 1, min(args.eval_n, len(held))).astype(int)] if len(held) else held
    psnr_hi, _ = vq_evaluate(vq, img_hi[sel], np.arange(len(sel)), tokens=hi[sel]) if len(sel) else (float("nan"), 0)
    psnr_lo, _ = vq_evaluate(vq, img_lo[sel], np.arange(len(sel)), tokens=lo[sel]) if len(sel) else (float("nan"), 0)
    used = lambda a: int((np.bincount(a.ravel().astype(np.int64), minlength=k) > 0).sum())  # noqa: E731
    log(
        f"wrote {out_path} ({out_path.stat().st_size / 1e6:.1f} MB): hi {hi.shape}, lo {lo.shape}, "
        f"{int(heldout[index].sum())} held out, {time.time() - t0:.0f}s\n"
        f"  codes used: hi {used(hi)}/{k} (perplexity {perplexity(hi, k):.1f}), lo {used(lo)}/{k} "
        f"(perplexity {perplexity(lo, k):.1f}), both {used(np.concatenate([hi.ravel(), lo.ravel()]))}/{k}\n"
        f"  HR tokens equal to their LR parent: {parent_agreement(hi, lo) * 100:.1f} % "
        f"(the copy-the-parent baseline's token accuracy)\n"
        f"  VQ round trip on {len(sel)} held-out images: {psnr_hi:.2f} dB at {img_hi.shape[1]} px, "
        f"{psnr_lo:.2f} dB at {img_lo.shape[1]} px",
        log_path,
    )


# --------------------------------------------------------------------------------------
# Stage 2: training
# --------------------------------------------------------------------------------------


def sr_config(args, te_config, codebook: int, hw_hi: int, hw_lo: int) -> dict:
    """UVit2D part from train_transformer.uvit_config (vocab = codebook + [MASK] rounded up to 8),
    text widths from the base text encoder, plus the low-res encoder's keys."""
    args.text_hidden, args.text_proj = te_config.hidden_size, te_config.projection_dim
    cfg = uvit_config(args, codebook, hw_hi)
    cfg.update(
        low_res_sample_size=hw_lo,
        low_res_codebook_size=codebook,
        low_res_hidden_size=args.low_res_hidden,
        low_res_num_layers=args.low_res_layers,
        low_res_num_attention_heads=args.low_res_heads,
        low_res_intermediate_size=args.low_res_intermediate,
    )
    return cfg


def sr_flops(model, cfg: dict) -> int:
    """FLOPs (2 x multiply-adds, FlopCounterMode) of one conditional SR forward for one image."""
    from torch.utils.flop_counter import FlopCounterMode

    s, ls = cfg["sample_size"], cfg["low_res_sample_size"]
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(torch.zeros(1, s, s, dtype=torch.long), torch.zeros(1, ls, ls, dtype=torch.long),
              torch.zeros(1, MAX_LEN, cfg["encoder_hidden_size"]), torch.zeros(1, cfg["cond_embed_dim"]),
              micro_conds_for(s * 4, 1, "cpu"))
    return fc.get_total_flops()


@torch.no_grad()
def evaluate(model, text, hi, lo, records, idx, mask_id, px, ratios=(0.5, 0.9), batch=64, seed=999, amp=None):
    """Masked HR-token accuracy / CE on the given images (plain captions, clean LR tokens),
    fixed masks (train_transformer.masked_token_scores)."""
    model.eval()
    dev = next(model.parameters()).device
    hw = hi.shape[1]

    def logits_of(j, inp):
        low = torch.from_numpy(lo[j].astype(np.int64))
        cond = text([records[t]["caption"] for t in j])
        with amp_context(amp, dev):
            return sr_forward(model, inp.to(dev), low.to(dev), cond, micro_conds_for(px, len(j), dev), hw)

    res = masked_token_scores(hi, idx, mask_id, logits_of, ratios, batch, seed)
    model.train()
    return res


def build_model(args, te_config, cache):
    cfg = sr_config(args, te_config, cache["codebook_size"], cache["hi"].shape[1], cache["lo"].shape[1])
    torch.manual_seed(args.seed)
    model = SuperResTransformer(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    return model, cfg, n_params


def bench(args, model, cfg, text, device, amp):
    """Time --bench training steps (after 2 untimed ones) on random tokens at --batch."""
    hw, ls, k = cfg["sample_size"], cfg["low_res_sample_size"], cfg["codebook_size"]
    mask_id = cfg["vocab_size"] - 1
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, **({"fused": True} if device.type == "cuda" else {}))
    g = torch.Generator().manual_seed(0)
    fmodel = torch.compile(model) if args.compile else model
    times = []
    for i in range(args.bench + 2):
        t0 = time.time()
        tok = torch.randint(0, k, (args.batch, hw * hw), generator=g)
        inp, w = corrupt(tok, g, mask_id, k, args.paella)
        low = torch.randint(0, k, (args.batch, ls, ls), generator=g)
        tok, inp, w, low = (to_device(t, device) for t in (tok, inp, w, low))
        cond = text(["blue heart"] * args.batch)
        with amp_context(amp, device):
            logits = sr_forward(fmodel, inp, low, cond, micro_conds_for(hw * 4, args.batch, device), hw)
        ce = F.cross_entropy(logits.float().reshape(-1, k), tok.reshape(-1), reduction="none").view_as(w)
        loss = (ce * w).sum() / w.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.time() - t0)
    t = np.array(times)
    log(f"bench: {len(t)} steps at batch {args.batch} on {device}: {t.mean():.3f} s/step "
        f"(min {t.min():.3f}, max {t.max():.3f}), threads {torch.get_num_threads()}")


def train_stage(args):
    setup_torch(args.seed)
    device = torch.device(args.device)
    amp = "bf16" if args.bf16 else None
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    args.out.mkdir(parents=True, exist_ok=True)
    log_path = args.out / "log.txt"
    cache_path = args.cache or args.out / CACHE_NAME
    if cache_path.exists() or not (args.info or args.bench):
        cache = load_cache(cache_path)
    else:  # --info / --bench without a cache: twice the base's grid, its codebook, f = 4
        base_tr = json.loads((args.base / "transformer" / "config.json").read_text(encoding="utf-8"))
        s = base_tr["sample_size"]
        cache = {"codebook_size": base_tr["codebook_size"], "hi": np.zeros((0, 2 * s, 2 * s)),
                 "lo": np.zeros((0, s, s)), "hi_px": 8 * s}
    tokenizer, te = load_text_stack(args.base, device)
    text = TextCond(te, tokenizer, amp)
    model, cfg, n_params = build_model(args, te.config, cache)
    mask_id = cfg["vocab_size"] - 1
    hw, px, codebook = cfg["sample_size"], cache["hi_px"], cfg["codebook_size"]
    flops = sr_flops(model, cfg)
    n_low = sum(p.numel() for p in model.low_res_encoder.parameters())
    info = (
        f"SR transformer {n_params / 1e6:.3f}M params (low-res encoder {n_low / 1e6:.3f}M), fp16 weights "
        f"{n_params * 2 / 1e6:.2f} MB; forward {flops / 1e9:.3f} GFLOP at {hw}x{hw} tokens "
        f"(+{cfg['low_res_sample_size']}x{cfg['low_res_sample_size']} low-res); codebook {codebook}, "
        f"vocab {cfg['vocab_size']}, mask id {mask_id}; micro-conds [{px}, {px}, 0, 0, {AESTHETIC:g}]"
    )
    base_sched = json.loads((args.base / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8"))
    if base_sched.get("mask_token_id") != mask_id:
        log(f"WARNING: the base's mask id is {base_sched.get('mask_token_id')}, this SR stage's {mask_id}: "
            "tessera refuses the pair (use a base trained on the same VQ codebook)", log_path)
    if args.info or args.bench:
        print(info)
        print(json.dumps(cfg, indent=1))
        if args.bench:
            model.to(device).train()
            bench(args, model, cfg, text, device, amp)
        return

    records, hi, lo, heldout = cache["records"], cache["hi"], cache["lo"], cache["heldout"].astype(bool)
    train_idx, held_idx = np.nonzero(~heldout)[0], np.nonzero(heldout)[0]
    train_eval_idx = train_idx[np.linspace(0, len(train_idx) - 1, min(args.eval_train_n, len(train_idx))).astype(int)]
    held_eval_idx = held_idx[np.linspace(0, len(held_idx) - 1, min(args.eval_n, len(held_idx))).astype(int)] if len(held_idx) else held_idx
    te_sha = file_sha256(args.base / "text_encoder" / "model.safetensors")

    init_from = None
    if args.init_from is not None and not (args.resume and (args.out / "ckpt.pt").exists()):
        # A warm start: a finished SR stage's weights (its config must be this one), e.g. the
        # stage trained against an earlier base, to adapt to a retrained base's text states.
        # The EMA starts from them too; the optimiser is fresh.
        src = args.init_from / "super_res" / "transformer" if (args.init_from / "super_res").is_dir() else args.init_from
        start = SuperResTransformer.from_pretrained(src)
        if start.config != model.config:
            die(f"--init-from {src}: another configuration ({start.config}) than this run's ({model.config})")
        model.load_state_dict(start.state_dict())
        init_from = str(src)
        log(f"initialised from {src}", log_path)
    model = model.to(device).train()
    ema = copy.deepcopy(model).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    opt = adamw((model,), args.lr, args.weight_decay, device)
    ckpt_path = args.out / "ckpt.pt"
    step = 0
    py_rng = random.Random(args.seed)
    if args.resume and ckpt_path.exists():
        ck = load_checkpoint(ckpt_path, map_location=device)
        if ck["config"] != cfg:
            die(f"{ckpt_path} was trained with another config: {ck['config']}")
        if ck.get("text_encoder_sha256") != te_sha:
            log(f"WARNING: {args.base}/text_encoder differs from the one {ckpt_path} was trained with", log_path)
        model.load_state_dict(ck["model"]), ema.load_state_dict(ck["ema"]), opt.load_state_dict(ck["opt"])
        step = ck["step"]
        init_from = ck.get("init_from")
        set_rng_state(ck["rng"], py_rng)
        log(f"resumed from {ckpt_path} at step {step}", log_path)
    elif ckpt_path.exists():
        log(f"note: {ckpt_path} exists but --resume not given; starting from scratch", log_path)
    log(info, log_path)
    log(
        f"config: {json.dumps(cfg)}\nbase {args.base} (text encoder frozen), batch {args.batch}, steps {args.steps}, "
        f"lr {args.lr}, caption dropout {args.caption_dropout}, paella {args.paella}, low-res noise "
        f"{args.low_res_noise}, train {len(train_idx)} / held-out {len(held_idx)} images, device {device}"
        f"{' (bf16 autocast)' if amp else ''}\n"
        f"copy-the-parent baseline (HR token = its LR parent): held-out "
        f"{parent_agreement(hi[held_idx], lo[held_idx]) * 100 if len(held_idx) else float('nan'):.1f} %, "
        f"train {parent_agreement(hi[train_idx], lo[train_idx]) * 100:.1f} %",
        log_path,
    )

    def checkpoint(step: int):
        save_checkpoint(ckpt_path, {
            "model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "step": step,
            "rng": rng_state(py_rng), "config": cfg, "mask_id": mask_id, "hi_px": px,
            "text_encoder_sha256": te_sha, "base": str(args.base), "vq": cache["vq"], "init_from": init_from,
        })

    def make_batch(sampler, step: int):
        """Step `step`'s batch (seeded by the step alone): captions, targets, inputs, weights,
        low-res tokens."""
        g = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
        bidx = sampler.batch_indices(step)
        cap_rng = random.Random(args.seed * 7919 + step)
        captions = ["" if cap_rng.random() < args.caption_dropout else sample_caption(records[i], cap_rng) for i in bidx]
        tok = torch.from_numpy(hi[bidx].astype(np.int64)).reshape(len(bidx), -1)
        inp, w = corrupt(tok, g, mask_id, codebook, args.paella)
        low = noisy_low_res(torch.from_numpy(lo[bidx].astype(np.int64)), g, args.low_res_noise, codebook)
        return (captions, *(to_device(t, device) for t in (tok, inp, w, low)))

    # The training forward may be compiled; checkpoints, EMA and evaluation use the eager module.
    fmodel = torch.compile(model) if args.compile else model

    def train_forward(batch):
        captions, tok, inp, w, low = batch
        cond = text(captions)
        with amp_context(amp, device):
            return sr_forward(fmodel, inp, low, cond, micro_conds_for(px, len(captions), device), hw), tok, w

    def evaluate_emas():
        held = evaluate(ema, text, hi, lo, records, held_eval_idx, mask_id, px, amp=amp) if len(held_eval_idx) else {}
        return held, evaluate(ema, text, hi, lo, records, train_eval_idx, mask_id, px, amp=amp)

    step, t_start = train_loop(
        args, step=step, models=(model,), emas=(ema,), opt=opt, train_idx=train_idx,
        groups=[r["group"] for r in records], make_batch=make_batch,
        forward=train_forward, evaluate_emas=evaluate_emas, checkpoint=checkpoint, codebook=codebook,
        device=device, log_path=log_path,
    )
    copy.deepcopy(ema).cpu().save_pretrained(args.out / "final")
    held = evaluate(ema, text, hi, lo, records, held_idx, mask_id, px, amp=amp) if len(held_idx) else {}
    raw = evaluate(model, text, hi, lo, records, held_idx, mask_id, px, amp=amp) if len(held_idx) else {}
    write_json(args.out / "result.json", {
        "steps": step, "heldout_ema": held, "heldout_raw": raw, "params": n_params, "batch": args.batch,
        "minutes": (time.time() - t_start) / 60,
        "fp16_mb": n_params * 2 / 1e6, "forward_gflop": flops / 1e9, "config": cfg,
        "parent_copy_heldout": parent_agreement(hi[held_idx], lo[held_idx]) if len(held_idx) else None,
        "init_from": init_from,
    })
    log(f"done: saved EMA weights to {args.out / 'final'}; held-out EMA {held}, raw {raw}", log_path)


# --------------------------------------------------------------------------------------
# Stage 3: export
# --------------------------------------------------------------------------------------


@torch.no_grad()
def sample_sr(model, sched, text, low: torch.Tensor, prompts: list[str], px: int, steps: int,
              guidance: float, temperature, seed: int) -> torch.Tensor:
    """aMUSEd sampling of the SR grid (AmusedPipeline's loop): unconditional rows = "" with the
    same low-res ids. Returns ids [B, S, S]."""
    b, s = len(prompts), model.config["sample_size"]
    x = torch.full((b, s, s), sched.config.mask_token_id, dtype=torch.long)
    pooled, hidden = text(prompts)
    npooled, nhidden = text([""] * b)
    g = torch.Generator().manual_seed(seed)
    sched.set_timesteps(steps, temperature)
    for t in sched.timesteps:
        if guidance > 1.0:
            out = model(torch.cat([x, x]), torch.cat([low, low]), torch.cat([nhidden, hidden]),
                        torch.cat([npooled, pooled]), micro_conds_for(px, 2 * b, "cpu"))
            u, c = out.chunk(2)
            out = u + guidance * (c - u)
        else:
            out = model(x, low, hidden, pooled, micro_conds_for(px, b, "cpu"))
        x = sched.step(out, t, x, generator=g).prev_sample
    return x


def preview(args, dest: Path, sr, cache, log_path):
    """Two-stage samples (base 64 px upscaled 2x over SR 128 px) for --preview-prompts, then
    held-out images: true LR tokens decoded (upscaled), the SR stage's sample from them, the
    true HR tokens decoded."""
    from diffusers import AmusedPipeline, AmusedScheduler

    pipe = AmusedPipeline.from_pretrained(str(dest), dtype=torch.float32)
    tokenizer, te = load_text_stack(dest, torch.device("cpu"))
    text = TextCond(te, tokenizer, None)
    sched = AmusedScheduler.from_pretrained(str(dest / "super_res" / "scheduler"))
    defaults = json.loads((dest / "tessera.json").read_text()) if (dest / "tessera.json").exists() else {}
    guidance = args.preview_guidance if args.preview_guidance is not None else defaults.get("guidance_scale", 10.0)
    temp = tuple(args.choice_temperature or defaults.get("choice_temperature", (2.0, 0.0)))
    px = cache["hi_px"]
    prompts = [p.strip() for p in args.preview_prompts.split(",") if p.strip()]
    base_ids = pipe(prompts, num_inference_steps=12, guidance_scale=guidance, output_type="latent",
                    generator=torch.Generator().manual_seed(args.seed)).images
    sr_ids = sample_sr(sr, sched, text, base_ids, prompts, px, args.sr_steps, guidance, temp, args.seed)
    up = lambda ids: F.interpolate(decode_ids(pipe.vqvae, ids).clamp(0, 1), scale_factor=2, mode="nearest")  # noqa: E731
    rows = [up(base_ids), decode_ids(pipe.vqvae, sr_ids).clamp(0, 1)]
    held = np.nonzero(cache["heldout"])[0]
    if len(held):
        j = held[np.linspace(0, len(held) - 1, min(len(prompts), len(held))).astype(int)]
        low = torch.from_numpy(cache["lo"][j].astype(np.int64))
        caps = [cache["records"][t]["caption"] for t in j]
        ids = sample_sr(sr, sched, text, low, caps, px, args.sr_steps, guidance, temp, args.seed)
        rows += [up(low), decode_ids(pipe.vqvae, ids).clamp(0, 1),
                 decode_ids(pipe.vqvae, torch.from_numpy(cache["hi"][j].astype(np.int64))).clamp(0, 1)]
        log(f"  held-out rows: {caps}", log_path)
    width = max(r.shape[0] for r in rows)
    rows = [torch.cat([r, torch.ones(width - r.shape[0], *r.shape[1:])]) for r in rows]
    out = args.out / "export_preview.png"
    save_grid(out, rows)
    log(f"preview {out} (guidance {guidance}, SR steps {args.sr_steps}, temperature {temp}): rows = "
        f"base 64 px x2 | SR 128 px for {prompts}" + (" | held-out true LR x2 | SR from true LR | true HR" if len(held) else ""),
        log_path)


@torch.no_grad()
def export_stage(args):
    setup_torch(args.seed)
    log_path = args.out / "log_export.txt"
    if args.model_out is None:
        die("--stage export needs --model-out DIR")
    dest = args.model_out
    if not (dest / "model_index.json").exists():
        if not args.copy_base:
            die(f"{dest} has no model_index.json: pass --copy-base to copy --base {args.base} there first")
        shutil.copytree(args.base, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("super_res"))
        log(f"copied base pipeline {args.base} -> {dest}", log_path)
    ckpt_path = args.out / "ckpt.pt"
    if not ckpt_path.exists():
        die(f"{ckpt_path} not found: run --stage train first")
    ck = load_checkpoint(ckpt_path)
    cfg, mask_id = ck["config"], ck["mask_id"]
    ref = SuperResTransformer(cfg)
    ref.load_state_dict(ck["ema"])
    ref = ref.float().eval()

    # The checks tessera's Model::open makes against the base folder.
    read = lambda p: json.loads((dest / p).read_text(encoding="utf-8"))  # noqa: E731
    b_tr, b_vq, b_te, b_sched = (read("transformer/config.json"), read("vqvae/config.json"),
                                 read("text_encoder/config.json"), read("scheduler/scheduler_config.json"))
    checks = {
        "encoder_hidden_size = text encoder hidden_size": cfg["encoder_hidden_size"] == b_te["hidden_size"],
        "cond_embed_dim = text encoder projection_dim": cfg["cond_embed_dim"] == b_te["projection_dim"],
        "codebook_size = VQ codebook": cfg["codebook_size"] == b_vq["num_vq_embeddings"],
        "mask id = the base's": mask_id == b_sched["mask_token_id"],
        "low_res_codebook_size = base codebook_size": cfg["low_res_codebook_size"] == b_tr["codebook_size"],
        "low_res_sample_size = base sample_size": cfg["low_res_sample_size"] == b_tr["sample_size"],
        "sample_size a multiple of low_res_sample_size": cfg["sample_size"] % cfg["low_res_sample_size"] == 0,
    }
    bad = [k for k, ok in checks.items() if not ok]
    if bad:
        die(f"SR stage does not fit the base {dest}: {bad}")
    if file_sha256(dest / "text_encoder" / "model.safetensors") != ck.get("text_encoder_sha256"):
        log(f"WARNING: {dest}/text_encoder is not the text encoder the SR stage was trained with ({ck.get('base')})", log_path)

    root = save_super_res_folder(dest, ref, mask_id, dtype=torch.float16)
    defaults = {"steps": args.sr_steps}
    if args.choice_temperature:
        defaults["choice_temperature"] = list(args.choice_temperature)
    (root / "tessera.json").write_text(json.dumps(defaults, indent=2) + "\n", encoding="utf-8")

    # Reload and compare with the training EMA weights (fp32) on held-out probes.
    from safetensors import safe_open

    with safe_open(str(root / "transformer" / "diffusion_pytorch_model.safetensors"), "pt") as st:
        dtypes = {st.get_slice(k).get_dtype() for k in st.keys()}
    if dtypes != {"F16"}:
        die(f"exported SR weights have dtypes {dtypes}, expected F16 only")
    new = SuperResTransformer.from_pretrained(root / "transformer")
    cache = load_cache(args.cache or args.out / CACHE_NAME)
    tokenizer, te = load_text_stack(dest, torch.device("cpu"))
    text = TextCond(te, tokenizer, None)
    held = np.nonzero(cache["heldout"])[0]
    j = (held if len(held) >= 4 else np.arange(len(cache["records"])))[:4]
    g = torch.Generator().manual_seed(0)
    tok = torch.from_numpy(cache["hi"][j].astype(np.int64))
    probe = torch.where(torch.rand(tok.shape, generator=g) < 0.6, torch.full_like(tok, mask_id), tok)
    low = torch.from_numpy(cache["lo"][j].astype(np.int64))
    pooled, hidden = text([cache["records"][t]["caption"] for t in j])
    micro = micro_conds_for(cache["hi_px"], len(j), "cpu")
    a, b = ref(probe, low, hidden, pooled, micro), new(probe, low, hidden, pooled, micro)
    diff, scale = (a - b).abs().max().item(), a.abs().max().item()
    agree = (a.argmax(1) == b.argmax(1)).float().mean().item()
    log(f"fp16 export vs fp32 EMA weights: max |logit diff| {diff:.4f} (max |logit| {scale:.2f}), "
        f"argmax agreement {agree * 100:.2f} %", log_path)
    if diff > 1e-2 + 1e-2 * scale:
        die(f"fp16 logits differ by {diff:.4f}, more than fp16 rounding explains")
    if agree < 0.95:
        log("WARNING: fp16 rounding changed more than 5 % of the argmax predictions on the probe", log_path)

    from diffusers import AmusedPipeline

    AmusedPipeline.from_pretrained(str(dest), dtype=torch.float32)  # the base still opens in diffusers
    missing = [p for p in ("model_index.json", "super_res/model_index.json", "super_res/transformer/config.json",
                           "super_res/transformer/diffusion_pytorch_model.safetensors",
                           "super_res/scheduler/scheduler_config.json", "super_res/tessera.json") if not (dest / p).is_file()]
    if missing:
        die(f"{dest} lacks {missing}")
    log(f"exported {root}: {folder_size(root) / 1e6:.2f} MB (weights "
        f"{(root / 'transformer' / 'diffusion_pytorch_model.safetensors').stat().st_size / 1e6:.2f} MB); "
        f"whole two-stage folder {folder_size(dest) / 1e6:.2f} MB; tessera.json {json.dumps(defaults)}", log_path)
    if args.card:
        card_section(args, dest, root, defaults, log_path)
    if not args.no_preview:
        preview(args, dest, new, cache, log_path)


def card_section(args, dest: Path, root: Path, defaults: dict, log_path):
    """--card: write a "## Super-resolution stage" section into DEST/MODEL_CARD.md (export.py's
    card), before "## Limitations"; an existing section of that name is replaced."""
    card = dest / "MODEL_CARD.md"
    if not card.exists():
        log(f"--card: {card} not found (export.py writes it); no SR section written", log_path)
        return
    res = read_json_or_empty(args.out / "result.json")
    cfg = json.loads((root / "transformer" / "config.json").read_text(encoding="utf-8"))
    h = res.get("heldout_ema") or {}
    weights = root / "transformer" / "diffusion_pytorch_model.safetensors"
    lines = [
        "## Super-resolution stage (super_res/)",
        "",
        "A second stage (Muse-style super-resolution, tessera's `super_res/` format, docs/model-folders.md):",
        f"a SuperResTransformer samples the {cfg['sample_size'] * 4} px image's {cfg['sample_size']}x{cfg['sample_size']} "
        f"tokens from the prompt and the base's {cfg['low_res_sample_size']}x{cfg['low_res_sample_size']} tokens in "
        f"{defaults['steps']} steps; the base's vqvae decodes both grids.",
        f"{res.get('params', 0) / 1e6:.2f}M parameters (hidden {cfg['hidden_size']}, {cfg['num_hidden_layers']} layers, "
        f"low-res encoder {cfg['low_res_hidden_size']} x {cfg['low_res_num_layers']} layers), fp16 weights "
        f"{weights.stat().st_size / 1e6:.1f} MB. Trained with `tools/train/train_super_res.py` (the base's text encoder "
        f"frozen)" + (f", warm-started from the SR stage in {res['init_from']}" if res.get("init_from") else "")
        + (f": {res['steps']} steps at batch {res.get('batch', '?')}" if "steps" in res else "") + ".",
    ]
    if h:
        lines.append(
            f"Held-out masked-token accuracy (EMA, 32x32 tokens given the true 16x16 ones): "
            f"{h['acc@0.5'] * 100:.1f} % at 50 % masking, {h['acc@0.9'] * 100:.1f} % at 90 %"
            + (f" (copying the low-res parent token: {res['parent_copy_heldout'] * 100:.1f} %)."
               if res.get("parent_copy_heldout") is not None else "."))
    put_card_section(card, "\n".join(lines) + "\n\n")
    log(f"--card: wrote the super-resolution section into {card}", log_path)


CARD_SECTION = "## Super-resolution stage"


def card_section_span(text: str) -> tuple[int, int] | None:
    """Where a model card's super-resolution section is: from its heading up to the next "## "
    heading (or the end); None when it has none."""
    if CARD_SECTION not in text:
        return None
    a = text.index(CARD_SECTION)
    b = text.find("\n## ", a + len(CARD_SECTION))
    return a, (b + 1 if b >= 0 else len(text))


def put_card_section(card: Path, section: str) -> None:
    """Writes `section` into the model card `card` in place of its super-resolution section, or
    before "## Limitations" (at the end when there is none)."""
    text = card.read_text(encoding="utf-8")
    if span := card_section_span(text):
        text = text[: span[0]] + text[span[1] :]
    at = text.find("## Limitations")
    text = text[:at] + section + text[at:] if at >= 0 else text.rstrip("\n") + "\n\n" + section
    card.write_text(text, encoding="utf-8")


def carry_card_section(old_card: str, new_card: str) -> None:
    """The super-resolution section of the card `old_card` into the card `new_card` (a base
    re-exported with its text encoder frozen keeps its SR stage: run_cpu_v2.sh MORE_BASE=1)."""
    text = Path(old_card).read_text(encoding="utf-8")
    if span := card_section_span(text):
        put_card_section(Path(new_card), text[span[0] : span[1]])


def read_json_or_empty(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


# --------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", choices=["cache", "train", "export"], required=True)
    ap.add_argument("--out", type=Path, default=RUNS_DIR / "sr", help="run folder (cache, checkpoints, logs)")
    ap.add_argument("--cache", type=Path, default=None, help=f"token cache (default OUT/{CACHE_NAME})")
    ap.add_argument("--base", type=Path, default=DEFAULT_BASE,
                    help="base AmusedPipeline folder: its tokenizer + text encoder (frozen) condition the SR stage")
    ap.add_argument("--seed", type=int, default=4321)
    # cache
    ap.add_argument("--vq", type=Path, default=None, help="cache: diffusers VQModel folder (the base's VQ)")
    ap.add_argument("--data-dir", type=Path, default=DATA_DIR, help="cache: folder with emoji_svg{64,128}.npz + captions_svg.json")
    ap.add_argument("--limit", type=int, default=0, help="cache: only this many images, evenly spaced (smoke tests)")
    ap.add_argument("--cache-batch", type=int, default=64, help="cache: images per VQ encoder batch")
    ap.add_argument("--force", action="store_true", help="cache: rebuild an existing cache")
    # model
    add_uvit_args(ap, layers=3)
    ap.add_argument("--low-res-hidden", type=int, default=128)
    ap.add_argument("--low-res-layers", type=int, default=2)
    ap.add_argument("--low-res-heads", type=int, default=2)
    ap.add_argument("--low-res-intermediate", type=int, default=256)
    # training
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=6e-4)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--ema", type=float, default=0.998, help="max EMA decay (warmed up as (1+s)/(10+s))")
    ap.add_argument("--caption-dropout", type=float, default=0.1, help="captions replaced by \"\" (LR tokens kept)")
    ap.add_argument("--paella", type=float, default=0.2, help="fraction of samples corrupted with random codes (train_transformer.py's)")
    ap.add_argument("--low-res-noise", type=float, default=0.05, help="fraction of LR ids replaced by random codes")
    ap.add_argument("--per-group", type=int, default=0, help="balance emoji: at most N images per emoji group per epoch (0: off)")
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--eval-n", type=int, default=449, help="held-out images scored at each eval (all at the end)")
    ap.add_argument("--eval-train-n", type=int, default=320, help="train images also scored at eval (overfit check)")
    ap.add_argument("--ckpt-minutes", type=float, default=5.0)
    ap.add_argument("--max-minutes", type=float, default=0.0)
    ap.add_argument("--stop-after", type=int, default=0, help="stop (with a checkpoint) after this many steps in this invocation")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--init-from", type=Path, default=None,
                    help="train: start from a finished SR stage's weights (a model folder with super_res/, or its "
                         "super_res/transformer) with a fresh optimiser, instead of from random weights")
    ap.add_argument("--device", default="cpu", help="cache / train: torch device (cpu or cuda)")
    add_budget_args(ap)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA or a CPU with bf16 instructions)")
    ap.add_argument("--compile", action="store_true",
                    help="torch.compile the training forward (CPU: faster per step after a minute or two of compiling; needs a C++ compiler)")
    ap.add_argument("--info", action="store_true", help="print config, params, fp16 size and FLOPs, then exit")
    ap.add_argument("--bench", type=int, default=0, help="like --info, then time this many training steps at --batch")
    # export
    ap.add_argument("--model-out", type=Path, default=None, help="export: two-stage model folder (a base pipeline folder)")
    ap.add_argument("--copy-base", action="store_true", help="export: copy --base into --model-out first if it has no model_index.json")
    ap.add_argument("--sr-steps", type=int, default=8, help="export: super_res/tessera.json steps")
    ap.add_argument("--choice-temperature", type=float, nargs=2, default=None, metavar=("T0", "T1"),
                    help="export: also write this choice temperature into super_res/tessera.json")
    ap.add_argument("--no-preview", action="store_true", help="export: skip the preview samples")
    ap.add_argument("--card", action="store_true",
                    help="export: write a super-resolution section into DIR/MODEL_CARD.md (export.py's card)")
    ap.add_argument("--preview-prompts", default="blue heart,grinning face,green apple,red apple")
    ap.add_argument("--preview-guidance", type=float, default=None, help="export preview: default the base's tessera.json guidance")
    args = ap.parse_args()
    args.downsample = bool(args.downsample)
    args.out.mkdir(parents=True, exist_ok=True)
    {"cache": cache_stage, "train": train_stage, "export": export_stage}[args.stage](args)


if __name__ == "__main__":
    sys.exit(main())
