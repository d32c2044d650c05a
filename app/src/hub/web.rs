//! The browser's model files: fetched over HTTP(S) into memory and mounted where the engine
//! reads them ([`tessera_engine::io::files::mount`]).
//!
//! - The default model: `models/emoji/` beside the page (its file list in `files.json`), so
//!   the browser caches it like any other asset.
//! - A hub id `owner/name`: its file list from the hub's API (`/api/models/{id}?blobs=true`),
//!   the files a pipeline needs ([`super::select_files`]) from `/{id}/resolve/main/{file}`.
//!   The hub answers with CORS headers. The page's `?hub=URL` names another hub or a mirror,
//!   as `HF_ENDPOINT` does natively.
//! - Files dropped on the page: mounted as they come ([`mount_dropped`]).
//!
//! What a page cannot hold is refused before any weights are downloaded, with the reason:
//! more than [`MEMORY_BUDGET`] of files (a page's WebAssembly memory is at most 4 GiB, and the
//! files stay in it while the model loads), or a tensor larger than the device's
//! `max_storage_buffer_binding_size` (WebGPU's default is 128 MiB; the app asks for all the
//! adapter grants), read from each safetensors header with a range request.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow, bail};
use tessera_engine::io::files::{self, MemoryFiles};
use tessera_engine::io::is_hub_id;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use super::{DeviceLimits, DownloadStatus, select_files_with};

/// Where the default model's files are served, relative to the page.
const DEFAULT_URL: &str = "models/emoji";

/// The most bytes of model files a page fetches: half the 4 GiB a WebAssembly page can address,
/// leaving room for the copies made while loading.
pub const MEMORY_BUDGET: u64 = 2 << 30;

/// Where dropped folders are mounted: `/dropped/<folder name>`.
pub const DROPPED_ROOT: &str = "/dropped";

/// Where model `arg`'s files are mounted: `/models/emoji` for the default model, `/hub/<id>`
/// for a hub id, the path itself for a dropped folder.
pub fn mount_root(arg: Option<&str>) -> PathBuf {
    match arg {
        None => PathBuf::from("/").join(DEFAULT_URL),
        Some(a) if a.starts_with(DROPPED_ROOT) => PathBuf::from(a),
        Some(id) => Path::new("/hub").join(id),
    }
}

/// Whether model `arg`'s files are in memory.
pub fn is_fetched(arg: Option<&str>) -> bool {
    files::is_mounted(&mount_root(arg))
}

/// The hub the page's `?hub=` names, else huggingface.co.
pub fn endpoint() -> String {
    crate::gui::page::param("hub")
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "https://huggingface.co".to_owned())
        .trim_end_matches('/')
        .to_owned()
}

/// Fetches model `arg`'s files (None: the default model beside the page) into memory,
/// reporting files and bytes into `status`, and mounts them at [`mount_root`]. A hub model is
/// first checked against what the page can hold: [`MEMORY_BUDGET`] in all, and each tensor
/// within the binding limit of `device` (see [`check_limits`]).
///
/// # Errors
/// A dropped folder that is gone, a name that is not a hub id, the hub or the page's server
/// unreachable, an unknown or private id, a repository without model files, a model over the
/// page's limits.
pub async fn fetch(
    arg: Option<&str>,
    status: &Arc<Mutex<DownloadStatus>>,
    device: DeviceLimits,
) -> Result<()> {
    let (base, mut wanted) = match arg {
        None => {
            let list = get(&format!("{DEFAULT_URL}/files.json"), |_| {}).await?;
            let names: Vec<String> = serde_json::from_slice(&list)
                .with_context(|| format!("{DEFAULT_URL}/files.json"))?;
            (
                DEFAULT_URL.to_owned(),
                names.into_iter().map(|n| (n, 0)).collect(),
            )
        }
        Some(a) if a.starts_with(DROPPED_ROOT) => {
            bail!("{a}: the dropped files are gone; drop the folder again")
        }
        Some(id) if !is_hub_id(id) => bail!(
            "{id:?}: in the browser a model is a hub id (owner/name), or a folder dropped on \
             the page"
        ),
        Some(id) => {
            let (base, files) = list_hub(id).await?;
            check_limits(id, &base, &files, device).await?;
            (base, files)
        }
    };
    wanted.sort();
    let total: u64 = wanted.iter().map(|(_, s)| s).sum();
    if let Ok(mut s) = status.lock() {
        *s = DownloadStatus {
            files: wanted.len(),
            bytes: total,
            ..DownloadStatus::default()
        };
    }
    let mut mem = MemoryFiles::new();
    for (name, _) in &wanted {
        let bytes = get(&format!("{base}/{name}"), |n| {
            if let Ok(mut s) = status.lock() {
                s.bytes_done += n;
            }
        })
        .await?;
        mem.insert(name, bytes);
        if let Ok(mut s) = status.lock() {
            s.files_done += 1;
        }
    }
    files::mount(mount_root(arg), mem);
    Ok(())
}

/// The files of hub model `id` a pipeline needs, with their sizes, and the URL they are under.
async fn list_hub(id: &str) -> Result<(String, Vec<(String, u64)>)> {
    let ep = endpoint();
    let info = get(&format!("{ep}/api/models/{id}?blobs=true"), |_| {})
        .await
        .with_context(|| format!("{id}: no such model on {ep} (or it is private)"))?;
    let info: serde_json::Value =
        serde_json::from_slice(&info).with_context(|| format!("{id}: the hub's answer"))?;
    let siblings = info["siblings"]
        .as_array()
        .ok_or_else(|| anyhow!("{id}: the hub's answer lists no files"))?;
    let sizes: Vec<(String, u64)> = siblings
        .iter()
        .filter_map(|s| {
            let name = s["rfilename"].as_str()?.to_owned();
            Some((name, s["size"].as_u64().unwrap_or(0)))
        })
        .collect();
    let names: Vec<String> = sizes.iter().map(|(n, _)| n.clone()).collect();
    // Half-precision variants where there are some: half the download and the memory.
    let wanted = select_files_with(&names, true);
    if wanted.is_empty() {
        bail!("{id}: the repository holds no model files");
    }
    let files = sizes
        .into_iter()
        .filter(|(n, _)| wanted.contains(n))
        .collect();
    Ok((format!("{ep}/{id}/resolve/main"), files))
}

/// Refuses hub model `id` when its files (`(name, size)` under `base`) exceed what a page can
/// hold: [`MEMORY_BUDGET`] in all, or one tensor larger on the device than its binding limit
/// (each safetensors header is read with a range request; an f16 tensor counts double on a
/// device without `shader-f16`, which widens it; other files are not looked into).
async fn check_limits(
    id: &str,
    base: &str,
    files: &[(String, u64)],
    device: DeviceLimits,
) -> Result<()> {
    let max_binding = device.max_binding;
    let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
    let total: u64 = files.iter().map(|(_, s)| s).sum();
    if total > MEMORY_BUDGET {
        bail!(
            "{id}: {:.2} GiB of model files, more than a page can hold ({:.0} GiB: WebAssembly              addresses at most 4 GiB); run it with the desktop app",
            gib(total),
            gib(MEMORY_BUDGET)
        );
    }
    for (name, _) in files.iter().filter(|(n, _)| n.ends_with(".safetensors")) {
        let url = format!("{base}/{name}");
        let len = range(&url, 0, 8).await?;
        let n = u64::from_le_bytes(
            len.get(..8)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| anyhow!("{name}: not a safetensors file (shorter than 8 bytes)"))?,
        );
        if n > 100 << 20 {
            bail!("{name}: not a safetensors file (a {n}-byte header)");
        }
        let header: serde_json::Value = serde_json::from_slice(&range(&url, 8, n).await?)
            .with_context(|| format!("{name}: its safetensors header"))?;
        let Some(tensors) = header.as_object() else {
            bail!("{name}: its safetensors header is not a JSON object");
        };
        for (tensor, info) in tensors.iter().filter(|(k, _)| *k != "__metadata__") {
            let offsets = &info["data_offsets"];
            let stored = offsets[1]
                .as_u64()
                .unwrap_or(0)
                .saturating_sub(offsets[0].as_u64().unwrap_or(0));
            let half = matches!(info["dtype"].as_str(), Some("F16" | "BF16"));
            let bytes = if half && !device.f16 {
                2 * stored
            } else {
                stored
            };
            if bytes > max_binding {
                bail!(
                    "{id}: {name}: tensor {tensor} is {:.0} MiB, over this browser's WebGPU                      limit (max_storage_buffer_binding_size {:.0} MiB); run it with the                      desktop app",
                    bytes as f64 / f64::from(1u32 << 20),
                    max_binding as f64 / f64::from(1u32 << 20)
                );
            }
        }
    }
    Ok(())
}

/// `len` bytes of `url` from byte `start` (an HTTP range request).
async fn range(url: &str, start: u64, len: u64) -> Result<Vec<u8>> {
    let js = |e: wasm_bindgen::JsValue| anyhow!("{url}: {}", describe(&e));
    let headers = web_sys::Headers::new().map_err(js)?;
    headers
        .set("Range", &format!("bytes={start}-{}", start + len - 1))
        .map_err(js)?;
    let init = web_sys::RequestInit::new();
    init.set_headers(&headers);
    let bytes = get_with(url, Some(&init), |_| {}).await?;
    // A server that ignores ranges sends the whole file: the range is then its start.
    let from = if bytes.len() as u64 > len {
        start as usize
    } else {
        0
    };
    Ok(bytes
        .get(from..from + len as usize)
        .ok_or_else(|| anyhow!("{url}: shorter than {} bytes", start + len))?
        .to_vec())
}

/// Mounts files dropped on the page (paths relative to the dropped folder) at
/// `/dropped/<folder>`; returns that root (what the model field then names).
pub fn mount_dropped(folder: &str, dropped: Vec<(String, Vec<u8>)>) -> String {
    let root = format!("{DROPPED_ROOT}/{folder}");
    let mut mem = MemoryFiles::new();
    for (name, bytes) in dropped {
        mem.insert(name, bytes);
    }
    files::mount(&root, mem);
    root
}

/// The bytes at `url` (relative to the page, or absolute), read as they stream in, each
/// chunk's size passed to `progress`.
///
/// # Errors
/// The server unreachable, an HTTP error status.
pub async fn get(url: &str, progress: impl FnMut(u64)) -> Result<Vec<u8>> {
    get_with(url, None, progress).await
}

/// [`get`] with the request's options.
async fn get_with(
    url: &str,
    init: Option<&web_sys::RequestInit>,
    mut progress: impl FnMut(u64),
) -> Result<Vec<u8>> {
    let js = |e: wasm_bindgen::JsValue| anyhow!("{url}: {}", describe(&e));
    let w = web_sys::window().ok_or_else(|| anyhow!("no window"))?;
    let request = match init {
        Some(init) => w.fetch_with_str_and_init(url, init),
        None => w.fetch_with_str(url),
    };
    let resp: web_sys::Response = JsFuture::from(request)
        .await
        .map_err(js)?
        .dyn_into()
        .map_err(|_| anyhow!("{url}: not a response"))?;
    if !resp.ok() {
        bail!("{url}: HTTP {}", resp.status());
    }
    let Some(body) = resp.body() else {
        return Ok(Vec::new());
    };
    let reader: web_sys::ReadableStreamDefaultReader = body
        .get_reader()
        .dyn_into()
        .map_err(|_| anyhow!("{url}: no reader"))?;
    let mut out = Vec::new();
    loop {
        let chunk = JsFuture::from(reader.read()).await.map_err(js)?;
        let done = js_sys::Reflect::get(&chunk, &"done".into()).map_err(js)?;
        if done.as_bool() == Some(true) {
            break;
        }
        let value = js_sys::Reflect::get(&chunk, &"value".into()).map_err(js)?;
        let bytes = js_sys::Uint8Array::new(&value);
        let start = out.len();
        out.resize(start + bytes.length() as usize, 0);
        bytes.copy_to(&mut out[start..]);
        progress(bytes.length() as u64);
    }
    Ok(out)
}

/// A JavaScript error's message (a failed fetch is a `TypeError`).
fn describe(e: &wasm_bindgen::JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| format!("{e:?}"))
}
