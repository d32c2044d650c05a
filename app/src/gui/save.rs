//! Saving the first lane: a PNG carrying its settings text, and a GIF of its decoding.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tessera_engine::pipeline::ModelConditioning;
use tessera_engine::pipeline::settings::{Condition, Settings};

use super::runs::{Lane, Runs};
use super::session::Session;

/// Save PNG (Ctrl+S) / Save GIF, once the first lane is done; the status line says where it
/// went.
pub fn save_buttons(ui: &mut egui::Ui, session: &mut Session, runs: &Runs) {
    let Some(l) = runs.lanes.first() else { return };
    if l.running || l.result.is_none() {
        return;
    }
    let shortcut = ui.input_mut(|i| i.consume_key(egui::Modifiers::COMMAND, egui::Key::S));
    let (png, gif, png_as, gif_as) = ui
        .horizontal(|ui| {
            (
                ui.button("Save PNG  (Ctrl+S)")
                    .on_hover_text("into the working directory")
                    .clicked()
                    || shortcut,
                ui.button("Save GIF").clicked(),
                ui.button("PNG as…").clicked(),
                ui.button("GIF as…").clicked(),
            )
        })
        .inner;
    // The quick buttons write into the working directory; "as…" asks where.
    type Save = fn(&Session, &Lane, &Path) -> Result<()>;
    let saves: [(bool, bool, &str, Save); 2] = [
        (png, png_as, "png", save_png),
        (gif, gif_as, "gif", save_gif),
    ];
    for (quick, ask, ext, save) in saves {
        let name = format!("tessera-{}.{ext}", l.settings.seed);
        let path = if quick {
            Some(PathBuf::from(name))
        } else if ask {
            super::dialogs::save_as(&name, ext).path(&mut session.message)
        } else {
            None
        };
        if let Some(path) = path {
            session.message = Some(match save(session, l, &path) {
                Ok(()) => format!("saved {}", path.display()),
                Err(e) => format!("{e:#}"),
            });
        }
    }
}

/// The lane's image with the settings text every tessera PNG carries.
fn save_png(session: &Session, l: &Lane, path: &Path) -> Result<()> {
    let (_, tokens, grid) = l.result.as_ref().context("still running")?;
    let gpu = session.gpu.as_ref().context("no GPU device")?;
    let (chw, (w, h)) = l.model.decode(gpu, tokens, 1, *grid)?;
    let s = &l.settings;
    let opts = s.sampler_options();
    let model = &l.model;
    let condition = match (l.class, model.conditioning()) {
        (Some(label), ModelConditioning::Class { classes }) => Condition::Class {
            label,
            name: crate::render::class_name(label, classes),
        },
        _ => Condition::Text {
            prompt: &s.prompt,
            negative_prompt: &s.negative_prompt,
        },
    };
    let model_name = l
        .model_name
        .clone()
        .unwrap_or_else(|| crate::render::model_name(session.model_name()));
    let params = Settings {
        condition,
        sampler: &opts,
        guidance: model.has_guidance().then_some(s.guidance),
        size: (w, h),
        model: &model_name,
    }
    .parameters();
    let text = std::collections::HashMap::from([("parameters".to_owned(), params)]);
    crate::files::write_atomically(path, &crate::files::png_bytes(&chw, w, h, &text)?)
}

/// The lane's decoding, one frame per step, as `--gif` writes it.
fn save_gif(session: &Session, l: &Lane, path: &Path) -> Result<()> {
    let gpu = session.gpu.as_ref().context("no GPU device")?;
    let mask_id = l.model.mask_id();
    let mut frames = Vec::new();
    for f in &l.frames {
        let (chw, size) = l.model.decode(gpu, &f.predicted, 1, f.grid)?;
        let ev = tessera_engine::sampling::StepEvent {
            step: f.step,
            steps: l.steps,
            grid: f.grid,
            tokens: &f.tokens,
            predicted: &f.predicted,
            newly_fixed: &f.newly_fixed,
            confidence: &f.confidence,
            ms: f.ms,
            work: Default::default(),
        };
        let fr = crate::render::frame(&chw, size, f.grid, &ev, mask_id);
        let k = 256u32.div_ceil(fr.height()).max(1);
        frames.push(image::imageops::resize(
            &fr,
            fr.width() * k,
            fr.height() * k,
            image::imageops::FilterType::Nearest,
        ));
    }
    crate::files::write_atomically(path, &crate::render::gif_bytes(&frames)?)
}
