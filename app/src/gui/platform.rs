//! What differs between the desktop and the browser, in one place; the panels call these and
//! never ask which platform they are on.
//!
//! | | desktop | browser |
//! |---|---|---|
//! | work off the UI ([`spawn`]) | a worker thread | a task on the page's event loop |
//! | GPU readbacks ([`READBACK`]) | block the worker thread | awaited |
//! | a model's files ([`fetch_model`]) | the folder, or the hub into the local cache | fetched into memory (beside the page, or from the hub) |
//! | saving ([`deliver`]) | a file (in the working directory, or where a dialog says) | a download |
//! | file dialogs ([`HAS_DIALOGS`]) | native dialogs | none: files are dropped on the page |
//! | restart after a lost device ([`restart`]) | a new process | the page reloaded |
//! | the engine's device ([`gpu_of`], [`open_gpu`]) | eframe's own wgpu device | a WebGPU device of its own (the UI draws with WebGL) |
//! | step previews ([`Textures`]) | copied into textures on the GPU | read back into egui textures |

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use tessera_engine::Readback;

use crate::hub::DownloadStatus;

/// How the app's GPU readbacks wait: natively its work runs on worker threads, which may block;
/// in the browser everything shares the page's one thread, which must not.
#[cfg(not(target_arch = "wasm32"))]
pub const READBACK: Readback = Readback::Block;
#[cfg(target_arch = "wasm32")]
pub const READBACK: Readback = Readback::Await;

/// Whether native file dialogs exist (Browse…, Open image…, Save as…).
pub const HAS_DIALOGS: bool = cfg!(not(target_arch = "wasm32"));

/// Runs the future `make` returns off the UI: on a new thread natively (driven to its end
/// there, its readbacks blocking that thread), as a task on the page's event loop in the
/// browser (its readbacks awaited, so the page keeps drawing between them).
#[cfg(not(target_arch = "wasm32"))]
pub fn spawn<F, Fut>(make: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    std::thread::spawn(move || pollster::block_on(make()));
}

#[cfg(target_arch = "wasm32")]
pub fn spawn<F, Fut>(make: F)
where
    F: FnOnce() -> Fut + 'static,
    Fut: Future<Output = ()> + 'static,
{
    wasm_bindgen_futures::spawn_local(make());
}

/// Whether opening the model `arg` (None: the default model) must first fetch its files:
/// natively an uncached hub id; in the browser any model whose files are not in memory yet.
pub fn needs_fetch(arg: Option<&str>) -> bool {
    #[cfg(not(target_arch = "wasm32"))]
    return arg.is_some_and(crate::hub::needs_download);
    #[cfg(target_arch = "wasm32")]
    return !crate::hub::web::is_fetched(arg);
}

/// Fetches the files of model `arg` (see [`needs_fetch`]) off the UI, reporting into `status`
/// and, at the end, into `done` (the error as one line). In the browser a model over the
/// page's limits (or `device`'s) is refused before its weights are fetched (see
/// [`crate::hub::web`]).
pub fn fetch_model(
    arg: Option<String>,
    device: crate::hub::DeviceLimits,
    status: Arc<Mutex<DownloadStatus>>,
    done: Arc<Mutex<Option<Result<(), String>>>>,
) {
    spawn(move || async move {
        #[cfg(not(target_arch = "wasm32"))]
        let r = {
            let _ = device; // the desktop's loader checks each tensor as it loads
            match &arg {
                Some(id) => crate::hub::download(id, &status, false),
                None => Ok(()),
            }
        };
        #[cfg(target_arch = "wasm32")]
        let r = crate::hub::web::fetch(arg.as_deref(), &status, device).await;
        if let Ok(mut d) = done.lock() {
            *d = Some(r.map_err(|e| format!("{e:#}")));
        }
    });
}

/// Where a saved file goes: a file name in the working directory natively (a download of that
/// name in the browser), or a path a dialog gave.
#[derive(Clone, Debug)]
pub enum Destination {
    Quick(String),
    Path(PathBuf),
}

/// Hands `bytes` to the user: writes the file natively, starts a download in the browser;
/// returns what the status line says.
pub fn deliver(to: &Destination, bytes: &[u8]) -> Result<String> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let path = match to {
            Destination::Quick(name) => PathBuf::from(name),
            Destination::Path(p) => p.clone(),
        };
        crate::files::write_atomically(&path, bytes)?;
        Ok(format!("saved {}", path.display()))
    }
    #[cfg(target_arch = "wasm32")]
    {
        let name = match to {
            Destination::Quick(name) => name.clone(),
            Destination::Path(p) => p.display().to_string(),
        };
        super::page::download(&name, bytes).map_err(|e| anyhow::anyhow!(e))?;
        Ok(format!("downloaded {name}"))
    }
}

/// After a lost device: natively starts a new tessera process with this one's arguments (the
/// caller then closes the window); in the browser reloads the page.
pub fn restart() -> Result<()> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        use anyhow::Context;
        super::session::restart_command()?
            .spawn()
            .context("starting a new tessera process")?;
        Ok(())
    }
    #[cfg(target_arch = "wasm32")]
    {
        super::page::reload().map_err(|e| anyhow::anyhow!(e))
    }
}

/// Runs `fut` now natively (on the calling worker thread, its readbacks blocking it), or as a
/// task after the current one in the browser (tasks run in the order they were spawned, so
/// what one run posts this way arrives in order).
#[cfg(not(target_arch = "wasm32"))]
pub fn run_soon(fut: impl Future<Output = ()>) {
    pollster::block_on(fut);
}

#[cfg(target_arch = "wasm32")]
pub fn run_soon(fut: impl Future<Output = ()> + 'static) {
    wasm_bindgen_futures::spawn_local(fut);
}

/// The engine's device: natively eframe's own wgpu device, which the previews are copied
/// into on the GPU. In the browser the engine opens a WebGPU device of its own
/// ([`open_gpu`]) and eframe draws with WebGL (glow): a WebGPU canvas loses its device in
/// headless Chromium on SwiftShader (the CI browser), so the page does not depend on one; the
/// previews are read back and handed to egui as images.
#[cfg(not(target_arch = "wasm32"))]
pub fn gpu_of(textures: &Textures) -> Option<tessera_engine::GpuContext> {
    let rs = &textures.rs;
    Some(tessera_engine::GpuContext::from_adapter(
        &rs.adapter,
        rs.device.clone(),
        rs.queue.clone(),
    ))
}

#[cfg(target_arch = "wasm32")]
pub fn gpu_of(_: &Textures) -> Option<tessera_engine::GpuContext> {
    None
}

/// What [`open_gpu`] delivers.
pub type PendingGpu = Arc<Mutex<Option<Result<tessera_engine::GpuContext, String>>>>;

/// Opens the engine's own device off the UI (the browser; see [`gpu_of`]).
pub fn open_gpu() -> PendingGpu {
    let slot: PendingGpu = Arc::default();
    let out = slot.clone();
    spawn(move || async move {
        let gpu = tessera_engine::GpuContext::new_async()
            .await
            .map_err(|e| e.to_string());
        if let Ok(mut s) = out.lock() {
            *s = Some(gpu);
        }
    });
    slot
}

/// Where previews become egui textures: natively eframe's wgpu renderer (textures copied on
/// the GPU, never read back), in the browser egui's own texture manager (read back first).
#[derive(Clone)]
pub struct Textures {
    #[cfg(not(target_arch = "wasm32"))]
    rs: egui_wgpu::RenderState,
    #[cfg(target_arch = "wasm32")]
    ctx: egui::Context,
}

impl Textures {
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new(rs: egui_wgpu::RenderState) -> Self {
        Self { rs }
    }

    #[cfg(target_arch = "wasm32")]
    pub fn new(ctx: egui::Context) -> Self {
        Self { ctx }
    }

    /// Submits `rec`, whose last op packed an image of `size` (width, height) into `packed`
    /// (RGBA8 rows of `ops::layout::rgba8_row_pitch`), and registers that image twice,
    /// sampled nearest and linear.
    ///
    /// # Errors
    /// A failed submission or readback (a lost device).
    pub async fn register(
        &self,
        gpu: &tessera_engine::GpuContext,
        rec: tessera_engine::Recorder<'_>,
        packed: &tessera_engine::Tensor,
        (w, h): (usize, usize),
    ) -> tessera_engine::Result<super::worker::Preview> {
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = gpu;
            let mut rec = rec;
            let rs = &self.rs;
            let texture = rs.device.create_texture(&wgpu::TextureDescriptor {
                label: Some("tessera preview"),
                size: wgpu::Extent3d {
                    width: w as u32,
                    height: h as u32,
                    depth_or_array_layers: 1,
                },
                mip_level_count: 1,
                sample_count: 1,
                dimension: wgpu::TextureDimension::D2,
                format: wgpu::TextureFormat::Rgba8Unorm,
                usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
                view_formats: &[],
            });
            rec.copy_to_texture(packed, &texture)?;
            rec.submit();
            let view = texture.create_view(&wgpu::TextureViewDescriptor::default());
            let mut r = rs.renderer.write();
            Ok(super::worker::Preview {
                crisp: r.register_native_texture(&rs.device, &view, wgpu::FilterMode::Nearest),
                smooth: r.register_native_texture(&rs.device, &view, wgpu::FilterMode::Linear),
            })
        }
        #[cfg(target_arch = "wasm32")]
        {
            rec.submit();
            let bytes = packed.download_bytes_async(gpu).await?;
            let pitch = bytes.len() / h.max(1);
            let mut rgba = Vec::with_capacity(4 * w * h);
            for row in bytes.chunks_exact(pitch.max(1)).take(h) {
                rgba.extend_from_slice(&row[..4 * w]);
            }
            let image =
                std::sync::Arc::new(egui::ColorImage::from_rgba_unmultiplied([w, h], &rgba));
            let m = self.ctx.tex_manager();
            let mut m = m.write();
            let mut add = |options| {
                m.alloc(
                    "tessera preview".into(),
                    egui::ImageData::Color(image.clone()),
                    options,
                )
            };
            Ok(super::worker::Preview {
                crisp: add(egui::TextureOptions::NEAREST),
                smooth: add(egui::TextureOptions::LINEAR),
            })
        }
    }

    /// Gives textures [`Textures::register`] made back.
    pub fn free(&self, ids: impl IntoIterator<Item = egui::TextureId>) {
        #[cfg(not(target_arch = "wasm32"))]
        {
            let mut r = self.rs.renderer.write();
            for id in ids {
                r.free_texture(&id);
            }
        }
        #[cfg(target_arch = "wasm32")]
        {
            let m = self.ctx.tex_manager();
            let mut m = m.write();
            for id in ids {
                m.free(id);
            }
        }
    }
}
