//! Paella v3's generator (the official `src/modules.py`: `Paella`, `ResBlock`,
//! `TimestepBlock`, `AttnBlock`), a convolutional U-Net over a token grid with cross/self
//! attention to the text condition. Struct fields mirror the checkpoint keys
//! (`down_blocks.1.4.attention.attn.in_proj_weight` is `down_blocks[1].blocks[4]`'s attention).
//!
//! Activations are channels-last (`[B, H, W, C]`): PyTorch's `LayerNorm2d` (a LayerNorm over
//! channels) is then a row norm, the 1×1 convolutions are matmuls, and the k2 s2
//! (transposed) convolutions are a matmul with a pixel (un)shuffle around it.

use super::{indices, r_embedding, shape_of};
use crate::error::{Error, Result};
use crate::gpu::{Recorder, Tensor};
use crate::io::{Checkpoint, Loader};
use crate::models::nn::Linear;
use crate::ops;
use crate::ops::attention::{AttentionSpec, Columns};
use crate::ops::conv::{Conv2dSpec, PadMode};
use crate::ops::matmul::Activation;

/// Every LayerNorm of the generator: no affine terms, eps 1e-6.
const EPS: f32 = 1e-6;

/// Sizes of a v3 generator, all read from its tensors except the attention heads and
/// `self_attn` (not stored in a state dict; see [`Config::infer`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Codebook size (`num_labels`).
    pub num_labels: usize,
    /// Token embedding width (`c_in`).
    pub c_in: usize,
    pub patch_size: usize,
    pub c_cond: usize,
    /// Noise-level embedding width.
    pub c_r: usize,
    pub c_hidden: Vec<usize>,
    /// Attention heads per level (0 where a level has no attention).
    pub nhead: Vec<usize>,
    pub byt5_embd: usize,
    pub clip_embd: usize,
    pub clip_seq_len: usize,
    pub kernel_size: usize,
    /// Image tokens attend to themselves as well as to the condition.
    pub self_attn: bool,
    /// The blocks of each down level, in order (`'C'`, `'T'`, `'A'`).
    pub down_blocks: Vec<Vec<char>>,
    /// The blocks of each up level, deepest level first.
    pub up_blocks: Vec<Vec<char>>,
}

/// The kind of block `prefix` holds, from its keys.
fn block_kind(ckpt: &Checkpoint, prefix: &str) -> Option<char> {
    if ckpt.contains(&format!("{prefix}.depthwise.weight")) {
        Some('C')
    } else if ckpt.contains(&format!("{prefix}.mapper.weight")) {
        Some('T')
    } else if ckpt.contains(&format!("{prefix}.attention.attn.in_proj_weight")) {
        Some('A')
    } else {
        None
    }
}

impl Config {
    /// Reads every size from the tensors. Heads: `nhead` when given (one per level, as the
    /// official constructor takes it), else width / 80 (the released model's head size) for
    /// levels with attention.
    ///
    /// # Errors
    /// Missing tensors, blocks of unknown kind, widths not divisible into heads.
    pub fn infer(ckpt: &Checkpoint, nhead: Option<&[usize]>, self_attn: bool) -> Result<Self> {
        let bad = |msg: String| super::layout_error(ckpt, msg);
        let &[num_labels, c_in] = shape_of(ckpt, "in_mapper.0.weight", 2)? else {
            unreachable!()
        };
        let &[c0, unshuffled, _, _] = shape_of(ckpt, "embedding.1.weight", 4)? else {
            unreachable!()
        };
        let p2 = unshuffled / c_in.max(1);
        let patch_size = (1..=8).find(|p| p * p == p2 && p2 * c_in == unshuffled);
        let patch_size = patch_size.ok_or_else(|| {
            bad(format!(
                "embedding.1.weight takes {unshuffled} channels, not c_in {c_in} × a square"
            ))
        })?;
        let &[c_cond, byt5_embd] = shape_of(ckpt, "byt5_mapper.weight", 2)? else {
            unreachable!()
        };
        let &[clip_rows, clip_embd] = shape_of(ckpt, "clip_mapper.weight", 2)? else {
            unreachable!()
        };
        if c_cond == 0 || clip_rows % c_cond != 0 {
            return Err(bad(format!(
                "clip_mapper.weight has {clip_rows} rows, not a multiple of c_cond {c_cond}"
            )));
        }
        let kinds = |prefix: &str| -> Result<Vec<Vec<(usize, char)>>> {
            let levels = indices(ckpt, prefix);
            if levels.is_empty() || levels.iter().copied().ne(0..levels.len()) {
                return Err(bad(format!("{prefix}: levels {levels:?} are not 0..n")));
            }
            Ok(levels
                .iter()
                .map(|i| {
                    let lp = format!("{prefix}.{i}");
                    indices(ckpt, &lp)
                        .into_iter()
                        .filter_map(|j| block_kind(ckpt, &format!("{lp}.{j}")).map(|k| (j, k)))
                        .collect()
                })
                .collect())
        };
        let down = kinds("down_blocks")?;
        let up = kinds("up_blocks")?;
        if down.len() != up.len() {
            return Err(bad(format!(
                "{} down levels but {} up levels",
                down.len(),
                up.len()
            )));
        }
        let mut c_hidden = Vec::new();
        let mut c_r = 0;
        let mut kernel_size = 0;
        for (i, level) in down.iter().enumerate() {
            let (j, _) = level
                .iter()
                .find(|(_, k)| *k == 'C')
                .ok_or_else(|| bad(format!("down_blocks.{i} has no ResBlock")))?;
            let &[c, _, k, _] =
                shape_of(ckpt, &format!("down_blocks.{i}.{j}.depthwise.weight"), 4)?
            else {
                unreachable!()
            };
            c_hidden.push(c);
            kernel_size = k;
            if let Some((j, _)) = level.iter().find(|(_, k)| *k == 'T') {
                c_r = shape_of(ckpt, &format!("down_blocks.{i}.{j}.mapper.weight"), 2)?[1];
            }
        }
        if c_hidden[0] != c0 {
            return Err(bad(format!(
                "embedding.1 makes {c0} channels, down_blocks.0 takes {}",
                c_hidden[0]
            )));
        }
        let has_attn: Vec<bool> = down
            .iter()
            .map(|l| l.iter().any(|(_, k)| *k == 'A'))
            .collect();
        let nhead: Vec<usize> = match nhead {
            Some(h) if h.len() == c_hidden.len() => h.to_vec(),
            Some(h) => {
                return Err(bad(format!(
                    "nhead {h:?} names {} levels, the model has {}",
                    h.len(),
                    c_hidden.len()
                )));
            }
            None => c_hidden
                .iter()
                .zip(&has_attn)
                .map(|(&c, &a)| if a { c / 80 } else { 0 })
                .collect(),
        };
        for ((&c, &h), &a) in c_hidden.iter().zip(&nhead).zip(&has_attn) {
            if a && (h == 0 || c % h != 0) {
                return Err(bad(format!(
                    "{h} attention heads do not divide width {c}: give nhead in tessera.json"
                )));
            }
        }
        let strip = |v: &Vec<Vec<(usize, char)>>| -> Vec<Vec<char>> {
            v.iter()
                .map(|l| l.iter().map(|(_, k)| *k).collect())
                .collect()
        };
        Ok(Self {
            num_labels,
            c_in,
            patch_size,
            c_cond,
            c_r,
            c_hidden,
            nhead,
            byt5_embd,
            clip_embd,
            clip_seq_len: clip_rows / c_cond,
            kernel_size,
            self_attn,
            down_blocks: strip(&down),
            up_blocks: strip(&up),
        })
    }

    /// The released `paella_v3.pt`'s configuration (the official constructor's defaults with
    /// `byt5_embd` 2560): 1,008 M parameters.
    pub fn released() -> Self {
        let level = |kinds: &str, n: usize| -> Vec<char> {
            kinds.chars().cycle().take(kinds.len() * n).collect()
        };
        Self {
            num_labels: 8192,
            c_in: 256,
            patch_size: 2,
            c_cond: 1024,
            c_r: 64,
            c_hidden: vec![640, 1280, 1280],
            nhead: vec![0, 16, 16],
            byt5_embd: 2560,
            clip_embd: 1024,
            clip_seq_len: 4,
            kernel_size: 3,
            self_attn: true,
            down_blocks: vec![level("CT", 6), level("CTA", 16), level("CTA", 6)],
            up_blocks: vec![level("CTA", 6), level("CTA", 16), level("CT", 6)],
        }
    }

    /// What the token grid's sides must be multiples of: the patch size, halved per level.
    pub fn grid_multiple(&self) -> usize {
        self.patch_size << (self.c_hidden.len() - 1)
    }
}

/// `ResBlock`: depthwise conv (over `[x, skip]` when a skip is given) → LayerNorm →
/// `channelwise` (Linear 4×, GELU, GlobalResponseNorm, Linear) + x.
struct ResBlock {
    /// `depthwise` `[c, n, k, k]` (n = 2 with a skip: output c reads inputs 2c, 2c + 1).
    depthwise: (Tensor, Tensor),
    kernel: usize,
    /// `channelwise.0`
    fc1: Linear,
    /// `channelwise.2.{gamma, beta}`
    grn: (Tensor, Tensor),
    /// `channelwise.4`
    fc2: Linear,
}

impl ResBlock {
    fn new(l: &Loader<'_>, c: usize, c_skip: usize, k: usize) -> Result<Self> {
        let n = (c + c_skip) / c;
        Ok(Self {
            depthwise: (
                l.tensor("depthwise.weight", &[c, n, k, k])?,
                l.tensor("depthwise.bias", &[c])?,
            ),
            kernel: k,
            fc1: Linear::new(&l.pp("channelwise.0"), c, 4 * c, true)?,
            grn: (
                l.tensor("channelwise.2.gamma", &[1, 1, 1, 4 * c])?,
                l.tensor("channelwise.2.beta", &[1, 1, 1, 4 * c])?,
            ),
            fc2: Linear::new(&l.pp("channelwise.4"), 4 * c, c, true)?,
        })
    }

    fn forward(&self, rec: &mut Recorder<'_>, x: &Tensor, skip: Option<&Tensor>) -> Result<Tensor> {
        let [b, h, w, c] = nhwc(x)?;
        let input = match skip {
            Some(s) => ops::layout::concat(rec, &[x, s], 3)?,
            None => x.clone(),
        };
        let s = Conv2dSpec {
            groups: c,
            ..Conv2dSpec::same(self.kernel / 2)
        };
        let y = ops::conv::depthwise_conv2d_nhwc_padded(
            rec,
            &input,
            &self.depthwise.0,
            Some(&self.depthwise.1),
            &s,
            PadMode::Zeros,
        )?;
        let y = layer_norm(rec, &y)?.reshape(&[b, h * w, c])?;
        let y = self
            .fc1
            .forward_fused(rec, &y, Some(Activation::GeluErf), None)?;
        let y = ops::norm::global_response_norm(rec, &y, &self.grn.0, &self.grn.1, 1e-6)?;
        let y = self
            .fc2
            .forward_residual(rec, &y, Some(&x.reshape(&[b, h * w, c])?))?;
        y.reshape(&[b, h, w, c])
    }
}

/// `TimestepBlock`: `x·(1 + a) + b` with `[a | b] = mapper(r_embed)`.
struct TimestepBlock {
    mapper: Linear,
}

/// `AttnBlock`: `x + MultiheadAttention(LN(x), [LN(x) ‖ kv_mapper(cond)])`.
struct AttnBlock {
    heads: usize,
    /// `attention.attn.in_proj_weight` rows 0..c (with its bias).
    to_q: Linear,
    /// rows c..3c: keys then values.
    to_kv: Linear,
    /// `attention.attn.out_proj`
    out_proj: Linear,
    /// `kv_mapper.1` (after a SiLU).
    kv_mapper: Linear,
}

impl AttnBlock {
    fn new(l: &Loader<'_>, c: usize, c_cond: usize, heads: usize) -> Result<Self> {
        let a = l.pp("attention.attn");
        let part = |start: usize, len: usize| -> Result<Linear> {
            Ok(Linear {
                weight: a.rows("in_proj_weight", &[3 * c, c], start, len)?,
                bias: Some(a.rows("in_proj_bias", &[3 * c], start, len)?),
            })
        };
        Ok(Self {
            heads,
            to_q: part(0, c)?,
            to_kv: part(c, 2 * c)?,
            out_proj: Linear::new(&a.pp("out_proj"), c, c, true)?,
            kv_mapper: Linear::new(&l.pp("kv_mapper.1"), c_cond, c, true)?,
        })
    }

    /// The condition's keys and values `[B, Lc, 2c]` (step-invariant).
    fn condition_kv(&self, rec: &mut Recorder<'_>, silu_cond: &Tensor) -> Result<Tensor> {
        let kv = self.kv_mapper.forward(rec, silu_cond)?;
        self.to_kv.forward(rec, &kv)
    }

    fn forward(
        &self,
        rec: &mut Recorder<'_>,
        x: &Tensor,
        cond_kv: &Tensor,
        self_attn: bool,
    ) -> Result<Tensor> {
        let [b, h, w, c] = nhwc(x)?;
        let xn = layer_norm(rec, x)?.reshape(&[b, h * w, c])?;
        let q = self.to_q.forward(rec, &xn)?;
        let kv = if self_attn {
            let own = self.to_kv.forward(rec, &xn)?;
            ops::layout::concat(rec, &[&own, cond_kv], 1)?
        } else {
            cond_kv.clone()
        };
        let spec = AttentionSpec::new(self.heads, c / self.heads);
        let o = ops::attention::attention(
            rec,
            &q,
            Columns {
                tensor: &kv,
                offset: 0,
            },
            Columns {
                tensor: &kv,
                offset: c,
            },
            &spec,
        )?;
        let y = self
            .out_proj
            .forward_residual(rec, &o, Some(&x.reshape(&[b, h * w, c])?))?;
        y.reshape(&[b, h, w, c])
    }
}

enum Block {
    Res(ResBlock),
    Timestep(TimestepBlock),
    Attn(AttnBlock),
}

/// A down level: `LN → Conv2d k2 s2` (levels after the first), then its blocks.
struct DownLevel {
    /// The k2 s2 convolution as a matmul: weight `[c_out, (ky, kx, c_in)]`, bias.
    downscaler: Option<Linear>,
    blocks: Vec<Block>,
}

/// An up level: its blocks, then `LN → ConvTranspose2d k2 s2` (levels before the last).
struct UpLevel {
    blocks: Vec<Block>,
    /// The k2 s2 transposed convolution as a matmul: weight `[(ky, kx, c_out), c_in]`, bias
    /// tiled over the four positions.
    upscaler: Option<Linear>,
}

/// What [`Paella::prepare`] computes once per image: the keys and values of the condition for
/// every attention block, in block order.
pub struct Prepared {
    kv: Vec<Tensor>,
    batch: usize,
}

/// The v3 generator.
pub struct Paella {
    pub config: Config,
    byt5_mapper: Linear,
    clip_mapper: Linear,
    /// `in_mapper.0` (an `nn.Embedding`; a LayerNorm follows).
    in_mapper: ops::embed::Table,
    /// `embedding.1` (1×1 conv after the pixel unshuffle; a LayerNorm follows).
    embedding: Linear,
    down_blocks: Vec<DownLevel>,
    up_blocks: Vec<UpLevel>,
    /// `clf.1` (1×1 conv after a LayerNorm; a pixel shuffle follows).
    clf: Linear,
    /// `out_mapper.1` (1×1 conv, no bias, after a LayerNorm): the logits.
    out_mapper: Linear,
}

fn nhwc(x: &Tensor) -> Result<[usize; 4]> {
    match *x.shape() {
        [b, h, w, c] => Ok([b, h, w, c]),
        _ => Err(Error::shape(
            "paella",
            format!("{:?} {:?} is not [B, H, W, C]", x.name(), x.shape()),
        )),
    }
}

/// LayerNorm over the last dim, no affine, eps 1e-6 (the generator's every norm).
fn layer_norm(rec: &mut Recorder<'_>, x: &Tensor) -> Result<Tensor> {
    ops::norm::layer_norm(rec, x, &ops::norm::NormSpec::layer(None, None, EPS))
}

impl Paella {
    /// Builds the generator of `config` from its state dict (keys as the official module
    /// names them).
    pub fn new(l: &Loader<'_>, config: &Config) -> Result<Self> {
        let cfg = config;
        let levels = cfg.c_hidden.len();
        let block = |lp: &Loader<'_>, kind: char, c: usize, c_skip: usize, level: usize| {
            Ok(match kind {
                'C' => Block::Res(ResBlock::new(lp, c, c_skip, cfg.kernel_size)?),
                'T' => Block::Timestep(TimestepBlock {
                    mapper: Linear::new(&lp.pp("mapper"), cfg.c_r, 2 * c, true)?,
                }),
                _ => Block::Attn(AttnBlock::new(lp, c, cfg.c_cond, cfg.nhead[level])?),
            })
        };
        let mut down_blocks = Vec::new();
        for (i, kinds) in cfg.down_blocks.iter().enumerate() {
            let lv = l.pp("down_blocks").pp(i);
            let c = cfg.c_hidden[i];
            let first = usize::from(i > 0);
            let downscaler = if i > 0 {
                let cp = cfg.c_hidden[i - 1];
                Some(Linear {
                    // [c, cp, 2, 2] → [c, 2, 2, cp]: the patch read channels-last.
                    weight: lv
                        .pp("0.1")
                        .permuted("weight", &[c, cp, 2, 2], &[0, 2, 3, 1])?
                        .reshape(&[c, 4 * cp])?,
                    bias: Some(lv.pp("0.1").tensor("bias", &[c])?),
                })
            } else {
                None
            };
            let blocks = kinds
                .iter()
                .enumerate()
                .map(|(j, &k)| block(&lv.pp(j + first), k, c, 0, i))
                .collect::<Result<Vec<_>>>()?;
            down_blocks.push(DownLevel { downscaler, blocks });
        }
        let mut up_blocks = Vec::new();
        for (i, kinds) in cfg.up_blocks.iter().enumerate() {
            let lv = l.pp("up_blocks").pp(i);
            let level = levels - 1 - i;
            let c = cfg.c_hidden[level];
            let blocks = kinds
                .iter()
                .enumerate()
                .map(|(j, &k)| {
                    let skip = if j == 0 && i > 0 && k == 'C' { c } else { 0 };
                    block(&lv.pp(j), k, c, skip, level)
                })
                .collect::<Result<Vec<_>>>()?;
            let upscaler = if level > 0 {
                let cn = cfg.c_hidden[level - 1];
                let u = lv.pp(kinds.len()).pp(1);
                let bias = u.host("bias", &[cn])?;
                let tiled: Vec<f32> = (0..4).flat_map(|_| bias.iter().copied()).collect();
                Some(Linear {
                    // [c, cn, 2, 2] → [2, 2, cn, c]: each input pixel's four outputs.
                    weight: u
                        .permuted("weight", &[c, cn, 2, 2], &[2, 3, 1, 0])?
                        .reshape(&[4 * cn, c])?,
                    bias: Some(u.upload("bias.tiled", &[4 * cn], &tiled)?),
                })
            } else {
                None
            };
            up_blocks.push(UpLevel { blocks, upscaler });
        }
        let (c0, cin, p) = (cfg.c_hidden[0], cfg.c_in, cfg.patch_size);
        // The CLIP image embedding's mapper: only the optional prior produces its input.
        l.skip("clip_image_mapper.weight");
        l.skip("clip_image_mapper.bias");
        Ok(Self {
            config: cfg.clone(),
            byt5_mapper: Linear::new(&l.pp("byt5_mapper"), cfg.byt5_embd, cfg.c_cond, true)?,
            clip_mapper: Linear::new(
                &l.pp("clip_mapper"),
                cfg.clip_embd,
                cfg.c_cond * cfg.clip_seq_len,
                true,
            )?,
            in_mapper: l.table("in_mapper.0.weight", &[cfg.num_labels, cin])?,
            embedding: Linear::conv1x1(&l.pp("embedding.1"), cin * p * p, c0, true)?,
            down_blocks,
            up_blocks,
            clf: Linear::conv1x1(&l.pp("clf.1"), c0, cin * p * p, true)?,
            out_mapper: Linear::conv1x1(&l.pp("out_mapper.1"), cin, cfg.num_labels, false)?,
        })
    }

    /// The condition sequence `seq_norm([byt5_mapper(byt5) ‖ clip_mapper(clip)])` and, from
    /// it, every attention block's keys and values: `byt5` `[B, T, byt5_embd]`, `clip`
    /// `[B, clip_embd]` (official `gen_c_embeddings` without an image embedding).
    ///
    /// # Errors
    /// Shapes that do not fit the model; GPU failures.
    pub fn prepare(
        &self,
        rec: &mut Recorder<'_>,
        byt5: &Tensor,
        clip: &Tensor,
    ) -> Result<Prepared> {
        let cfg = &self.config;
        let [b, t, _] = *byt5.shape() else {
            return Err(Error::shape(
                "paella",
                format!("byt5 {:?} is not [B, T, D]", byt5.shape()),
            ));
        };
        ops::expect_shape("paella", clip, &[b, cfg.clip_embd])?;
        let seq = self.byt5_mapper.forward(rec, byt5)?;
        let clip = self
            .clip_mapper
            .forward(rec, &clip.reshape(&[b, 1, cfg.clip_embd])?)?
            .reshape(&[b, cfg.clip_seq_len, cfg.c_cond])?;
        let seq = ops::layout::concat(rec, &[&seq, &clip], 1)?;
        debug_assert_eq!(seq.shape()[1], t + cfg.clip_seq_len);
        let seq = layer_norm(rec, &seq)?;
        let silu = ops::elementwise::silu(rec, &seq)?;
        let mut kv = Vec::new();
        for block in self
            .down_blocks
            .iter()
            .flat_map(|l| &l.blocks)
            .chain(self.up_blocks.iter().flat_map(|l| &l.blocks))
        {
            if let Block::Attn(a) = block {
                kv.push(a.condition_kv(rec, &silu)?);
            }
        }
        Ok(Prepared { kv, batch: b })
    }

    /// Logits `[B, h·w, num_labels]` (positions row-major) of token ids u32 `[B, h, w]` at
    /// noise level `r` ∈ [0, 1] under a prepared condition of the same batch.
    ///
    /// # Errors
    /// Grids whose sides are not multiples of [`Config::grid_multiple`], ids outside the
    /// codebook's range, a batch that differs from the condition's; GPU failures.
    pub fn forward(
        &self,
        rec: &mut Recorder<'_>,
        tokens: &Tensor,
        r: f32,
        prepared: &Prepared,
    ) -> Result<Tensor> {
        const OP: &str = "paella";
        let cfg = &self.config;
        let &[b, h, w] = tokens.shape() else {
            return Err(Error::shape(
                OP,
                format!("tokens {:?} are not [B, h, w]", tokens.shape()),
            ));
        };
        let m = cfg.grid_multiple();
        if h % m != 0 || w % m != 0 || h == 0 || w == 0 {
            return Err(Error::shape(
                OP,
                format!("a {h}×{w} token grid: this model needs sides that are multiples of {m}"),
            ));
        }
        if b != prepared.batch {
            return Err(Error::shape(
                OP,
                format!(
                    "{b} token grids for a condition of batch {}",
                    prepared.batch
                ),
            ));
        }
        let ctx = rec.ctx();
        let r_emb = r_embedding(&vec![r; b], cfg.c_r);
        let r_emb = Tensor::from_f32(ctx, "r_embed", &[b, cfg.c_r], &r_emb)?;
        let (cin, p) = (cfg.c_in, cfg.patch_size);
        // in_mapper: embedding → LayerNorm; pixel unshuffle → embedding.1 → LayerNorm.
        let x = ops::embed::embedding_table(rec, &tokens.reshape(&[b * h * w])?, &self.in_mapper)?;
        let x = layer_norm(rec, &x)?;
        let x = ops::layout::permute(
            rec,
            &x.reshape(&[b, h / p, p, w / p, p, cin])?,
            &[0, 1, 3, 5, 2, 4],
        )?;
        let (mut hh, mut ww) = (h / p, w / p);
        let x = self
            .embedding
            .forward(rec, &x.reshape(&[b, hh * ww, cin * p * p])?)?;
        let mut x = layer_norm(rec, &x)?.reshape(&[b, hh, ww, cfg.c_hidden[0]])?;
        let mut kv = prepared.kv.iter();
        let mut run = |rec: &mut Recorder<'_>, block: &Block, x: &Tensor, skip: Option<&Tensor>| {
            match block {
                Block::Res(r) => r.forward(rec, x, skip),
                Block::Timestep(t) => {
                    let [b, h, w, c] = nhwc(x)?;
                    let emb = t.mapper.forward(rec, &r_emb)?;
                    ops::elementwise::modulate(rec, &x.reshape(&[b, h * w, c])?, &emb)?
                        .reshape(&[b, h, w, c])
                }
                Block::Attn(a) => {
                    let cond = kv.next().ok_or_else(|| {
                        Error::shape(OP, "fewer condition keys than attention blocks")
                    })?;
                    a.forward(rec, x, cond, cfg.self_attn)
                }
            }
        };
        let mut level_outputs = Vec::new();
        for level in &self.down_blocks {
            if let Some(down) = &level.downscaler {
                let [_, _, _, c] = nhwc(&x)?;
                let y = layer_norm(rec, &x)?;
                let y = ops::layout::permute(
                    rec,
                    &y.reshape(&[b, hh / 2, 2, ww / 2, 2, c])?,
                    &[0, 1, 3, 2, 4, 5],
                )?;
                (hh, ww) = (hh / 2, ww / 2);
                let y = down.forward(rec, &y.reshape(&[b, hh * ww, 4 * c])?)?;
                let c_out = y.shape()[2];
                x = y.reshape(&[b, hh, ww, c_out])?;
            }
            for block in &level.blocks {
                x = run(rec, block, &x, None)?;
            }
            level_outputs.insert(0, x.clone());
        }
        let mut x = level_outputs[0].clone();
        for (i, level) in self.up_blocks.iter().enumerate() {
            for (j, block) in level.blocks.iter().enumerate() {
                let skip = (i > 0 && j == 0).then(|| &level_outputs[i]);
                let skip = if matches!(block, Block::Res(_)) {
                    skip
                } else {
                    None
                };
                x = run(rec, block, &x, skip)?;
            }
            if let Some(up) = &level.upscaler {
                let y = layer_norm(rec, &x)?;
                let [_, _, _, c] = nhwc(&y)?;
                let y = up.forward(rec, &y.reshape(&[b, hh * ww, c])?)?;
                let c_out = y.shape()[2] / 4;
                let y = ops::layout::permute(
                    rec,
                    &y.reshape(&[b, hh, ww, 2, 2, c_out])?,
                    &[0, 1, 3, 2, 4, 5],
                )?;
                (hh, ww) = (hh * 2, ww * 2);
                x = y.reshape(&[b, hh, ww, c_out])?;
            }
        }
        // clf: LayerNorm → 1×1 conv → pixel shuffle; out_mapper: LayerNorm → 1×1 conv.
        let y = layer_norm(rec, &x)?;
        let y = self
            .clf
            .forward(rec, &y.reshape(&[b, hh * ww, cfg.c_hidden[0]])?)?;
        let y = ops::layout::permute(
            rec,
            &y.reshape(&[b, hh, ww, cin, p, p])?,
            &[0, 1, 4, 2, 5, 3],
        )?;
        let y = layer_norm(rec, &y.reshape(&[b, h * w, cin])?)?;
        self.out_mapper.forward(rec, &y)
    }
}
