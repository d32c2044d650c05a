//! Saving the first lane: a PNG carrying its settings text, and a GIF of its decoding.

use anyhow::{Context, Result};
use tessera_engine::pipeline::ModelConditioning;
use tessera_engine::pipeline::settings::{Condition, Settings};

use super::platform::{self, Destination};
use super::runs::{Lane, Runs};
use super::session::Session;

/// Save PNG (Ctrl+S) / Save GIF, once the first lane is done; the status line says where it
/// went. Natively the quick buttons write into the working directory and "as…" asks where; in
/// the browser each is a download.
pub fn save_buttons(ui: &mut egui::Ui, session: &mut Session, runs: &Runs) {
    let Some(l) = runs.lanes.first() else { return };
    if l.running || l.result.is_none() {
        return;
    }
    let shortcut = ui.input_mut(|i| i.consume_key(egui::Modifiers::COMMAND, egui::Key::S));
    let (png, gif, png_as, gif_as) = ui
        .horizontal(|ui| {
            let hint = if platform::HAS_DIALOGS {
                "into the working directory"
            } else {
                "a download"
            };
            let png = ui
                .button("Save PNG  (Ctrl+S)")
                .on_hover_text(hint)
                .clicked()
                || shortcut;
            let gif = ui.button("Save GIF").on_hover_text(hint).clicked();
            let (png_as, gif_as) = if platform::HAS_DIALOGS {
                (
                    ui.button("PNG as…").clicked(),
                    ui.button("GIF as…").clicked(),
                )
            } else {
                (false, false)
            };
            (png, gif, png_as, gif_as)
        })
        .inner;
    for (quick, ask, ext) in [(png, png_as, "png"), (gif, gif_as, "gif")] {
        let name = format!("tessera-{}.{ext}", l.settings.seed);
        let to = if quick {
            Some(Destination::Quick(name))
        } else if ask {
            super::dialogs::save_as(&name, ext)
                .path(&mut session.message)
                .map(Destination::Path)
        } else {
            None
        };
        let Some(to) = to else { continue };
        if ext == "png" {
            let r = png_bytes(session, l).and_then(|b| platform::deliver(&to, &b));
            session.message = Some(r.unwrap_or_else(|e| format!("{e:#}")));
        } else {
            save_gif(session, l, to);
        }
    }
}

/// The lane's image as a PNG with the settings text every tessera PNG carries.
///
/// # Errors
/// The lane has no image yet; PNG encoding failing.
pub fn png_bytes(session: &Session, l: &Lane) -> Result<Vec<u8>> {
    let f = l.result.as_ref().context("still running")?;
    let (w, h) = f.size;
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
        stages: tessera_engine::pipeline::Stages::of(
            model,
            &s.super_res_options(model),
            s.super_res_steps,
        ),
    }
    .parameters();
    let text = std::collections::HashMap::from([("parameters".to_owned(), params)]);
    crate::files::png_bytes(&f.pixels, w, h, &text)
}

/// The lane's decoding, one frame per step, as `--gif` writes it: each step's prediction is
/// decoded off the UI ([`platform::spawn`]); the status line says when it is saved.
fn save_gif(session: &mut Session, l: &Lane, to: Destination) {
    let Some(gpu) = session.gpu.clone() else {
        session.message = Some("no GPU device".into());
        return;
    };
    let model = l.model.clone();
    let steps = l.steps;
    let frames = l.frames.clone();
    let notices = session.notices();
    session.message = Some(format!("making the GIF ({} frames)…", frames.len()));
    platform::spawn(move || async move {
        let made = async {
            let mask_id = model.mask_id();
            let mut images = Vec::new();
            for f in &frames {
                let (chw, size) = model
                    .decode_with(&gpu, &f.predicted, 1, f.grid, platform::READBACK)
                    .await?;
                let ev = tessera_engine::sampling::StepEvent {
                    step: f.step,
                    steps,
                    stage: f.stage,
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
                images.push(image::imageops::resize(
                    &fr,
                    fr.width() * k,
                    fr.height() * k,
                    image::imageops::FilterType::Nearest,
                ));
            }
            platform::deliver(&to, &crate::render::gif_bytes(&images)?)
        };
        let _ = notices.send(made.await.unwrap_or_else(|e| format!("{e:#}")));
    });
}
