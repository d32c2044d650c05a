//! Locating a diffusers pipeline folder: a directory, or a hub id resolved offline from the
//! Hugging Face cache.

use std::path::{Path, PathBuf};

use super::files;
use crate::error::{Error, Result};

/// A diffusers pipeline folder (`model_index.json` plus one sub-folder per component).
#[derive(Clone, Debug)]
pub struct ModelFolder {
    pub root: PathBuf,
}

impl ModelFolder {
    pub fn open(root: &Path) -> Result<Self> {
        if !files::is_file(&root.join("model_index.json")) {
            return Err(Error::file(
                root,
                "not a diffusers model folder (no model_index.json)",
            ));
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// The component's directory, which must exist.
    pub fn component(&self, name: &str) -> Result<PathBuf> {
        let dir = self.root.join(name);
        if !files::is_dir(&dir) {
            return Err(Error::file(&dir, "missing component folder"));
        }
        Ok(dir)
    }
}

/// The hub cache root: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
pub fn hub_cache_dir() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HF_HUB_CACHE") {
        return Some(PathBuf::from(p));
    }
    if let Some(p) = std::env::var_os("HF_HOME") {
        return Some(PathBuf::from(p).join("hub"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface/hub"))
}

/// Whether `arg` has the form of a hub id, `owner/name` (two non-empty parts, neither starting
/// with a dot). Whether it is one also depends on no such path existing.
pub fn is_hub_id(arg: &str) -> bool {
    let parts: Vec<&str> = arg.split('/').collect();
    parts.len() == 2 && parts.iter().all(|s| !s.is_empty() && !s.starts_with('.'))
}

/// `arg` as a folder if it is one; else as a hub id `owner/name` looked up in the cache
/// (`models--owner--name/snapshots/<rev>`, the revision `refs/main` names, or the newest).
pub fn resolve_model(arg: &str) -> Result<ModelFolder> {
    ModelFolder::open(&resolve_dir(arg)?)
}

/// `arg` as a folder if it is one; else as a hub id `owner/name` looked up in the cache
/// (`models--owner--name/snapshots/<rev>`, the revision `refs/main` names, or the newest),
/// whatever the folder holds.
///
/// # Errors
/// A file, a missing folder that is no hub id, a hub id not in the cache.
pub fn resolve_dir(arg: &str) -> Result<PathBuf> {
    let p = Path::new(arg);
    if files::is_dir(p) {
        return Ok(p.to_path_buf());
    }
    let parts: Vec<&str> = arg.split('/').collect();
    let is_hub_id = is_hub_id(arg);
    if files::is_file(p) {
        return Err(Error::file(
            p,
            "is a file, not a model folder (a diffusers folder with model_index.json, or a folder \
             or file of MaskGIT checkpoints)",
        ));
    }
    if !is_hub_id {
        return Err(Error::file(p, "no such model folder"));
    }
    let cache = hub_cache_dir().ok_or_else(|| Error::file(p, "no such folder and no hub cache"))?;
    let repo = cache.join(format!("models--{}--{}", parts[0], parts[1]));
    let snapshots = repo.join("snapshots");
    let from_ref = std::fs::read_to_string(repo.join("refs/main"))
        .ok()
        .map(|r| snapshots.join(r.trim()))
        .filter(|d| d.is_dir());
    let snapshot = match from_ref {
        Some(d) => d,
        None => newest_dir(&snapshots).ok_or_else(|| {
            Error::file(
                &repo,
                format!(
                    "{arg} is neither a folder nor in the Hugging Face cache (download it first)"
                ),
            )
        })?,
    };
    Ok(snapshot)
}

fn newest_dir(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
}
