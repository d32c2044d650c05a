//! Reading models from disk: safetensors checkpoints (f32/f16/bf16, sharded), diffusers model
//! folders and the Hugging Face cache, typed configs.

pub mod checkpoint;
pub mod files;
pub mod flax;
pub mod folder;
pub mod loader;

pub use checkpoint::Checkpoint;
pub use folder::{ModelFolder, hub_cache_dir, is_hub_id, resolve_dir, resolve_model};
pub use loader::Loader;

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// Parses a JSON config file into `T`, naming the file (and key, when serde knows it) on error.
pub fn read_config<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = files::read_to_string(path).map_err(|e| Error::file(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::file(path, format!("invalid config: {e}")))
}
