//! Elementwise and row-wise ops (`shaders/elementwise.wgsl`): activations, broadcast binary ops,
//! GEGLU, softmax, adaptive modulation.

use super::matmul::Activation;
use super::{WG, chunked, groups_for, to_u32};
use crate::error::{Error, Result};
use crate::gpu::{Binding, DType, Recorder, Tensor};
use crate::shaders::{KernelSpec, Module, kernel_params};

kernel_params! {
    #[derive(Default)]
    pub(crate) struct Params {
        n: u32,
        rows: u32,
        cols: u32,
        _pad0: u32,
        alpha: f32,
        beta: f32,
        _pad1: u32,
        _pad2: u32,
        shape: [u32; 4],
        a_strides: [u32; 4],
        b_strides: [u32; 4],
        offsets: [u32; 4],
    }
}

/// Activation (or scalar op) applied by [`unary`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryOp {
    /// alpha·x
    Scale(f32),
    /// 0.5·x·(1 + erf(x/√2)) (PyTorch `gelu`, approximate="none")
    GeluErf,
    /// tanh approximation (PyTorch approximate="tanh", jax.nn.gelu default)
    GeluTanh,
    /// x·σ(1.702x) (CLIP)
    QuickGelu,
    /// x·σ(x)
    Silu,
    /// x + alpha
    AddScalar(f32),
}

impl UnaryOp {
    const ALL: [UnaryOp; 6] = [
        UnaryOp::Scale(1.0),
        UnaryOp::GeluErf,
        UnaryOp::GeluTanh,
        UnaryOp::QuickGelu,
        UnaryOp::Silu,
        UnaryOp::AddScalar(0.0),
    ];

    fn code_and_alpha(self) -> (u32, f32) {
        match self {
            UnaryOp::Scale(a) => (0, a),
            // The activations' codes are activation.wgsl's, kept by `Activation`.
            UnaryOp::GeluErf => (Activation::GeluErf.code(), 0.0),
            UnaryOp::GeluTanh => (Activation::GeluTanh.code(), 0.0),
            UnaryOp::QuickGelu => (Activation::QuickGelu.code(), 0.0),
            UnaryOp::Silu => (Activation::Silu.code(), 0.0),
            UnaryOp::AddScalar(a) => (5, a),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum BinaryOp {
    /// alpha·a + beta·b
    Axpby,
    Mul,
    Div,
}

impl BinaryOp {
    fn code(self) -> u32 {
        match self {
            BinaryOp::Axpby => 0,
            BinaryOp::Mul => 1,
            BinaryOp::Div => 2,
        }
    }
}

fn unary_spec(op: UnaryOp) -> KernelSpec {
    KernelSpec::new(Module::Elementwise, "unary").with("UNARY", f64::from(op.code_and_alpha().0))
}

fn binary_spec(op: BinaryOp) -> KernelSpec {
    KernelSpec::new(Module::Elementwise, "binary").with("BINARY", f64::from(op.code()))
}

fn spec(entry: &'static str) -> KernelSpec {
    KernelSpec::new(Module::Elementwise, entry)
}

pub(crate) fn specs() -> Vec<KernelSpec> {
    let mut v: Vec<_> = UnaryOp::ALL.into_iter().map(unary_spec).collect();
    v.extend([BinaryOp::Axpby, BinaryOp::Mul, BinaryOp::Div].map(binary_spec));
    v.extend(["geglu", "softmax", "modulate"].map(spec));
    v
}

fn check_f32(op: &'static str, ts: &[&Tensor]) -> Result<()> {
    ts.iter().try_for_each(|t| t.expect_dtype(op, DType::F32))
}

/// `op(x)` elementwise.
pub fn unary(rec: &mut Recorder<'_>, x: &Tensor, op: UnaryOp) -> Result<Tensor> {
    const OP: &str = "unary";
    check_f32(OP, &[x])?;
    let (_, alpha) = op.code_and_alpha();
    let out = Tensor::empty(rec.ctx(), "unary.out", x.shape(), DType::F32)?;
    let params = Params {
        n: to_u32(OP, "elements", x.numel())?,
        alpha,
        ..Default::default()
    };
    let groups = groups_for(rec, x.numel(), WG)?;
    rec.dispatch(
        &unary_spec(op),
        bytemuck::bytes_of(&params),
        &[(1, Binding::Tensor(x)), (3, Binding::Tensor(&out))],
        groups,
    )?;
    Ok(out)
}

pub fn gelu(rec: &mut Recorder<'_>, x: &Tensor) -> Result<Tensor> {
    unary(rec, x, UnaryOp::GeluErf)
}

pub fn silu(rec: &mut Recorder<'_>, x: &Tensor) -> Result<Tensor> {
    unary(rec, x, UnaryOp::Silu)
}

pub fn scale(rec: &mut Recorder<'_>, x: &Tensor, alpha: f32) -> Result<Tensor> {
    unary(rec, x, UnaryOp::Scale(alpha))
}

/// A broadcast of two operands: output shape, and output shape / operand strides padded to 4 dims.
struct Broadcast {
    shape: Vec<usize>,
    shape4: [u32; 4],
    a_strides: [u32; 4],
    b_strides: [u32; 4],
}

/// NumPy broadcast of two shapes (rank ≤ 4), with stride 0 along broadcast dims.
fn broadcast(op: &'static str, a: &[usize], b: &[usize]) -> Result<Broadcast> {
    let rank = a.len().max(b.len());
    if rank > 4 {
        return Err(Error::shape(op, format!("{a:?} and {b:?}: rank above 4")));
    }
    let pad = |s: &[usize]| -> [usize; 4] {
        let mut p = [1; 4];
        p[4 - s.len()..].copy_from_slice(s);
        p
    };
    let (pa, pb) = (pad(a), pad(b));
    let mut out = [1usize; 4];
    for d in 0..4 {
        out[d] = match (pa[d], pb[d]) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => {
                return Err(Error::shape(
                    op,
                    format!("shapes {a:?} and {b:?} do not broadcast"),
                ));
            }
        };
    }
    let strides = |p: &[usize; 4]| -> Result<[u32; 4]> {
        let mut st = [0u32; 4];
        let mut acc = 1usize;
        for d in (0..4).rev() {
            st[d] = if p[d] == 1 {
                0
            } else {
                to_u32(op, "stride", acc)?
            };
            acc *= p[d];
        }
        Ok(st)
    };
    Ok(Broadcast {
        shape: out[4 - rank..].to_vec(),
        shape4: out.map(|v| v as u32),
        a_strides: strides(&pa)?,
        b_strides: strides(&pb)?,
    })
}

fn binary(
    rec: &mut Recorder<'_>,
    a: &Tensor,
    b: &Tensor,
    op: BinaryOp,
    alpha: f32,
    beta: f32,
) -> Result<Tensor> {
    const OP: &str = "binary";
    check_f32(OP, &[a, b])?;
    let bc = broadcast(OP, a.shape(), b.shape())?;
    if a.shape() == b.shape() && !chunked::fits(rec, a.byte_len()) {
        let out = Tensor::empty(rec.ctx(), "binary.out", a.shape(), DType::F32)?;
        chunked::flat_pieces(rec, OP, [a, b], &out, |rec, a, b| {
            binary(rec, a, b, op, alpha, beta)
        })?;
        return Ok(out);
    }
    binary_dispatch(rec, a, b, (op, alpha, beta), &bc, [0, 0])
}

/// Records `op` over `bc`'s output shape, reading `a` and `b` from element offsets `offsets`.
fn binary_dispatch(
    rec: &mut Recorder<'_>,
    a: &Tensor,
    b: &Tensor,
    (op, alpha, beta): (BinaryOp, f32, f32),
    bc: &Broadcast,
    [a_offset, b_offset]: [u32; 2],
) -> Result<Tensor> {
    const OP: &str = "binary";
    let n: usize = bc.shape.iter().product();
    let out = Tensor::empty(rec.ctx(), "binary.out", &bc.shape, DType::F32)?;
    let params = Params {
        n: to_u32(OP, "elements", n)?,
        alpha,
        beta,
        shape: bc.shape4,
        a_strides: bc.a_strides,
        b_strides: bc.b_strides,
        offsets: [a_offset, b_offset, 0, 0],
        ..Default::default()
    };
    let groups = groups_for(rec, n, WG)?;
    rec.dispatch(
        &binary_spec(op),
        bytemuck::bytes_of(&params),
        &[
            (1, Binding::Tensor(a)),
            (2, Binding::Tensor(b)),
            (3, Binding::Tensor(&out)),
        ],
        groups,
    )?;
    Ok(out)
}

/// a + b with broadcasting.
pub fn add(rec: &mut Recorder<'_>, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(rec, a, b, BinaryOp::Axpby, 1.0, 1.0)
}

/// a − b with broadcasting.
pub fn sub(rec: &mut Recorder<'_>, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(rec, a, b, BinaryOp::Axpby, 1.0, -1.0)
}

/// alpha·a + beta·b with broadcasting (classifier-free guidance u + s(c − u) is
/// `axpby(1 − s, u, s, c)`).
pub fn axpby(
    rec: &mut Recorder<'_>,
    alpha: f32,
    a: &Tensor,
    beta: f32,
    b: &Tensor,
) -> Result<Tensor> {
    binary(rec, a, b, BinaryOp::Axpby, alpha, beta)
}

/// Classifier-free guidance on a batch stacked as `[uncond; cond]`: x `[2B, ..]` →
/// `uncond + s·(cond − uncond)` = `(1 − s)·uncond + s·cond` `[B, ..]`, one dispatch.
pub fn guidance(rec: &mut Recorder<'_>, x: &Tensor, s: f32) -> Result<Tensor> {
    const OP: &str = "guidance";
    check_f32(OP, &[x])?;
    let rows = x.shape().first().copied().unwrap_or(0);
    if rows == 0 || rows % 2 != 0 {
        return Err(Error::shape(
            OP,
            format!("{:?} is not a stacked [uncond; cond] batch", x.shape()),
        ));
    }
    let half = x.numel() / 2;
    let mut shape = x.shape().to_vec();
    shape[0] = rows / 2;
    // The two halves of one flat buffer: elements 0.. and half.. with unit stride.
    let n = to_u32(OP, "elements", half)?;
    let flat = Broadcast {
        shape,
        shape4: [1, 1, 1, n],
        a_strides: [0, 0, 0, 1],
        b_strides: [0, 0, 0, 1],
    };
    binary_dispatch(rec, x, x, (BinaryOp::Axpby, 1.0 - s, s), &flat, [0, n])
}

/// a · b with broadcasting.
pub fn mul(rec: &mut Recorder<'_>, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(rec, a, b, BinaryOp::Mul, 0.0, 0.0)
}

/// a / b with broadcasting.
pub fn div(rec: &mut Recorder<'_>, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(rec, a, b, BinaryOp::Div, 0.0, 0.0)
}

fn last_dim(op: &'static str, x: &Tensor) -> Result<(usize, usize)> {
    let cols = *x
        .shape()
        .last()
        .ok_or_else(|| Error::shape(op, "scalar input"))?;
    Ok((x.numel() / cols.max(1), cols))
}

/// GEGLU: x `[.., 2H]` → `x[.., :H] · GELU(x[.., H:])` `[.., H]` (diffusers' GEGLU split order).
pub fn geglu(rec: &mut Recorder<'_>, x: &Tensor) -> Result<Tensor> {
    const OP: &str = "geglu";
    check_f32(OP, &[x])?;
    let (rows, cols2) = last_dim(OP, x)?;
    if cols2 % 2 != 0 {
        return Err(Error::shape(
            OP,
            format!("last dim of {:?} is odd", x.shape()),
        ));
    }
    let cols = cols2 / 2;
    let mut shape = x.shape().to_vec();
    if let Some(l) = shape.last_mut() {
        *l = cols;
    }
    let out = Tensor::empty(rec.ctx(), "geglu.out", &shape, DType::F32)?;
    let params = Params {
        rows: to_u32(OP, "rows", rows)?,
        cols: to_u32(OP, "cols", cols)?,
        ..Default::default()
    };
    let groups = groups_for(rec, rows * cols, WG)?;
    rec.dispatch(
        &spec("geglu"),
        bytemuck::bytes_of(&params),
        &[(1, Binding::Tensor(x)), (3, Binding::Tensor(&out))],
        groups,
    )?;
    Ok(out)
}

/// softmax(scale · x) over the last dimension.
pub fn softmax(rec: &mut Recorder<'_>, x: &Tensor, scale: f32) -> Result<Tensor> {
    const OP: &str = "softmax";
    check_f32(OP, &[x])?;
    let (rows, cols) = last_dim(OP, x)?;
    let out = Tensor::empty(rec.ctx(), "softmax.out", x.shape(), DType::F32)?;
    let params = Params {
        rows: to_u32(OP, "rows", rows)?,
        cols: to_u32(OP, "cols", cols)?,
        alpha: scale,
        ..Default::default()
    };
    let groups = groups_for(rec, rows, 1)?;
    rec.dispatch(
        &spec("softmax"),
        bytemuck::bytes_of(&params),
        &[(1, Binding::Tensor(x)), (3, Binding::Tensor(&out))],
        groups,
    )?;
    Ok(out)
}

/// Adaptive modulation `x·(1 + scale) + shift` with x `[B, L, C]` and `emb` `[B, 2C]` holding
/// `[scale | shift]` per batch item (the split order of diffusers' AdaLayerNormContinuous).
pub fn modulate(rec: &mut Recorder<'_>, x: &Tensor, emb: &Tensor) -> Result<Tensor> {
    const OP: &str = "modulate";
    check_f32(OP, &[x, emb])?;
    let [b, l, c] = *x.shape() else {
        return Err(Error::shape(
            OP,
            format!("x {:?} is not [B, L, C]", x.shape()),
        ));
    };
    super::expect_shape(OP, emb, &[b, 2 * c])?;
    let out = Tensor::empty(rec.ctx(), "modulate.out", x.shape(), DType::F32)?;
    let params = Params {
        rows: to_u32(OP, "rows", b * l)?,
        cols: to_u32(OP, "cols", c)?,
        offsets: [
            0,
            to_u32(OP, "C", c)?,
            to_u32(OP, "2C", 2 * c)?,
            to_u32(OP, "L", l.max(1))?,
        ],
        ..Default::default()
    };
    let groups = groups_for(rec, b * l * c, WG)?;
    rec.dispatch(
        &spec("modulate"),
        bytemuck::bytes_of(&params),
        &[
            (1, Binding::Tensor(x)),
            (2, Binding::Tensor(emb)),
            (3, Binding::Tensor(&out)),
        ],
        groups,
    )?;
    Ok(out)
}
