//! Engine error type. Every variant names the thing (tensor, file, limit) involved, so a caller can
//! print it as one line.

use thiserror::Error;

/// Result alias used across the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum Error {
    #[error(
        "no GPU adapter found ({backends}); install a Vulkan, Metal or DX12 driver \
         (on Debian/Ubuntu: `apt-get install mesa-vulkan-drivers` gives the software Vulkan adapter)"
    )]
    NoAdapter { backends: String },

    #[error(
        "WGPU_BACKEND={value:?} names no backend; use vulkan, metal, dx12 or gl (several: \
         vulkan,gl), or unset it"
    )]
    UnknownBackend { value: String },

    #[error("WGPU_ADAPTER_NAME={wanted:?} matches no adapter; available: {available}")]
    AdapterNotFound { wanted: String, available: String },

    #[error("could not open the GPU device on adapter {adapter:?}: {reason}")]
    RequestDevice { adapter: String, reason: String },

    #[error(
        "tensor {name:?} needs {bytes} bytes in one binding, over this device's \
         {limit_name} of {limit} bytes"
    )]
    OverLimit {
        name: String,
        bytes: u64,
        limit_name: &'static str,
        limit: u64,
    },

    /// Tensors or token grids whose shapes do not fit the operation or the model.
    #[error("{op}: {message}")]
    Shape { op: &'static str, message: String },

    /// A caller's value outside what the operation takes (a count, strength, temperature,
    /// fraction or mask), with the rule it breaks. Request options the opened model does not
    /// take are [`Error::Request`].
    #[error("{op}: {message}")]
    InvalidArgument { op: &'static str, message: String },

    #[error("{op}: tensor {name:?} has dtype {got}, expected {expected}")]
    DType {
        op: &'static str,
        name: String,
        got: crate::gpu::DType,
        expected: String,
    },

    #[error("{op}: this device lacks the {feature} feature")]
    MissingFeature {
        op: &'static str,
        feature: &'static str,
    },

    #[error(
        "the GPU device was lost ({reason}); nothing more runs on it: run again (a new device is \
         opened)"
    )]
    DeviceLost { reason: String },

    #[error(
        "out of GPU memory allocating {bytes} bytes for {name:?} with {live} bytes in use \
         ({reason}): use a smaller batch or image, or close other programs using the GPU"
    )]
    OutOfMemory {
        name: String,
        bytes: u64,
        live: u64,
        reason: String,
    },

    /// A request option the opened model does not take (or lacks), named as the CLI spells
    /// it, with the rule.
    #[error("{option} {message}")]
    Request {
        option: crate::pipeline::RequestOption,
        message: String,
    },

    #[error("cancelled after step {step} of {steps}")]
    Cancelled { step: usize, steps: usize },

    /// A kernel the driver refused while it was being timed for [`Tuner`](crate::gpu::Tuner)
    /// (validation, out of memory, internal error): that candidate is skipped.
    #[error("kernel tuning: the driver refused a candidate kernel: {reason}")]
    Tuning { reason: String },

    #[error("reading back tensor {name:?} from the GPU failed: {reason}")]
    Readback { name: String, reason: String },

    #[error("{path}: {message}")]
    File { path: String, message: String },

    #[error("{file}: tensor {name:?} is missing")]
    MissingTensor { name: String, file: String },

    #[error("{file}: tensor {name:?} has shape {got:?}, expected {expected:?}")]
    TensorShape {
        name: String,
        file: String,
        got: Vec<usize>,
        expected: Vec<usize>,
    },

    #[error("{file}: tensor {name:?} has dtype {dtype}, expected F32, F16 or BF16")]
    TensorDType {
        name: String,
        file: String,
        dtype: String,
    },

    #[error("{file}: config key {key:?}: {message}")]
    Config {
        file: String,
        key: String,
        message: String,
    },

    #[error("tokenizer {path}: {message}")]
    Tokenizer { path: String, message: String },
}

impl Error {
    pub(crate) fn file(path: impl AsRef<std::path::Path>, message: impl std::fmt::Display) -> Self {
        Error::File {
            path: path.as_ref().display().to_string(),
            message: message.to_string(),
        }
    }

    pub(crate) fn config(
        file: impl AsRef<std::path::Path>,
        key: &str,
        message: impl Into<String>,
    ) -> Self {
        Error::Config {
            file: file.as_ref().display().to_string(),
            key: key.to_owned(),
            message: message.into(),
        }
    }

    pub(crate) fn shape(op: &'static str, message: impl Into<String>) -> Self {
        Error::Shape {
            op,
            message: message.into(),
        }
    }

    pub(crate) fn invalid(op: &'static str, message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            op,
            message: message.into(),
        }
    }
}
