//! Shader modules and compute pipelines: [`Pipelines`] compiles each [`KernelSpec`] once per
//! device and keeps it for the process; [`DiskPipelineCache`] is the driver's compiled code
//! (wgpu's `PipelineCache`), persisted under the user's cache folder so that the next process
//! on the same adapter and driver skips the driver's compilation.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use crate::shaders::{KernelSpec, Module};

/// The compiled pipelines of one device, by kernel configuration.
pub struct Pipelines {
    modules: Mutex<HashMap<Module, Arc<wgpu::ShaderModule>>>,
    pipelines: Mutex<HashMap<String, Arc<wgpu::ComputePipeline>>>,
    disk: Option<DiskPipelineCache>,
    /// Pipelines compiled by this process (the disk cache is written back when any were).
    compiled: std::sync::atomic::AtomicUsize,
}

impl Drop for Pipelines {
    fn drop(&mut self) {
        if let Some(d) = &self.disk
            && *self.compiled.get_mut() > 0
        {
            d.save();
        }
    }
}

/// wgpu's pipeline cache of one adapter and driver, read from and written back to
/// `<cache>/tessera/pipelines/<wgpu::util::pipeline_cache_key>`.
pub struct DiskPipelineCache {
    cache: wgpu::PipelineCache,
    path: PathBuf,
    /// Bytes read at start (0: none).
    pub loaded: usize,
}

/// The user's cache folder: `$XDG_CACHE_HOME`, `~/.cache`, `%LOCALAPPDATA%`, else the temporary
/// folder.
pub fn user_cache_dir() -> PathBuf {
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty());
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| home.map(|h| PathBuf::from(h).join(".cache")))
        .or_else(|| std::env::var_os("LOCALAPPDATA").map(PathBuf::from))
        .unwrap_or_else(std::env::temp_dir)
}

impl DiskPipelineCache {
    /// The cache for `device`, seeded from disk when an earlier process left one; None when
    /// the device lacks `Features::PIPELINE_CACHE`, the backend has no cache key, or
    /// `TESSERA_PIPELINE_CACHE=0`.
    pub fn open(device: &wgpu::Device, info: &wgpu::AdapterInfo) -> Option<Self> {
        if std::env::var("TESSERA_PIPELINE_CACHE").is_ok_and(|v| v == "0")
            || !device.features().contains(wgpu::Features::PIPELINE_CACHE)
        {
            return None;
        }
        let path = user_cache_dir()
            .join("tessera/pipelines")
            .join(wgpu::util::pipeline_cache_key(info)?);
        let data = std::fs::read(&path).ok();
        let loaded = data.as_ref().map_or(0, Vec::len);
        log::debug!("pipeline cache {}: {loaded} bytes", path.display());
        let cache = create(device, data.as_deref());
        Some(Self {
            cache,
            path,
            loaded,
        })
    }

    /// Writes the cache's current contents back (atomically: a temporary file renamed over the
    /// old one); failures only log.
    pub fn save(&self) {
        let Some(data) = self.cache.get_data() else {
            return;
        };
        match write_atomically(&self.path, &data) {
            Ok(()) => log::debug!(
                "pipeline cache {}: saved {} bytes",
                self.path.display(),
                data.len()
            ),
            Err(e) => log::warn!("pipeline cache {}: {e}", self.path.display()),
        }
    }
}

/// Writes `data` to `path` through a temporary file renamed over it, so that a reader never
/// sees half a file and concurrent writers never share a temporary; creates the folder.
pub(crate) fn write_atomically(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    static SAVES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SAVES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}

/// The one unsafe call of the pipeline cache.
#[allow(unsafe_code)]
fn create(device: &wgpu::Device, data: Option<&[u8]>) -> wgpu::PipelineCache {
    // SAFETY: `data` is only ever bytes that `PipelineCache::get_data` returned, written by
    // `DiskPipelineCache::save` to a file named by `wgpu::util::pipeline_cache_key` of this
    // adapter (vendor, device, driver); wgpu and the driver validate the header and, with
    // `fallback: true`, start an empty cache for data they do not accept.
    unsafe {
        device.create_pipeline_cache(&wgpu::PipelineCacheDescriptor {
            label: Some("tessera"),
            data,
            fallback: true,
        })
    }
}

/// Which of the checks wgpu injects into shaders the engine's own kernels keep
/// (`TESSERA_SHADER_CHECKS`, read once).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShaderChecks {
    /// `full`: everything wgpu injects (`ShaderRuntimeChecks::checked`).
    Full,
    /// `bounds` (the default): bounds checks and integer-division guards, but no loop-bounding
    /// counters. Every loop of the kernels is a `for` over a finite range; the counter wgpu
    /// adds to each keeps drivers from unrolling them.
    Bounds,
    /// `none`: no injected checks at all (for measuring what the checks cost).
    None,
}

impl ShaderChecks {
    pub fn get() -> Self {
        static CHECKS: std::sync::OnceLock<ShaderChecks> = std::sync::OnceLock::new();
        *CHECKS.get_or_init(
            || match std::env::var("TESSERA_SHADER_CHECKS").ok().as_deref() {
                None | Some("" | "bounds") => ShaderChecks::Bounds,
                Some("full") => ShaderChecks::Full,
                Some("none") => ShaderChecks::None,
                Some(v) => {
                    log::warn!(
                        "TESSERA_SHADER_CHECKS={v:?} is not full, bounds or none; using bounds"
                    );
                    ShaderChecks::Bounds
                }
            },
        )
    }
}

/// The one unsafe call of shader compilation.
#[allow(unsafe_code)]
fn create_module(
    device: &wgpu::Device,
    desc: wgpu::ShaderModuleDescriptor<'_>,
    checks: ShaderChecks,
) -> wgpu::ShaderModule {
    let checked = wgpu::ShaderRuntimeChecks::checked();
    let runtime_checks = match checks {
        ShaderChecks::Full => return device.create_shader_module(desc),
        ShaderChecks::Bounds => wgpu::ShaderRuntimeChecks {
            force_loop_bounding: false,
            ..checked
        },
        ShaderChecks::None => wgpu::ShaderRuntimeChecks {
            bounds_checks: false,
            force_loop_bounding: false,
            int_div_checks: false,
            ..checked
        },
    };
    // SAFETY: only the engine's own WGSL (`shaders/`, embedded at build time) comes here, never
    // user input. Without loop bounding, every loop must terminate: the kernels have no `loop`
    // or `while`, only `for` loops over finite u32 ranges with positive steps. With `None`,
    // indices must stay in bounds and divisors non-zero: every storage access is guarded by the
    // kernel's own bounds test, workgroup and private arrays are indexed within their declared
    // sizes, and the kernel tests run every kernel on sizes off its tiles against a CPU
    // reference; but nothing proves every divisor non-zero, so `None` is only a measuring mode
    // that a user opts into by environment variable, never the default.
    unsafe { device.create_shader_module_trusted(desc, runtime_checks) }
}

impl Pipelines {
    /// The map for `device`, with the persisted driver cache where the device has one.
    pub fn new(device: &wgpu::Device, info: &wgpu::AdapterInfo) -> Self {
        Self {
            modules: Mutex::default(),
            pipelines: Mutex::default(),
            disk: DiskPipelineCache::open(device, info),
            compiled: Default::default(),
        }
    }

    /// The persisted driver cache, if any.
    pub fn disk(&self) -> Option<&DiskPipelineCache> {
        self.disk.as_ref()
    }

    fn module(&self, device: &wgpu::Device, module: Module) -> Arc<wgpu::ShaderModule> {
        let mut map = self.modules.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(map.entry(module).or_insert_with(|| {
            let source = module.source();
            Arc::new(create_module(
                device,
                wgpu::ShaderModuleDescriptor {
                    label: Some(&module.name()),
                    source: wgpu::ShaderSource::Wgsl(source.into()),
                },
                ShaderChecks::get(),
            ))
        }))
    }

    /// The pipeline for `spec`, compiled on first use.
    pub fn get(&self, device: &wgpu::Device, spec: &KernelSpec) -> Arc<wgpu::ComputePipeline> {
        let key = spec.to_string();
        if let Some(p) = self
            .pipelines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return Arc::clone(p);
        }
        let module = self.module(device, spec.module);
        log::debug!("compiling pipeline {key}");
        self.compiled
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pipeline = Arc::new(
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&key),
                layout: None,
                module: &module,
                entry_point: Some(spec.entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &spec.constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: self.disk.as_ref().map(|d| &d.cache),
            }),
        );
        let mut map = self
            .pipelines
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(map.entry(key).or_insert(pipeline))
    }

    /// Number of compiled pipelines.
    pub fn len(&self) -> usize {
        self.pipelines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
