//! The app, on the desktop ([`run`]) and in the browser ([`start_web`], built by `web/`): tokens
//! filling in live, replay, inpainting brush, and a compare mode for samplers and schedules.
//! Generation runs off the UI on eframe's own wgpu device (Vulkan, Metal, DX12 or WebGPU),
//! through the same engine pipeline as `--render`; these modules only present. One module per
//! panel, each owning its state (as egui's demo app is laid out): the top bar and open model
//! (`session`), the settings (`settings`), runs and their lanes (`runs`), inpainting
//! (`inpaint`), compare mode (`compare`), saving (`save`), the screenshot mode (`screenshot`).
//! What differs between the desktop and the browser is in `platform` (and, for the page
//! around the app, `page`).

mod app;
mod canvas;
mod compare;
mod dialogs;
mod history;
mod inpaint;
#[cfg(target_arch = "wasm32")]
pub mod page;
mod platform;
mod runs;
mod save;
mod screenshot;
mod session;
mod settings;
#[cfg(test)]
mod tests;
mod worker;

use std::path::PathBuf;
#[cfg(not(target_arch = "wasm32"))]
use std::sync::Arc;

use anyhow::Result;

#[cfg(not(target_arch = "wasm32"))]
use crate::render::RenderArgs;
use app::App;

/// Options of the app's screenshot mode (and its initial Compare set-up).
#[derive(clap::Args, Clone, Default)]
pub struct ScreenshotArgs {
    /// Open the app, run one generation with the given options, save a screenshot of the
    /// window once the last step is shown, and exit.
    #[arg(long, value_name = "OUT.png", conflicts_with = "render")]
    pub screenshot: Option<PathBuf>,
    /// With --screenshot: show this step (1-based) of the run instead of the last.
    #[arg(long, value_name = "N", requires = "screenshot")]
    pub screenshot_step: Option<usize>,
    /// Start in Compare mode with these configurations, e.g. amused:cosine,amused:linear; a
    /// lane can name its own model: amused:cosine@path/to/model.
    #[arg(long, value_name = "SAMPLER:SCHEDULE[@MODEL],..", value_delimiter = ',', value_parser = parse_lane)]
    pub compare: Vec<compare::CompareLane>,
    /// Run one generation once the model is open (the page's `run=1`).
    #[arg(skip)]
    pub run: bool,
}

fn parse_lane(s: &str) -> Result<compare::CompareLane, String> {
    let (lane, model) = s.split_once('@').unwrap_or((s, ""));
    let (k, sch) = lane
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: expected SAMPLER:SCHEDULE[@MODEL]"))?;
    Ok(compare::CompareLane {
        model: model.to_owned(),
        ..compare::CompareLane::new(k.parse()?, sch.parse()?)
    })
}

/// eframe's wgpu set-up with the device the engine wants. The default descriptor asks for no
/// features and default limits; the engine wants the adapter's real limits (in the browser:
/// whatever the adapter grants beyond WebGPU's 128 MiB binding / 256 MiB buffer defaults) and
/// its optional features (`shader-f16`; cooperative matrices with their experimental opt-in),
/// as its own devices get them.
#[cfg(not(target_arch = "wasm32"))]
fn wgpu_configuration() -> egui_wgpu::WgpuConfiguration {
    let mut wgpu_options = egui_wgpu::WgpuConfiguration::default();
    if let egui_wgpu::WgpuSetup::CreateNew(create) = &mut wgpu_options.wgpu_setup {
        create.device_descriptor = Arc::new(|adapter: &wgpu::Adapter| {
            let (required_features, experimental_features) =
                tessera_engine::gpu::device_features(adapter);
            wgpu::DeviceDescriptor {
                label: Some("tessera"),
                required_features,
                required_limits: adapter.limits(),
                experimental_features,
                ..Default::default()
            }
        });
    }
    wgpu_options
}

/// The browser's entry point (called by `web/` when the page loads): starts the app on the
/// page's `<canvas id="tessera">`, with the options the page's URL gives ([`page::args`]; a
/// bad one is reported in the page). Panics and log lines go to the browser's console; a
/// failure to start ends the title with ` — error: …`.
#[cfg(target_arch = "wasm32")]
pub fn start_web() {
    use wasm_bindgen::JsCast;
    console_error_panic_hook::set_once();
    let _ = eframe::WebLogger::init(log::LevelFilter::Info);
    wasm_bindgen_futures::spawn_local(async {
        let canvas = web_sys::window()
            .and_then(|w| w.document())
            .and_then(|d| d.get_element_by_id("tessera"))
            .and_then(|e| e.dyn_into::<web_sys::HtmlCanvasElement>().ok());
        let Some(canvas) = canvas else {
            page::set_title_suffix(" — error: the page has no canvas #tessera");
            return;
        };
        let args = page::args();
        let options = eframe::WebOptions::default();
        let runner = eframe::WebRunner::new();
        let started = runner
            .start(
                canvas,
                options,
                Box::new(move |cc| {
                    let defaults = Default::default();
                    let (render, shot) = args.as_ref().unwrap_or(&defaults);
                    page::attach(&cc.egui_ctx);
                    let mut app = App::new(cc, render, shot);
                    if let Err(e) = &args {
                        page::set_title_suffix(&format!(" — error: {e}"));
                        app.session.message = Some(e.clone());
                    }
                    Ok(Box::new(app))
                }),
            )
            .await;
        match started {
            // The runner lives as long as the page (dropping it would drop the app and its
            // device).
            Ok(()) => RUNNER.with(|r| *r.borrow_mut() = Some(runner)),
            Err(e) => page::set_title_suffix(&format!(" — error: could not start the app: {e:?}")),
        }
    });
}

#[cfg(target_arch = "wasm32")]
thread_local! {
    /// The page's app runner (see [`start_web`]).
    static RUNNER: std::cell::RefCell<Option<eframe::WebRunner>> = const { std::cell::RefCell::new(None) };
}

/// Opens the window. With `--screenshot`, runs one generation with `args`, saves a screenshot
/// of the whole window once the last step is shown, and closes.
#[cfg(not(target_arch = "wasm32"))]
pub fn run(args: &RenderArgs, shot: &ScreenshotArgs) -> Result<()> {
    if !(shot.compare.is_empty() || (2..=4).contains(&shot.compare.len())) {
        anyhow::bail!("--compare takes 2 to 4 configurations");
    }
    let shot = shot.clone();
    let wgpu_options = wgpu_configuration();
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_inner_size([1280.0, 820.0])
            .with_title("tessera"),
        wgpu_options,
        ..Default::default()
    };
    let args = args.clone();
    let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failed2 = failed.clone();
    eframe::run_native(
        "tessera",
        options,
        Box::new(move |cc| {
            let app = App::new(cc, &args, &shot);
            let f = app.session.failed.clone();
            std::thread::spawn(move || {
                // Mirror the app's failure flag for the caller.
                while !f.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
                failed2.store(true, std::sync::atomic::Ordering::Relaxed);
            });
            Ok(Box::new(app))
        }),
    )
    .map_err(|e| {
        anyhow::anyhow!("could not open the window: {e} (without a display, render headlessly with --render OUT.png)")
    })?;
    if failed.load(std::sync::atomic::Ordering::Relaxed) {
        anyhow::bail!("generation failed in the app (see the message above)");
    }
    Ok(())
}
