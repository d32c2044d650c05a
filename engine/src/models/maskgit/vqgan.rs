//! MaskGIT's VQGAN tokenizer (google-research/maskgit `nets/vqgan_tokenizer.py`): code ids →
//! image (decoder) and image → nearest-code ids (encoder + quantizer). Activations are NCHW.
//!
//! GroupNorm has 32 groups and eps 1e-6, the activation is swish, convolutions are "SAME",
//! and there is no attention. The encoder halves the resolution with 2×2 average pooling after
//! every level but the last; the decoder doubles it with nearest-neighbour upsampling and a 3×3
//! conv. Quirk of the official ResBlock: when the channel count changes, its 1×1 shortcut is
//! applied to the block's *output*, so the block returns `h + W·h` and drops its input.
//!
//! Fields mirror the Flax module paths: `decoder/ResBlock_7/Conv_1` is
//! `decoder.res_block[7].conv_1`, `decoder/Conv_2` is `decoder.conv[2]` (Flax numbers the
//! submodules of each kind in the order the forward pass creates them).

use crate::error::{Error, Result};
use crate::gpu::{Recorder, Tensor};
use crate::io::flax::{FlaxFile, FlaxLoader};
use crate::ops;
use crate::ops::conv::Conv2dSpec;

const GROUPS: usize = 32;
const GN_EPS: f32 = 1e-6;
const CODEBOOK: &str = "params/quantizer/codebook";

/// Sizes of a MaskGIT VQGAN, all read off its checkpoint's arrays.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub in_channels: usize,
    pub out_channels: usize,
    /// Channels of the encoder's first conv.
    pub filters: usize,
    /// Channels of each level, `filters × channel_multipliers[i]`, highest resolution first.
    pub channels: Vec<usize>,
    pub num_res_blocks: usize,
    pub embedding_dim: usize,
    pub codebook_size: usize,
}

impl Config {
    /// The ImageNet tokenizer (`tokenizer_imagenet256_checkpoint`): f16, 1024 codes.
    pub fn imagenet() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            filters: 128,
            channels: vec![128, 128, 256, 256, 512],
            num_res_blocks: 2,
            embedding_dim: 256,
            codebook_size: 1024,
        }
    }

    /// Reads the sizes from `file`'s arrays.
    pub fn infer(file: &FlaxFile) -> Result<Self> {
        let bad = |key: &str, message: String| Error::config(file.source(), key, message);
        let &[codebook_size, embedding_dim] =
            file.shape_of_rank(CODEBOOK, 2).map_err(|e| match e {
                Error::MissingTensor { name, file } => Error::file(
                    &file,
                    format!("{name} is missing: not a MaskGIT VQGAN tokenizer checkpoint"),
                ),
                e => e,
            })?
        else {
            unreachable!("rank checked")
        };
        let conv_in = "params/encoder/Conv_0/kernel";
        let &[_, _, in_channels, filters] = file.shape_of_rank(conv_in, 4)? else {
            unreachable!("rank checked")
        };
        // Decoder: Conv_0 (in), one upsampling conv per level but the lowest, the output conv.
        let convs = file.indices("params/decoder/Conv_");
        let levels = convs.last().map_or(0, |c| *c);
        if levels == 0 {
            return Err(bad(
                "params/decoder/Conv_*",
                format!("{} decoder convs; need at least 2", convs.len()),
            ));
        }
        // Decoder ResBlocks: num_res_blocks in the middle and in each level.
        let blocks = file.indices("params/decoder/ResBlock_");
        let count = blocks.last().map_or(0, |b| b + 1);
        let num_res_blocks = count / (levels + 1);
        if num_res_blocks == 0 || !count.is_multiple_of(levels + 1) {
            return Err(bad(
                "params/decoder/ResBlock_*",
                format!(
                    "{count} decoder ResBlocks do not split evenly over the middle and {levels} \
                     levels (the decoder has {} convs)",
                    levels + 1
                ),
            ));
        }
        let channels = (0..levels)
            .map(|i| {
                let block = num_res_blocks * (levels - i);
                let key = format!("params/decoder/ResBlock_{block}/Conv_1/kernel");
                Ok(file.shape_of_rank(&key, 4)?[3])
            })
            .collect::<Result<Vec<_>>>()?;
        let conv_out = format!("params/decoder/Conv_{levels}/kernel");
        let out_channels = file.shape_of_rank(&conv_out, 4)?[3];
        if let Some(c) = std::iter::once(filters)
            .chain(channels.iter().copied())
            .find(|c| c % GROUPS != 0)
        {
            return Err(bad(
                conv_in,
                format!(
                    "{c} channels (filters {filters}, levels {channels:?}) do not split into \
                     GroupNorm's {GROUPS} groups"
                ),
            ));
        }
        Ok(Self {
            in_channels,
            out_channels,
            filters,
            channels,
            num_res_blocks,
            embedding_dim,
            codebook_size,
        })
    }

    pub fn levels(&self) -> usize {
        self.channels.len()
    }

    /// Pixels per token side: 2^(levels − 1).
    pub fn scale_factor(&self) -> usize {
        1 << (self.levels() - 1)
    }

    /// `channels[i] / filters` (the official config's `channel_multipliers`).
    pub fn channel_multipliers(&self) -> Vec<f32> {
        self.channels
            .iter()
            .map(|&c| c as f32 / self.filters as f32)
            .collect()
    }
}

/// Flax `nn.GroupNorm` (32 groups, eps 1e-6): scale and bias.
struct GroupNorm {
    scale: Tensor,
    bias: Tensor,
}

impl GroupNorm {
    fn new(l: &FlaxLoader<'_>, ch: usize) -> Result<Self> {
        Ok(Self {
            scale: l.tensor("scale", &[ch])?,
            bias: l.tensor("bias", &[ch])?,
        })
    }

    /// GroupNorm, then swish.
    fn forward_swish(&self, rec: &mut Recorder<'_>, x: &Tensor) -> Result<Tensor> {
        ops::norm::group_norm(
            rec,
            x,
            GROUPS,
            Some(&self.scale),
            Some(&self.bias),
            GN_EPS,
            true,
        )
    }
}

/// Flax `nn.Conv` with "SAME" padding: kernel HWIO (stored) → OIHW.
struct Conv {
    weight: Tensor,
    bias: Option<Tensor>,
    spec: Conv2dSpec,
}

impl Conv {
    fn new(l: &FlaxLoader<'_>, k: usize, cin: usize, cout: usize, bias: bool) -> Result<Self> {
        Ok(Self {
            weight: l.permuted("kernel", &[k, k, cin, cout], &[3, 2, 0, 1])?,
            bias: if bias {
                Some(l.tensor("bias", &[cout])?)
            } else {
                None
            },
            spec: Conv2dSpec::same(k / 2),
        })
    }

    fn forward(&self, rec: &mut Recorder<'_>, x: &Tensor) -> Result<Tensor> {
        ops::conv::conv2d(rec, x, &self.weight, self.bias.as_ref(), &self.spec)
    }
}

/// `ResBlock`: GN → swish → conv3×3 → GN → swish → conv3×3 (no biases), plus the input, or
/// — when the channel count changes — plus the 1×1 `Conv_2` of the output (the official quirk).
struct ResBlock {
    group_norm_0: GroupNorm,
    conv_0: Conv,
    group_norm_1: GroupNorm,
    conv_1: Conv,
    conv_2: Option<Conv>,
}

impl ResBlock {
    fn new(l: &FlaxLoader<'_>, cin: usize, cout: usize) -> Result<Self> {
        Ok(Self {
            group_norm_0: GroupNorm::new(&l.pp("GroupNorm_0"), cin)?,
            conv_0: Conv::new(&l.pp("Conv_0"), 3, cin, cout, false)?,
            group_norm_1: GroupNorm::new(&l.pp("GroupNorm_1"), cout)?,
            conv_1: Conv::new(&l.pp("Conv_1"), 3, cout, cout, false)?,
            conv_2: if cin != cout {
                Some(Conv::new(&l.pp("Conv_2"), 1, cout, cout, false)?)
            } else {
                None
            },
        })
    }

    fn forward(&self, rec: &mut Recorder<'_>, x: &Tensor) -> Result<Tensor> {
        let h = self.group_norm_0.forward_swish(rec, x)?;
        let h = self.conv_0.forward(rec, &h)?;
        let h = self.group_norm_1.forward_swish(rec, &h)?;
        let h = self.conv_1.forward(rec, &h)?;
        let residual = match &self.conv_2 {
            Some(shortcut) => shortcut.forward(rec, &h)?,
            None => x.clone(),
        };
        ops::elementwise::add(rec, &h, &residual)
    }
}

/// `encoder`: Conv_0 (no bias) → per level num_res_blocks ResBlocks (2×2 average pool between
/// levels) → num_res_blocks ResBlocks → GroupNorm → swish → 1×1 Conv_1 (bias) to the codebook
/// dimension.
struct Encoder {
    conv: [Conv; 2],
    res_block: Vec<ResBlock>,
    group_norm_0: GroupNorm,
    /// Depthwise 2×2 kernels of 0.25 (average pooling) for each level that pools.
    pool: Vec<Tensor>,
}

/// `decoder`: Conv_0 (bias) → num_res_blocks ResBlocks → from the lowest level up:
/// num_res_blocks ResBlocks, then (above level 0) nearest ×2 and a 3×3 conv → GroupNorm →
/// swish → 3×3 conv to RGB.
struct Decoder {
    conv: Vec<Conv>,
    res_block: Vec<ResBlock>,
    group_norm_0: GroupNorm,
}

pub struct Vqgan {
    pub config: Config,
    encoder: Encoder,
    decoder: Decoder,
    codebook: Tensor,
}

impl Vqgan {
    /// Builds the tokenizer from a loader at the file's root (arrays under `params/`).
    pub fn new(l: &FlaxLoader<'_>, c: &Config) -> Result<Self> {
        let p = l.pp("params");
        let ch = &c.channels;
        let top = ch[c.levels() - 1];
        let nrb = c.num_res_blocks;

        let enc = p.pp("encoder");
        let mut res_block = Vec::new();
        let mut pool = Vec::new();
        let mut prev = c.filters;
        for (i, &out) in ch.iter().enumerate() {
            for _ in 0..nrb {
                res_block.push(ResBlock::new(
                    &enc.pp(format!("ResBlock_{}", res_block.len())),
                    prev,
                    out,
                )?);
                prev = out;
            }
            if i + 1 < ch.len() {
                pool.push(Tensor::from_f32(
                    l.ctx(),
                    "encoder.avg_pool",
                    &[out, 1, 2, 2],
                    &vec![0.25; 4 * out],
                )?);
            }
        }
        for _ in 0..nrb {
            res_block.push(ResBlock::new(
                &enc.pp(format!("ResBlock_{}", res_block.len())),
                top,
                top,
            )?);
        }
        let encoder = Encoder {
            conv: [
                Conv::new(&enc.pp("Conv_0"), 3, c.in_channels, c.filters, false)?,
                Conv::new(&enc.pp("Conv_1"), 1, top, c.embedding_dim, true)?,
            ],
            res_block,
            group_norm_0: GroupNorm::new(&enc.pp("GroupNorm_0"), top)?,
            pool,
        };

        let dec = p.pp("decoder");
        let mut conv = vec![Conv::new(&dec.pp("Conv_0"), 3, c.embedding_dim, top, true)?];
        let mut res_block = Vec::new();
        for _ in 0..nrb {
            res_block.push(ResBlock::new(
                &dec.pp(format!("ResBlock_{}", res_block.len())),
                top,
                top,
            )?);
        }
        let mut prev = top;
        for (i, &out) in ch.iter().enumerate().rev() {
            for _ in 0..nrb {
                res_block.push(ResBlock::new(
                    &dec.pp(format!("ResBlock_{}", res_block.len())),
                    prev,
                    out,
                )?);
                prev = out;
            }
            if i > 0 {
                conv.push(Conv::new(
                    &dec.pp(format!("Conv_{}", conv.len())),
                    3,
                    out,
                    out,
                    true,
                )?);
            }
        }
        conv.push(Conv::new(
            &dec.pp(format!("Conv_{}", conv.len())),
            3,
            ch[0],
            c.out_channels,
            true,
        )?);
        let decoder = Decoder {
            conv,
            res_block,
            group_norm_0: GroupNorm::new(&dec.pp("GroupNorm_0"), ch[0])?,
        };
        Ok(Self {
            config: c.clone(),
            encoder,
            decoder,
            codebook: p.tensor("quantizer/codebook", &[c.codebook_size, c.embedding_dim])?,
        })
    }

    /// Code ids u32 `[B, h, w]` → image `[B, out_channels, h·f, w·f]`, unclipped (the official
    /// demo clips to [0, 1] afterwards).
    pub fn decode(&self, rec: &mut Recorder<'_>, ids: &Tensor) -> Result<Tensor> {
        let [b, h, w] = *ids.shape() else {
            return Err(Error::shape(
                "MaskGIT decode",
                format!("ids {:?} are not [B, h, w]", ids.shape()),
            ));
        };
        let dim = self.config.embedding_dim;
        let z = ops::embed::embedding(rec, &ids.reshape(&[b, h * w])?, &self.codebook)?;
        let z = ops::layout::permute(rec, &z.reshape(&[b, h, w, dim])?, &[0, 3, 1, 2])?;
        let d = &self.decoder;
        let nrb = self.config.num_res_blocks;
        let mut blocks = d.res_block.iter();
        let mut convs = d.conv.iter();
        let mut next_conv = || {
            convs
                .next()
                .ok_or_else(|| Error::shape("MaskGIT decode", "decoder conv count"))
        };
        let mut x = next_conv()?.forward(rec, &z)?;
        for block in blocks.by_ref().take(nrb) {
            x = block.forward(rec, &x)?;
        }
        for level in (0..self.config.levels()).rev() {
            for block in blocks.by_ref().take(nrb) {
                x = block.forward(rec, &x)?;
            }
            if level > 0 {
                x = ops::conv::upsample_nearest(rec, &x, 2)?;
                x = next_conv()?.forward(rec, &x)?;
            }
            // Lets the next level reuse this one's activations.
            rec.flush();
        }
        let x = d.group_norm_0.forward_swish(rec, &x)?;
        next_conv()?.forward(rec, &x)
    }

    /// Image `[B, in_channels, H, W]` with values in [0, 1] → latents before quantisation
    /// `[B, embedding_dim, H/f, W/f]`.
    pub fn encode_latents(&self, rec: &mut Recorder<'_>, image: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let f = c.scale_factor();
        match *image.shape() {
            [_, ch, h, w] if ch == c.in_channels && h > 0 && w > 0 && h % f == 0 && w % f == 0 => {}
            _ => {
                return Err(Error::shape(
                    "MaskGIT encode",
                    format!(
                        "image {:?} must be [B, {}, H, W] with H and W multiples of {f}",
                        image.shape(),
                        c.in_channels
                    ),
                ));
            }
        }
        let e = &self.encoder;
        let mut x = e.conv[0].forward(rec, image)?;
        let mut blocks = e.res_block.iter();
        for level in 0..c.levels() {
            for block in blocks.by_ref().take(c.num_res_blocks) {
                x = block.forward(rec, &x)?;
            }
            if let Some(kernel) = e.pool.get(level) {
                let spec = Conv2dSpec {
                    stride: [2, 2],
                    padding: [0; 4],
                    groups: kernel.shape()[0],
                };
                x = ops::conv::conv2d(rec, &x, kernel, None, &spec)?;
            }
        }
        for block in blocks {
            x = block.forward(rec, &x)?;
        }
        let x = e.group_norm_0.forward_swish(rec, &x)?;
        e.conv[1].forward(rec, &x)
    }

    /// Image `[B, in_channels, H, W]` in [0, 1] → nearest-code ids u32 `[B, H/f, W/f]`
    /// (squared Euclidean distance, first code on ties).
    pub fn encode(&self, rec: &mut Recorder<'_>, image: &Tensor) -> Result<Tensor> {
        let z = self.encode_latents(rec, image)?;
        let [b, e, h, w] = *z.shape() else {
            return Err(Error::shape("MaskGIT encode", format!("{:?}", z.shape())));
        };
        let rows = ops::layout::permute(rec, &z, &[0, 2, 3, 1])?.reshape(&[b * h * w, e])?;
        let (ids, _) = ops::sampling::nearest_code(rec, &rows, &self.codebook)?;
        ids.reshape(&[b, h, w])
    }
}
