//! Helpers shared by the end-to-end tests: running the `tessera` binary, reading safetensors,
//! comparing with references.
#![allow(dead_code)] // each test binary uses its own subset

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use safetensors::{Dtype, SafeTensors};

/// The binary under test: cargo's build of it, or `TESSERA_TEST_BIN` (a prebuilt test binary
/// run on another machine: tools/bench/run_device.sh on a lent GPU).
pub fn bin() -> PathBuf {
    std::env::var_os("TESSERA_TEST_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_tessera")),
        PathBuf::from,
    )
}

/// The repository's root: this checkout's, or `TESSERA_TEST_ROOT` (likewise).
pub fn repo_root() -> PathBuf {
    std::env::var_os("TESSERA_TEST_ROOT").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join(".."),
        PathBuf::from,
    )
}

/// Runs the binary under test with quiet logging.
pub fn tessera(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .expect("run tessera")
}

/// Runs and asserts success; returns stderr.
pub fn ok(args: &[&str]) -> String {
    let o = tessera(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "tessera {args:?} failed:\n{err}");
    err
}

/// Every tensor of a safetensors file as f64 (integers included), with its shape.
pub fn read(path: &Path) -> HashMap<String, (Vec<usize>, Vec<f64>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).expect("safetensors");
    st.tensors()
        .into_iter()
        .map(|(name, t)| {
            let v: Vec<f64> = match t.dtype() {
                Dtype::F32 => bytemuck::pod_collect_to_vec::<u8, f32>(t.data())
                    .into_iter()
                    .map(f64::from)
                    .collect(),
                Dtype::I64 => bytemuck::pod_collect_to_vec::<u8, i64>(t.data())
                    .into_iter()
                    .map(|x| x as f64)
                    .collect(),
                Dtype::I32 => bytemuck::pod_collect_to_vec::<u8, i32>(t.data())
                    .into_iter()
                    .map(f64::from)
                    .collect(),
                d => panic!("{name}: unexpected dtype {d:?}"),
            };
            (name, (t.shape().to_vec(), v))
        })
        .collect()
}

/// max |got − want| / max |want|.
pub fn rel_err(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    got.iter()
        .zip(want)
        .fold(0.0f64, |m, (g, w)| m.max((g - w).abs()))
        / scale
}

/// A path in this test process's scratch folder.
pub fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tessera-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    dir.join(name)
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Copies a folder tree (a model folder to modify in a test).
pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).expect("mkdir");
    for e in std::fs::read_dir(src).expect("read_dir") {
        let e = e.expect("entry");
        let to = dst.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), to).expect("copy");
        }
    }
}
