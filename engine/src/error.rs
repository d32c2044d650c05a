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

    #[error("{op}: {message}")]
    Shape { op: &'static str, message: String },

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

    #[error("reading back tensor {name:?} from the GPU failed: {reason}")]
    Readback { name: String, reason: String },
}

impl Error {
    pub(crate) fn shape(op: &'static str, message: impl Into<String>) -> Self {
        Error::Shape {
            op,
            message: message.into(),
        }
    }
}
