//! Adapter choice and device creation.
//!
//! Headless callers use [`GpuContext::new`]; a caller that already owns a device (the desktop app
//! hands in eframe's) uses [`GpuContext::from_device`].

use std::sync::Arc;

use super::pipeline::Pipelines;
use super::pool::BufferPool;
use super::profile::{Profile, ProfileClock, ProfileState};
use super::tune::Tuner;
use crate::error::{Error, Result};
use crate::shaders::CoopShape;

/// Optional features the engine uses when the adapter has them.
pub const WANTED_FEATURES: wgpu::Features = wgpu::Features::SHADER_F16
    .union(wgpu::Features::SUBGROUP)
    .union(wgpu::Features::TIMESTAMP_QUERY)
    .union(wgpu::Features::PIPELINE_CACHE);

/// Cooperative matrices (tensor cores): an experimental wgpu feature, requested where the
/// adapter has it unless `TESSERA_KERNELS` is `tiled` or `cpu` (plain WGSL kernels).
pub const COOPERATIVE_FEATURES: wgpu::Features = wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;

/// The features a device for the engine should be created with on `adapter` (what it has of
/// [`WANTED_FEATURES`] and, unless turned off, [`COOPERATIVE_FEATURES`]) and the experimental
/// opt-in that the cooperative ones need. The engine's own device and the app's (eframe's)
/// are both made with these.
///
/// Cooperative matrices are requested only where the tensor-core kernels might run
/// ([`coop_candidates`]): an adapter may list the feature with no configuration or subgroup
/// width they use, and some then refuse the device (lavapipe in Mesa 26 at
/// `LP_NATIVE_VECTOR_WIDTH=128`, whose 4-wide subgroups no kernel uses: wgpu panics on the
/// refusal instead of returning an error).
pub fn device_features(adapter: &wgpu::Adapter) -> (wgpu::Features, wgpu::ExperimentalFeatures) {
    let coop_allowed = !matches!(
        std::env::var("TESSERA_KERNELS").ok().as_deref(),
        Some("tiled" | "cpu")
    );
    let mut wanted = WANTED_FEATURES;
    if coop_allowed {
        wanted |= COOPERATIVE_FEATURES;
    }
    let mut features = adapter.features() & wanted;
    if features.intersects(COOPERATIVE_FEATURES) {
        let configs = adapter.cooperative_matrix_properties();
        let has_f16 = features.contains(wgpu::Features::SHADER_F16);
        let info = adapter.get_info();
        let subgroups = (info.subgroup_min_size, info.subgroup_max_size);
        let invocations = adapter.limits().max_compute_invocations_per_workgroup;
        // A range of widths is narrowed down by a probe that needs subgroup builtins.
        let probe = subgroups.0 == subgroups.1 || features.contains(wgpu::Features::SUBGROUP);
        if !probe || coop_candidates(subgroups, has_f16, &configs, invocations).is_empty() {
            log::info!(
                "cooperative matrices: not requested, no configuration the kernels use \
                 (square f16 × f16 → f32 fragments of 16 with subgroups of 32 or 64, of 8 with \
                 8, 16 or 32)"
            );
            features.remove(COOPERATIVE_FEATURES);
        }
    }
    let experimental = if features.intersects(COOPERATIVE_FEATURES) {
        experimental_opt_in()
    } else {
        wgpu::ExperimentalFeatures::disabled()
    };
    (features, experimental)
}

/// The cooperative-matrix shapes the tensor-core kernels could run with on an adapter whose
/// subgroups are `subgroups` (minimum, maximum) invocations wide, with f16 shaders (`has_f16`),
/// the cooperative-matrix `configs` it lists and workgroups of at most `invocations`: each
/// [`CoopShape`], in its order of preference, with an f16 × f16 →
/// f32 configuration of its fragment size, a subgroup width in the range and a 64×64-tile
/// workgroup within the limit. Where the adapter fixes the width (minimum = maximum), the
/// first is the one the kernels take; otherwise a probe picks (`GpuContext::choose_coop_shape`).
fn coop_candidates(
    (sub_min, sub_max): (u32, u32),
    has_f16: bool,
    configs: &[wgpu::CooperativeMatrixProperties],
    invocations: u32,
) -> Vec<CoopShape> {
    use wgpu::CooperativeScalarType::{F16, F32};
    if !has_f16 {
        return Vec::new();
    }
    CoopShape::ALL
        .into_iter()
        .filter(|shape| {
            let (f, sg) = (shape.size(), shape.subgroup());
            (sub_min..=sub_max).contains(&sg)
                && shape.workgroup() <= invocations
                && configs.iter().any(|c| {
                    (c.m_size, c.n_size, c.k_size) == (f, f, f)
                        && c.ab_type == F16
                        && c.cr_type == F32
                })
        })
        .collect()
}

/// The one unsafe call of the device set-up.
#[allow(unsafe_code)]
fn experimental_opt_in() -> wgpu::ExperimentalFeatures {
    // SAFETY: wgpu's experimental features may contain bugs with undefined behaviour. The only
    // one the engine requests is EXPERIMENTAL_COOPERATIVE_MATRIX, used by the tensor-core
    // kernels (`shaders/matmul_coop16.wgsl`, `matmul_coop64.wgsl`, `conv2d_coop.wgsl`,
    // `attention_coop.wgsl`) that the kernel tests check against a CPU reference, and
    // `TESSERA_KERNELS=tiled` turns it off.
    unsafe { wgpu::ExperimentalFeatures::enabled() }
}

/// A device, its queue, and the engine state tied to them.
pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub(crate) pool: Arc<BufferPool>,
    pub(crate) pipelines: Pipelines,
    /// The first GPU error wgpu reported asynchronously (validation, out of memory), taken by
    /// the next readback.
    device_error: Arc<std::sync::Mutex<Option<String>>>,
    /// Why the device was lost (driver reset, `Device::destroy`), once it is.
    lost: Arc<std::sync::Mutex<Option<String>>>,
    limits: wgpu::Limits,
    features: wgpu::Features,
    kernels: KernelFamily,
    /// The adapter's cooperative-matrix configurations (empty without the adapter or feature).
    coop_configs: Vec<wgpu::CooperativeMatrixProperties>,
    /// The cooperative-matrix shape the tensor-core kernels run with here, if any.
    coop: Option<CoopShape>,
    profile: std::sync::Mutex<Option<ProfileState>>,
    /// Dispatches recorded and queue submissions made so far ([`GpuContext::work_counts`]).
    dispatches: std::sync::atomic::AtomicU64,
    submits: std::sync::atomic::AtomicU64,
    record_ns: std::sync::atomic::AtomicU64,
    tuner: Tuner,
}

/// Work issued to the GPU through a context: compute dispatches recorded and command-buffer
/// submissions (including readbacks), counted from its creation, and the host time spent
/// recording them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkCounts {
    pub dispatches: u64,
    pub submits: u64,
    /// Host nanoseconds from each submitted [`Recorder`](crate::gpu::Recorder)'s creation to
    /// its submission, less the queue's submit calls (lavapipe runs the commands inside
    /// them): recording the commands, writing their parameters, finishing the command
    /// buffers — CPU work that the GPU waits for.
    pub record_ns: u64,
}

impl std::ops::Sub for WorkCounts {
    type Output = WorkCounts;
    fn sub(self, rhs: WorkCounts) -> WorkCounts {
        WorkCounts {
            dispatches: self.dispatches.saturating_sub(rhs.dispatches),
            submits: self.submits.saturating_sub(rhs.submits),
            record_ns: self.record_ns.saturating_sub(rhs.record_ns),
        }
    }
}

/// Which family of kernel variants suits the adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelFamily {
    /// Workgroup-memory tiles (GPUs).
    Tiled,
    /// Register-blocked kernels without workgroup memory (adapters that run on the CPU).
    Cpu,
}

impl KernelFamily {
    /// `TESSERA_KERNELS=tiled|cpu` overrides the choice made from the adapter type (both
    /// without cooperative matrices); `coop` is the Tiled family with them where the adapter
    /// has them — what a GPU gets by default, also on a software adapter that has them
    /// (lavapipe ≥ 26), to check the tensor-core path end to end on a CPU.
    fn choose(info: &wgpu::AdapterInfo) -> Self {
        match std::env::var("TESSERA_KERNELS").ok().as_deref() {
            Some("tiled" | "coop") => KernelFamily::Tiled,
            Some("cpu") => KernelFamily::Cpu,
            other => {
                if let Some(v) = other.filter(|v| !v.is_empty()) {
                    log::warn!(
                        "TESSERA_KERNELS={v:?} is not tiled, coop or cpu; choosing by adapter"
                    );
                }
                if is_software_adapter(info) {
                    KernelFamily::Cpu
                } else {
                    KernelFamily::Tiled
                }
            }
        }
    }
}

impl GpuContext {
    /// Opens the preferred adapter headlessly.
    ///
    /// Honours `WGPU_BACKEND` (vulkan, metal, dx12, gl), `WGPU_ADAPTER_NAME` (a substring of the
    /// adapter name, case-insensitive) and `WGPU_POWER_PREF` (default: high performance). Requests
    /// the adapter's real limits and the optional features in [`WANTED_FEATURES`] it has.
    pub fn new() -> Result<Self> {
        pollster::block_on(Self::new_async())
    }

    /// [`Self::new`] as a future: the browser's form, where nothing may block.
    ///
    /// # Errors
    /// As [`Self::new`]: no adapter, an unknown `WGPU_BACKEND`, a refused device.
    pub async fn new_async() -> Result<Self> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        // Compute needs no GL; probing it only prints display-server noise on headless machines.
        desc.backends = match std::env::var("WGPU_BACKEND") {
            Ok(value) if !value.trim().is_empty() => {
                // wgpu ignores names it does not know, which would read as "no drivers".
                let known = [
                    "vulkan", "vk", "metal", "mtl", "dx12", "d3d12", "gl", "gles", "opengl",
                    "webgpu",
                ];
                let all_known = value
                    .split(',')
                    .all(|b| known.contains(&b.trim().to_ascii_lowercase().as_str()));
                match wgpu::Backends::from_env() {
                    Some(b) if all_known && !b.is_empty() => b,
                    _ => return Err(Error::UnknownBackend { value }),
                }
            }
            _ => wgpu::Backends::PRIMARY,
        };
        let backends = desc.backends;
        let instance = wgpu::Instance::new(desc);
        let adapter = choose_adapter(&instance, backends).await?;
        let info = adapter.get_info();
        let (features, experimental_features) = device_features(&adapter);
        let limits = adapter.limits();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("tessera"),
                required_features: features,
                required_limits: limits.clone(),
                experimental_features,
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| Error::RequestDevice {
                adapter: info.name.clone(),
                reason: e.to_string(),
            })?;
        Ok(Self::from_adapter(&adapter, device, queue))
    }

    /// [`Self::from_device`] knowing the adapter, so that cooperative-matrix kernels can be
    /// used where the device was created with them ([`device_features`]).
    pub fn from_adapter(adapter: &wgpu::Adapter, device: wgpu::Device, queue: wgpu::Queue) -> Self {
        let info = adapter.get_info();
        let mut ctx = Self::from_device(device, queue, info);
        if adapter.features().contains(COOPERATIVE_FEATURES) {
            // listed (`tessera info`) even where the device was made without them
            ctx.coop_configs = adapter.cooperative_matrix_properties();
        }
        if ctx.features.contains(COOPERATIVE_FEATURES) {
            ctx.coop = ctx.choose_coop_shape();
        }
        log::info!(
            "cooperative matrices: {} configurations, tensor-core kernels {}",
            ctx.coop_configs.len(),
            match ctx.coop {
                Some(shape) => format!("on ({shape})"),
                None => "off".to_owned(),
            }
        );
        ctx
    }

    /// The shape the tensor-core kernels take on this device ([`coop_candidates`]): where the
    /// adapter reports a fixed subgroup width, the candidate of that width; where it reports a
    /// range (Metal: 4–64), the candidate of the width a probe dispatch measures, kept only if
    /// the tensor-core kernels then pass [`coop_trial`](Self::coop_trial). The probe waits for
    /// the GPU (a few milliseconds, once per context), so it runs on native targets only;
    /// browsers offer no cooperative matrices. `TESSERA_COOP_SHAPE` overrides the choice.
    fn choose_coop_shape(&mut self) -> Option<CoopShape> {
        let subgroups = (self.info.subgroup_min_size, self.info.subgroup_max_size);
        let invocations = self.limits.max_compute_invocations_per_workgroup;
        if is_software_adapter(&self.info) && subgroups != (8, 8) {
            // lavapipe 26 at 512 bits (16-wide subgroups) crashes inside its pipeline compiler
            // on every cooperative-matrix kernel; at its default 256 bits (8) they run.
            log::info!(
                "cooperative matrices: off, a software adapter's {}–{}-wide subgroups (only \
                 8-wide ones are known to compile them)",
                subgroups.0,
                subgroups.1
            );
            return None;
        }
        let forced = crate::ops::strategy_from_env("TESSERA_COOP_SHAPE", &CoopShape::ALL);
        if let Some(shape) = forced {
            return self.forced_coop_shape(shape, subgroups, invocations);
        }
        let candidates =
            coop_candidates(subgroups, self.has_f16(), &self.coop_configs, invocations);
        if subgroups.0 == subgroups.1 {
            return candidates.first().copied();
        }
        if candidates.is_empty() || cfg!(target_arch = "wasm32") {
            return None;
        }
        self.probe_coop_shape(&candidates)
    }

    /// `TESSERA_COOP_SHAPE`'s shape (`m16`, `m16w64`, `m8w32`, `m8w16`, `m8`; a testing
    /// override) where its kernels compute right on this adapter: a configuration of its
    /// fragment size, a workgroup within the limit, and subgroups a whole multiple of the
    /// adapter's (fixed) width. Kernels compiled for wider subgroups than the adapter's are
    /// right, if wasteful: the adapter's subgroups within one of the kernel's all see the same
    /// subgroup index and repeat its work. That lets lavapipe's 8-wide subgroups run the
    /// 256- and 512-invocation mappings of `M8W16` and `M8W32` (`tools/dev/coop-lavapipe.sh`).
    fn forced_coop_shape(
        &self,
        shape: CoopShape,
        (sub_min, sub_max): (u32, u32),
        invocations: u32,
    ) -> Option<CoopShape> {
        let width = shape.subgroup();
        let fits = coop_candidates(
            (width, width),
            self.has_f16(),
            &self.coop_configs,
            invocations,
        )
        .contains(&shape);
        if fits && sub_min == sub_max && width.is_multiple_of(sub_max) {
            log::warn!("TESSERA_COOP_SHAPE: tensor-core kernels compiled for {shape}");
            Some(shape)
        } else {
            log::warn!(
                "TESSERA_COOP_SHAPE={shape:?} does not run on this adapter (subgroups \
                 {sub_min}–{sub_max}): tensor-core kernels off"
            );
            None
        }
    }

    /// The subgroup width this device's compute kernels run with, measured by one dispatch of a
    /// 128-invocation workgroup that reports the `subgroup_size` builtin: `Some(width)` if its
    /// invocations agree, `None` if not. What the context relies on where the adapter reports a
    /// range of widths. Waits for the GPU; needs `Features::SUBGROUP`.
    ///
    /// # Errors
    /// A device without `SUBGROUP` ([`Error::MissingFeature`]), a lost device, a failed
    /// readback.
    pub fn measure_subgroup_width(&self) -> Result<Option<u32>> {
        if !self.features.contains(wgpu::Features::SUBGROUP) {
            return Err(Error::MissingFeature {
                op: "subgroup width probe",
                feature: "SUBGROUP",
            });
        }
        super::probe::subgroup_width(self)
    }

    /// Whether every tensor-core kernel compiled for `shape` computes a small problem off its
    /// tiles right on this device: the matmuls and the convolution exactly (small integers),
    /// attention within 1e-2 of the plain flash kernel. Runs the kernels with `shape` whatever
    /// the context's own (which it leaves as it was); waits for the GPU.
    ///
    /// # Errors
    /// A lost device, a refused kernel (the adapter lacks the shape's configuration or
    /// workgroup size) or a failed readback.
    pub fn coop_trial(&mut self, shape: CoopShape) -> Result<bool> {
        // The kernels read the shape from the context.
        let before = self.coop.replace(shape);
        let trial = super::probe::coop_trial(self);
        self.coop = before;
        trial
    }

    /// What the context does to pick a cooperative-matrix shape where the adapter reports a
    /// range of subgroup widths: among `candidates`, the one whose width
    /// [`measure_subgroup_width`](Self::measure_subgroup_width) gives, kept if its kernels pass
    /// [`coop_trial`](Self::coop_trial); `None` (logged) otherwise. Public so that the kernel
    /// tests can run it where the width is fixed, and compare.
    pub fn probe_coop_shape(&mut self, candidates: &[CoopShape]) -> Option<CoopShape> {
        let width = match self.measure_subgroup_width() {
            Ok(Some(width)) => width,
            Ok(None) => {
                log::warn!("cooperative matrices: off, subgroup widths differ within a workgroup");
                return None;
            }
            Err(e) => {
                log::warn!("cooperative matrices: off, the subgroup-width probe failed: {e}");
                return None;
            }
        };
        let Some(&shape) = candidates.iter().find(|s| s.subgroup() == width) else {
            log::info!(
                "cooperative matrices: off, no kernel for the measured {width}-wide subgroups"
            );
            return None;
        };
        match self.coop_trial(shape) {
            Ok(true) => {
                log::info!("cooperative matrices: {width}-wide subgroups measured, trial exact");
                Some(shape)
            }
            Ok(false) => {
                log::warn!(
                    "cooperative matrices: off, the tensor-core kernels got the trial wrong with \
                     the measured {width}-wide subgroups"
                );
                None
            }
            Err(e) => {
                log::warn!("cooperative matrices: off, the trial failed: {e}");
                None
            }
        }
    }

    /// The cooperative-matrix shape the tensor-core kernels (`Coop16`, `Coop64`, the
    /// convolution's and attention's) run with on this device: an f16 × f16 → f32
    /// configuration of that fragment size and subgroups of exactly the width the kernels
    /// need (measured where the adapter reports a range); `None` without the feature or such a
    /// configuration. Whether they are *chosen* is up to the kernel family
    /// ([`KernelFamily::Tiled`] only): a CPU adapter that has them (lavapipe in Mesa 26) runs
    /// them only when asked for, in the kernel tests.
    pub fn cooperative_matrix(&self) -> Option<CoopShape> {
        self.coop
    }

    /// The adapter's cooperative-matrix configurations (what `tessera info` lists).
    pub fn cooperative_matrix_configs(&self) -> &[wgpu::CooperativeMatrixProperties] {
        &self.coop_configs
    }

    /// Wraps a device the caller owns (e.g. eframe's). The engine uses whatever limits and
    /// features that device was created with (no cooperative matrices: see
    /// [`Self::from_adapter`]).
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue, info: wgpu::AdapterInfo) -> Self {
        let limits = device.limits();
        let features = device.features();
        log::info!(
            "GPU: {} ({:?}, {:?}), driver {:?} {:?}; features: {:?}",
            info.name,
            info.backend,
            info.device_type,
            info.driver,
            info.driver_info,
            features & WANTED_FEATURES,
        );
        log::debug!(
            "limits: max_storage_buffer_binding_size {} B, max_buffer_size {} B, \
             workgroup storage {} B",
            limits.max_storage_buffer_binding_size,
            limits.max_buffer_size,
            limits.max_compute_workgroup_storage_size,
        );
        // wgpu's default handler panics; report through the next readback instead.
        let device_error = Arc::new(std::sync::Mutex::new(None::<String>));
        let slot = Arc::clone(&device_error);
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            log::error!("GPU error: {e}");
            if let Ok(mut s) = slot.lock() {
                s.get_or_insert_with(|| e.to_string());
            }
        }));
        // After a loss wgpu's helpers panic on the next buffer they create; the engine checks
        // this first and returns Error::DeviceLost instead.
        let lost = Arc::new(std::sync::Mutex::new(None::<String>));
        let lost_slot = Arc::clone(&lost);
        device.set_device_lost_callback(move |reason, message| {
            log::error!("GPU device lost ({reason:?}): {message}");
            if let Ok(mut s) = lost_slot.lock() {
                s.get_or_insert_with(|| format!("{reason:?}: {message}"));
            }
        });
        if is_software_adapter(&info) {
            log::warn!(
                "GPU adapter {:?} is a software rasterizer running on the CPU: results are \
                 correct but slow; install your GPU's Vulkan/Metal/DX12 driver for speed",
                info.name
            );
        }
        let pipelines = Pipelines::new(&device, &info);
        let kernels = KernelFamily::choose(&info);
        log::info!("kernel family: {kernels:?}");
        let tuner = Tuner::for_adapter(&info, kernels);
        Self {
            kernels,
            tuner,
            profile: std::sync::Mutex::new(None),
            dispatches: Default::default(),
            submits: Default::default(),
            record_ns: Default::default(),
            device,
            queue,
            info,
            pool: Arc::new(BufferPool::default()),
            pipelines,
            device_error,
            lost,
            limits,
            features,
            coop_configs: Vec::new(),
            coop: None,
        }
    }

    /// `Err(DeviceLost)` once the device is lost: nothing more can run on it; a fresh
    /// [`GpuContext`] (a new device) can.
    pub fn check_device(&self) -> Result<()> {
        match self.lost.lock().ok().and_then(|s| s.clone()) {
            Some(reason) => Err(Error::DeviceLost { reason }),
            None => Ok(()),
        }
    }

    /// The first asynchronous GPU error since the last call, if any.
    pub fn take_device_error(&self) -> Option<String> {
        self.device_error.lock().ok().and_then(|mut s| s.take())
    }

    /// Bytes of persisted driver pipeline cache this context started from: None without a
    /// cache (no `PIPELINE_CACHE` feature, `TESSERA_PIPELINE_CACHE=0`), 0 on a first run.
    pub fn pipeline_cache_loaded(&self) -> Option<usize> {
        self.pipelines.disk().map(|d| d.loaded)
    }

    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    pub fn features(&self) -> wgpu::Features {
        self.features
    }

    /// Starts (or restarts) collecting a per-kernel time breakdown of every recorder created
    /// from now on; returns how times will be measured.
    pub fn start_profile(&self) -> ProfileClock {
        let clock = if self.features.contains(wgpu::Features::TIMESTAMP_QUERY) {
            ProfileClock::GpuTimestamps
        } else {
            ProfileClock::WallClock
        };
        if let Ok(mut p) = self.profile.lock() {
            *p = Some(ProfileState::new(clock));
        }
        clock
    }

    /// Stops profiling and returns what was collected since [`Self::start_profile`].
    pub fn take_profile(&self) -> Option<Profile> {
        self.profile
            .lock()
            .ok()
            .and_then(|mut p| p.take())
            .map(ProfileState::finish)
    }

    pub(crate) fn profile_clock(&self) -> Option<ProfileClock> {
        self.profile
            .lock()
            .ok()
            .and_then(|p| p.as_ref().map(|s| s.clock))
    }

    pub(crate) fn add_profile_time(&self, name: &str, ms: f64) {
        if let Ok(mut p) = self.profile.lock()
            && let Some(s) = p.as_mut()
        {
            s.add(name, ms);
        }
    }

    /// The kernel variants the ops pick on this adapter.
    pub fn kernel_family(&self) -> KernelFamily {
        self.kernels
    }

    /// The kernel choices measured on this adapter ([`Tuner`]; on by default for GPUs,
    /// `TESSERA_TUNE` overrides).
    pub fn tuner(&self) -> &Tuner {
        &self.tuner
    }

    /// Replaces the tuner (tests; a caller that wants its own file or none).
    pub fn set_tuner(&mut self, tuner: Tuner) {
        self.tuner = tuner;
    }

    /// True when shaders may use `enable f16;`.
    pub fn has_f16(&self) -> bool {
        self.features.contains(wgpu::Features::SHADER_F16)
    }

    /// Dispatches and submissions so far; the difference of two readings is the work between.
    pub fn work_counts(&self) -> WorkCounts {
        use std::sync::atomic::Ordering::Relaxed;
        WorkCounts {
            dispatches: self.dispatches.load(Relaxed),
            submits: self.submits.load(Relaxed),
            record_ns: self.record_ns.load(Relaxed),
        }
    }

    /// Adds a recorder's host time to [`WorkCounts::record_ns`].
    pub(crate) fn count_record(&self, host: std::time::Duration) {
        let ns = u64::try_from(host.as_nanos()).unwrap_or(u64::MAX);
        self.record_ns
            .fetch_add(ns, std::sync::atomic::Ordering::Relaxed);
    }

    /// [`Self::submit_commands`] without counting the submission (kernel tuning's own work).
    pub(crate) fn submit_uncounted(
        &self,
        commands: impl IntoIterator<Item = wgpu::CommandBuffer>,
    ) -> wgpu::SubmissionIndex {
        self.queue.submit(commands)
    }

    pub(crate) fn count_dispatch(&self) {
        self.dispatches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Submits command buffers to the queue, counted in [`GpuContext::work_counts`].
    pub(crate) fn submit_commands(
        &self,
        commands: impl IntoIterator<Item = wgpu::CommandBuffer>,
    ) -> wgpu::SubmissionIndex {
        self.submits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.queue.submit(commands)
    }

    /// Bytes currently held by live tensors, and the most ever held at once.
    pub fn memory_stats(&self) -> (u64, u64) {
        self.pool.stats()
    }

    /// Starts a new peak for [`GpuContext::memory_stats`] (the bytes live now), keeping the
    /// idle pooled buffers for reuse.
    pub fn reset_peak(&self) {
        self.pool.reset_peak();
    }

    /// Frees every idle pooled buffer.
    pub fn trim_pool(&self) {
        self.pool.trim();
    }

    /// Blocks until all submitted work has finished.
    pub fn wait_idle(&self) {
        if let Err(e) = self.device.poll(wgpu::PollType::wait_indefinitely()) {
            log::warn!("device poll failed: {e}");
        }
    }

    /// Checks that a buffer of `bytes` can be bound as one storage binding (and allocated).
    pub fn check_binding(&self, name: &str, bytes: u64) -> Result<()> {
        self.check_buffer(name, bytes)?;
        let limit = self.limits.max_storage_buffer_binding_size;
        if bytes > limit {
            return Err(Error::OverLimit {
                name: name.to_owned(),
                bytes,
                limit_name: "max_storage_buffer_binding_size",
                limit,
            });
        }
        Ok(())
    }

    /// Checks that a buffer of `bytes` can be allocated. Such a buffer may still be too large
    /// to bind whole: the ops that meet one (convolutions, group norm, upsampling, elementwise
    /// sums) split their work into pieces that fit (see `ops::chunked`); any other dispatch
    /// that binds it returns [`Error::OverLimit`].
    pub fn check_buffer(&self, name: &str, bytes: u64) -> Result<()> {
        self.check_device()?;
        if bytes > self.limits.max_buffer_size {
            return Err(Error::OverLimit {
                name: name.to_owned(),
                bytes,
                limit_name: "max_buffer_size",
                limit: self.limits.max_buffer_size,
            });
        }
        Ok(())
    }

    /// Lowers the storage-binding limit the engine plans with to `bytes` (never raises it), so
    /// that tests can exercise on any adapter the split work that adapters with small limits
    /// (128 MiB: lavapipe, WebGPU's default, many integrated GPUs) need at full size.
    #[doc(hidden)]
    pub fn lower_binding_limit_for_tests(&mut self, bytes: u64) {
        let l = &mut self.limits.max_storage_buffer_binding_size;
        *l = (*l).min(bytes);
    }
}

async fn choose_adapter(
    instance: &wgpu::Instance,
    backends: wgpu::Backends,
) -> Result<wgpu::Adapter> {
    if let Ok(wanted) = std::env::var("WGPU_ADAPTER_NAME") {
        let adapters = instance.enumerate_adapters(backends).await;
        let wanted_lower = wanted.to_lowercase();
        let mut names = Vec::new();
        for adapter in adapters {
            let info = adapter.get_info();
            if info.name.to_lowercase().contains(&wanted_lower) {
                return Ok(adapter);
            }
            names.push(format!("{} ({:?})", info.name, info.backend));
        }
        return Err(Error::AdapterNotFound {
            wanted,
            available: if names.is_empty() {
                "none".into()
            } else {
                names.join(", ")
            },
        });
    }
    let power_preference =
        wgpu::PowerPreference::from_env().unwrap_or(wgpu::PowerPreference::HighPerformance);
    instance
        .request_adapter(&wgpu::RequestAdapterOptions {
            power_preference,
            force_fallback_adapter: false,
            compatible_surface: None,
            apply_limit_buckets: false,
        })
        .await
        .map_err(|_| Error::NoAdapter {
            backends: format!("backends tried: {backends:?}"),
        })
}

/// True for adapters that run on the CPU (lavapipe/llvmpipe, SwiftShader, WARP).
pub fn is_software_adapter(info: &wgpu::AdapterInfo) -> bool {
    let name = info.name.to_lowercase();
    info.device_type == wgpu::DeviceType::Cpu
        || [
            "llvmpipe",
            "lavapipe",
            "swiftshader",
            "warp",
            "basic render",
        ]
        .iter()
        .any(|s| name.contains(s))
}

#[cfg(test)]
mod tests {
    use super::{CoopShape, coop_candidates};
    use wgpu::CooperativeScalarType::{F16, F32};

    fn config(
        size: u32,
        ab: wgpu::CooperativeScalarType,
        cr: wgpu::CooperativeScalarType,
    ) -> wgpu::CooperativeMatrixProperties {
        wgpu::CooperativeMatrixProperties {
            m_size: size,
            n_size: size,
            k_size: size,
            ab_type: ab,
            cr_type: cr,
            saturating_accumulation: false,
        }
    }

    /// Configurations like those adapters list (the H200 through Vulkan: 16×16×16, 16×8×16 and
    /// 16×8×8 f16 → f16/f32 with 32-wide subgroups, docs/benchmarks.md; lavapipe in Mesa 26:
    /// 8×8×8 with subgroups of 8, 4 or 16 at 256, 128 or 512 bits; wgpu's Metal backend: three
    /// 8×8 configurations with subgroups of 4–64; AMD through Vulkan: 16×16×16 with 32–64) and
    /// the shapes the kernels could take there, first the one they take where the width is
    /// fixed.
    #[test]
    fn coop_candidates_need_f16_to_f32_fragments_a_kernel_subgroup_width_and_the_invocations() {
        use CoopShape::{M8, M8W16, M8W32, M16, M16W64};
        let nvidia = [config(16, F16, F16), config(16, F16, F32)];
        assert_eq!(coop_candidates((32, 32), true, &nvidia, 1024), [M16]);
        assert!(
            coop_candidates((32, 32), false, &nvidia, 1024).is_empty(),
            "no f16 shaders"
        );
        assert_eq!(
            coop_candidates((32, 64), true, &nvidia, 1024),
            [M16, M16W64],
            "AMD"
        );
        assert_eq!(
            coop_candidates((32, 64), true, &nvidia, 128),
            [M16],
            "128 invocations"
        );
        let lavapipe = [config(8, F16, F16), config(8, F16, F32)];
        assert_eq!(coop_candidates((8, 8), true, &lavapipe, 1024), [M8]);
        assert!(
            coop_candidates((4, 4), true, &lavapipe, 1024).is_empty(),
            "128-bit lavapipe"
        );
        assert_eq!(
            coop_candidates((16, 16), true, &lavapipe, 1024),
            [M8W16],
            "512 bits"
        );
        assert!(
            coop_candidates((16, 16), true, &lavapipe, 128).is_empty(),
            "256 needed"
        );
        let metal = [
            config(8, F32, F32),
            config(8, F16, F16),
            config(8, F16, F32),
        ];
        assert_eq!(
            coop_candidates((4, 64), true, &metal, 1024),
            [M8W32, M8W16, M8]
        );
        assert_eq!(coop_candidates((4, 64), true, &metal, 256), [M8W16, M8]);
        assert!(
            coop_candidates((32, 32), true, &[config(16, F16, F16)], 1024).is_empty(),
            "f16 accumulators only"
        );
        assert!(coop_candidates((32, 32), true, &[], 1024).is_empty());
    }

    /// Each shape's 64×64-tile workgroup is (64 / 2·size)² subgroups of its width, within the
    /// 128–512 invocations `matmul_coop64.wgsl` and `conv2d_coop.wgsl` share their loads over,
    /// and attention's 128 invocations are whole subgroups of it.
    #[test]
    fn coop_shapes_fit_the_kernels_mappings() {
        for shape in CoopShape::ALL {
            let per_side = 64 / (2 * shape.size());
            assert_eq!(
                shape.workgroup(),
                per_side * per_side * shape.subgroup(),
                "{shape:?}"
            );
            assert!([128, 256, 512].contains(&shape.workgroup()), "{shape:?}");
            assert_eq!(128 % shape.subgroup(), 0, "{shape:?}");
        }
    }
}
