//! Paella v3's f4 VQGAN (the official `src/vqgan.py`: `VQModel`, `ResBlock`; the same design
//! as diffusers' `PaellaVQModel`): 8192 four-dimensional codes, a 256-px image ↔ 64×64 tokens.
//! Struct fields mirror the state-dict keys. Activations are channels-last (`[B, H, W, C]`).
//!
//! Images are in [0, 1] both ways (what the official apps feed and clamp to).

use super::resample::Resample;
use super::{indices, layout_error, shape_of};
use crate::error::{Error, Result};
use crate::gpu::{Recorder, Tensor};
use crate::io::{Checkpoint, Loader};
use crate::models::nn::Linear;
use crate::ops;
use crate::ops::conv::{Conv2dSpec, PadMode};
use crate::ops::matmul::Activation;
use crate::ops::norm::NormSpec;

/// Sizes of an f4 VQGAN, read from its tensors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Channels per level, shallowest first (`c_levels`: 192, 384).
    pub c_levels: Vec<usize>,
    pub c_latent: usize,
    pub codebook_size: usize,
    /// ResBlocks at the decoder's deepest level.
    pub bottleneck_blocks: usize,
}

impl Config {
    /// # Errors
    /// Missing tensors or a block layout unlike `VQModel`'s.
    pub fn infer(ckpt: &Checkpoint) -> Result<Self> {
        let bad = |msg: String| layout_error(ckpt, msg);
        let &[codebook_size, c_latent] = shape_of(ckpt, "vquantizer.codebook.weight", 2)? else {
            unreachable!()
        };
        // Encoder: ResBlock, then (Conv k4 s2, ResBlock) per further level, then the latent
        // projection: 2·levels entries.
        let down = indices(ckpt, "down_blocks").len();
        if down < 2 || !down.is_multiple_of(2) {
            return Err(bad(format!("{down} encoder blocks: not VQModel's layout")));
        }
        let levels = down / 2;
        let c_levels = (0..levels)
            .map(|i| {
                Ok(shape_of(
                    ckpt,
                    &format!("down_blocks.{}.depthwise.1.weight", 2 * i),
                    4,
                )?[0])
            })
            .collect::<Result<Vec<_>>>()?;
        // Decoder: the latent projection, bottleneck blocks, then (ConvT, ResBlock) per level.
        let up = indices(ckpt, "up_blocks").len();
        let bottleneck_blocks = up
            .checked_sub(1 + 2 * (levels - 1))
            .filter(|&n| n > 0)
            .ok_or_else(|| bad(format!("{up} decoder blocks for {levels} levels")))?;
        Ok(Self {
            c_levels,
            c_latent,
            codebook_size,
            bottleneck_blocks,
        })
    }

    /// The released `vqgan_f4.pt`'s configuration (18.4 M parameters).
    pub fn released() -> Self {
        Self {
            c_levels: vec![192, 384],
            c_latent: 4,
            codebook_size: 8192,
            bottleneck_blocks: 12,
        }
    }

    /// Pixels per token side: 2 (pixel shuffle) × 2 per further level.
    pub fn scale_factor(&self) -> usize {
        2 << (self.c_levels.len() - 1)
    }
}

/// `ResBlock` (the VQGAN's, a ConvNeXt-style block with six learned scalars `gammas`):
/// `x += g2·depthwise(LN(x)·(1 + g0) + g1)`, `x += g5·channelwise(LN(x)·(1 + g3) + g4)`.
struct ResBlock {
    /// LayerNorm affine terms built from the gammas: (1 + g0, g1) and (1 + g3, g4), per channel.
    norm1: (Tensor, Tensor),
    norm2: (Tensor, Tensor),
    /// `depthwise.1` (after a replication pad of 1).
    depthwise: (Tensor, Tensor),
    /// `channelwise.0`, GELU, `channelwise.2`.
    fc1: Linear,
    fc2: Linear,
    /// g2 and g5.
    gates: (f32, f32),
}

impl ResBlock {
    fn new(l: &Loader<'_>, c: usize) -> Result<Self> {
        let g = l.host("gammas", &[6])?;
        let filled = |v: f32, name: &str| l.upload(name, &[c], &vec![v; c]);
        Ok(Self {
            norm1: (
                filled(1.0 + g[0], "norm1.weight")?,
                filled(g[1], "norm1.bias")?,
            ),
            norm2: (
                filled(1.0 + g[3], "norm2.weight")?,
                filled(g[4], "norm2.bias")?,
            ),
            depthwise: (
                l.tensor("depthwise.1.weight", &[c, 1, 3, 3])?,
                l.tensor("depthwise.1.bias", &[c])?,
            ),
            fc1: Linear::new(&l.pp("channelwise.0"), c, 4 * c, true)?,
            fc2: Linear::new(&l.pp("channelwise.2"), 4 * c, c, true)?,
            gates: (g[2], g[5]),
        })
    }

    fn forward(&self, rec: &mut Recorder<'_>, x: &Tensor) -> Result<Tensor> {
        let [b, h, w, c] = *x.shape() else {
            return Err(Error::shape(
                "vqgan",
                format!("{:?} is not NHWC", x.shape()),
            ));
        };
        let norm = |rec: &mut Recorder<'_>, x: &Tensor, (wt, bs): &(Tensor, Tensor)| {
            ops::norm::layer_norm(rec, x, &NormSpec::layer(Some(wt), Some(bs), 1e-6))
        };
        let t = norm(rec, x, &self.norm1)?;
        let s = Conv2dSpec {
            groups: c,
            ..Conv2dSpec::same(1)
        };
        let t = ops::conv::depthwise_conv2d_nhwc_padded(
            rec,
            &t,
            &self.depthwise.0,
            Some(&self.depthwise.1),
            &s,
            PadMode::Replicate,
        )?;
        let x = ops::elementwise::axpby(rec, 1.0, x, self.gates.0, &t)?;
        let t = norm(rec, &x, &self.norm2)?.reshape(&[b, h * w, c])?;
        let t = self
            .fc1
            .forward_fused(rec, &t, Some(Activation::GeluErf), None)?;
        let t = self.fc2.forward(rec, &t)?.reshape(&[b, h, w, c])?;
        ops::elementwise::axpby(rec, 1.0, &x, self.gates.1, &t)
    }
}

enum Stage {
    Res(Box<ResBlock>),
    Resample(Resample),
}

impl Stage {
    fn forward(&self, rec: &mut Recorder<'_>, x: &Tensor) -> Result<Tensor> {
        match self {
            Stage::Res(r) => r.forward(rec, x),
            Stage::Resample(r) => r.forward(rec, x),
        }
    }
}

/// The f4 VQGAN.
pub struct VqModel {
    pub config: Config,
    /// `in_block.1` (after a pixel unshuffle).
    in_block: Linear,
    /// `down_blocks.0 .. 2·levels − 2`.
    down_blocks: Vec<Stage>,
    /// `down_blocks.{last}`: the 1×1 latent projection with its BatchNorm folded in.
    to_latent: Linear,
    /// `vquantizer.codebook.weight` `[codes, c_latent]`.
    codebook: Tensor,
    /// `up_blocks.0.0` (1×1 conv from the latent).
    from_latent: Linear,
    /// `up_blocks.1 ..`.
    up_blocks: Vec<Stage>,
    /// `out_block.0` (a pixel shuffle follows).
    out_block: Linear,
}

impl VqModel {
    pub fn new(l: &Loader<'_>, cfg: &Config) -> Result<Self> {
        let levels = cfg.c_levels.len();
        let (c0, cl, z) = (cfg.c_levels[0], cfg.c_levels[levels - 1], cfg.c_latent);
        let resample = |lp: &Loader<'_>, cin: usize, cout: usize, transposed: bool| {
            Ok::<_, Error>(Stage::Resample(Resample::new(lp, cin, cout, transposed)?))
        };
        let mut down_blocks = Vec::new();
        for (i, &c) in cfg.c_levels.iter().enumerate() {
            let d = l.pp("down_blocks");
            if i > 0 {
                down_blocks.push(resample(&d.pp(2 * i - 1), cfg.c_levels[i - 1], c, false)?);
            }
            down_blocks.push(Stage::Res(Box::new(ResBlock::new(&d.pp(2 * i), c)?)));
        }
        // The latent projection and BatchNorm2d (running statistics, eps 1e-5) as one affine
        // map: W'[o] = W[o]·s[o], b'[o] = β[o] − μ[o]·s[o], s = γ / √(σ² + eps).
        let last = l.pp("down_blocks").pp(2 * levels - 1);
        let wt = last.pp(0).host("weight", &[z, cl, 1, 1])?;
        let bn = last.pp(1);
        let (gamma, beta) = (bn.host("weight", &[z])?, bn.host("bias", &[z])?);
        let (mean, var) = (
            bn.host("running_mean", &[z])?,
            bn.host("running_var", &[z])?,
        );
        bn.skip("num_batches_tracked");
        let scale: Vec<f32> = (0..z).map(|o| gamma[o] / (var[o] + 1e-5).sqrt()).collect();
        let folded_w: Vec<f32> = (0..z * cl).map(|i| wt[i] * scale[i / cl]).collect();
        let folded_b: Vec<f32> = (0..z).map(|o| beta[o] - mean[o] * scale[o]).collect();
        let to_latent = Linear {
            weight: l.upload("to_latent.weight", &[z, cl], &folded_w)?,
            bias: Some(l.upload("to_latent.bias", &[z], &folded_b)?),
        };
        let u = l.pp("up_blocks");
        let mut up_blocks = Vec::new();
        let mut k = 1;
        for i in 0..levels {
            let c = cfg.c_levels[levels - 1 - i];
            let n = if i == 0 { cfg.bottleneck_blocks } else { 1 };
            for _ in 0..n {
                up_blocks.push(Stage::Res(Box::new(ResBlock::new(&u.pp(k), c)?)));
                k += 1;
            }
            if i + 1 < levels {
                up_blocks.push(resample(&u.pp(k), c, cfg.c_levels[levels - 2 - i], true)?);
                k += 1;
            }
        }
        Ok(Self {
            config: cfg.clone(),
            in_block: Linear::conv1x1(&l.pp("in_block.1"), 12, c0, true)?,
            down_blocks,
            to_latent,
            codebook: l.tensor("vquantizer.codebook.weight", &[cfg.codebook_size, z])?,
            from_latent: Linear::conv1x1(&u.pp("0.0"), z, cl, true)?,
            up_blocks,
            out_block: Linear::conv1x1(&l.pp("out_block.0"), c0, 12, true)?,
        })
    }

    /// Code ids u32 `[B, h, w]` → image f32 `[B, 3, 4h, 4w]` (official `decode_indices`), before
    /// clamping.
    ///
    /// # Errors
    /// Ids outside the codebook are clamped by the lookup; shapes, GPU failures.
    pub fn decode(&self, rec: &mut Recorder<'_>, ids: &Tensor) -> Result<Tensor> {
        let &[b, h, w] = ids.shape() else {
            return Err(Error::shape(
                "vqgan.decode",
                format!("ids {:?} are not [B, h, w]", ids.shape()),
            ));
        };
        let z = ops::embed::embedding(rec, &ids.reshape(&[b * h * w])?, &self.codebook)?;
        let mut x = self.from_latent.forward(rec, &z)?;
        let c = x.shape()[1];
        x = x.reshape(&[b, h, w, c])?;
        for s in &self.up_blocks {
            x = s.forward(rec, &x)?;
        }
        let [_, hh, ww, c0] = *x.shape() else {
            unreachable!()
        };
        let y = self
            .out_block
            .forward(rec, &x.reshape(&[b, hh * ww, c0])?)?;
        // Pixel shuffle: channel c·4 + i·2 + j → pixel (2y + i, 2x + j) of channel c.
        let y = ops::layout::permute(rec, &y.reshape(&[b, hh, ww, 3, 2, 2])?, &[0, 3, 1, 4, 2, 5])?;
        y.reshape(&[b, 3, 2 * hh, 2 * ww])
    }

    /// Image f32 `[B, 3, H, W]` in [0, 1] → nearest-code ids u32 `[B, H/f, W/f]` (official
    /// `encode`'s indices).
    ///
    /// # Errors
    /// Sides that are not multiples of the scale factor; GPU failures.
    pub fn encode(&self, rec: &mut Recorder<'_>, image: &Tensor) -> Result<Tensor> {
        let f = self.config.scale_factor();
        let &[b, 3, h, w] = image.shape() else {
            return Err(Error::shape(
                "vqgan.encode",
                format!("image {:?} is not [B, 3, H, W]", image.shape()),
            ));
        };
        if h % f != 0 || w % f != 0 {
            return Err(Error::shape(
                "vqgan.encode",
                format!("image {w}×{h}: sides must be multiples of {f}"),
            ));
        }
        // Pixel unshuffle: pixel (2y + i, 2x + j) of channel c → channel c·4 + i·2 + j.
        let x = ops::layout::permute(
            rec,
            &image.reshape(&[b, 3, h / 2, 2, w / 2, 2])?,
            &[0, 2, 4, 1, 3, 5],
        )?;
        let x = self
            .in_block
            .forward(rec, &x.reshape(&[b, h / 2 * (w / 2), 12])?)?;
        let mut x = x.reshape(&[b, h / 2, w / 2, self.config.c_levels[0]])?;
        for s in &self.down_blocks {
            x = s.forward(rec, &x)?;
        }
        let [_, gh, gw, c] = *x.shape() else {
            unreachable!()
        };
        let latent = self
            .to_latent
            .forward(rec, &x.reshape(&[b * gh * gw, c])?)?;
        let (ids, _) = ops::sampling::nearest_code(rec, &latent, &self.codebook)?;
        ids.reshape(&[b, gh, gw])
    }
}
