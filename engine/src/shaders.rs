//! The WGSL sources (from `shaders/` at the repository root, embedded at build time) and the
//! kernel configurations the engine can request.
//!
//! A [`KernelSpec`] names a module, an entry point and the override constants; it is the
//! pipeline-cache key. [`all_specs`] lists every configuration any op can ask for, so the naga
//! translation test covers exactly what the engine runs.
//!
//! Each op's uniform `Params` is declared once, in Rust, with [`kernel_params!`]; its WGSL
//! `struct Params` is generated from that declaration ([`ParamsLayout::wgsl`]) and appended to
//! the module's source, so the two cannot drift apart.

use std::fmt;

const ACTIVATION: &str = include_str!("../../shaders/activation.wgsl");
const MATMUL: &str = include_str!("../../shaders/matmul.wgsl");
const MATMUL_TILE64: &str = include_str!("../../shaders/matmul_tile64.wgsl");
const MATMUL_COOP16: &str = include_str!("../../shaders/matmul_coop16.wgsl");
const MATMUL_COOP64: &str = include_str!("../../shaders/matmul_coop64.wgsl");
const MATMUL_COOP128: &str = include_str!("../../shaders/matmul_coop128.wgsl");
const MATMUL_COOP_STAGING: &str = include_str!("../../shaders/matmul_coop_staging.wgsl");
const MATMUL_GEMV: &str = include_str!("../../shaders/matmul_gemv.wgsl");
const TILE8X8: &str = include_str!("../../shaders/tile8x8.wgsl");
const MATMUL_OPERANDS: &str = include_str!("../../shaders/matmul_operands.wgsl");
const MATMUL_IO: &str = include_str!("../../shaders/matmul_io.wgsl");
const MATMUL_EPILOGUE: &str = include_str!("../../shaders/matmul_epilogue.wgsl");
const WEIGHTS_F32: &str = include_str!("../../shaders/weights_f32.wgsl");
const WEIGHTS_F16: &str = include_str!("../../shaders/weights_f16.wgsl");
const WEIGHTS_F16_PACKED: &str = include_str!("../../shaders/weights_f16_packed.wgsl");
const MATMUL_ROWS: &str = include_str!("../../shaders/matmul_rows.wgsl");
const WEIGHTS4_F32: &str = include_str!("../../shaders/weights4_f32.wgsl");
const WEIGHTS4_F16: &str = include_str!("../../shaders/weights4_f16.wgsl");
const WEIGHTS4_F16_PACKED: &str = include_str!("../../shaders/weights4_f16_packed.wgsl");
const ATTENTION: &str = include_str!("../../shaders/attention.wgsl");
const ATTENTION_FLASH: &str = include_str!("../../shaders/attention_flash.wgsl");
const ATTENTION_ROWS: &str = include_str!("../../shaders/attention_rows.wgsl");
const ATTENTION_VEC4_IO: &str = include_str!("../../shaders/attention_vec4_io.wgsl");
const NORM: &str = include_str!("../../shaders/norm.wgsl");
const ELEMENTWISE: &str = include_str!("../../shaders/elementwise.wgsl");
const LAYOUT: &str = include_str!("../../shaders/layout.wgsl");
const EMBED: &str = include_str!("../../shaders/embed.wgsl");
const CONV2D: &str = include_str!("../../shaders/conv2d.wgsl");
const CONV2D_IO: &str = include_str!("../../shaders/conv2d_io.wgsl");
const CONV2D_COOP: &str = include_str!("../../shaders/conv2d_coop.wgsl");
const ATTENTION_COOP: &str = include_str!("../../shaders/attention_coop.wgsl");
const SAMPLING: &str = include_str!("../../shaders/sampling.wgsl");

/// The WGSL type of a kernel-parameter field: 4-byte scalars and 4-vectors of them, so that a
/// `#[repr(C)]` struct of them has WGSL's uniform layout wherever its vectors start at 16-byte
/// offsets (the shader tests check every struct's offsets against naga's).
pub trait WgslType {
    /// The type's WGSL spelling.
    const WGSL: &'static str;
}

impl WgslType for u32 {
    const WGSL: &'static str = "u32";
}

impl WgslType for f32 {
    const WGSL: &'static str = "f32";
}

impl WgslType for [u32; 4] {
    const WGSL: &'static str = "vec4<u32>";
}

/// A kernel's uniform `Params` as the Rust struct lays it out: each field's name, WGSL type and
/// byte offset, and the size in bytes. Made by [`kernel_params!`].
#[derive(Clone, Copy, Debug)]
pub struct ParamsLayout {
    /// (name, WGSL type, byte offset) in declaration order.
    pub fields: &'static [(&'static str, &'static str, usize)],
    /// `size_of` the Rust struct.
    pub size: usize,
}

impl ParamsLayout {
    /// The WGSL declaration `struct Params { name: type, … }`.
    pub fn wgsl(&self) -> String {
        let fields: String = self
            .fields
            .iter()
            .map(|(name, ty, _)| format!("    {name}: {ty},\n"))
            .collect();
        format!("struct Params {{\n{fields}}}\n")
    }
}

/// Declares a kernel's uniform parameters once: the `#[repr(C)]`, `Pod` Rust struct its launcher
/// fills, and (as `Params::LAYOUT`, a [`ParamsLayout`]) the field list from which its module's
/// WGSL `struct Params` is generated. Field types implement [`WgslType`].
macro_rules! kernel_params {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $($(#[$field_meta:meta])* $field:ident: $ty:ty),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
        $vis struct $name {
            $($(#[$field_meta])* $field: $ty),*
        }

        impl $name {
            /// This struct's fields as the WGSL `struct Params` is generated from them.
            pub(crate) const LAYOUT: $crate::shaders::ParamsLayout = $crate::shaders::ParamsLayout {
                fields: &[$((
                    stringify!($field),
                    <$ty as $crate::shaders::WgslType>::WGSL,
                    std::mem::offset_of!($name, $field),
                )),*],
                size: std::mem::size_of::<$name>(),
            };
        }
    };
}
pub(crate) use kernel_params;

/// How matmul reads its B operand (the weights).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WeightFormat {
    F32,
    /// `enable f16;` with `array<f16>` (needs `Features::SHADER_F16`).
    F16,
    /// f16 pairs packed in `u32`, widened with `unpack2x16float` (works everywhere).
    F16Packed,
}

/// The cooperative-matrix configuration a tensor-core kernel is compiled for: square f16 × f16 →
/// f32 fragments of [`size`](Self::size) and subgroups of exactly [`subgroup`](Self::subgroup)
/// invocations. The 64×64-tile kernels (`matmul_coop64.wgsl`, `conv2d_coop.wgsl`) give each
/// subgroup one 2×2 block of fragments, so their workgroups hold
/// [`workgroup`](Self::workgroup) = (64 / 2·size)² subgroups; attention's 128 invocations share
/// their fragments out over 128 / subgroup subgroups; `matmul_coop16.wgsl` is one subgroup. The
/// kernels name their fragment types `FragA`, `FragB`, `FragC` and read `FR` (the fragment
/// size), `SG` (the subgroup width) and `WG` (the 64×64 tiles' workgroup size) from a prelude
/// made by [`CoopShape::prelude`].
///
/// A kernel's mapping is only right where the adapter's subgroups have exactly its width: the
/// context picks the shape from a fixed width the adapter reports, or from a probe where it
/// reports a range (Metal's 4–64: Apple GPUs run 32-wide simdgroups with 8×8 fragments).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CoopShape {
    /// 16×16×16 fragments, 32-wide subgroups (NVIDIA through Vulkan; AMD in wave32).
    M16,
    /// 16×16×16 fragments, 64-wide subgroups (AMD in wave64): 256-invocation 64×64 tiles.
    M16W64,
    /// 8×8×8 fragments, 32-wide subgroups (Apple GPUs through Metal): 512-invocation tiles.
    M8W32,
    /// 8×8×8 fragments, 16-wide subgroups: 256 invocations (lavapipe in Mesa 26 at 512 bits
    /// has the width and configuration, but crashes compiling any cooperative-matrix kernel).
    M8W16,
    /// 8×8×8 fragments, 8-wide subgroups (lavapipe in Mesa 26 at its default 256 bits: lets
    /// the tensor-core kernels be tested on a CPU).
    M8,
}

impl CoopShape {
    /// Every shape, in the order the context prefers them for one subgroup width.
    pub const ALL: [CoopShape; 5] = [
        CoopShape::M16,
        CoopShape::M16W64,
        CoopShape::M8W32,
        CoopShape::M8W16,
        CoopShape::M8,
    ];

    /// Fragment size (M = N = K).
    pub fn size(self) -> u32 {
        match self {
            CoopShape::M16 | CoopShape::M16W64 => 16,
            CoopShape::M8W32 | CoopShape::M8W16 | CoopShape::M8 => 8,
        }
    }

    /// The subgroup width the kernels' mapping needs.
    pub fn subgroup(self) -> u32 {
        match self {
            CoopShape::M16W64 => 64,
            CoopShape::M16 | CoopShape::M8W32 => 32,
            CoopShape::M8W16 => 16,
            CoopShape::M8 => 8,
        }
    }

    /// Invocations of a 64×64-tile workgroup: (64 / 2·size)² subgroups (128, 256 or 512; twice
    /// that for the sliced-K matmul).
    pub fn workgroup(self) -> u32 {
        let per_side = 64 / (2 * self.size());
        per_side * per_side * self.subgroup()
    }

    /// What the module names of kernels compiled for this shape end with (`""` for
    /// [`M16`](Self::M16)).
    pub fn suffix(self) -> &'static str {
        match self {
            CoopShape::M16 => "",
            CoopShape::M16W64 => "_m16w64",
            CoopShape::M8W32 => "_m8w32",
            CoopShape::M8W16 => "_m8w16",
            CoopShape::M8 => "_m8",
        }
    }

    /// The head of a tensor-core module: the `f16` and cooperative-matrix enable directives,
    /// then `FR`, `SG`, `WG` and the fragment aliases.
    pub fn prelude(self) -> String {
        let f = self.size();
        format!(
            "enable f16;\nenable wgpu_cooperative_matrix;\n\
             const FR: u32 = {f}u;\nconst SG: u32 = {sg}u;\nconst WG: u32 = {wg}u;\n\
             alias FragA = coop_mat{f}x{f}<f16, A>;\n\
             alias FragB = coop_mat{f}x{f}<f16, B>;\n\
             alias FragC = coop_mat{f}x{f}<f32, C>;\n",
            sg = self.subgroup(),
            wg = self.workgroup()
        )
    }
}

impl fmt::Display for CoopShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{0}×{0} f16 fragments, {1}-wide subgroups",
            self.size(),
            self.subgroup()
        )
    }
}

/// `attention_coop.wgsl`'s tiles for narrow heads (≤ 64) or `wide` ones (65–128): the largest
/// head size its workgroup arrays hold (`DMAX`) and the queries per workgroup (`BQ`).
pub fn attention_coop_tiles(wide: bool) -> (u32, u32) {
    if wide { (128, 16) } else { (64, 32) }
}

/// One WGSL module (a kernel family; matmul comes in one module per weight format).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Module {
    Matmul(WeightFormat),
    /// 64×64 tiles with 8×8 outputs per invocation, for large products on GPUs
    /// (`matmul_tile64.wgsl`).
    MatmulTile64(WeightFormat),
    /// f16 cooperative matrices (tensor cores), f32 accumulation, one subgroup per 2×2
    /// fragments (`matmul_coop16.wgsl`); needs `EXPERIMENTAL_COOPERATIVE_MATRIX` and
    /// `SHADER_F16`.
    MatmulCoop16(WeightFormat, CoopShape),
    /// The same cooperative matrices on 64×64 workgroup tiles of 128 invocations, vec4 loads
    /// staged through registers (`matmul_coop64.wgsl`); gated units too.
    MatmulCoop64(WeightFormat, CoopShape),
    /// The same on tiles of 8×8 fragments (128×128 with 16×16 ones), 8 subgroups of 2×4
    /// fragments each (`matmul_coop128.wgsl`); gated units too.
    MatmulCoop128(WeightFormat, CoopShape),
    /// The register-blocked matmul for CPU adapters (`matmul_rows.wgsl`).
    MatmulRows(WeightFormat),
    /// Products of at most 8 rows, split along B's rows and K (`matmul_gemv.wgsl`).
    MatmulGemv(WeightFormat),
    Attention,
    /// Flash attention for GPUs (`attention_flash.wgsl`): four invocations per query.
    AttentionFlash,
    /// Attention for CPU adapters (`attention_rows.wgsl`).
    AttentionRows,
    /// Flash attention whose two products run on cooperative matrices
    /// (`attention_coop.wgsl`); `wide`: head sizes 65–128 (else ≤ 64), which set the
    /// workgroup-memory tiles.
    AttentionCoop {
        shape: CoopShape,
        wide: bool,
    },
    Norm,
    Elementwise,
    Layout,
    Embed,
    Conv2d,
    /// conv2d.wgsl with the implicit GEMM on cooperative matrices (`conv2d_coop.wgsl`); needs
    /// `EXPERIMENTAL_COOPERATIVE_MATRIX` and `SHADER_F16`.
    Conv2dCoop(CoopShape),
    Sampling,
}

impl Module {
    /// Every module: the plain ones, and each tensor-core one for every [`CoopShape`].
    pub fn all() -> Vec<Module> {
        use WeightFormat::{F16, F16Packed, F32};
        let formats = [F32, F16, F16Packed];
        let mut v: Vec<Module> = formats.map(Module::Matmul).into();
        v.extend(formats.map(Module::MatmulTile64));
        for shape in CoopShape::ALL {
            v.extend(formats.map(|w| Module::MatmulCoop16(w, shape)));
            v.extend(formats.map(|w| Module::MatmulCoop64(w, shape)));
            v.extend(formats.map(|w| Module::MatmulCoop128(w, shape)));
            v.extend([false, true].map(|wide| Module::AttentionCoop { shape, wide }));
            v.push(Module::Conv2dCoop(shape));
        }
        v.extend(formats.map(Module::MatmulRows));
        v.extend(formats.map(Module::MatmulGemv));
        v.extend([
            Module::Attention,
            Module::AttentionFlash,
            Module::AttentionRows,
            Module::Norm,
            Module::Elementwise,
            Module::Layout,
            Module::Embed,
            Module::Conv2d,
            Module::Sampling,
        ]);
        v
    }

    /// The module's name (pipeline labels, messages): the kernel file's, with the weight
    /// format and the cooperative-matrix shape's [`suffix`](CoopShape::suffix).
    pub fn name(self) -> String {
        let format = |w: WeightFormat| match w {
            WeightFormat::F32 => "f32",
            WeightFormat::F16 => "f16",
            WeightFormat::F16Packed => "f16_packed",
        };
        match self {
            Module::Matmul(w) => format!("matmul_{}", format(w)),
            Module::MatmulTile64(w) => format!("matmul_tile64_{}", format(w)),
            Module::MatmulCoop16(w, shape) => {
                format!("matmul_coop16_{}{}", format(w), shape.suffix())
            }
            Module::MatmulCoop64(w, shape) => {
                format!("matmul_coop64_{}{}", format(w), shape.suffix())
            }
            Module::MatmulCoop128(w, shape) => {
                format!("matmul_coop128_{}{}", format(w), shape.suffix())
            }
            Module::MatmulRows(w) => format!("matmul_rows_{}", format(w)),
            Module::MatmulGemv(w) => format!("matmul_gemv_{}", format(w)),
            Module::Attention => "attention".to_owned(),
            Module::AttentionFlash => "attention_flash".to_owned(),
            Module::AttentionRows => "attention_rows".to_owned(),
            Module::AttentionCoop { shape, wide } => {
                let wide = if wide { "_wide" } else { "" };
                format!("attention_coop{wide}{}", shape.suffix())
            }
            Module::Norm => "norm".to_owned(),
            Module::Elementwise => "elementwise".to_owned(),
            Module::Layout => "layout".to_owned(),
            Module::Embed => "embed".to_owned(),
            Module::Conv2d => "conv2d".to_owned(),
            Module::Conv2dCoop(shape) => format!("conv2d_coop{}", shape.suffix()),
            Module::Sampling => "sampling".to_owned(),
        }
    }

    /// The complete WGSL text of the module: its kernels, then its generated `struct Params`
    /// (WGSL declarations may come in any order; enable directives stay first).
    pub fn source(self) -> String {
        format!("{}\n{}", self.kernels(), self.params().wgsl())
    }

    /// The layout of the uniform `Params` every kernel of the module reads (its op's
    /// [`kernel_params!`] struct).
    pub fn params(self) -> ParamsLayout {
        use crate::ops::{attention, conv, elementwise, embed, layout, matmul, norm, sampling};
        match self {
            Module::Matmul(_)
            | Module::MatmulTile64(_)
            | Module::MatmulCoop16(..)
            | Module::MatmulCoop64(..)
            | Module::MatmulCoop128(..)
            | Module::MatmulRows(_)
            | Module::MatmulGemv(_) => matmul::Params::LAYOUT,
            Module::Attention
            | Module::AttentionFlash
            | Module::AttentionRows
            | Module::AttentionCoop { .. } => attention::Params::LAYOUT,
            Module::Norm => norm::Params::LAYOUT,
            Module::Elementwise => elementwise::Params::LAYOUT,
            Module::Layout => layout::Params::LAYOUT,
            Module::Embed => embed::Params::LAYOUT,
            Module::Conv2d | Module::Conv2dCoop(_) => conv::Params::LAYOUT,
            Module::Sampling => sampling::Params::LAYOUT,
        }
    }

    /// The module's WGSL without its `struct Params`.
    fn kernels(self) -> String {
        match self {
            Module::Matmul(w) | Module::MatmulTile64(w) => {
                let prelude = match w {
                    WeightFormat::F32 => WEIGHTS_F32,
                    WeightFormat::F16 => WEIGHTS_F16,
                    WeightFormat::F16Packed => WEIGHTS_F16_PACKED,
                };
                let kernel = if matches!(self, Module::Matmul(_)) {
                    MATMUL
                } else {
                    MATMUL_TILE64
                };
                format!(
                    "{prelude}\n{ACTIVATION}\n{MATMUL_IO}\n{MATMUL_OPERANDS}\n{TILE8X8}\n{kernel}\n{MATMUL_EPILOGUE}"
                )
            }
            Module::MatmulCoop16(w, shape) => {
                // Enable directives come before every declaration: the f16 prelude's own
                // `enable f16;` is dropped for the cooperative-matrix prelude's.
                let prelude = match w {
                    WeightFormat::F32 => WEIGHTS_F32,
                    WeightFormat::F16 => WEIGHTS_F16,
                    WeightFormat::F16Packed => WEIGHTS_F16_PACKED,
                }
                .replace("enable f16;", "");
                format!(
                    "{coop}\n{prelude}\n{ACTIVATION}\n{MATMUL_IO}\n{MATMUL_OPERANDS}\n\
                     {MATMUL_COOP16}\n{MATMUL_EPILOGUE}",
                    coop = shape.prelude()
                )
            }
            Module::MatmulCoop64(w, shape) | Module::MatmulCoop128(w, shape) => {
                let prelude = match w {
                    WeightFormat::F32 => WEIGHTS4_F32,
                    WeightFormat::F16 => WEIGHTS4_F16,
                    WeightFormat::F16Packed => WEIGHTS4_F16_PACKED,
                }
                .replace("enable f16;", "");
                let kernel = if matches!(self, Module::MatmulCoop64(..)) {
                    MATMUL_COOP64
                } else {
                    MATMUL_COOP128
                };
                format!(
                    "{coop}\n{prelude}\n{ACTIVATION}\n{MATMUL_IO}\n{kernel}\n\
                     {MATMUL_COOP_STAGING}\n{MATMUL_EPILOGUE}",
                    coop = shape.prelude()
                )
            }
            Module::MatmulRows(w) | Module::MatmulGemv(w) => {
                let prelude = match w {
                    WeightFormat::F32 => WEIGHTS4_F32,
                    WeightFormat::F16 => WEIGHTS4_F16,
                    WeightFormat::F16Packed => WEIGHTS4_F16_PACKED,
                };
                let kernel = if matches!(self, Module::MatmulRows(_)) {
                    MATMUL_ROWS
                } else {
                    MATMUL_GEMV
                };
                format!("{prelude}\n{ACTIVATION}\n{MATMUL_IO}\n{kernel}\n{MATMUL_EPILOGUE}")
            }
            Module::Attention => ATTENTION.to_owned(),
            Module::AttentionFlash => {
                format!("{ATTENTION_VEC4_IO}\n{ATTENTION_FLASH}")
            }
            Module::AttentionRows => {
                format!("{ATTENTION_VEC4_IO}\n{ATTENTION_ROWS}")
            }
            Module::AttentionCoop { shape, wide } => {
                let (dmax, bq) = attention_coop_tiles(wide);
                format!(
                    "{coop}\nconst DMAX: u32 = {dmax}u;\nconst BQ: u32 = {bq}u;\n\
                     {ATTENTION_VEC4_IO}\n{ATTENTION_COOP}",
                    coop = shape.prelude(),
                )
            }
            Module::Norm => NORM.to_owned(),
            Module::Elementwise => format!("{ACTIVATION}\n{ELEMENTWISE}"),
            Module::Layout => LAYOUT.to_owned(),
            Module::Embed => EMBED.to_owned(),
            Module::Conv2d => format!("{TILE8X8}\n{CONV2D_IO}\n{CONV2D}"),
            Module::Conv2dCoop(shape) => {
                format!("{coop}\n{CONV2D_IO}\n{CONV2D_COOP}", coop = shape.prelude())
            }
            Module::Sampling => SAMPLING.to_owned(),
        }
    }

    /// Whether the module needs `Features::SHADER_F16`.
    pub fn needs_f16(self) -> bool {
        matches!(
            self,
            Module::Matmul(WeightFormat::F16)
                | Module::MatmulTile64(WeightFormat::F16)
                | Module::MatmulRows(WeightFormat::F16)
                | Module::MatmulGemv(WeightFormat::F16)
                | Module::MatmulCoop16(..)
                | Module::MatmulCoop64(..)
                | Module::MatmulCoop128(..)
                | Module::AttentionCoop { .. }
                | Module::Conv2dCoop(_)
        )
    }

    /// Whether the module needs `Features::EXPERIMENTAL_COOPERATIVE_MATRIX` (Vulkan and Metal
    /// only).
    pub fn needs_cooperative_matrix(self) -> bool {
        matches!(
            self,
            Module::MatmulCoop16(..)
                | Module::MatmulCoop64(..)
                | Module::MatmulCoop128(..)
                | Module::AttentionCoop { .. }
                | Module::Conv2dCoop(_)
        )
    }
}

/// A module + entry point + override constants: everything a compute pipeline depends on.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelSpec {
    pub module: Module,
    pub entry: &'static str,
    pub constants: Vec<(&'static str, f64)>,
}

impl KernelSpec {
    pub fn new(module: Module, entry: &'static str) -> Self {
        Self {
            module,
            entry,
            constants: Vec::new(),
        }
    }

    pub fn with(mut self, name: &'static str, value: f64) -> Self {
        self.constants.push((name, value));
        self
    }
}

impl fmt::Display for KernelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}::{}", self.module.name(), self.entry)?;
        for (k, v) in &self.constants {
            write!(f, ",{k}={v}")?;
        }
        Ok(())
    }
}

/// Every kernel configuration the engine's ops can request.
pub fn all_specs() -> Vec<KernelSpec> {
    let mut v = Vec::new();
    v.extend(crate::ops::matmul::specs());
    v.extend(crate::ops::attention::specs());
    v.extend(crate::ops::norm::specs());
    v.extend(crate::ops::elementwise::specs());
    v.extend(crate::ops::layout::specs());
    v.extend(crate::ops::embed::specs());
    v.extend(crate::ops::conv::specs());
    v.extend(crate::ops::sampling::specs());
    v
}
