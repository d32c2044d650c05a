//! tessera-engine: runs masked generative image transformers (MaskGIT, aMUSEd, Paella) on any GPU
//! through wgpu and WGSL compute shaders.
//!
//! Layers: [`gpu`] (device, tensors, buffer pool, pipeline cache, command recording) and [`ops`]
//! (one function per kernel family, each checking shapes and computing its dispatch).

// On the web wgpu's handles are not Send: the engine's shared buffers live on the page's one
// thread there.
#![cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]

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
