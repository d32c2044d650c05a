//! The default model, compiled into the binary (`assets/models/emoji`, trained by `tools/train`),
//! so `tessera` renders with no `--model` from any directory.
//!
//! Inside the source tree the folder is used in place; anywhere else (an installed binary) the
//! embedded bytes are served from memory (`tessera_engine::io::files::mount`) at a path that
//! exists only for the engine's loaders, so nothing is written to disk — the same way the
//! browser build holds the model it fetched. A build without the `embed-model` feature
//! (`cargo build --release --no-default-features -p tessera`) carries no model files and reads
//! `assets/models/emoji` from disk.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Every file of the pipeline folder, by path inside it (listed by `build.rs`: all of
/// `assets/models/emoji`, sub-folders included; empty without the `embed-model` feature, when
/// the model is read from disk).
const FILES: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/embedded_files.rs"));

/// The folder in the source tree this binary was built from, when it is still there and holds
/// exactly the embedded files.
fn source_folder() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/models/emoji");
    let same = FILES.iter().all(|(name, bytes)| {
        std::fs::metadata(dir.join(name)).is_ok_and(|m| m.len() == bytes.len() as u64)
    });
    same.then_some(dir)
}

/// FNV-1a over every file's name and bytes: names the mount, so a different build's model
/// never mixes with this one.
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

/// Serves the embedded files at `root` (once per process; later calls find them there).
fn mount(root: &Path) {
    use tessera_engine::io::files::{self, MemoryFiles};
    if files::is_file(&root.join("model_index.json")) {
        return;
    }
    let mut m = MemoryFiles::new();
    for (name, bytes) in FILES {
        m.insert(name, bytes.to_vec());
    }
    files::mount(root, m);
}

/// Without the embedded files (`--no-default-features`, a binary ~37 MB smaller): the source
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

/// The default model's folder: the source tree's copy, else the embedded copy served from
/// memory (a path only the engine's loaders see).
pub fn default_model() -> Result<PathBuf> {
    if FILES.is_empty() {
        return folder_on_disk();
    }
    if let Some(dir) = source_folder() {
        return Ok(dir);
    }
    let dir = PathBuf::from(format!("/<embedded>/emoji-{:016x}", fingerprint()));
    mount(&dir);
    Ok(dir)
}

#[cfg(all(test, feature = "embed-model"))]
mod tests {
    use super::*;

    /// An installed binary's path: the embedded bytes served from memory open the model as
    /// the source folder does: the same settings from its `tessera.json` (guidance, choice
    /// temperature, steps), the same tokens from the same request.
    #[test]
    fn the_embedded_bytes_open_from_memory_like_the_folder() {
        use std::ops::ControlFlow;
        use tessera_engine::GpuContext;
        use tessera_engine::pipeline::{self, Condition, Model, Request, Start};
        let root = PathBuf::from(format!("/<embedded-test>/emoji-{:016x}", fingerprint()));
        mount(&root);
        let disk = source_folder().expect("the source tree's folder");
        let ctx = GpuContext::new().expect("adapter");
        let run = |path: &Path| {
            let model = Model::open(&ctx, path).expect("open");
            let sampler = model.sampler_defaults(None, 3, false).expect("defaults");
            let settings = (
                model.default_guidance(),
                sampler.choice_temperature,
                sampler.steps,
            );
            let req = Request {
                condition: Condition::Text {
                    prompt: "red apple",
                    negative_prompt: "",
                },
                batch: 1,
                guidance: settings.0,
                sampler,
                start: Start::Blank(model.grid()),
                super_res: Default::default(),
            };
            let tokens = pipeline::generate(&ctx, &model, &req, &mut |_| ControlFlow::Continue(()))
                .expect("generate")
                .tokens;
            (settings, tokens)
        };
        let (from_memory, from_disk) = (run(&root), run(&disk));
        assert_eq!(from_memory.0, from_disk.0, "settings from tessera.json");
        assert_eq!(from_memory.1, from_disk.1, "tokens");
        assert!(!root.exists(), "nothing was written to disk");
    }

    /// Every file of the folder is embedded, sub-folders (a `super_res/` stage) included.
    #[test]
    fn every_file_of_the_folder_is_embedded() {
        fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, root, out);
                } else if let Ok(rel) = p.strip_prefix(root) {
                    out.push(rel.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/models/emoji");
        let mut on_disk = Vec::new();
        walk(&dir, &dir, &mut on_disk);
        on_disk.retain(|n| !n.split('/').any(|part| part.starts_with('.')));
        on_disk.sort();
        let embedded: Vec<String> = FILES.iter().map(|(n, _)| (*n).to_owned()).collect();
        assert_eq!(embedded, on_disk);
        assert!(embedded.iter().any(|n| n == "model_index.json"));
    }
}
