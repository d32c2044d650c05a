"""Train the image tokenizer: a diffusers VQModel (64 px -> 16x16 tokens).

Stages (run in this order; each one resumes with --resume and is skipped by run_all.sh
once its output exists):

  --stage vq       Stage 1. Encoder, codebook and decoder trained together:
                   L1 + MSE + image-gradient (edge) reconstruction loss, codebook loss and
                   commitment loss (straight-through estimator), codebook initialised from
                   encoder outputs and dead codes re-seeded from the batch.
                   Output: runs/vq/stage1/ (VQModel.save_pretrained).
  --stage cache    Encode every image of the dataset once with the stage-1 model and store
                   the token ids: runs/vq/tokens.npz (tokens int16 [N,16,16]). The
                   transformer trains on this cache; the decoder stage uses it too.
  --stage decoder  Stage 2. Encoder and codebook frozen (the cached tokens stay valid);
                   post_quant_conv + decoder fine-tuned for detail from the cached tokens.
                   Output: runs/vq/final/.

Every stage reports held-out reconstruction PSNR measured through the exact inference path
(encode -> nearest code -> decode(force_not_quantize=True) -> clip to [0, 1]).

Examples:
  python train_vq.py --stage vq --steps 1500 --resume
  python train_vq.py --stage cache
  python train_vq.py --stage decoder --steps 600 --resume
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from common import (
    RUNS_DIR,
    Progress,
    cosine_lr,
    load_checkpoint,
    load_dataset,
    log,
    psnr,
    rng_state,
    save_checkpoint,
    set_rng_state,
    setup_torch,
    stop_early_if_asked,
    write_json,
)


def vq_config(args) -> dict:
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * len(args.channels),
        up_block_types=["UpDecoderBlock2D"] * len(args.channels),
        block_out_channels=list(args.channels),
        layers_per_block=args.layers_per_block,
        act_fn="silu",
        latent_channels=args.latent,
        sample_size=64,
        num_vq_embeddings=args.codebook,
        norm_num_groups=args.groups,
        vq_embed_dim=None,
        norm_type="group",
        mid_block_add_attention=args.mid_attention,
        lookup_from_codebook=True,
        force_upcast=True,
    )


def make_vq(cfg: dict):
    from diffusers import VQModel

    for c in cfg["block_out_channels"]:
        assert c % cfg["norm_num_groups"] == 0, "norm_num_groups must divide every block width"
    return VQModel(**cfg)


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------


class Sampler:
    """Deterministic epoch-wise shuffling: the batch of step s depends only on (seed, s)."""

    def __init__(self, indices: np.ndarray, batch: int, seed: int):
        self.indices = indices
        self.batch = batch
        self.seed = seed
        self._perms = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(len(self.indices))}
        return self._perms[epoch]

    def batch_indices(self, step: int) -> np.ndarray:
        n = len(self.indices)
        out = []
        for k in range(step * self.batch, (step + 1) * self.batch):
            out.append(self.indices[self._perm(k // n)[k % n]])
        return np.array(out)


def to_tensor(images_u8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images_u8).permute(0, 3, 1, 2).float().div(255.0).contiguous()


def save_grid(path: Path, rows: list[torch.Tensor]):
    """rows: list of [B,3,H,W] tensors in [0,1]; written as one PNG (one row per tensor)."""
    row_imgs = [torch.cat(list(r.clamp(0, 1)), dim=2) for r in rows]
    grid = torch.cat(row_imgs, dim=1)
    arr = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


# --------------------------------------------------------------------------------------
# Losses / quantisation
# --------------------------------------------------------------------------------------


def edge_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    dxa, dxb = a[..., :, 1:] - a[..., :, :-1], b[..., :, 1:] - b[..., :, :-1]
    dya, dyb = a[..., 1:, :] - a[..., :-1, :], b[..., 1:, :] - b[..., :-1, :]
    return (dxa - dxb).abs().mean() + (dya - dyb).abs().mean()


def recon_loss(rec: torch.Tensor, x: torch.Tensor, edge_w: float) -> tuple[torch.Tensor, dict]:
    l1 = (rec - x).abs().mean()
    l2 = F.mse_loss(rec, x)
    le = edge_l1(rec, x)
    return l1 + l2 + edge_w * le, {"l1": l1.item(), "mse": l2.item(), "edge": le.item()}


def nearest_codes(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """z [M, D], codebook [K, D] -> argmin Euclidean distance (same rule as diffusers' cdist)."""
    d = z.pow(2).sum(1, keepdim=True) - 2 * z @ codebook.t() + codebook.pow(2).sum(1)[None]
    return d.argmin(1)


@torch.no_grad()
def encode_ids(model, x: torch.Tensor) -> torch.Tensor:
    """Exactly the inference path (AmusedImg2ImgPipeline): encode -> quantize -> ids [B,h,w]."""
    lat = model.encode(x).latents
    b, _, h, w = lat.shape
    return model.quantize(lat)[2][2].reshape(b, h, w)


@torch.no_grad()
def decode_ids(model, ids: torch.Tensor) -> torch.Tensor:
    b, h, w = ids.shape
    return model.decode(ids, force_not_quantize=True, shape=(b, h, w, model.config.latent_channels)).sample


@torch.no_grad()
def evaluate(model, images: np.ndarray, idx: np.ndarray, batch: int = 64, tokens: np.ndarray | None = None):
    """Held-out PSNR (mean over images), plus code usage. Uses cached tokens when given."""
    model.eval()
    dev = next(model.parameters()).device  # the images go where the model is (CPU or a GPU)
    ps, used = [], set()
    for i in range(0, len(idx), batch):
        j = idx[i : i + batch]
        x = to_tensor(images[j]).to(dev)
        ids = torch.from_numpy(tokens[j].astype(np.int64)).to(dev) if tokens is not None else encode_ids(model, x)
        used.update(ids.flatten().tolist())
        rec = decode_ids(model, ids).clamp(0, 1)
        ps.append(psnr(rec, x).cpu())
    model.train()
    return float(torch.cat(ps).mean()), len(used)


# --------------------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------------------


def train_stage(args, stage: str):
    out = args.out
    ckpt_path = out / f"ckpt_{stage}.pt"
    final_dir = out / ("stage1" if stage == "vq" else "final")
    log_path = out / f"log_{stage}.txt"
    images, records, heldout = load_dataset()
    train_idx = np.nonzero(~heldout)[0]
    held_idx = np.nonzero(heldout)[0]
    setup_torch(args.seed)

    tokens = None
    if stage == "vq":
        cfg = vq_config(args)
        model = make_vq(cfg)
        params = list(model.parameters())
    else:
        from diffusers import VQModel

        model = VQModel.from_pretrained(str(out / "stage1"))
        cfg = dict(model.config)
        tokens = np.load(out / "tokens.npz")["tokens"]
        for p in model.parameters():
            p.requires_grad_(False)
        params = list(model.post_quant_conv.parameters()) + list(model.decoder.parameters())
        for p in params:
            p.requires_grad_(True)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in params)
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)

    step = 0
    usage = torch.zeros(model.config.num_vq_embeddings)
    if args.resume and ckpt_path.exists():
        ck = load_checkpoint(ckpt_path)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step = ck["step"]
        usage = ck.get("usage", usage)
        set_rng_state(ck["rng"])
        log(f"resumed {stage} from {ckpt_path} at step {step}", log_path)
    elif ckpt_path.exists():
        log(f"note: {ckpt_path} exists but --resume not given; starting from scratch", log_path)

    log(
        f"stage {stage}: params {n_params / 1e6:.3f}M (training {n_train / 1e6:.3f}M), "
        f"batch {args.batch}, steps {args.steps}, lr {args.lr}, config {json.dumps(cfg)}",
        log_path,
    )
    sampler = Sampler(train_idx, args.batch, args.seed + (0 if stage == "vq" else 17))
    prog = Progress(args.steps, step, log_path)
    t_start = time.time()
    last_ckpt = time.time()
    codebook = model.quantize.embedding.weight

    def checkpoint():
        save_checkpoint(
            ckpt_path,
            {"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "usage": usage, "rng": rng_state(), "config": cfg},
        )

    stats_acc = {}
    while step < args.steps:
        g = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
        bidx = sampler.batch_indices(step)
        x = to_tensor(images[bidx])
        lr = cosine_lr(step, args.steps, args.lr, args.warmup)
        for group in opt.param_groups:
            group["lr"] = lr

        if stage == "vq":
            flip = torch.rand(x.shape[0], generator=g) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
            lat = model.encode(x).latents
            b, d, h, w = lat.shape
            z = lat.permute(0, 2, 3, 1).reshape(-1, d)
            if step == 0:
                with torch.no_grad():  # data-dependent codebook init
                    pick = torch.randint(0, z.shape[0], (codebook.shape[0],), generator=g)
                    codebook.copy_(z[pick].detach() + 0.01 * torch.randn(codebook.shape, generator=g))
            ids = nearest_codes(z.detach(), codebook.detach())
            zq = codebook[ids]
            l_cb = F.mse_loss(zq, z.detach())
            l_commit = F.mse_loss(z, zq.detach())
            zq_st = z + (zq - z).detach()
            quant = zq_st.reshape(b, h, w, d).permute(0, 3, 1, 2)
            rec = model.decoder(model.post_quant_conv(quant))
            l_rec, st = recon_loss(rec, x, args.edge_weight)
            loss = l_rec + l_cb + args.beta * l_commit
            st.update({"cb": l_cb.item(), "commit": l_commit.item()})
            with torch.no_grad():
                usage.mul_(0.99).add_(torch.bincount(ids, minlength=codebook.shape[0]).float())
        else:
            ids = torch.from_numpy(tokens[bidx].astype(np.int64))
            with torch.no_grad():
                b, h, w = ids.shape
                quant = model.quantize.get_codebook_entry(ids, (b, h, w, model.config.latent_channels))
            rec = model.decoder(model.post_quant_conv(quant))
            loss, st = recon_loss(rec, x, args.edge_weight)

        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        prog.tick(step)
        for k, v in st.items():
            stats_acc[k] = stats_acc.get(k, 0.0) + v
        stats_acc["n"] = stats_acc.get("n", 0) + 1

        if stage == "vq" and step % args.restart_every == 0 and step < args.steps * 0.9:
            # Re-seed codes that (almost) nobody used recently with random current latents.
            with torch.no_grad():
                dead = torch.nonzero(usage < 0.03).flatten()
                if len(dead):
                    pick = torch.randint(0, z.shape[0], (len(dead),), generator=g)
                    codebook[dead] = z[pick].detach() + 0.01 * torch.randn(len(dead), codebook.shape[1], generator=g)
                    usage[dead] = 1.0
                    log(f"  re-seeded {len(dead)} dead codes", log_path)

        if step % args.log_every == 0 or step == args.steps:
            n = stats_acc.pop("n")
            msg = " ".join(f"{k} {v / n:.4f}" for k, v in stats_acc.items())
            if stage == "vq":
                msg += f" live_codes {(usage >= 0.03).sum().item()}"
            prog.line(step, f"lr {lr:.2e} {msg}")
            stats_acc = {}
        if step % args.eval_every == 0 or step == args.steps:
            p, u = evaluate(model, images, held_idx, tokens=None)
            log(f"  eval step {step}: held-out PSNR {p:.2f} dB, codes used on held-out {u}", log_path)
        if time.time() - last_ckpt > args.ckpt_minutes * 60:
            checkpoint()
            last_ckpt = time.time()
        stop_early_if_asked(args, step, prog.start_step, t_start, checkpoint, log_path)

    checkpoint()
    model.eval()
    p, u = evaluate(model, images, held_idx)
    # Grid: held-out originals (top) and reconstructions (bottom).
    sel = held_idx[np.linspace(0, len(held_idx) - 1, 16).astype(int)]
    x = to_tensor(images[sel])
    rec = decode_ids(model, encode_ids(model, x)).clamp(0, 1)
    save_grid(out / f"recon_{stage}.png", [x, rec])
    model.save_pretrained(str(final_dir), safe_serialization=True)
    write_json(out / f"result_{stage}.json", {"heldout_psnr_db": p, "heldout_codes_used": u, "steps": step})
    log(f"stage {stage} done: held-out PSNR {p:.2f} dB, codes used {u}; saved {final_dir}", log_path)


@torch.no_grad()
def cache_stage(args):
    from diffusers import VQModel

    setup_torch(args.seed)
    out_path = args.out / "tokens.npz"
    stage1_weights = args.out / "stage1" / "diffusion_pytorch_model.safetensors"
    if out_path.exists() and not args.force and out_path.stat().st_mtime >= stage1_weights.stat().st_mtime:
        log(f"{out_path} exists and is newer than the stage-1 weights; nothing to do")
        return
    images, records, heldout = load_dataset()
    model = VQModel.from_pretrained(str(args.out / "stage1")).eval()
    t0 = time.time()
    toks = []
    for i in range(0, len(images), 128):
        toks.append(encode_ids(model, to_tensor(images[i : i + 128])).to(torch.int16).numpy())
        if (i // 128) % 10 == 0:
            log(f"  cache {i + 128}/{len(images)} images, {time.time() - t0:.0f}s")
    toks = np.concatenate(toks)
    np.savez(out_path, tokens=toks, codebook_size=model.config.num_vq_embeddings)
    hist = np.bincount(toks.flatten().astype(np.int64), minlength=model.config.num_vq_embeddings)
    ent = -(hist / hist.sum() * np.log(np.maximum(hist / hist.sum(), 1e-12))).sum()
    log(
        f"wrote {out_path}: tokens {toks.shape}, codes used {(hist > 0).sum()}/{len(hist)}, "
        f"perplexity {math.exp(ent):.1f}, {time.time() - t0:.0f}s"
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", choices=["vq", "cache", "decoder"], required=True)
    ap.add_argument("--out", type=Path, default=RUNS_DIR / "vq")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=None, help="default 1e-3 (vq) / 3e-4 (decoder)")
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--beta", type=float, default=0.25, help="commitment loss weight")
    ap.add_argument("--edge-weight", type=float, default=0.5)
    ap.add_argument("--restart-every", type=int, default=50, help="dead-code re-seeding interval (steps)")
    ap.add_argument("--channels", type=int, nargs="+", default=[32, 64, 128])
    ap.add_argument("--layers-per-block", type=int, default=1)
    ap.add_argument("--latent", type=int, default=8)
    ap.add_argument("--codebook", type=int, default=512)
    ap.add_argument("--groups", type=int, default=16)
    ap.add_argument("--mid-attention", action="store_true")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--ckpt-minutes", type=float, default=5.0)
    ap.add_argument("--max-minutes", type=float, default=0.0, help="stop (with a checkpoint) after this long; 0 = no limit")
    ap.add_argument("--stop-after", type=int, default=0, help="stop (with a checkpoint) after this many steps in this invocation (for testing resume)")
    ap.add_argument("--resume", action="store_true", help="continue from the stage checkpoint if there is one")
    ap.add_argument("--force", action="store_true", help="cache: rebuild even if tokens.npz exists")
    args = ap.parse_args()
    if args.lr is None:
        args.lr = 1e-3 if args.stage == "vq" else 3e-4
    args.out.mkdir(parents=True, exist_ok=True)
    if args.stage == "cache":
        cache_stage(args)
    else:
        train_stage(args, args.stage)


if __name__ == "__main__":
    main()
