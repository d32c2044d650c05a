"""The reference side of `tessera bench`: the same aMUSEd pipeline through diffusers/PyTorch.

Times what `tessera bench` times, the same way: text encoding of [negative; prompt], `--steps`
guided transformer passes on a batch of 2·batch (+ softmax sampling of the guided logits), and
the VQ decode, then prints one JSON object shaped like tessera's `end_to_end`, so a ratio can be
taken from two runs on the same machine.

    python tools/bench/reference.py --model tests/fixtures/amused/tiny-b/model --steps 12
    python tools/bench/reference.py --model amused-256-random --device cuda --dtype float16

`--model amused-256-random` / `amused-512-random` build the published configurations with
random weights (no download). Requirements: tools/fixtures/requirements.txt.
"""

import argparse
import json
import time

import torch
from diffusers import UVit2DModel, VQModel
from transformers import CLIPTextConfig, CLIPTextModelWithProjection

AMUSED_256 = dict(
    hidden_size=1024, use_bias=False, cond_embed_dim=768, micro_cond_encode_dim=256,
    micro_cond_embed_dim=1280, encoder_hidden_size=768, vocab_size=8256, codebook_size=8192,
    in_channels=768, block_out_channels=768, num_res_blocks=3, downsample=False, upsample=False,
    block_num_heads=12, num_hidden_layers=22, num_attention_heads=16, intermediate_size=2816,
    layer_norm_eps=1e-6, ln_elementwise_affine=True, sample_size=16,
)
AMUSED_512 = dict(AMUSED_256, downsample=True, upsample=True, sample_size=32)
VQ = dict(
    in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 5,
    up_block_types=("UpDecoderBlock2D",) * 5, block_out_channels=(128, 256, 256, 512, 768),
    layers_per_block=2, act_fn="silu", latent_channels=64, norm_num_groups=32,
    num_vq_embeddings=8192, mid_block_add_attention=False, lookup_from_codebook=True,
    force_upcast=True,
)
CLIP_L = CLIPTextConfig(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, projection_dim=768,
    num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=77,
    hidden_act="quick_gelu", bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
)


def load(name, device, dtype):
    if name in ("amused-256-random", "amused-512-random"):
        cfg = AMUSED_256 if name == "amused-256-random" else AMUSED_512
        text = CLIPTextModelWithProjection(CLIP_L)
        transformer = UVit2DModel(**cfg)
        vq = VQModel(**VQ)
    else:
        text = CLIPTextModelWithProjection.from_pretrained(f"{name}/text_encoder")
        transformer = UVit2DModel.from_pretrained(f"{name}/transformer")
        vq = VQModel.from_pretrained(f"{name}/vqvae")
    text = text.to(device, dtype).eval()
    transformer = transformer.to(device, dtype).eval()
    vq = vq.to(device, torch.float32).eval()  # force_upcast: the reference decodes in f32
    return text, transformer, vq


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tests/fixtures/amused/tiny-b/model")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", nargs="+", default=["float32"], choices=["float32", "float16"],
                    help="one JSON line per dtype, the weights built once")
    ap.add_argument("--warmup", type=int, default=1,
                    help="untimed runs before the timed one (CUDA/cuBLAS start-up, allocator)")
    args = ap.parse_args()
    torch.manual_seed(0)
    models = load(args.model, "cpu", torch.float32)
    for name in args.dtype:
        dtype = getattr(torch, name)
        text, transformer, vq = (
            models[0].to(args.device, dtype), models[1].to(args.device, dtype),
            models[2].to(args.device, torch.float32))
        for _ in range(args.warmup):
            run(args, name, text, transformer, vq, quiet=True)
        run(args, name, text, transformer, vq, quiet=False)


@torch.no_grad()
def run(args, dtype_name, text, transformer, vq, quiet):
    dtype = getattr(torch, dtype_name)
    dev = args.device
    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    cfg = transformer.config
    side = cfg.sample_size
    f = 2 ** (len(vq.config.block_out_channels) - 1)
    b = args.batch
    length = text.config.max_position_embeddings
    ids = torch.full((2, length), text.config.eos_token_id, dtype=torch.long, device=dev)
    ids[1, :5] = torch.arange(5, device=dev) * 97 % text.config.vocab_size

    sync(dev)
    t0 = time.perf_counter()
    out = text(ids, return_dict=True, output_hidden_states=True)
    pooled = out.text_embeds.repeat_interleave(b, 0)
    hidden = out.hidden_states[-2].repeat_interleave(b, 0)
    sync(dev)
    text_ms = (time.perf_counter() - t0) * 1e3

    micro = torch.tensor([[side * f, side * f, 0, 0, 6]] * 2 * b, dtype=dtype, device=dev)
    tokens = torch.full((b, side, side), cfg.vocab_size - 1, dtype=torch.long, device=dev)
    t1 = time.perf_counter()
    for _ in range(args.steps):
        logits = transformer(torch.cat([tokens] * 2), micro_conds=micro, pooled_text_emb=pooled,
                             encoder_hidden_states=hidden)
        u, c = logits.chunk(2)
        g = (u + 10.0 * (c - u)).float()
        probs = g.reshape(b, cfg.codebook_size, -1).permute(0, 2, 1).softmax(-1)
        tokens = torch.multinomial(probs.reshape(-1, cfg.codebook_size), 1).reshape(b, side, side)
    sync(dev)
    step_ms = (time.perf_counter() - t1) * 1e3 / args.steps

    t2 = time.perf_counter()
    img = vq.decode(tokens, force_not_quantize=True, shape=(b, side, side, vq.config.latent_channels)).sample
    img.clamp(0, 1).cpu()
    sync(dev)
    decode_ms = (time.perf_counter() - t2) * 1e3
    peak = torch.cuda.max_memory_allocated() if dev == "cuda" else None
    if quiet:
        return
    print(json.dumps({
        "adapter": {"name": torch.cuda.get_device_name() if dev == "cuda" else "cpu", "backend": f"pytorch-{dev}"},
        "end_to_end": {
            "model": args.model, "steps": args.steps, "batch": b, "dtype": dtype_name,
            "text_ms": text_ms, "step_ms": step_ms, "decode_ms": decode_ms,
            "total_ms": (time.perf_counter() - t0) * 1e3, "peak_bytes": peak,
            "torch_threads": torch.get_num_threads(),
        },
    }))


if __name__ == "__main__":
    main()
