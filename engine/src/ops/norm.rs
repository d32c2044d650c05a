//! Normalisations (`shaders/norm.wgsl`): layer norm (with or without mean, i.e. RMS norm; with
//! or without affine), group norm on NCHW with optional fused SiLU, global response norm.

use super::{WG, chunked, expect_shape, groups_for, to_u32};
use crate::error::{Error, Result};
use crate::gpu::{Binding, DType, KernelFamily, Recorder, Tensor};
use crate::shaders::{KernelSpec, Module, kernel_params};

kernel_params! {
    pub(crate) struct Params {
        rows: u32,
        cols: u32,
        inner: u32,
        outer_stride: u32,
        elem_stride: u32,
        flags: u32,
        eps: f32,
        groups: u32,
        mod_rows: u32,
        /// Group norm in pieces (`group_norm_partial` / `group_norm_apply`): pieces per group and
        /// elements per piece.
        chunks: u32,
        chunk_len: u32,
        _pad: u32,
    }
}

const HAS_WEIGHT: u32 = 1;
const HAS_BIAS: u32 = 2;
const SUBTRACT_MEAN: u32 = 4;
const SILU: u32 = 8;
const MODULATE: u32 = 16;

fn spec(entry: &'static str) -> KernelSpec {
    KernelSpec::new(Module::Norm, entry)
}

pub(crate) fn specs() -> Vec<KernelSpec> {
    [
        "layer_norm",
        "layer_norm_rows",
        "group_norm",
        "group_norm_partial",
        "group_norm_apply",
        "grn_stats",
        "grn_sumsq",
        "grn_mean",
        "grn_apply",
    ]
    .into_iter()
    .map(spec)
    .collect()
}

/// Which statistics and affine terms a row norm applies.
#[derive(Clone, Copy, Debug)]
pub struct NormSpec<'a> {
    pub weight: Option<&'a Tensor>,
    pub bias: Option<&'a Tensor>,
    pub eps: f32,
    /// false: RMS norm (x / √(mean x² + eps)).
    pub subtract_mean: bool,
}

impl<'a> NormSpec<'a> {
    /// LayerNorm: (x − mean) / √(var + eps) · weight + bias.
    pub fn layer(weight: Option<&'a Tensor>, bias: Option<&'a Tensor>, eps: f32) -> Self {
        Self {
            weight,
            bias,
            eps,
            subtract_mean: true,
        }
    }

    /// RMSNorm: x / √(mean x² + eps) · weight.
    pub fn rms(weight: Option<&'a Tensor>, eps: f32) -> Self {
        Self {
            weight,
            bias: None,
            eps,
            subtract_mean: false,
        }
    }

    fn flags(&self) -> u32 {
        let mut f = 0;
        if self.weight.is_some() {
            f |= HAS_WEIGHT;
        }
        if self.bias.is_some() {
            f |= HAS_BIAS;
        }
        if self.subtract_mean {
            f |= SUBTRACT_MEAN;
        }
        f
    }

    fn check(&self, op: &'static str, cols: usize) -> Result<()> {
        for t in [self.weight, self.bias].into_iter().flatten() {
            t.expect_dtype(op, DType::F32)?;
            expect_shape(op, t, &[cols])?;
        }
        Ok(())
    }
}

/// Normalises over the last dimension of `x` (any rank ≥ 1).
pub fn layer_norm(rec: &mut Recorder<'_>, x: &Tensor, spec_: &NormSpec<'_>) -> Result<Tensor> {
    const OP: &str = "layer_norm";
    let cols = *x
        .shape()
        .last()
        .ok_or_else(|| Error::shape(OP, "scalar input"))?;
    let rows = x.numel() / cols.max(1);
    row_norm(rec, OP, x, spec_, None, [rows, cols, 1, cols, 1])
}

/// [`layer_norm`] followed by adaptive modulation in the same dispatch:
/// `norm(x)·(1 + scale) + shift` for x `[B, L, C]` and `emb` `[B, 2C]` = `[scale | shift]` per
/// batch item (diffusers `AdaLayerNormContinuous` with its linear applied beforehand).
pub fn layer_norm_modulated(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    spec_: &NormSpec<'_>,
    emb: &Tensor,
) -> Result<Tensor> {
    const OP: &str = "layer_norm_modulated";
    let [b, l, c] = *x.shape() else {
        return Err(Error::shape(
            OP,
            format!("x {:?} is not [B, L, C]", x.shape()),
        ));
    };
    emb.expect_dtype(OP, DType::F32)?;
    expect_shape(OP, emb, &[b, 2 * c])?;
    row_norm(rec, OP, x, spec_, Some((emb, l)), [b * l, c, 1, c, 1])
}

/// Normalises over the channel dimension of an NCHW tensor (channel-wise LayerNorm/RMSNorm, as
/// aMUSEd's down/upsample and MLM head apply it), without a permute.
pub fn layer_norm_channels(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    spec_: &NormSpec<'_>,
) -> Result<Tensor> {
    const OP: &str = "layer_norm_channels";
    let [b, c, h, w] = *x.shape() else {
        return Err(Error::shape(OP, format!("{:?} is not NCHW", x.shape())));
    };
    let hw = h * w;
    row_norm(rec, OP, x, spec_, None, [b * hw, c, hw, c * hw, hw])
}

/// Row norm over `[rows, cols, inner, outer_stride, elem_stride]` (see `shaders/norm.wgsl`),
/// modulated by `(emb, rows per batch item)` when given.
fn row_norm(
    rec: &mut Recorder<'_>,
    op: &'static str,
    x: &Tensor,
    spec_: &NormSpec<'_>,
    modulation: Option<(&Tensor, usize)>,
    [rows, cols, inner, outer_stride, elem_stride]: [usize; 5],
) -> Result<Tensor> {
    x.expect_dtype(op, DType::F32)?;
    spec_.check(op, cols)?;
    let out = Tensor::empty(rec.ctx(), "norm.out", x.shape(), DType::F32)?;
    let params = Params {
        rows: to_u32(op, "rows", rows)?,
        cols: to_u32(op, "cols", cols)?,
        inner: to_u32(op, "inner", inner.max(1))?,
        outer_stride: to_u32(op, "outer stride", outer_stride)?,
        elem_stride: to_u32(op, "element stride", elem_stride)?,
        flags: spec_.flags() | if modulation.is_some() { MODULATE } else { 0 },
        eps: spec_.eps,
        groups: 1,
        mod_rows: to_u32(
            op,
            "rows per batch item",
            modulation.map_or(1, |m| m.1.max(1)),
        )?,
        chunks: 1,
        chunk_len: 0,
        _pad: 0,
    };
    // CPU adapters: a row per invocation; GPUs: a workgroup per row.
    let (entry, per_group) = if rec.kernel_family() == KernelFamily::Cpu {
        ("layer_norm_rows", 64)
    } else {
        ("layer_norm", 1)
    };
    let groups = groups_for(rec, rows, per_group)?;
    rec.dispatch(
        &spec(entry),
        bytemuck::bytes_of(&params),
        &[
            (1, Binding::Tensor(x)),
            (2, spec_.weight.map_or(Binding::Unused, Binding::Tensor)),
            (3, spec_.bias.map_or(Binding::Unused, Binding::Tensor)),
            (4, Binding::Tensor(&out)),
            (
                6,
                modulation.map_or(Binding::Unused, |m| Binding::Tensor(m.0)),
            ),
        ],
        groups,
    )?;
    Ok(out)
}

/// GroupNorm over NCHW `x` with per-channel affine, SiLU fused after when `silu`.
pub fn group_norm(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    num_groups: usize,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f32,
    silu: bool,
) -> Result<Tensor> {
    const OP: &str = "group_norm";
    x.expect_dtype(OP, DType::F32)?;
    let [b, c, h, w] = *x.shape() else {
        return Err(Error::shape(OP, format!("{:?} is not NCHW", x.shape())));
    };
    if num_groups == 0 || c % num_groups != 0 {
        return Err(Error::shape(
            OP,
            format!("{c} channels do not split into {num_groups} groups"),
        ));
    }
    let spec_ = NormSpec::layer(weight, bias, eps);
    spec_.check(OP, c)?;
    let out = Tensor::empty(rec.ctx(), "group_norm.out", x.shape(), DType::F32)?;
    if !chunked::fits(rec, x.byte_len()) {
        let per_group = c / num_groups;
        chunked::channel_pieces(rec, OP, x, &out, per_group, |rec, piece, c0| {
            let n = piece.shape()[1];
            let weight = chunked::take_vector(rec, weight, c0, n)?;
            let bias = chunked::take_vector(rec, bias, c0, n)?;
            let groups = n / per_group;
            group_norm(
                rec,
                piece,
                groups,
                weight.as_ref(),
                bias.as_ref(),
                eps,
                silu,
            )
        })?;
        return Ok(out);
    }
    let params = Params {
        rows: to_u32(OP, "batch", b)?,
        cols: to_u32(OP, "channels", c)?,
        inner: to_u32(OP, "H·W", h * w)?,
        outer_stride: 0,
        elem_stride: 1,
        flags: spec_.flags() | if silu { SILU } else { 0 },
        eps,
        groups: to_u32(OP, "groups", num_groups)?,
        mod_rows: 1,
        chunks: 1,
        chunk_len: 0,
        _pad: 0,
    };
    let bindings = [
        (1, Binding::Tensor(x)),
        (2, weight.map_or(Binding::Unused, Binding::Tensor)),
        (3, bias.map_or(Binding::Unused, Binding::Tensor)),
        (4, Binding::Tensor(&out)),
        (6, Binding::Unused),
    ];
    // One workgroup per group leaves a GPU mostly idle on a VQ decoder's activations (32
    // groups of 2^18 values at 256 px: 0.35 ms each on an H200), so GPUs take each group in
    // pieces of about GROUP_NORM_PIECE values: a pass of per-piece means and squared
    // deviations, then a pass that combines a group's pieces (Chan et al.) and normalizes its
    // own piece. CPU adapters, and groups of one piece, keep the one-pass kernel.
    let count = c / num_groups * h * w;
    let chunks = count.div_ceil(GROUP_NORM_PIECE).min(GROUP_NORM_MAX_PIECES);
    if rec.kernel_family() == KernelFamily::Cpu || chunks <= 1 {
        rec.dispatch(
            &spec("group_norm"),
            bytemuck::bytes_of(&params),
            &bindings,
            [params.groups, params.rows, 1],
        )?;
        return Ok(out);
    }
    let params = Params {
        chunks: to_u32(OP, "pieces", chunks)?,
        chunk_len: to_u32(OP, "piece length", count.div_ceil(chunks))?,
        ..params
    };
    let stats = Tensor::empty(
        rec.ctx(),
        "group_norm.stats",
        &[b, num_groups, chunks, 3],
        DType::F32,
    )?;
    let grid = [params.chunks, params.groups, params.rows];
    rec.dispatch(
        &spec("group_norm_partial"),
        bytemuck::bytes_of(&params),
        &[(1, Binding::Tensor(x)), (5, Binding::Tensor(&stats))],
        grid,
    )?;
    let mut apply = bindings.to_vec();
    apply.push((5, Binding::Tensor(&stats)));
    rec.dispatch(
        &spec("group_norm_apply"),
        bytemuck::bytes_of(&params),
        &apply,
        grid,
    )?;
    Ok(out)
}

/// Values per piece of a group in the GPU group norm, and the most pieces per group.
const GROUP_NORM_PIECE: usize = 8192;
const GROUP_NORM_MAX_PIECES: usize = 64;

/// Global response norm (ConvNeXt-V2) on channels-last `x` `[B, H, W, C]` or `[B, L, C]`:
/// y = gamma·(x·N) + beta + x with N = ‖x‖₂(over H·W) / (mean over C + eps).
/// gamma and beta hold C values (any shape, e.g. `[1, 1, 1, C]`).
pub fn global_response_norm(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f32,
) -> Result<Tensor> {
    const OP: &str = "global_response_norm";
    x.expect_dtype(OP, DType::F32)?;
    let s = x.shape();
    if s.len() < 3 {
        return Err(Error::shape(OP, format!("{s:?} is not [B, .., C]")));
    }
    let (b, c) = (s[0], s[s.len() - 1]);
    let inner = x.numel() / (b * c).max(1);
    for t in [gamma, beta] {
        t.expect_dtype(OP, DType::F32)?;
        if t.numel() != c {
            return Err(Error::shape(
                OP,
                format!("{:?} {:?} must hold {c} values", t.name(), t.shape()),
            ));
        }
    }
    let stats = Tensor::empty(rec.ctx(), "grn.stats", &[b, c], DType::F32)?;
    let out = Tensor::empty(rec.ctx(), "grn.out", s, DType::F32)?;
    let params = Params {
        rows: to_u32(OP, "batch", b)?,
        cols: to_u32(OP, "channels", c)?,
        inner: to_u32(OP, "positions", inner)?,
        outer_stride: 0,
        elem_stride: 1,
        flags: 0,
        eps,
        groups: 1,
        mod_rows: 1,
        chunks: 1,
        chunk_len: 0,
        _pad: 0,
    };
    // CPU adapters: one pass, a workgroup per batch item (the cores take one each). GPUs: the
    // squares over 32-channel blocks, then the mean — a workgroup per batch item leaves a GPU
    // idle (0.66 ms for [2, 16, 16, 1024] on an H200).
    if rec.kernel_family() == KernelFamily::Cpu {
        rec.dispatch(
            &spec("grn_stats"),
            bytemuck::bytes_of(&params),
            &[(1, Binding::Tensor(x)), (5, Binding::Tensor(&stats))],
            [params.rows, 1, 1],
        )?;
    } else {
        rec.dispatch(
            &spec("grn_sumsq"),
            bytemuck::bytes_of(&params),
            &[(1, Binding::Tensor(x)), (5, Binding::Tensor(&stats))],
            [params.cols.div_ceil(32), params.rows, 1],
        )?;
        rec.dispatch(
            &spec("grn_mean"),
            bytemuck::bytes_of(&params),
            &[(5, Binding::Tensor(&stats))],
            [params.rows, 1, 1],
        )?;
    }
    let groups = groups_for(rec, x.numel(), WG)?;
    rec.dispatch(
        &spec("grn_apply"),
        bytemuck::bytes_of(&params),
        &[
            (1, Binding::Tensor(x)),
            (2, Binding::Tensor(gamma)),
            (3, Binding::Tensor(beta)),
            (4, Binding::Tensor(&out)),
            (5, Binding::Tensor(&stats)),
        ],
        groups,
    )?;
    Ok(out)
}
