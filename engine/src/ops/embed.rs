//! Embeddings (`shaders/embed.wgsl`): table lookup and sinusoidal (timestep-style) embedding.

use bytemuck::{Pod, Zeroable};

use super::{WG, groups_for, to_u32};
use crate::error::{Error, Result};
use crate::gpu::{Binding, DType, Recorder, Tensor};
use crate::shaders::{KernelSpec, Module};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
pub(crate) struct Params {
    rows: u32,
    cols: u32,
    vocab: u32,
    flip: u32,
    shift: f32,
    max_period: f32,
    scale: f32,
    _pad0: u32,
}

fn spec(entry: &'static str) -> KernelSpec {
    KernelSpec::new(Module::Embed, entry)
}

pub(crate) fn specs() -> Vec<KernelSpec> {
    vec![spec("gather"), spec("sinusoidal")]
}

/// `table[ids]`: ids u32/i32 of any shape, table f32 `[vocab, C]` → `[ids.., C]`.
///
/// Ids must be below `vocab`; ids computed on the GPU are clamped there, ids from the host should
/// be checked with [`check_ids`] first.
pub fn embedding(rec: &mut Recorder<'_>, ids: &Tensor, table: &Tensor) -> Result<Tensor> {
    const OP: &str = "embedding";
    if !matches!(ids.dtype(), DType::U32 | DType::I32) {
        return Err(Error::DType {
            op: OP,
            name: ids.name().to_owned(),
            got: ids.dtype(),
            expected: "u32 or i32".into(),
        });
    }
    table.expect_dtype(OP, DType::F32)?;
    let [vocab, cols] = *table.shape() else {
        return Err(Error::shape(
            OP,
            format!("table {:?} is not [vocab, C]", table.shape()),
        ));
    };
    if vocab == 0 {
        return Err(Error::shape(OP, "empty table"));
    }
    let mut shape = ids.shape().to_vec();
    shape.push(cols);
    let out = Tensor::empty(rec.ctx(), "embedding.out", &shape, DType::F32)?;
    let rows = ids.numel();
    let params = Params {
        rows: to_u32(OP, "ids", rows)?,
        cols: to_u32(OP, "cols", cols)?,
        vocab: to_u32(OP, "vocab", vocab)?,
        ..Default::default()
    };
    let groups = groups_for(rec, rows * cols, WG)?;
    rec.dispatch(
        &spec("gather"),
        bytemuck::bytes_of(&params),
        &[
            (1, Binding::Tensor(ids)),
            (2, Binding::Tensor(table)),
            (4, Binding::Tensor(&out)),
        ],
        groups,
    )?;
    Ok(out)
}

/// Errors naming the first id that is not below `vocab`.
pub fn check_ids(name: &str, ids: &[u32], vocab: usize) -> Result<()> {
    if let Some((i, &id)) = ids
        .iter()
        .enumerate()
        .find(|&(_, &id)| id as usize >= vocab)
    {
        return Err(Error::shape(
            "embedding",
            format!("{name}[{i}] = {id} is outside the vocabulary of {vocab}"),
        ));
    }
    Ok(())
}

/// Options of [`sinusoidal_embedding`] (diffusers `get_timestep_embedding` argument names).
#[derive(Clone, Copy, Debug)]
pub struct Sinusoidal {
    pub dim: usize,
    /// true: `[cos | sin]`, false: `[sin | cos]`.
    pub flip_sin_to_cos: bool,
    pub downscale_freq_shift: f32,
    pub max_period: f32,
    pub scale: f32,
}

impl Sinusoidal {
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            flip_sin_to_cos: false,
            downscale_freq_shift: 1.0,
            max_period: 10000.0,
            scale: 1.0,
        }
    }
}

/// values f32 `[N]` → `[N, dim]` sinusoidal embedding.
pub fn sinusoidal_embedding(
    rec: &mut Recorder<'_>,
    values: &Tensor,
    opts: &Sinusoidal,
) -> Result<Tensor> {
    const OP: &str = "sinusoidal_embedding";
    values.expect_dtype(OP, DType::F32)?;
    if values.shape().len() != 1 {
        return Err(Error::shape(
            OP,
            format!("values {:?} must be 1-D", values.shape()),
        ));
    }
    if opts.dim < 2 || (opts.dim / 2) as f32 == opts.downscale_freq_shift {
        return Err(Error::shape(
            OP,
            format!(
                "dim {} with shift {} divides by zero",
                opts.dim, opts.downscale_freq_shift
            ),
        ));
    }
    let rows = values.numel();
    let out = Tensor::empty(rec.ctx(), "sinusoidal.out", &[rows, opts.dim], DType::F32)?;
    let params = Params {
        rows: to_u32(OP, "rows", rows)?,
        cols: to_u32(OP, "dim", opts.dim)?,
        vocab: 0,
        flip: u32::from(opts.flip_sin_to_cos),
        shift: opts.downscale_freq_shift,
        max_period: opts.max_period,
        scale: opts.scale,
        _pad0: 0,
    };
    let groups = groups_for(rec, rows * opts.dim, WG)?;
    rec.dispatch(
        &spec("sinusoidal"),
        bytemuck::bytes_of(&params),
        &[(3, Binding::Tensor(values)), (4, Binding::Tensor(&out))],
        groups,
    )?;
    Ok(out)
}
