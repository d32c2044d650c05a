"""Train a colour-faithful image tokenizer: a diffusers VQModel (64 px -> 16x16 tokens, f = 4)
on data_svg.py's SVG emoji, for the next default model (the "Tokenizer" part of
default-model-v2). A separate script so that train_vq.py, and with it run_all.sh and the
shipped model, stays reproducible; its output folder has train_vq.py's layout (stage1/ =
VQModel.save_pretrained), so `train_vq.py --stage cache` / `--stage decoder --out DIR` and
export.py take it unchanged.

What differs from train_vq.py --stage vq:

  data      data/emoji_svg64.npz (noto, twemoji, fluent; data_svg.py), optionally mixed with
            data.py's data/emoji64.npz (--mix-png; those images have no hue label and get
            the mean sampling weight). Colour-balanced sampling: each training image is drawn
            with probability proportional to 1/sqrt(frequency of its dominant hue), so green
            (4 % of the images) is seen ~2.4x as often as under uniform sampling and orange /
            blue / brown (21-23 %) less often. A fraction --synth-frac of every batch are
            synthetic flat-colour images (1-3 discs / rectangles of random colours on white
            or on a random flat colour; half the colours saturated HSV), so fully saturated
            colours are always seen. The probe palette itself is never drawn (the probe stays
            a held-out measure). Random horizontal flips.
  codebook  k-means initialisation (--kmeans-iters Lloyd iterations on the encoder outputs
            of --kmeans-batches batches). EMA codebook updates (--ema-decay, Laplace-smoothed
            cluster sizes) instead of a codebook loss; the codebook is written into
            quantize.embedding.weight after every step, so the state dict is a plain
            VQModel's. Codes whose EMA hit rate falls below --dead-threshold (hits per step)
            are restarted from random encoder outputs of the current batch every
            --restart-every steps. Logged: live codes, batch perplexity, EMA perplexity.
  loss      train_vq.py's L1 + MSE + 0.5 x image-gradient L1, the commitment loss
            (--beta, straight-through estimator), plus a colour term: L1 between the
            CIELAB values of the 4x4-average-pooled (one token's footprint) reconstruction
            and input, Lab scaled by 1/100 (--colour-weight). Lab makes a chroma error of a
            saturated green or purple cost what it looks like (in sRGB L1 those errors are
            cheap next to luminance), and the pooling makes the term about the flat colour
            of a region, not about edge placement, which the other terms already cover.

Monitoring: every --eval-every steps held-out PSNR (exact inference path, train_vq.py's
evaluate) and codes used on the held-out images; every --probe-every steps
tools/eval/colour_probe.py's disc probe in-process (probe_vq, pixels in [0, 1] as
AmusedPipeline feeds them): mean ΔE00 over its 15-colour palette (the criterion: ≤ 5) and
over the palette + fill_colours.json's 24 most frequent fills, and the worst colours.
Every probe / eval result is appended to OUT/curve_vq2.jsonl. Checkpoints every
--ckpt-minutes (and on --max-minutes / --stop-after), resume with --resume.

Device and time: `--device cuda` trains on a GPU (fp32; the image array and the EMA codebook live
there too, and the losses are read at log time only); `--data-dir` points at another folder
of data_svg.py's files (pack_v2.py unpack writes one). `--budget-minutes M` sets --steps from
the measured speed so that training ends after ~M minutes with its final weights, and
`--finish-minutes F` ends the run at the current step after F minutes (run_device_v2.sh uses
both; --max-minutes instead exits 3 for a later --resume).

Output (OUT = --out, default runs/vq2): stage1/ (VQModel), ckpt_vq2.pt, log_vq2.txt,
curve_vq2.jsonl, recon_vq2.png (held-out originals over reconstructions, then probe discs),
result_vq2.json.

Examples:
  nice -n 19 env OMP_NUM_THREADS=2 python train_vq2.py --steps 6000 --resume
  python train_vq2.py --out runs/smoke/vq2 --steps 8 --channels 16 32 32 --groups 8 \\
      --codebook 64 --kmeans-batches 2 --probe-every 4 --eval-every 4 --log-every 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from common import (
    DATA_DIR,
    RUNS_DIR,
    Progress,
    StepBudget,
    add_budget_args,
    amp_context,
    cosine_lr,
    die,
    load_checkpoint,
    log,
    rng_state,
    save_checkpoint,
    set_rng_state,
    setup_torch,
    stop_early_if_asked,
    write_json,
)
from train_vq import (
    decode_ids,
    edge_l1,
    encode_ids,
    evaluate,
    make_vq,
    nearest_codes,
    save_grid,
    to_tensor,
    vq_config,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))
import colour_probe  # noqa: E402  (tools/eval/colour_probe.py)

# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------


def load_svg_data(mix_png: bool, data_dir: Path = DATA_DIR, size: int = 64):
    """Returns (images uint8 [N,size,size,3], heldout bool [N], weights float64 [N] (0 for
    held-out images), hue names, per-hue train counts, hue ids [N of the SVG set])."""
    z = np.load(data_dir / f"emoji_svg{size}.npz")
    images, heldout, hue = z["images"], z["heldout"].astype(bool), z["hue"].astype(np.int64)
    hues = json.loads((data_dir / "captions_svg.json").read_text(encoding="utf-8"))["hues"]
    counts = np.bincount(hue[~heldout], minlength=len(hues))
    class_w = 1.0 / np.sqrt(np.maximum(counts, 1))
    weights = np.where(heldout, 0.0, class_w[hue])
    if mix_png:
        if size != 64:
            die("--mix-png: data.py's PNG set is 64 px only")
        p = np.load(data_dir / "emoji64.npz")
        ph = p["heldout"].astype(bool)
        images = np.concatenate([images, p["images"]])
        heldout = np.concatenate([heldout, ph])
        weights = np.concatenate([weights, np.where(ph, 0.0, weights[weights > 0].mean())])
    return images, heldout, weights / weights.sum(), hues, counts, hue


def hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Vectorised HSV (all in [0, 1]) -> RGB [..., 3] in [0, 1]."""
    k = torch.stack([(5 + h * 6) % 6, (3 + h * 6) % 6, (1 + h * 6) % 6], -1)
    return v[..., None] - v[..., None] * s[..., None] * (torch.minimum(k, 4 - k).clamp(0, 1))


def random_colours(n: int, g: torch.Generator) -> torch.Tensor:
    """n colours [n, 3]: half uniform in RGB, half saturated HSV (s 0.6-1, v 0.35-1)."""
    uni = torch.rand(n, 3, generator=g)
    sat = hsv_to_rgb(torch.rand(n, generator=g), 0.6 + 0.4 * torch.rand(n, generator=g), 0.35 + 0.65 * torch.rand(n, generator=g))
    pick = torch.rand(n, generator=g) < 0.5
    return torch.where(pick[:, None], sat, uni)


def synthetic_batch(n: int, size: int, g: torch.Generator) -> torch.Tensor:
    """n flat-colour images [n,3,size,size] in [0,1]: white (70 %) or a random flat background
    with 1-3 discs or axis-aligned rectangles of random colours (hard edges, like flat SVG fills)."""
    bg = torch.where((torch.rand(n, generator=g) < 0.7)[:, None], torch.ones(n, 3), random_colours(n, g))
    x = bg[:, :, None, None].expand(n, 3, size, size).clone()
    yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    n_shapes = torch.randint(1, 4, (n,), generator=g)
    for k in range(3):
        col = random_colours(n, g)
        cy, cx = (torch.rand(2, n, generator=g) * 0.6 + 0.2) * size
        r = (torch.rand(n, generator=g) * 0.3 + 0.1) * size
        disc = (yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2 <= r[:, None, None] ** 2
        rect = ((yy[None] - cy[:, None, None]).abs() <= r[:, None, None]) & ((xx[None] - cx[:, None, None]).abs() <= 0.8 * r[:, None, None])
        m = torch.where((torch.rand(n, generator=g) < 0.6)[:, None, None], disc, rect) & (k < n_shapes)[:, None, None]
        x = torch.where(m[:, None], col[:, :, None, None], x)
    return x


def sample_batch(images_dev: torch.Tensor, w_t: torch.Tensor, counts: tuple[int, int], seed: int, step: int):
    """The training batch of `step`, the same for the same (seed, step): counts = (real, synthetic)
    images, the real ones drawn with replacement by the sampling weights w_t from images_dev
    (uint8 [N,S,S,3] on the model's device), then synthetic flat colours at S px, random flips.
    Returns (x [B,3,S,S] in [0, 1] on that device, the generator, for later draws of the step)."""
    n_real, n_synth = counts
    device, size = images_dev.device, images_dev.shape[1]
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    idx = torch.multinomial(w_t, n_real, replacement=True, generator=g).numpy()
    # = to_tensor(images[np.sort(idx)]), gathered on the model's device
    x = images_dev[torch.from_numpy(np.sort(idx)).to(device)].permute(0, 3, 1, 2).float().div(255.0).contiguous()
    if n_synth:
        x = torch.cat([x, synthetic_batch(n_synth, size, g).to(device)])
    flip = (torch.rand(x.shape[0], generator=g) < 0.5).to(device)
    return torch.where(flip[:, None, None, None], x.flip(3), x), g


def append_curve(path: Path, step: int, kind: str, **kv):
    """One line of OUT/curve_*.jsonl: {"step", "kind", "time", **kv}."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"step": step, "kind": kind, "time": time.time(), **kv}) + "\n")


# --------------------------------------------------------------------------------------
# Colour loss
# --------------------------------------------------------------------------------------

_RGB2XYZ = torch.tensor([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]])
_WHITE = torch.tensor([0.95047, 1.0, 1.08883])


def srgb_to_lab_t(x: torch.Tensor) -> torch.Tensor:
    """Differentiable sRGB [B,3,H,W] in [0,1] -> CIELAB (D65) / 100 (colour_probe.srgb_to_lab's
    formulas; inputs clamped to [0, 1], both branches kept finite so gradients are too)."""
    c = x.clamp(0, 1)
    lin = torch.where(c <= 0.04045, c / 12.92, ((c.clamp_min(0.04045) + 0.055) / 1.055) ** 2.4)
    xyz = torch.einsum("ij,bjhw->bihw", _RGB2XYZ.to(x), lin) / _WHITE.to(x)[None, :, None, None]
    eps = (6 / 29) ** 3
    f = torch.where(xyz > eps, xyz.clamp_min(eps) ** (1 / 3), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    L = 116 * f[:, 1] - 16
    a = 500 * (f[:, 0] - f[:, 1])
    b = 200 * (f[:, 1] - f[:, 2])
    return torch.stack([L, a, b], 1) / 100.0


def colour_loss(rec: torch.Tensor, x: torch.Tensor, pool: int = 4) -> torch.Tensor:
    """L1 in Lab/100 between the pool x pool average-pooled images (low-pass colour error)."""
    return (srgb_to_lab_t(F.avg_pool2d(rec, pool)) - srgb_to_lab_t(F.avg_pool2d(x, pool))).abs().mean()


def recon_loss(rec: torch.Tensor, x: torch.Tensor, args):
    """Both stages' reconstruction loss: L1 + MSE + --edge-weight x image-gradient L1 +
    --colour-weight x colour_loss. Returns (loss, (l1, mse, edge, lab))."""
    l1 = (rec - x).abs().mean()
    l2 = F.mse_loss(rec, x)
    le = edge_l1(rec, x)
    lc = colour_loss(rec, x) if args.colour_weight else torch.zeros(())
    return l1 + l2 + args.edge_weight * le + args.colour_weight * lc, (l1, l2, le, lc)


# --------------------------------------------------------------------------------------
# EMA codebook
# --------------------------------------------------------------------------------------


def perplexity(counts: torch.Tensor) -> float:
    p = counts / counts.sum().clamp_min(1e-12)
    return float(torch.exp(-(p * p.clamp_min(1e-12).log()).sum()))


@torch.no_grad()
def kmeans(z: torch.Tensor, k: int, iters: int, g: torch.Generator) -> torch.Tensor:
    """Lloyd's k-means on z [M, D] from k random distinct points; empty clusters re-drawn."""
    c = z[torch.randperm(z.shape[0], generator=g)[:k]].clone()
    for _ in range(iters):
        ids = nearest_codes(z, c)
        cnt = torch.bincount(ids, minlength=k).float()
        s = torch.zeros_like(c).index_add_(0, ids, z)
        empty = cnt == 0
        c = torch.where(empty[:, None], z[torch.randint(0, z.shape[0], (k,), generator=g)], s / cnt.clamp_min(1)[:, None])
    return c


class EMACodebook:
    """EMA (exponential moving average) vector-quantiser state kept beside the VQModel.

    cluster_size [K] and embed_sum [K, D] are EMAs of the per-step hit counts and of the sum
    of the encoder outputs assigned to each code; the code is their (Laplace-smoothed) ratio
    and is copied into the model's quantize.embedding.weight after every update, so the
    model's state dict is a standard VQModel one."""

    def __init__(self, weight: torch.nn.Parameter, decay: float, eps: float = 1e-5):
        self.weight = weight
        self.decay = decay
        self.eps = eps
        k, d = weight.shape
        self.cluster_size = torch.zeros(k, device=weight.device)
        self.embed_sum = weight.detach().clone()

    def reset(self, codes: torch.Tensor, hits: float = 1.0):
        self.weight.data.copy_(codes)
        self.cluster_size.fill_(hits)
        self.embed_sum = codes.clone() * hits

    @torch.no_grad()
    def update(self, z: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        k = self.weight.shape[0]
        counts = torch.bincount(ids, minlength=k).float()
        sums = torch.zeros_like(self.embed_sum).index_add_(0, ids, z)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (n + k * self.eps) * n
        self.weight.data.copy_(self.embed_sum / smoothed[:, None])
        return counts

    @torch.no_grad()
    def restart_dead(self, z: torch.Tensor, threshold: float, g: torch.Generator) -> int:
        dead = torch.nonzero(self.cluster_size < threshold).flatten()
        if len(dead):
            pick = z[torch.randint(0, z.shape[0], (len(dead),), generator=g)]
            pick = pick + 0.01 * pick.std() * torch.randn(pick.shape, generator=g).to(pick.device)
            hits = max(threshold * 2, 1.0)  # a fresh code gets a few steps to attract vectors
            self.weight.data[dead] = pick
            self.cluster_size[dead] = hits
            self.embed_sum[dead] = pick * hits
        return len(dead)

    def state(self) -> dict:
        return {"cluster_size": self.cluster_size, "embed_sum": self.embed_sum}

    def load(self, st: dict):
        self.cluster_size = st["cluster_size"].clone().to(self.weight.device)
        self.embed_sum = st["embed_sum"].clone().to(self.weight.device)


# --------------------------------------------------------------------------------------
# Probe
# --------------------------------------------------------------------------------------


def probe_palettes(fills_path: Path, top: int):
    base = list(colour_probe.PALETTE)
    fills = []
    if fills_path.exists():
        fl = json.loads(fills_path.read_text())["all"]["fills"][:top]
        fills = [(f"svg fill #{x['rank']} {x['hex']}", tuple(x["rgb"])) for x in fl]
    return base, fills


def run_probe(model, base, fills, size: int = 64) -> dict:
    res = colour_probe.probe_vq(model, base + fills, size=size, value_range="01")
    rows = res["rows"]
    base_rows = rows[: len(base)]
    worst = sorted(base_rows, key=lambda r: -r["mean_de00"])[:3]
    return {
        "probe_de00": float(np.mean([r["mean_de00"] for r in base_rows])),
        "probe_fills_de00": res["mean_de00"],
        "worst": [(r["colour"], round(r["mean_de00"], 1), r["decoded_mean_rgb"]) for r in worst],
    }


def measure_sizes(model, images: dict, idx: np.ndarray, base, fills) -> dict:
    """{"<size>": {"heldout_psnr_db", **run_probe}} for each size of `images` ({size: uint8
    [N,size,size,3]}; PSNR over the images `idx`, the probe's discs at that size)."""
    return {str(size): {"heldout_psnr_db": evaluate(model, imgs, idx)[0], **run_probe(model, base, fills, size)}
            for size, imgs in images.items()}


# --------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------


def train(args):
    out = args.out
    ckpt_path, final_dir, log_path = out / "ckpt_vq2.pt", out / "stage1", out / "log_vq2.txt"
    curve_path = out / "curve_vq2.jsonl"
    setup_torch(args.seed)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes; matmuls stay fp32 (nearest-code search)
    images, heldout, weights, hues, counts, hue_arr = load_svg_data(args.mix_png, args.data_dir)
    # The image array where the model is (128 MB on a GPU); batches are gathered there.
    images_dev = torch.from_numpy(images).to(device)
    held_idx = np.nonzero(heldout)[0]
    if args.eval_n:
        held_idx = held_idx[np.linspace(0, len(held_idx) - 1, min(args.eval_n, len(held_idx))).astype(int)]
    w_t = torch.from_numpy(weights)
    base_pal, fill_pal = probe_palettes(args.fills or args.data_dir / "fill_colours.json", args.fill_top)

    if args.init_from:  # the architecture is the initial VQ's
        ic = json.loads((args.init_from / "config.json").read_text(encoding="utf-8"))
        args.channels, args.codebook, args.latent = ic["block_out_channels"], ic["num_vq_embeddings"], ic["latent_channels"]
        args.groups, args.layers_per_block = ic["norm_num_groups"], ic["layers_per_block"]
        args.mid_attention = ic.get("mid_block_add_attention", False)
    cfg = vq_config(args)
    model = make_vq(cfg).to(device)
    codebook = model.quantize.embedding.weight
    codebook.requires_grad_(False)  # updated by EMA, not by the optimiser
    ema = EMACodebook(codebook, args.ema_decay)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
    amp = "bf16" if args.bf16 else None
    n_synth = int(round(args.batch * args.synth_frac))
    n_real = args.batch - n_synth

    step = 0
    if args.init_from and not (args.resume and ckpt_path.exists()):
        # Fine-tuning from a trained VQ (a warm restart: its weights and codebook, a fresh
        # optimiser and schedule, no k-means), with its architecture (set above).
        from diffusers import VQModel

        init = VQModel.from_pretrained(str(args.init_from))
        got = {k: init.config[k] for k in cfg}
        if json.loads(json.dumps(got)) != json.loads(json.dumps(cfg)):
            die(f"--init-from {args.init_from}: its config {got} is not this run's {cfg}")
        model.load_state_dict(init.state_dict())
        # Every code starts with the EMA hit count of a uniformly used codebook at this batch
        # (tokens per step / codes, accumulated over the EMA's horizon), so the first batches
        # move the codes as little as a running EMA would, not as far as a fresh one.
        tokens_per_step = args.batch * (64 // 2 ** (len(args.channels) - 1)) ** 2
        ema.reset(codebook.detach().clone(), hits=tokens_per_step / args.codebook / (1 - args.ema_decay))
        log(f"initialised from {args.init_from} (warm restart: fresh optimiser, no k-means)", log_path)
    if args.resume and ckpt_path.exists():
        ck = load_checkpoint(ckpt_path)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        ema.load(ck["ema"])
        step = ck["step"]
        set_rng_state(ck["rng"])
        log(f"resumed vq2 from {ckpt_path} at step {step}", log_path)
    elif ckpt_path.exists():
        log(f"note: {ckpt_path} exists but --resume not given; starting from scratch", log_path)
    model.train()

    eff_share = np.bincount(hue_arr, weights=weights[: len(hue_arr)], minlength=len(hues))
    eff_share = eff_share / eff_share.sum()
    log(
        f"vq2: {len(images)} images ({(~heldout).sum()} train, {len(held_idx)} held-out evaluated), "
        f"batch {args.batch} = {n_real} real + {n_synth} synthetic, params {sum(p.numel() for p in model.parameters()) / 1e6:.3f}M, "
        f"codebook {args.codebook} x {args.latent}, steps {args.steps}, lr {args.lr}, colour weight {args.colour_weight}, "
        f"device {device}",
        log_path,
    )
    log(
        "  hue share of real samples (uniform -> balanced): "
        + ", ".join(f"{h} {c / counts.sum() * 100:.1f}->{s * 100:.1f}%" for h, c, s in zip(hues, counts, eff_share)),
        log_path,
    )
    log(f"  config {json.dumps(cfg)}", log_path)

    def batch_for(step: int):
        return sample_batch(images_dev, w_t, (n_real, n_synth), args.seed, step)

    def encode_flat(x):
        with amp_context(amp, device):
            lat = model.encode(x).latents.float()  # the code search, EMA and losses stay fp32
        b, d, h, w = lat.shape
        return lat, lat.permute(0, 2, 3, 1).reshape(-1, d)

    if step == 0 and not args.init_from:  # k-means initialisation of the codebook from encoder outputs
        t0 = time.time()
        with torch.no_grad():
            zs = torch.cat([encode_flat(batch_for(-1 - i)[0])[1] for i in range(args.kmeans_batches)])
            g = torch.Generator().manual_seed(args.seed)
            ema.reset(kmeans(zs, args.codebook, args.kmeans_iters, g))
        log(f"  k-means init: {args.codebook} codes from {zs.shape[0]} encoder outputs, {args.kmeans_iters} iterations, {time.time() - t0:.1f}s", log_path)

    def checkpoint():
        save_checkpoint(ckpt_path, {"model": model.state_dict(), "opt": opt.state_dict(), "ema": ema.state(), "step": step, "rng": rng_state(), "config": cfg})

    def record(kind: str, **kv):
        append_curve(curve_path, step, kind, **kv)

    prog = Progress(args.steps, step, log_path)
    t_start = last_ckpt = time.time()
    budget = StepBudget(args, prog, device, log_path, t_start)
    acc: dict = {}
    batch_counts = torch.zeros(args.codebook, device=device)
    while step < args.steps:
        x, g = batch_for(step)
        lr = cosine_lr(step, args.steps, args.lr, args.warmup)
        for group in opt.param_groups:
            group["lr"] = lr
        lat, z = encode_flat(x)
        b, d, h, w = lat.shape
        ids = nearest_codes(z.detach(), codebook)
        zq = codebook[ids]
        l_commit = F.mse_loss(z, zq)
        quant = (z + (zq - z).detach()).reshape(b, h, w, d).permute(0, 3, 1, 2)
        with amp_context(amp, device):
            rec = model.decoder(model.post_quant_conv(quant)).float()
        loss, (l1, l2, le, lc) = recon_loss(rec, x, args)
        loss = loss + args.beta * l_commit
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        batch_counts += ema.update(z.detach(), ids)
        step += 1
        prog.tick(step)
        budget.after_step(step)
        for k, v in {"l1": l1, "mse": l2, "edge": le, "lab": lc, "commit": l_commit}.items():
            # summed in float64 on the model's device (no GPU sync per step), read at log time
            acc[k] = acc.get(k, 0.0) + v.detach().double()
        acc["n"] = acc.get("n", 0) + 1

        if step % args.restart_every == 0 and step < args.steps * 0.9:
            nd = ema.restart_dead(z.detach(), args.dead_threshold, g)
            if nd:
                log(f"  restarted {nd} dead codes", log_path)
        if step % args.log_every == 0 or step == args.steps:
            n = acc.pop("n")
            live = int((ema.cluster_size >= args.dead_threshold).sum())
            acc = {k: float(v) for k, v in acc.items()}
            msg = " ".join(f"{k} {v / n:.4f}" for k, v in acc.items())
            prog.line(step, f"lr {lr:.2e} {msg} live {live}/{args.codebook} ppl_batch {perplexity(batch_counts):.0f} ppl_ema {perplexity(ema.cluster_size):.0f}")
            record("train", **{k: v / n for k, v in acc.items()}, live=live, ppl_batch=perplexity(batch_counts), ppl_ema=perplexity(ema.cluster_size))
            acc, batch_counts = {}, torch.zeros(args.codebook, device=device)
        if args.probe_every and (step % args.probe_every == 0 or step == args.steps):
            pr = run_probe(model, base_pal, fill_pal)
            log(f"  probe step {step}: mean ΔE00 {pr['probe_de00']:.2f} (15 colours; ≤ 5 wanted), {pr['probe_fills_de00']:.2f} with {len(fill_pal)} fills; worst {pr['worst']}", log_path)
            record("probe", **pr)
        if step % args.eval_every == 0 or step == args.steps:
            p, u = evaluate(model, images, held_idx)
            log(f"  eval step {step}: held-out PSNR {p:.2f} dB (≥ 28 wanted), codes used on held-out {u}", log_path)
            record("eval", heldout_psnr_db=p, heldout_codes_used=u)
        if time.time() - last_ckpt > args.ckpt_minutes * 60:
            checkpoint()
            last_ckpt = time.time()
        stop_early_if_asked(args, step, prog.start_step, t_start, checkpoint, log_path)

    checkpoint()
    model.eval()
    model.save_pretrained(str(final_dir), safe_serialization=True)  # first: the weights survive a failing report
    p, u = evaluate(model, images, np.nonzero(heldout)[0])
    pr = run_probe(model, base_pal, fill_pal)
    sel = held_idx[np.linspace(0, len(held_idx) - 1, 16).astype(int)]
    xs = to_tensor(images[sel])
    discs = torch.from_numpy(np.stack([colour_probe.disc_image(c, 64)[0] for _, c in base_pal[:15]] + [np.full((64, 64, 3), 255, np.uint8)])).permute(0, 3, 1, 2).float() / 255
    roundtrip = lambda t: decode_ids(model, encode_ids(model, t.to(device))).clamp(0, 1).cpu()  # noqa: E731
    save_grid(out / "recon_vq2.png", [xs, roundtrip(xs), discs, roundtrip(discs)])
    write_json(out / "result_vq2.json", {"heldout_psnr_db": p, "heldout_codes_used": u, "steps": step, "batch": args.batch,
                                         "minutes": (time.time() - t_start) / 60, "device": str(device), **pr})
    log(f"vq2 done: held-out PSNR {p:.2f} dB, codes used {u}, probe ΔE00 {pr['probe_de00']:.2f}; saved {final_dir}", log_path)


def train_decoder(args):
    """--decoder-only: the decoder stage. From --init-from's VQ (a finished stage1/), the
    encoder, quant_conv and codebook frozen, so every token id (and every transformer trained
    on them) stays valid; post_quant_conv + decoder fine-tuned on the exact inference path
    (ids -> codebook -> post_quant_conv -> decoder) with stage 1's reconstruction and colour
    losses, at every size in --sizes in turn (one size per step; batch scaled by
    (64 / size)^2 so a step costs the same pixels), since one decoder serves both stages of a
    two-stage model (64 px base, 128 px super-resolution). Same data, hue-balanced sampling
    and synthetic flat colours as stage 1. Output: OUT/decoder/ (VQModel), log_decoder.txt,
    curve_decoder.jsonl, result_decoder.json (held-out PSNR and colour probe per size,
    before and after)."""
    from diffusers import VQModel

    out = args.out
    ckpt_path, final_dir, log_path = out / "ckpt_decoder.pt", out / "decoder", out / "log_decoder.txt"
    curve_path = out / "curve_decoder.jsonl"
    if not args.init_from:
        die("--decoder-only needs --init-from (the finished VQ whose decoder is fine-tuned)")
    setup_torch(args.seed)
    device = torch.device(args.device)
    data = {}
    for size in args.sizes:
        images, heldout, weights, *_ = load_svg_data(False, args.data_dir, size)
        data[size] = (images, torch.from_numpy(images).to(device))
    held_idx = np.nonzero(heldout)[0]
    if args.eval_n:
        held_idx = held_idx[np.linspace(0, len(held_idx) - 1, min(args.eval_n, len(held_idx))).astype(int)]
    w_t = torch.from_numpy(weights)
    base_pal, fill_pal = probe_palettes(args.fills or args.data_dir / "fill_colours.json", args.fill_top)
    model = VQModel.from_pretrained(str(args.init_from)).float().to(device)
    frozen = [model.encoder, model.quant_conv, model.quantize]
    for m in frozen:
        m.requires_grad_(False)
    params = list(model.post_quant_conv.parameters()) + list(model.decoder.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
    amp = "bf16" if args.bf16 else None
    codebook = model.quantize.embedding.weight

    def measure() -> dict:
        return measure_sizes(model, {size: d[0] for size, d in data.items()}, held_idx, base_pal, fill_pal)

    step = 0
    if args.resume and ckpt_path.exists():
        ck = load_checkpoint(ckpt_path)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step, before = ck["step"], ck["before"]
        set_rng_state(ck["rng"])
        log(f"resumed the decoder stage from {ckpt_path} at step {step}", log_path)
    else:
        before = measure()
        log(f"decoder stage from {args.init_from}: before: {json.dumps(before)}", log_path)
    log(f"decoder stage: sizes {args.sizes}, batch {args.batch} at 64 px, steps {args.steps}, lr {args.lr}, "
        f"colour weight {args.colour_weight}, trained params {sum(p.numel() for p in params) / 1e6:.3f}M, device {device}", log_path)
    for m in frozen:
        m.eval()

    def batch_for(step: int):
        size = args.sizes[step % len(args.sizes)]
        n = max(2, round(args.batch * (64 / size) ** 2))
        n_synth = int(round(n * args.synth_frac))
        return sample_batch(data[size][1], w_t, (n - n_synth, n_synth), args.seed, step)[0], size

    def checkpoint():
        save_checkpoint(ckpt_path, {"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "rng": rng_state(), "before": before})

    def record(kind: str, **kv):
        append_curve(curve_path, step, kind, **kv)

    prog = Progress(args.steps, step, log_path)
    t_start = last_ckpt = time.time()
    budget = StepBudget(args, prog, device, log_path, t_start)
    acc: dict = {}
    model.decoder.train()
    model.post_quant_conv.train()
    while step < args.steps:
        x, size = batch_for(step)
        lr = cosine_lr(step, args.steps, args.lr, args.warmup)
        for group in opt.param_groups:
            group["lr"] = lr
        with torch.no_grad():
            with amp_context(amp, device):
                lat = model.encode(x).latents.float()
            b, d, h, w = lat.shape
            ids = nearest_codes(lat.permute(0, 2, 3, 1).reshape(-1, d), codebook)
            quant = codebook[ids].reshape(b, h, w, d).permute(0, 3, 1, 2)
        with amp_context(amp, device):
            rec = model.decoder(model.post_quant_conv(quant)).float()
        loss, (l1, _, _, lc) = recon_loss(rec, x, args)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        prog.tick(step)
        budget.after_step(step)
        for k, v in {f"l1_{size}": l1, f"lab_{size}": lc}.items():
            acc[k] = acc.get(k, 0.0) + v.detach().double()
            acc["n_" + k] = acc.get("n_" + k, 0) + 1
        if step % args.log_every == 0 or step == args.steps:
            means = {k: float(v) / acc["n_" + k] for k, v in acc.items() if not k.startswith("n_")}
            prog.line(step, f"lr {lr:.2e} " + " ".join(f"{k} {v:.4f}" for k, v in sorted(means.items())))
            record("train", **means)
            acc = {}
        if step % args.eval_every == 0 or step == args.steps:
            m = measure()
            log(f"  eval step {step}: " + "; ".join(
                f"{s} px PSNR {v['heldout_psnr_db']:.2f} dB, probe ΔE00 {v['probe_de00']:.2f} / {v['probe_fills_de00']:.2f} with fills"
                for s, v in m.items()), log_path)
            record("eval", **m)
        if time.time() - last_ckpt > args.ckpt_minutes * 60:
            checkpoint()
            last_ckpt = time.time()
        stop_early_if_asked(args, step, prog.start_step, t_start, checkpoint, log_path)

    checkpoint()
    model.eval()
    model.save_pretrained(str(final_dir), safe_serialization=True)
    after = measure()
    write_json(out / "result_decoder.json", {"init_from": str(args.init_from), "steps": step, "batch": args.batch,
                                             "sizes": args.sizes, "minutes": (time.time() - t_start) / 60,
                                             "device": str(device), "before": before, "after": after})
    log(f"decoder stage done: {json.dumps(after)}; saved {final_dir}", log_path)


def keep(args):
    """--keep DIR: the finished OUT/stage1 as the fp16 folder that is committed to git (project
    machines do not keep runs/ from one session to the next). DIR/stage1 holds the VQModel with
    fp16 weights (diffusers loads them as fp32 by default; export.py writes fp16 anyway), and
    DIR/result_vq2.json the held-out PSNR and colour probe measured on those fp16 weights, with
    the run's steps, batch and minutes; the run's log, curve and picture are copied beside.
    With --decoder-only, keep_decoder() instead."""
    import shutil

    from diffusers import VQModel

    src = args.out / "stage1"
    if not (src / "config.json").exists():
        die(f"--keep: {src} has no finished VQ (config.json); train to the end first")
    images, heldout, *_ = load_svg_data(False, args.data_dir)
    dest = args.keep
    dest.mkdir(parents=True, exist_ok=True)
    model = VQModel.from_pretrained(str(src)).half()
    model.save_pretrained(str(dest / "stage1"), safe_serialization=True)
    model = model.float().eval()  # the fp16 weights, widened: what is measured is what was saved
    p, u = evaluate(model, images, np.nonzero(heldout)[0])
    pr = run_probe(model, *probe_palettes(args.fills or args.data_dir / "fill_colours.json", args.fill_top))
    run = json.loads((args.out / "result_vq2.json").read_text(encoding="utf-8"))
    write_json(dest / "result_vq2.json", {**run, "heldout_psnr_db": p, "heldout_codes_used": u, **pr, "weights": "fp16",
                                          "fp32_heldout_psnr_db": run["heldout_psnr_db"], "fp32_probe_de00": run["probe_de00"]})
    for name in ("log_vq2.txt", "curve_vq2.jsonl", "recon_vq2.png"):
        if (args.out / name).exists():
            shutil.copy(args.out / name, dest / name)
    log(f"kept {src} as fp16 in {dest}: held-out PSNR {p:.2f} dB (fp32 {run['heldout_psnr_db']:.2f}), "
        f"probe ΔE00 {pr['probe_de00']:.2f} (fp32 {run['probe_de00']:.2f})")


def keep_decoder(args):
    """--keep DIR --decoder-only: keep() for the decoder stage. OUT/decoder as DIR/decoder (fp16), and
    DIR/result_decoder.json: held-out PSNR and probe per size re-measured on the fp16 weights, the
    run's before and fp32 figures kept."""
    import shutil

    from diffusers import VQModel

    src = args.out / "decoder"
    if not (src / "config.json").exists():
        die(f"--keep: {src} has no finished decoder stage (config.json); train to the end first")
    dest = args.keep
    dest.mkdir(parents=True, exist_ok=True)
    model = VQModel.from_pretrained(str(src)).half()
    model.save_pretrained(str(dest / "decoder"), safe_serialization=True)
    model = model.float().eval()  # the fp16 weights, widened: what is measured is what was saved
    base_pal, fill_pal = probe_palettes(args.fills or args.data_dir / "fill_colours.json", args.fill_top)
    run = json.loads((args.out / "result_decoder.json").read_text(encoding="utf-8"))
    data = {size: load_svg_data(False, args.data_dir, size)[:2] for size in run["sizes"]}
    heldout = next(iter(data.values()))[1]  # the same images at every size
    after = measure_sizes(model, {size: d[0] for size, d in data.items()}, np.nonzero(heldout)[0], base_pal, fill_pal)
    write_json(dest / "result_decoder.json", {**run, "after": after, "weights": "fp16", "fp32_after": run["after"]})
    for name in ("log_decoder.txt", "curve_decoder.jsonl"):
        if (args.out / name).exists():
            shutil.copy(args.out / name, dest / name)
    log(f"kept {src} as fp16 in {dest}: " + "; ".join(
        f"{s} px PSNR {v['heldout_psnr_db']:.2f} dB, probe ΔE00 {v['probe_de00']:.2f}" for s, v in after.items()))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=RUNS_DIR / "vq2")
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--beta", type=float, default=0.25, help="commitment loss weight")
    ap.add_argument("--edge-weight", type=float, default=0.5)
    ap.add_argument("--colour-weight", type=float, default=1.0, help="weight of the pooled Lab/100 L1 term (0 = off)")
    ap.add_argument("--synth-frac", type=float, default=0.125, help="share of each batch that is synthetic flat colour")
    ap.add_argument("--mix-png", action="store_true", help="also sample data.py's emoji64.npz images")
    ap.add_argument("--ema-decay", type=float, default=0.99)
    ap.add_argument("--dead-threshold", type=float, default=0.03, help="EMA hits per step below which a code is dead")
    ap.add_argument("--restart-every", type=int, default=50)
    ap.add_argument("--kmeans-batches", type=int, default=16)
    ap.add_argument("--kmeans-iters", type=int, default=15)
    ap.add_argument("--channels", type=int, nargs="+", default=[32, 64, 128])
    ap.add_argument("--layers-per-block", type=int, default=1)
    ap.add_argument("--latent", type=int, default=8)
    ap.add_argument("--codebook", type=int, default=1024)
    ap.add_argument("--groups", type=int, default=16)
    ap.add_argument("--mid-attention", action="store_true")
    ap.add_argument("--data-dir", type=Path, default=DATA_DIR, help="folder with emoji_svg64.npz and captions_svg.json (data_svg.py)")
    ap.add_argument("--fills", type=Path, default=None, help="fill_colours.json for the probe (default DATA_DIR/fill_colours.json)")
    ap.add_argument("--fill-top", type=int, default=24)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--eval-n", type=int, default=0, help="evaluate on this many held-out images during training (0 = all 449); the final result uses all")
    ap.add_argument("--probe-every", type=int, default=250, help="colour probe every N steps (0 = only at the end)")
    ap.add_argument("--ckpt-minutes", type=float, default=5.0)
    ap.add_argument("--max-minutes", type=float, default=0.0)
    ap.add_argument("--stop-after", type=int, default=0)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--init-from", type=Path, default=None,
                    help="start from this VQModel folder (a train_vq2.py stage1/): its architecture, weights and codebook; "
                         "a fresh optimiser and schedule (use a warm-up of ~100 steps)")
    ap.add_argument("--device", default="cpu", help="torch device: cpu or cuda")
    ap.add_argument("--bf16", action="store_true",
                    help="bf16 autocast for the encoder and decoder convolutions (CUDA, or a CPU with AVX-512 BF16 / AMX); "
                         "the nearest-code search, EMA codebook, losses and evaluation stay fp32")
    ap.add_argument("--keep", type=Path, default=None,
                    help="do not train: write OUT's finished VQ with fp16 weights, re-measured, into this folder (see keep())")
    ap.add_argument("--decoder-only", action="store_true",
                    help="the decoder stage (train_decoder): fine-tune --init-from's post_quant_conv + decoder, "
                         "encoder and codebook frozen (token ids unchanged); output OUT/decoder/")
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128],
                    help="--decoder-only: image sizes trained in turn (data_svg.py's emoji_svg<size>.npz)")
    add_budget_args(ap)
    args = ap.parse_args()
    if args.keep:
        return keep_decoder(args) if args.decoder_only else keep(args)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.decoder_only:
        return train_decoder(args)
    train(args)


if __name__ == "__main__":
    main()
