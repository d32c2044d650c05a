//! The one place model loading reads files: bytes in, bytes out. Natively the file system;
//! where files come as bytes instead (a browser's fetched or dropped files, a model compiled
//! into the binary) a [`MemoryFiles`] is [`mount`]ed at a root path and every path under that
//! root is served from memory. On the web (wasm32) only mounted files exist.
//!
//! Everything under `crate::io` and the model loaders go through these functions, so a model
//! opens the same way from either.

use std::collections::BTreeMap;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Files held in memory, by path relative to the root they are mounted at.
#[derive(Clone, Debug, Default)]
pub struct MemoryFiles {
    files: BTreeMap<PathBuf, Arc<[u8]>>,
}

impl MemoryFiles {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the file at `relative` (`text_encoder/config.json`).
    pub fn insert(&mut self, relative: impl AsRef<Path>, bytes: impl Into<Arc<[u8]>>) {
        self.files.insert(normal(relative.as_ref()), bytes.into());
    }

    /// Every file below `root` on the file system, read into memory (tests, and apps that
    /// want a folder's bytes held once).
    ///
    /// # Errors
    /// Unreadable files or folders.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_dir(root: &Path) -> io::Result<Self> {
        fn walk(dir: &Path, rel: &Path, out: &mut MemoryFiles) -> io::Result<()> {
            for e in std::fs::read_dir(dir)? {
                let e = e?;
                let (path, name) = (e.path(), e.file_name());
                if path.is_dir() {
                    walk(&path, &rel.join(&name), out)?;
                } else {
                    out.insert(rel.join(&name), std::fs::read(&path)?);
                }
            }
            Ok(())
        }
        let mut out = Self::new();
        walk(root, Path::new(""), &mut out)?;
        Ok(out)
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// `a/./b/../c` → `a/c`, without touching the file system.
fn normal(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

type Mounts = Vec<(PathBuf, Arc<MemoryFiles>)>;

fn mounts() -> &'static RwLock<Mounts> {
    static MOUNTS: std::sync::OnceLock<RwLock<Mounts>> = std::sync::OnceLock::new();
    MOUNTS.get_or_init(Default::default)
}

/// Serves `files` at `root` (replacing an earlier mount there): `root/text_encoder/config.json`
/// reads `files`' `text_encoder/config.json`. The root need not exist on disk.
pub fn mount(root: impl AsRef<Path>, files: MemoryFiles) {
    let root = normal(root.as_ref());
    let mut m = mounts().write().unwrap_or_else(|e| e.into_inner());
    m.retain(|(r, _)| *r != root);
    m.push((root, Arc::new(files)));
}

/// Removes the mount at `root`, if any.
pub fn unmount(root: impl AsRef<Path>) {
    let root = normal(root.as_ref());
    let mut m = mounts().write().unwrap_or_else(|e| e.into_inner());
    m.retain(|(r, _)| *r != root);
}

/// The mounted files holding `path` and the path relative to their root.
fn lookup(path: &Path) -> Option<(Arc<MemoryFiles>, PathBuf)> {
    let path = normal(path);
    let m = mounts().read().unwrap_or_else(|e| e.into_inner());
    m.iter().rev().find_map(|(root, files)| {
        path.strip_prefix(root)
            .ok()
            .map(|rel| (Arc::clone(files), rel.to_path_buf()))
    })
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} does not exist", path.display()),
    )
}

/// The file's bytes.
///
/// # Errors
/// A missing or unreadable file.
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    if let Some((files, rel)) = lookup(path) {
        return files
            .files
            .get(&rel)
            .map(|b| b.to_vec())
            .ok_or_else(|| not_found(path));
    }
    native::read(path)
}

/// The file as UTF-8 text.
///
/// # Errors
/// A missing or unreadable file, or one that is not UTF-8.
pub fn read_to_string(path: &Path) -> io::Result<String> {
    String::from_utf8(read(path)?).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Up to `n` bytes from the start of the file (a format's magic number or header length).
///
/// # Errors
/// A missing or unreadable file.
pub fn read_prefix(path: &Path, n: usize) -> io::Result<Vec<u8>> {
    if lookup(path).is_some() {
        let mut v = read(path)?;
        v.truncate(n);
        return Ok(v);
    }
    native::read_prefix(path, n)
}

/// The file's size in bytes.
///
/// # Errors
/// A missing file.
pub fn size(path: &Path) -> io::Result<u64> {
    if let Some((files, rel)) = lookup(path) {
        return files
            .files
            .get(&rel)
            .map(|b| b.len() as u64)
            .ok_or_else(|| not_found(path));
    }
    native::size(path)
}

pub fn is_file(path: &Path) -> bool {
    match lookup(path) {
        Some((files, rel)) => files.files.contains_key(&rel),
        None => native::is_file(path),
    }
}

pub fn is_dir(path: &Path) -> bool {
    match lookup(path) {
        Some((files, rel)) => {
            rel.as_os_str().is_empty()
                || files.files.keys().any(|k| k.starts_with(&rel) && *k != rel)
        }
        None => native::is_dir(path),
    }
}

/// Whether `path` is served from memory rather than the file system.
pub fn is_mounted(path: &Path) -> bool {
    lookup(path).is_some()
}

/// The entries directly in `dir` (files and folders), sorted.
///
/// # Errors
/// A missing or unreadable folder.
pub fn list(dir: &Path) -> io::Result<Vec<PathBuf>> {
    if let Some((files, rel)) = lookup(dir) {
        if !is_dir(dir) {
            return Err(not_found(dir));
        }
        let base = normal(dir);
        let mut out: Vec<PathBuf> = files
            .files
            .keys()
            .filter_map(|k| k.strip_prefix(&rel).ok())
            .filter_map(|rest| rest.components().next())
            .map(|first| base.join(first))
            .collect();
        out.dedup();
        return Ok(out);
    }
    let mut v = native::list(dir)?;
    v.sort();
    Ok(v)
}

/// The file system, where there is one.
#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::io::{self, Read};
    use std::path::{Path, PathBuf};

    pub fn read(path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    pub fn read_prefix(path: &Path, n: usize) -> io::Result<Vec<u8>> {
        let mut v = Vec::with_capacity(n);
        std::fs::File::open(path)?
            .take(n as u64)
            .read_to_end(&mut v)?;
        Ok(v)
    }

    pub fn size(path: &Path) -> io::Result<u64> {
        Ok(std::fs::metadata(path)?.len())
    }

    pub fn is_file(path: &Path) -> bool {
        path.is_file()
    }

    pub fn is_dir(path: &Path) -> bool {
        path.is_dir()
    }

    pub fn list(dir: &Path) -> io::Result<Vec<PathBuf>> {
        std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.path()))
            .collect()
    }
}

/// The web has no file system: only mounted files exist.
#[cfg(target_arch = "wasm32")]
mod native {
    use std::io;
    use std::path::{Path, PathBuf};

    fn none(path: &Path) -> io::Error {
        super::not_found(path)
    }

    pub fn read(path: &Path) -> io::Result<Vec<u8>> {
        Err(none(path))
    }

    pub fn read_prefix(path: &Path, _: usize) -> io::Result<Vec<u8>> {
        Err(none(path))
    }

    pub fn size(path: &Path) -> io::Result<u64> {
        Err(none(path))
    }

    pub fn is_file(_: &Path) -> bool {
        false
    }

    pub fn is_dir(_: &Path) -> bool {
        false
    }

    pub fn list(dir: &Path) -> io::Result<Vec<PathBuf>> {
        Err(none(dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounted_files_read_list_and_shadow_nothing_else() {
        let mut m = MemoryFiles::new();
        m.insert("a/config.json", b"{}".to_vec());
        m.insert("a/b/w.bin", vec![1u8, 2, 3]);
        m.insert("top.txt", b"hi".to_vec());
        let root = Path::new("/mem-test/model");
        mount(root, m);
        assert_eq!(read(&root.join("a/b/w.bin")).expect("read"), [1, 2, 3]);
        assert_eq!(
            read_prefix(&root.join("a/b/w.bin"), 2).expect("prefix"),
            [1, 2]
        );
        assert_eq!(size(&root.join("top.txt")).expect("size"), 2);
        assert!(is_file(&root.join("a/./config.json")));
        assert!(is_dir(&root.join("a")) && is_dir(root) && !is_dir(&root.join("a/config.json")));
        assert_eq!(
            list(&root.join("a")).expect("list"),
            [root.join("a/b"), root.join("a/config.json")]
        );
        assert_eq!(
            list(root).expect("list"),
            [root.join("a"), root.join("top.txt")]
        );
        assert!(read(&root.join("missing")).is_err());
        assert!(is_mounted(&root.join("missing")) && !is_mounted(Path::new("/elsewhere")));
        unmount(root);
        assert!(!is_file(&root.join("top.txt")));
    }
}
