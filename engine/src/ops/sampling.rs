//! Row-wise selection on the GPU (`shaders/sampling.wgsl`): argmax, top-k, and categorical
//! draws from caller-supplied uniforms (so the host's seeded RNG decides every draw).

use super::{groups_for, to_u32};
use crate::error::{Error, Result};
use crate::gpu::{Binding, DType, KernelFamily, Recorder, Tensor};
use crate::shaders::{KernelSpec, Module, kernel_params};

kernel_params! {
    #[derive(Default)]
    pub(crate) struct Params {
        rows: u32,
        cols: u32,
        row_stride: u32,
        k: u32,
        temperature: f32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

/// Largest k [`topk`] accepts.
pub const MAX_K: usize = 1024;

fn spec(entry: &'static str) -> KernelSpec {
    KernelSpec::new(Module::Sampling, entry)
}

pub(crate) fn specs() -> Vec<KernelSpec> {
    vec![
        spec("argmax"),
        spec("topk"),
        spec("categorical"),
        spec("categorical_rows"),
        spec("nearest_code"),
        spec("typical_filter"),
    ]
}

fn rows_cols(op: &'static str, logits: &Tensor) -> Result<(usize, usize)> {
    logits.expect_dtype(op, DType::F32)?;
    let cols = *logits
        .shape()
        .last()
        .ok_or_else(|| Error::shape(op, "scalar logits"))?;
    if cols == 0 {
        return Err(Error::shape(op, "empty rows"));
    }
    Ok((logits.numel() / cols, cols))
}

fn out_shape(logits: &Tensor, last: Option<usize>) -> Vec<usize> {
    let s = logits.shape();
    let mut v = s[..s.len() - 1].to_vec();
    v.extend(last);
    v
}

/// Index (u32) and value (f32) of each row's maximum over the last dim (first on ties).
pub fn argmax(rec: &mut Recorder<'_>, logits: &Tensor) -> Result<(Tensor, Tensor)> {
    const OP: &str = "argmax";
    let (rows, cols) = rows_cols(OP, logits)?;
    let shape = out_shape(logits, None);
    let ids = Tensor::empty(rec.ctx(), "argmax.ids", &shape, DType::U32)?;
    let vals = Tensor::empty(rec.ctx(), "argmax.vals", &shape, DType::F32)?;
    let params = Params {
        rows: to_u32(OP, "rows", rows)?,
        cols: to_u32(OP, "cols", cols)?,
        row_stride: to_u32(OP, "cols", cols)?,
        k: 1,
        ..Default::default()
    };
    dispatch(rec, "argmax", &params, logits, None, &ids, &vals, rows)?;
    Ok((ids, vals))
}

/// The k largest of each row, in descending order (lower index first on ties):
/// ids u32 `[.., k]`, values f32 `[.., k]`.
pub fn topk(rec: &mut Recorder<'_>, logits: &Tensor, k: usize) -> Result<(Tensor, Tensor)> {
    const OP: &str = "topk";
    let (rows, cols) = rows_cols(OP, logits)?;
    if k == 0 || k > cols || k > MAX_K {
        return Err(Error::shape(
            OP,
            format!("k = {k} with {cols} columns (max {MAX_K})"),
        ));
    }
    let shape = out_shape(logits, Some(k));
    let ids = Tensor::empty(rec.ctx(), "topk.ids", &shape, DType::U32)?;
    let vals = Tensor::empty(rec.ctx(), "topk.vals", &shape, DType::F32)?;
    let params = Params {
        rows: to_u32(OP, "rows", rows)?,
        cols: to_u32(OP, "cols", cols)?,
        row_stride: to_u32(OP, "cols", cols)?,
        k: to_u32(OP, "k", k)?,
        ..Default::default()
    };
    dispatch(rec, "topk", &params, logits, None, &ids, &vals, rows)?;
    Ok((ids, vals))
}

/// The kernels of [`categorical`], which give the same ids and values bit for bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CategoricalKernel {
    /// `categorical`: a workgroup of 256 invocations per row (GPUs).
    Workgroup,
    /// `categorical_rows`: one invocation per row, no barriers (adapters that run on the CPU).
    Rows,
}

impl CategoricalKernel {
    pub const ALL: [CategoricalKernel; 2] = [CategoricalKernel::Workgroup, CategoricalKernel::Rows];

    /// The kernel for a kernel family: one invocation per row on CPU adapters.
    pub fn choose(family: KernelFamily) -> Self {
        match family {
            KernelFamily::Cpu => CategoricalKernel::Rows,
            KernelFamily::Tiled => CategoricalKernel::Workgroup,
        }
    }
}

/// Draws one id per row from softmax(logits / temperature) using `uniforms` f32 (one value in
/// [0, 1) per row) by inverse CDF. Returns the ids (u32) and each id's probability under the
/// temperature-free softmax (f32).
pub fn categorical(
    rec: &mut Recorder<'_>,
    logits: &Tensor,
    uniforms: &Tensor,
    temperature: f32,
) -> Result<(Tensor, Tensor)> {
    categorical_with_kernel(rec, logits, uniforms, temperature, None)
}

/// [`categorical`] on a given kernel (`None`: [`CategoricalKernel::choose`]'s for the
/// recorder's family).
pub fn categorical_with_kernel(
    rec: &mut Recorder<'_>,
    logits: &Tensor,
    uniforms: &Tensor,
    temperature: f32,
    kernel: Option<CategoricalKernel>,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "categorical";
    let (rows, cols) = rows_cols(OP, logits)?;
    uniforms.expect_dtype(OP, DType::F32)?;
    if uniforms.numel() != rows {
        return Err(Error::shape(
            OP,
            format!(
                "{rows} rows need {rows} uniforms, got {:?}",
                uniforms.shape()
            ),
        ));
    }
    if !(temperature > 0.0 && temperature.is_finite()) {
        return Err(Error::invalid(
            OP,
            format!("temperature {temperature} must be positive (use argmax for 0)"),
        ));
    }
    let shape = out_shape(logits, None);
    let ids = Tensor::empty(rec.ctx(), "categorical.ids", &shape, DType::U32)?;
    let vals = Tensor::empty(rec.ctx(), "categorical.probs", &shape, DType::F32)?;
    let params = Params {
        rows: to_u32(OP, "rows", rows)?,
        cols: to_u32(OP, "cols", cols)?,
        row_stride: to_u32(OP, "cols", cols)?,
        k: 1,
        temperature,
        ..Default::default()
    };
    let (entry, rows_per_group) =
        match kernel.unwrap_or_else(|| CategoricalKernel::choose(rec.kernel_family())) {
            CategoricalKernel::Workgroup => ("categorical", 1),
            CategoricalKernel::Rows => ("categorical_rows", 8),
        };
    dispatch(
        rec,
        entry,
        &params,
        logits,
        Some(uniforms),
        &ids,
        &vals,
        rows.div_ceil(rows_per_group),
    )?;
    Ok((ids, vals))
}

/// Locally typical filtering (Paella v1's `typical_filtering`, Meister et al. 2022): per row
/// of `logits` `[.., K]`, with logp = log_softmax and H its entropy, tokens sorted by
/// |−logp − H| are kept up to the first whose cumulative probability reaches `mass` (ties with
/// it kept); the others get −3e38. Same shape as `logits`; the kept logits unchanged.
///
/// # Errors
/// A mass outside (0, 1]; shapes.
pub fn typical_filter(rec: &mut Recorder<'_>, logits: &Tensor, mass: f32) -> Result<Tensor> {
    const OP: &str = "typical_filter";
    let (rows, cols) = rows_cols(OP, logits)?;
    if !(mass > 0.0 && mass <= 1.0) {
        return Err(Error::invalid(OP, format!("mass {mass} must be in (0, 1]")));
    }
    let out = Tensor::empty(rec.ctx(), "typical.logits", logits.shape(), DType::F32)?;
    let params = Params {
        rows: to_u32(OP, "rows", rows)?,
        cols: to_u32(OP, "cols", cols)?,
        row_stride: to_u32(OP, "cols", cols)?,
        k: 0,
        temperature: mass,
        ..Default::default()
    };
    let groups = groups_for(rec, rows, 1)?;
    rec.dispatch(
        &spec("typical_filter"),
        bytemuck::bytes_of(&params),
        &[(1, Binding::Tensor(logits)), (4, Binding::Tensor(&out))],
        groups,
    )?;
    Ok(out)
}

/// Vector quantisation: for each row of z `[rows, dim]`, the index (u32) of the nearest row of
/// `codebook` `[codes, dim]` in Euclidean distance (first on ties), and that squared distance.
pub fn nearest_code(
    rec: &mut Recorder<'_>,
    z: &Tensor,
    codebook: &Tensor,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "nearest_code";
    let (rows, dim) = rows_cols(OP, z)?;
    codebook.expect_dtype(OP, DType::F32)?;
    let [codes, cdim] = *codebook.shape() else {
        return Err(Error::shape(
            OP,
            format!("codebook {:?} is not [codes, dim]", codebook.shape()),
        ));
    };
    if cdim != dim || codes == 0 {
        return Err(Error::shape(
            OP,
            format!(
                "z {:?} and codebook {:?} differ in dim",
                z.shape(),
                codebook.shape()
            ),
        ));
    }
    let shape = out_shape(z, None);
    let ids = Tensor::empty(rec.ctx(), "nearest_code.ids", &shape, DType::U32)?;
    let dist = Tensor::empty(rec.ctx(), "nearest_code.dist", &shape, DType::F32)?;
    let params = Params {
        rows: to_u32(OP, "rows", rows)?,
        cols: to_u32(OP, "dim", dim)?,
        row_stride: to_u32(OP, "dim", dim)?,
        k: to_u32(OP, "codes", codes)?,
        ..Default::default()
    };
    let groups = groups_for(rec, rows, 1)?;
    rec.dispatch(
        &spec("nearest_code"),
        bytemuck::bytes_of(&params),
        &[
            (1, Binding::Tensor(z)),
            (3, Binding::Tensor(&ids)),
            (4, Binding::Tensor(&dist)),
            (5, Binding::Tensor(codebook)),
        ],
        groups,
    )?;
    Ok((ids, dist))
}

#[allow(clippy::too_many_arguments)]
fn dispatch(
    rec: &mut Recorder<'_>,
    entry: &'static str,
    params: &Params,
    logits: &Tensor,
    uniforms: Option<&Tensor>,
    ids: &Tensor,
    vals: &Tensor,
    workgroups: usize,
) -> Result<()> {
    let groups = groups_for(rec, workgroups, 1)?;
    let mut bindings = vec![
        (1, Binding::Tensor(logits)),
        (3, Binding::Tensor(ids)),
        (4, Binding::Tensor(vals)),
    ];
    if let Some(u) = uniforms {
        bindings.push((2, Binding::Tensor(u)));
    }
    rec.dispatch(&spec(entry), bytemuck::bytes_of(params), &bindings, groups)
}
