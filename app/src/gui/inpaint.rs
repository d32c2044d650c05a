//! The inpaint / outpaint / edit panel: an image (file, drop or the last result), a mask painted
//! with a brush, the canvas growth for outpainting, and Muse's mask-free editing under the
//! prompt.

use egui::{Color32, ColorImage, Rect, TextureHandle, TextureOptions, Vec2};
use tessera_engine::pipeline::Start;

use crate::files::Fit;

use super::canvas;
use super::runs::Runs;
use super::session::Session;
use super::worker;

/// The image being edited and its painted mask.
struct EditImage {
    pixels: Vec<f32>,
    size: (usize, usize),
    texture: TextureHandle,
    /// Per pixel, 0 = keep, 1 = repaint.
    mask: Vec<f32>,
    mask_texture: Option<TextureHandle>,
}

pub struct InpaintPanel {
    edit: Option<EditImage>,
    pub image_path: String,
    brush: f32,
    erase: bool,
    /// Tokens to grow the canvas by: left, top, right, bottom.
    grow: [usize; 4],
    /// Mask-free editing: iterations and the fraction of tokens re-masked each time.
    edit_iterations: usize,
    edit_fraction: f64,
}

impl Default for InpaintPanel {
    fn default() -> Self {
        Self {
            edit: None,
            image_path: String::new(),
            brush: 3.0,
            erase: false,
            grow: [0, 0, 4, 0],
            edit_iterations: 4,
            edit_fraction: 0.3,
        }
    }
}

pub fn texture(
    ctx: &egui::Context,
    name: &str,
    rgba: &[u8],
    (w, h): (usize, usize),
) -> TextureHandle {
    ctx.load_texture(
        name,
        ColorImage::from_rgba_unmultiplied([w, h], rgba),
        TextureOptions::NEAREST,
    )
}

impl InpaintPanel {
    /// The panel; returns the start of a run when Inpaint or Outpaint was clicked.
    /// `fit`: what the model takes with the current settings ([`Fit::for_model`]), which
    /// images loaded here are resized to.
    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        session: &mut Session,
        runs: &mut Runs,
        fit: Option<Fit>,
    ) -> Option<Start> {
        ui.horizontal(|ui| {
            ui.label("Image");
            if super::platform::HAS_DIALOGS {
                ui.add(
                    egui::TextEdit::singleline(&mut self.image_path)
                        .hint_text("path to a PNG, or drop a file"),
                );
                if ui.button("Load").clicked() {
                    let p = self.image_path.clone();
                    self.load(ui.ctx(), &p, session, fit);
                }
                if ui.button("Browse…").clicked()
                    && let Some(p) = super::dialogs::open_image().path(&mut session.message)
                {
                    self.load(ui.ctx(), &p.display().to_string(), session, fit);
                }
            } else if self.image_path.is_empty() {
                ui.weak("drop an image on the page");
            } else {
                ui.label(&self.image_path);
            }
            if ui.button("Use last result").clicked() {
                self.use_last_result(ui.ctx(), session, runs);
            }
        });
        let Some(e) = &mut self.edit else {
            ui.label(
                "Load an image (or use the last result), paint the area to regenerate, then \
                 Inpaint.",
            );
            return None;
        };
        ui.horizontal(|ui| {
            ui.add(egui::Slider::new(&mut self.brush, 1.0..=32.0).text("brush"));
            ui.checkbox(&mut self.erase, "erase");
            if ui.button("Clear").clicked() {
                e.mask.iter_mut().for_each(|m| *m = 0.0);
                e.mask_texture = None;
            }
            if ui.button("Invert").clicked() {
                e.mask.iter_mut().for_each(|m| *m = 1.0 - *m);
                e.mask_texture = None;
            }
        });
        let (w, h) = e.size;
        let scale = (420.0 / w.max(h) as f32).max(1.0);
        let (rect, resp) = ui.allocate_exact_size(
            Vec2::new(w as f32 * scale, h as f32 * scale),
            egui::Sense::drag(),
        );
        if let Some(pos) = resp.interact_pointer_pos()
            && resp.dragged()
        {
            let p = ((pos - rect.min) / scale).to_pos2();
            canvas::paint(&mut e.mask, e.size, p, self.brush, self.erase);
            e.mask_texture = None;
        }
        let uv = Rect::from_min_max(egui::Pos2::ZERO, egui::Pos2::new(1.0, 1.0));
        ui.painter().image(e.texture.id(), rect, uv, Color32::WHITE);
        let mask_tex = e.mask_texture.get_or_insert_with(|| {
            let rgba: Vec<u8> = e
                .mask
                .iter()
                .flat_map(|&m| [255, 40, 40, (m * 140.0) as u8])
                .collect();
            texture(ui.ctx(), "mask", &rgba, (w, h))
        });
        ui.painter().image(mask_tex.id(), rect, uv, Color32::WHITE);
        let mut start = None;
        ui.horizontal(|ui| {
            if ui.button("Inpaint").clicked() {
                start = self.inpaint_start(session);
            }
            ui.separator();
            ui.label("grow canvas (tokens) L T R B");
            for g in &mut self.grow {
                ui.add(egui::DragValue::new(g).range(0..=16));
            }
            if ui.button("Outpaint").clicked() {
                start = self.outpaint_start(session);
            }
            runs.cancel_button(ui, session);
        });
        ui.horizontal(|ui| {
            let label = ui.label("edit: iterations");
            ui.add(egui::DragValue::new(&mut self.edit_iterations).range(1..=64))
                .labelled_by(label.id);
            ui.add(egui::Slider::new(&mut self.edit_fraction, 0.05..=0.9).text("re-masked"));
            if ui
                .button("Edit")
                .on_hover_text(
                    "mask-free editing (Muse): re-mask random tokens and resample them under \
                     the prompt, again and again; the mask is not used",
                )
                .clicked()
                && let Some(e) = &self.edit
            {
                start = Some(Start::Edit {
                    image: e.pixels.clone(),
                    size: e.size,
                    iterations: self.edit_iterations,
                    fraction: self.edit_fraction,
                });
            }
        });
        start
    }

    /// Opens an image file (any format tessera reads) for editing, resized to `fit`.
    pub fn load(
        &mut self,
        ctx: &egui::Context,
        path: &str,
        session: &mut Session,
        fit: Option<Fit>,
    ) {
        self.image_path = path.to_owned();
        let image = crate::files::open_image(std::path::Path::new(path), "image");
        self.open(ctx, image, path, session, fit);
    }

    /// Shows a decoded image for editing, resized to what the model takes with the current
    /// settings (`fit`, [`Fit::for_model`]: sides that are multiples of its VQ factor, or a
    /// fixed grid's one size), as `--render --image` resizes it; the status line says when.
    fn open(
        &mut self,
        ctx: &egui::Context,
        image: anyhow::Result<image::DynamicImage>,
        name: &str,
        session: &mut Session,
        fit: Option<Fit>,
    ) {
        let fitted = image.and_then(|img| {
            let img = img.to_rgb8();
            let size = (img.width(), img.height());
            let img = match fit {
                Some(fit) => crate::files::fit_image(img, fit, name)?,
                None => img,
            };
            if (img.width(), img.height()) != size {
                session.message = Some(format!(
                    "resized {}×{} to {}×{} for this model",
                    size.0,
                    size.1,
                    img.width(),
                    img.height()
                ));
            }
            crate::files::image_to_chw(&img)
        });
        match fitted {
            Ok((pixels, w, h)) => self.set_edit(ctx, pixels, (w, h)),
            Err(e) => session.message = Some(format!("{e:#}")),
        }
    }

    /// Opens an image from its bytes (a file dropped on the page in the browser) for editing,
    /// resized to `fit`.
    #[cfg(target_arch = "wasm32")]
    pub fn load_bytes(
        &mut self,
        ctx: &egui::Context,
        name: &str,
        bytes: &[u8],
        session: &mut Session,
        fit: Option<Fit>,
    ) {
        self.image_path = name.to_owned();
        let image = crate::files::decode_image(bytes, std::path::Path::new(name), "image");
        self.open(ctx, image, name, session, fit);
    }

    fn use_last_result(&mut self, ctx: &egui::Context, session: &mut Session, runs: &Runs) {
        match runs.last_result() {
            Some(f) => self.set_edit(ctx, f.pixels.clone(), f.size),
            None => session.message = Some("no result yet".into()),
        }
    }

    /// The edited image's size (width, height), once one is loaded.
    #[cfg(test)]
    pub fn edit_size(&self) -> Option<(usize, usize)> {
        self.edit.as_ref().map(|e| e.size)
    }

    fn set_edit(&mut self, ctx: &egui::Context, pixels: Vec<f32>, size: (usize, usize)) {
        let rgba = worker::rgba(&pixels, size);
        self.edit = Some(EditImage {
            texture: texture(ctx, "edit", &rgba, size),
            mask: vec![0.0; size.0 * size.1],
            mask_texture: None,
            pixels,
            size,
        });
    }

    /// The painted mask as a token grid, as a mask file of the same pixels would give.
    fn inpaint_start(&self, session: &mut Session) -> Option<Start> {
        let (e, model) = (self.edit.as_ref()?, session.model.clone()?);
        let f = model.vq_factor();
        let m = model.pixel_multiple();
        let (w, h) = e.size;
        if w % m != 0 || h % m != 0 {
            session.message = Some(format!(
                "the image is {w}×{h}; this model needs sides that are multiples of {m}"
            ));
            return None;
        }
        if e.mask.len() != w * h {
            return None;
        }
        let l8: Vec<u8> = e
            .mask
            .iter()
            .map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
            .collect();
        let mask = crate::render::mask_to_grid(&l8, (w, h), (w / f, h / f));
        if !mask.iter().any(|m| *m) {
            session.message = Some("paint the area to regenerate first".into());
            return None;
        }
        Some(Start::Inpaint {
            image: e.pixels.clone(),
            size: e.size,
            mask,
        })
    }

    fn outpaint_start(&self, session: &mut Session) -> Option<Start> {
        let e = self.edit.as_ref()?;
        if self.grow.iter().sum::<usize>() == 0 {
            session.message = Some("set how many tokens to grow the canvas by".into());
            return None;
        }
        Some(Start::Outpaint {
            image: e.pixels.clone(),
            size: e.size,
            grow: self.grow,
        })
    }
}
