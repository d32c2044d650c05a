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
/// f32 fragments of [`size`](Self::size) and subgroups of [`subgroup`](Self::subgroup)
/// invocations, chosen so that a 128-invocation workgroup holds one 2×2 block of fragments per
/// subgroup over a 64×64 tile. The kernels name their fragment types `FragA`, `FragB`, `FragC`
/// and read `FR` (the fragment size) and `SG` (the subgroup width) from a prelude made by
/// [`CoopShape::prelude`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CoopShape {
    /// 16×16×16 fragments, 32-wide subgroups (NVIDIA through Vulkan).
    M16,
    /// 8×8×8 fragments, 8-wide subgroups (Mesa's lavapipe in Mesa 26: lets the tensor-core
    /// kernels be tested on a CPU).
    M8,
}

impl CoopShape {
    pub const ALL: [CoopShape; 2] = [CoopShape::M16, CoopShape::M8];

    /// Fragment size (M = N = K).
    pub fn size(self) -> u32 {
        match self {
            CoopShape::M16 => 16,
            CoopShape::M8 => 8,
        }
    }

    /// The subgroup width the kernels' mapping needs: 128 invocations = (64 / 2·size)²
    /// subgroups.
    pub fn subgroup(self) -> u32 {
        self.size() * self.size() / 8
    }

    /// The head of a tensor-core module: the `f16` and cooperative-matrix enable directives,
    /// then `FR`, `SG` and the fragment aliases.
    pub fn prelude(self) -> String {
        let f = self.size();
        format!(
            "enable f16;\nenable wgpu_cooperative_matrix;\n\
             const FR: u32 = {f}u;\nconst SG: u32 = {sg}u;\n\
             alias FragA = coop_mat{f}x{f}<f16, A>;\n\
             alias FragB = coop_mat{f}x{f}<f16, B>;\n\
             alias FragC = coop_mat{f}x{f}<f32, C>;\n",
            sg = self.subgroup()
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
    pub const ALL: [Module; 39] = {
        use CoopShape::{M8, M16};
        use WeightFormat::{F16, F16Packed, F32};
        [
            Module::Matmul(F32),
            Module::Matmul(F16),
            Module::Matmul(F16Packed),
            Module::MatmulTile64(F32),
            Module::MatmulTile64(F16),
            Module::MatmulTile64(F16Packed),
            Module::MatmulCoop16(F32, M16),
            Module::MatmulCoop16(F16, M16),
            Module::MatmulCoop16(F16Packed, M16),
            Module::MatmulCoop16(F32, M8),
            Module::MatmulCoop16(F16, M8),
            Module::MatmulCoop16(F16Packed, M8),
            Module::MatmulCoop64(F32, M16),
            Module::MatmulCoop64(F16, M16),
            Module::MatmulCoop64(F16Packed, M16),
            Module::MatmulCoop64(F32, M8),
            Module::MatmulCoop64(F16, M8),
            Module::MatmulCoop64(F16Packed, M8),
            Module::MatmulRows(F32),
            Module::MatmulRows(F16),
            Module::MatmulRows(F16Packed),
            Module::MatmulGemv(F32),
            Module::MatmulGemv(F16),
            Module::MatmulGemv(F16Packed),
            Module::Attention,
            Module::AttentionFlash,
            Module::AttentionRows,
            Module::AttentionCoop {
                shape: M16,
                wide: false,
            },
            Module::AttentionCoop {
                shape: M16,
                wide: true,
            },
            Module::AttentionCoop {
                shape: M8,
                wide: false,
            },
            Module::AttentionCoop {
                shape: M8,
                wide: true,
            },
            Module::Norm,
            Module::Elementwise,
            Module::Layout,
            Module::Embed,
            Module::Conv2d,
            Module::Conv2dCoop(M16),
            Module::Conv2dCoop(M8),
            Module::Sampling,
        ]
    };

    pub fn name(self) -> &'static str {
        match self {
            Module::Matmul(WeightFormat::F32) => "matmul_f32",
            Module::Matmul(WeightFormat::F16) => "matmul_f16",
            Module::Matmul(WeightFormat::F16Packed) => "matmul_f16_packed",
            Module::MatmulTile64(WeightFormat::F32) => "matmul_tile64_f32",
            Module::MatmulTile64(WeightFormat::F16) => "matmul_tile64_f16",
            Module::MatmulTile64(WeightFormat::F16Packed) => "matmul_tile64_f16_packed",
            Module::MatmulCoop16(w, CoopShape::M16) => match w {
                WeightFormat::F32 => "matmul_coop16_f32",
                WeightFormat::F16 => "matmul_coop16_f16",
                WeightFormat::F16Packed => "matmul_coop16_f16_packed",
            },
            Module::MatmulCoop16(w, CoopShape::M8) => match w {
                WeightFormat::F32 => "matmul_coop16_f32_m8",
                WeightFormat::F16 => "matmul_coop16_f16_m8",
                WeightFormat::F16Packed => "matmul_coop16_f16_packed_m8",
            },
            Module::MatmulCoop64(w, CoopShape::M16) => match w {
                WeightFormat::F32 => "matmul_coop64_f32",
                WeightFormat::F16 => "matmul_coop64_f16",
                WeightFormat::F16Packed => "matmul_coop64_f16_packed",
            },
            Module::MatmulCoop64(w, CoopShape::M8) => match w {
                WeightFormat::F32 => "matmul_coop64_f32_m8",
                WeightFormat::F16 => "matmul_coop64_f16_m8",
                WeightFormat::F16Packed => "matmul_coop64_f16_packed_m8",
            },
            Module::MatmulRows(WeightFormat::F32) => "matmul_rows_f32",
            Module::MatmulRows(WeightFormat::F16) => "matmul_rows_f16",
            Module::MatmulRows(WeightFormat::F16Packed) => "matmul_rows_f16_packed",
            Module::MatmulGemv(WeightFormat::F32) => "matmul_gemv_f32",
            Module::MatmulGemv(WeightFormat::F16) => "matmul_gemv_f16",
            Module::MatmulGemv(WeightFormat::F16Packed) => "matmul_gemv_f16_packed",
            Module::Attention => "attention",
            Module::AttentionFlash => "attention_flash",
            Module::AttentionRows => "attention_rows",
            Module::AttentionCoop { shape, wide } => match (shape, wide) {
                (CoopShape::M16, false) => "attention_coop",
                (CoopShape::M16, true) => "attention_coop_wide",
                (CoopShape::M8, false) => "attention_coop_m8",
                (CoopShape::M8, true) => "attention_coop_wide_m8",
            },
            Module::Norm => "norm",
            Module::Elementwise => "elementwise",
            Module::Layout => "layout",
            Module::Embed => "embed",
            Module::Conv2d => "conv2d",
            Module::Conv2dCoop(CoopShape::M16) => "conv2d_coop",
            Module::Conv2dCoop(CoopShape::M8) => "conv2d_coop_m8",
            Module::Sampling => "sampling",
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
            Module::MatmulCoop64(w, shape) => {
                let prelude = match w {
                    WeightFormat::F32 => WEIGHTS4_F32,
                    WeightFormat::F16 => WEIGHTS4_F16,
                    WeightFormat::F16Packed => WEIGHTS4_F16_PACKED,
                }
                .replace("enable f16;", "");
                format!(
                    "{coop}\n{prelude}\n{ACTIVATION}\n{MATMUL_IO}\n{MATMUL_COOP64}\n\
                     {MATMUL_EPILOGUE}",
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
