//! The page's egui app: prompt, seed and steps, Generate, the token grid filling in, the
//! image. Generation runs as an async task on the page's event loop (every GPU readback is
//! awaited), so the page stays responsive while it works.

use std::cell::RefCell;
use std::ops::ControlFlow;
use std::path::Path;
use std::rc::Rc;

use tessera_engine::io::files::{self, MemoryFiles};
use tessera_engine::pipeline::settings::{Condition, Settings};
use tessera_engine::pipeline::{self, Model, Request, Start};
use tessera_engine::{GpuContext, Readback};

use crate::page;

/// Where the default model's files are served from (beside the page) and mounted.
const MODEL_URL: &str = "models/emoji";
const MODEL_ROOT: &str = "/models/emoji";

/// The GPU device the engine opened and the model on it (loaded once, on first use).
struct Loaded {
    gpu: GpuContext,
    model: Model,
}

/// What the generation task reports to the UI.
#[derive(Default)]
struct Progress {
    running: bool,
    status: String,
    grid: (usize, usize),
    tokens: Vec<u32>,
    mask: u32,
    /// A finished image to show, RGBA, (width, height).
    image: Option<(Vec<u8>, (usize, usize))>,
}

pub struct App {
    prompt: String,
    seed: u64,
    steps: usize,
    progress: Rc<RefCell<Progress>>,
    loaded: Rc<RefCell<Option<Rc<Loaded>>>>,
    texture: Option<egui::TextureHandle>,
}

impl App {
    /// The app with the URL's `prompt`, `seed` and `steps`; `run=1` starts a generation.
    pub fn new(cc: &eframe::CreationContext<'_>) -> Self {
        let mut app = Self {
            prompt: page::param("prompt").unwrap_or_else(|| "red apple".into()),
            seed: page::param("seed")
                .and_then(|s| s.parse().ok())
                .unwrap_or(3),
            steps: page::param("steps")
                .and_then(|s| s.parse().ok())
                .filter(|&n: &usize| (1..=64).contains(&n))
                .unwrap_or(12),
            progress: Rc::default(),
            loaded: Rc::default(),
            texture: None,
        };
        if page::param("run").as_deref() == Some("1") {
            app.generate(&cc.egui_ctx);
        }
        app
    }

    fn generate(&mut self, ctx: &egui::Context) {
        {
            let mut p = self.progress.borrow_mut();
            if p.running {
                return;
            }
            p.running = true;
            p.status = "starting…".into();
        }
        page::set_title_suffix(" — running");
        let (progress, loaded, ctx) = (self.progress.clone(), self.loaded.clone(), ctx.clone());
        let (prompt, seed, steps) = (self.prompt.clone(), self.seed, self.steps);
        wasm_bindgen_futures::spawn_local(async move {
            let result = run(&progress, &loaded, &ctx, &prompt, seed, steps).await;
            let mut p = progress.borrow_mut();
            p.running = false;
            match result.and_then(|png| page::show_result(&png)) {
                Ok(()) => {
                    p.status = "done".into();
                    page::set_title_suffix(" — done");
                }
                Err(e) => {
                    log::error!("{e}");
                    p.status = format!("error: {e}");
                    page::set_title_suffix(&format!(" — error: {e}"));
                }
            }
            ctx.request_repaint();
        });
    }
}

/// Fetches the default model's files (listed in `files.json`), serves them from memory, and
/// opens them on a new WebGPU device.
async fn load(progress: &RefCell<Progress>, ctx: &egui::Context) -> Result<Loaded, String> {
    let list = page::fetch(&format!("{MODEL_URL}/files.json")).await?;
    let names: Vec<String> =
        serde_json::from_slice(&list).map_err(|e| format!("{MODEL_URL}/files.json: {e}"))?;
    let mut mem = MemoryFiles::new();
    for (i, name) in names.iter().enumerate() {
        progress.borrow_mut().status = format!("fetching the model ({}/{})", i + 1, names.len());
        ctx.request_repaint();
        mem.insert(name, page::fetch(&format!("{MODEL_URL}/{name}")).await?);
    }
    files::mount(MODEL_ROOT, mem);
    progress.borrow_mut().status = "opening the GPU".into();
    let gpu = GpuContext::new_async().await.map_err(|e| e.to_string())?;
    let model = Model::open(&gpu, Path::new(MODEL_ROOT)).map_err(|e| e.to_string())?;
    Ok(Loaded { gpu, model })
}

/// One generation: the model (loaded on first use), the decoding steps shown as they come,
/// the image decoded; returns the PNG with its settings text.
async fn run(
    progress: &RefCell<Progress>,
    loaded: &RefCell<Option<Rc<Loaded>>>,
    ctx: &egui::Context,
    prompt: &str,
    seed: u64,
    steps: usize,
) -> Result<Vec<u8>, String> {
    let have = loaded.borrow().clone();
    let l = match have {
        Some(l) => l,
        None => {
            let l = Rc::new(load(progress, ctx).await?);
            *loaded.borrow_mut() = Some(l.clone());
            l
        }
    };
    let model = &l.model;
    let mut sampler = model
        .sampler_defaults(None, seed, false)
        .map_err(|e| e.to_string())?;
    sampler.steps = steps;
    let condition = Condition::Text {
        prompt,
        negative_prompt: "",
    };
    let guidance = model.default_guidance();
    let req = Request {
        condition,
        batch: 1,
        guidance,
        sampler: sampler.clone(),
        start: Start::Blank(model.grid()),
    };
    let mask = model.mask_id();
    let mut fixed: Vec<String> = Vec::new();
    let generated = pipeline::generate_async(&l.gpu, model, &req, &mut |ev| {
        fixed.push(ev.newly_fixed.iter().filter(|f| **f).count().to_string());
        page::set_text("steps", &fixed.join(" "));
        let mut p = progress.borrow_mut();
        p.grid = ev.grid;
        p.tokens = ev.tokens.to_vec();
        p.mask = mask;
        p.status = format!("step {} of {}", ev.step + 1, ev.steps);
        ctx.request_repaint();
        ControlFlow::Continue(())
    })
    .await
    .map_err(|e| e.to_string())?;
    let (chw, (w, h)) = model
        .decode_with(
            &l.gpu,
            &generated.tokens,
            1,
            generated.grid,
            Readback::Await,
        )
        .await
        .map_err(|e| e.to_string())?;
    let rgba = rgba(&chw, (w, h));
    let text = Settings {
        condition,
        sampler: &sampler,
        guidance: model.has_guidance().then_some(guidance),
        size: (w, h),
        model: "emoji",
    }
    .parameters();
    let png = encode_png(&rgba, (w, h), &text)?;
    progress.borrow_mut().image = Some((rgba, (w, h)));
    Ok(png)
}

/// CHW floats in [0, 1] → RGBA bytes.
fn rgba(chw: &[f32], (w, h): (usize, usize)) -> Vec<u8> {
    let mut out = vec![255u8; 4 * w * h];
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                out[(y * w + x) * 4 + c] =
                    (chw[(c * h + y) * w + x].clamp(0.0, 1.0) * 255.0).round() as u8;
            }
        }
    }
    out
}

/// RGBA → PNG with the settings as its `parameters` text (UTF-8: iTXt).
fn encode_png(rgba: &[u8], (w, h): (usize, usize), text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w as u32, h as u32);
        enc.set_color(png::ColorType::Rgba);
        enc.set_depth(png::BitDepth::Eight);
        enc.add_itxt_chunk("parameters".into(), text.into())
            .map_err(|e| e.to_string())?;
        let mut writer = enc.write_header().map_err(|e| e.to_string())?;
        writer.write_image_data(rgba).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// A colour per code id (mask: dark grey), for the grid before the image is decoded.
fn token_colour(id: u32, mask: u32) -> egui::Color32 {
    if id == mask {
        return egui::Color32::from_gray(40);
    }
    let h = id.wrapping_mul(0x9e37_79b9);
    egui::Color32::from_rgb((h >> 24) as u8, (h >> 16) as u8, (h >> 8) as u8)
}

impl eframe::App for App {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        if let Some((rgba, (w, h))) = self.progress.borrow_mut().image.take() {
            let img = egui::ColorImage::from_rgba_unmultiplied([w, h], &rgba);
            self.texture = Some(ui.ctx().load_texture(
                "result",
                img,
                egui::TextureOptions::NEAREST,
            ));
        }
        egui::Panel::left("settings")
            .default_size(260.0)
            .show(ui, |ui| {
                ui.heading("tessera");
                let label = ui.label("Prompt");
                ui.text_edit_multiline(&mut self.prompt)
                    .labelled_by(label.id);
                ui.horizontal(|ui| {
                    let label = ui.label("Seed");
                    ui.add(egui::DragValue::new(&mut self.seed))
                        .labelled_by(label.id);
                });
                ui.add(egui::Slider::new(&mut self.steps, 1..=48).text("steps"));
                let running = self.progress.borrow().running;
                if ui
                    .add_enabled(!running, egui::Button::new("Generate"))
                    .clicked()
                {
                    self.texture = None;
                    self.generate(ui.ctx());
                }
                ui.label(self.progress.borrow().status.clone());
            });
        egui::CentralPanel::default().show(ui, |ui| {
            let side = ui
                .available_width()
                .min(ui.available_height())
                .clamp(64.0, 512.0);
            let (rect, _) = ui.allocate_exact_size(egui::vec2(side, side), egui::Sense::hover());
            if let Some(t) = &self.texture {
                let uv = egui::Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0));
                ui.painter().image(t.id(), rect, uv, egui::Color32::WHITE);
                return;
            }
            let p = self.progress.borrow();
            let (gh, gw) = p.grid;
            if gh == 0 || gw == 0 || p.tokens.len() < gh * gw {
                return;
            }
            let cell = egui::vec2(rect.width() / gw as f32, rect.height() / gh as f32);
            for y in 0..gh {
                for x in 0..gw {
                    let min = rect.min + egui::vec2(x as f32 * cell.x, y as f32 * cell.y);
                    ui.painter().rect_filled(
                        egui::Rect::from_min_size(min, cell),
                        0.0,
                        token_colour(p.tokens[y * gw + x], p.mask),
                    );
                }
            }
        });
    }
}
