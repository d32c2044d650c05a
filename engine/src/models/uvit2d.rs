//! aMUSEd's transformer (diffusers `UVit2DModel`): token ids + text conditioning → logits over
//! the VQ codebook. Paper: Patil et al. 2024, aMUSEd, <https://arxiv.org/abs/2401.01808>.
//!
//! Activations stay channels-last (`[B, H·W, C]`) throughout: 1×1 convs are linear layers,
//! channel norms are row norms, and only the depthwise and down/upsampling convs see NCHW.

use std::path::Path;

use serde::Deserialize;

use super::nn::{Attention, Linear, Norm};
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, Recorder, Tensor};
use crate::io::{Loader, read_config};
use crate::ops;
use crate::ops::conv::Conv2dSpec;
use crate::ops::embed::Sinusoidal;

/// `transformer/config.json` of a diffusers `UVit2DModel` (keys and defaults as there).
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct Config {
    pub hidden_size: usize,
    pub use_bias: bool,
    pub cond_embed_dim: usize,
    pub micro_cond_encode_dim: usize,
    pub micro_cond_embed_dim: usize,
    pub encoder_hidden_size: usize,
    pub vocab_size: usize,
    pub codebook_size: usize,
    pub in_channels: usize,
    pub block_out_channels: usize,
    pub num_res_blocks: usize,
    pub downsample: bool,
    pub upsample: bool,
    pub block_num_heads: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub layer_norm_eps: f32,
    pub ln_elementwise_affine: bool,
    pub sample_size: usize,
}

impl Default for Config {
    fn default() -> Self {
        // diffusers defaults (= amused-256 apart from sample_size).
        Self {
            hidden_size: 1024,
            use_bias: false,
            cond_embed_dim: 768,
            micro_cond_encode_dim: 256,
            micro_cond_embed_dim: 1280,
            encoder_hidden_size: 768,
            vocab_size: 8256,
            codebook_size: 8192,
            in_channels: 768,
            block_out_channels: 768,
            num_res_blocks: 3,
            downsample: false,
            upsample: false,
            block_num_heads: 12,
            num_hidden_layers: 22,
            num_attention_heads: 16,
            intermediate_size: 2816,
            layer_norm_eps: 1e-6,
            ln_elementwise_affine: true,
            sample_size: 64,
        }
    }
}

impl Config {
    /// amused-256 (huggingface.co/amused/amused-256, transformer/config.json).
    pub fn amused_256() -> Self {
        Self {
            sample_size: 16,
            ..Self::default()
        }
    }

    /// amused-512 (huggingface.co/amused/amused-512, transformer/config.json).
    pub fn amused_512() -> Self {
        Self {
            sample_size: 32,
            downsample: true,
            upsample: true,
            ..Self::default()
        }
    }

    fn validate(&self, file: &Path) -> Result<()> {
        let div = |key: &str, a: usize, b: usize| {
            if b == 0 || !a.is_multiple_of(b) {
                Err(Error::config(file, key, format!("{b} must divide {a}")))
            } else {
                Ok(())
            }
        };
        div(
            "block_num_heads",
            self.block_out_channels,
            self.block_num_heads,
        )?;
        div(
            "num_attention_heads",
            self.hidden_size,
            self.num_attention_heads,
        )?;
        if self.vocab_size <= self.codebook_size {
            return Err(Error::config(
                file,
                "vocab_size",
                "must exceed codebook_size (mask token)",
            ));
        }
        if self.micro_cond_embed_dim != 5 * self.micro_cond_encode_dim {
            return Err(Error::config(
                file,
                "micro_cond_embed_dim",
                "must be 5 × micro_cond_encode_dim (five micro-conditions)",
            ));
        }
        Ok(())
    }

    /// The mask token id the pipeline uses: the last vocabulary row.
    pub fn mask_token_id(&self) -> u32 {
        (self.vocab_size - 1) as u32
    }
}

/// `ConvNextBlock`.
struct ConvNextBlock {
    depthwise: Tensor,
    depthwise_bias: Option<Tensor>,
    norm: Norm,
    channelwise_linear_1: Linear,
    channelwise_norm_gamma: Tensor,
    channelwise_norm_beta: Tensor,
    channelwise_linear_2: Linear,
    cond_embeds_mapper: Linear,
}

impl ConvNextBlock {
    fn new(l: &Loader<'_>, c: &Config) -> Result<Self> {
        let ch = c.block_out_channels;
        let wide = ch * 4;
        Ok(Self {
            depthwise: l.tensor("depthwise.weight", &[ch, 1, 3, 3])?,
            depthwise_bias: if c.use_bias {
                Some(l.tensor("depthwise.bias", &[ch])?)
            } else {
                None
            },
            norm: Norm::rms(&l.pp("norm"), ch, c.layer_norm_eps, c.ln_elementwise_affine)?,
            channelwise_linear_1: Linear::new(&l.pp("channelwise_linear_1"), ch, wide, c.use_bias)?,
            channelwise_norm_gamma: l.tensor("channelwise_norm.gamma", &[1, 1, 1, wide])?,
            channelwise_norm_beta: l.tensor("channelwise_norm.beta", &[1, 1, 1, wide])?,
            channelwise_linear_2: Linear::new(&l.pp("channelwise_linear_2"), wide, ch, c.use_bias)?,
            cond_embeds_mapper: Linear::new(
                &l.pp("cond_embeds_mapper"),
                c.hidden_size,
                2 * ch,
                c.use_bias,
            )?,
        })
    }

    /// x `[B, H·W, C]`, `silu_cond` = SiLU(pooled condition) `[B, hidden]`.
    fn forward(
        &self,
        rec: &mut Recorder<'_>,
        x: &Tensor,
        (h, w): (usize, usize),
        silu_cond: &Tensor,
    ) -> Result<Tensor> {
        let [b, _, ch] = *x.shape() else {
            return Err(Error::shape("ConvNextBlock", format!("{:?}", x.shape())));
        };
        let nchw = ops::layout::permute(rec, &x.reshape(&[b, h, w, ch])?, &[0, 3, 1, 2])?;
        let spec = Conv2dSpec {
            groups: ch,
            ..Conv2dSpec::same(1)
        };
        let y = ops::conv::conv2d(
            rec,
            &nchw,
            &self.depthwise,
            self.depthwise_bias.as_ref(),
            &spec,
        )?;
        let y = ops::layout::permute(rec, &y, &[0, 2, 3, 1])?.reshape(&[b, h * w, ch])?;
        let y = self.norm.forward(rec, &y)?;
        let y = self.channelwise_linear_1.forward(rec, &y)?;
        let y = ops::elementwise::gelu(rec, &y)?;
        let y = ops::norm::global_response_norm(
            rec,
            &y,
            &self.channelwise_norm_gamma,
            &self.channelwise_norm_beta,
            1e-6,
        )?;
        let y = self.channelwise_linear_2.forward(rec, &y)?;
        let y = ops::elementwise::add(rec, &y, x)?;
        let m = self.cond_embeds_mapper.forward(rec, silu_cond)?;
        ops::elementwise::modulate(rec, &y, &m)
    }
}

/// `SkipFFTransformerBlock`: two cross-attentions to the (mapped) text states, no feed-forward.
struct SkipFfTransformerBlock {
    kv_mapper: Option<Linear>,
    norm1: Norm,
    attn1: Attention,
    norm2: Norm,
    attn2: Attention,
}

impl SkipFfTransformerBlock {
    fn new(l: &Loader<'_>, c: &Config) -> Result<Self> {
        let ch = c.block_out_channels;
        let heads = c.block_num_heads;
        Ok(Self {
            kv_mapper: if c.hidden_size != ch {
                Some(Linear::new(
                    &l.pp("kv_mapper"),
                    c.hidden_size,
                    ch,
                    c.use_bias,
                )?)
            } else {
                None
            },
            norm1: Norm::rms(&l.pp("norm1"), ch, 1e-6, true)?,
            attn1: Attention::new(
                &l.pp("attn1"),
                ch,
                ch,
                heads,
                ch / heads,
                c.use_bias,
                c.use_bias,
            )?,
            norm2: Norm::rms(&l.pp("norm2"), ch, 1e-6, true)?,
            attn2: Attention::new(
                &l.pp("attn2"),
                ch,
                ch,
                heads,
                ch / heads,
                c.use_bias,
                c.use_bias,
            )?,
        })
    }

    fn forward(&self, rec: &mut Recorder<'_>, x: &Tensor, text: &Tensor) -> Result<Tensor> {
        let kv = match &self.kv_mapper {
            Some(m) => {
                let s = ops::elementwise::silu(rec, text)?;
                m.forward(rec, &s)?
            }
            None => text.clone(),
        };
        let h = self.norm1.forward(rec, x)?;
        let a = self.attn1.forward(rec, &h, &kv)?;
        let x = ops::elementwise::add(rec, &a, x)?;
        let h = self.norm2.forward(rec, &x)?;
        let a = self.attn2.forward(rec, &h, &kv)?;
        ops::elementwise::add(rec, &a, &x)
    }
}

/// `UVitBlock`: optional 2×2 downsample, then (ConvNext, attention) pairs, optional upsample.
struct UVitBlock {
    downsample: Option<(Norm, Tensor, Option<Tensor>)>,
    res_blocks: Vec<ConvNextBlock>,
    attention_blocks: Vec<SkipFfTransformerBlock>,
    upsample: Option<(Norm, Tensor, Option<Tensor>)>,
}

impl UVitBlock {
    fn new(l: &Loader<'_>, c: &Config, down: bool, up: bool) -> Result<Self> {
        let ch = c.block_out_channels;
        let resample = |name: &str| -> Result<(Norm, Tensor, Option<Tensor>)> {
            let s = l.pp(name);
            Ok((
                Norm::rms(&s.pp("norm"), ch, c.layer_norm_eps, c.ln_elementwise_affine)?,
                s.tensor("conv.weight", &[ch, ch, 2, 2])?,
                if c.use_bias {
                    Some(s.tensor("conv.bias", &[ch])?)
                } else {
                    None
                },
            ))
        };
        Ok(Self {
            downsample: if down {
                Some(resample("downsample")?)
            } else {
                None
            },
            res_blocks: (0..c.num_res_blocks)
                .map(|i| ConvNextBlock::new(&l.pp("res_blocks").pp(i), c))
                .collect::<Result<_>>()?,
            attention_blocks: (0..c.num_res_blocks)
                .map(|i| SkipFfTransformerBlock::new(&l.pp("attention_blocks").pp(i), c))
                .collect::<Result<_>>()?,
            upsample: if up {
                Some(resample("upsample")?)
            } else {
                None
            },
        })
    }

    /// x `[B, h·w, C]` → `[B, h'·w', C]` and the new grid size.
    fn forward(
        &self,
        rec: &mut Recorder<'_>,
        x: &Tensor,
        (mut h, mut w): (usize, usize),
        silu_cond: &Tensor,
        text: &Tensor,
    ) -> Result<(Tensor, (usize, usize))> {
        let b = x.shape()[0];
        let ch = x.shape()[2];
        let mut x = x.clone();
        if let Some((norm, weight, bias)) = &self.downsample {
            // RMSNorm over channels, zero-pad right/bottom by one, 2×2 stride-2 conv.
            let n = norm.forward(rec, &x)?;
            let nchw = ops::layout::permute(rec, &n.reshape(&[b, h, w, ch])?, &[0, 3, 1, 2])?;
            let spec = Conv2dSpec {
                stride: [2, 2],
                padding: [0, 1, 0, 1],
                groups: 1,
            };
            let y = ops::conv::conv2d(rec, &nchw, weight, bias.as_ref(), &spec)?;
            (h, w) = (y.shape()[2], y.shape()[3]);
            x = ops::layout::permute(rec, &y, &[0, 2, 3, 1])?.reshape(&[b, h * w, ch])?;
        }
        for (res, attn) in self.res_blocks.iter().zip(&self.attention_blocks) {
            x = res.forward(rec, &x, (h, w), silu_cond)?;
            x = attn.forward(rec, &x, text)?;
        }
        if let Some((norm, weight, bias)) = &self.upsample {
            let n = norm.forward(rec, &x)?;
            let nchw = ops::layout::permute(rec, &n.reshape(&[b, h, w, ch])?, &[0, 3, 1, 2])?;
            let y = ops::conv::conv_transpose2d(rec, &nchw, weight, bias.as_ref(), 2, 0)?;
            (h, w) = (y.shape()[2], y.shape()[3]);
            x = ops::layout::permute(rec, &y, &[0, 2, 3, 1])?.reshape(&[b, h * w, ch])?;
        }
        Ok((x, (h, w)))
    }
}

/// `AdaLayerNormContinuous`: norm(x)·(1 + scale) + shift with (scale, shift) = linear(SiLU(c)).
struct AdaNorm {
    linear: Linear,
    norm: Norm,
}

impl AdaNorm {
    fn new(l: &Loader<'_>, c: &Config, rms: bool) -> Result<Self> {
        let d = c.hidden_size;
        let n = l.pp("norm");
        Ok(Self {
            linear: Linear::new(&l.pp("linear"), d, 2 * d, c.use_bias)?,
            norm: if rms {
                Norm::rms(&n, d, c.layer_norm_eps, c.ln_elementwise_affine)?
            } else {
                Norm::layer(&n, d, c.layer_norm_eps, c.ln_elementwise_affine, c.use_bias)?
            },
        })
    }

    fn forward(&self, rec: &mut Recorder<'_>, x: &Tensor, silu_cond: &Tensor) -> Result<Tensor> {
        let emb = self.linear.forward(rec, silu_cond)?;
        let n = self.norm.forward(rec, x)?;
        ops::elementwise::modulate(rec, &n, &emb)
    }
}

/// `BasicTransformerBlock` with norm_type "ada_norm_continuous" and a GEGLU feed-forward.
struct TransformerLayer {
    norm1: AdaNorm,
    attn1: Attention,
    norm2: AdaNorm,
    attn2: Attention,
    norm3: AdaNorm,
    ff_proj: Linear,
    ff_out: Linear,
}

impl TransformerLayer {
    fn new(l: &Loader<'_>, c: &Config) -> Result<Self> {
        let d = c.hidden_size;
        let heads = c.num_attention_heads;
        Ok(Self {
            norm1: AdaNorm::new(&l.pp("norm1"), c, true)?,
            attn1: Attention::new(
                &l.pp("attn1"),
                d,
                d,
                heads,
                d / heads,
                c.use_bias,
                c.use_bias,
            )?,
            norm2: AdaNorm::new(&l.pp("norm2"), c, true)?,
            attn2: Attention::new(
                &l.pp("attn2"),
                d,
                d,
                heads,
                d / heads,
                c.use_bias,
                c.use_bias,
            )?,
            norm3: AdaNorm::new(&l.pp("norm3"), c, false)?,
            ff_proj: Linear::new(
                &l.pp("ff.net.0.proj"),
                d,
                2 * c.intermediate_size,
                c.use_bias,
            )?,
            ff_out: Linear::new(&l.pp("ff.net.2"), c.intermediate_size, d, c.use_bias)?,
        })
    }

    fn forward(
        &self,
        rec: &mut Recorder<'_>,
        x: &Tensor,
        text: &Tensor,
        silu_cond: &Tensor,
    ) -> Result<Tensor> {
        let n = self.norm1.forward(rec, x, silu_cond)?;
        let a = self.attn1.forward(rec, &n, &n)?;
        let x = ops::elementwise::add(rec, &a, x)?;
        let n = self.norm2.forward(rec, &x, silu_cond)?;
        let a = self.attn2.forward(rec, &n, text)?;
        let x = ops::elementwise::add(rec, &a, &x)?;
        let n = self.norm3.forward(rec, &x, silu_cond)?;
        let f = self.ff_proj.forward(rec, &n)?;
        let f = ops::elementwise::geglu(rec, &f)?;
        let f = self.ff_out.forward(rec, &f)?;
        ops::elementwise::add(rec, &f, &x)
    }
}

/// Conditioning inputs of one forward pass.
pub struct Conditioning<'a> {
    /// Pooled text embedding `[B, cond_embed_dim]`.
    pub pooled: &'a Tensor,
    /// Text hidden states `[B, L, encoder_hidden_size]`.
    pub hidden: &'a Tensor,
    /// `[B, 5]`: width, height, crop top, crop left, aesthetic score.
    pub micro_conds: &'a Tensor,
}

pub struct UVit2DModel {
    pub config: Config,
    encoder_proj: Linear,
    encoder_proj_layer_norm: Norm,
    embed_embeddings: Tensor,
    embed_layer_norm: Norm,
    embed_conv: Linear,
    cond_embed_linear_1: Linear,
    cond_embed_linear_2: Linear,
    down_block: UVitBlock,
    project_to_hidden_norm: Norm,
    project_to_hidden: Linear,
    transformer_layers: Vec<TransformerLayer>,
    project_from_hidden_norm: Norm,
    project_from_hidden: Linear,
    up_block: UVitBlock,
    mlm_conv1: Linear,
    mlm_layer_norm: Norm,
    mlm_conv2: Linear,
}

impl UVit2DModel {
    /// Loads `config.json` and the weights of a diffusers `transformer/` folder.
    pub fn load(ctx: &GpuContext, dir: &Path) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let config: Config = read_config(&cfg_path)?;
        config.validate(&cfg_path)?;
        Loader::load_component(ctx, dir, &["diffusion_pytorch_model", "model"], true, |l| {
            Self::new(l, &config)
        })
    }

    /// Builds the model from any loader (e.g. a checkpoint made in memory for benchmarks).
    pub fn new(l: &Loader<'_>, c: &Config) -> Result<Self> {
        let (d, ch, ic) = (c.hidden_size, c.block_out_channels, c.in_channels);
        let (eps, affine, bias) = (c.layer_norm_eps, c.ln_elementwise_affine, c.use_bias);
        Ok(Self {
            config: c.clone(),
            encoder_proj: Linear::new(&l.pp("encoder_proj"), c.encoder_hidden_size, d, bias)?,
            encoder_proj_layer_norm: Norm::rms(&l.pp("encoder_proj_layer_norm"), d, eps, affine)?,
            embed_embeddings: l.tensor("embed.embeddings.weight", &[c.vocab_size, ic])?,
            embed_layer_norm: Norm::rms(&l.pp("embed.layer_norm"), ic, eps, affine)?,
            embed_conv: Linear::conv1x1(&l.pp("embed.conv"), ic, ch, bias)?,
            cond_embed_linear_1: Linear::new(
                &l.pp("cond_embed.linear_1"),
                c.micro_cond_embed_dim + c.cond_embed_dim,
                d,
                bias,
            )?,
            cond_embed_linear_2: Linear::new(&l.pp("cond_embed.linear_2"), d, d, bias)?,
            down_block: UVitBlock::new(&l.pp("down_block"), c, c.downsample, false)?,
            project_to_hidden_norm: Norm::rms(&l.pp("project_to_hidden_norm"), ch, eps, affine)?,
            project_to_hidden: Linear::new(&l.pp("project_to_hidden"), ch, d, bias)?,
            transformer_layers: (0..c.num_hidden_layers)
                .map(|i| TransformerLayer::new(&l.pp("transformer_layers").pp(i), c))
                .collect::<Result<_>>()?,
            project_from_hidden_norm: Norm::rms(&l.pp("project_from_hidden_norm"), d, eps, affine)?,
            project_from_hidden: Linear::new(&l.pp("project_from_hidden"), d, ch, bias)?,
            up_block: UVitBlock::new(&l.pp("up_block"), c, false, c.upsample)?,
            mlm_conv1: Linear::conv1x1(&l.pp("mlm_layer.conv1"), ch, ic, bias)?,
            mlm_layer_norm: Norm::rms(&l.pp("mlm_layer.layer_norm"), ic, eps, affine)?,
            mlm_conv2: Linear::conv1x1(&l.pp("mlm_layer.conv2"), ic, c.codebook_size, bias)?,
        })
    }

    /// tokens u32 `[B, h, w]` (mask id allowed) → logits `[B, h·w, codebook_size]`.
    pub fn forward(
        &self,
        rec: &mut Recorder<'_>,
        tokens: &Tensor,
        cond: &Conditioning<'_>,
    ) -> Result<Tensor> {
        let c = &self.config;
        let [b, h, w] = *tokens.shape() else {
            return Err(Error::shape(
                "UVit2DModel",
                format!("tokens {:?} are not [B, h, w]", tokens.shape()),
            ));
        };
        if cond.pooled.shape() != [b, c.cond_embed_dim] || cond.micro_conds.shape() != [b, 5] {
            return Err(Error::shape(
                "UVit2DModel",
                format!(
                    "pooled {:?} / micro_conds {:?} do not match batch {b} (want [{b}, {}] and [{b}, 5])",
                    cond.pooled.shape(),
                    cond.micro_conds.shape(),
                    c.cond_embed_dim
                ),
            ));
        }
        // Text: project to the hidden size and RMS-normalise.
        let text = self.encoder_proj.forward(rec, cond.hidden)?;
        let text = self.encoder_proj_layer_norm.forward(rec, &text)?;
        // Pooled condition: [pooled | sinusoid(micro_conds)] → TimestepEmbedding.
        let micro = ops::embed::sinusoidal_embedding(
            rec,
            &cond.micro_conds.reshape(&[b * 5])?,
            &Sinusoidal {
                flip_sin_to_cos: true,
                downscale_freq_shift: 0.0,
                ..Sinusoidal::new(c.micro_cond_encode_dim)
            },
        )?
        .reshape(&[b, c.micro_cond_embed_dim])?;
        let cond_in = ops::layout::concat(rec, &[cond.pooled, &micro], 1)?;
        let e = self.cond_embed_linear_1.forward(rec, &cond_in)?;
        let e = ops::elementwise::silu(rec, &e)?;
        let pooled_emb = self.cond_embed_linear_2.forward(rec, &e)?;
        // Every modulation reads SiLU(pooled_emb).
        let silu_cond = ops::elementwise::silu(rec, &pooled_emb)?;

        let x = ops::embed::embedding(rec, &tokens.reshape(&[b, h * w])?, &self.embed_embeddings)?;
        let x = self.embed_layer_norm.forward(rec, &x)?;
        let x = self.embed_conv.forward(rec, &x)?;
        let (x, grid) = self
            .down_block
            .forward(rec, &x, (h, w), &silu_cond, &text)?;
        let x = self.project_to_hidden_norm.forward(rec, &x)?;
        let mut x = self.project_to_hidden.forward(rec, &x)?;
        for layer in &self.transformer_layers {
            x = layer.forward(rec, &x, &text, &silu_cond)?;
            // The layer's intermediates go back to the pool for the next layer.
            rec.flush();
        }
        let x = self.project_from_hidden_norm.forward(rec, &x)?;
        let x = self.project_from_hidden.forward(rec, &x)?;
        let (x, _) = self.up_block.forward(rec, &x, grid, &silu_cond, &text)?;
        let x = self.mlm_conv1.forward(rec, &x)?;
        let x = self.mlm_layer_norm.forward(rec, &x)?;
        self.mlm_conv2.forward(rec, &x)
    }
}
