//! The desktop's hub client: hf-hub's blocking client downloading into the local Hugging Face
//! cache (see the parent module for what it honours).

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use hf_hub::api::Progress;
use hf_hub::api::sync::ApiBuilder;
use tessera_engine::io::{hub_cache_dir, resolve_model};

use super::{DownloadStatus, RemoteFile, endpoint, needs_download, offline, select_files};

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
