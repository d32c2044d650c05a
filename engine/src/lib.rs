//! tessera-engine: runs masked generative image transformers (MaskGIT, aMUSEd, Paella) on any GPU
//! through wgpu and WGSL compute shaders.
//!
//! Layers: [`gpu`] (device, tensors, buffer pool, pipeline cache, command recording) and [`ops`]
//! (one function per kernel family, each checking shapes and computing its dispatch).

pub mod bench;
pub mod error;
pub mod gpu;
pub mod io;
pub mod models;
pub mod ops;
pub mod pipeline;
pub mod sampling;
pub mod shaders;

pub use error::{Error, Result};
pub use gpu::{DType, GpuContext, Readback, Recorder, Tensor};
