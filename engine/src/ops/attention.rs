//! Fused multi-head attention (`shaders/attention.wgsl`) with online softmax: self- and
//! cross-attention, causal or not.

use super::to_u32;
use crate::error::{Error, Result};
use crate::gpu::{Binding, DType, KernelFamily, Recorder, Tensor};
use crate::shaders::{CoopShape, KernelSpec, Module, kernel_params};

kernel_params! {
    /// Every attention kernel's parameters. Strides and offsets are in f32 elements;
    /// `q/k/v_offset` select the columns of a fused projection.
    pub(crate) struct Params {
        batch: u32,
        heads: u32,
        lq: u32,
        lk: u32,
        head_dim: u32,
        q_stride: u32,
        k_stride: u32,
        v_stride: u32,
        o_stride: u32,
        q_offset: u32,
        k_offset: u32,
        v_offset: u32,
        q_batch_stride: u32,
        k_batch_stride: u32,
        v_batch_stride: u32,
        o_batch_stride: u32,
        scale: f32,
        causal: u32,
        _pad0: u32,
        _pad1: u32,
    }
}

/// Largest head size the kernel holds in registers.
pub const MAX_HEAD_DIM: usize = 128;
const QUERIES_PER_GROUP: usize = 64;

fn spec() -> KernelSpec {
    KernelSpec::new(Module::Attention, "attention")
}

/// Queries per workgroup of `attention_rows.wgsl`.
const ROWS_QUERIES_PER_GROUP: usize = 16;

fn rows_spec(head_dim: usize) -> KernelSpec {
    KernelSpec::new(Module::AttentionRows, "attention_rows").with("D4", (head_dim / 4) as f64)
}

/// Queries per workgroup of `attention_flash.wgsl`, and the workgroup memory it needs.
const FLASH_QUERIES_PER_GROUP: usize = 32;
const FLASH_WORKGROUP_BYTES: u32 = 24 * 1024;

fn flash_spec(head_dim: usize) -> KernelSpec {
    KernelSpec::new(Module::AttentionFlash, "attention_flash").with("D4", (head_dim / 4) as f64)
}

/// The cooperative-matrix kernel's variant for a head size: narrow (≤ 64: 32 queries per
/// workgroup) or wide (65–128: 16 queries), and the workgroup memory it declares (the sum of
/// `attention_coop.wgsl`'s arrays).
fn coop_variant(shape: CoopShape, head_dim: usize) -> (bool, usize, u32) {
    let wide = head_dim > 64;
    let (dmax, bq) = crate::shaders::attention_coop_tiles(wide);
    let f = shape.size();
    let bkv = 32;
    let ds = dmax + 8;
    let bytes = 2 * (bq * ds + 2 * bkv * ds + bq * (bkv + 8)) + 4 * (bq * dmax + f * f);
    (wide, bq as usize, bytes)
}

fn coop_spec(shape: CoopShape, head_dim: usize) -> KernelSpec {
    let (wide, _, _) = coop_variant(shape, head_dim);
    KernelSpec::new(Module::AttentionCoop { shape, wide }, "attention_coop")
        .with("D", head_dim as f64)
}

pub(crate) fn specs() -> Vec<KernelSpec> {
    let mut v = vec![spec()];
    v.extend((4..=MAX_HEAD_DIM).step_by(4).map(rows_spec));
    v.extend((4..=MAX_HEAD_DIM).step_by(4).map(flash_spec));
    for shape in CoopShape::ALL {
        let f = shape.size() as usize;
        v.extend((f..=MAX_HEAD_DIM).step_by(f).map(|d| coop_spec(shape, d)));
    }
    v
}

/// The attention kernels, chosen per call by [`attention`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionKernel {
    /// `attention_rows.wgsl`: a query per invocation, no workgroup memory (CPU adapters).
    Rows,
    /// `attention_flash.wgsl`: 32 queries × 4 lanes per workgroup, keys and values staged in
    /// workgroup memory (GPUs with ≥ 24 KiB of it).
    Flash,
    /// `attention.wgsl`: a query per invocation, keys staged in workgroup memory; any head
    /// size, stride and offset (the fallback).
    Staged,
    /// `attention_coop.wgsl`: flash attention whose two products run on cooperative matrices
    /// (tensor cores), Q, K, V and the probabilities rounded to f16, scores and softmax in
    /// f32; 32 queries per workgroup (16 for heads wider than 64). Head sizes that are
    /// multiples of the fragment size up to 128, vec4-aligned slices, where
    /// [`GpuContext::cooperative_matrix`](crate::GpuContext::cooperative_matrix) gives a shape
    /// and the adapter has the workgroup memory.
    Coop,
}

impl AttentionKernel {
    pub const ALL: [AttentionKernel; 4] = [
        AttentionKernel::Rows,
        AttentionKernel::Flash,
        AttentionKernel::Staged,
        AttentionKernel::Coop,
    ];

    /// The kernel `TESSERA_ATTENTION` names (`rows`, `flash`, `staged`, `coop`), read once: a
    /// benchmarking override that attention calls use wherever that kernel computes them (the
    /// others keep [`choose_kernel`]'s pick).
    pub fn forced() -> Option<AttentionKernel> {
        static FORCED: std::sync::OnceLock<Option<AttentionKernel>> = std::sync::OnceLock::new();
        *FORCED.get_or_init(|| super::strategy_from_env("TESSERA_ATTENTION", &AttentionKernel::ALL))
    }

    /// Whether the kernel runs on `ctx` for this head size and layout (`aligned`: head size,
    /// strides and offsets multiples of 4).
    pub fn available(self, ctx: &crate::GpuContext, head_dim: usize, aligned: bool) -> bool {
        let storage = ctx.limits().max_compute_workgroup_storage_size;
        match self {
            AttentionKernel::Staged => true,
            AttentionKernel::Rows => aligned && head_dim <= MAX_HEAD_DIM,
            AttentionKernel::Flash => {
                aligned && head_dim <= MAX_HEAD_DIM && storage >= FLASH_WORKGROUP_BYTES
            }
            AttentionKernel::Coop => ctx
                .cooperative_matrix()
                .is_some_and(|shape| coop_fits(shape, storage, head_dim, aligned)),
        }
    }

    /// The kernel `family` picks on `ctx` for this head size and layout: [`choose_kernel`]
    /// given the adapter's workgroup memory and whether the cooperative-matrix kernel computes
    /// it there.
    pub fn chosen(
        ctx: &crate::GpuContext,
        family: KernelFamily,
        head_dim: usize,
        aligned: bool,
    ) -> AttentionKernel {
        choose_kernel(
            family,
            ctx.limits().max_compute_workgroup_storage_size,
            aligned,
            AttentionKernel::Coop.available(ctx, head_dim, aligned),
        )
    }
}

impl AttentionKernel {
    /// The kernel [`attention`] runs `[batch, heads, lq, lk, head_dim]` with on `rec`
    /// (`aligned`: head size, strides and offsets multiples of 4): `TESSERA_ATTENTION`'s where
    /// it computes it here; else, where the context's [`Tuner`](crate::gpu::Tuner) is on, the
    /// fastest measured at this shape (on contiguous Q, K and V) among the kernels at least as
    /// precise as [`choose_kernel`]'s pick (every one where it is the cooperative-matrix
    /// kernel, which rounds to f16; the f32 ones where it is f32: tuning never lowers
    /// precision), `choose_kernel`'s pick unless another beats it by the tuner's margin; else
    /// `choose_kernel`'s pick.
    pub fn picked(
        rec: &Recorder<'_>,
        [batch, heads, lq, lk, head_dim]: [usize; 5],
        causal: bool,
        aligned: bool,
    ) -> Self {
        let ctx = rec.ctx();
        if let Some(k) = Self::forced().filter(|k| k.available(ctx, head_dim, aligned)) {
            return k;
        }
        let family = rec.kernel_family();
        let chosen = Self::chosen(ctx, family, head_dim, aligned);
        let tuner = ctx.tuner();
        if !tuner.is_on() {
            return chosen;
        }
        let f16 = |k: AttentionKernel| k == AttentionKernel::Coop;
        let candidates: Vec<_> = Self::ALL
            .into_iter()
            .filter(|k| k.available(ctx, head_dim, aligned) && (!f16(*k) || f16(chosen)))
            .collect();
        let key = format!(
            "attention {family:?}{}{} [{batch}, {heads}, {lq}, {lk}, {head_dim}]",
            if causal { " causal" } else { "" },
            if aligned { "" } else { " unaligned" },
        );
        tuner.pick(&key, chosen, &candidates, |k| {
            let width = heads * head_dim;
            let q = Tensor::empty(ctx, "tune.q", &[batch, lq, width], DType::F32)?;
            let kv = Tensor::empty(ctx, "tune.kv", &[batch, lk, width], DType::F32)?;
            let mut spec_ = AttentionSpec::new(heads, head_dim);
            spec_.causal = causal;
            crate::gpu::time_calls(ctx, |r| {
                r.set_kernel_family(family);
                attention_with_kernel(r, &q, &kv, &kv, &spec_, Some(k))
            })
        })
    }
}

/// Whether the cooperative-matrix kernel computes this head size and layout with `storage`
/// bytes of workgroup memory.
fn coop_fits(shape: CoopShape, storage: u32, head_dim: usize, aligned: bool) -> bool {
    aligned
        && head_dim <= MAX_HEAD_DIM
        && head_dim.is_multiple_of(shape.size() as usize)
        && coop_variant(shape, head_dim).2 <= storage
}

/// The kernel [`attention`] uses for this family, adapter and layout: vec4-aligned heads and
/// slices get the family's fast kernel — on GPUs the cooperative-matrix one where `coop` says
/// it computes this head size (see [`AttentionKernel::available`]) — anything else the staged
/// one.
pub fn choose_kernel(
    family: KernelFamily,
    workgroup_storage: u32,
    aligned: bool,
    coop: bool,
) -> AttentionKernel {
    match family {
        KernelFamily::Cpu if aligned => AttentionKernel::Rows,
        KernelFamily::Tiled if aligned && coop => AttentionKernel::Coop,
        KernelFamily::Tiled if aligned && workgroup_storage >= FLASH_WORKGROUP_BYTES => {
            AttentionKernel::Flash
        }
        _ => AttentionKernel::Staged,
    }
}

/// Columns `offset .. offset + heads·head_dim` of a `[batch, len, width]` tensor: lets Q, K and V
/// be slices of one fused projection.
#[derive(Clone, Copy)]
pub struct Columns<'a> {
    pub tensor: &'a Tensor,
    pub offset: usize,
}

impl<'a> From<&'a Tensor> for Columns<'a> {
    fn from(tensor: &'a Tensor) -> Self {
        Self { tensor, offset: 0 }
    }
}

/// Head layout and masking of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct AttentionSpec {
    pub heads: usize,
    pub head_dim: usize,
    /// Query i sees keys j ≤ i + (Lk − Lq) only (CLIP's text encoder).
    pub causal: bool,
    /// Score scale; `None` is 1/√head_dim.
    pub scale: Option<f32>,
}

impl AttentionSpec {
    pub fn new(heads: usize, head_dim: usize) -> Self {
        Self {
            heads,
            head_dim,
            causal: false,
            scale: None,
        }
    }

    pub fn causal(self) -> Self {
        Self {
            causal: true,
            ..self
        }
    }
}

/// `softmax(Q·Kᵀ·scale)·V` per head. q `[B, Lq, H·D]`, k and v `[B, Lk, H·D]` (or column slices
/// of wider tensors). Result `[B, Lq, H·D]`.
///
/// [`choose_kernel`] picks the kernel from the recorder's family, the adapter's workgroup
/// memory and whether head size, strides and offsets are multiples of 4.
pub fn attention<'a>(
    rec: &mut Recorder<'_>,
    q: impl Into<Columns<'a>>,
    k: impl Into<Columns<'a>>,
    v: impl Into<Columns<'a>>,
    spec_: &AttentionSpec,
) -> Result<Tensor> {
    attention_with_kernel(rec, q, k, v, spec_, None)
}

/// [`attention`] with the kernel named (`None`: [`choose_kernel`]'s pick), for the kernel
/// tests and `tessera bench`. Heads wider than [`MAX_HEAD_DIM`] go through matmuls whatever
/// is named.
///
/// # Errors
/// As [`attention`]; also [`Error::MissingFeature`] or [`Error::Shape`] when the named kernel
/// does not run on this adapter or does not compute this head size and layout.
pub fn attention_with_kernel<'a>(
    rec: &mut Recorder<'_>,
    q: impl Into<Columns<'a>>,
    k: impl Into<Columns<'a>>,
    v: impl Into<Columns<'a>>,
    spec_: &AttentionSpec,
    kernel: Option<AttentionKernel>,
) -> Result<Tensor> {
    const OP: &str = "attention";
    let (q, k, v) = (q.into(), k.into(), v.into());
    let AttentionSpec {
        heads,
        head_dim,
        causal,
        scale,
    } = *spec_;
    if heads == 0 || head_dim == 0 {
        return Err(Error::shape(
            OP,
            format!("heads {heads} × head_dim {head_dim}"),
        ));
    }
    let width = heads * head_dim;
    let dims = |c: &Columns<'_>| -> Result<(usize, usize, usize)> {
        c.tensor.expect_dtype(OP, DType::F32)?;
        match *c.tensor.shape() {
            [b, l, w] if c.offset + width <= w => Ok((b, l, w)),
            _ => Err(Error::shape(
                OP,
                format!(
                    "tensor {:?} {:?} must be [batch, len, ≥ {}] for columns {}..{}",
                    c.tensor.name(),
                    c.tensor.shape(),
                    c.offset + width,
                    c.offset,
                    c.offset + width
                ),
            )),
        }
    };
    let (bq, lq, wq) = dims(&q)?;
    let (bk, lk, wk) = dims(&k)?;
    let (bv, lv, wv) = dims(&v)?;
    if bq != bk || bq != bv || lk != lv {
        return Err(Error::shape(
            OP,
            format!(
                "q {:?}, k {:?}, v {:?}: batch sizes and key/value lengths must match",
                q.tensor.shape(),
                k.tensor.shape(),
                v.tensor.shape()
            ),
        ));
    }
    if lk == 0 {
        return Err(Error::shape(OP, "no keys to attend to"));
    }
    if head_dim > MAX_HEAD_DIM {
        return unfused(rec, q, k, v, spec_);
    }
    let out = Tensor::empty(rec.ctx(), "attention.out", &[bq, lq, width], DType::F32)?;
    let u = |what: &str, v: usize| to_u32(OP, what, v);
    let params = Params {
        batch: u("batch", bq)?,
        heads: u("heads", heads)?,
        lq: u("lq", lq)?,
        lk: u("lk", lk)?,
        head_dim: u("head_dim", head_dim)?,
        q_stride: u("q width", wq)?,
        k_stride: u("k width", wk)?,
        v_stride: u("v width", wv)?,
        o_stride: u("width", width)?,
        q_offset: u("q offset", q.offset)?,
        k_offset: u("k offset", k.offset)?,
        v_offset: u("v offset", v.offset)?,
        q_batch_stride: u("q batch stride", lq * wq)?,
        k_batch_stride: u("k batch stride", lk * wk)?,
        v_batch_stride: u("v batch stride", lk * wv)?,
        o_batch_stride: u("out batch stride", lq * width)?,
        scale: scale.unwrap_or(1.0 / (head_dim as f32).sqrt()),
        causal: u32::from(causal),
        _pad0: 0,
        _pad1: 0,
    };
    let aligned = [head_dim, wq, wk, wv, q.offset, k.offset, v.offset]
        .iter()
        .all(|x| x % 4 == 0);
    let ctx = rec.ctx();
    let kernel = match kernel {
        Some(kernel) if kernel.available(ctx, head_dim, aligned) => kernel,
        Some(AttentionKernel::Coop) if ctx.cooperative_matrix().is_none() => {
            return Err(Error::MissingFeature {
                op: OP,
                feature: super::COOP_FEATURE,
            });
        }
        Some(kernel) => {
            return Err(Error::shape(
                OP,
                format!(
                    "the {kernel:?} kernel does not compute head size {head_dim} with these \
                     strides and offsets on this adapter"
                ),
            ));
        }
        None => AttentionKernel::picked(rec, [bq, heads, lq, lk, head_dim], causal, aligned),
    };
    let (kernel_spec, per_group) = match kernel {
        AttentionKernel::Rows => (rows_spec(head_dim), ROWS_QUERIES_PER_GROUP),
        AttentionKernel::Flash => (flash_spec(head_dim), FLASH_QUERIES_PER_GROUP),
        AttentionKernel::Staged => (spec(), QUERIES_PER_GROUP),
        AttentionKernel::Coop => {
            let shape = ctx.cooperative_matrix().unwrap_or(CoopShape::M16);
            let (_, bq, _) = coop_variant(shape, head_dim);
            (coop_spec(shape, head_dim), bq)
        }
    };
    let groups = [
        u("query blocks", lq.div_ceil(per_group))?,
        params.heads,
        params.batch,
    ];
    rec.dispatch(
        &kernel_spec,
        bytemuck::bytes_of(&params),
        &[
            (1, Binding::Tensor(q.tensor)),
            (2, Binding::Tensor(k.tensor)),
            (3, Binding::Tensor(v.tensor)),
            (4, Binding::Tensor(&out)),
        ],
        groups,
    )?;
    Ok(out)
}

/// Heads wider than the fused kernel holds (e.g. a VQ mid-block's single 512-wide head):
/// Q·Kᵀ and P·V as batched matmuls around a row softmax, materialising the scores.
fn unfused(
    rec: &mut Recorder<'_>,
    q: Columns<'_>,
    k: Columns<'_>,
    v: Columns<'_>,
    spec_: &AttentionSpec,
) -> Result<Tensor> {
    use super::{elementwise, layout, matmul};
    const OP: &str = "attention";
    if spec_.causal {
        return Err(Error::shape(
            OP,
            format!(
                "causal attention needs head_dim ≤ {MAX_HEAD_DIM}, got {}",
                spec_.head_dim
            ),
        ));
    }
    let (h, d) = (spec_.heads, spec_.head_dim);
    // [B, L, W] columns → [B·H, L, D].
    let split = |rec: &mut Recorder<'_>, c: Columns<'_>| -> Result<Tensor> {
        let [b, l, w] = *c.tensor.shape() else {
            return Err(Error::shape(
                OP,
                format!("{:?} is not [batch, len, width]", c.tensor.shape()),
            ));
        };
        let t = if c.offset == 0 && w == h * d {
            c.tensor.clone()
        } else {
            layout::slice(rec, c.tensor, 2, c.offset, h * d)?
        };
        let t = layout::permute(rec, &t.reshape(&[b, l, h, d])?, &[0, 2, 1, 3])?;
        t.reshape(&[b * h, l, d])
    };
    let b = q.tensor.shape()[0];
    let lq = q.tensor.shape()[1];
    let (qh, kh, vh) = (split(rec, q)?, split(rec, k)?, split(rec, v)?);
    let scores = matmul::matmul(rec, &qh, &kh, None, matmul::BLayout::NK)?;
    let scale = spec_.scale.unwrap_or(1.0 / (d as f32).sqrt());
    let probs = elementwise::softmax(rec, &scores, scale)?;
    let o = matmul::matmul(rec, &probs, &vh, None, matmul::BLayout::KN)?;
    let o = layout::permute(rec, &o.reshape(&[b, h, lq, d])?, &[0, 2, 1, 3])?;
    o.reshape(&[b, lq, h * d])
}
