//! Lists the default model's files (`assets/models/emoji`, every file under it, sub-folders
//! such as a two-stage model's `super_res/` included) for `src/embedded.rs`, which compiles
//! them into the binary with the `embed-model` feature: `$OUT_DIR/embedded_files.rs` is a
//! slice of `(path inside the folder, include_bytes!(file))`, sorted by path.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR");
    let root = Path::new(&manifest).join("../assets/models/emoji");
    let out_dir = std::env::var("OUT_DIR").expect("OUT_DIR");
    let embed = std::env::var_os("CARGO_FEATURE_EMBED_MODEL").is_some();
    // A directory here makes cargo rerun the script when anything under it changes.
    println!("cargo:rerun-if-changed={}", root.display());
    println!("cargo:rerun-if-changed=build.rs");
    let mut files = Vec::new();
    if embed {
        walk(&root, &mut files);
    }
    let mut names: Vec<(String, PathBuf)> = files
        .into_iter()
        .filter_map(|p| {
            let rel = p.strip_prefix(&root).ok()?.to_str()?.replace('\\', "/");
            // Hidden files (an editor's, the OS's) are no part of the model.
            (!rel.split('/').any(|part| part.starts_with('.'))).then_some((rel, p))
        })
        .collect();
    names.sort();
    let mut code = String::from("&[\n");
    for (rel, path) in &names {
        let abs = path.canonicalize().unwrap_or_else(|_| path.clone());
        let _ = writeln!(
            code,
            "    ({rel:?}, include_bytes!({:?}) as &[u8]),",
            abs.display().to_string()
        );
    }
    code.push(']');
    std::fs::write(Path::new(&out_dir).join("embedded_files.rs"), code)
        .expect("write embedded_files.rs");
}
