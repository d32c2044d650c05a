"""Measure the cost of one training step of each model at the sizes run_all.sh uses.

Reports wall seconds per step and CPU seconds per step (process time, all threads). On a
busy machine the wall time is inflated by other processes; CPU seconds / threads is then
the better estimate of the wall time on an idle machine.

Usage: python bench.py [--steps 4] [--batch 32]
"""

from __future__ import annotations

import argparse
import time

import torch

from common import MAX_LEN, MICRO_CONDS, setup_torch


def timed(fn, steps: int):
    fn()  # warm-up
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - w0) / steps, (time.process_time() - c0) / steps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--vq-channels", type=int, nargs="+", default=[32, 64, 128])
    ap.add_argument("--vq-groups", type=int, default=16)
    ap.add_argument("--what", nargs="+", default=["vq", "decoder", "transformer"])
    ap.add_argument("--uvit", default="256,6,4,512,64,128,2", help="hidden,layers,heads,intermediate,in_ch,block_ch,block_heads")
    args = ap.parse_args()
    setup_torch(0)
    threads = torch.get_num_threads()
    b = args.batch

    if "vq" in args.what or "decoder" in args.what:
        from train_vq import make_vq, vq_config

        ns = argparse.Namespace(channels=args.vq_channels, layers_per_block=1, latent=8, codebook=512,
                                groups=args.vq_groups, mid_attention=False)
        vq = make_vq(vq_config(ns))
        x = torch.rand(b, 3, 64, 64)
        opt = torch.optim.AdamW(vq.parameters())
        n = sum(p.numel() for p in vq.parameters())

        def vq_step():
            lat = vq.encode(x).latents
            rec = vq.decoder(vq.post_quant_conv(lat))
            loss = (rec - x).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

        def dec_step():
            with torch.no_grad():
                lat = vq.encode(x).latents  # stands in for the codebook lookup (negligible)
            rec = vq.decoder(vq.post_quant_conv(lat.detach()))
            loss = (rec - x).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

        if "vq" in args.what:
            w, c = timed(vq_step, args.steps)
            print(f"VQ {args.vq_channels} ({n / 1e6:.2f}M): stage-1 step batch {b}: wall {w:.2f} s, cpu {c:.2f} s (/{threads} = {c / threads:.2f} s)")
        if "decoder" in args.what:
            w, c = timed(dec_step, args.steps)
            print(f"VQ {args.vq_channels}: decoder step batch {b} (no-grad encoder included, cached in practice): wall {w:.2f} s, cpu {c:.2f} s (/{threads} = {c / threads:.2f} s)")

    if "transformer" in args.what:
        from diffusers import UVit2DModel
        from transformers import CLIPTextConfig, CLIPTextModelWithProjection

        h, L, nh, inter, inc, bc, bh = (int(v) for v in args.uvit.split(","))
        te = CLIPTextModelWithProjection(CLIPTextConfig(vocab_size=1536, hidden_size=128, intermediate_size=512,
                                                        num_hidden_layers=3, num_attention_heads=2,
                                                        max_position_embeddings=MAX_LEN, projection_dim=128,
                                                        hidden_act="quick_gelu", eos_token_id=1535, bos_token_id=1534,
                                                        pad_token_id=1535))
        tr = UVit2DModel(hidden_size=h, use_bias=False, cond_embed_dim=128, micro_cond_encode_dim=16,
                         micro_cond_embed_dim=80, encoder_hidden_size=128, vocab_size=520, codebook_size=512,
                         in_channels=inc, block_out_channels=bc, num_res_blocks=1, downsample=True, upsample=True,
                         block_num_heads=bh, num_hidden_layers=L, num_attention_heads=nh, intermediate_size=inter,
                         sample_size=16)
        opt = torch.optim.AdamW(list(te.parameters()) + list(tr.parameters()))
        ids = torch.randint(0, 1534, (b, MAX_LEN))
        tok = torch.randint(0, 520, (b, 16, 16))
        tgt = torch.randint(0, 512, (b, 16, 16))
        micro = torch.tensor([MICRO_CONDS]).expand(b, -1)

        def tr_step():
            out = te(ids, output_hidden_states=True)
            logits = tr(tok, micro_conds=micro, pooled_text_emb=out.text_embeds, encoder_hidden_states=out.hidden_states[-2])
            loss = torch.nn.functional.cross_entropy(logits, tgt)
            opt.zero_grad()
            loss.backward()
            opt.step()

        w, c = timed(tr_step, args.steps)
        n = sum(p.numel() for p in tr.parameters())
        print(f"UVit2D {args.uvit} ({n / 1e6:.2f}M) + text encoder: step batch {b}: wall {w:.2f} s, cpu {c:.2f} s (/{threads} = {c / threads:.2f} s)")


if __name__ == "__main__":
    main()
