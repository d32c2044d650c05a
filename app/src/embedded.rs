//! The default model, compiled into the binary (`assets/models/emoji`, trained by `tools/train`),
//! so `tessera` renders with no `--model` from any directory.
//!
//! Inside the source tree the folder is used in place; anywhere else (an installed binary) the
//! embedded files are written once to the user's cache directory
//! (`$XDG_CACHE_HOME/tessera/models/emoji-<hash>`, else `~/.cache/…`, else the temp dir) and the
//! model loads from there like any diffusers folder. A build without the `embed-model` feature
//! (`cargo build --release --no-default-features -p tessera`) carries no model files and reads
//! `assets/models/emoji` from disk.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

#[cfg(feature = "embed-model")]
macro_rules! model_file {
    ($p:literal) => {
        (
            $p,
            include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../assets/models/emoji/",
                $p
            )) as &[u8],
        )
    };
}

/// Every file of the pipeline folder, by path inside it.
#[cfg(feature = "embed-model")]
const FILES: &[(&str, &[u8])] = &[
    model_file!("model_index.json"),
    model_file!("MODEL_CARD.md"),
    model_file!("tessera.json"),
    model_file!("scheduler/scheduler_config.json"),
    model_file!("text_encoder/config.json"),
    model_file!("text_encoder/model.safetensors"),
    model_file!("tokenizer/merges.txt"),
    model_file!("tokenizer/special_tokens_map.json"),
    model_file!("tokenizer/tokenizer.json"),
    model_file!("tokenizer/tokenizer_config.json"),
    model_file!("tokenizer/vocab.json"),
    model_file!("transformer/config.json"),
    model_file!("transformer/diffusion_pytorch_model.safetensors"),
    model_file!("vqvae/config.json"),
    model_file!("vqvae/diffusion_pytorch_model.safetensors"),
];

/// A build without the `embed-model` feature carries no model files.
#[cfg(not(feature = "embed-model"))]
const FILES: &[(&str, &[u8])] = &[];

/// The folder in the source tree this binary was built from, when it is still there and holds
/// exactly the embedded files.
fn source_folder() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/models/emoji");
    let same = FILES.iter().all(|(name, bytes)| {
        std::fs::metadata(dir.join(name)).is_ok_and(|m| m.len() == bytes.len() as u64)
    });
    same.then_some(dir)
}

/// FNV-1a over every file's name and bytes: names the cache folder, so a different build's
/// model never mixes with this one.
fn fingerprint() -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (name, bytes) in FILES {
        for b in name.bytes().chain(bytes.iter().copied()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// Writes the embedded files into `dir` (through a sibling temporary folder renamed into place,
/// so a crash never leaves a half-written model that looks complete).
fn unpack(dir: &Path) -> Result<()> {
    let parent = dir.parent().context("cache folder has no parent")?;
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let tmp = parent.join(format!(
        ".{}.partial-{}",
        dir.file_name().and_then(|n| n.to_str()).unwrap_or("model"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    for (name, bytes) in FILES {
        let path = tmp.join(name);
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p).with_context(|| format!("cannot create {}", p.display()))?;
        }
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    }
    match std::fs::rename(&tmp, dir) {
        Ok(()) => Ok(()),
        // Another process unpacked it first.
        Err(_) if dir.join("model_index.json").is_file() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("cannot move the model into {}", dir.display())),
    }
}

/// Without the embedded files (`--no-default-features`, a binary ~25 MB smaller): the source
/// tree's folder, else `assets/models/emoji` under the working directory.
fn folder_on_disk() -> Result<PathBuf> {
    let candidates = [
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/models/emoji"),
        PathBuf::from("assets/models/emoji"),
    ];
    candidates
        .into_iter()
        .find(|d| d.join("model_index.json").is_file())
        .context(
            "this tessera was built without the embedded default model (cargo feature \
             `embed-model` off) and there is no assets/models/emoji here; pass --model DIR",
        )
}

/// The default model's folder: the source tree's copy, else the unpacked embedded copy.
pub fn default_model() -> Result<PathBuf> {
    if FILES.is_empty() {
        return folder_on_disk();
    }
    if let Some(dir) = source_folder() {
        return Ok(dir);
    }
    let dir = tessera_engine::gpu::user_cache_dir()
        .join("tessera/models")
        .join(format!("emoji-{:016x}", fingerprint()));
    if !dir.join("model_index.json").is_file() {
        log::info!("unpacking the embedded default model to {}", dir.display());
        unpack(&dir)?;
    }
    Ok(dir)
}
