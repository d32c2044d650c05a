//! Work split for tensors larger than one storage binding.
//!
//! A tensor may be allocated up to the adapter's `max_buffer_size` but a dispatch can bind at
//! most `max_storage_buffer_binding_size` of it: 128 MiB on lavapipe, under WebGPU's default
//! limits and on many integrated GPUs, while amused-512's VQ decoder holds 256 MiB activations
//! (256 channels at 512×512, f32). The ops that meet such tensors in the published models split
//! their work into pieces that fit, copy each piece's input into a tensor of its own (buffer
//! copies have no binding limit), run the ordinary kernel on it and copy the result into place:
//!
//! - [`conv2d`](super::conv::conv2d): bands of output rows per image, each with the input rows
//!   its kernel window reaches (the halo), all channels;
//! - [`group_norm`](super::norm::group_norm): whole groups of channels per image;
//! - [`upsample_nearest`](super::conv::upsample_nearest): channels per image;
//! - same-shape elementwise ops ([`add`](super::elementwise::add) and its siblings): flat ranges.
//!
//! Every output element is computed by the same kernel from the same inputs in the same order
//! as in one dispatch, so split results equal unsplit ones bit for bit (tests lower the limit
//! with [`GpuContext::lower_binding_limit_for_tests`](crate::GpuContext)). Any other dispatch
//! handed a tensor over the limit returns [`Error::OverLimit`].

use crate::error::{Error, Result};
use crate::gpu::{Recorder, Tensor};

/// The storage-binding limit in bytes.
pub(crate) fn binding_limit(rec: &Recorder<'_>) -> u64 {
    rec.ctx().limits().max_storage_buffer_binding_size
}

/// True when `bytes` fit one storage binding.
pub(crate) fn fits(rec: &Recorder<'_>, bytes: u64) -> bool {
    bytes <= binding_limit(rec)
}

/// The error for a piece that cannot be made small enough.
fn too_large(rec: &Recorder<'_>, op: &'static str, what: String, bytes: u64) -> Error {
    Error::OverLimit {
        name: format!("{op}: {what}, the smallest piece it splits into"),
        bytes,
        limit_name: "max_storage_buffer_binding_size",
        limit: binding_limit(rec),
    }
}

/// How many units of `unit_bytes` fit one binding, at most `total`; an error when not one does.
fn per_piece(
    rec: &Recorder<'_>,
    op: &'static str,
    what: impl Fn() -> String,
    unit_bytes: u64,
    total: usize,
) -> Result<usize> {
    let n = binding_limit(rec) / unit_bytes.max(1);
    if n == 0 {
        return Err(too_large(rec, op, what(), unit_bytes));
    }
    Ok(usize::try_from(n).unwrap_or(usize::MAX).min(total))
}

/// Elements `[at, at + len)` of `x` as a new tensor of `shape`.
fn take(rec: &mut Recorder<'_>, x: &Tensor, at: usize, shape: &[usize]) -> Result<Tensor> {
    let piece = Tensor::empty(rec.ctx(), "piece.in", shape, x.dtype())?;
    rec.copy_elements((x, at), (&piece, 0), piece.numel())?;
    Ok(piece)
}

/// Rows `[r0, r1)` of every channel of image `b` of NCHW `x` → `[1, C, r1 − r0, W]`.
fn take_rows(rec: &mut Recorder<'_>, x: &Tensor, b: usize, r0: usize, r1: usize) -> Result<Tensor> {
    let [_, c, h, w] = nchw(x)?;
    let rows = r1 - r0;
    let piece = Tensor::empty(rec.ctx(), "piece.in", &[1, c, rows, w], x.dtype())?;
    for ch in 0..c {
        rec.copy_elements(
            (x, ((b * c + ch) * h + r0) * w),
            (&piece, ch * rows * w),
            rows * w,
        )?;
    }
    Ok(piece)
}

/// Writes `piece` `[1, C, rows, W]` into rows `r0 ..` of every channel of image `b` of `out`.
fn put_rows(
    rec: &mut Recorder<'_>,
    piece: &Tensor,
    out: &Tensor,
    b: usize,
    r0: usize,
) -> Result<()> {
    let [_, c, h, w] = nchw(out)?;
    let rows = piece.shape()[2];
    for ch in 0..c {
        rec.copy_elements(
            (piece, ch * rows * w),
            (out, ((b * c + ch) * h + r0) * w),
            rows * w,
        )?;
    }
    Ok(())
}

fn nchw(x: &Tensor) -> Result<[usize; 4]> {
    match *x.shape() {
        [b, c, h, w] => Ok([b, c, h, w]),
        _ => Err(Error::shape(
            "split",
            format!("{:?} {:?} is not NCHW", x.name(), x.shape()),
        )),
    }
}

/// One band of a convolution's output: output rows `[o0, o1)` read input rows `[i0, i1)` with
/// `pad` rows of zero padding above and below.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Band {
    pub o0: usize,
    pub o1: usize,
    pub i0: usize,
    pub i1: usize,
    pub pad: [usize; 2],
}

/// Splits `oh` output rows into bands of at most `rows` for a kernel of `kh` rows, `stride` and
/// padding `[top, bottom]` over `h` input rows.
pub(crate) fn bands(
    oh: usize,
    rows: usize,
    h: usize,
    kh: usize,
    stride: usize,
    [top, _]: [usize; 2],
) -> Vec<Band> {
    (0..oh)
        .step_by(rows.max(1))
        .map(|o0| {
            let o1 = (o0 + rows).min(oh);
            // Padded coordinates: input row i sits at i + top.
            let start = o0 * stride;
            let end = (o1 - 1) * stride + kh;
            let i0 = start.saturating_sub(top).min(h);
            let i1 = end.saturating_sub(top).min(h);
            Band {
                o0,
                o1,
                i0,
                i1,
                pad: [top.saturating_sub(start), (end - top).saturating_sub(i1)],
            }
        })
        .collect()
}

/// A convolution too large for one binding, as bands of output rows (see the module docs).
/// `run` convolves one band: input `[1, Cin, rows, W]` with `[top, bottom]` row padding →
/// `[1, Cout, band rows, OW]`.
pub(crate) fn conv_bands(
    rec: &mut Recorder<'_>,
    op: &'static str,
    x: &Tensor,
    out: &Tensor,
    (kh, stride, pad): (usize, usize, [usize; 2]),
    run: impl Fn(&mut Recorder<'_>, &Tensor, [usize; 2]) -> Result<Tensor>,
) -> Result<()> {
    let [batch, cin, h, w] = nchw(x)?;
    let [_, cout, oh, ow] = nchw(out)?;
    let out_row = (cout * ow * 4) as u64;
    let in_row = (cin * w * 4) as u64;
    let by_out = per_piece(
        rec,
        op,
        || format!("one output row of {out:?}"),
        out_row,
        oh,
    )?;
    // A band of r output rows reads at most (r − 1)·stride + kh input rows.
    let in_rows = per_piece(
        rec,
        op,
        || format!("one input row of {x:?}"),
        in_row,
        usize::MAX,
    )?;
    if in_rows < kh {
        return Err(too_large(
            rec,
            op,
            format!("{kh} input rows of {x:?}"),
            in_row * kh as u64,
        ));
    }
    let rows = by_out.min((in_rows - kh) / stride.max(1) + 1);
    for b in 0..batch {
        for band in bands(oh, rows, h, kh, stride, pad) {
            let piece = take_rows(rec, x, b, band.i0, band.i1)?;
            let result = run(rec, &piece, band.pad)?;
            debug_assert_eq!(result.shape(), [1, cout, band.o1 - band.o0, ow]);
            put_rows(rec, &result, out, b, band.o0)?;
        }
    }
    Ok(())
}

/// An NCHW op that treats runs of `unit` channels independently (group norm: a group; nearest
/// upsampling: one channel), too large for one binding, as pieces of whole units per image.
/// `run` maps `[1, n·unit, H, W]` and the first channel's index to `[1, n·unit, OH, OW]`.
pub(crate) fn channel_pieces(
    rec: &mut Recorder<'_>,
    op: &'static str,
    x: &Tensor,
    out: &Tensor,
    unit: usize,
    run: impl Fn(&mut Recorder<'_>, &Tensor, usize) -> Result<Tensor>,
) -> Result<()> {
    let [batch, c, h, w] = nchw(x)?;
    let [_, _, oh, ow] = nchw(out)?;
    let unit_bytes = (unit * h.max(oh) * w.max(ow) * 4) as u64;
    let units = c / unit.max(1);
    let n = per_piece(
        rec,
        op,
        || format!("{unit} channels of {x:?}"),
        unit_bytes,
        units,
    )?;
    for b in 0..batch {
        for u0 in (0..units).step_by(n) {
            let channels = (units - u0).min(n) * unit;
            let c0 = u0 * unit;
            let piece = take(rec, x, (b * c + c0) * h * w, &[1, channels, h, w])?;
            let result = run(rec, &piece, c0)?;
            rec.copy_elements((&result, 0), (out, (b * c + c0) * oh * ow), result.numel())?;
        }
    }
    Ok(())
}

/// An elementwise op over same-shaped `a` and `b` too large for one binding, as flat ranges.
pub(crate) fn flat_pieces(
    rec: &mut Recorder<'_>,
    op: &'static str,
    [a, b]: [&Tensor; 2],
    out: &Tensor,
    run: impl Fn(&mut Recorder<'_>, &Tensor, &Tensor) -> Result<Tensor>,
) -> Result<()> {
    let n = a.numel();
    let size = a.dtype().size() as u64;
    // Keep piece boundaries 4-byte aligned for any element size.
    let per = per_piece(rec, op, || "one element".into(), size, n)? / 4 * 4;
    if per == 0 {
        return Err(too_large(rec, op, "four elements".into(), 4 * size));
    }
    for at in (0..n).step_by(per) {
        let len = (n - at).min(per);
        let pa = take(rec, a, at, &[len])?;
        let pb = take(rec, b, at, &[len])?;
        let result = run(rec, &pa, &pb)?;
        rec.copy_elements((&result, 0), (out, at), len)?;
    }
    Ok(())
}

/// Elements `[at, at + len)` of a 1-D tensor (a per-channel weight) as a tensor of its own.
pub(crate) fn take_vector(
    rec: &mut Recorder<'_>,
    v: Option<&Tensor>,
    at: usize,
    len: usize,
) -> Result<Option<Tensor>> {
    v.map(|v| take(rec, v, at, &[len])).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every output row is covered once, and each band's rows and padding give its row count.
    #[test]
    fn bands_cover_the_output_with_their_halos() {
        for (h, kh, stride, pad) in [
            (17, 3, 1, [1, 1]),
            (16, 3, 2, [0, 1]),
            (9, 1, 1, [0, 0]),
            (12, 5, 2, [2, 2]),
            (7, 3, 1, [0, 0]),
        ] {
            let oh = (h + pad[0] + pad[1] - kh) / stride + 1;
            for rows in 1..=oh + 1 {
                let bs = bands(oh, rows, h, kh, stride, pad);
                assert_eq!(bs.first().map(|b| b.o0), Some(0));
                assert_eq!(bs.last().map(|b| b.o1), Some(oh));
                for pair in bs.windows(2) {
                    assert_eq!(pair[0].o1, pair[1].o0);
                }
                for b in &bs {
                    let padded = b.i1 - b.i0 + b.pad[0] + b.pad[1];
                    assert_eq!((padded - kh) / stride + 1, b.o1 - b.o0, "{b:?}");
                    assert!(b.pad[0] <= pad[0] && b.pad[1] <= pad[1], "{b:?}");
                }
            }
        }
    }
}
