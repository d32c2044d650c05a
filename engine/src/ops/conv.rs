//! 2-D convolutions on NCHW f32 tensors (`shaders/conv2d.wgsl`): k×k conv with stride, padding
//! (asymmetric allowed) and groups (depthwise included), transposed conv, nearest upsample,
//! zero padding.

use super::{WG, chunked, expect_shape, groups_for, to_u32};
use crate::error::{Error, Result};
use crate::gpu::{Binding, DType, KernelFamily, Recorder, Tensor};
use crate::shaders::{CoopShape, KernelSpec, Module, kernel_params};

kernel_params! {
    #[derive(Default)]
    pub(crate) struct Params {
        batch: u32,
        cin: u32,
        h: u32,
        w: u32,
        cout: u32,
        oh: u32,
        ow: u32,
        groups: u32,
        kh: u32,
        kw: u32,
        stride_h: u32,
        stride_w: u32,
        pad_top: u32,
        pad_left: u32,
        has_bias: u32,
    /// depthwise_nhwc's padding: 0 zeros, 1 replicate (edge), 2 reflect.
        pad_mode: u32,
    }
}

impl Params {
    /// The sizes every kernel of the module reads: an input `[b, cin, h, w]` and an output of
    /// `cout` channels of `oh` × `ow`; the other fields are zero (no groups, taps, stride or
    /// padding) for the caller to fill in.
    fn sizes(
        op: &'static str,
        [b, cin, h, w]: [usize; 4],
        cout: usize,
        [oh, ow]: [usize; 2],
    ) -> Result<Self> {
        let u = |what: &str, v: usize| to_u32(op, what, v);
        Ok(Self {
            batch: u("batch", b)?,
            cin: u("cin", cin)?,
            h: u("h", h)?,
            w: u("w", w)?,
            cout: u("cout", cout)?,
            oh: u("oh", oh)?,
            ow: u("ow", ow)?,
            ..Default::default()
        })
    }
}

fn spec(entry: &'static str) -> KernelSpec {
    KernelSpec::new(Module::Conv2d, entry)
}

pub(crate) fn specs() -> Vec<KernelSpec> {
    [
        "conv2d",
        "conv2d_rows",
        "conv_transpose2d",
        "conv_transpose2d_rows",
        "depthwise_nhwc",
        "upsample_nearest",
        "pad2d",
    ]
    .into_iter()
    .map(spec)
    .chain([(1, 1), (3, 3), (4, 4)].into_iter().flat_map(|k| {
        // The tap-by-tap order only where some input channel count takes it.
        let tap_major: &[bool] = if ConvStrategy::CoopTaps.supports(1, COOP_SLICE, k) {
            &[false, true]
        } else {
            &[false]
        };
        [gemm_spec(k)].into_iter().chain(
            CoopShape::ALL
                .into_iter()
                .flat_map(move |shape| tap_major.iter().map(move |&tm| coop_spec(shape, k, tm))),
        )
    }))
    .collect()
}

/// The implicit GEMM for a `(kh, kw)` kernel: the size is an override constant (`KH`, `KW`).
fn gemm_spec((kh, kw): (usize, usize)) -> KernelSpec {
    spec("conv2d_gemm")
        .with("KH", kh as f64)
        .with("KW", kw as f64)
}

/// The implicit GEMM on cooperative matrices (`conv2d_coop.wgsl`, a module of its own) for a
/// `(kh, kw)` kernel; `tap_major`: K in (ky, kx, ci) order ([`ConvStrategy::CoopTaps`]).
fn coop_spec(shape: CoopShape, (kh, kw): (usize, usize), tap_major: bool) -> KernelSpec {
    KernelSpec::new(Module::Conv2dCoop(shape), "conv2d_coop")
        .with("KH", kh as f64)
        .with("KW", kw as f64)
        .with("TAP_MAJOR", f64::from(u8::from(tap_major)))
}

/// K values (taps × input channels) per slice of `conv2d_coop.wgsl` (`CC_BK`).
pub const COOP_SLICE: usize = 32;

/// Stride, zero padding `[top, bottom, left, right]` and groups of a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dSpec {
    pub stride: [usize; 2],
    pub padding: [usize; 4],
    pub groups: usize,
}

impl Conv2dSpec {
    /// Stride 1, symmetric padding `pad`, one group.
    pub fn same(pad: usize) -> Self {
        Self {
            stride: [1, 1],
            padding: [pad; 4],
            groups: 1,
        }
    }
}

fn nchw(op: &'static str, x: &Tensor) -> Result<[usize; 4]> {
    x.expect_dtype(op, DType::F32)?;
    match *x.shape() {
        [b, c, h, w] => Ok([b, c, h, w]),
        _ => Err(Error::shape(
            op,
            format!("{:?} {:?} is not NCHW", x.name(), x.shape()),
        )),
    }
}

fn check_bias(op: &'static str, bias: Option<&Tensor>, cout: usize) -> Result<()> {
    if let Some(b) = bias {
        b.expect_dtype(op, DType::F32)?;
        expect_shape(op, b, &[cout])?;
    }
    Ok(())
}

fn run(
    rec: &mut Recorder<'_>,
    entry: &'static str,
    params: &Params,
    x: &Tensor,
    weight_bias: Option<(&Tensor, Option<&Tensor>)>,
    out: &Tensor,
) -> Result<()> {
    let groups = groups_for(rec, out.numel(), WG)?;
    run_in(rec, &spec(entry), params, x, weight_bias, out, groups)
}

/// [`run`] with the kernel and the workgroup grid given (the register-blocked kernels, the
/// implicit GEMMs).
fn run_in(
    rec: &mut Recorder<'_>,
    kernel: &KernelSpec,
    params: &Params,
    x: &Tensor,
    weight_bias: Option<(&Tensor, Option<&Tensor>)>,
    out: &Tensor,
    groups: [u32; 3],
) -> Result<()> {
    let mut bindings = vec![(1, Binding::Tensor(x)), (4, Binding::Tensor(out))];
    if let Some((w, b)) = weight_bias {
        bindings.push((2, Binding::Tensor(w)));
        bindings.push((3, b.map_or(Binding::Unused, Binding::Tensor)));
    }
    rec.dispatch(kernel, bytemuck::bytes_of(params), &bindings, groups)
}

/// The shader parameters of a convolution of `[b, cin, h, w]` by `[cout, kh, kw]` kernels under
/// `s`, checking that the kernel fits the padded input; the output size is `oh` × `ow`.
fn conv_params(
    op: &'static str,
    [b, cin, h, w]: [usize; 4],
    [cout, kh, kw]: [usize; 3],
    s: &Conv2dSpec,
    has_bias: bool,
) -> Result<Params> {
    let [st_h, st_w] = s.stride;
    let [pt, pb, pl, pr] = s.padding;
    if st_h == 0 || st_w == 0 || h + pt + pb < kh || w + pl + pr < kw {
        return Err(Error::shape(
            op,
            format!(
                "kernel {kh}×{kw} stride {:?} padding {:?} does not fit {h}×{w}",
                s.stride, s.padding
            ),
        ));
    }
    let oh = (h + pt + pb - kh) / st_h + 1;
    let ow = (w + pl + pr - kw) / st_w + 1;
    let u = |what: &str, v: usize| to_u32(op, what, v);
    Ok(Params {
        groups: u("groups", s.groups)?,
        kh: u("kh", kh)?,
        kw: u("kw", kw)?,
        stride_h: u("stride", st_h)?,
        stride_w: u("stride", st_w)?,
        pad_top: u("pad", pt)?,
        pad_left: u("pad", pl)?,
        has_bias: u32::from(has_bias),
        ..Params::sizes(op, [b, cin, h, w], cout, [oh, ow])?
    })
}

/// The convolution kernels as named strategies; [`ConvStrategy::choose`] is the one place
/// that picks one, and the kernel tests run each against the CPU reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvStrategy {
    /// `conv2d`: one invocation per output element; every convolution (grouped included).
    Direct,
    /// `conv2d_rows`: register blocks of 8 channels × 8 pixels without workgroup memory, for
    /// adapters that run on the CPU; one group.
    Rows,
    /// `conv2d_gemm`: an implicit GEMM on 64 channel × 64 pixel tiles with 8×8 per invocation
    /// (the 3×3 convolutions of the VQ decoders), for GPUs; one group.
    Gemm,
    /// `conv2d_coop`: the implicit GEMM on f16 cooperative matrices (tensor cores) with f32
    /// accumulation, weights and patch rounded to f16, K in PyTorch's (ci, ky, kx) order;
    /// where [`GpuContext::cooperative_matrix`](crate::GpuContext::cooperative_matrix) gives a
    /// shape; one group.
    Coop,
    /// `conv2d_coop` with K walked tap by tap, (ky, kx, ci) (`TAP_MAJOR`): each slice of
    /// [`COOP_SLICE`] is channels of one tap, so its input pixel is checked once and its
    /// channels are read at a constant stride, where `Coop` splits every element's index into
    /// channel and tap. Same products summed in another order; one group, input channels a
    /// multiple of [`COOP_SLICE`], more than one tap (the 3×3 convolutions of the VQ decoders).
    CoopTaps,
}

impl ConvStrategy {
    pub const ALL: [ConvStrategy; 5] = [
        ConvStrategy::Direct,
        ConvStrategy::Rows,
        ConvStrategy::Gemm,
        ConvStrategy::Coop,
        ConvStrategy::CoopTaps,
    ];

    /// Whether the adapter runs this kernel at all (cooperative matrices need the feature).
    pub fn available(self, ctx: &crate::GpuContext) -> bool {
        !self.tensor_cores() || ctx.cooperative_matrix().is_some()
    }

    /// Whether this is a cooperative-matrix kernel.
    pub fn tensor_cores(self) -> bool {
        matches!(self, ConvStrategy::Coop | ConvStrategy::CoopTaps)
    }

    /// Whether the kernel computes a convolution with `groups` groups of `cin` input channels
    /// in all and a `(kh, kw)` kernel.
    pub fn supports(self, groups: usize, cin: usize, (kh, kw): (usize, usize)) -> bool {
        match self {
            ConvStrategy::Direct => true,
            ConvStrategy::CoopTaps => groups == 1 && cin.is_multiple_of(COOP_SLICE) && kh * kw > 1,
            _ => groups == 1,
        }
    }

    /// For one group: the implicit GEMM on cooperative matrices on GPUs that have them
    /// (`coop`; tap by tap where it computes the convolution), else the register blocks — on
    /// an H200 they ran the VQ decoder's 3×3 convolutions 1.6–2× faster than the plain
    /// implicit GEMM (docs/benchmarks.md), as they do on CPU adapters. Grouped convolutions:
    /// the direct kernel.
    pub fn choose(
        family: KernelFamily,
        coop: bool,
        groups: usize,
        cin: usize,
        kernel: (usize, usize),
    ) -> Self {
        if groups != 1 {
            return ConvStrategy::Direct;
        }
        if family == KernelFamily::Tiled && coop {
            if ConvStrategy::CoopTaps.supports(groups, cin, kernel) {
                ConvStrategy::CoopTaps
            } else {
                ConvStrategy::Coop
            }
        } else {
            ConvStrategy::Rows
        }
    }

    /// The strategy `TESSERA_CONV` names (`direct`, `rows`, `gemm`, `coop`, `cooptaps`), read
    /// once: a benchmarking override that convolutions use wherever that kernel computes them
    /// and the adapter runs it (the others keep [`choose`](Self::choose)'s pick).
    pub fn forced() -> Option<ConvStrategy> {
        static FORCED: std::sync::OnceLock<Option<ConvStrategy>> = std::sync::OnceLock::new();
        *FORCED.get_or_init(|| super::strategy_from_env("TESSERA_CONV", &ConvStrategy::ALL))
    }
}

impl ConvStrategy {
    /// The kernel [`conv2d`] runs a convolution of `[b, cin, h, w]` by `weight` under `s` with
    /// on `rec`: `TESSERA_CONV`'s where that kernel computes it here; else, where the
    /// context's [`Tuner`](crate::gpu::Tuner) is on, the fastest measured at this shape among
    /// the tiled strategies at least as precise as [`choose`](Self::choose)'s pick (every one
    /// where it is a tensor-core kernel, which rounds to f16; the f32 ones where it is f32:
    /// tuning never lowers precision), `choose`'s pick unless another beats it by the tuner's
    /// margin; else `choose`'s pick.
    pub fn picked(
        rec: &Recorder<'_>,
        [b, cin, h, w]: [usize; 4],
        weight: &Tensor,
        s: &Conv2dSpec,
    ) -> Self {
        let ctx = rec.ctx();
        let g = s.groups;
        let (cout, kh, kw) = match *weight.shape() {
            [cout, _, kh, kw] => (cout, kh, kw),
            _ => (0, 1, 1),
        };
        if let Some(f) = Self::forced().filter(|f| f.available(ctx) && f.supports(g, cin, (kh, kw)))
        {
            return f;
        }
        let family = rec.kernel_family();
        let chosen = Self::choose(family, ctx.cooperative_matrix().is_some(), g, cin, (kh, kw));
        let tuner = ctx.tuner();
        if !tuner.is_on() {
            return chosen;
        }
        // The direct kernel only where nothing else computes it: it never wins elsewhere and
        // would spend the most time being measured.
        let candidates: Vec<_> = Self::ALL
            .into_iter()
            .filter(|c| {
                c.available(ctx)
                    && c.supports(g, cin, (kh, kw))
                    && (!c.tensor_cores() || chosen.tensor_cores())
                    && (*c != ConvStrategy::Direct || chosen == ConvStrategy::Direct)
            })
            .collect();
        let key = format!(
            "conv2d {family:?} {:?} [{b}, {cin}, {h}, {w}] by [{cout}, {kh}, {kw}] groups {g} \
             stride {:?} padding {:?}",
            weight.dtype(),
            s.stride,
            s.padding
        );
        tuner.pick(&key, chosen, &candidates, |c| {
            let x = Tensor::empty(ctx, "tune.x", &[b, cin, h, w], DType::F32)?;
            let wt = Tensor::empty(ctx, "tune.w", weight.shape(), weight.dtype())?;
            crate::gpu::time_calls(ctx, |r| {
                r.set_kernel_family(family);
                conv2d_with_strategy(r, &x, &wt, None, s, Some(c))
            })
        })
    }
}

/// Convolution; weight `[Cout, Cin/groups, kh, kw]` (PyTorch layout), bias `[Cout]`, by the
/// kernel [`ConvStrategy::choose`] picks for the recorder's kernel family.
pub fn conv2d(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    s: &Conv2dSpec,
) -> Result<Tensor> {
    conv2d_with_strategy(rec, x, weight, bias, s, None)
}

/// [`conv2d`] by the kernel the caller names (`None`: the chosen one), for the tests and the
/// benchmark that compare strategies.
///
/// # Errors
/// A strategy that does not compute this convolution (grouped on `Rows` or `Gemm`; see
/// [`ConvStrategy::supports`]), and
/// everything [`conv2d`] refuses.
pub fn conv2d_with_strategy(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    s: &Conv2dSpec,
    strategy: Option<ConvStrategy>,
) -> Result<Tensor> {
    const OP: &str = "conv2d";
    let [b, cin, h, w] = nchw(OP, x)?;
    let [cout, cin_g, kh, kw] = nchw(OP, weight)?;
    let g = s.groups;
    if g == 0 || cin % g != 0 || cout % g != 0 || cin_g != cin / g {
        return Err(Error::shape(
            OP,
            format!(
                "weight {:?} {:?} does not fit input {:?} with {g} groups",
                weight.name(),
                weight.shape(),
                x.shape()
            ),
        ));
    }
    check_bias(OP, bias, cout)?;
    let params = conv_params(OP, [b, cin, h, w], [cout, kh, kw], s, bias.is_some())?;
    let (oh, ow) = (params.oh as usize, params.ow as usize);
    let out = Tensor::empty(rec.ctx(), "conv2d.out", &[b, cout, oh, ow], DType::F32)?;
    if !chunked::fits(rec, x.byte_len()) || !chunked::fits(rec, out.byte_len()) {
        let [top, bottom, left, right] = s.padding;
        chunked::conv_bands(
            rec,
            OP,
            x,
            &out,
            (kh, s.stride[0], [top, bottom]),
            |rec, piece, [top, bottom]| {
                let band = Conv2dSpec {
                    padding: [top, bottom, left, right],
                    ..*s
                };
                conv2d(rec, piece, weight, bias, &band)
            },
        )?;
        return Ok(out);
    }
    let shape = rec.ctx().cooperative_matrix();
    let strategy = strategy.unwrap_or_else(|| ConvStrategy::picked(rec, [b, cin, h, w], weight, s));
    if !strategy.supports(g, cin, (kh, kw)) {
        return Err(Error::shape(
            OP,
            format!(
                "the {strategy:?} kernel does not compute {g} groups of {cin} input channels \
                 with a {kh}×{kw} kernel"
            ),
        ));
    }
    if !strategy.available(rec.ctx()) {
        return Err(Error::MissingFeature {
            op: OP,
            feature: super::COOP_FEATURE,
        });
    }
    let max = rec.ctx().limits().max_compute_workgroups_per_dimension;
    let blocked = |pixels_per_group: usize, channels_per_group: usize| {
        [
            u32::try_from((oh * ow).div_ceil(pixels_per_group)).unwrap_or(u32::MAX),
            u32::try_from(cout.div_ceil(channels_per_group)).unwrap_or(u32::MAX),
            params.batch,
        ]
    };
    // the tiled kernels, where their grid fits the adapter's dispatch limits; else the direct one
    let tiled = match strategy {
        ConvStrategy::Rows => Some((spec("conv2d_rows"), blocked(64, 32))),
        ConvStrategy::Gemm => Some((gemm_spec((kh, kw)), blocked(64, 64))),
        ConvStrategy::Coop | ConvStrategy::CoopTaps => Some((
            coop_spec(
                shape.unwrap_or(CoopShape::M16),
                (kh, kw),
                strategy == ConvStrategy::CoopTaps,
            ),
            blocked(64, 64),
        )),
        _ => None,
    }
    .filter(|(_, groups)| groups.iter().all(|&n| n <= max));
    match tiled {
        Some((kernel, groups)) => {
            run_in(rec, &kernel, &params, x, Some((weight, bias)), &out, groups)?
        }
        None => run(rec, "conv2d", &params, x, Some((weight, bias)), &out)?,
    }
    Ok(out)
}

/// What a convolution reads outside the image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PadMode {
    /// Zeros (`nn.Conv2d`'s `padding`).
    #[default]
    Zeros,
    /// The nearest edge pixel (`nn.ReplicationPad2d`).
    Replicate,
    /// The mirror image without repeating the edge (`nn.ReflectionPad2d`); padding < side.
    Reflect,
}

/// Depthwise convolution on channels-last data: x `[B, H, W, C]`, weight `[C, 1, kh, kw]`
/// (PyTorch's depthwise `Conv2d(C, C, k, groups=C)` layout), bias `[C]` → `[B, oh, ow, C]`,
/// stride and zero padding as in `s` (whose `groups` must be C). Same result as [`conv2d`] on
/// the NCHW permutation, without the two permutes.
pub fn depthwise_conv2d_nhwc(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    s: &Conv2dSpec,
) -> Result<Tensor> {
    depthwise_conv2d_nhwc_padded(rec, x, weight, bias, s, PadMode::Zeros)
}

/// [`depthwise_conv2d_nhwc`] with `n` inputs per group and a padding mode: x `[B, H, W, C·n]`,
/// weight `[C, n, kh, kw]` (PyTorch's `Conv2d(C·n, C, k, groups=C)`: output channel c reads
/// input channels c·n .. c·n + n), padding amounts from `s`, read as `pad` says.
pub fn depthwise_conv2d_nhwc_padded(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    s: &Conv2dSpec,
    pad: PadMode,
) -> Result<Tensor> {
    const OP: &str = "depthwise_conv2d_nhwc";
    x.expect_dtype(OP, DType::F32)?;
    let [b, h, w, cin] = *x.shape() else {
        return Err(Error::shape(
            OP,
            format!("{:?} {:?} is not [B, H, W, C]", x.name(), x.shape()),
        ));
    };
    let [c, n, kh, kw] = nchw(OP, weight)?;
    if n == 0 || c * n != cin || s.groups != c {
        return Err(Error::shape(
            OP,
            format!(
                "weight {:?} {:?} with {} groups is not depthwise over {cin} channels",
                weight.name(),
                weight.shape(),
                s.groups
            ),
        ));
    }
    let [pt, pb, pl, pr] = s.padding;
    if pad == PadMode::Reflect && (pt.max(pb) >= h || pl.max(pr) >= w) {
        return Err(Error::shape(
            OP,
            format!(
                "reflection padding {:?} needs sides above it, got {h}×{w}",
                s.padding
            ),
        ));
    }
    check_bias(OP, bias, c)?;
    let mut params = conv_params(OP, [b, cin, h, w], [c, kh, kw], s, bias.is_some())?;
    params.pad_mode = match pad {
        PadMode::Zeros => 0,
        PadMode::Replicate => 1,
        PadMode::Reflect => 2,
    };
    let (oh, ow) = (params.oh as usize, params.ow as usize);
    let out = Tensor::empty(rec.ctx(), "depthwise.out", &[b, oh, ow, c], DType::F32)?;
    run(
        rec,
        "depthwise_nhwc",
        &params,
        x,
        Some((weight, bias)),
        &out,
    )?;
    Ok(out)
}

/// Transposed convolution (one group); weight `[Cin, Cout, kh, kw]` (PyTorch
/// `ConvTranspose2d` layout); output size (in − 1)·stride − 2·padding + k.
pub fn conv_transpose2d(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    const OP: &str = "conv_transpose2d";
    let [b, cin, h, w] = nchw(OP, x)?;
    let [wcin, cout, kh, kw] = nchw(OP, weight)?;
    if wcin != cin || stride == 0 {
        return Err(Error::shape(
            OP,
            format!(
                "weight {:?} does not fit input {:?} (stride {stride})",
                weight.shape(),
                x.shape()
            ),
        ));
    }
    check_bias(OP, bias, cout)?;
    let (oh, ow) = ((h - 1) * stride + kh, (w - 1) * stride + kw);
    if h == 0 || w == 0 || oh <= 2 * padding || ow <= 2 * padding {
        return Err(Error::shape(
            OP,
            format!("padding {padding} leaves no output of {:?}", x.shape()),
        ));
    }
    let (oh, ow) = (oh - 2 * padding, ow - 2 * padding);
    let out = Tensor::empty(
        rec.ctx(),
        "conv_transpose2d.out",
        &[b, cout, oh, ow],
        DType::F32,
    )?;
    let u = |what: &str, v: usize| to_u32(OP, what, v);
    let params = Params {
        groups: 1,
        kh: u("kh", kh)?,
        kw: u("kw", kw)?,
        stride_h: u("stride", stride)?,
        stride_w: u("stride", stride)?,
        pad_top: u("pad", padding)?,
        pad_left: u("pad", padding)?,
        has_bias: u32::from(bias.is_some()),
        ..Params::sizes(OP, [b, cin, h, w], cout, [oh, ow])?
    };
    // Patches that do not overlap (stride = kernel, no padding): the CPU adapters' kernel.
    let max = rec.ctx().limits().max_compute_workgroups_per_dimension;
    let groups = [
        u32::try_from((h * w).div_ceil(64)).unwrap_or(u32::MAX),
        u32::try_from(cout.div_ceil(32)).unwrap_or(u32::MAX),
        u32::try_from(b * kh * kw).unwrap_or(u32::MAX),
    ];
    if rec.kernel_family() == KernelFamily::Cpu
        && kh == stride
        && kw == stride
        && padding == 0
        && groups.iter().all(|&n| n <= max)
    {
        run_in(
            rec,
            &spec("conv_transpose2d_rows"),
            &params,
            x,
            Some((weight, bias)),
            &out,
            groups,
        )?;
    } else {
        run(
            rec,
            "conv_transpose2d",
            &params,
            x,
            Some((weight, bias)),
            &out,
        )?;
    }
    Ok(out)
}

/// Nearest-neighbour upsampling by an integer factor.
pub fn upsample_nearest(rec: &mut Recorder<'_>, x: &Tensor, factor: usize) -> Result<Tensor> {
    const OP: &str = "upsample_nearest";
    let [b, c, h, w] = nchw(OP, x)?;
    if factor == 0 {
        return Err(Error::shape(OP, "factor 0"));
    }
    let out = Tensor::empty(
        rec.ctx(),
        "upsample.out",
        &[b, c, h * factor, w * factor],
        DType::F32,
    )?;
    if !chunked::fits(rec, out.byte_len()) {
        chunked::channel_pieces(rec, OP, x, &out, 1, |rec, piece, _| {
            upsample_nearest(rec, piece, factor)
        })?;
        return Ok(out);
    }
    let u = |what: &str, v: usize| to_u32(OP, what, v);
    let params = Params {
        stride_h: u("factor", factor)?,
        stride_w: u("factor", factor)?,
        ..Params::sizes(OP, [b, c, h, w], c, [h * factor, w * factor])?
    };
    run(rec, "upsample_nearest", &params, x, None, &out)?;
    Ok(out)
}

/// Zero padding `[top, bottom, left, right]` (asymmetric allowed).
pub fn pad2d(rec: &mut Recorder<'_>, x: &Tensor, padding: [usize; 4]) -> Result<Tensor> {
    const OP: &str = "pad2d";
    let [b, c, h, w] = nchw(OP, x)?;
    let [pt, pb, pl, pr] = padding;
    let (oh, ow) = (h + pt + pb, w + pl + pr);
    let out = Tensor::empty(rec.ctx(), "pad2d.out", &[b, c, oh, ow], DType::F32)?;
    let u = |what: &str, v: usize| to_u32(OP, what, v);
    let params = Params {
        pad_top: u("pad", pt)?,
        pad_left: u("pad", pl)?,
        ..Params::sizes(OP, [b, c, h, w], c, [oh, ow])?
    };
    run(rec, "pad2d", &params, x, None, &out)?;
    Ok(out)
}
