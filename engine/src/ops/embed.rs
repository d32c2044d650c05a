//! Embeddings (`shaders/embed.wgsl`): table lookup and sinusoidal (timestep-style) embedding.

use super::{WG, groups_for, to_u32};
use crate::error::{Error, Result};
use crate::gpu::{Binding, DType, GpuContext, Recorder, Tensor};
use crate::shaders::{KernelSpec, Module, kernel_params};

kernel_params! {
    #[derive(Default)]
    pub(crate) struct Params {
        rows: u32,
        cols: u32,
        vocab: u32,
        flip: u32,
        shift: f32,
        max_period: f32,
        scale: f32,
        first: u32,
        total: u32,
        id_rows: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

fn spec(entry: &'static str) -> KernelSpec {
    KernelSpec::new(Module::Embed, entry)
}

pub(crate) fn specs() -> Vec<KernelSpec> {
    vec![spec("gather"), spec("sinusoidal")]
}

/// An embedding table `[vocab, C]` f32, held as row blocks that each fit one storage binding
/// (CLIP-L's 49408 × 768 f32 token table is 152 MB, over the 128 MiB many adapters allow).
pub struct Table {
    parts: Vec<Tensor>,
    rows_per_part: usize,
    vocab: usize,
    cols: usize,
}

impl Table {
    /// Uploads `data` (`[vocab, cols]` row-major) in as few blocks as the binding limit allows.
    pub fn from_f32(ctx: &GpuContext, name: &str, shape: &[usize], data: &[f32]) -> Result<Self> {
        let cols = shape.get(1).copied().unwrap_or(1).max(1);
        let limit = ctx.limits().max_storage_buffer_binding_size as usize;
        Self::from_f32_in_blocks(ctx, name, shape, data, (limit / (4 * cols)).max(1))
    }

    /// [`Table::from_f32`] with at most `rows_per_part` rows per block (tests use small blocks).
    pub fn from_f32_in_blocks(
        ctx: &GpuContext,
        name: &str,
        shape: &[usize],
        data: &[f32],
        rows_per_part: usize,
    ) -> Result<Self> {
        let [vocab, cols] = *shape else {
            return Err(Error::shape(
                "embedding",
                format!("table {name:?} {shape:?} is not [vocab, C]"),
            ));
        };
        if vocab == 0 || cols == 0 || data.len() != vocab * cols || rows_per_part == 0 {
            return Err(Error::shape(
                "embedding",
                format!("table {name:?} {shape:?} holds {} values", data.len()),
            ));
        }
        let parts = data
            .chunks(rows_per_part * cols)
            .enumerate()
            .map(|(k, block)| {
                let label = if vocab > rows_per_part {
                    format!("{name}[rows {}..]", k * rows_per_part)
                } else {
                    name.to_owned()
                };
                Tensor::from_f32(ctx, &label, &[block.len() / cols, cols], block)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            parts,
            rows_per_part,
            vocab,
            cols,
        })
    }

    /// A table in one tensor.
    pub fn whole(tensor: Tensor) -> Result<Self> {
        let [vocab, cols] = *tensor.shape() else {
            return Err(Error::shape(
                "embedding",
                format!("table {:?} is not [vocab, C]", tensor.shape()),
            ));
        };
        Ok(Self {
            parts: vec![tensor],
            rows_per_part: vocab.max(1),
            vocab,
            cols,
        })
    }

    pub fn shape(&self) -> [usize; 2] {
        [self.vocab, self.cols]
    }

    /// Number of row blocks.
    pub fn blocks(&self) -> usize {
        self.parts.len()
    }
}

/// `table[ids]`: ids u32/i32 of any shape, table f32 `[vocab, C]` → `[ids.., C]`.
///
/// Ids must be below `vocab`; ids computed on the GPU are clamped there, ids from the host should
/// be checked with [`check_ids`] first.
pub fn embedding(rec: &mut Recorder<'_>, ids: &Tensor, table: &Tensor) -> Result<Tensor> {
    table.expect_dtype("embedding", DType::F32)?;
    embedding_table(rec, ids, &Table::whole(table.clone())?)
}

/// [`embedding`] from a [`Table`] (one dispatch per row block).
pub fn embedding_table(rec: &mut Recorder<'_>, ids: &Tensor, table: &Table) -> Result<Tensor> {
    gather(rec, ids, table, 1)
}

/// `table[ids]` for ids `[B, ..]` repeated `times` times along dim 0: `[times·B, .., C]`, row
/// `r` looking up the ids of row `r mod B` (one token grid for both halves of a guided batch).
pub fn embedding_repeated(
    rec: &mut Recorder<'_>,
    ids: &Tensor,
    table: &Tensor,
    times: usize,
) -> Result<Tensor> {
    table.expect_dtype("embedding", DType::F32)?;
    gather(rec, ids, &Table::whole(table.clone())?, times)
}

fn gather(rec: &mut Recorder<'_>, ids: &Tensor, table: &Table, times: usize) -> Result<Tensor> {
    const OP: &str = "embedding";
    if !matches!(ids.dtype(), DType::U32 | DType::I32) {
        return Err(Error::DType {
            op: OP,
            name: ids.name().to_owned(),
            got: ids.dtype(),
            expected: "u32 or i32".into(),
        });
    }
    let [vocab, cols] = table.shape();
    if vocab == 0 {
        return Err(Error::shape(OP, "empty table"));
    }
    let mut shape = ids.shape().to_vec();
    if times == 0 || shape.is_empty() {
        return Err(Error::shape(
            OP,
            format!("ids {:?} repeated {times} times", ids.shape()),
        ));
    }
    shape[0] = shape[0]
        .checked_mul(times)
        .ok_or_else(|| Error::shape(OP, format!("ids {:?} repeated {times} times", ids.shape())))?;
    shape.push(cols);
    let out = Tensor::empty(rec.ctx(), "embedding.out", &shape, DType::F32)?;
    let rows = ids.numel() * times;
    let groups = groups_for(rec, rows * cols, WG)?;
    for (k, part) in table.parts.iter().enumerate() {
        part.expect_dtype(OP, DType::F32)?;
        let params = Params {
            rows: to_u32(OP, "ids", rows)?,
            cols: to_u32(OP, "cols", cols)?,
            vocab: to_u32(OP, "vocab", part.shape()[0])?,
            first: to_u32(OP, "first row", k * table.rows_per_part)?,
            total: to_u32(OP, "vocab", vocab)?,
            id_rows: to_u32(OP, "ids", ids.numel())?,
            ..Default::default()
        };
        rec.dispatch(
            &spec("gather"),
            bytemuck::bytes_of(&params),
            &[
                (1, Binding::Tensor(ids)),
                (2, Binding::Tensor(part)),
                (4, Binding::Tensor(&out)),
            ],
            groups,
        )?;
    }
    Ok(out)
}

/// Repeats each of the `rows` rows of `t` (`[rows, ..]`) `times` times: `[r0 × times, r1 ×
/// times, ..]` (a gather; `t` itself when `times` is 1).
///
/// # Errors
/// A scalar `t`; GPU failures.
pub fn repeat_rows(rec: &mut Recorder<'_>, t: &Tensor, times: usize) -> Result<Tensor> {
    let Some(&rows) = t.shape().first() else {
        return Err(Error::shape("repeat_rows", "a scalar has no rows"));
    };
    if times == 1 {
        return Ok(t.clone());
    }
    let inner: usize = t.shape()[1..].iter().product();
    let idx: Vec<u32> = (0..rows as u32)
        .flat_map(|r| std::iter::repeat_n(r, times))
        .collect();
    let ti = Tensor::from_u32(rec.ctx(), "repeat_rows", &[idx.len()], &idx)?;
    let out = embedding(rec, &ti, &t.reshape(&[rows, inner])?)?;
    let mut shape = t.shape().to_vec();
    shape[0] = rows * times;
    out.reshape(&shape)
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
        ..Default::default()
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
