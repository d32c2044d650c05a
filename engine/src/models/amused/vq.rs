//! The VQ image tokenizer of aMUSEd (diffusers `VQModel`): codebook ids → image (decode) and
//! image → nearest-code ids (encode). Activations are NCHW.

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::gpu::{GpuContext, Recorder, Tensor};
use crate::io::{Loader, read_config};
use crate::models::nn::{Attention, Linear};
use crate::ops;
use crate::ops::conv::Conv2dSpec;

/// `vqvae/config.json` of a diffusers `VQModel` (keys and defaults as there).
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct Config {
    pub in_channels: usize,
    pub out_channels: usize,
    pub down_block_types: Vec<String>,
    pub up_block_types: Vec<String>,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub act_fn: String,
    pub latent_channels: usize,
    pub norm_num_groups: usize,
    pub num_vq_embeddings: usize,
    pub vq_embed_dim: Option<usize>,
    pub norm_type: String,
    pub mid_block_add_attention: bool,
    pub lookup_from_codebook: bool,
    pub force_upcast: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            down_block_types: vec!["DownEncoderBlock2D".into()],
            up_block_types: vec!["UpDecoderBlock2D".into()],
            block_out_channels: vec![64],
            layers_per_block: 1,
            act_fn: "silu".into(),
            latent_channels: 3,
            norm_num_groups: 32,
            num_vq_embeddings: 256,
            vq_embed_dim: None,
            norm_type: "group".into(),
            mid_block_add_attention: true,
            lookup_from_codebook: false,
            force_upcast: false,
        }
    }
}

impl Config {
    /// The VQ of amused-256 and amused-512 (huggingface.co/amused/amused-256, vqvae/config.json).
    pub fn amused() -> Self {
        Self {
            down_block_types: vec!["DownEncoderBlock2D".into(); 5],
            up_block_types: vec!["UpDecoderBlock2D".into(); 5],
            block_out_channels: vec![128, 256, 256, 512, 768],
            layers_per_block: 2,
            latent_channels: 64,
            num_vq_embeddings: 8192,
            mid_block_add_attention: false,
            lookup_from_codebook: true,
            force_upcast: true,
            ..Self::default()
        }
    }

    /// Checks the block and channel settings agree; `file` names the config in errors.
    pub fn validate(&self, file: &Path) -> Result<()> {
        let n = self.block_out_channels.len();
        if n == 0 {
            return Err(Error::config(file, "block_out_channels", "is empty"));
        }
        if self.down_block_types.len() != n
            || self
                .down_block_types
                .iter()
                .any(|t| t != "DownEncoderBlock2D")
        {
            return Err(Error::config(
                file,
                "down_block_types",
                format!(
                    "need {n} × \"DownEncoderBlock2D\", got {:?}",
                    self.down_block_types
                ),
            ));
        }
        if self.up_block_types.len() != n
            || self.up_block_types.iter().any(|t| t != "UpDecoderBlock2D")
        {
            return Err(Error::config(
                file,
                "up_block_types",
                format!(
                    "need {n} × \"UpDecoderBlock2D\", got {:?}",
                    self.up_block_types
                ),
            ));
        }
        if self.act_fn != "silu" {
            return Err(Error::config(
                file,
                "act_fn",
                format!("only \"silu\" is supported, got {:?}", self.act_fn),
            ));
        }
        if self.norm_type != "group" {
            return Err(Error::config(
                file,
                "norm_type",
                format!("only \"group\" is supported, got {:?}", self.norm_type),
            ));
        }
        let g = self.norm_num_groups;
        if g == 0 || self.block_out_channels.iter().any(|c| c % g != 0) {
            return Err(Error::config(
                file,
                "norm_num_groups",
                format!("{g} must divide every block_out_channels entry"),
            ));
        }
        Ok(())
    }

    pub fn embed_dim(&self) -> usize {
        self.vq_embed_dim.unwrap_or(self.latent_channels)
    }

    /// Pixels per token side: 2^(number of blocks − 1).
    pub fn scale_factor(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}

pub(crate) struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
}

impl GroupNorm {
    pub(crate) fn new(l: &Loader<'_>, ch: usize, groups: usize) -> Result<Self> {
        Ok(Self {
            weight: l.tensor("weight", &[ch])?,
            bias: l.tensor("bias", &[ch])?,
            groups,
        })
    }

    pub(crate) fn forward(&self, rec: &mut Recorder<'_>, x: &Tensor, silu: bool) -> Result<Tensor> {
        ops::norm::group_norm(
            rec,
            x,
            self.groups,
            Some(&self.weight),
            Some(&self.bias),
            1e-6,
            silu,
        )
    }
}

/// `nn.Conv2d` with bias.
pub(crate) struct Conv {
    weight: Tensor,
    bias: Tensor,
    spec: Conv2dSpec,
}

impl Conv {
    pub(crate) fn new(
        l: &Loader<'_>,
        cin: usize,
        cout: usize,
        k: usize,
        spec: Conv2dSpec,
    ) -> Result<Self> {
        Ok(Self {
            weight: l.tensor("weight", &[cout, cin, k, k])?,
            bias: l.tensor("bias", &[cout])?,
            spec,
        })
    }

    pub(crate) fn same(l: &Loader<'_>, cin: usize, cout: usize, k: usize) -> Result<Self> {
        Self::new(l, cin, cout, k, Conv2dSpec::same(k / 2))
    }

    pub(crate) fn forward(&self, rec: &mut Recorder<'_>, x: &Tensor) -> Result<Tensor> {
        ops::conv::conv2d(rec, x, &self.weight, Some(&self.bias), &self.spec)
    }
}

/// `ResnetBlock2D` (no time embedding): GN → SiLU → conv → GN → SiLU → conv, plus the input
/// (through a 1×1 `conv_shortcut` when the channel count changes).
pub(crate) struct ResnetBlock {
    norm1: GroupNorm,
    conv1: Conv,
    norm2: GroupNorm,
    conv2: Conv,
    conv_shortcut: Option<Conv>,
}

impl ResnetBlock {
    fn new(l: &Loader<'_>, cin: usize, cout: usize, groups: usize) -> Result<Self> {
        Self::with_shortcut(l, cin, cout, groups, "conv_shortcut")
    }

    /// The block with its 1×1 shortcut (when the channel count changes) under `shortcut`
    /// (taming names it `nin_shortcut`).
    pub(crate) fn with_shortcut(
        l: &Loader<'_>,
        cin: usize,
        cout: usize,
        groups: usize,
        shortcut: &str,
    ) -> Result<Self> {
        Ok(Self {
            norm1: GroupNorm::new(&l.pp("norm1"), cin, groups)?,
            conv1: Conv::same(&l.pp("conv1"), cin, cout, 3)?,
            norm2: GroupNorm::new(&l.pp("norm2"), cout, groups)?,
            conv2: Conv::same(&l.pp("conv2"), cout, cout, 3)?,
            conv_shortcut: if cin != cout {
                Some(Conv::same(&l.pp(shortcut), cin, cout, 1)?)
            } else {
                None
            },
        })
    }

    pub(crate) fn forward(&self, rec: &mut Recorder<'_>, x: &Tensor) -> Result<Tensor> {
        let h = self.norm1.forward(rec, x, true)?;
        let h = self.conv1.forward(rec, &h)?;
        let h = self.norm2.forward(rec, &h, true)?;
        let h = self.conv2.forward(rec, &h)?;
        let skip = match &self.conv_shortcut {
            Some(c) => c.forward(rec, x)?,
            None => x.clone(),
        };
        ops::elementwise::add(rec, &skip, &h)
    }
}

/// The mid-block's `Attention` over H·W positions: group norm, one head as wide as the
/// channels, biased projections, residual connection.
struct MidAttention {
    group_norm: GroupNorm,
    attn: Attention,
}

impl MidAttention {
    fn new(l: &Loader<'_>, ch: usize, groups: usize) -> Result<Self> {
        Ok(Self {
            group_norm: GroupNorm::new(&l.pp("group_norm"), ch, groups)?,
            attn: Attention::self_attention(l, ch, 1, ch, true, true)?,
        })
    }

    fn forward(&self, rec: &mut Recorder<'_>, x: &Tensor) -> Result<Tensor> {
        let [b, c, h, w] = *x.shape() else {
            return Err(Error::shape("vq attention", format!("{:?}", x.shape())));
        };
        let n = self.group_norm.forward(rec, x, false)?;
        let tokens = ops::layout::permute(rec, &n.reshape(&[b, c, h * w])?, &[0, 2, 1])?;
        let a = self.attn.forward(rec, &tokens, None, None)?;
        let a = ops::layout::permute(rec, &a, &[0, 2, 1])?.reshape(&[b, c, h, w])?;
        ops::elementwise::add(rec, &a, x)
    }
}

/// `UNetMidBlock2D`: resnet, then (attention, resnet).
struct MidBlock {
    resnet0: ResnetBlock,
    attention: Option<MidAttention>,
    resnet1: ResnetBlock,
}

impl MidBlock {
    fn new(l: &Loader<'_>, ch: usize, c: &Config) -> Result<Self> {
        let g = c.norm_num_groups;
        Ok(Self {
            resnet0: ResnetBlock::new(&l.pp("resnets.0"), ch, ch, g)?,
            attention: if c.mid_block_add_attention {
                Some(MidAttention::new(&l.pp("attentions.0"), ch, g)?)
            } else {
                None
            },
            resnet1: ResnetBlock::new(&l.pp("resnets.1"), ch, ch, g)?,
        })
    }

    fn forward(&self, rec: &mut Recorder<'_>, x: &Tensor) -> Result<Tensor> {
        let mut h = self.resnet0.forward(rec, x)?;
        if let Some(a) = &self.attention {
            h = a.forward(rec, &h)?;
        }
        self.resnet1.forward(rec, &h)
    }
}

struct UpBlock {
    resnets: Vec<ResnetBlock>,
    upsampler: Option<Conv>,
}

struct DownBlock {
    resnets: Vec<ResnetBlock>,
    downsampler: Option<Conv>,
}

pub struct VqModel {
    pub config: Config,
    codebook: Tensor,
    // decoder
    post_quant_conv: Linear,
    decoder_conv_in: Conv,
    decoder_mid: MidBlock,
    up_blocks: Vec<UpBlock>,
    decoder_norm_out: GroupNorm,
    decoder_conv_out: Conv,
    // encoder
    encoder_conv_in: Conv,
    down_blocks: Vec<DownBlock>,
    encoder_mid: MidBlock,
    encoder_norm_out: GroupNorm,
    encoder_conv_out: Conv,
    quant_conv: Conv,
}

impl VqModel {
    /// Loads `config.json` and the weights of a diffusers `vqvae/` folder.
    pub fn load(ctx: &GpuContext, dir: &Path) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let config: Config = read_config(&cfg_path)?;
        config.validate(&cfg_path)?;
        // The reference runs the VQ in f32 (force_upcast), so weights are widened on load.
        Loader::load_component(
            ctx,
            dir,
            &["diffusion_pytorch_model", "model"],
            false,
            |l| Self::new(l, &config),
        )
    }

    pub fn new(l: &Loader<'_>, c: &Config) -> Result<Self> {
        let ch = &c.block_out_channels;
        let n = ch.len();
        let g = c.norm_num_groups;
        let (lat, emb) = (c.latent_channels, c.embed_dim());
        let top = ch[n - 1];
        let dec = l.pp("decoder");
        let mut up_blocks = Vec::new();
        let mut prev = top;
        for (i, &out) in ch.iter().rev().enumerate() {
            let b = dec.pp("up_blocks").pp(i);
            let resnets = (0..=c.layers_per_block)
                .map(|j| {
                    ResnetBlock::new(
                        &b.pp("resnets").pp(j),
                        if j == 0 { prev } else { out },
                        out,
                        g,
                    )
                })
                .collect::<Result<_>>()?;
            let upsampler = if i + 1 < n {
                Some(Conv::same(&b.pp("upsamplers.0.conv"), out, out, 3)?)
            } else {
                None
            };
            up_blocks.push(UpBlock { resnets, upsampler });
            prev = out;
        }
        let enc = l.pp("encoder");
        let mut down_blocks = Vec::new();
        let mut prev = ch[0];
        for (i, &out) in ch.iter().enumerate() {
            let b = enc.pp("down_blocks").pp(i);
            let resnets = (0..c.layers_per_block)
                .map(|j| {
                    ResnetBlock::new(
                        &b.pp("resnets").pp(j),
                        if j == 0 { prev } else { out },
                        out,
                        g,
                    )
                })
                .collect::<Result<_>>()?;
            let downsampler = if i + 1 < n {
                // Downsample2D(padding=0): zero-pad right/bottom by one, 3×3 stride 2.
                let spec = Conv2dSpec {
                    stride: [2, 2],
                    padding: [0, 1, 0, 1],
                    groups: 1,
                };
                Some(Conv::new(&b.pp("downsamplers.0.conv"), out, out, 3, spec)?)
            } else {
                None
            };
            down_blocks.push(DownBlock {
                resnets,
                downsampler,
            });
            prev = out;
        }
        Ok(Self {
            config: c.clone(),
            codebook: l.tensor("quantize.embedding.weight", &[c.num_vq_embeddings, emb])?,
            post_quant_conv: Linear::conv1x1(&l.pp("post_quant_conv"), emb, lat, true)?,
            decoder_conv_in: Conv::same(&dec.pp("conv_in"), lat, top, 3)?,
            decoder_mid: MidBlock::new(&dec.pp("mid_block"), top, c)?,
            up_blocks,
            decoder_norm_out: GroupNorm::new(&dec.pp("conv_norm_out"), ch[0], g)?,
            decoder_conv_out: Conv::same(&dec.pp("conv_out"), ch[0], c.out_channels, 3)?,
            encoder_conv_in: Conv::same(&enc.pp("conv_in"), c.in_channels, ch[0], 3)?,
            down_blocks,
            encoder_mid: MidBlock::new(&enc.pp("mid_block"), top, c)?,
            encoder_norm_out: GroupNorm::new(&enc.pp("conv_norm_out"), top, g)?,
            encoder_conv_out: Conv::same(&enc.pp("conv_out"), top, lat, 3)?,
            quant_conv: Conv::same(&l.pp("quant_conv"), lat, emb, 1)?,
        })
    }

    /// Code ids u32 `[B, h, w]` → image `[B, out_channels, h·f, w·f]`, unclipped (the reference
    /// pipeline clips to [0, 1] afterwards).
    pub fn decode(&self, rec: &mut Recorder<'_>, ids: &Tensor) -> Result<Tensor> {
        let [b, h, w] = *ids.shape() else {
            return Err(Error::shape(
                "vq decode",
                format!("ids {:?} are not [B, h, w]", ids.shape()),
            ));
        };
        let emb = self.config.embed_dim();
        // Codebook lookup, then post_quant_conv (1×1) channels-last, then NCHW.
        let z = ops::embed::embedding(rec, &ids.reshape(&[b, h * w])?, &self.codebook)?;
        let z = self.post_quant_conv.forward(rec, &z)?;
        let lat = self.config.latent_channels;
        let z = ops::layout::permute(rec, &z.reshape(&[b, h, w, lat])?, &[0, 3, 1, 2])?;
        debug_assert_eq!(emb, self.codebook.shape()[1]);
        let mut x = self.decoder_conv_in.forward(rec, &z)?;
        x = self.decoder_mid.forward(rec, &x)?;
        for block in &self.up_blocks {
            for r in &block.resnets {
                x = r.forward(rec, &x)?;
            }
            if let Some(up) = &block.upsampler {
                x = ops::conv::upsample_nearest(rec, &x, 2)?;
                x = up.forward(rec, &x)?;
            }
            // Lets the next block reuse this one's activations (they grow 4× per block).
            rec.flush();
        }
        let x = self.decoder_norm_out.forward(rec, &x, true)?;
        self.decoder_conv_out.forward(rec, &x)
    }

    /// Image `[B, in_channels, H, W]` with values in [0, 1] → pre-quantisation latents
    /// `[B, embed_dim, H/f, W/f]` (after quant_conv).
    pub fn encode_latents(&self, rec: &mut Recorder<'_>, image: &Tensor) -> Result<Tensor> {
        let f = self.config.scale_factor();
        match *image.shape() {
            [_, c, h, w]
                if c == self.config.in_channels && h % f == 0 && w % f == 0 && h > 0 && w > 0 => {}
            _ => {
                return Err(Error::shape(
                    "vq encode",
                    format!(
                        "image {:?} must be [B, {}, H, W] with H and W multiples of {f}",
                        image.shape(),
                        self.config.in_channels
                    ),
                ));
            }
        }
        let mut x = self.encoder_conv_in.forward(rec, image)?;
        for block in &self.down_blocks {
            for r in &block.resnets {
                x = r.forward(rec, &x)?;
            }
            if let Some(d) = &block.downsampler {
                x = d.forward(rec, &x)?;
            }
        }
        x = self.encoder_mid.forward(rec, &x)?;
        let x = self.encoder_norm_out.forward(rec, &x, true)?;
        let x = self.encoder_conv_out.forward(rec, &x)?;
        self.quant_conv.forward(rec, &x)
    }

    /// Image → nearest-code ids u32 `[B, h, w]`.
    pub fn encode(&self, rec: &mut Recorder<'_>, image: &Tensor) -> Result<Tensor> {
        let z = self.encode_latents(rec, image)?;
        let [b, e, h, w] = *z.shape() else {
            return Err(Error::shape("vq encode", format!("{:?}", z.shape())));
        };
        let rows = ops::layout::permute(rec, &z, &[0, 2, 3, 1])?.reshape(&[b * h * w, e])?;
        let (ids, _) = ops::sampling::nearest_code(rec, &rows, &self.codebook)?;
        ids.reshape(&[b, h, w])
    }
}
