//! GPU runtime: adapter and device choice ([`GpuContext`]), tensors ([`Tensor`]) backed by a
//! reusing [`pool::BufferPool`], a pipeline cache keyed by shader + override constants, and the
//! [`Recorder`] that records many dispatches into one command encoder.

mod context;
mod pipeline;
pub mod pool;
mod probe;
pub mod profile;
mod recorder;
mod tensor;
mod tune;

pub use context::{
    COOPERATIVE_FEATURES, GpuContext, KernelFamily, WANTED_FEATURES, WorkCounts, device_features,
    is_software_adapter,
};
pub use pipeline::{DiskPipelineCache, Pipelines, ShaderChecks, user_cache_dir};
pub use profile::{OpTime, Profile, ProfileClock};
pub use recorder::{Binding, Recorder, linear_workgroups};
pub(crate) use tensor::byte_len;
pub use tensor::{DType, Readback, Tensor};
pub use tune::{TuneStats, Tuner, time_calls};
