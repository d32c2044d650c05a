"""Train the text encoder (CLIPTextModelWithProjection) and the token transformer
(UVit2DModel) together with aMUSEd's masked-token objective, on the cached VQ tokens.

Per sample:
  * caption: emoji name (sometimes + short name / style word); replaced by "" with
    probability --caption-dropout (10 %) so classifier-free guidance works;
  * masking ratio r = cos(pi/2 * u), u ~ U(0,1); ceil(r * 256) random positions (>= 1) are
    corrupted. With probability --paella (20 %) the corrupted positions get random codebook
    tokens instead of [MASK] (Paella-style), and the loss then covers every position (the
    model has to tell noise from image), so a renoise sampler also works. Otherwise the loss
    is cross-entropy over the masked positions only;
  * conditioning exactly as AmusedPipeline does it: pooled = text_embeds (projection of the
    final-layer EOS state), encoder_hidden_states = hidden_states[-2], micro_conds
    [64, 64, 0, 0, 6].

AdamW, linear warm-up + cosine decay, grad clip 1.0, EMA of the weights (the EMA weights
are what gets exported). Logs training loss/accuracy and held-out token accuracy; saves a
checkpoint (models, EMA, optimiser, step, RNG) every few minutes; --resume continues.

Runs on the CPU by default; `--device cuda --bf16` trains on a GPU (see README.md: that is how
the shipped model was trained), `--init-from DIR` starts from a finished run's weights.

Token cache (--tokens): train_vq.py's tokens.npz (int16 `tokens` [N,16,16] + codebook_size;
captions and held-out flags from --data-dir's captions.json), or any npz with the grid under
--tokens-key that carries its own records: train_super_res.py's sr_tokens.npz (`--tokens-key lo`:
the 64 px SVG set's 16x16 grids, with records_json and heldout, so no captions file is needed).

Output: runs/transformer/final/{text_encoder,transformer}/ (save_pretrained, EMA; fp32, or
fp16 with --save-fp16).

Example: python train_transformer.py --steps 2000 --resume
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from common import (
    DATA_DIR,
    MAX_LEN,
    MICRO_CONDS,
    RUNS_DIR,
    Prefetcher,
    Progress,
    StepBudget,
    add_budget_args,
    amp_context,
    cosine_lr,
    eval_line,
    halve_batch_after_oom,
    load_checkpoint,
    load_records,
    log,
    rng_state,
    sample_caption,
    save_checkpoint,
    set_rng_state,
    setup_torch,
    stop_early_if_asked,
    write_json,
)

# --------------------------------------------------------------------------------------
# Model configs
# --------------------------------------------------------------------------------------


def text_config(args, tokenizer) -> dict:
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=args.text_hidden,
        intermediate_size=args.text_hidden * 4,
        num_hidden_layers=args.text_layers,
        num_attention_heads=args.text_heads,
        max_position_embeddings=MAX_LEN,
        projection_dim=args.text_proj,
        hidden_act="quick_gelu",
        attention_dropout=0.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
    )


def uvit_config(args, codebook_size: int, token_hw: int) -> dict:
    vocab = ((codebook_size + 1 + 7) // 8) * 8  # codebook + [MASK], rounded up to 8
    cfg = dict(
        hidden_size=args.hidden,
        use_bias=False,
        hidden_dropout=0.0,
        cond_embed_dim=args.text_proj,
        micro_cond_encode_dim=args.micro_dim,
        micro_cond_embed_dim=5 * args.micro_dim,
        encoder_hidden_size=args.text_hidden,
        vocab_size=vocab,
        codebook_size=codebook_size,
        in_channels=args.in_channels,
        block_out_channels=args.block_channels,
        num_res_blocks=1,
        downsample=args.downsample,
        upsample=args.downsample,
        block_num_heads=args.block_heads,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        attention_dropout=0.0,
        intermediate_size=args.intermediate,
        layer_norm_eps=1e-6,
        ln_elementwise_affine=True,
        sample_size=token_hw,
    )
    assert cfg["block_out_channels"] % cfg["block_num_heads"] == 0
    assert cfg["hidden_size"] % cfg["num_attention_heads"] == 0
    assert cfg["vocab_size"] > cfg["codebook_size"]
    return cfg


def make_models(tcfg: dict, ucfg: dict, seed: int):
    from diffusers import UVit2DModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    te = CLIPTextModelWithProjection(CLIPTextConfig(**tcfg))
    tr = UVit2DModel(**ucfg)
    return te, tr


def uvit_flops(tr, text_hidden: int, text_proj: int, token_hw: int) -> int:
    """FLOPs (2 x multiply-adds, as torch's FlopCounterMode counts) of one conditional
    transformer forward for one image."""
    from torch.utils.flop_counter import FlopCounterMode

    ids = torch.zeros(1, token_hw, token_hw, dtype=torch.long)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        tr(ids, torch.zeros(1, MAX_LEN, text_hidden), torch.zeros(1, text_proj), torch.tensor([MICRO_CONDS]))
    return fc.get_total_flops()


# --------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------


class Sampler:
    """Deterministic epoch-wise shuffling: the batch of step s depends only on (seed, s)."""

    def __init__(self, indices: np.ndarray, batch: int, seed: int):
        self.indices, self.batch, self.seed, self._perms = indices, batch, seed, {}
        self.epoch_len = len(indices)

    def _epoch(self, e: int) -> np.ndarray:
        """The dataset indices of epoch e, in order (epoch_len of them)."""
        return self.indices[np.random.default_rng([self.seed, e]).permutation(len(self.indices))]

    def batch_indices(self, step: int) -> np.ndarray:
        k = np.arange(step * self.batch, (step + 1) * self.batch)
        epochs = k // self.epoch_len  # non-decreasing: a batch spans at most a few epochs
        perms, out = {}, []
        for e in np.unique(epochs).tolist():
            perms[e] = self._perms[e] if e in self._perms else self._epoch(e)
            out.append(perms[e][k[epochs == e] % self.epoch_len])
        self._perms = perms  # keep only the epochs the latest batch touched
        return np.concatenate(out)


class GroupSampler(Sampler):
    """Like Sampler, but each epoch takes at most `per_group` images of every emoji group (an
    emoji with all its skin-tone variants and styles), drawn afresh per epoch, so emoji with
    dozens of skin-tone variants (couples, hands) weigh no more than any other emoji."""

    def __init__(self, indices: np.ndarray, groups: list[str], batch: int, seed: int, per_group: int):
        super().__init__(indices, batch, seed)
        members: dict[str, list[int]] = {}
        for i in indices:
            members.setdefault(groups[i], []).append(int(i))
        self.members = [np.array(v) for _, v in sorted(members.items())]
        self.per_group = per_group
        self.epoch_len = sum(min(per_group, len(m)) for m in self.members)

    def _epoch(self, e: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 7, e])
        picked = np.concatenate([rng.permutation(m)[: self.per_group] for m in self.members])
        return picked[rng.permutation(len(picked))]


def lowest_k(r: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """bool [B, n]: True at the k[b] smallest of each row b of the draws r [B, n] (k int64 [B],
    1 <= k <= n). One sort; the same selection as ranking the draws, r.argsort(1).argsort(1) <
    k[:, None], bar exact ties."""
    kth = r.sort(1).values.gather(1, (k - 1)[:, None])
    return r <= kth


def corrupt(tokens: torch.Tensor, g: torch.Generator, mask_id: int, codebook: int, p_paella: float):
    """tokens [B, L] -> (input ids [B, L], loss weights [B, L])."""
    b, n = tokens.shape
    u = torch.rand(b, generator=g)
    ratio = torch.cos(u * math.pi / 2)
    n_corrupt = (ratio * n).ceil().clamp(1, n).long()
    sel = lowest_k(torch.rand(b, n, generator=g), n_corrupt)
    paella = torch.rand(b, generator=g) < p_paella
    rand_tok = torch.randint(0, codebook, (b, n), generator=g)
    fill = torch.where(paella[:, None], rand_tok, torch.full_like(tokens, mask_id))
    inp = torch.where(sel, fill, tokens)
    weights = torch.where(paella[:, None], torch.ones_like(sel, dtype=torch.float32), sel.float())
    return inp, weights


def encode_text(te, input_ids: torch.Tensor):
    out = te(input_ids, return_dict=True, output_hidden_states=True)
    return out.text_embeds, out.hidden_states[-2]


class CaptionIds:
    """Tokenizes captions once: caption text -> padded id row (the captions repeat a lot)."""

    def __init__(self, tokenizer):
        self.tokenizer, self.cache = tokenizer, {}

    def __call__(self, captions: list[str]) -> torch.Tensor:
        missing = [c for c in dict.fromkeys(captions) if c not in self.cache]
        if missing:
            ids = self.tokenizer(missing, padding="max_length", max_length=MAX_LEN, truncation=True).input_ids
            self.cache.update((c, np.array(i, dtype=np.int64)) for c, i in zip(missing, ids))
        return torch.from_numpy(np.stack([self.cache[c] for c in captions]))


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host -> device copy that does not wait for the GPU (pinned memory, non-blocking)."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def forward(te, tr, caption_ids: CaptionIds, captions: list[str], inp: torch.Tensor, hw: int):
    return forward_ids(te, tr, to_device(caption_ids(captions), inp.device), inp, hw)


def forward_ids(te, tr, ids: torch.Tensor, inp: torch.Tensor, hw: int):
    """forward() with the captions already tokenized (ids [B, MAX_LEN] on inp's device)."""
    pooled, hidden = encode_text(te, ids)
    micro = torch.tensor([MICRO_CONDS], dtype=hidden.dtype, device=inp.device).expand(inp.shape[0], -1)
    logits = tr(inp.view(-1, hw, hw), micro_conds=micro, pooled_text_emb=pooled, encoder_hidden_states=hidden)
    b, c = logits.shape[:2]
    return logits.reshape(b, c, -1).permute(0, 2, 1)  # [B, L, codebook]


@torch.no_grad()
def masked_token_scores(tokens, idx, mask_id: int, logits_of, ratios=(0.5, 0.9), batch=64, seed=999) -> dict:
    """Masked-token accuracy / CE of images `idx` of `tokens` [N, h, w] under fixed masks (the
    same positions at every call for a seed): at each ratio r, ceil(r * h * w) positions (>= 1)
    of every image are masked. `logits_of(j, inp)` gives the logits [len(j), h*w, codebook] for
    images j with the masked inputs inp (int64 [len(j), h*w], CPU). Returns acc@r and ce@r."""
    res = {}
    for r in ratios:
        g = torch.Generator().manual_seed(seed)
        correct = total = 0
        ce = 0.0
        for i in range(0, len(idx), batch):
            j = idx[i : i + batch]
            tok = torch.from_numpy(tokens[j].astype(np.int64)).reshape(len(j), -1)
            n = tok.shape[1]
            k = max(1, math.ceil(r * n))
            sel = lowest_k(torch.rand(len(j), n, generator=g), torch.full((len(j),), k))
            inp = torch.where(sel, torch.full_like(tok, mask_id), tok)
            logits = logits_of(j, inp).float().cpu()
            correct += (logits.argmax(-1) == tok)[sel].sum().item()
            total += sel.sum().item()
            ce += F.cross_entropy(logits[sel], tok[sel], reduction="sum").item()
        res[f"acc@{r}"] = correct / total
        res[f"ce@{r}"] = ce / total
    return res


@torch.no_grad()
def evaluate(te, tr, caption_ids, tokens, records, idx, hw, mask_id, ratios=(0.5, 0.9), batch=64, seed=999, amp=None):
    """Masked-token accuracy / CE on the given images (captions: plain names), fixed masks."""
    te.eval(), tr.eval()
    dev = next(tr.parameters()).device

    def logits_of(j, inp):
        with amp_context(amp, dev):
            return forward(te, tr, caption_ids, [records[t]["caption"] for t in j], inp.to(dev), hw)

    res = masked_token_scores(tokens, idx, mask_id, logits_of, ratios, batch, seed)
    te.train(), tr.train()
    return res


def masked_ce_step(opt, params, logits: torch.Tensor, tok: torch.Tensor, w: torch.Tensor, codebook: int):
    """One optimiser step on the weighted token cross-entropy (logits [B, L, codebook], targets
    tok [B, L], weights w [B, L]: the corrupted positions), gradients clipped to norm 1.
    Returns the loss (on the device)."""
    ce = F.cross_entropy(logits.float().reshape(-1, codebook), tok.reshape(-1), reduction="none").view_as(w)
    loss = (ce * w).sum() / w.sum()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    return loss


def ema_update(ema_models, models, decay: float):
    with torch.no_grad():
        for em, m in zip(ema_models, models):
            torch._foreach_lerp_(list(em.parameters()), list(m.parameters()), 1.0 - decay)


def adamw(modules, lr: float, weight_decay: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW (betas 0.9 / 0.98) over every parameter of `modules`: weight decay on the weight
    matrices, none on biases, norms and embeddings (two parameter groups, in that order, as the
    checkpoints hold them); fused on CUDA."""
    decay, no_decay = [], []
    for m in modules:
        for n, p in m.named_parameters():
            (decay if p.ndim >= 2 and "embedding" not in n else no_decay).append(p)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.98),
        **({"fused": True} if device.type == "cuda" else {}),
    )


def train_loop(args, *, step: int, models, emas, opt, train_idx, groups, make_batch, forward, evaluate_emas,
               checkpoint, codebook: int, device: torch.device, log_path: Path) -> tuple[int, float]:
    """The masked-token training loop that this script's base stage and train_super_res.py's
    super-resolution stage share, from `step` to args.steps (which --budget-minutes /
    --finish-minutes may change on the way), batches made one step ahead (Prefetcher):

    - batches draw from the images `train_idx` (a Sampler, or with args.per_group a GroupSampler
      over their emoji `groups`, one per record); make_batch(sampler, step) -> the step's batch
      (seeded by `step` alone);
    - forward(batch) -> (logits [B, L, codebook], targets tok [B, L], weights w [B, L]) under the
      caller's autocast; the loss is masked_ce_step's, over every parameter of `models`;
    - learning rate: cosine_lr from args.schedule_from (0 when absent) with args.warmup / args.lr;
      each of `emas` follows its model in `models` (decay min(args.ema, (1+s)/(10+s)));
    - logs loss and accuracy on the corrupted tokens every args.log_every steps, evaluate_emas()
      -> (held-out, train) scores every args.eval_every; checkpoint(step) every
      args.ckpt_minutes and at the end; --stop-after / --max-minutes exit 3 after a checkpoint;
      out of memory in the first steps halves args.batch (halve_batch_after_oom).

    Returns (the last step, the loop's start time)."""
    params = [p for m in models for p in m.parameters()]

    def new_sampler(batch: int):
        if args.per_group > 0:
            return GroupSampler(train_idx, groups, batch, args.seed, args.per_group)
        return Sampler(train_idx, batch, args.seed)

    sampler = new_sampler(args.batch)
    if args.per_group > 0:
        log(f"balanced sampling: {sampler.epoch_len} images per epoch (at most {args.per_group} per emoji)", log_path)
    prog = Progress(args.steps, step, log_path)
    t_start = last_ckpt = time.time()
    budget = StepBudget(args, prog, device, log_path, t_start)  # --budget-minutes / --finish-minutes
    acc = {"loss": 0.0, "acc": 0.0, "n": 0}
    batches = Prefetcher(lambda s: make_batch(sampler, s), step, args.steps)
    while step < args.steps:
        batch = batches.get(step)
        s0 = min(getattr(args, "schedule_from", 0), step)
        lr = cosine_lr(step - s0, args.steps - s0, args.lr, args.warmup)
        for group in opt.param_groups:
            group["lr"] = lr

        try:
            logits, tok, w = forward(batch)
            loss = masked_ce_step(opt, params, logits, tok, w, codebook)
        except torch.OutOfMemoryError:
            logits = None
            halve_batch_after_oom(args, step, prog.start_step, opt, log_path)
            sampler = new_sampler(args.batch)
            batches.restart(step)
            continue
        step += 1
        ema_update(emas, models, min(args.ema, (1 + step) / (10 + step)))
        prog.tick(step)
        budget.after_step(step)
        with torch.no_grad():
            # summed on the device, read at log time: no GPU sync per step
            acc["acc"] += (logits.argmax(-1) == tok)[w > 0].float().mean()
        acc["loss"] += loss.detach()
        acc["n"] += 1

        if step % args.log_every == 0 or step == args.steps:
            n = acc.pop("n")
            prog.line(step, f"lr {lr:.2e} loss {float(acc['loss']) / n:.4f} acc {float(acc['acc']) / n:.3f}")
            acc = {"loss": 0.0, "acc": 0.0, "n": 0}
        if step % args.eval_every == 0 or step == args.steps:
            t0 = time.time()
            held, trn = evaluate_emas()
            log(eval_line(step, held, trn, time.time() - t0), log_path)
        if time.time() - last_ckpt > args.ckpt_minutes * 60:
            checkpoint(step)
            last_ckpt = time.time()
        stop_early_if_asked(args, step, prog.start_step, t_start, partial(checkpoint, step), log_path)

    batches.close()
    checkpoint(step)
    return step, t_start


# --------------------------------------------------------------------------------------


def add_uvit_args(ap, layers: int):
    """The UVit2D's size flags (uvit_config reads them): this script's base transformer and
    train_super_res.py's super-resolution stage share them; `layers` is the default depth."""
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=layers)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--intermediate", type=int, default=512)
    ap.add_argument("--in-channels", type=int, default=64)
    ap.add_argument("--block-channels", type=int, default=128)
    ap.add_argument("--block-heads", type=int, default=2)
    ap.add_argument("--micro-dim", type=int, default=16)
    ap.add_argument("--downsample", type=int, default=1, help="1: transformer layers at half token resolution")


def load_matching(model, state: dict, what: str, log_path: Path) -> None:
    """Loads the tensors of `state` whose name and shape match `model`'s; logs what stays fresh."""
    own = model.state_dict()
    keep = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    fresh = sorted(set(own) - set(keep))
    model.load_state_dict(keep, strict=False)
    log(f"{what}: {len(keep)} of {len(own)} tensors loaded; fresh: {', '.join(fresh) or 'none'}", log_path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=RUNS_DIR / "transformer")
    ap.add_argument("--tokens", type=Path, default=RUNS_DIR / "vq" / "tokens.npz")
    ap.add_argument("--tokenizer", type=Path, default=RUNS_DIR / "tokenizer")
    ap.add_argument("--tokens-key", default="tokens",
                    help="the token grid's key in --tokens (tokens: train_vq.py's cache; lo: train_super_res.py's "
                         "sr_tokens.npz, whose records_json / heldout replace captions.json)")
    ap.add_argument("--data-dir", type=Path, default=DATA_DIR,
                    help="folder holding captions.json (not read when --tokens carries records_json)")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=6e-4)
    ap.add_argument("--warmup", type=int, default=150)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--ema", type=float, default=0.998, help="max EMA decay (warmed up as (1+s)/(10+s))")
    ap.add_argument("--caption-dropout", type=float, default=0.1)
    ap.add_argument("--per-group", type=int, default=0,
                    help="balance emoji: each epoch takes at most N images per emoji group (skin-tone "
                         "variants share their emoji's group); 0: every image once per epoch")
    ap.add_argument("--schedule-from", type=int, default=0,
                    help="warm restart: the warm-up + cosine learning-rate schedule starts at this step "
                         "(for continuing a finished run with --resume and a larger --steps)")
    ap.add_argument("--paella", type=float, default=0.2, help="fraction of samples corrupted with random tokens")
    # text encoder
    ap.add_argument("--text-hidden", type=int, default=128)
    ap.add_argument("--text-layers", type=int, default=3)
    ap.add_argument("--text-heads", type=int, default=2)
    ap.add_argument("--text-proj", type=int, default=128)
    add_uvit_args(ap, layers=6)
    ap.add_argument("--seed", type=int, default=4321)
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--eval-train-n", type=int, default=320, help="train images also scored at eval (overfit check)")
    ap.add_argument("--ckpt-minutes", type=float, default=5.0)
    ap.add_argument("--max-minutes", type=float, default=0.0)
    ap.add_argument("--stop-after", type=int, default=0, help="stop (with a checkpoint) after this many steps in this invocation (for testing resume)")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--device", default="cpu", help="torch device: cpu (the recipe's default) or cuda")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA or a CPU with bf16 instructions; weights and optimiser stay fp32)")
    ap.add_argument("--compile", action="store_true",
                    help="torch.compile the training forward (CPU: ~1.3x faster per step after ~80 s of compiling; needs a C++ compiler)")
    ap.add_argument("--init-from", type=Path, default=None,
                    help="start from the weights of a finished run (a folder with text_encoder/ and transformer/, "
                         "as final/ holds) with a fresh optimiser, instead of from random weights")
    ap.add_argument("--init-partial", action="store_true",
                    help="with --init-from: take only the tensors whose name and shape match (another codebook "
                         "size: the token embedding and output head start fresh), each model's loaded and fresh "
                         "tensors logged; the text encoder's vocabulary is the tokenizer's, so --tokenizer should "
                         "be the --init-from model's")
    ap.add_argument("--freeze-text-encoder", action="store_true",
                    help="train the transformer only: the text encoder keeps its initial weights (with --init-from, "
                         "that model's), so a super-resolution stage trained against them (train_super_res.py "
                         "freezes the base's text encoder) stays valid across more base training")
    add_budget_args(ap)  # --budget-minutes (the LR warm-up must outlast its measurement) / --finish-minutes
    ap.add_argument("--save-fp16", action="store_true", help="save the final EMA weights in fp16 (what export writes anyway)")
    ap.add_argument("--info", action="store_true", help="print configs, params and FLOPs, then exit")
    args = ap.parse_args()
    args.downsample = bool(args.downsample)

    from transformers import CLIPTokenizer

    setup_torch(args.seed)
    tokenizer = CLIPTokenizer.from_pretrained(str(args.tokenizer))
    cache = np.load(args.tokens)
    if args.tokens_key not in cache.files:
        raise SystemExit(f"{args.tokens} has no '{args.tokens_key}' array (it has {cache.files}); see --tokens-key")
    tokens = cache[args.tokens_key]
    codebook = int(cache["codebook_size"])
    hw = tokens.shape[1]
    tcfg = text_config(args, tokenizer)
    ucfg = uvit_config(args, codebook, hw)
    mask_id = ucfg["vocab_size"] - 1
    te, tr = make_models(tcfg, ucfg, args.seed)
    caption_ids = CaptionIds(tokenizer)
    n_te = sum(p.numel() for p in te.parameters())
    n_tr = sum(p.numel() for p in tr.parameters())
    flops = uvit_flops(tr, args.text_hidden, args.text_proj, hw)
    info = (
        f"text encoder {n_te / 1e6:.3f}M params, transformer {n_tr / 1e6:.3f}M params, "
        f"transformer forward {flops / 1e9:.3f} GFLOP at {hw}x{hw} tokens, mask id {mask_id}"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    log_path = args.out / "log.txt"
    if args.info:
        print(info)
        print(json.dumps({"text": tcfg, "uvit": ucfg}, indent=1))
        return

    if "records_json" in cache.files:  # train_super_res.py's cache carries its records and split
        records = json.loads(bytes(cache["records_json"]).decode("utf-8"))
        heldout = cache["heldout"].astype(bool)
        log(f"records and held-out split from {args.tokens} ({len(records)} images, '{args.tokens_key}' grids)", log_path)
    else:
        records, heldout = load_records(args.data_dir)
    assert len(records) == tokens.shape[0] == len(heldout)
    train_idx = np.nonzero(~heldout)[0]
    held_idx = np.nonzero(heldout)[0]
    train_eval_idx = train_idx[np.linspace(0, len(train_idx) - 1, min(args.eval_train_n, len(train_idx))).astype(int)]

    if args.init_from is not None and not (args.resume and (args.out / "ckpt.pt").exists()):
        from diffusers import UVit2DModel
        from transformers import CLIPTextModelWithProjection

        te_init = CLIPTextModelWithProjection.from_pretrained(str(args.init_from / "text_encoder")).float().state_dict()
        tr_init = UVit2DModel.from_pretrained(str(args.init_from / "transformer")).float().state_dict()
        if args.init_partial:
            load_matching(te, te_init, "text encoder", log_path)
            load_matching(tr, tr_init, "transformer", log_path)
        else:
            te.load_state_dict(te_init)
            tr.load_state_dict(tr_init)
        log(f"initialised from {args.init_from}{' (matching tensors only)' if args.init_partial else ''}", log_path)
    device = torch.device(args.device)
    amp = "bf16" if args.bf16 else None
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    te, tr = te.to(device), tr.to(device)
    ema_te, ema_tr = copy.deepcopy(te).eval(), copy.deepcopy(tr).eval()
    for p in list(ema_te.parameters()) + list(ema_tr.parameters()):
        p.requires_grad_(False)
    # The trained modules and their EMA copies; a frozen text encoder is neither (its EMA copy
    # stays equal to it, and that is what gets saved).
    trained, trained_emas = ((tr,), (ema_tr,)) if args.freeze_text_encoder else ((te, tr), (ema_te, ema_tr))
    if args.freeze_text_encoder:
        te.requires_grad_(False)
        log("text encoder frozen (--freeze-text-encoder): the transformer alone is trained", log_path)
    opt = adamw(trained, args.lr, args.weight_decay, device)
    ckpt_path = args.out / "ckpt.pt"
    step = 0
    py_rng = random.Random(args.seed)
    if args.resume and ckpt_path.exists():
        ck = load_checkpoint(ckpt_path, map_location=device)
        te.load_state_dict(ck["te"]), tr.load_state_dict(ck["tr"])
        ema_te.load_state_dict(ck["ema_te"]), ema_tr.load_state_dict(ck["ema_tr"])
        opt.load_state_dict(ck["opt"])
        step = ck["step"]
        set_rng_state(ck["rng"], py_rng)
        log(f"resumed from {ckpt_path} at step {step}", log_path)
    log(info, log_path)
    log(
        f"configs: {json.dumps({'text': tcfg, 'uvit': ucfg})}\n"
        f"batch {args.batch}, steps {args.steps}, lr {args.lr}, caption dropout {args.caption_dropout}, "
        f"paella {args.paella}, train {len(train_idx)} / held-out {len(held_idx)} images, device {device}"
        f"{' (bf16 autocast)' if amp else ''}",
        log_path,
    )

    def checkpoint(step: int):
        save_checkpoint(
            ckpt_path,
            {
                "te": te.state_dict(), "tr": tr.state_dict(), "ema_te": ema_te.state_dict(),
                "ema_tr": ema_tr.state_dict(), "opt": opt.state_dict(), "step": step,
                "rng": rng_state(py_rng), "configs": {"text": tcfg, "uvit": ucfg},
            },
        )

    def make_batch(sampler, step: int):
        """Step `step`'s batch (seeded by the step alone): caption ids, targets, inputs, weights."""
        g = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
        bidx = sampler.batch_indices(step)
        cap_rng = random.Random(args.seed * 7919 + step)
        captions = [
            "" if cap_rng.random() < args.caption_dropout else sample_caption(records[i], cap_rng) for i in bidx
        ]
        tok = torch.from_numpy(tokens[bidx].astype(np.int64)).reshape(len(bidx), -1)
        inp, w = corrupt(tok, g, mask_id, codebook, args.paella)
        return tuple(to_device(t, device) for t in (caption_ids(captions), tok, inp, w))

    # The training forward may be compiled; checkpoints, EMA and evaluation use the eager modules.
    fte, ftr = (torch.compile(te), torch.compile(tr)) if args.compile else (te, tr)

    def train_forward(batch):
        ids, tok, inp, w = batch
        with amp_context(amp, device):
            return forward_ids(fte, ftr, ids, inp, hw), tok, w

    def evaluate_emas():
        return (evaluate(ema_te, ema_tr, caption_ids, tokens, records, held_idx, hw, mask_id, amp=amp),
                evaluate(ema_te, ema_tr, caption_ids, tokens, records, train_eval_idx, hw, mask_id, amp=amp))

    te.train(), tr.train()
    step, t_start = train_loop(
        args, step=step, models=trained, emas=trained_emas, opt=opt, train_idx=train_idx,
        groups=[r["group"] for r in records], make_batch=make_batch, forward=train_forward, evaluate_emas=evaluate_emas, checkpoint=checkpoint,
        codebook=codebook, device=device, log_path=log_path,
    )
    final = args.out / "final"
    for name, m in (("text_encoder", ema_te), ("transformer", ema_tr)):
        m = copy.deepcopy(m).cpu()
        (m.half() if args.save_fp16 else m).save_pretrained(str(final / name), safe_serialization=True)
    held = evaluate(ema_te, ema_tr, caption_ids, tokens, records, held_idx, hw, mask_id, amp=amp)
    raw = evaluate(te, tr, caption_ids, tokens, records, held_idx, hw, mask_id, amp=amp)
    write_json(
        args.out / "result.json",
        {"steps": step, "heldout_ema": held, "heldout_raw": raw, "params_text": n_te, "params_transformer": n_tr,
         "transformer_forward_gflop": flops / 1e9, "batch": args.batch, "minutes": (time.time() - t_start) / 60,
         "tokens": str(args.tokens), "tokens_key": args.tokens_key},
    )
    log(f"done: saved EMA weights to {final}; held-out EMA {held}, raw {raw}", log_path)


if __name__ == "__main__":
    main()
