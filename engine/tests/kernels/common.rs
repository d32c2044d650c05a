//! Shared test context, random inputs and comparison helpers.

use std::sync::OnceLock;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tessera_engine::{GpuContext, Tensor};

/// The one device every kernel test shares. No adapter is a failure, not a skip.
pub fn ctx() -> &'static GpuContext {
    static CTX: OnceLock<GpuContext> = OnceLock::new();
    CTX.get_or_init(|| match GpuContext::new() {
        Ok(c) => c,
        Err(e) => panic!(
            "GPU tests need a wgpu adapter: {e}\n\
             On Debian/Ubuntu install the software Vulkan driver: \
             `apt-get install -y mesa-vulkan-drivers`"
        ),
    })
}

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

pub fn randn(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

pub fn upload(name: &str, shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::from_f32(ctx(), name, shape, data).expect("upload")
}

pub fn download(t: &Tensor) -> Vec<f32> {
    t.to_f32(ctx()).expect("download")
}

/// Asserts |got − want| ≤ atol + rtol·|want| everywhere (NaN fails), reporting the worst element.
pub fn assert_close(what: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst: Option<(usize, f64)> = None;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (f64::from(g) - w).abs();
        let within = err <= atol + rtol * w.abs();
        let excess = if err.is_nan() {
            f64::INFINITY
        } else {
            err - atol - rtol * w.abs()
        };
        if !within && worst.is_none_or(|(_, e)| excess > e) {
            worst = Some((i, excess));
        }
    }
    if let Some((i, _)) = worst {
        panic!(
            "{what}: element {i} off by {:.3e} (got {}, want {}; atol {atol:e}, rtol {rtol:e})",
            (f64::from(got[i]) - want[i]).abs(),
            got[i],
            want[i]
        );
    }
}

pub fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

/// Both kernel families, whatever this adapter would pick.
pub const FAMILIES: [tessera_engine::gpu::KernelFamily; 2] = [
    tessera_engine::gpu::KernelFamily::Tiled,
    tessera_engine::gpu::KernelFamily::Cpu,
];

/// [`run`] with the ops picking `family`'s kernels.
pub fn run_in<T>(
    family: tessera_engine::gpu::KernelFamily,
    f: impl FnOnce(&mut tessera_engine::Recorder<'_>) -> tessera_engine::Result<T>,
) -> T {
    run(|rec| {
        rec.set_kernel_family(family);
        f(rec)
    })
}

/// Records with `f`, submits, and returns what `f` produced.
pub fn run<T>(f: impl FnOnce(&mut tessera_engine::Recorder<'_>) -> tessera_engine::Result<T>) -> T {
    let mut rec = ctx().recorder();
    let out = f(&mut rec).expect("op");
    rec.submit();
    out
}
