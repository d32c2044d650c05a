"""Muse-style super-resolution (SR) stage for aMUSEd-format models: the PyTorch reference.

Design (Muse, Chang et al. 2023, section 2.4)
----------------------------------------------
A two-stage model first samples a low-res token grid with the base aMUSEd pipeline
(``UVit2DModel`` on an ``h x w`` grid), then this SR transformer samples a high-res grid
(``2h x 2w``) with the same masked-token procedure, conditioned on the text *and* on the
base stage's tokens. The low-res tokens (never masked) run through their own small
transformer, the ``LowResEncoder``; its output sequence is concatenated with the text
encoder's hidden states, and the high-res tokens cross-attend to that joint context.

The high-res network is diffusers' ``UVit2DModel`` unchanged (so an engine that runs aMUSEd
runs it with the same kernels), plus two additions:

* a learned position table ``position_embeddings`` ``[S*S, C]`` (``S`` = ``sample_size``,
  ``C`` = ``block_out_channels``), added to the output of ``uvit.embed`` (the 1x1 conv, NCHW
  ``[B, C, S, S]``) by a forward hook: ``out + weight.T.reshape(1, C, S, S)``, i.e. row
  ``row * S + col`` of the table goes to grid cell ``(row, col)``. UVit2D itself has no
  position embedding (its ConvNeXt blocks see neighbours only); the SR stage needs absolute
  positions to line a high-res token up with its low-res parent in the context;
* the ``LowResEncoder`` (below), whose output width is ``encoder_hidden_size`` so that it can
  be concatenated with the text hidden states *before* UVit2D's ``encoder_proj``.

Shapes (``B`` batch, ``L`` text length 77, ``E`` = ``encoder_hidden_size``)::

    input_ids              [B, S, S]    int64, codes in [0, codebook_size) or the mask id
                                        (vocab_size - 1)
    low_res_ids            [B, s, s]    int64, codes in [0, low_res_codebook_size);
                                        s = low_res_sample_size (normally S / 2)
    encoder_hidden_states  [B, L, E]    text encoder hidden_states[-2], as aMUSEd uses it
    pooled_text_emb        [B, cond_embed_dim]  text_embeds
    micro_conds            [B, 5]       [width, height, crop_top, crop_left, aesthetic] of the
                                        HIGH-RES image (e.g. [32, 32, 0, 0, 6])
    LowResEncoder output   [B, s*s, E]
    context                [B, L + s*s, E] = cat([encoder_hidden_states, low_res_states], 1)
    logits                 [B, codebook_size, S, S]  (what UVit2DModel returns)

LowResEncoder: ``x = embeddings(ids.flatten(1)) + position_embeddings.weight[None]`` (row-major
positions, no mask token), then ``low_res_num_layers`` diffusers ``BasicTransformerBlock``s
without cross-attention (pre-LayerNorm: ``x += attn1(norm1(x)); x += ff(norm3(x))``;
self-attention with biased q/k/v/out projections, heads of width
``low_res_hidden_size / low_res_num_attention_heads``, softmax scale ``1/sqrt(head_dim)``;
feed-forward = GEGLU: ``a, g = split(net.0.proj(x), 2)`` (``a`` = first half) ->
``a * gelu(g)`` with the exact erf GELU -> ``net.2``), then ``norm_out`` (LayerNorm with
weight and bias) and ``proj_out`` (Linear with bias) to width ``E``. Every LayerNorm of the
encoder uses ``layer_norm_eps`` of the config.

Classifier-free guidance: the unconditional rows use the empty prompt's text states (hidden
and pooled) and the SAME low-res ids as the conditional rows; guidance then only removes the
text, never the low-res image. (A model trained with prompt dropout should drop the text only.)

Weights on disk (``save_pretrained``): ``config.json`` and
``diffusion_pytorch_model.safetensors`` with flat key names:

* UVit2DModel's own names, WITHOUT a prefix: ``embed.*``, ``encoder_proj.*``,
  ``encoder_proj_layer_norm.*``, ``cond_embed.*``, ``down_block.*``, ``project_to_hidden*``,
  ``transformer_layers.N.*``, ``project_from_hidden*``, ``up_block.*``, ``mlm_layer.*``
  (exactly what ``UVit2DModel.save_pretrained`` writes for the same config);
* ``position_embeddings.weight`` ``[S*S, block_out_channels]``;
* ``low_res_encoder.embeddings.weight`` ``[low_res_codebook_size, Hl]``,
  ``low_res_encoder.position_embeddings.weight`` ``[s*s, Hl]``,
  ``low_res_encoder.layers.N.norm1.{weight,bias}`` ``[Hl]``,
  ``low_res_encoder.layers.N.attn1.to_{q,k,v}.{weight [Hl, Hl], bias [Hl]}``,
  ``low_res_encoder.layers.N.attn1.to_out.0.{weight [Hl, Hl], bias [Hl]}``,
  ``low_res_encoder.layers.N.norm3.{weight,bias}`` ``[Hl]``,
  ``low_res_encoder.layers.N.ff.net.0.proj.{weight [2*I, Hl], bias [2*I]}``,
  ``low_res_encoder.layers.N.ff.net.2.{weight [Hl, I], bias [Hl]}``,
  ``low_res_encoder.norm_out.{weight,bias}`` ``[Hl]``,
  ``low_res_encoder.proj_out.{weight [E, Hl], bias [E]}``
  (``Hl`` = ``low_res_hidden_size``, ``I`` = ``low_res_intermediate_size``).

A two-stage model folder is an ``AmusedPipeline`` folder plus ``super_res/`` (see
``save_super_res_folder`` and docs/model-folders.md); the SR stage decodes with the base
pipeline's ``vqvae`` at the SR token grid.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from diffusers import UVit2DModel
from diffusers.models.attention import BasicTransformerBlock
from safetensors.torch import load_file, save_file
from torch import nn

TESSERA_FORMAT = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"

# Every UVit2DModel.__init__ keyword (diffusers 0.42.1).
UVIT_KEYS = (
    "hidden_size",
    "use_bias",
    "hidden_dropout",
    "cond_embed_dim",
    "micro_cond_encode_dim",
    "micro_cond_embed_dim",
    "encoder_hidden_size",
    "vocab_size",
    "codebook_size",
    "in_channels",
    "block_out_channels",
    "num_res_blocks",
    "downsample",
    "upsample",
    "block_num_heads",
    "num_hidden_layers",
    "num_attention_heads",
    "attention_dropout",
    "intermediate_size",
    "layer_norm_eps",
    "ln_elementwise_affine",
    "sample_size",
)
LOW_RES_KEYS = (
    "low_res_sample_size",
    "low_res_codebook_size",
    "low_res_hidden_size",
    "low_res_num_layers",
    "low_res_num_attention_heads",
    "low_res_intermediate_size",
)
CONFIG_DEFAULTS = {"attention_dropout": 0.0, "hidden_dropout": 0.0}
FLAT_EXTRA_PREFIXES = ("position_embeddings.", "low_res_encoder.")


class LowResEncoder(nn.Module):
    """Transformer over the (never masked) low-res tokens; output width ``out_size``."""

    def __init__(
        self,
        codebook_size: int,
        sample_size: int,
        hidden_size: int,
        num_layers: int,
        num_attention_heads: int,
        intermediate_size: int,
        out_size: int,
        eps: float,
    ):
        super().__init__()
        if hidden_size % num_attention_heads != 0:
            raise ValueError(f"low-res hidden size {hidden_size} is not a multiple of {num_attention_heads} heads")
        self.sample_size = sample_size
        self.embeddings = nn.Embedding(codebook_size, hidden_size)
        self.position_embeddings = nn.Embedding(sample_size * sample_size, hidden_size)
        self.layers = nn.ModuleList(
            [
                BasicTransformerBlock(
                    dim=hidden_size,
                    num_attention_heads=num_attention_heads,
                    attention_head_dim=hidden_size // num_attention_heads,
                    activation_fn="geglu",
                    attention_bias=True,
                    attention_out_bias=True,
                    norm_type="layer_norm",
                    norm_elementwise_affine=True,
                    norm_eps=eps,
                    ff_inner_dim=intermediate_size,
                    ff_bias=True,
                )
                for _ in range(num_layers)
            ]
        )
        self.norm_out = nn.LayerNorm(hidden_size, eps=eps)
        self.proj_out = nn.Linear(hidden_size, out_size)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.ndim != 3 or ids.shape[1] != self.sample_size or ids.shape[2] != self.sample_size:
            raise ValueError(
                f"low-res ids must be [B, {self.sample_size}, {self.sample_size}], got {tuple(ids.shape)}"
            )
        x = self.embeddings(ids.flatten(1)) + self.position_embeddings.weight[None]
        for layer in self.layers:
            x = layer(x)
        return self.proj_out(self.norm_out(x))


class SuperResTransformer(nn.Module):
    """UVit2DModel + position table + LowResEncoder; see the module docstring."""

    def __init__(self, config: dict):
        super().__init__()
        config = dict(config)
        for k in ("_class_name", "_tessera_format", "_diffusers_version"):
            config.pop(k, None)
        for k, v in CONFIG_DEFAULTS.items():
            config.setdefault(k, v)
        missing = [k for k in UVIT_KEYS + LOW_RES_KEYS if k not in config]
        unknown = sorted(set(config) - set(UVIT_KEYS + LOW_RES_KEYS))
        if missing or unknown:
            raise ValueError(f"SuperResTransformer config: missing {missing}, unknown {unknown}")
        self.config = {k: config[k] for k in UVIT_KEYS + LOW_RES_KEYS}

        self.uvit = UVit2DModel(**{k: config[k] for k in UVIT_KEYS})
        size = config["sample_size"]
        self.position_embeddings = nn.Embedding(size * size, config["block_out_channels"])
        # Small at initialisation, so an untrained table barely perturbs UVit2D's embedding.
        nn.init.normal_(self.position_embeddings.weight, std=0.02)
        self.uvit.embed.register_forward_hook(self._add_position_embeddings)
        self.low_res_encoder = LowResEncoder(
            codebook_size=config["low_res_codebook_size"],
            sample_size=config["low_res_sample_size"],
            hidden_size=config["low_res_hidden_size"],
            num_layers=config["low_res_num_layers"],
            num_attention_heads=config["low_res_num_attention_heads"],
            intermediate_size=config["low_res_intermediate_size"],
            out_size=config["encoder_hidden_size"],
            eps=config["layer_norm_eps"],
        )

    def _add_position_embeddings(self, _module, _inputs, out: torch.Tensor) -> torch.Tensor:
        size = self.config["sample_size"]
        b, c, h, w = out.shape
        if h != size or w != size:
            raise ValueError(f"SR token grid must be {size}x{size} (its position table), got {h}x{w}")
        return out + self.position_embeddings.weight.T.reshape(1, c, size, size).to(out.dtype)

    def forward(
        self,
        input_ids: torch.Tensor,
        low_res_ids: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        pooled_text_emb: torch.Tensor,
        micro_conds: torch.Tensor,
    ) -> torch.Tensor:
        if input_ids.shape[0] != low_res_ids.shape[0]:
            raise ValueError(f"batch mismatch: {input_ids.shape[0]} high-res rows, {low_res_ids.shape[0]} low-res rows")
        lr = self.low_res_encoder(low_res_ids).to(encoder_hidden_states.dtype)
        ctx = torch.cat([encoder_hidden_states, lr], dim=1)
        return self.uvit(input_ids, encoder_hidden_states=ctx, pooled_text_emb=pooled_text_emb, micro_conds=micro_conds)

    # ----------------------------------------------------------------------------------
    # Serialisation
    # ----------------------------------------------------------------------------------

    def flat_state_dict(self) -> dict:
        """UVit2DModel's key names (no prefix) + position_embeddings.weight + low_res_encoder.*."""
        out = {}
        for k, v in self.state_dict().items():
            if k.startswith("uvit."):
                name = k[len("uvit.") :]
                if name.startswith(FLAT_EXTRA_PREFIXES):
                    raise RuntimeError(f"UVit2DModel key {name} collides with the SR stage's own keys")
            elif k.startswith(FLAT_EXTRA_PREFIXES):
                name = k
            else:
                raise RuntimeError(f"unexpected state-dict key {k}")
            out[name] = v
        return out

    def load_flat_state_dict(self, flat: dict):
        """Inverse of flat_state_dict; every key must be present and known (strict)."""
        expected = self.flat_state_dict()
        missing = sorted(set(expected) - set(flat))
        unexpected = sorted(set(flat) - set(expected))
        if missing or unexpected:
            raise ValueError(f"SR weights: missing {missing}, unexpected {unexpected}")
        for k, v in expected.items():
            if tuple(flat[k].shape) != tuple(v.shape):
                raise ValueError(f"SR weight {k}: shape {tuple(flat[k].shape)}, expected {tuple(v.shape)}")
        nested = {(k if k.startswith(FLAT_EXTRA_PREFIXES) else "uvit." + k): v for k, v in flat.items()}
        self.load_state_dict(nested, strict=True)

    def save_pretrained(self, folder, dtype: torch.dtype = torch.float32):
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        cfg = {"_class_name": "SuperResTransformer", "_tessera_format": TESSERA_FORMAT}
        cfg.update(self.config)
        (folder / CONFIG_NAME).write_text(json.dumps(cfg, indent=2, sort_keys=False) + "\n", encoding="utf-8")
        tensors = {
            k: (v.detach().to(dtype) if v.is_floating_point() else v.detach()).contiguous()
            for k, v in self.flat_state_dict().items()
        }
        save_file(tensors, str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
        # safetensors writes 0600; model files are shared like the other components' (0644).
        (folder / WEIGHTS_NAME).chmod(0o644)

    @classmethod
    def from_pretrained(cls, folder, dtype: torch.dtype = torch.float32) -> SuperResTransformer:
        """Load a save_pretrained folder; weights are converted to ``dtype`` whatever their
        on-disk dtype. Returns the model in eval mode."""
        folder = Path(folder)
        cfg = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
        if cfg.get("_class_name") != "SuperResTransformer":
            raise ValueError(f"{folder / CONFIG_NAME}: _class_name is {cfg.get('_class_name')!r}")
        if cfg.get("_tessera_format") != TESSERA_FORMAT:
            raise ValueError(f"{folder / CONFIG_NAME}: unsupported _tessera_format {cfg.get('_tessera_format')!r}")
        model = cls(cfg)
        flat = load_file(str(folder / WEIGHTS_NAME))
        model.load_flat_state_dict({k: v.to(torch.float32) if v.is_floating_point() else v for k, v in flat.items()})
        return model.to(dtype).eval()


def save_super_res_folder(model_root, transformer: SuperResTransformer, mask_token_id: int,
                          dtype: torch.dtype = torch.float32) -> Path:
    """Write ``model_root/super_res/`` (replacing any previous one):

    * ``model_index.json``: TesseraSuperResPipeline = transformer + scheduler;
    * ``transformer/``: ``transformer.save_pretrained``;
    * ``scheduler/scheduler_config.json``: an AmusedScheduler config (cosine schedule).

    There is no ``super_res/vqvae``: the stage decodes with the base pipeline's ``vqvae``.
    """
    cfg = transformer.config
    if not cfg["codebook_size"] <= mask_token_id < cfg["vocab_size"]:
        raise ValueError(f"mask id {mask_token_id} outside [codebook_size, vocab_size) = "
                         f"[{cfg['codebook_size']}, {cfg['vocab_size']})")
    root = Path(model_root) / "super_res"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    index = {
        "_class_name": "TesseraSuperResPipeline",
        "_tessera_format": TESSERA_FORMAT,
        "transformer": ["tessera", "SuperResTransformer"],
        "scheduler": ["diffusers", "AmusedScheduler"],
    }
    (root / "model_index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    transformer.save_pretrained(root / "transformer", dtype=dtype)
    (root / "scheduler").mkdir()
    sched = {"_class_name": "AmusedScheduler", "mask_token_id": int(mask_token_id), "masking_schedule": "cosine"}
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(sched, indent=2) + "\n", encoding="utf-8")
    return root
