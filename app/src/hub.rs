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

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use hf_hub::api::Progress;
use hf_hub::api::sync::ApiBuilder;
use tessera_engine::io::{hub_cache_dir, is_hub_id, resolve_model};

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

/// hf-hub's per-file progress, added into the shared status.
#[derive(Clone)]
struct Shared {
    status: Arc<Mutex<DownloadStatus>>,
    bar: Option<indicatif::ProgressBar>,
}

impl Progress for Shared {
    fn init(&mut self, _size: usize, _filename: &str) {}

    fn update(&mut self, size: usize) {
        if let Ok(mut s) = self.status.lock() {
            s.bytes_done += size as u64;
            if let Some(bar) = &self.bar {
                bar.set_position(s.bytes_done);
            }
        }
    }

    fn finish(&mut self) {}
}

/// Downloads hub model `id` into the cache: lists its files, picks what a pipeline needs
/// ([`select_files`]), says on stderr what it will fetch (count and size) when `announce`,
/// then fetches each file, reporting into `status` (and a progress bar on stderr with
/// `announce`). Files already in the cache are not fetched again.
///
/// # Errors
/// `HF_HUB_OFFLINE` set; the hub unreachable, the id unknown or private without a token; a
/// write to the cache failing.
pub fn download(id: &str, status: &Arc<Mutex<DownloadStatus>>, announce: bool) -> Result<()> {
    let cache = hub_cache_dir().context("no Hugging Face cache folder (set HF_HOME)")?;
    if offline() {
        bail!(
            "{id} is not in the Hugging Face cache ({}) and HF_HUB_OFFLINE is set: nothing is \
             downloaded",
            cache.display()
        );
    }
    fetch(id, &cache, status, announce).with_context(|| {
        format!(
            "{id} is not in the Hugging Face cache ({}) and downloading it from {} failed",
            cache.display(),
            endpoint()
        )
    })
}

fn fetch(
    id: &str,
    cache: &Path,
    status: &Arc<Mutex<DownloadStatus>>,
    announce: bool,
) -> Result<()> {
    let token = std::env::var("HF_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .or_else(|| hf_hub::Cache::new(cache.to_path_buf()).token());
    let api = ApiBuilder::new()
        .with_endpoint(endpoint())
        .with_cache_dir(cache.to_path_buf())
        .with_token(token)
        .with_progress(false)
        .build()
        .context("starting the hub client")?;
    let repo = api.model(id.to_owned());
    let info = repo.info().context("listing its files")?;
    let names: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    let wanted = select_files(&names);
    if wanted.is_empty() {
        bail!("the repository holds no model files");
    }
    let mut files = Vec::new();
    for name in wanted {
        let meta = api
            .metadata(&repo.url(&name))
            .with_context(|| format!("size of {name}"))?;
        files.push(RemoteFile {
            name,
            size: meta.size() as u64,
        });
    }
    let total: u64 = files.iter().map(|f| f.size).sum();
    if let Ok(mut s) = status.lock() {
        *s = DownloadStatus {
            files: files.len(),
            bytes: total,
            ..DownloadStatus::default()
        };
    }
    let bar = announce.then(|| {
        eprintln!(
            "{id} is not in the Hugging Face cache: downloading {} files, {:.1} MB, from {} into {}",
            files.len(),
            total as f64 / 1e6,
            endpoint(),
            cache.display()
        );
        let bar = indicatif::ProgressBar::new(total);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{bytes}/{total_bytes} [{wide_bar}] {bytes_per_sec} {msg}",
        ) {
            bar.set_style(style);
        }
        bar
    });
    let cached = hf_hub::Cache::new(cache.to_path_buf()).model(id.to_owned());
    for f in &files {
        if let Some(bar) = &bar {
            bar.set_message(f.name.clone());
        }
        // A file an earlier, interrupted run finished is not fetched again.
        if cached.get(&f.name).is_none() {
            let progress = Shared {
                status: status.clone(),
                bar: bar.clone(),
            };
            repo.download_with_progress(&f.name, progress)
                .with_context(|| format!("fetching {}", f.name))?;
        } else if let Ok(mut s) = status.lock() {
            s.bytes_done += f.size;
        }
        if let Ok(mut s) = status.lock() {
            s.files_done += 1;
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    resolve_model(id)
        .with_context(|| format!("{id}: downloaded, but the cache holds no snapshot"))?;
    Ok(())
}

/// For the command line: downloads `arg` first when it names an uncached hub model.
pub fn fetch_if_missing(arg: &str) -> Result<()> {
    if needs_download(arg) {
        download(arg, &Arc::new(Mutex::new(DownloadStatus::default())), true)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::select_files;

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
}
