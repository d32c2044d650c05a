//! Batched matrix multiply (`shaders/matmul.wgsl`): f32 activations, f32 or f16 weights,
//! f32 accumulation, B plain or transposed, and a fused epilogue (bias, activation, residual
//! add) so that a linear layer with its activation or its skip connection is one dispatch.

use super::{COOP_FEATURE, expect_rank, to_u32};
use crate::error::{Error, Result};
use crate::gpu::{Binding, DType, KernelFamily, Recorder, Tensor};
use crate::shaders::{CoopShape, KernelSpec, Module, WeightFormat, kernel_params};

kernel_params! {
    pub(crate) struct Params {
        m: u32,
        n: u32,
        k: u32,
        batch: u32,
        a_batch_stride: u32,
        b_batch_stride: u32,
        c_batch_stride: u32,
    /// 1: + bias[n]; 2: + residual (same layout as C).
        flags: u32,
    }
}

const TILE: u32 = 32;
/// Rows and columns of C per workgroup in `matmul_tile64.wgsl`.
const TILE64: u32 = 64;
/// Rows and columns of C per workgroup in `matmul_rows.wgsl`.
const ROWS_TILE_M: u32 = 64;
const ROWS_TILE_N: u32 = 128;

/// Activation code of an epilogue (`shaders/activation.wgsl`; 0 = none).
fn act_code(act: Option<Activation>) -> f64 {
    f64::from(act.map_or(0, Activation::code))
}

fn spec(format: WeightFormat, trans_b: bool, gated: bool, act: Option<Activation>) -> KernelSpec {
    KernelSpec::new(Module::Matmul(format), "matmul")
        .with("TRANS_B", f64::from(u8::from(trans_b)))
        .with("GATED", f64::from(u8::from(gated)))
        .with("ACT", act_code(act))
}

/// A kernel without gated units (`matmul_tile64.wgsl`, `matmul_coop16.wgsl`): its module, entry
/// point and the B layout and activation overrides.
fn ungated_spec(
    module: Module,
    entry: &'static str,
    trans_b: bool,
    act: Option<Activation>,
) -> KernelSpec {
    KernelSpec::new(module, entry)
        .with("TRANS_B", f64::from(u8::from(trans_b)))
        .with("ACT", act_code(act))
}

fn tile64_spec(format: WeightFormat, trans_b: bool, act: Option<Activation>) -> KernelSpec {
    ungated_spec(Module::MatmulTile64(format), "matmul_tile64", trans_b, act)
}

fn coop16_spec(
    format: WeightFormat,
    shape: CoopShape,
    trans_b: bool,
    act: Option<Activation>,
) -> KernelSpec {
    ungated_spec(
        Module::MatmulCoop16(format, shape),
        "matmul_coop16",
        trans_b,
        act,
    )
}

/// The most invocations the sliced-K matmul's register shares allow (`matmul_coop64.wgsl`
/// spreads a slice's 512 vec4s of A over them).
const SLICED_K_MAX_INVOCATIONS: u32 = 512;

/// The K slicings `matmul_coop64.wgsl` compiles for with `shape`: 1, and 2 where twice its
/// workgroup stays within [`SLICED_K_MAX_INVOCATIONS`].
fn k_splits(shape: CoopShape) -> impl Iterator<Item = u32> {
    [1, 2]
        .into_iter()
        .filter(move |k| k * shape.workgroup() <= SLICED_K_MAX_INVOCATIONS)
}

/// `matmul_coop64.wgsl`; `k_split` 2 is the sliced-K variant (twice the shape's invocations
/// per tile).
fn coop64_spec(
    format: WeightFormat,
    shape: CoopShape,
    trans_b: bool,
    gated: bool,
    act: Option<Activation>,
    k_split: u32,
) -> KernelSpec {
    ungated_spec(
        Module::MatmulCoop64(format, shape),
        "matmul_coop64",
        trans_b,
        act,
    )
    .with("GATED", f64::from(u8::from(gated)))
    .with("KSPLIT", f64::from(k_split))
}

/// `matmul_coop128.wgsl`.
fn coop128_spec(
    format: WeightFormat,
    shape: CoopShape,
    trans_b: bool,
    gated: bool,
    act: Option<Activation>,
) -> KernelSpec {
    ungated_spec(
        Module::MatmulCoop128(format, shape),
        "matmul_coop128",
        trans_b,
        act,
    )
    .with("GATED", f64::from(u8::from(gated)))
}

/// `matmul_coop128.wgsl`'s tile side (8 fragments), invocations (8 subgroups) and workgroup
/// memory in bytes for `shape`: its `a_sh` (BM × SA f16, SA = 40), `b_sh` (2·BN × SB f16, SB =
/// 40) and `c_sh` (16 f32 fragments: a value and a gate one per subgroup).
fn coop128_layout(shape: CoopShape) -> (u32, u32, u32) {
    let tile = 8 * shape.size();
    let storage = tile * 40 * 2 + 2 * tile * 40 * 2 + 16 * shape.size() * shape.size() * 4;
    (tile, 8 * shape.subgroup(), storage)
}

fn gemv_spec(format: WeightFormat, act: Option<Activation>) -> KernelSpec {
    KernelSpec::new(Module::MatmulGemv(format), "matmul_gemv").with("ACT", act_code(act))
}

/// Columns of C per workgroup in `matmul_gemv.wgsl`, and the most rows it takes.
const GEMV_COLS: u32 = 32;
pub const GEMV_MAX_M: usize = 8;

fn rows_spec(format: WeightFormat, gated: bool, act: Option<Activation>) -> KernelSpec {
    KernelSpec::new(Module::MatmulRows(format), "matmul_rows")
        .with("GATED", f64::from(u8::from(gated)))
        .with("ACT", act_code(act))
}

/// Whether `matmul_rows.wgsl` handles this problem: B in `[N, K]` layout and K a multiple of 4.
pub fn rows_supported(layout: BLayout, k: usize) -> bool {
    layout == BLayout::NK && k.is_multiple_of(4)
}

/// The shape of one product, as the kernel choice sees it: C is `[M, N]` (per batch entry),
/// K the inner size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Problem {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub layout: BLayout,
    pub gated: bool,
}

/// The matmul kernels as named strategies. [`MatmulStrategy::choose`] is the one place that
/// picks one for a product; the kernel tests and `tessera bench` run every strategy that
/// [`supports`](MatmulStrategy::supports) the product, against the same CPU reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulStrategy {
    /// `matmul_rows.wgsl`: register blocks of 8 rows × 16 columns without workgroup memory,
    /// for adapters that run on the CPU. B in `[N, K]` layout, K a multiple of 4.
    Rows,
    /// `matmul.wgsl`: 32×32 workgroup-memory tiles, 4×4 outputs per invocation. Every product,
    /// gated units included.
    Tile32,
    /// `matmul_tile64.wgsl`: 64×64 tiles, 8×8 outputs per invocation (twice the multiply-adds
    /// per workgroup-memory load). Not for gated units.
    Tile64,
    /// `matmul_coop16.wgsl`: f16 cooperative matrices (tensor cores) with f32 accumulation,
    /// one subgroup per 2×2 fragments (32×32 tiles with NVIDIA's 16×16 fragments); A (and f32
    /// weights) rounded to f16. Only where
    /// [`GpuContext::cooperative_matrix`](crate::GpuContext::cooperative_matrix) gives a shape.
    /// Not for gated units.
    Coop16,
    /// `matmul_coop64.wgsl`: the same cooperative matrices on 64×64 tiles (128 invocations
    /// with NVIDIA's shape: [`CoopShape::workgroup`]), A and B read as vec4s and staged through
    /// registers while the previous K slice is multiplied. K a multiple of 4; B in `[K, N]`
    /// layout needs N a multiple of 4; gated units with B in `[N, K]` layout.
    Coop64,
    /// `matmul_coop64.wgsl` with sliced K: two groups of subgroups per 64×64 tile (256
    /// invocations with NVIDIA's shape; only where that is at most 512), each multiplying
    /// every other step of each K slice, their sums added at the end — twice the subgroups per
    /// tile for products with too few tiles to fill a GPU. What Coop64 computes.
    Coop64SlicedK,
    /// `matmul_coop128.wgsl`: the same cooperative matrices on tiles of 8×8 fragments
    /// (128×128 with 16×16 ones: 256 invocations with 32-wide subgroups), each subgroup 2×4
    /// fragments — twice Coop64's multiply-adds per staged element and 8 multiplies per 6
    /// fragment loads instead of 4 per 4. Where its 8 subgroups and its workgroup memory (46 KiB
    /// with 16×16 fragments) fit the adapter's limits. What Coop64 computes; not the static
    /// choice, taken by kernel tuning ([`Tuner`](crate::gpu::Tuner)) where it measures faster.
    Coop128,
    /// `matmul_gemv.wgsl`: at most 8 rows, spread over B's rows and along K (memory-bound
    /// products: adaptive-norm projections of the pooled text, batch-1 products). B in
    /// `[N, K]` layout, K a multiple of 4; not for gated units.
    Gemv,
}

impl MatmulStrategy {
    pub const ALL: [MatmulStrategy; 8] = [
        MatmulStrategy::Gemv,
        MatmulStrategy::Rows,
        MatmulStrategy::Tile32,
        MatmulStrategy::Tile64,
        MatmulStrategy::Coop16,
        MatmulStrategy::Coop64,
        MatmulStrategy::Coop64SlicedK,
        MatmulStrategy::Coop128,
    ];

    /// Whether the kernel multiplies f16 roundings of its operands (cooperative matrices).
    pub fn rounds_to_f16(self) -> bool {
        matches!(
            self,
            MatmulStrategy::Coop16
                | MatmulStrategy::Coop64
                | MatmulStrategy::Coop64SlicedK
                | MatmulStrategy::Coop128
        )
    }

    /// The strategy `TESSERA_MATMUL` names (`gemv`, `rows`, `tile32`, `tile64`, `coop16`,
    /// `coop64`, `coop64slicedk`, `coop128`), read once: a benchmarking override that products
    /// use wherever that kernel computes them and the adapter runs it (the others keep
    /// [`choose`](Self::choose)'s pick).
    pub fn forced() -> Option<MatmulStrategy> {
        static FORCED: std::sync::OnceLock<Option<MatmulStrategy>> = std::sync::OnceLock::new();
        *FORCED.get_or_init(|| super::strategy_from_env("TESSERA_MATMUL", &MatmulStrategy::ALL))
    }

    /// Whether the adapter runs this kernel at all (cooperative matrices need the feature,
    /// an f16 configuration and subgroups of the width the kernels need:
    /// [`GpuContext::cooperative_matrix`](crate::GpuContext::cooperative_matrix)).
    pub fn available(self, ctx: &crate::GpuContext) -> bool {
        match self {
            MatmulStrategy::Coop16 | MatmulStrategy::Coop64 => ctx.cooperative_matrix().is_some(),
            MatmulStrategy::Coop64SlicedK => ctx.cooperative_matrix().is_some_and(|shape| {
                let invocations = 2 * shape.workgroup();
                invocations <= SLICED_K_MAX_INVOCATIONS
                    && invocations <= ctx.limits().max_compute_invocations_per_workgroup
            }),
            MatmulStrategy::Coop128 => ctx.cooperative_matrix().is_some_and(|shape| {
                let (_, invocations, storage) = coop128_layout(shape);
                let limits = ctx.limits();
                invocations <= limits.max_compute_invocations_per_workgroup
                    && storage <= limits.max_compute_workgroup_storage_size
            }),
            _ => true,
        }
    }

    /// Whether the kernel computes `problem`.
    pub fn supports(self, problem: &Problem) -> bool {
        match self {
            MatmulStrategy::Rows => rows_supported(problem.layout, problem.k),
            MatmulStrategy::Gemv => {
                rows_supported(problem.layout, problem.k)
                    && problem.m <= GEMV_MAX_M
                    && !problem.gated
            }
            MatmulStrategy::Tile32 => true,
            MatmulStrategy::Tile64 | MatmulStrategy::Coop16 => !problem.gated,
            MatmulStrategy::Coop64 | MatmulStrategy::Coop64SlicedK | MatmulStrategy::Coop128 => {
                problem.k.is_multiple_of(4)
                    && match problem.layout {
                        BLayout::NK => true,
                        BLayout::KN => problem.n.is_multiple_of(4) && !problem.gated,
                    }
            }
        }
    }

    /// The kernel for `problem` on a recorder picking `family`'s kernels, `coop` saying
    /// whether cooperative matrices may be used. CPU adapters: the register-blocked kernel
    /// where it applies. GPUs: products of at most 8 rows by the few-row kernel; with
    /// cooperative matrices, products of at least 32 × 32 on them (64×64 tiles where they
    /// apply); otherwise the register-blocked kernel (on an H200 it beat both workgroup-tiled
    /// kernels at every aMUSEd product: docs/benchmarks.md), else 64×64 tiles for products of
    /// at least 128 × 128, else 32×32 tiles.
    pub fn choose(family: KernelFamily, coop: bool, problem: &Problem) -> Self {
        match family {
            KernelFamily::Cpu if MatmulStrategy::Rows.supports(problem) => MatmulStrategy::Rows,
            KernelFamily::Tiled if MatmulStrategy::Gemv.supports(problem) => MatmulStrategy::Gemv,
            KernelFamily::Tiled
                if coop
                    && problem.m >= 32
                    && problem.n >= 32
                    && MatmulStrategy::Coop64.supports(problem) =>
            {
                MatmulStrategy::Coop64
            }
            KernelFamily::Tiled
                if coop
                    && problem.m >= 32
                    && problem.n >= 32
                    && MatmulStrategy::Coop16.supports(problem) =>
            {
                MatmulStrategy::Coop16
            }
            KernelFamily::Tiled if MatmulStrategy::Rows.supports(problem) => MatmulStrategy::Rows,
            KernelFamily::Tiled
                if problem.m >= 128
                    && problem.n >= 128
                    && MatmulStrategy::Tile64.supports(problem) =>
            {
                MatmulStrategy::Tile64
            }
            _ => MatmulStrategy::Tile32,
        }
    }
}

/// What besides its [`Problem`] a product's timing needs ([`MatmulStrategy::picked`]).
#[derive(Clone, Copy, Debug)]
pub struct TuneCall {
    /// How B is read.
    pub format: WeightFormat,
    /// Batch entries of the product after folding (1 where B is shared: they fold into M).
    pub batch: usize,
    /// Whether each batch entry has its own B.
    pub b_batched: bool,
    /// The epilogue's activation (a gated unit's, which the gated kernels apply to the gate).
    pub activation: Option<Activation>,
}

impl MatmulStrategy {
    /// The kernel [`matmul`] runs `problem` with on `rec`: `TESSERA_MATMUL`'s where that
    /// kernel computes it here; else, where the context's [`Tuner`](crate::gpu::Tuner) is on,
    /// the fastest measured at this shape among the strategies at least as precise as
    /// [`choose`](Self::choose)'s pick (every one where it is a cooperative-matrix kernel,
    /// which rounds to f16; the f32 ones where it is f32: tuning never lowers precision),
    /// `choose`'s pick unless another beats it by the tuner's margin; else `choose`'s pick.
    pub fn picked(rec: &Recorder<'_>, problem: &Problem, call: &TuneCall) -> Self {
        let ctx = rec.ctx();
        if let Some(s) = Self::forced().filter(|s| s.available(ctx) && s.supports(problem)) {
            return s;
        }
        let family = rec.kernel_family();
        let chosen = Self::choose(family, ctx.cooperative_matrix().is_some(), problem);
        let tuner = ctx.tuner();
        if !tuner.is_on() {
            return chosen;
        }
        let candidates: Vec<_> = Self::ALL
            .into_iter()
            .filter(|s| {
                s.available(ctx)
                    && s.supports(problem)
                    && (!s.rounds_to_f16() || chosen.rounds_to_f16())
            })
            .collect();
        let Problem {
            m,
            n,
            k,
            layout,
            gated,
        } = *problem;
        let key = format!(
            "matmul {family:?} {:?} {layout:?}{}{} batch {} [{m}, {n}, {k}]",
            call.format,
            if gated { " gated" } else { "" },
            if call.b_batched { " batched-B" } else { "" },
            call.batch,
        );
        tuner.pick(&key, chosen, &candidates, |s| {
            let b_rows = if gated { 2 * n } else { n };
            let mut b_shape = match layout {
                BLayout::NK => vec![b_rows, k],
                BLayout::KN => vec![k, n],
            };
            if call.b_batched {
                b_shape.insert(0, call.batch);
            }
            let b_dtype = match call.format {
                WeightFormat::F32 => DType::F32,
                WeightFormat::F16 | WeightFormat::F16Packed => DType::F16,
            };
            let a = Tensor::empty(ctx, "tune.a", &[call.batch, m, k], DType::F32)?;
            let b = Tensor::empty(ctx, "tune.b", &b_shape, b_dtype)?;
            let epilogue = Epilogue {
                gated,
                activation: call.activation,
                ..Epilogue::default()
            };
            crate::gpu::time_calls(ctx, |r| {
                r.set_kernel_family(family);
                matmul_with_strategy(r, &a, &b, &epilogue, layout, call.format, Some(s))
            })
        })
    }
}

pub(crate) fn specs() -> Vec<KernelSpec> {
    let mut v = Vec::new();
    for f in [
        WeightFormat::F32,
        WeightFormat::F16,
        WeightFormat::F16Packed,
    ] {
        for act in Activation::ALL.map(Some).into_iter().chain([None]) {
            for t in [false, true] {
                v.push(spec(f, t, false, act));
                v.push(tile64_spec(f, t, act));
                for shape in CoopShape::ALL {
                    v.push(coop16_spec(f, shape, t, act));
                    for k_split in k_splits(shape) {
                        v.push(coop64_spec(f, shape, t, false, act, k_split));
                    }
                    v.push(coop128_spec(f, shape, t, false, act));
                }
            }
            v.push(spec(f, true, true, act));
            for shape in CoopShape::ALL {
                for k_split in k_splits(shape) {
                    v.push(coop64_spec(f, shape, true, true, act, k_split));
                }
                v.push(coop128_spec(f, shape, true, true, act));
            }
            v.push(rows_spec(f, false, act));
            v.push(gemv_spec(f, act));
            v.push(rows_spec(f, true, act));
        }
    }
    v
}

/// An activation the matmul epilogue applies (codes as in `shaders/activation.wgsl`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// 0.5·x·(1 + erf(x/√2)) (PyTorch `gelu`, approximate="none").
    GeluErf,
    /// PyTorch `gelu(approximate="tanh")`.
    GeluTanh,
    /// x·σ(1.702x) (OpenAI CLIP).
    QuickGelu,
    /// x·σ(x).
    Silu,
}

impl Activation {
    pub const ALL: [Activation; 4] = [
        Activation::GeluErf,
        Activation::GeluTanh,
        Activation::QuickGelu,
        Activation::Silu,
    ];

    /// The activation's code in `shaders/activation.wgsl` (0 is the identity).
    pub(crate) fn code(self) -> u32 {
        match self {
            Activation::GeluErf => 1,
            Activation::GeluTanh => 2,
            Activation::QuickGelu => 3,
            Activation::Silu => 4,
        }
    }
}

/// What the matmul kernels do to each accumulated element of C before storing it, in this
/// order: `+ bias[n]` (f32 `[N]`), the activation, `+ residual[.., m, n]` (f32, C's shape).
///
/// `gated`: a gated linear unit (diffusers `GEGLU` with [`Activation::GeluErf`]): B `[2N, K]`
/// holds the value rows then the gate rows (bias `[2N]` likewise, as `proj(x).chunk(2)` splits
/// them), and `C[.., n] = (value + bias[n]) · act(gate + bias[N + n]) + residual`, `[.., N]`.
/// B must be in [`BLayout::NK`] layout.
#[derive(Clone, Copy, Debug, Default)]
pub struct Epilogue<'a> {
    pub bias: Option<&'a Tensor>,
    pub activation: Option<Activation>,
    pub residual: Option<&'a Tensor>,
    pub gated: bool,
}

impl<'a> Epilogue<'a> {
    /// Just the bias (or nothing).
    pub fn bias(bias: Option<&'a Tensor>) -> Self {
        Self {
            bias,
            ..Self::default()
        }
    }

    fn flags(&self) -> u32 {
        u32::from(self.bias.is_some()) | (u32::from(self.residual.is_some()) << 1)
    }
}

/// How B is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BLayout {
    /// B is `[.., K, N]`.
    KN,
    /// B is `[.., N, K]` (PyTorch `Linear.weight`): computes A·Bᵀ.
    NK,
}

/// `x · wᵀ (+ bias)` for a PyTorch-layout weight `w` `[out, in]`: x `[.., in]` → `[.., out]`.
pub fn linear(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
) -> Result<Tensor> {
    matmul(rec, x, w, bias, BLayout::NK)
}

/// [`linear`] with a fused epilogue: `act(x · wᵀ + bias) + residual`.
pub fn linear_fused(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    w: &Tensor,
    epilogue: &Epilogue<'_>,
) -> Result<Tensor> {
    matmul_fused(rec, x, w, BLayout::NK, epilogue)
}

/// `A · op(B) (+ bias)`. A is f32 `[batch.., M, K]`; B is f32 or f16, either 2-D (shared by
/// every batch item) or with the same batch dims as A. Result f32 `[batch.., M, N]`.
/// f16 weights use native f16 when the device has it, packed f16 otherwise; on CPU adapters
/// packed f16 (measured faster there) and the register-blocked kernel.
pub fn matmul(
    rec: &mut Recorder<'_>,
    a: &Tensor,
    b: &Tensor,
    bias: Option<&Tensor>,
    layout: BLayout,
) -> Result<Tensor> {
    matmul_fused(rec, a, b, layout, &Epilogue::bias(bias))
}

/// [`matmul`] with a fused epilogue ([`Epilogue`]).
pub fn matmul_fused(
    rec: &mut Recorder<'_>,
    a: &Tensor,
    b: &Tensor,
    layout: BLayout,
    epilogue: &Epilogue<'_>,
) -> Result<Tensor> {
    let format = weight_format(rec, b);
    matmul_with_format(rec, a, b, epilogue, layout, format)
}

/// How [`matmul`] reads weights of `b`'s dtype on this recorder: f16 natively where the device
/// has it, packed f16 otherwise and on CPU adapters (measured faster there), else f32.
pub fn weight_format(rec: &Recorder<'_>, b: &Tensor) -> WeightFormat {
    let cpu = rec.kernel_family() == KernelFamily::Cpu;
    match b.dtype() {
        DType::F16 if rec.ctx().has_f16() && !cpu => WeightFormat::F16,
        DType::F16 => WeightFormat::F16Packed,
        _ => WeightFormat::F32,
    }
}

/// [`matmul`] with the weight-reading kernel chosen by the caller (tests and benchmarks); the
/// kernel is [`MatmulStrategy::choose`]'s for the recorder's kernel family.
pub fn matmul_with_format(
    rec: &mut Recorder<'_>,
    a: &Tensor,
    b: &Tensor,
    epilogue: &Epilogue<'_>,
    layout: BLayout,
    format: WeightFormat,
) -> Result<Tensor> {
    matmul_with_strategy(rec, a, b, epilogue, layout, format, None)
}

/// [`matmul_with_format`] with the kernel named by the caller (`None`: the chosen one), for
/// the tests and the benchmark that compare strategies.
///
/// # Errors
/// A strategy that does not [support](MatmulStrategy::supports) the product, and everything
/// [`matmul`] refuses.
pub fn matmul_with_strategy(
    rec: &mut Recorder<'_>,
    a: &Tensor,
    b: &Tensor,
    epilogue: &Epilogue<'_>,
    layout: BLayout,
    format: WeightFormat,
    strategy: Option<MatmulStrategy>,
) -> Result<Tensor> {
    const OP: &str = "matmul";
    a.expect_dtype(OP, DType::F32)?;
    let want_b = match format {
        WeightFormat::F32 => DType::F32,
        WeightFormat::F16 | WeightFormat::F16Packed => DType::F16,
    };
    b.expect_dtype(OP, want_b)?;
    if format == WeightFormat::F16 && !rec.ctx().has_f16() {
        return Err(Error::MissingFeature {
            op: OP,
            feature: "SHADER_F16",
        });
    }
    if a.shape().len() < 2 {
        return Err(Error::shape(
            OP,
            format!("A {:?} must be at least 2-D", a.shape()),
        ));
    }
    expect_rank(OP, b, &[2, a.shape().len()])?;
    let ar = a.shape().len();
    let (m, k) = (a.shape()[ar - 2], a.shape()[ar - 1]);
    let batch_dims = &a.shape()[..ar - 2];
    let batch: usize = batch_dims.iter().product();
    let br = b.shape().len();
    let (bk, b_rows) = match layout {
        BLayout::KN => (b.shape()[br - 2], b.shape()[br - 1]),
        BLayout::NK => (b.shape()[br - 1], b.shape()[br - 2]),
    };
    // Output columns: B's, or half of them for a gated unit.
    let n = if epilogue.gated {
        if layout != BLayout::NK || b_rows % 2 != 0 {
            return Err(Error::shape(
                OP,
                format!(
                    "a gated product needs B [2N, K] (NK layout), got {:?} ({layout:?})",
                    b.shape()
                ),
            ));
        }
        b_rows / 2
    } else {
        b_rows
    };
    if bk != k {
        return Err(Error::shape(
            OP,
            format!(
                "inner sizes differ: A {:?} {:?} has K = {k}, B {:?} {:?} ({layout:?}) has K = {bk}",
                a.name(),
                a.shape(),
                b.name(),
                b.shape()
            ),
        ));
    }
    let b_batched = br == ar && br > 2;
    if b_batched && &b.shape()[..br - 2] != batch_dims {
        return Err(Error::shape(
            OP,
            format!("batch dims differ: A {:?}, B {:?}", a.shape(), b.shape()),
        ));
    }
    if let Some(bias) = epilogue.bias {
        bias.expect_dtype(OP, DType::F32)?;
        super::expect_shape(OP, bias, &[b_rows])?;
    }
    // A shared B lets the batch fold into M: one big GEMM instead of `batch` small ones.
    let (gm, gbatch) = if b_batched {
        (m, batch)
    } else {
        (m * batch, 1)
    };
    let mut out_shape = a.shape()[..ar - 1].to_vec();
    out_shape.push(n);
    if let Some(r) = epilogue.residual {
        r.expect_dtype(OP, DType::F32)?;
        if r.numel() != out_shape.iter().product::<usize>() || r.shape().last() != Some(&n) {
            return Err(Error::shape(
                OP,
                format!(
                    "residual {:?} {:?} does not match the product's shape {out_shape:?}",
                    r.name(),
                    r.shape()
                ),
            ));
        }
    }
    let out = Tensor::empty(rec.ctx(), "matmul.out", &out_shape, DType::F32)?;
    let params = Params {
        m: to_u32(OP, "M", gm)?,
        n: to_u32(OP, "N", n)?,
        k: to_u32(OP, "K", k)?,
        batch: to_u32(OP, "batch", gbatch)?,
        a_batch_stride: to_u32(OP, "A batch stride", m * k)?,
        b_batch_stride: if b_batched {
            to_u32(OP, "B batch stride", b_rows * k)?
        } else {
            0
        },
        c_batch_stride: to_u32(OP, "C batch stride", m * n)?,
        flags: epilogue.flags(),
    };
    let problem = Problem {
        m: gm,
        n,
        k,
        layout,
        gated: epilogue.gated,
    };
    let shape = rec.ctx().cooperative_matrix();
    let strategy = strategy.unwrap_or_else(|| {
        let call = TuneCall {
            format,
            batch: gbatch,
            b_batched,
            activation: epilogue.activation,
        };
        MatmulStrategy::picked(rec, &problem, &call)
    });
    if !strategy.available(rec.ctx()) {
        return Err(Error::MissingFeature {
            op: OP,
            feature: COOP_FEATURE,
        });
    }
    // What the cooperative-matrix kernels compile for (they run only where it is Some).
    let coop_shape = shape.unwrap_or(CoopShape::M16);
    if !strategy.supports(&problem) {
        return Err(Error::shape(
            OP,
            format!("the {strategy:?} kernel does not compute {problem:?}"),
        ));
    }
    let (kernel_spec, groups) = match strategy {
        MatmulStrategy::Rows => {
            // A gated workgroup spends half its columns on gates.
            let per_group = if epilogue.gated {
                ROWS_TILE_N / 2
            } else {
                ROWS_TILE_N
            };
            let groups = [
                params.n.div_ceil(per_group),
                params.m.div_ceil(ROWS_TILE_M),
                params.batch,
            ];
            (
                rows_spec(format, epilogue.gated, epilogue.activation),
                groups,
            )
        }
        MatmulStrategy::Gemv => (
            gemv_spec(format, epilogue.activation),
            [params.n.div_ceil(GEMV_COLS), 1, params.batch],
        ),
        MatmulStrategy::Tile32 => {
            let per_group = if epilogue.gated { TILE / 2 } else { TILE };
            let groups = [
                params.n.div_ceil(per_group),
                params.m.div_ceil(TILE),
                params.batch,
            ];
            (
                spec(
                    format,
                    layout == BLayout::NK,
                    epilogue.gated,
                    epilogue.activation,
                ),
                groups,
            )
        }
        MatmulStrategy::Tile64 => (
            tile64_spec(format, layout == BLayout::NK, epilogue.activation),
            [
                params.n.div_ceil(TILE64),
                params.m.div_ceil(TILE64),
                params.batch,
            ],
        ),
        MatmulStrategy::Coop16 => {
            let tile = 2 * coop_shape.size();
            (
                coop16_spec(
                    format,
                    coop_shape,
                    layout == BLayout::NK,
                    epilogue.activation,
                ),
                [
                    params.n.div_ceil(tile),
                    params.m.div_ceil(tile),
                    params.batch,
                ],
            )
        }
        MatmulStrategy::Coop64 | MatmulStrategy::Coop64SlicedK => (
            coop64_spec(
                format,
                coop_shape,
                layout == BLayout::NK,
                epilogue.gated,
                epilogue.activation,
                if strategy == MatmulStrategy::Coop64SlicedK {
                    2
                } else {
                    1
                },
            ),
            [
                params.n.div_ceil(TILE64),
                params.m.div_ceil(TILE64),
                params.batch,
            ],
        ),
        MatmulStrategy::Coop128 => {
            let (tile, _, _) = coop128_layout(coop_shape);
            (
                coop128_spec(
                    format,
                    coop_shape,
                    layout == BLayout::NK,
                    epilogue.gated,
                    epilogue.activation,
                ),
                [
                    params.n.div_ceil(tile),
                    params.m.div_ceil(tile),
                    params.batch,
                ],
            )
        }
    };
    rec.dispatch(
        &kernel_spec,
        bytemuck::bytes_of(&params),
        &[
            (1, Binding::Tensor(a)),
            (2, Binding::Tensor(b)),
            (3, epilogue.bias.map_or(Binding::Unused, Binding::Tensor)),
            (4, Binding::Tensor(&out)),
            (
                5,
                epilogue.residual.map_or(Binding::Unused, Binding::Tensor),
            ),
        ],
        groups,
    )?;
    Ok(out)
}
