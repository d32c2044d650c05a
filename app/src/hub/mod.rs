//! Models from the Hugging Face Hub: a `--model owner/name` that is neither a path nor in the
//! local Hugging Face cache is downloaded into that cache (hf-hub's blocking client) before it
//! opens, as `huggingface_hub.snapshot_download` would lay it out
//! (`models--owner--name/{blobs,snapshots/<commit>,refs/main}`).
//!
//! Honoured: `HF_ENDPOINT` (another hub, or a mirror), `HF_TOKEN` (else the token file in the
//! cache's parent folder), `HF_HUB_CACHE` / `HF_HOME` (where the cache is), and
//! `HF_HUB_OFFLINE=1` (local files only: an uncached id is an error, nothing is fetched). A file
//! whose download breaks off resumes where it stopped on the next run (hf-hub keeps the partial
//! blob and asks for the rest with a Range request).
//!
//! In the browser (`web`) the same files are fetched over HTTPS from the hub (which answers
//! with CORS headers) into memory, where the engine reads them ([`tessera_engine::io::files`]).

use std::path::Path;

use tessera_engine::io::{is_hub_id, resolve_model};

#[cfg(not(target_arch = "wasm32"))]
mod cache;
#[cfg(target_arch = "wasm32")]
pub mod web;

#[cfg(not(target_arch = "wasm32"))]
pub use cache::{download, fetch_if_missing};

/// The hub `HF_ENDPOINT` names, else huggingface.co.
pub fn endpoint() -> String {
    std::env::var("HF_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| "https://huggingface.co".to_owned())
        .trim_end_matches('/')
        .to_owned()
}

/// Whether `HF_HUB_OFFLINE` asks for local files only (`1`, `true`, `yes`, `on`).
pub fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

/// Whether `arg` names a hub model that is not in the local cache (so opening it needs a
/// download): of the form `owner/name`, no such path, and no cached snapshot.
pub fn needs_download(arg: &str) -> bool {
    is_hub_id(arg) && !Path::new(arg).exists() && resolve_model(arg).is_err()
}

/// What the engine's device can hold, for checking a model before its weights are fetched.
#[derive(Clone, Copy, Debug)]
pub struct DeviceLimits {
    /// `max_storage_buffer_binding_size`: a weight is bound whole.
    pub max_binding: u64,
    /// `shader-f16`: f16 weights stay f16 on the device (else they are widened to f32).
    pub f16: bool,
}

impl DeviceLimits {
    pub fn of(gpu: &tessera_engine::GpuContext) -> Self {
        Self {
            max_binding: gpu.limits().max_storage_buffer_binding_size,
            f16: gpu.has_f16(),
        }
    }
}

/// One file of the download.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteFile {
    pub name: String,
    pub size: u64,
}

/// The files of a repository a pipeline needs, from its file list: configs, tokenizers,
/// weights — safetensors where a folder has them (PyTorch, Flax, ONNX and TensorFlow copies of
/// the same weights are left), the full-precision file where a folder has precision variants
/// (`*.fp16.safetensors`), and no pictures or git metadata.
pub fn select_files(names: &[String]) -> Vec<String> {
    select_files_with(names, false)
}

/// [`select_files`], taking the `*.fp16.safetensors` variant instead of the full-precision
/// file where a folder has both when `half` (the browser: half the download and the memory,
/// which is what lets the published aMUSEd pipelines fit a page; the engine widens f16 weights
/// to f32 on a device without `shader-f16`).
pub fn select_files_with(names: &[String], half: bool) -> Vec<String> {
    let folder = |n: &str| n.rsplit_once('/').map_or("", |(d, _)| d).to_owned();
    let has_safetensors = |dir: &str| {
        names
            .iter()
            .any(|n| folder(n) == dir && n.ends_with(".safetensors"))
    };
    let is_variant = |n: &str| {
        let file = n.rsplit('/').next().unwrap_or(n);
        let parts: Vec<&str> = file.split('.').collect();
        parts.len() >= 3 && matches!(parts[parts.len() - 2], "fp16" | "bf16" | "fp32")
    };
    let has_plain = |n: &str| {
        names
            .iter()
            .any(|m| folder(m) == folder(n) && !is_variant(m) && m.ends_with(".safetensors"))
    };
    names
        .iter()
        .filter(|n| {
            let lower = n.to_ascii_lowercase();
            let ext = lower.rsplit('.').next().unwrap_or("");
            if lower.starts_with('.') || lower.contains("/.") {
                return false;
            }
            if matches!(
                ext,
                "png"
                    | "jpg"
                    | "jpeg"
                    | "gif"
                    | "webp"
                    | "onnx"
                    | "onnx_data"
                    | "h5"
                    | "tflite"
                    | "pb"
                    | "msgpack"
                    | "ot"
            ) {
                return false;
            }
            if matches!(ext, "bin" | "pt" | "pth" | "ckpt") && has_safetensors(&folder(n)) {
                return false;
            }
            if half && ext == "safetensors" {
                let fp16 = n.ends_with(".fp16.safetensors");
                let has_fp16 = |plain: &str| {
                    let stem = plain.trim_end_matches(".safetensors");
                    names
                        .iter()
                        .any(|m| *m == format!("{stem}.fp16.safetensors"))
                };
                return if fp16 {
                    true
                } else {
                    !is_variant(n) && !has_fp16(n) || is_variant(n) && !has_plain(n)
                };
            }
            !(ext == "safetensors" && is_variant(n) && has_plain(n))
        })
        .cloned()
        .collect()
}

/// What a download reports: files and bytes done of the total.
#[derive(Clone, Debug, Default)]
pub struct DownloadStatus {
    pub files_done: usize,
    pub files: usize,
    pub bytes_done: u64,
    pub bytes: u64,
}

impl DownloadStatus {
    /// "owner/name: 3/9 files, 120.5/640.0 MB".
    pub fn line(&self, id: &str) -> String {
        format!(
            "downloading {id}: {}/{} files, {:.1}/{:.1} MB",
            self.files_done,
            self.files,
            self.bytes_done as f64 / 1e6,
            self.bytes as f64 / 1e6
        )
    }
}

#[cfg(test)]
mod tests {
    use super::{select_files, select_files_with};

    #[test]
    fn picks_safetensors_full_precision_and_configs() {
        let names: Vec<String> = [
            ".gitattributes",
            "README.md",
            "model_index.json",
            "scheduler/scheduler_config.json",
            "text_encoder/config.json",
            "text_encoder/model.safetensors",
            "text_encoder/model.fp16.safetensors",
            "text_encoder/pytorch_model.bin",
            "text_encoder/flax_model.msgpack",
            "tokenizer/vocab.json",
            "tokenizer/merges.txt",
            "transformer/config.json",
            "transformer/diffusion_pytorch_model.fp16.safetensors",
            "vqvae/diffusion_pytorch_model.bin",
            "vqvae/config.json",
            "assets/sample.png",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            select_files(&names),
            [
                "README.md",
                "model_index.json",
                "scheduler/scheduler_config.json",
                "text_encoder/config.json",
                "text_encoder/model.safetensors",
                "tokenizer/vocab.json",
                "tokenizer/merges.txt",
                "transformer/config.json",
                // Only a variant: it is the weights.
                "transformer/diffusion_pytorch_model.fp16.safetensors",
                // No safetensors beside it: the PyTorch file is the weights.
                "vqvae/diffusion_pytorch_model.bin",
                "vqvae/config.json",
            ]
        );
    }

    #[test]
    fn the_browser_takes_half_precision_variants_where_there_are_some() {
        let names: Vec<String> = [
            "model_index.json",
            "text_encoder/model.safetensors",
            "text_encoder/model.fp16.safetensors",
            "transformer/diffusion_pytorch_model.safetensors",
            "transformer/diffusion_pytorch_model.fp16.safetensors",
            "vqvae/diffusion_pytorch_model.safetensors",
            "vqvae/diffusion_pytorch_model.bf16.safetensors",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            select_files_with(&names, true),
            [
                "model_index.json",
                "text_encoder/model.fp16.safetensors",
                "transformer/diffusion_pytorch_model.fp16.safetensors",
                // No fp16 variant: the full-precision file (the engine reads no bf16 variant
                // in its place).
                "vqvae/diffusion_pytorch_model.safetensors",
            ]
        );
        assert_eq!(
            select_files_with(&names, false),
            [
                "model_index.json",
                "text_encoder/model.safetensors",
                "transformer/diffusion_pytorch_model.safetensors",
                "vqvae/diffusion_pytorch_model.safetensors",
            ]
        );
    }
}
