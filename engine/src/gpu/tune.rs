//! Kernel autotuning: where more than one strategy computes a product, a convolution or an
//! attention call, each is timed once on this adapter at the call's own shape and the fastest
//! is kept — for the process and, persisted under the user's cache folder, for the next ones.
//!
//! The static choices ([`MatmulStrategy::choose`](crate::ops::matmul::MatmulStrategy::choose),
//! [`ConvStrategy::choose`](crate::ops::conv::ConvStrategy::choose),
//! [`choose_kernel`](crate::ops::attention::choose_kernel)) stay the default: what runs where
//! tuning is off (CPU adapters, the browser, `TESSERA_TUNE=0`), and what a candidate has to beat
//! by more than [`MARGIN`] to replace. Candidates are at least as precise as the default: where
//! it is a tensor-core kernel (f16 roundings of its operands), every kernel; where it is an f32
//! kernel, the f32 ones only. Tuning never lowers precision. The same
//! pattern as burn's `tune` module and cuBLAS-style heuristics-then-measure, kept small: one
//! measurement per distinct call shape.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use web_time::Instant;

use super::context::{GpuContext, KernelFamily};
use super::recorder::Recorder;
use super::tensor::Tensor;
use crate::error::Result;

/// How much faster than the default a candidate must measure to replace it (timing noise
/// should not flip a choice from run to run).
pub const MARGIN: f64 = 0.03;

/// Wall time one timing round aims at, in seconds (calls are repeated within a submission up
/// to this, so that a submit-and-wait round trip does not dominate a fast kernel).
const ROUND_S: f64 = 0.002;
/// Timing rounds per candidate (the fastest counts).
const ROUNDS: usize = 3;
/// Most calls in one timing round.
const MAX_REPS: usize = 16;

/// Kernel choices measured on one adapter, by call shape ([`GpuContext::tuner`]).
pub struct Tuner {
    on: bool,
    /// The adapter's name, written into the persisted file for whoever reads it.
    adapter: String,
    /// Where the choices are persisted (None: this process only).
    file: Option<PathBuf>,
    /// Call-shape key → the winning strategy's `Debug` name.
    choices: Mutex<BTreeMap<String, String>>,
    loaded: usize,
    measured: AtomicUsize,
    tune_ns: AtomicU64,
}

/// What a [`Tuner`] has done in this process.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TuneStats {
    /// Choices read from the persisted file at start.
    pub loaded: usize,
    /// Call shapes measured by this process.
    pub measured: usize,
    /// Wall time spent measuring them (pipeline compilation of the candidates included), ms.
    pub ms: f64,
}

/// The persisted form: `<cache>/tessera/tune/<hash>.json`.
#[derive(serde::Serialize, serde::Deserialize)]
struct TuneFile {
    engine: String,
    adapter: String,
    choices: BTreeMap<String, String>,
}

impl Tuner {
    /// Tuning off: every call takes the static choice.
    pub fn off() -> Self {
        Self::new(false, None, BTreeMap::new())
    }

    /// Tuning on, the choices kept for this process only.
    pub fn in_memory() -> Self {
        Self::new(true, None, BTreeMap::new())
    }

    /// Tuning on, the choices read from and written back to `file` (a missing or unreadable
    /// file starts empty: logged, not an error).
    pub fn persisted(file: PathBuf) -> Self {
        let choices = match std::fs::read(&file) {
            Ok(bytes) => match serde_json::from_slice::<TuneFile>(&bytes) {
                Ok(f) => f.choices,
                Err(e) => {
                    log::warn!(
                        "kernel tuning {}: unreadable ({e}); measuring anew",
                        file.display()
                    );
                    BTreeMap::new()
                }
            },
            Err(_) => BTreeMap::new(),
        };
        log::debug!(
            "kernel tuning {}: {} choices",
            file.display(),
            choices.len()
        );
        Self::new(true, Some(file), choices)
    }

    fn new(on: bool, file: Option<PathBuf>, choices: BTreeMap<String, String>) -> Self {
        Self {
            on,
            adapter: String::new(),
            file,
            loaded: choices.len(),
            choices: Mutex::new(choices),
            measured: AtomicUsize::new(0),
            tune_ns: AtomicU64::new(0),
        }
    }

    /// The tuner a context on `info` starts with: `TESSERA_TUNE=0` (or `off`) none, `1` (or
    /// `on`) always; otherwise on for the [`KernelFamily::Tiled`] kernels (GPUs) and off for
    /// CPU adapters, whose static choices were measured on the adapter they run on. Never in the
    /// browser (measuring waits for the GPU). Persisted to `<cache>/tessera/tune/<hash>.json`,
    /// the hash over the adapter (name, vendor, device, driver, backend), this engine's version
    /// and its shader sources, so new kernels or a new driver measure anew;
    /// `TESSERA_TUNE=memory` keeps the choices in the process only.
    pub(crate) fn for_adapter(info: &wgpu::AdapterInfo, family: KernelFamily) -> Self {
        if cfg!(target_arch = "wasm32") {
            return Self::off();
        }
        let setting = std::env::var("TESSERA_TUNE").unwrap_or_default();
        let on = match setting.to_ascii_lowercase().as_str() {
            "0" | "off" | "false" => false,
            "1" | "on" | "true" | "memory" => true,
            "" => family == KernelFamily::Tiled,
            other => {
                log::warn!("TESSERA_TUNE={other:?} is not 0, 1 or memory; tuning by adapter");
                family == KernelFamily::Tiled
            }
        };
        if !on {
            return Self::off();
        }
        if setting.eq_ignore_ascii_case("memory") {
            return Self::in_memory();
        }
        let file = super::pipeline::user_cache_dir()
            .join("tessera/tune")
            .join(format!("{:016x}.json", identity_hash(info)));
        Self {
            adapter: info.name.clone(),
            ..Self::persisted(file)
        }
    }

    /// Whether calls are tuned.
    pub fn is_on(&self) -> bool {
        self.on
    }

    /// Where the choices are persisted, if anywhere.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    pub fn stats(&self) -> TuneStats {
        TuneStats {
            loaded: self.loaded,
            measured: self.measured.load(Ordering::Relaxed),
            ms: self.tune_ns.load(Ordering::Relaxed) as f64 * 1e-6,
        }
    }

    /// Every choice known (loaded and measured): call-shape key and strategy name.
    pub fn choices(&self) -> Vec<(String, String)> {
        self.lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.choices
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The strategy for the call shape `key`: `default` where tuning is off or it is the only
    /// candidate; else the choice already made for `key` (this process or the persisted file)
    /// if it is still a candidate; else each of `candidates` (which should include `default`)
    /// timed by `measure` (milliseconds per call; a candidate whose measurement fails is
    /// skipped), and the fastest kept unless `default` is within the margin (3 %) of it.
    pub fn pick<S: Copy + PartialEq + Debug>(
        &self,
        key: &str,
        default: S,
        candidates: &[S],
        mut measure: impl FnMut(S) -> Result<f64>,
    ) -> S {
        if !self.on || candidates.iter().all(|c| *c == default) {
            return default;
        }
        if let Some(name) = self.lock().get(key)
            && let Some(s) = candidates.iter().find(|c| format!("{c:?}") == *name)
        {
            return *s;
        }
        let start = Instant::now();
        let mut times = Vec::new();
        for &c in candidates {
            match measure(c) {
                Ok(ms) if ms.is_finite() => times.push((c, ms)),
                Ok(ms) => log::warn!("kernel tuning {key}: {c:?} measured {ms} ms; skipped"),
                Err(e) => log::warn!("kernel tuning {key}: {c:?} failed ({e}); skipped"),
            }
        }
        let best = times.iter().copied().min_by(|a, b| a.1.total_cmp(&b.1));
        let default_ms = times.iter().find(|(c, _)| *c == default).map(|t| t.1);
        let chosen = match (best, default_ms) {
            (Some((c, ms)), Some(d)) if ms < d * (1.0 - MARGIN) => c,
            (Some(_), Some(_)) | (None, _) => default,
            (Some((c, _)), None) => c,
        };
        let elapsed = start.elapsed();
        self.tune_ns.fetch_add(
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.measured.fetch_add(1, Ordering::Relaxed);
        log::info!(
            "kernel tuning {key}: {chosen:?} ({}; {:.0} ms)",
            times
                .iter()
                .map(|(c, ms)| format!("{c:?} {ms:.3} ms"))
                .collect::<Vec<_>>()
                .join(", "),
            elapsed.as_secs_f64() * 1e3
        );
        // A choice made without any measurement (all failed) is not remembered.
        if !times.is_empty() {
            let snapshot = {
                let mut choices = self.lock();
                choices.insert(key.to_owned(), format!("{chosen:?}"));
                choices.clone()
            };
            self.save(snapshot);
        }
        chosen
    }

    fn save(&self, choices: BTreeMap<String, String>) {
        let Some(file) = &self.file else {
            return;
        };
        let data = TuneFile {
            engine: env!("CARGO_PKG_VERSION").to_owned(),
            adapter: self.adapter.clone(),
            choices,
        };
        let write = serde_json::to_vec_pretty(&data)
            .map_err(std::io::Error::other)
            .and_then(|bytes| super::pipeline::write_atomically(file, &bytes));
        if let Err(e) = write {
            log::warn!("kernel tuning {}: {e}", file.display());
        }
    }
}

/// FNV-1a over what makes measured choices valid: the adapter, the engine's version and its
/// shader sources.
fn identity_hash(info: &wgpu::AdapterInfo) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes.iter().chain([&0xff]) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(info.name.as_bytes());
    eat(&info.vendor.to_le_bytes());
    eat(&info.device.to_le_bytes());
    eat(info.driver.as_bytes());
    eat(info.driver_info.as_bytes());
    eat(format!("{:?}", info.backend).as_bytes());
    eat(env!("CARGO_PKG_VERSION").as_bytes());
    for module in crate::shaders::Module::all() {
        eat(module.source().as_bytes());
    }
    h
}

/// Milliseconds per call of what `record` records (one kernel call on tensors of the real
/// call's shape), for [`Tuner::pick`]: a first call compiles and warms up, a second sizes the
/// rounds (calls repeated in one submission up to 2 ms), then the fastest of 3 rounds.
/// Recorded on a recorder that is neither profiled nor counted in
/// [`GpuContext::work_counts`], inside error scopes: a kernel the driver refuses (validation,
/// out of memory, internal errors) is an error here, not a fast-looking no-op, and does not
/// reach the context's error slot.
///
/// # Errors
/// [`Error::Tuning`](crate::Error::Tuning) for a kernel the driver refused; whatever `record`
/// returns. Waits for the GPU: native targets only.
pub fn time_calls(
    ctx: &GpuContext,
    mut record: impl FnMut(&mut Recorder<'_>) -> Result<Tensor>,
) -> Result<f64> {
    let scopes = [
        wgpu::ErrorFilter::Validation,
        wgpu::ErrorFilter::OutOfMemory,
        wgpu::ErrorFilter::Internal,
    ]
    .map(|f| ctx.device.push_error_scope(f));
    let mut round = |reps: usize| -> Result<f64> {
        let start = Instant::now();
        let mut rec = ctx.tuning_recorder();
        for _ in 0..reps {
            drop(record(&mut rec)?);
        }
        rec.submit();
        ctx.wait_idle();
        Ok(start.elapsed().as_secs_f64() / reps as f64)
    };
    let timed = (|| {
        round(1)?;
        let one = round(1)?;
        let reps = ((ROUND_S / one.max(1e-7)).ceil() as usize).clamp(1, MAX_REPS);
        let mut best = f64::INFINITY;
        for _ in 0..ROUNDS {
            best = best.min(round(reps)?);
        }
        Ok(best * 1e3)
    })();
    // Popped innermost first.
    let mut refused = None;
    for scope in scopes.into_iter().rev() {
        if let Some(e) = pollster::block_on(scope.pop()) {
            refused.get_or_insert(e.to_string());
        }
    }
    match refused {
        Some(reason) => Err(crate::error::Error::Tuning { reason }),
        None => timed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum K {
        A,
        B,
        C,
    }

    fn fake(times: [(K, f64); 3]) -> impl FnMut(K) -> Result<f64> {
        move |k| {
            let ms = times.iter().find(|t| t.0 == k).map_or(f64::NAN, |t| t.1);
            if ms < 0.0 {
                Err(crate::error::Error::Tuning {
                    reason: "refused".into(),
                })
            } else {
                Ok(ms)
            }
        }
    }

    #[test]
    fn picks_the_fastest_beyond_the_margin() {
        let t = Tuner::in_memory();
        let all = [K::A, K::B, K::C];
        assert_eq!(
            t.pick(
                "x",
                K::A,
                &all,
                fake([(K::A, 1.0), (K::B, 0.5), (K::C, 0.7)])
            ),
            K::B
        );
        // within the margin the default stays
        assert_eq!(
            t.pick(
                "y",
                K::A,
                &all,
                fake([(K::A, 1.0), (K::B, 0.98), (K::C, 2.0)])
            ),
            K::A
        );
        // a refused candidate is skipped, however fast it would look
        assert_eq!(
            t.pick(
                "z",
                K::A,
                &all,
                fake([(K::A, 1.0), (K::B, -1.0), (K::C, 0.9)])
            ),
            K::C
        );
        // a refused default: the fastest of the rest
        assert_eq!(
            t.pick(
                "w",
                K::A,
                &all,
                fake([(K::A, -1.0), (K::B, 3.0), (K::C, 2.0)])
            ),
            K::C
        );
        assert_eq!(t.stats().measured, 4);
    }

    #[test]
    fn measures_each_key_once_and_persists() {
        let dir = std::env::temp_dir().join(format!("tessera-tune-{}", std::process::id()));
        let file = dir.join("t.json");
        let _ = std::fs::remove_file(&file);
        let all = [K::A, K::B, K::C];
        let t = Tuner::persisted(file.clone());
        let mut calls = 0;
        let mut counting = |k: K| {
            calls += 1;
            fake([(K::A, 1.0), (K::B, 2.0), (K::C, 0.1)])(k)
        };
        assert_eq!(t.pick("k", K::A, &all, &mut counting), K::C);
        assert_eq!(t.pick("k", K::A, &all, &mut counting), K::C);
        assert_eq!(calls, 3, "the second call must reuse the choice");
        // A new process reads it back without measuring.
        let t2 = Tuner::persisted(file.clone());
        assert_eq!(t2.stats().loaded, 1);
        let never = |_: K| -> Result<f64> { panic!("measured again") };
        assert_eq!(t2.pick("k", K::A, &all, never), K::C);
        // A stored choice that is no longer a candidate is measured anew.
        assert_eq!(
            t2.pick(
                "k",
                K::A,
                &[K::A, K::B],
                fake([(K::A, 1.0), (K::B, 0.5), (K::C, 0.1)])
            ),
            K::B
        );
        // Off, or one candidate: the default, nothing measured.
        assert_eq!(Tuner::off().pick("k", K::A, &all, never), K::A);
        assert_eq!(t2.pick("one", K::B, &[K::B], never), K::B);
        // A corrupt file starts empty.
        std::fs::write(&file, b"{ not json").expect("write a corrupt file");
        assert_eq!(Tuner::persisted(file.clone()).stats().loaded, 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
