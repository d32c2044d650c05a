//! The desktop app: tokens filling in live, replay, inpainting brush, and a compare mode for
//! samplers and schedules. Generation runs on worker threads on eframe's own wgpu device,
//! through the same engine pipeline as `--render`; these modules only present. One module per
//! panel, each owning its state (as egui's demo app is laid out): the top bar and open model
//! (`session`), the settings (`settings`), runs and their lanes (`runs`), inpainting
//! (`inpaint`), compare mode (`compare`), saving (`save`), the screenshot mode (`screenshot`).

mod app;
mod canvas;
mod compare;
mod dialogs;
mod history;
mod inpaint;
mod runs;
mod save;
mod screenshot;
mod session;
mod settings;
#[cfg(test)]
mod tests;
mod worker;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;

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

/// Opens the window. With `--screenshot`, runs one generation with `args`, saves a screenshot
/// of the whole window once the last step is shown, and closes.
pub fn run(args: &RenderArgs, shot: &ScreenshotArgs) -> Result<()> {
    if !(shot.compare.is_empty() || (2..=4).contains(&shot.compare.len())) {
        anyhow::bail!("--compare takes 2 to 4 configurations");
    }
    let shot = shot.clone();
    let mut wgpu_options = egui_wgpu::WgpuConfiguration::default();
    if let egui_wgpu::WgpuSetup::CreateNew(create) = &mut wgpu_options.wgpu_setup {
        // The default descriptor asks for no features and default limits; the engine wants
        // the adapter's real limits and its optional features (cooperative matrices with their
        // experimental opt-in included), as its own devices get them.
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
