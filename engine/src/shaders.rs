//! The WGSL sources (from `shaders/` at the repository root, embedded at build time) and the
//! kernel configurations the engine can request.
//!
//! A [`KernelSpec`] names a module, an entry point and the override constants; it is the
//! pipeline-cache key. [`all_specs`] lists every configuration any op can ask for, so the naga
//! translation test covers exactly what the engine runs.

use std::fmt;

const ACTIVATION: &str = include_str!("../../shaders/activation.wgsl");
const MATMUL: &str = include_str!("../../shaders/matmul.wgsl");
const MATMUL_TILE64: &str = include_str!("../../shaders/matmul_tile64.wgsl");
const MATMUL_COOP16: &str = include_str!("../../shaders/matmul_coop16.wgsl");
const MATMUL_COOP64: &str = include_str!("../../shaders/matmul_coop64.wgsl");
const MATMUL_GEMV: &str = include_str!("../../shaders/matmul_gemv.wgsl");
const TILE8X8: &str = include_str!("../../shaders/tile8x8.wgsl");
const MATMUL_PARAMS: &str = include_str!("../../shaders/matmul_params.wgsl");
const MATMUL_IO: &str = include_str!("../../shaders/matmul_io.wgsl");
const MATMUL_EPILOGUE: &str = include_str!("../../shaders/matmul_epilogue.wgsl");
const WEIGHTS_F32: &str = include_str!("../../shaders/weights_f32.wgsl");
const WEIGHTS_F16: &str = include_str!("../../shaders/weights_f16.wgsl");
const WEIGHTS_F16_PACKED: &str = include_str!("../../shaders/weights_f16_packed.wgsl");
const MATMUL_ROWS: &str = include_str!("../../shaders/matmul_rows.wgsl");
const WEIGHTS4_F32: &str = include_str!("../../shaders/weights4_f32.wgsl");
const WEIGHTS4_F16: &str = include_str!("../../shaders/weights4_f16.wgsl");
const WEIGHTS4_F16_PACKED: &str = include_str!("../../shaders/weights4_f16_packed.wgsl");
const ATTENTION_PARAMS: &str = include_str!("../../shaders/attention_params.wgsl");
const ATTENTION: &str = include_str!("../../shaders/attention.wgsl");
const ATTENTION_FLASH: &str = include_str!("../../shaders/attention_flash.wgsl");
const ATTENTION_ROWS: &str = include_str!("../../shaders/attention_rows.wgsl");
const NORM: &str = include_str!("../../shaders/norm.wgsl");
const ELEMENTWISE: &str = include_str!("../../shaders/elementwise.wgsl");
const LAYOUT: &str = include_str!("../../shaders/layout.wgsl");
const EMBED: &str = include_str!("../../shaders/embed.wgsl");
const CONV2D: &str = include_str!("../../shaders/conv2d.wgsl");
const CONV2D_PARAMS: &str = include_str!("../../shaders/conv2d_params.wgsl");
const CONV2D_COOP: &str = include_str!("../../shaders/conv2d_coop.wgsl");
const SAMPLING: &str = include_str!("../../shaders/sampling.wgsl");

/// How matmul reads its B operand (the weights).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WeightFormat {
    F32,
    /// `enable f16;` with `array<f16>` (needs `Features::SHADER_F16`).
    F16,
    /// f16 pairs packed in `u32`, widened with `unpack2x16float` (works everywhere).
    F16Packed,
}

/// One WGSL module (a kernel family; matmul comes in one module per weight format).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Module {
    Matmul(WeightFormat),
    /// 64×64 tiles with 8×8 outputs per invocation, for large products on GPUs
    /// (`matmul_tile64.wgsl`).
    MatmulTile64(WeightFormat),
    /// 16×16×16 f16 cooperative matrices (tensor cores), f32 accumulation
    /// (`matmul_coop16.wgsl`); needs `EXPERIMENTAL_COOPERATIVE_MATRIX` and `SHADER_F16`.
    MatmulCoop16(WeightFormat),
    /// The same cooperative matrices on 64×64 workgroup tiles of four subgroups, vec4 loads
    /// staged through registers (`matmul_coop64.wgsl`); gated units too.
    MatmulCoop64(WeightFormat),
    /// The register-blocked matmul for CPU adapters (`matmul_rows.wgsl`).
    MatmulRows(WeightFormat),
    /// Products of at most 8 rows, split along B's rows and K (`matmul_gemv.wgsl`).
    MatmulGemv(WeightFormat),
    Attention,
    /// Flash attention for GPUs (`attention_flash.wgsl`): four invocations per query.
    AttentionFlash,
    /// Attention for CPU adapters (`attention_rows.wgsl`).
    AttentionRows,
    Norm,
    Elementwise,
    Layout,
    Embed,
    Conv2d,
    /// conv2d.wgsl with the implicit GEMM on cooperative matrices (`conv2d_coop.wgsl`); needs
    /// `EXPERIMENTAL_COOPERATIVE_MATRIX` and `SHADER_F16`.
    Conv2dCoop,
    Sampling,
}

impl Module {
    pub const ALL: [Module; 28] = [
        Module::Matmul(WeightFormat::F32),
        Module::Matmul(WeightFormat::F16),
        Module::Matmul(WeightFormat::F16Packed),
        Module::MatmulTile64(WeightFormat::F32),
        Module::MatmulTile64(WeightFormat::F16),
        Module::MatmulTile64(WeightFormat::F16Packed),
        Module::MatmulCoop16(WeightFormat::F32),
        Module::MatmulCoop16(WeightFormat::F16),
        Module::MatmulCoop16(WeightFormat::F16Packed),
        Module::MatmulCoop64(WeightFormat::F32),
        Module::MatmulCoop64(WeightFormat::F16),
        Module::MatmulCoop64(WeightFormat::F16Packed),
        Module::MatmulRows(WeightFormat::F32),
        Module::MatmulRows(WeightFormat::F16),
        Module::MatmulRows(WeightFormat::F16Packed),
        Module::MatmulGemv(WeightFormat::F32),
        Module::MatmulGemv(WeightFormat::F16),
        Module::MatmulGemv(WeightFormat::F16Packed),
        Module::Attention,
        Module::AttentionFlash,
        Module::AttentionRows,
        Module::Norm,
        Module::Elementwise,
        Module::Layout,
        Module::Embed,
        Module::Conv2d,
        Module::Conv2dCoop,
        Module::Sampling,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Module::Matmul(WeightFormat::F32) => "matmul_f32",
            Module::Matmul(WeightFormat::F16) => "matmul_f16",
            Module::Matmul(WeightFormat::F16Packed) => "matmul_f16_packed",
            Module::MatmulTile64(WeightFormat::F32) => "matmul_tile64_f32",
            Module::MatmulTile64(WeightFormat::F16) => "matmul_tile64_f16",
            Module::MatmulTile64(WeightFormat::F16Packed) => "matmul_tile64_f16_packed",
            Module::MatmulCoop16(WeightFormat::F32) => "matmul_coop16_f32",
            Module::MatmulCoop16(WeightFormat::F16) => "matmul_coop16_f16",
            Module::MatmulCoop16(WeightFormat::F16Packed) => "matmul_coop16_f16_packed",
            Module::MatmulCoop64(WeightFormat::F32) => "matmul_coop64_f32",
            Module::MatmulCoop64(WeightFormat::F16) => "matmul_coop64_f16",
            Module::MatmulCoop64(WeightFormat::F16Packed) => "matmul_coop64_f16_packed",
            Module::MatmulRows(WeightFormat::F32) => "matmul_rows_f32",
            Module::MatmulRows(WeightFormat::F16) => "matmul_rows_f16",
            Module::MatmulRows(WeightFormat::F16Packed) => "matmul_rows_f16_packed",
            Module::MatmulGemv(WeightFormat::F32) => "matmul_gemv_f32",
            Module::MatmulGemv(WeightFormat::F16) => "matmul_gemv_f16",
            Module::MatmulGemv(WeightFormat::F16Packed) => "matmul_gemv_f16_packed",
            Module::Attention => "attention",
            Module::AttentionFlash => "attention_flash",
            Module::AttentionRows => "attention_rows",
            Module::Norm => "norm",
            Module::Elementwise => "elementwise",
            Module::Layout => "layout",
            Module::Embed => "embed",
            Module::Conv2d => "conv2d",
            Module::Conv2dCoop => "conv2d_coop",
            Module::Sampling => "sampling",
        }
    }

    /// The complete WGSL text of the module.
    pub fn source(self) -> String {
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
                    "{prelude}\n{ACTIVATION}\n{MATMUL_IO}\n{MATMUL_PARAMS}\n{TILE8X8}\n{kernel}\n{MATMUL_EPILOGUE}"
                )
            }
            Module::MatmulCoop16(w) => {
                // Enable directives come before every declaration: the f16 prelude's own
                // `enable f16;` is dropped for the one here.
                let prelude = match w {
                    WeightFormat::F32 => WEIGHTS_F32,
                    WeightFormat::F16 => WEIGHTS_F16,
                    WeightFormat::F16Packed => WEIGHTS_F16_PACKED,
                }
                .replace("enable f16;", "");
                format!(
                    "enable f16;\nenable wgpu_cooperative_matrix;\n{prelude}\n{ACTIVATION}\n\
                     {MATMUL_IO}\n{MATMUL_PARAMS}\n{MATMUL_COOP16}\n{MATMUL_EPILOGUE}"
                )
            }
            Module::MatmulCoop64(w) => {
                let prelude = match w {
                    WeightFormat::F32 => WEIGHTS4_F32,
                    WeightFormat::F16 => WEIGHTS4_F16,
                    WeightFormat::F16Packed => WEIGHTS4_F16_PACKED,
                }
                .replace("enable f16;", "");
                format!(
                    "enable f16;\nenable wgpu_cooperative_matrix;\n{prelude}\n{ACTIVATION}\n\
                     {MATMUL_IO}\n{MATMUL_COOP64}\n{MATMUL_EPILOGUE}"
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
            Module::Attention => format!("{ATTENTION_PARAMS}\n{ATTENTION}"),
            Module::AttentionFlash => format!("{ATTENTION_PARAMS}\n{ATTENTION_FLASH}"),
            Module::AttentionRows => format!("{ATTENTION_PARAMS}\n{ATTENTION_ROWS}"),
            Module::Norm => NORM.to_owned(),
            Module::Elementwise => format!("{ACTIVATION}\n{ELEMENTWISE}"),
            Module::Layout => LAYOUT.to_owned(),
            Module::Embed => EMBED.to_owned(),
            Module::Conv2d => format!("{TILE8X8}\n{CONV2D_PARAMS}\n{CONV2D}"),
            Module::Conv2dCoop => format!(
                "enable f16;\nenable wgpu_cooperative_matrix;\n{CONV2D_PARAMS}\n{CONV2D_COOP}"
            ),
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
                | Module::MatmulCoop16(_)
                | Module::MatmulCoop64(_)
                | Module::Conv2dCoop
        )
    }

    /// Whether the module needs `Features::EXPERIMENTAL_COOPERATIVE_MATRIX` (Vulkan and Metal
    /// only).
    pub fn needs_cooperative_matrix(self) -> bool {
        matches!(
            self,
            Module::MatmulCoop16(_) | Module::MatmulCoop64(_) | Module::Conv2dCoop
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
