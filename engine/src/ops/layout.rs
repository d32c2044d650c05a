//! Layout helpers (`shaders/layout.wgsl`) on 32-bit tensors: permute, slice, concat, fill.
//! Reshape is free (`Tensor::reshape`).

use super::{WG, groups_for, to_u32};
use crate::error::{Error, Result};
use crate::gpu::{Binding, DType, Recorder, Tensor};
use crate::shaders::{KernelSpec, Module, kernel_params};

kernel_params! {
    #[derive(Default)]
    pub(crate) struct Params {
        n: u32,
        in_offset: u32,
        out_offset: u32,
        value: u32,
        shape: [u32; 4],
        in_strides: [u32; 4],
        out_strides: [u32; 4],
    /// The two outermost dims of a 6-d copy (x, y) and their strides; 1 and 0 below rank 5.
        outer: [u32; 4],
        in_outer: [u32; 4],
        out_outer: [u32; 4],
    }
}

fn spec(entry: &'static str) -> KernelSpec {
    KernelSpec::new(Module::Layout, entry)
}

pub(crate) fn specs() -> Vec<KernelSpec> {
    vec![spec("copy"), spec("fill"), spec("to_rgba8")]
}

fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut st = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        st[d] = st[d + 1] * shape[d + 1];
    }
    st
}

fn check_word(op: &'static str, t: &Tensor) -> Result<()> {
    if t.dtype() == DType::F16 {
        return Err(Error::DType {
            op,
            name: t.name().to_owned(),
            got: t.dtype(),
            expected: "a 32-bit dtype".into(),
        });
    }
    if t.shape().len() > 6 {
        return Err(Error::shape(op, format!("{:?}: rank above 6", t.shape())));
    }
    Ok(())
}

/// Shape/strides padded on the left to 6 dims with `fill`, split into the two outer dims
/// (`[d0, d1, 0, 0]`) and the inner four.
fn pad6(op: &'static str, v: &[usize], fill: usize) -> Result<([u32; 4], [u32; 4])> {
    if v.len() > 6 {
        return Err(Error::shape(op, format!("{v:?}: rank above 6")));
    }
    let mut all = [to_u32(op, "dim", fill)?; 6];
    for (i, &x) in v.iter().enumerate() {
        all[6 - v.len() + i] = to_u32(op, "dim", x)?;
    }
    Ok(([all[0], all[1], 0, 0], [all[2], all[3], all[4], all[5]]))
}

#[allow(clippy::too_many_arguments)]
fn copy(
    rec: &mut Recorder<'_>,
    op: &'static str,
    src: &Tensor,
    dst: &Tensor,
    shape: &[usize],
    in_strides: &[usize],
    in_offset: usize,
    out_strides: &[usize],
    out_offset: usize,
) -> Result<()> {
    let n: usize = shape.iter().product();
    let params = Params {
        n: to_u32(op, "elements", n)?,
        in_offset: to_u32(op, "offset", in_offset)?,
        out_offset: to_u32(op, "offset", out_offset)?,
        value: 0,
        shape: pad6(op, shape, 1)?.1,
        in_strides: pad6(op, in_strides, 0)?.1,
        out_strides: pad6(op, out_strides, 0)?.1,
        outer: pad6(op, shape, 1)?.0,
        in_outer: pad6(op, in_strides, 0)?.0,
        out_outer: pad6(op, out_strides, 0)?.0,
    };
    let groups = groups_for(rec, n, WG)?;
    rec.dispatch(
        &spec("copy"),
        bytemuck::bytes_of(&params),
        &[(1, Binding::Tensor(src)), (2, Binding::Tensor(dst))],
        groups,
    )
}

/// Reorders dimensions: output dim i is input dim `perm[i]`.
pub fn permute(rec: &mut Recorder<'_>, x: &Tensor, perm: &[usize]) -> Result<Tensor> {
    const OP: &str = "permute";
    check_word(OP, x)?;
    let r = x.shape().len();
    let mut seen = vec![false; r];
    if perm.len() != r
        || perm
            .iter()
            .any(|&p| p >= r || std::mem::replace(&mut seen[p], true))
    {
        return Err(Error::shape(
            OP,
            format!("{perm:?} is not a permutation of {r} dims"),
        ));
    }
    let in_st = contiguous_strides(x.shape());
    let shape: Vec<usize> = perm.iter().map(|&p| x.shape()[p]).collect();
    let strides: Vec<usize> = perm.iter().map(|&p| in_st[p]).collect();
    let out = Tensor::empty(rec.ctx(), "permute.out", &shape, x.dtype())?;
    copy(
        rec,
        OP,
        x,
        &out,
        &shape,
        &strides,
        0,
        &contiguous_strides(&shape),
        0,
    )?;
    Ok(out)
}

/// `x[.., start .. start + len, ..]` along `dim`.
pub fn slice(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    dim: usize,
    start: usize,
    len: usize,
) -> Result<Tensor> {
    const OP: &str = "slice";
    check_word(OP, x)?;
    if dim >= x.shape().len() || start + len > x.shape()[dim] {
        return Err(Error::shape(
            OP,
            format!(
                "{start}..{} along dim {dim} of {:?}",
                start + len,
                x.shape()
            ),
        ));
    }
    let st = contiguous_strides(x.shape());
    let mut shape = x.shape().to_vec();
    shape[dim] = len;
    let out = Tensor::empty(rec.ctx(), "slice.out", &shape, x.dtype())?;
    copy(
        rec,
        OP,
        x,
        &out,
        &shape,
        &st,
        start * st[dim],
        &contiguous_strides(&shape),
        0,
    )?;
    Ok(out)
}

/// Joins tensors along `dim` (all other dims and the dtype equal).
pub fn concat(rec: &mut Recorder<'_>, xs: &[&Tensor], dim: usize) -> Result<Tensor> {
    const OP: &str = "concat";
    let first = xs.first().ok_or_else(|| Error::shape(OP, "no inputs"))?;
    let r = first.shape().len();
    if dim >= r {
        return Err(Error::shape(OP, format!("dim {dim} of rank {r}")));
    }
    let mut shape = first.shape().to_vec();
    shape[dim] = 0;
    for t in xs {
        check_word(OP, t)?;
        let same = t.shape().len() == r
            && t.dtype() == first.dtype()
            && (0..r).all(|d| d == dim || t.shape()[d] == first.shape()[d]);
        if !same {
            return Err(Error::shape(
                OP,
                format!(
                    "{:?} {:?} does not match {:?} {:?} off dim {dim}",
                    t.name(),
                    t.shape(),
                    first.name(),
                    first.shape()
                ),
            ));
        }
        shape[dim] += t.shape()[dim];
    }
    let out = Tensor::empty(rec.ctx(), "concat.out", &shape, first.dtype())?;
    let out_st = contiguous_strides(&shape);
    let mut at = 0;
    for t in xs {
        let st = contiguous_strides(t.shape());
        copy(
            rec,
            OP,
            t,
            &out,
            t.shape(),
            &st,
            0,
            &out_st,
            at * out_st[dim],
        )?;
        at += t.shape()[dim];
    }
    Ok(out)
}

/// A tensor with every element's 32 bits set to `bits` (`f32::to_bits`, or an id).
pub fn fill(rec: &mut Recorder<'_>, shape: &[usize], dtype: DType, bits: u32) -> Result<Tensor> {
    const OP: &str = "fill";
    if dtype == DType::F16 {
        return Err(Error::DType {
            op: OP,
            name: "fill.out".into(),
            got: dtype,
            expected: "a 32-bit dtype".into(),
        });
    }
    let out = Tensor::empty(rec.ctx(), "fill.out", shape, dtype)?;
    let params = Params {
        n: to_u32(OP, "elements", out.numel())?,
        value: bits,
        ..Default::default()
    };
    let groups = groups_for(rec, out.numel(), WG)?;
    rec.dispatch(
        &spec("fill"),
        bytemuck::bytes_of(&params),
        &[(2, Binding::Tensor(&out))],
        groups,
    )?;
    Ok(out)
}

/// An f32 tensor of zeros.
pub fn zeros(rec: &mut Recorder<'_>, shape: &[usize]) -> Result<Tensor> {
    fill(rec, shape, DType::F32, 0)
}

/// Row pitch (in pixels) that makes a row a multiple of 256 bytes, as texture copies need.
pub fn rgba8_row_pitch(width: usize) -> usize {
    (width * 4).next_multiple_of(256) / 4
}

/// Image `index` of an NCHW f32 batch `[B, 3, H, W]` as RGBA8 pixels packed in u32
/// `[H, row pitch]` (values clipped to [0, 1], alpha 255), ready for
/// [`Recorder::copy_to_texture`](crate::gpu::Recorder::copy_to_texture).
pub fn to_rgba8(rec: &mut Recorder<'_>, images: &Tensor, index: usize) -> Result<Tensor> {
    const OP: &str = "to_rgba8";
    images.expect_dtype(OP, DType::F32)?;
    let [b, 3, h, w] = *images.shape() else {
        return Err(Error::shape(
            OP,
            format!("{:?} is not [B, 3, H, W]", images.shape()),
        ));
    };
    if index >= b {
        return Err(Error::shape(OP, format!("image {index} of a batch of {b}")));
    }
    let pitch = rgba8_row_pitch(w);
    let out = Tensor::empty(rec.ctx(), "rgba8", &[h, pitch], DType::U32)?;
    let params = Params {
        n: to_u32(OP, "pixels", h * w)?,
        in_offset: to_u32(OP, "offset", index * 3 * h * w)?,
        out_offset: 0,
        value: to_u32(OP, "pitch", pitch)?,
        shape: [
            to_u32(OP, "H", h)?,
            to_u32(OP, "W", w)?,
            to_u32(OP, "H·W", h * w)?,
            1,
        ],
        ..Default::default()
    };
    let groups = groups_for(rec, h * w, WG)?;
    rec.dispatch(
        &spec("to_rgba8"),
        bytemuck::bytes_of(&params),
        &[(1, Binding::Tensor(images)), (2, Binding::Tensor(&out))],
        groups,
    )?;
    Ok(out)
}
