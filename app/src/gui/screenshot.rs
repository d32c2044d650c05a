//! `tessera --screenshot OUT.png`: once every lane is done (and the chosen step is shown), a
//! screenshot of the whole window is saved and the window closes.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;

use super::runs::Runs;

#[derive(PartialEq, Eq)]
enum State {
    Off,
    Waiting,
    Requested,
}

pub struct Screenshot {
    path: Option<PathBuf>,
    /// Step to show (replay) when taking the screenshot; None: the end.
    step: Option<usize>,
    state: State,
}

impl Screenshot {
    /// `step` is 1-based, as `--screenshot-step` takes it.
    pub fn new(path: Option<PathBuf>, step: Option<usize>) -> Self {
        Self {
            state: if path.is_some() {
                State::Waiting
            } else {
                State::Off
            },
            path,
            step: step.map(|s| s.saturating_sub(1)),
        }
    }

    pub fn on(&self) -> bool {
        self.state != State::Off
    }

    /// Takes the screenshot once the runs are done; a failure to save sets `failed`.
    pub fn logic(&mut self, ctx: &egui::Context, runs: &mut Runs, failed: &Arc<AtomicBool>) {
        if self.state != State::Waiting {
            return;
        }
        let done = !runs.lanes.is_empty() && !runs.running();
        let (true, Some(path)) = (done, self.path.clone()) else {
            return;
        };
        if let Some(step) = self.step
            && runs.replay != Some(step)
        {
            // Show that step first; shoot on the next frame.
            runs.replay = Some(step);
            ctx.request_repaint();
            return;
        }
        self.state = State::Requested;
        let failed = failed.clone();
        let ctx2 = ctx.clone();
        ctx.request_screenshot(move |img| {
            let (w, h) = (img.size[0], img.size[1]);
            let rgba: Vec<u8> = img.pixels.iter().flat_map(|p| p.to_array()).collect();
            let saved = image::RgbaImage::from_raw(w as u32, h as u32, rgba)
                .context("screenshot buffer")
                .and_then(|im| {
                    let mut bytes = Vec::new();
                    im.write_to(
                        &mut std::io::Cursor::new(&mut bytes),
                        image::ImageFormat::Png,
                    )?;
                    crate::files::write_atomically(&path, &bytes)
                });
            if let Err(e) = saved {
                eprintln!("Error: {e:#}");
                failed.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            ctx2.send_viewport_cmd(egui::ViewportCommand::Close);
        });
    }
}
