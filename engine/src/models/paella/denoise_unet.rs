//! Paella v1's generator (the official `modules.py` of the first paper version:
//! `DenoiseUNet`, `ResBlock`, `ModulatedLayerNorm`), a convolutional U-Net without attention,
//! conditioned by a per-image vector `s = [CLIP text embedding ‖ noise-level embedding]` that
//! every block maps to its norm's modulation. Struct fields mirror the checkpoint keys
//! (`down_blocks.1.3.cond_mapper.weight` is `down_blocks[1]`'s block 3). Channels-last.

use super::resample::Resample;
use super::{indices, layout_error, r_embedding, shape_of};
use crate::error::{Error, Result};
use crate::gpu::{Recorder, Tensor};
use crate::io::{Checkpoint, Loader};
use crate::models::nn::Linear;
use crate::ops;
use crate::ops::conv::{Conv2dSpec, PadMode};
use crate::ops::matmul::Activation;
use crate::ops::norm::NormSpec;

/// Sizes of a v1 generator, read from its tensors (the noise-level width is the condition
/// width minus the CLIP embedding's, which the text encoder gives).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub num_labels: usize,
    /// Width per level, shallowest first (`c_levels`).
    pub c_levels: Vec<usize>,
    /// `c_clip + c_r`.
    pub c_cond: usize,
    pub down_levels: Vec<usize>,
    pub up_levels: Vec<usize>,
}

impl Config {
    /// # Errors
    /// Missing tensors or a layout unlike `DenoiseUNet`'s.
    pub fn infer(ckpt: &Checkpoint) -> Result<Self> {
        let bad = |msg: String| layout_error(ckpt, msg);
        let &[num_labels, _] = shape_of(ckpt, "embedding.weight", 2)? else {
            unreachable!()
        };
        let res_blocks = |prefix: &str| -> Vec<usize> {
            indices(ckpt, prefix)
                .into_iter()
                .filter(|j| ckpt.contains(&format!("{prefix}.{j}.depthwise.1.weight")))
                .collect()
        };
        let levels = indices(ckpt, "down_blocks").len();
        if levels == 0 || indices(ckpt, "up_blocks").len() != levels {
            return Err(bad("down and up levels do not match".into()));
        }
        let mut c_levels = Vec::new();
        let mut down_levels = Vec::new();
        for i in 0..levels {
            let blocks = res_blocks(&format!("down_blocks.{i}"));
            let first = blocks
                .first()
                .ok_or_else(|| bad(format!("down_blocks.{i} has no ResBlock")))?;
            c_levels.push(
                shape_of(
                    ckpt,
                    &format!("down_blocks.{i}.{first}.depthwise.1.weight"),
                    4,
                )?[0],
            );
            down_levels.push(blocks.len());
        }
        let up_levels = (0..levels)
            .map(|i| res_blocks(&format!("up_blocks.{i}")).len())
            .collect();
        let c_cond = shape_of(ckpt, "down_blocks.0.0.cond_mapper.weight", 2)?[1];
        Ok(Self {
            num_labels,
            c_levels,
            c_cond,
            down_levels,
            up_levels,
        })
    }
}

impl Config {
    /// The released `model_600000.pt`'s configuration (the official constructor's defaults:
    /// 578 M parameters with a 1024-d CLIP embedding and a 64-d noise-level embedding).
    pub fn released() -> Self {
        Self {
            num_labels: 8192,
            c_levels: vec![320, 640, 1280],
            c_cond: 1024 + 64,
            down_levels: vec![4, 8, 16],
            up_levels: vec![16, 8, 4],
        }
    }
}

/// `ResBlock`: reflection-padded depthwise conv → `ModulatedLayerNorm` (an affine LayerNorm
/// times γ·w plus β·w, w = `cond_mapper(s)`) → [‖ skip] → `channelwise` (Linear 4×, GELU,
/// Linear) × layer scale `gamma` → + x.
struct ResBlock {
    /// `depthwise.1`
    depthwise: (Tensor, Tensor),
    /// `ln.ln.{weight, bias}`
    ln: (Tensor, Tensor),
    /// `cond_mapper` folded with `ln.gamma`, `ln.beta`: `[γ·W; β·W]`, `[γ·b − 1; β·b]`, so its
    /// output is the `[scale | shift]` of a `·(1 + scale) + shift` modulation.
    modulation: Linear,
    /// `channelwise.0`
    fc1: Linear,
    /// `channelwise.2` with the layer scale `gamma` folded into its rows.
    fc2: Linear,
}

impl ResBlock {
    fn new(l: &Loader<'_>, c: usize, c_cond: usize, c_skip: usize) -> Result<Self> {
        let g = l.pp("ln").host("gamma", &[1, 1, 1])?[0];
        let b = l.pp("ln").host("beta", &[1, 1, 1])?[0];
        let cm = l.pp("cond_mapper");
        let (w, bias) = (cm.host("weight", &[c, c_cond])?, cm.host("bias", &[c])?);
        let mod_w: Vec<f32> = w
            .iter()
            .map(|v| g * v)
            .chain(w.iter().map(|v| b * v))
            .collect();
        let mod_b: Vec<f32> = bias
            .iter()
            .map(|v| g * v - 1.0)
            .chain(bias.iter().map(|v| b * v))
            .collect();
        let scale = l.host("gamma", &[c])?;
        let fc2 = l.pp("channelwise.2");
        let (w2, b2) = (fc2.host("weight", &[c, 4 * c])?, fc2.host("bias", &[c])?);
        let w2: Vec<f32> = w2
            .iter()
            .enumerate()
            .map(|(i, v)| v * scale[i / (4 * c)])
            .collect();
        let b2: Vec<f32> = b2.iter().zip(&scale).map(|(v, s)| v * s).collect();
        Ok(Self {
            depthwise: (
                l.tensor("depthwise.1.weight", &[c, 1, 3, 3])?,
                l.tensor("depthwise.1.bias", &[c])?,
            ),
            ln: (
                l.tensor("ln.ln.weight", &[c])?,
                l.tensor("ln.ln.bias", &[c])?,
            ),
            modulation: Linear {
                weight: l.upload("cond_mapper.modulation", &[2 * c, c_cond], &mod_w)?,
                bias: Some(l.upload("cond_mapper.modulation.bias", &[2 * c], &mod_b)?),
            },
            fc1: Linear::new(&l.pp("channelwise.0"), c + c_skip, 4 * c, true)?,
            fc2: Linear {
                weight: l.upload("channelwise.2.scaled", &[c, 4 * c], &w2)?,
                bias: Some(l.upload("channelwise.2.scaled.bias", &[c], &b2)?),
            },
        })
    }

    fn forward(
        &self,
        rec: &mut Recorder<'_>,
        x: &Tensor,
        s: &Tensor,
        skip: Option<&Tensor>,
    ) -> Result<Tensor> {
        let &[b, h, w, c] = x.shape() else {
            return Err(Error::shape(
                "paella v1",
                format!("{:?} is not NHWC", x.shape()),
            ));
        };
        let spec = Conv2dSpec {
            groups: c,
            ..Conv2dSpec::same(1)
        };
        let y = ops::conv::depthwise_conv2d_nhwc_padded(
            rec,
            x,
            &self.depthwise.0,
            Some(&self.depthwise.1),
            &spec,
            PadMode::Reflect,
        )?;
        let emb = self.modulation.forward(rec, s)?;
        let norm = NormSpec::layer(Some(&self.ln.0), Some(&self.ln.1), 1e-6);
        let mut y = ops::norm::layer_norm_modulated(rec, &y.reshape(&[b, h * w, c])?, &norm, &emb)?;
        if let Some(skip) = skip {
            let cs = skip.shape()[3];
            y = ops::layout::concat(rec, &[&y, &skip.reshape(&[b, h * w, cs])?], 2)?;
        }
        let y = self
            .fc1
            .forward_fused(rec, &y, Some(Activation::GeluErf), None)?;
        let y = self
            .fc2
            .forward_residual(rec, &y, Some(&x.reshape(&[b, h * w, c])?))?;
        y.reshape(&[b, h, w, c])
    }
}

struct Level {
    /// Down levels after the first start with a convolution; up levels before the last end
    /// with a transposed one.
    resample: Option<Resample>,
    blocks: Vec<ResBlock>,
}

/// The v1 generator.
pub struct DenoiseUNet {
    pub config: Config,
    /// `embedding` (an `nn.Embedding` `[num_labels, c_levels[0]]`).
    embedding: ops::embed::Table,
    down_blocks: Vec<Level>,
    up_blocks: Vec<Level>,
    /// `clf` (1×1 conv to the logits).
    clf: Linear,
}

impl DenoiseUNet {
    pub fn new(l: &Loader<'_>, cfg: &Config) -> Result<Self> {
        let n = cfg.c_levels.len();
        let resample = Resample::new;
        let mut down_blocks = Vec::new();
        for (i, &count) in cfg.down_levels.iter().enumerate() {
            let lv = l.pp("down_blocks").pp(i);
            let c = cfg.c_levels[i];
            let first = usize::from(i > 0);
            down_blocks.push(Level {
                resample: if i > 0 {
                    Some(resample(&lv.pp(0), cfg.c_levels[i - 1], c, false)?)
                } else {
                    None
                },
                blocks: (0..count)
                    .map(|j| ResBlock::new(&lv.pp(j + first), c, cfg.c_cond, 0))
                    .collect::<Result<_>>()?,
            });
        }
        let mut up_blocks = Vec::new();
        for (i, &count) in cfg.up_levels.iter().enumerate() {
            let lv = l.pp("up_blocks").pp(i);
            let level = n - 1 - i;
            let c = cfg.c_levels[level];
            let blocks = (0..count)
                .map(|j| {
                    let skip = if j == 0 && i > 0 { c } else { 0 };
                    ResBlock::new(&lv.pp(j), c, cfg.c_cond, skip)
                })
                .collect::<Result<_>>()?;
            up_blocks.push(Level {
                resample: if level > 0 {
                    Some(resample(&lv.pp(count), c, cfg.c_levels[level - 1], true)?)
                } else {
                    None
                },
                blocks,
            });
        }
        let c0 = cfg.c_levels[0];
        Ok(Self {
            config: cfg.clone(),
            embedding: l.table("embedding.weight", &[cfg.num_labels, c0])?,
            down_blocks,
            up_blocks,
            clf: Linear::conv1x1(&l.pp("clf"), c0, cfg.num_labels, true)?,
        })
    }

    /// What the token grid's sides must be multiples of: halved per level.
    pub fn grid_multiple(&self) -> usize {
        1 << (self.config.c_levels.len() - 1)
    }

    /// Logits `[B, h·w, num_labels]` (positions row-major) of token ids u32 `[B, h, w]` under
    /// text embeddings `clip` `[B, c_clip]` at the official `r` ∈ [0, 1] (0: all noise; the
    /// model embeds γ(r) = cos(r·π/2) in f32, as `gen_r_embedding` does).
    ///
    /// # Errors
    /// Grids whose sides are not multiples of [`Self::grid_multiple`], shapes; GPU failures.
    pub fn forward(
        &self,
        rec: &mut Recorder<'_>,
        tokens: &Tensor,
        clip: &Tensor,
        r: f32,
    ) -> Result<Tensor> {
        const OP: &str = "paella v1";
        let cfg = &self.config;
        let &[b, h, w] = tokens.shape() else {
            return Err(Error::shape(
                OP,
                format!("tokens {:?} are not [B, h, w]", tokens.shape()),
            ));
        };
        let m = self.grid_multiple();
        if h % m != 0 || w % m != 0 || h == 0 || w == 0 {
            return Err(Error::shape(
                OP,
                format!("a {h}×{w} token grid: this model needs sides that are multiples of {m}"),
            ));
        }
        let &[cb, c_clip] = clip.shape() else {
            return Err(Error::shape(
                OP,
                format!("clip {:?} is not [B, D]", clip.shape()),
            ));
        };
        if cb != b || c_clip >= cfg.c_cond {
            return Err(Error::shape(
                OP,
                format!(
                    "clip {:?} for {b} grids and a {}-wide condition",
                    clip.shape(),
                    cfg.c_cond
                ),
            ));
        }
        let c_r = cfg.c_cond - c_clip;
        let gamma = ((r * std::f32::consts::PI) / 2.0).cos();
        let r_emb = r_embedding(&vec![gamma; b], c_r);
        let r_emb = Tensor::from_f32(rec.ctx(), "r_embed", &[b, c_r], &r_emb)?;
        let s = ops::layout::concat(rec, &[clip, &r_emb], 1)?;
        let x = ops::embed::embedding_table(rec, &tokens.reshape(&[b * h * w])?, &self.embedding)?;
        let mut x = x.reshape(&[b, h, w, cfg.c_levels[0]])?;
        let mut level_outputs = Vec::new();
        for level in &self.down_blocks {
            if let Some(down) = &level.resample {
                x = down.forward(rec, &x)?;
            }
            for block in &level.blocks {
                x = block.forward(rec, &x, &s, None)?;
            }
            level_outputs.insert(0, x.clone());
        }
        let mut x = level_outputs[0].clone();
        for (i, level) in self.up_blocks.iter().enumerate() {
            for (j, block) in level.blocks.iter().enumerate() {
                let skip = (i > 0 && j == 0).then(|| &level_outputs[i]);
                x = block.forward(rec, &x, &s, skip)?;
            }
            if let Some(up) = &level.resample {
                x = up.forward(rec, &x)?;
            }
        }
        self.clf
            .forward(rec, &x.reshape(&[b, h * w, cfg.c_levels[0]])?)
    }
}
