//! aMUSEd's transformer (diffusers `UVit2DModel`): token ids + text conditioning → logits over
//! the VQ codebook. Paper: Patil et al. 2024, aMUSEd, <https://arxiv.org/abs/2401.01808>.
//!
//! Activations stay channels-last (`[B, H·W, C]`) throughout: 1×1 convs are linear layers,
//! channel norms are row norms, and only the depthwise and down/upsampling convs see NCHW.

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::gpu::{GpuContext, Recorder, Tensor};
use crate::io::{Loader, read_config};
use crate::models::nn::{Attention, Linear, Norm};
use crate::ops;
use crate::ops::conv::Conv2dSpec;
use crate::ops::embed::Sinusoidal;
use crate::ops::matmul::Activation;

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

    /// Checks the sizes agree (divisibility, the mask token, micro-conditions); `file` names
    /// the config in errors.
    pub fn validate(&self, file: &Path) -> Result<()> {
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

    /// x `[B, H·W, C]`, `modulation` = this block's [`ConvNextBlock::modulation`] `[B, 2C]`.
    fn forward(
        &self,
        rec: &mut Recorder<'_>,
        x: &Tensor,
        (h, w): (usize, usize),
        modulation: &Tensor,
    ) -> Result<Tensor> {
        let [b, _, ch] = *x.shape() else {
            return Err(Error::shape("ConvNextBlock", format!("{:?}", x.shape())));
        };
        let spec = Conv2dSpec {
            groups: ch,
            ..Conv2dSpec::same(1)
        };
        let y = ops::conv::depthwise_conv2d_nhwc(
            rec,
            &x.reshape(&[b, h, w, ch])?,
            &self.depthwise,
            self.depthwise_bias.as_ref(),
            &spec,
        )?
        .reshape(&[b, h * w, ch])?;
        let y = self.norm.forward(rec, &y)?;
        let y =
            self.channelwise_linear_1
                .forward_fused(rec, &y, Some(Activation::GeluErf), None)?;
        let y = ops::norm::global_response_norm(
            rec,
            &y,
            &self.channelwise_norm_gamma,
            &self.channelwise_norm_beta,
            1e-6,
        )?;
        let y = self
            .channelwise_linear_2
            .forward_residual(rec, &y, Some(x))?;
        ops::elementwise::modulate(rec, &y, modulation)
    }

    /// `cond_embeds_mapper(SiLU(pooled condition))` `[B, 2C]`: step-invariant.
    fn modulation(&self, rec: &mut Recorder<'_>, silu_cond: &Tensor) -> Result<Tensor> {
        self.cond_embeds_mapper.forward(rec, silu_cond)
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
            attn1: Attention::cross_attention(
                &l.pp("attn1"),
                ch,
                ch,
                heads,
                ch / heads,
                c.use_bias,
                c.use_bias,
            )?,
            norm2: Norm::rms(&l.pp("norm2"), ch, 1e-6, true)?,
            attn2: Attention::cross_attention(
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

    /// Keys and values of both attentions over the (mapped) text: step-invariant.
    fn context(&self, rec: &mut Recorder<'_>, text: &Tensor) -> Result<[Tensor; 2]> {
        let kv = match &self.kv_mapper {
            Some(m) => {
                let s = ops::elementwise::silu(rec, text)?;
                m.forward(rec, &s)?
            }
            None => text.clone(),
        };
        Ok([
            self.attn1.project_context(rec, &kv)?,
            self.attn2.project_context(rec, &kv)?,
        ])
    }

    fn forward(
        &self,
        rec: &mut Recorder<'_>,
        x: &Tensor,
        [kv1, kv2]: &[Tensor; 2],
    ) -> Result<Tensor> {
        let h = self.norm1.forward(rec, x)?;
        let x = self.attn1.forward(rec, &h, Some(kv1), Some(x))?;
        let h = self.norm2.forward(rec, &x)?;
        self.attn2.forward(rec, &h, Some(kv2), Some(&x))
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

    /// The block's step-invariant conditioning: each ConvNext block's modulation and each
    /// attention block's keys and values.
    fn prepare(
        &self,
        rec: &mut Recorder<'_>,
        silu_cond: &Tensor,
        text: &Tensor,
    ) -> Result<BlockConditioning> {
        Ok(BlockConditioning {
            res_blocks: self
                .res_blocks
                .iter()
                .map(|r| r.modulation(rec, silu_cond))
                .collect::<Result<_>>()?,
            attention_blocks: self
                .attention_blocks
                .iter()
                .map(|a| a.context(rec, text))
                .collect::<Result<_>>()?,
        })
    }

    /// x `[B, h·w, C]` → `[B, h'·w', C]` and the new grid size.
    fn forward(
        &self,
        rec: &mut Recorder<'_>,
        x: &Tensor,
        (mut h, mut w): (usize, usize),
        cond: &BlockConditioning,
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
        let blocks = self.res_blocks.iter().zip(&self.attention_blocks);
        for ((res, attn), (m, kv)) in blocks.zip(cond.res_blocks.iter().zip(&cond.attention_blocks))
        {
            x = res.forward(rec, &x, (h, w), m)?;
            x = attn.forward(rec, &x, kv)?;
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

    /// `linear(SiLU(c))` `[B, 2·hidden]` = `[scale | shift]`: step-invariant.
    fn modulation(&self, rec: &mut Recorder<'_>, silu_cond: &Tensor) -> Result<Tensor> {
        self.linear.forward(rec, silu_cond)
    }

    /// norm(x)·(1 + scale) + shift, one dispatch.
    fn forward(&self, rec: &mut Recorder<'_>, x: &Tensor, modulation: &Tensor) -> Result<Tensor> {
        self.norm.forward_modulated(rec, x, modulation)
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
            attn1: Attention::self_attention(
                &l.pp("attn1"),
                d,
                heads,
                d / heads,
                c.use_bias,
                c.use_bias,
            )?,
            norm2: AdaNorm::new(&l.pp("norm2"), c, true)?,
            attn2: Attention::cross_attention(
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

    /// The layer's step-invariant conditioning.
    fn prepare(
        &self,
        rec: &mut Recorder<'_>,
        silu_cond: &Tensor,
        text: &Tensor,
    ) -> Result<LayerConditioning> {
        Ok(LayerConditioning {
            norm1: self.norm1.modulation(rec, silu_cond)?,
            norm2: self.norm2.modulation(rec, silu_cond)?,
            norm3: self.norm3.modulation(rec, silu_cond)?,
            attn2: self.attn2.project_context(rec, text)?,
        })
    }

    /// 11 dispatches: three modulated norms, self-attention (QKV, attention, out + residual),
    /// cross-attention (Q, attention, out + residual), GEGLU feed-forward (proj with the gate
    /// in its epilogue, out + residual).
    fn forward(
        &self,
        rec: &mut Recorder<'_>,
        x: &Tensor,
        cond: &LayerConditioning,
    ) -> Result<Tensor> {
        let n = self.norm1.forward(rec, x, &cond.norm1)?;
        let x = self.attn1.forward(rec, &n, None, Some(x))?;
        let n = self.norm2.forward(rec, &x, &cond.norm2)?;
        let x = self.attn2.forward(rec, &n, Some(&cond.attn2), Some(&x))?;
        let n = self.norm3.forward(rec, &x, &cond.norm3)?;
        let f = self.ff_proj.forward_gated(rec, &n, Activation::GeluErf)?;
        self.ff_out.forward_residual(rec, &f, Some(&x))
    }
}

/// A transformer layer's step-invariant inputs: the three norms' `[scale | shift]`
/// `[B, 2·hidden]` and the cross-attention's keys and values `[B, L, 2·hidden]`.
struct LayerConditioning {
    norm1: Tensor,
    norm2: Tensor,
    norm3: Tensor,
    attn2: Tensor,
}

/// A `UVitBlock`'s step-invariant inputs: per ConvNext block its modulation `[B, 2C]`, per
/// attention block the keys and values of its two attentions.
struct BlockConditioning {
    res_blocks: Vec<Tensor>,
    attention_blocks: Vec<[Tensor; 2]>,
}

/// Everything of a forward pass that depends on the conditioning alone (text, pooled text,
/// micro-conditions) and not on the tokens, computed once by [`UVit2DModel::prepare`] and
/// reused by every decoding step: Muse's conditioning is the same at every step.
pub struct PreparedConditioning {
    /// Rows of conditioning (the transformer's batch).
    pub batch: usize,
    down_block: BlockConditioning,
    layers: Vec<LayerConditioning>,
    up_block: BlockConditioning,
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
    /// `embed.conv(embed.layer_norm(embed.embeddings.weight))` `[vocab_size, block_out_channels]`:
    /// the token embedding's norm and 1×1 conv act on each table row alone, so they are applied
    /// to the table once at load and a step's embedding is one lookup.
    embed_table: Tensor,
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
        let embed_table = {
            let embeddings = l.tensor("embed.embeddings.weight", &[c.vocab_size, ic])?;
            let norm = Norm::rms(&l.pp("embed.layer_norm"), ic, eps, affine)?;
            let conv = Linear::conv1x1(&l.pp("embed.conv"), ic, ch, bias)?;
            if l.checking() {
                embeddings
            } else {
                let mut rec = l.ctx().recorder();
                let n = norm.forward(&mut rec, &embeddings)?;
                let t = conv.forward(&mut rec, &n)?;
                rec.submit();
                t
            }
        };
        Ok(Self {
            config: c.clone(),
            encoder_proj: Linear::new(&l.pp("encoder_proj"), c.encoder_hidden_size, d, bias)?,
            encoder_proj_layer_norm: Norm::rms(&l.pp("encoder_proj_layer_norm"), d, eps, affine)?,
            embed_table,
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

    /// tokens u32 `[B, h, w]` (mask id allowed) → logits `[B, h·w, codebook_size]`:
    /// [`UVit2DModel::prepare`] then [`UVit2DModel::forward_prepared`].
    pub fn forward(
        &self,
        rec: &mut Recorder<'_>,
        tokens: &Tensor,
        cond: &Conditioning<'_>,
    ) -> Result<Tensor> {
        let prepared = self.prepare(rec, cond)?;
        self.forward_prepared(rec, tokens, &prepared)
    }

    /// The step-invariant part of a forward pass for `B` rows of conditioning: the projected
    /// text, the pooled condition's embedding, and from them every cross-attention's keys and
    /// values and every adaptive norm's and ConvNext block's modulation.
    pub fn prepare(
        &self,
        rec: &mut Recorder<'_>,
        cond: &Conditioning<'_>,
    ) -> Result<PreparedConditioning> {
        let c = &self.config;
        let b = cond.pooled.shape().first().copied().unwrap_or(0);
        if b == 0
            || cond.pooled.shape() != [b, c.cond_embed_dim]
            || cond.micro_conds.shape() != [b, 5]
            || cond.hidden.shape().len() != 3
            || cond.hidden.shape()[0] != b
        {
            return Err(Error::shape(
                "UVit2DModel",
                format!(
                    "pooled {:?} / hidden {:?} / micro_conds {:?} do not agree (want [B, {}], [B, L, {}] and [B, 5])",
                    cond.pooled.shape(),
                    cond.hidden.shape(),
                    cond.micro_conds.shape(),
                    c.cond_embed_dim,
                    c.encoder_hidden_size
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
        let e =
            self.cond_embed_linear_1
                .forward_fused(rec, &cond_in, Some(Activation::Silu), None)?;
        let pooled_emb = self.cond_embed_linear_2.forward(rec, &e)?;
        // Every modulation reads SiLU(pooled_emb).
        let silu_cond = ops::elementwise::silu(rec, &pooled_emb)?;
        Ok(PreparedConditioning {
            batch: b,
            down_block: self.down_block.prepare(rec, &silu_cond, &text)?,
            layers: self
                .transformer_layers
                .iter()
                .map(|layer| layer.prepare(rec, &silu_cond, &text))
                .collect::<Result<_>>()?,
            up_block: self.up_block.prepare(rec, &silu_cond, &text)?,
        })
    }

    /// tokens u32 `[b, h, w]` (mask id allowed) → logits `[B, h·w, codebook_size]` for the `B`
    /// rows of `prepared`; `B` must be a multiple of `b`, and row `r` reads the tokens of image
    /// `r mod b` (so `[uncond; cond]` conditioning runs one token grid through both branches).
    pub fn forward_prepared(
        &self,
        rec: &mut Recorder<'_>,
        tokens: &Tensor,
        prepared: &PreparedConditioning,
    ) -> Result<Tensor> {
        self.forward_positioned(rec, tokens, prepared, None)
    }

    /// [`UVit2DModel::forward_prepared`] with a learned position table `[1, h·w,
    /// block_out_channels]` added to the token embeddings (the super-resolution transformer's;
    /// the released aMUSEd models have none).
    pub(crate) fn forward_positioned(
        &self,
        rec: &mut Recorder<'_>,
        tokens: &Tensor,
        prepared: &PreparedConditioning,
        positions: Option<&Tensor>,
    ) -> Result<Tensor> {
        let [tb, h, w] = *tokens.shape() else {
            return Err(Error::shape(
                "UVit2DModel",
                format!("tokens {:?} are not [B, h, w]", tokens.shape()),
            ));
        };
        let b = prepared.batch;
        if tb == 0 || !b.is_multiple_of(tb) {
            return Err(Error::shape(
                "UVit2DModel",
                format!("{tb} token grids for {b} rows of conditioning"),
            ));
        }
        let x = ops::embed::embedding_repeated(
            rec,
            &tokens.reshape(&[tb, h * w])?,
            &self.embed_table,
            b / tb,
        )?;
        let x = match positions {
            Some(p) => {
                if p.shape() != [1, h * w, self.config.block_out_channels] {
                    return Err(Error::shape(
                        "UVit2DModel",
                        format!(
                            "a {h}×{w} token grid; the position table is {:?}",
                            p.shape()
                        ),
                    ));
                }
                ops::elementwise::add(rec, &x, p)?
            }
            None => x,
        };
        let (x, grid) = self
            .down_block
            .forward(rec, &x, (h, w), &prepared.down_block)?;
        let x = self.project_to_hidden_norm.forward(rec, &x)?;
        let mut x = self.project_to_hidden.forward(rec, &x)?;
        for (layer, cond) in self.transformer_layers.iter().zip(&prepared.layers) {
            x = layer.forward(rec, &x, cond)?;
            // The layer's intermediates go back to the pool for the next layer.
            rec.flush();
        }
        let x = self.project_from_hidden_norm.forward(rec, &x)?;
        let x = self.project_from_hidden.forward(rec, &x)?;
        let (x, _) = self.up_block.forward(rec, &x, grid, &prepared.up_block)?;
        let x = self.mlm_conv1.forward(rec, &x)?;
        let x = self.mlm_layer_norm.forward(rec, &x)?;
        self.mlm_conv2.forward(rec, &x)
    }
}
