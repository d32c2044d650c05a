//! The open model and device, and the top bar: the model field, the adapter, status messages,
//! and the restart offer after a lost device.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use egui::Color32;
use tessera_engine::GpuContext;
use tessera_engine::pipeline::Model;

use crate::hub::{DownloadStatus, needs_download};
use crate::render::open_model;

/// A hub model the model field names, downloading on a background thread (the UI keeps
/// running; the status line shows the progress).
pub struct Download {
    pub id: String,
    pub status: Arc<Mutex<DownloadStatus>>,
    /// The outcome, once the thread ends.
    pub done: Arc<Mutex<Option<std::result::Result<(), String>>>>,
}

/// What every panel may use: eframe's device (the engine computes on it), the open model
/// (any family) and the status line.
pub struct Session {
    pub gpu: Option<Arc<GpuContext>>,
    pub render_state: Option<egui_wgpu::RenderState>,
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
    /// The model field's hub download, while one runs.
    pub download: Option<Download>,
}

impl Session {
    pub fn new(render_state: Option<egui_wgpu::RenderState>, model_arg: String) -> Self {
        let gpu = render_state.as_ref().map(|rs| {
            Arc::new(GpuContext::from_adapter(
                &rs.adapter,
                rs.device.clone(),
                rs.queue.clone(),
            ))
        });
        Self {
            message: gpu
                .is_none()
                .then(|| "eframe started without a wgpu device".into()),
            gpu,
            render_state,
            model: None,
            model_arg,
            device_lost: None,
            failed: Arc::new(AtomicBool::new(false)),
            lane_models: Default::default(),
            download: None,
        }
    }

    /// The model field's argument (None: the embedded model).
    pub fn model_name(&self) -> Option<&str> {
        Some(self.model_arg.trim()).filter(|m| !m.is_empty())
    }

    /// Opens the model the field names; the status line says why when it cannot. A hub id
    /// that is not in the local cache starts a background download instead
    /// ([`Session::poll_download`] says when to open it).
    pub fn load_model(&mut self) -> Option<Arc<Model>> {
        let gpu = self.gpu.clone()?;
        if let Some(id) = self.model_name().filter(|m| needs_download(m)) {
            if self.download.is_none() {
                self.start_download(id.to_owned());
            }
            return None;
        }
        match open_model(&gpu, self.model_name()) {
            Ok(m) => {
                let m = Arc::new(m);
                self.model = Some(m.clone());
                self.message = None;
                Some(m)
            }
            Err(e) => {
                self.model = None;
                self.message = Some(format!("{e:#}"));
                None
            }
        }
    }

    fn start_download(&mut self, id: String) {
        let status = Arc::new(Mutex::new(DownloadStatus::default()));
        let done = Arc::new(Mutex::new(None));
        let (thread_id, thread_status, thread_done) = (id.clone(), status.clone(), done.clone());
        std::thread::spawn(move || {
            let r = crate::hub::download(&thread_id, &thread_status, false)
                .map_err(|e| format!("{e:#}"));
            if let Ok(mut d) = thread_done.lock() {
                *d = Some(r);
            }
        });
        self.message = Some(format!("downloading {id}…"));
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
                    self.message = Some(s.line(&d.id));
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
                        self.message = Some(e);
                        false
                    }
                }
            }
        }
    }

    /// The model a compare lane names (opened once, then shared by every lane naming it).
    pub fn lane_model(&mut self, arg: &str) -> Result<Arc<Model>> {
        let arg = arg.trim();
        if needs_download(arg) {
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

    /// Decodes tokens on the engine's device and reads the pixels back (for files only).
    pub fn decode_cpu(
        &self,
        tokens: &[u32],
        grid: (usize, usize),
    ) -> Result<(Vec<f32>, (usize, usize))> {
        let gpu = self.gpu.as_ref().context("no GPU device")?;
        let model = self.model.as_ref().context("no model loaded")?;
        Ok(model.decode(gpu, tokens, 1, grid)?)
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
                if ui
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
                    match restart() {
                        Ok(()) => ui.ctx().send_viewport_cmd(egui::ViewportCommand::Close),
                        Err(e) => self.message = Some(format!("restart failed: {e:#}")),
                    }
                }
            });
        } else if let Some(m) = &self.message {
            ui.colored_label(Color32::from_rgb(255, 170, 90), m);
        }
        open
    }
}

/// The command that starts this program again with the arguments it was given.
pub fn restart_command() -> Result<std::process::Command> {
    let exe = std::env::current_exe().context("finding the tessera executable")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(std::env::args_os().skip(1));
    Ok(cmd)
}

/// After a lost device: starts a new tessera process (which opens a new device) with this
/// one's arguments; the caller then closes this window. A restart of the GPU state inside the
/// process is not possible, because eframe's renderer shares the lost device.
fn restart() -> Result<()> {
    restart_command()?
        .spawn()
        .context("starting a new tessera process")?;
    Ok(())
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
