//! Paella v1's tokenizer: ruDALL-E's "Sber" Gumbel VQGAN f8 (`rudalle/vae/model.py`
//! `GumbelVQ` on taming-transformers' `Encoder` / `Decoder`): 8192 codes, a 256-px image ↔
//! 32×32 tokens. Keys as in the released Lightning checkpoint's `state_dict`: `encoder.*`,
//! `decoder.*`, `quant_conv`, `quantize.{proj, embed}`, `post_quant_conv`.
//!
//! Pixels are in [−1, 1] on both sides of the network; [`GumbelVq::encode`] takes [0, 1]
//! (the official `encode(2x − 1)`) and [`GumbelVq::decode`] returns the raw [−1, 1] output.
//! Encoding takes the argmax of the Gumbel logits (no sampling).

use super::{indices, layout_error, shape_of};
use crate::error::{Error, Result};
use crate::gpu::{Recorder, Tensor};
use crate::io::{Checkpoint, Loader};
use crate::models::amused::vq::{Conv, GroupNorm, ResnetBlock};
use crate::models::nn::{Attention, Linear};
use crate::ops;
use crate::ops::conv::Conv2dSpec;

/// taming's `Normalize`: GroupNorm of 32 groups.
const GROUPS: usize = 32;

/// Sizes read from the tensors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub ch: usize,
    pub ch_mult: Vec<usize>,
    pub num_res_blocks: usize,
    /// Levels whose blocks are followed by attention (shallowest = 0).
    pub attn_levels: Vec<bool>,
    pub z_channels: usize,
    pub embed_dim: usize,
    pub n_embed: usize,
}

impl Config {
    /// # Errors
    /// Missing tensors or a layout unlike taming's.
    pub fn infer(ckpt: &Checkpoint) -> Result<Self> {
        let bad = |msg: &str| layout_error(ckpt, msg);
        let ch = shape_of(ckpt, "encoder.conv_in.weight", 4)?[0];
        let levels = indices(ckpt, "encoder.down").len();
        if levels == 0 || ch == 0 {
            return Err(bad("no encoder levels"));
        }
        let ch_mult = (0..levels)
            .map(|i| {
                Ok(shape_of(ckpt, &format!("encoder.down.{i}.block.0.conv2.weight"), 4)?[0] / ch)
            })
            .collect::<Result<Vec<_>>>()?;
        let num_res_blocks = indices(ckpt, "encoder.down.0.block").len();
        let attn_levels = (0..levels)
            .map(|i| ckpt.contains(&format!("encoder.down.{i}.attn.0.q.weight")))
            .collect();
        let &[n_embed, embed_dim] = shape_of(ckpt, "quantize.embed.weight", 2)? else {
            unreachable!()
        };
        Ok(Self {
            ch,
            ch_mult,
            num_res_blocks,
            attn_levels,
            z_channels: shape_of(ckpt, "decoder.conv_in.weight", 4)?[1],
            embed_dim,
            n_embed,
        })
    }

    /// Pixels per token side.
    pub fn scale_factor(&self) -> usize {
        1 << (self.ch_mult.len() - 1)
    }

    /// ruDALL-E's `vqgan.gumbelf8-sber` configuration (ch 128, ch_mult 1,1,2,4, two blocks,
    /// attention at 32×32 of a 256-px image, 8192 codes of 256).
    pub fn released() -> Self {
        Self {
            ch: 128,
            ch_mult: vec![1, 1, 2, 4],
            num_res_blocks: 2,
            attn_levels: vec![false, false, false, true],
            z_channels: 256,
            embed_dim: 256,
            n_embed: 8192,
        }
    }
}

/// taming's `AttnBlock`: GroupNorm, 1×1 q/k/v, one head over all positions, `proj_out`, + x.
struct AttnBlock {
    norm: GroupNorm,
    attn: Attention,
}

impl AttnBlock {
    fn new(l: &Loader<'_>, c: usize) -> Result<Self> {
        let qkv = l.stacked(
            &["q.weight", "k.weight", "v.weight"],
            &[&[c, c, 1, 1], &[c, c, 1, 1], &[c, c, 1, 1]],
            true,
        )?;
        let bias = l.stacked(&["q.bias", "k.bias", "v.bias"], &[&[c], &[c], &[c]], false)?;
        Ok(Self {
            norm: GroupNorm::new(&l.pp("norm"), c, GROUPS)?,
            attn: Attention {
                projections: crate::models::nn::Projections::SelfAttention {
                    to_qkv: Linear {
                        weight: qkv.reshape(&[3 * c, c])?,
                        bias: Some(bias),
                    },
                },
                to_out: Linear::conv1x1(&l.pp("proj_out"), c, c, true)?,
                heads: 1,
                head_dim: c,
            },
        })
    }

    fn forward(&self, rec: &mut Recorder<'_>, x: &Tensor) -> Result<Tensor> {
        let &[b, c, h, w] = x.shape() else {
            return Err(Error::shape(
                "gumbel vq attention",
                format!("{:?}", x.shape()),
            ));
        };
        let n = self.norm.forward(rec, x, false)?;
        let tokens = ops::layout::permute(rec, &n.reshape(&[b, c, h * w])?, &[0, 2, 1])?;
        let a = self.attn.forward(rec, &tokens, None, None)?;
        let a = ops::layout::permute(rec, &a, &[0, 2, 1])?.reshape(&[b, c, h, w])?;
        ops::elementwise::add(rec, &a, x)
    }
}

/// One level of the encoder or decoder: ResnetBlocks, each followed by attention where the
/// level has it, then the resampling convolution.
struct Level {
    blocks: Vec<ResnetBlock>,
    attn: Vec<AttnBlock>,
    resample: Option<Conv>,
}

impl Level {
    fn forward(&self, rec: &mut Recorder<'_>, mut x: Tensor, up: bool) -> Result<Tensor> {
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.forward(rec, &x)?;
            if let Some(a) = self.attn.get(i) {
                x = a.forward(rec, &x)?;
            }
        }
        match &self.resample {
            Some(conv) if up => {
                let x = ops::conv::upsample_nearest(rec, &x, 2)?;
                conv.forward(rec, &x)
            }
            Some(conv) => conv.forward(rec, &x),
            None => Ok(x),
        }
    }
}

/// `mid`: block_1, attn_1, block_2.
struct Mid {
    block_1: ResnetBlock,
    attn_1: AttnBlock,
    block_2: ResnetBlock,
}

impl Mid {
    fn new(l: &Loader<'_>, c: usize) -> Result<Self> {
        Ok(Self {
            block_1: ResnetBlock::with_shortcut(&l.pp("block_1"), c, c, GROUPS, "nin_shortcut")?,
            attn_1: AttnBlock::new(&l.pp("attn_1"), c)?,
            block_2: ResnetBlock::with_shortcut(&l.pp("block_2"), c, c, GROUPS, "nin_shortcut")?,
        })
    }

    fn forward(&self, rec: &mut Recorder<'_>, x: &Tensor) -> Result<Tensor> {
        let h = self.block_1.forward(rec, x)?;
        let h = self.attn_1.forward(rec, &h)?;
        self.block_2.forward(rec, &h)
    }
}

/// The Gumbel VQGAN.
pub struct GumbelVq {
    pub config: Config,
    enc_conv_in: Conv,
    /// `encoder.down.{i}`, shallowest first.
    down: Vec<Level>,
    enc_mid: Mid,
    enc_norm_out: GroupNorm,
    enc_conv_out: Conv,
    /// `quant_conv` then `quantize.proj` (1×1 convs): the code logits.
    quant_conv: Linear,
    proj: Linear,
    /// `quantize.embed.weight` `[n_embed, embed_dim]`.
    embed: Tensor,
    post_quant_conv: Linear,
    dec_conv_in: Conv,
    dec_mid: Mid,
    /// `decoder.up.{i}`, deepest first (the order they run in).
    up: Vec<Level>,
    dec_norm_out: GroupNorm,
    dec_conv_out: Conv,
}

impl GumbelVq {
    pub fn new(l: &Loader<'_>, cfg: &Config) -> Result<Self> {
        let n = cfg.ch_mult.len();
        let width = |i: usize| cfg.ch * cfg.ch_mult[i];
        let res = |lp: &Loader<'_>, cin: usize, cout: usize| {
            ResnetBlock::with_shortcut(lp, cin, cout, GROUPS, "nin_shortcut")
        };
        let e = l.pp("encoder");
        let mut down = Vec::new();
        let mut cin = cfg.ch;
        for i in 0..n {
            let lv = e.pp("down").pp(i);
            let c = width(i);
            let mut blocks = Vec::new();
            let mut attn = Vec::new();
            for j in 0..cfg.num_res_blocks {
                blocks.push(res(&lv.pp("block").pp(j), cin, c)?);
                cin = c;
                if cfg.attn_levels[i] {
                    attn.push(AttnBlock::new(&lv.pp("attn").pp(j), c)?);
                }
            }
            // taming's Downsample: zero-pad right and bottom by one, 3×3 stride 2.
            let resample = if i + 1 < n {
                let spec = Conv2dSpec {
                    stride: [2, 2],
                    padding: [0, 1, 0, 1],
                    groups: 1,
                };
                Some(Conv::new(&lv.pp("downsample.conv"), c, c, 3, spec)?)
            } else {
                None
            };
            down.push(Level {
                blocks,
                attn,
                resample,
            });
        }
        let top = width(n - 1);
        let d = l.pp("decoder");
        let mut up = Vec::new();
        let mut cin = top;
        for i in (0..n).rev() {
            let lv = d.pp("up").pp(i);
            let c = width(i);
            let mut blocks = Vec::new();
            let mut attn = Vec::new();
            for j in 0..=cfg.num_res_blocks {
                blocks.push(res(&lv.pp("block").pp(j), cin, c)?);
                cin = c;
                if cfg.attn_levels[i] {
                    attn.push(AttnBlock::new(&lv.pp("attn").pp(j), c)?);
                }
            }
            let resample = if i > 0 {
                Some(Conv::same(&lv.pp("upsample.conv"), c, c, 3)?)
            } else {
                None
            };
            up.push(Level {
                blocks,
                attn,
                resample,
            });
        }
        let (z, ed) = (cfg.z_channels, cfg.embed_dim);
        Ok(Self {
            config: cfg.clone(),
            enc_conv_in: Conv::same(&e.pp("conv_in"), 3, cfg.ch, 3)?,
            down,
            enc_mid: Mid::new(&e.pp("mid"), top)?,
            enc_norm_out: GroupNorm::new(&e.pp("norm_out"), top, GROUPS)?,
            enc_conv_out: Conv::same(&e.pp("conv_out"), top, z, 3)?,
            quant_conv: Linear::conv1x1(&l.pp("quant_conv"), z, ed, true)?,
            proj: Linear::conv1x1(&l.pp("quantize.proj"), ed, cfg.n_embed, true)?,
            embed: l.tensor("quantize.embed.weight", &[cfg.n_embed, ed])?,
            post_quant_conv: Linear::conv1x1(&l.pp("post_quant_conv"), ed, z, true)?,
            dec_conv_in: Conv::same(&d.pp("conv_in"), z, top, 3)?,
            dec_mid: Mid::new(&d.pp("mid"), top)?,
            up,
            dec_norm_out: GroupNorm::new(&d.pp("norm_out"), width(0), GROUPS)?,
            dec_conv_out: Conv::same(&d.pp("conv_out"), width(0), 3, 3)?,
        })
    }

    /// Code ids u32 `[B, h, w]` → image f32 `[B, 3, 8h, 8w]` in the [−1, 1] convention, before
    /// clamping (`decode(one_hot(ids) @ quantize.embed.weight)`).
    ///
    /// # Errors
    /// Shapes; GPU failures.
    pub fn decode(&self, rec: &mut Recorder<'_>, ids: &Tensor) -> Result<Tensor> {
        let &[b, h, w] = ids.shape() else {
            return Err(Error::shape(
                "gumbel vq decode",
                format!("ids {:?}", ids.shape()),
            ));
        };
        let z = ops::embed::embedding(rec, &ids.reshape(&[b * h * w])?, &self.embed)?;
        let z = self.post_quant_conv.forward(rec, &z)?;
        let zc = self.config.z_channels;
        let z = ops::layout::permute(rec, &z.reshape(&[b, h, w, zc])?, &[0, 3, 1, 2])?;
        let mut x = self.dec_conv_in.forward(rec, &z)?;
        x = self.dec_mid.forward(rec, &x)?;
        for level in &self.up {
            x = level.forward(rec, x, true)?;
        }
        let x = self.dec_norm_out.forward(rec, &x, true)?;
        self.dec_conv_out.forward(rec, &x)
    }

    /// Image f32 `[B, 3, H, W]` in [0, 1] → code ids u32 `[B, H/8, W/8]`: the argmax of the
    /// Gumbel code logits of `2x − 1`.
    ///
    /// # Errors
    /// Sides that are not multiples of the scale factor; GPU failures.
    pub fn encode(&self, rec: &mut Recorder<'_>, image: &Tensor) -> Result<Tensor> {
        let f = self.config.scale_factor();
        let &[b, 3, h, w] = image.shape() else {
            return Err(Error::shape(
                "gumbel vq encode",
                format!("image {:?}", image.shape()),
            ));
        };
        if h % f != 0 || w % f != 0 {
            return Err(Error::shape(
                "gumbel vq encode",
                format!("image {w}×{h}: sides must be multiples of {f}"),
            ));
        }
        let one = Tensor::from_f32(rec.ctx(), "one", &[1], &[1.0])?;
        let x = ops::elementwise::axpby(rec, 2.0, image, -1.0, &one)?;
        let mut x = self.enc_conv_in.forward(rec, &x)?;
        for level in &self.down {
            x = level.forward(rec, x, false)?;
        }
        let x = self.enc_mid.forward(rec, &x)?;
        let x = self.enc_norm_out.forward(rec, &x, true)?;
        let x = self.enc_conv_out.forward(rec, &x)?;
        let &[_, zc, gh, gw] = x.shape() else {
            unreachable!()
        };
        let x = ops::layout::permute(rec, &x, &[0, 2, 3, 1])?.reshape(&[b * gh * gw, zc])?;
        let x = self.quant_conv.forward(rec, &x)?;
        let logits = self.proj.forward(rec, &x)?;
        let (ids, _) = ops::sampling::argmax(rec, &logits)?;
        ids.reshape(&[b, gh, gw])
    }
}
