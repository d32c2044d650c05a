//! The open model and device, and the top bar: the model field, the adapter, status messages,
//! and the restart offer after a lost device.

use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use egui::Color32;
use tessera_engine::GpuContext;
use tessera_engine::pipeline::Model;

use super::platform;
use crate::hub::DownloadStatus;
use crate::render::open_model;

/// The files of the model the model field names, being fetched off the UI (a hub download
/// natively; in the browser any model's files, fetched into memory): the UI keeps running, the
/// top bar shows the progress.
pub struct Download {
    /// The model field's text (empty: the default model).
    pub id: String,
    pub status: Arc<Mutex<DownloadStatus>>,
    /// The outcome, once the thread ends.
    pub done: Arc<Mutex<Option<std::result::Result<(), String>>>>,
}

/// What every panel may use: the engine's device (natively eframe's own; in the browser one
/// it opens, see [`platform::gpu_of`]), where previews become textures, the open model (any
/// family) and the status line.
pub struct Session {
    pub gpu: Option<Arc<GpuContext>>,
    pub textures: Option<platform::Textures>,
    /// The engine's device while it opens (browser only).
    pending_gpu: Option<platform::PendingGpu>,
    pub model: Option<Arc<Model>>,
    /// What the model field holds: a folder, checkpoint or hub id; empty for the embedded model.
    pub model_arg: String,
    pub message: Option<String>,
    /// Why the GPU device was lost, once it is: nothing more runs on it, and the top bar
    /// offers a restart ([`restart`]).
    pub device_lost: Option<String>,
    /// Set when a run fails (the screenshot mode's exit status).
    pub failed: Arc<AtomicBool>,
    /// Models compare lanes named, by what they typed: lanes naming one model share it.
    lane_models: std::collections::HashMap<String, Arc<Model>>,
    /// Why the device or the model last failed to open (cleared by the next success).
    pub load_error: Option<String>,
    /// The model field's download, while one runs.
    pub download: Option<Download>,
    /// Status lines from work finished off the UI (a GIF saved), shown when they arrive.
    notices: (Sender<String>, Receiver<String>),
}

impl Session {
    pub fn new(textures: Option<platform::Textures>, model_arg: String) -> Self {
        let gpu = textures.as_ref().and_then(platform::gpu_of).map(Arc::new);
        // In the browser the engine's device opens off the UI ([`Session::poll_gpu`]).
        let pending_gpu = (gpu.is_none() && textures.is_some()).then(platform::open_gpu);
        Self {
            message: match (&gpu, &pending_gpu) {
                (Some(_), _) => None,
                (None, Some(_)) => Some("opening the GPU…".into()),
                (None, None) => Some("eframe started without a wgpu device".into()),
            },
            gpu,
            textures,
            pending_gpu,
            model: None,
            model_arg,
            device_lost: None,
            failed: Arc::new(AtomicBool::new(false)),
            lane_models: Default::default(),
            download: None,
            load_error: None,
            notices: channel(),
        }
    }

    /// The device or the model could not open: the status line and [`Session::load_error`]
    /// say why.
    fn fail_load(&mut self, why: String) {
        self.message = Some(why.clone());
        self.load_error = Some(why);
    }

    /// Whether the engine's device is still opening (browser only).
    pub fn opening_gpu(&self) -> bool {
        self.pending_gpu.is_some()
    }

    /// The engine's device once it has opened (browser only): true when it just did (the
    /// caller opens the model then). A device that cannot open leaves the reason in the status
    /// line.
    pub fn poll_gpu(&mut self) -> bool {
        let Some(slot) = &self.pending_gpu else {
            return false;
        };
        let outcome = slot.lock().ok().and_then(|mut s| s.take());
        match outcome {
            None => false,
            Some(r) => {
                self.pending_gpu = None;
                match r {
                    Ok(gpu) => {
                        self.gpu = Some(Arc::new(gpu));
                        self.message = None;
                        true
                    }
                    Err(e) => {
                        self.fail_load(format!("no WebGPU device: {e}"));
                        false
                    }
                }
            }
        }
    }

    /// Where work off the UI posts its status line ([`Session::show_notices`] shows it).
    pub fn notices(&self) -> Sender<String> {
        self.notices.0.clone()
    }

    /// Shows the latest status line posted by work off the UI.
    pub fn show_notices(&mut self) {
        while let Ok(m) = self.notices.1.try_recv() {
            self.message = Some(m);
        }
    }

    /// The model field's argument (None: the embedded model).
    pub fn model_name(&self) -> Option<&str> {
        Some(self.model_arg.trim()).filter(|m| !m.is_empty())
    }

    /// Opens the model the field names; the status line says why when it cannot. A model
    /// whose files must be fetched first ([`platform::needs_fetch`]: an uncached hub id
    /// natively, any model not yet in memory in the browser) starts that instead
    /// ([`Session::poll_download`] says when to open it).
    pub fn load_model(&mut self) -> Option<Arc<Model>> {
        let gpu = self.gpu.clone()?;
        if platform::needs_fetch(self.model_name()) {
            if self.download.is_none() {
                let device = crate::hub::DeviceLimits::of(&gpu);
                self.start_download(self.model_name().map(str::to_owned), device);
            }
            return None;
        }
        match open_model(&gpu, self.model_name()) {
            Ok(m) => {
                let m = Arc::new(m);
                self.model = Some(m.clone());
                self.message = None;
                self.load_error = None;
                Some(m)
            }
            Err(e) => {
                self.model = None;
                self.fail_load(format!("{e:#}"));
                None
            }
        }
    }

    fn start_download(&mut self, arg: Option<String>, device: crate::hub::DeviceLimits) {
        let status = Arc::new(Mutex::new(DownloadStatus::default()));
        let done = Arc::new(Mutex::new(None));
        platform::fetch_model(arg.clone(), device, status.clone(), done.clone());
        let id = arg.unwrap_or_default();
        self.message = Some(format!("downloading {}…", shown_name(&id)));
        self.download = Some(Download { id, status, done });
    }

    /// Progress of the model field's download into the status line; true once it has
    /// finished well (the caller opens the model then).
    pub fn poll_download(&mut self) -> bool {
        let Some(d) = &self.download else {
            return false;
        };
        let outcome = d.done.lock().ok().and_then(|mut o| o.take());
        match outcome {
            None => {
                if let Ok(s) = d.status.lock() {
                    self.message = Some(s.line(shown_name(&d.id)));
                }
                false
            }
            Some(r) => {
                self.download = None;
                match r {
                    Ok(()) => {
                        self.message = None;
                        true
                    }
                    Err(e) => {
                        self.fail_load(e);
                        false
                    }
                }
            }
        }
    }

    /// The model a compare lane names (opened once, then shared by every lane naming it).
    pub fn lane_model(&mut self, arg: &str) -> Result<Arc<Model>> {
        let arg = arg.trim();
        if platform::needs_fetch(Some(arg)) {
            anyhow::bail!(
                "{arg} is not downloaded yet: open it once in the model field, which downloads it"
            );
        }
        if let Some(m) = self.lane_models.get(arg) {
            return Ok(m.clone());
        }
        let gpu = self.gpu.clone().context("no GPU device")?;
        let m = Arc::new(open_model(&gpu, Some(arg)).with_context(|| format!("lane model {arg}"))?);
        self.lane_models.insert(arg.to_owned(), m.clone());
        Ok(m)
    }

    /// The top bar, with a menu of `recent_models`; true when Open was clicked.
    pub fn top_bar(&mut self, ui: &mut egui::Ui, recent_models: &[String]) -> bool {
        let open = ui
            .horizontal(|ui| {
                ui.strong("tessera");
                ui.separator();
                ui.label("Model");
                ui.add(
                    egui::TextEdit::singleline(&mut self.model_arg)
                        .hint_text("folder or hub id (empty: embedded default)")
                        .desired_width(360.0),
                );
                super::history::recent_menu(ui, "models", recent_models, &mut self.model_arg);
                let mut open = ui.button("Open").clicked();
                if platform::HAS_DIALOGS
                    && ui
                        .button("Browse…")
                        .on_hover_text("pick a model folder")
                        .clicked()
                    && let Some(p) = super::dialogs::open_model_folder().path(&mut self.message)
                {
                    self.model_arg = p.display().to_string();
                    open = true;
                }
                if let Some(g) = &self.gpu {
                    ui.label(format!("GPU: {} ({:?})", g.info.name, g.info.backend));
                }
                open
            })
            .inner;
        if let Some(reason) = self.device_lost.clone() {
            ui.horizontal(|ui| {
                ui.colored_label(
                    Color32::from_rgb(255, 110, 90),
                    format!(
                        "The GPU device was lost ({reason}). Nothing more can run on it; a \
                         restart opens a new one."
                    ),
                );
                if ui.button("Restart tessera").clicked() {
                    match platform::restart() {
                        Ok(()) => ui.ctx().send_viewport_cmd(egui::ViewportCommand::Close),
                        Err(e) => self.message = Some(format!("restart failed: {e:#}")),
                    }
                }
            });
        } else if let Some(m) = &self.message {
            ui.horizontal(|ui| {
                if let Some(s) = self.download.as_ref().and_then(|d| d.status.lock().ok())
                    && s.bytes > 0
                {
                    ui.add(
                        egui::ProgressBar::new(s.bytes_done as f32 / s.bytes as f32)
                            .desired_width(160.0),
                    );
                }
                ui.colored_label(Color32::from_rgb(255, 170, 90), m);
            });
        }
        open
    }
}

/// How the status line names the model field's text (empty: the default model).
fn shown_name(id: &str) -> &str {
    if id.is_empty() {
        "the default model"
    } else {
        id
    }
}

/// The command that starts this program again with the arguments it was given.
#[cfg(not(target_arch = "wasm32"))]
pub fn restart_command() -> Result<std::process::Command> {
    let exe = std::env::current_exe().context("finding the tessera executable")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(std::env::args_os().skip(1));
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::restart_command;

    /// The restart after a lost device runs this same program with the same arguments.
    #[test]
    fn restart_runs_this_program_with_its_arguments() {
        let cmd = restart_command().expect("command");
        assert_eq!(
            std::path::Path::new(cmd.get_program()),
            std::env::current_exe().expect("exe")
        );
        let args: Vec<_> = cmd.get_args().collect();
        let want: Vec<_> = std::env::args_os().skip(1).collect();
        assert_eq!(args, want.iter().map(|a| a.as_os_str()).collect::<Vec<_>>());
    }
}
