//! The desktop app: tokens filling in live, replay, inpainting brush, and a compare mode for
//! samplers and schedules. Generation runs on a worker thread on eframe's own wgpu device,
//! through the same engine pipeline as `--render`; this module only presents.

mod canvas;
mod worker;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};

use anyhow::{Context, Result};
use egui::{Color32, ColorImage, Rect, TextureHandle, TextureOptions, Vec2};
use tessera_engine::GpuContext;
use tessera_engine::pipeline::{Model, ModelConditioning, Start};
use tessera_engine::sampling::{SamplerKind, SamplerOptions, Schedule};

use crate::render::{RenderArgs, open_model};
use canvas::{GridView, Overlay};
use worker::{Cancel, Job, Msg};

/// Sliders-panel settings, shared by all modes.
#[derive(Clone, Debug)]
struct Settings {
    prompt: String,
    negative_prompt: String,
    seed: u64,
    sampler: SamplerKind,
    schedule: Schedule,
    steps: usize,
    guidance: f32,
    choice_t: (f32, f32),
    softmax_t: (f32, f32),
}

impl Settings {
    /// The arguments over `model`'s own defaults (those of its reference pipeline).
    fn from_args(a: &RenderArgs, model: Option<&Model>) -> Self {
        let model_opts = model
            .and_then(|m| m.sampler_defaults(a.sampler, 0, false).ok())
            .unwrap_or_else(|| {
                SamplerOptions::for_kind(a.sampler.unwrap_or(SamplerKind::Amused), 0)
            });
        let default_guidance = model.map_or(
            tessera_engine::models::amused::GenerationDefaults::PIPELINE_GUIDANCE,
            Model::default_guidance,
        );
        Self {
            prompt: a.prompt.clone(),
            negative_prompt: a.negative_prompt.clone(),
            seed: a.seed.unwrap_or(42),
            sampler: model_opts.kind,
            schedule: a.schedule.unwrap_or(model_opts.schedule),
            steps: a.steps.unwrap_or(model_opts.steps),
            guidance: a.guidance.unwrap_or(default_guidance),
            choice_t: model_opts.choice_temperature,
            softmax_t: model_opts.softmax_temperature,
        }
    }

    fn sampler_options(&self) -> SamplerOptions {
        let mut o = SamplerOptions::for_kind(self.sampler, self.seed);
        o.schedule = self.schedule;
        o.steps = self.steps;
        o.choice_temperature = self.choice_t;
        o.softmax_temperature = self.softmax_t;
        o
    }

    fn label(&self) -> String {
        format!("{} · {}", self.sampler, self.schedule)
    }
}

/// One step as received, with its preview texture.
struct Frame {
    step: usize,
    tokens: Vec<u32>,
    newly_fixed: Vec<bool>,
    confidence: Vec<f32>,
    predicted: Vec<u32>,
    preview: egui::TextureId,
    grid: (usize, usize),
    ms: f64,
    fixed_total: usize,
}

/// One generation run (Compare mode runs 2–4 side by side).
struct Lane {
    settings: Settings,
    /// The class label it ran with (class-conditional models).
    class: Option<u32>,
    frames: Vec<Frame>,
    steps: usize,
    /// Final image texture, tokens and grid.
    result: Option<(egui::TextureId, Vec<u32>, (usize, usize))>,
    error: Option<String>,
    running: bool,
}

impl Lane {
    fn new(settings: Settings, class: Option<u32>) -> Self {
        Self {
            class,
            steps: settings.steps,
            settings,
            frames: Vec::new(),
            result: None,
            error: None,
            running: true,
        }
    }

    /// Tokens settled after each step.
    fn fixed_curve(&self) -> Vec<[f64; 2]> {
        self.frames
            .iter()
            .map(|f| [(f.step + 1) as f64, f.fixed_total as f64])
            .collect()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Generate,
    Inpaint,
    Compare,
}

/// The image being edited and its painted mask.
struct EditImage {
    pixels: Vec<f32>,
    size: (usize, usize),
    texture: TextureHandle,
    mask: Vec<f32>,
    mask_texture: Option<TextureHandle>,
}

pub struct App {
    gpu: Option<Arc<GpuContext>>,
    render_state: Option<egui_wgpu::RenderState>,
    /// The open model (any family).
    model: Option<Arc<Model>>,
    /// The class label, for class-conditional models.
    class: u32,
    class_search: String,
    model_arg: String,
    settings: Settings,
    mode: Mode,
    lanes: Vec<Lane>,
    tx: Sender<Msg>,
    rx: Receiver<Msg>,
    /// Step shown (None: follow the newest).
    replay: Option<usize>,
    overlay: Overlay,
    edit: Option<EditImage>,
    image_path: String,
    brush: f32,
    erase: bool,
    grow: [usize; 4],
    compare: Vec<(SamplerKind, Schedule)>,
    message: Option<String>,
    screenshot: Option<PathBuf>,
    /// Step to show (replay) when taking the screenshot; None: the end.
    shot_step: Option<usize>,
    shot_state: ShotState,
    pub failed: Arc<std::sync::atomic::AtomicBool>,
    /// Stops the runs of the latest start (Cancel button, Esc).
    cancel: Cancel,
    /// Why the GPU device was lost, once it is: nothing more runs on it, and the app offers a
    /// restart (a new process opens a new device; see `restart`).
    device_lost: Option<String>,
}

#[derive(PartialEq, Eq)]
enum ShotState {
    Off,
    Waiting,
    Requested,
}

fn texture(ctx: &egui::Context, name: &str, rgba: &[u8], (w, h): (usize, usize)) -> TextureHandle {
    ctx.load_texture(
        name,
        ColorImage::from_rgba_unmultiplied([w, h], rgba),
        TextureOptions::NEAREST,
    )
}

impl App {
    fn new(cc: &eframe::CreationContext<'_>, args: &RenderArgs, shot: &ScreenshotArgs) -> Self {
        let screenshot = shot.screenshot.clone();
        let (tx, rx) = channel();
        let mut app = Self {
            gpu: None,
            render_state: cc.wgpu_render_state.clone(),
            model: None,
            class: args.class.unwrap_or(0),
            class_search: String::new(),
            model_arg: args.model.clone().unwrap_or_default(),
            settings: Settings::from_args(args, None),
            mode: Mode::Generate,
            lanes: Vec::new(),
            tx,
            rx,
            replay: None,
            overlay: Overlay::None,
            edit: None,
            image_path: String::new(),
            brush: 3.0,
            erase: false,
            grow: [0, 0, 4, 0],
            compare: vec![
                (SamplerKind::Amused, Schedule::Cosine),
                (SamplerKind::Amused, Schedule::Linear),
            ],
            message: None,
            shot_state: if screenshot.is_some() {
                ShotState::Waiting
            } else {
                ShotState::Off
            },
            screenshot,
            shot_step: shot.screenshot_step.map(|s| s.saturating_sub(1)),
            failed: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            cancel: Cancel::default(),
            device_lost: None,
        };
        if !shot.compare.is_empty() {
            app.compare = shot.compare.clone();
            app.mode = Mode::Compare;
        }
        match &cc.wgpu_render_state {
            Some(rs) => {
                let gpu = GpuContext::from_device(
                    rs.device.clone(),
                    rs.queue.clone(),
                    rs.adapter.get_info(),
                );
                app.gpu = Some(Arc::new(gpu));
            }
            None => app.message = Some("eframe started without a wgpu device".into()),
        }
        app.load_model();
        app.settings = Settings::from_args(args, app.model.as_deref());
        if app.screenshot.is_some() {
            let lanes = if app.mode == Mode::Compare {
                app.compare
                    .iter()
                    .map(|(k, s)| Settings {
                        sampler: *k,
                        schedule: *s,
                        ..app.settings.clone()
                    })
                    .collect()
            } else {
                vec![app.settings.clone()]
            };
            app.start(&cc.egui_ctx, lanes, None);
        }
        app
    }

    /// Opens the model the model field names (any family) and takes its default settings,
    /// keeping the prompts and seed.
    fn load_model(&mut self) {
        let Some(gpu) = self.gpu.clone() else { return };
        let arg = (!self.model_arg.trim().is_empty()).then(|| self.model_arg.trim().to_owned());
        match open_model(&gpu, arg.as_deref()) {
            Ok(m) => {
                if let ModelConditioning::Class { classes } = m.conditioning() {
                    self.class = self.class.min(classes.saturating_sub(1) as u32);
                }
                let defaults = Settings::from_args(&RenderArgs::default(), Some(&m));
                self.settings = Settings {
                    prompt: std::mem::take(&mut self.settings.prompt),
                    negative_prompt: std::mem::take(&mut self.settings.negative_prompt),
                    seed: self.settings.seed,
                    ..defaults
                };
                self.model = Some(Arc::new(m));
                self.message = None;
            }
            Err(e) => {
                self.model = None;
                self.message = Some(format!("{e:#}"));
            }
        }
    }

    fn mask_id(&self) -> Option<u32> {
        self.model.as_ref().map(|m| m.mask_id())
    }

    /// The class label to run with, for a class-conditional model.
    fn class_label(&self) -> Option<u32> {
        self.model.as_ref().and_then(|m| match m.conditioning() {
            ModelConditioning::Class { .. } => Some(self.class),
            ModelConditioning::Text => None,
        })
    }

    fn free_lanes(&mut self) {
        let Some(rs) = &self.render_state else { return };
        let mut r = rs.renderer.write();
        for l in self.lanes.drain(..) {
            for f in &l.frames {
                r.free_texture(&f.preview);
            }
            if let Some((id, _, _)) = l.result {
                r.free_texture(&id);
            }
        }
    }

    /// True while any lane of the latest start is running.
    fn running(&self) -> bool {
        self.lanes.iter().any(|l| l.running)
    }

    /// Asks the running lanes to stop after their current step; their buffers go back to the
    /// pool when their threads return.
    fn cancel_runs(&mut self) {
        if self.running() {
            self.cancel.cancel();
            self.message = Some("cancelling…".into());
        }
    }

    /// Starts one lane per settings entry.
    fn start(&mut self, ctx: &egui::Context, lanes: Vec<Settings>, start: Option<Start>) {
        if let Some(reason) = &self.device_lost {
            self.message = Some(format!(
                "the GPU device was lost ({reason}): restart tessera"
            ));
            return;
        }
        // Runs still going stop, and a new channel keeps their last messages out of the new
        // lanes.
        self.cancel.cancel();
        self.cancel = Cancel::default();
        (self.tx, self.rx) = channel();
        self.message = None;
        let (Some(gpu), Some(model), Some(rs)) = (
            self.gpu.clone(),
            self.model.clone(),
            self.render_state.clone(),
        ) else {
            self.message = Some("open a model first".into());
            return;
        };
        // Give the old runs' textures back.
        self.free_lanes();
        self.replay = None;
        let class = self.class_label();
        for (i, s) in lanes.into_iter().enumerate() {
            let start = match &start {
                Some(Start::Inpaint { image, size, mask }) => Start::Inpaint {
                    image: image.clone(),
                    size: *size,
                    mask: mask.clone(),
                },
                Some(Start::Outpaint { image, size, grow }) => Start::Outpaint {
                    image: image.clone(),
                    size: *size,
                    grow: *grow,
                },
                _ => Start::Blank(model.grid()),
            };
            let mut sampler = s.sampler_options();
            if matches!(start, Start::Inpaint { .. } | Start::Outpaint { .. })
                && s.sampler == SamplerKind::Amused
            {
                sampler.schedule = Schedule::Linear;
            }
            let job = Job {
                lane: i,
                class,
                prompt: s.prompt.clone(),
                negative_prompt: s.negative_prompt.clone(),
                guidance: s.guidance,
                sampler,
                start,
                cancel: self.cancel.clone(),
            };
            self.lanes.push(Lane::new(s, class));
            worker::spawn(
                gpu.clone(),
                model.clone(),
                rs.clone(),
                job,
                self.tx.clone(),
                ctx.clone(),
            );
        }
    }

    fn receive(&mut self) {
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                Msg::Step(lane, m) => {
                    if let Some(l) = self.lanes.get_mut(lane) {
                        l.steps = m.steps;
                        l.frames.push(Frame {
                            step: m.step,
                            tokens: m.tokens,
                            newly_fixed: m.newly_fixed,
                            confidence: m.confidence,
                            predicted: m.predicted,
                            preview: m.preview,
                            grid: m.grid,
                            ms: m.ms,
                            fixed_total: m.fixed_total,
                        });
                    }
                }
                Msg::Done(lane, id, tokens, grid) => {
                    if let Some(l) = self.lanes.get_mut(lane) {
                        l.result = Some((id, tokens, grid));
                        l.running = false;
                    }
                }
                Msg::Cancelled(lane, why) => {
                    if let Some(l) = self.lanes.get_mut(lane) {
                        l.error = Some(why.clone());
                        l.running = false;
                    }
                    self.message = Some(why);
                }
                Msg::Failed(lane, f) => {
                    if let Some(l) = self.lanes.get_mut(lane) {
                        l.error = Some(f.message.clone());
                        l.running = false;
                    }
                    if f.device_lost {
                        self.device_lost = Some(f.message.clone());
                    }
                    self.message = Some(f.message);
                    self.failed
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
    }

    fn settings_panel(&mut self, ui: &mut egui::Ui) {
        let conditioning = self.model.as_ref().map(|m| (m.family(), m.conditioning()));
        if let Some((family, ModelConditioning::Class { classes: n })) = conditioning {
            ui.heading("Class");
            ui.label(format!("class-conditional {family}, {n} classes"));
            ui.horizontal(|ui| {
                ui.add(egui::DragValue::new(&mut self.class).range(0..=n.saturating_sub(1) as u32));
                if let Some(name) = crate::render::class_name(self.class, n) {
                    ui.label(name);
                }
            });
            if n == 1000 {
                let search = ui.add(
                    egui::TextEdit::singleline(&mut self.class_search)
                        .hint_text("find a class, e.g. retriever"),
                );
                if search.changed() && !self.class_search.trim().is_empty() {
                    let q = self.class_search.trim().to_lowercase();
                    if let Some(i) = crate::render::IMAGENET_CLASSES
                        .lines()
                        .position(|l| l.to_lowercase().contains(&q))
                    {
                        self.class = i as u32;
                    }
                }
            }
            ui.separator();
        }
        let class_model = matches!(conditioning, Some((_, ModelConditioning::Class { .. })));
        let guided = self.model.as_ref().is_none_or(|m| m.has_guidance());
        let Settings {
            prompt,
            negative_prompt,
            seed,
            sampler,
            schedule,
            steps,
            guidance,
            choice_t,
            softmax_t,
        } = &mut self.settings;
        if !class_model {
            ui.heading("Prompt");
            ui.add(
                egui::TextEdit::multiline(prompt)
                    .desired_rows(2)
                    .hint_text("blue heart"),
            );
            ui.label("Negative prompt");
            ui.add(egui::TextEdit::singleline(negative_prompt));
        }
        ui.horizontal(|ui| {
            ui.label("Seed");
            ui.add(egui::DragValue::new(seed));
            if ui
                .button("random")
                .on_hover_text("new random seed")
                .clicked()
            {
                *seed = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64 % 1_000_000_000);
            }
        });
        ui.separator();
        ui.heading("Sampler");
        egui::ComboBox::from_id_salt("sampler")
            .selected_text(sampler.to_string())
            .show_ui(ui, |ui| {
                for k in [
                    SamplerKind::Amused,
                    SamplerKind::MaskGit,
                    SamplerKind::Paella,
                ] {
                    ui.selectable_value(sampler, k, k.to_string());
                }
            });
        schedule_picker(ui, "schedule", schedule);
        ui.add(egui::Slider::new(steps, 1..=48).text("steps"));
        if guided {
            ui.add(egui::Slider::new(guidance, 0.0..=20.0).text("guidance"));
        }
        ui.label("Choice temperature (re-masking)");
        ui.add(egui::Slider::new(&mut choice_t.0, 0.0..=10.0).text("start"));
        ui.add(egui::Slider::new(&mut choice_t.1, 0.0..=10.0).text("end"));
        ui.label("Softmax temperature (Paella)");
        ui.add(egui::Slider::new(&mut softmax_t.0, 0.05..=2.0).text("start"));
        ui.add(egui::Slider::new(&mut softmax_t.1, 0.05..=2.0).text("end"));
    }

    fn current_lane_view(&mut self, ui: &mut egui::Ui, lane: usize, size: f32) {
        let overlay = self.overlay;
        let replay = self.replay;
        let Some(mask_id) = self.mask_id() else {
            return;
        };
        let Some(l) = self.lanes.get(lane) else {
            return;
        };
        let Some(last) = l.frames.len().checked_sub(1) else {
            ui.add_sized(
                [size * 2.0 + 8.0, size],
                egui::Label::new(if l.running { "starting…" } else { "no steps" }),
            );
            return;
        };
        let idx = replay.unwrap_or(last).min(last);
        let f = &l.frames[idx];
        let mut fixed_at = vec![None; f.tokens.len()];
        for fr in &l.frames[..=idx] {
            for (i, nf) in fr.newly_fixed.iter().enumerate() {
                if *nf && fixed_at[i].is_none() {
                    fixed_at[i] = Some(fr.step);
                }
            }
        }
        ui.horizontal(|ui| {
            let (rect, _) = ui.allocate_exact_size(Vec2::splat(size), egui::Sense::hover());
            let view = GridView {
                grid: f.grid,
                tokens: &f.tokens,
                newly_fixed: &f.newly_fixed,
                confidence: &f.confidence,
                fixed_at: &fixed_at,
                steps: l.steps,
                mask_id,
            };
            canvas::draw_grid(ui.painter(), rect, Some(f.preview), &view, overlay);
            let shown = if replay.is_none() && !l.running {
                l.result.as_ref().map(|r| r.0)
            } else {
                None
            };
            ui.add(egui::Image::new((
                shown.unwrap_or(f.preview),
                Vec2::splat(size),
            )));
        });
        let status = if l.running {
            "running"
        } else if l.error.is_some() {
            "failed"
        } else {
            "done"
        };
        ui.add(
            egui::Label::new(format!(
                "{} · step {}/{} · {:.0} ms/step · {status}",
                l.settings.label(),
                f.step + 1,
                l.steps,
                f.ms
            ))
            .truncate(),
        );
    }

    fn timeline(&mut self, ui: &mut egui::Ui) {
        let max = self.lanes.iter().map(|l| l.frames.len()).max().unwrap_or(0);
        if max == 0 {
            return;
        }
        ui.horizontal(|ui| {
            let mut live = self.replay.is_none();
            ui.checkbox(&mut live, "live");
            let mut step = self.replay.unwrap_or(max - 1);
            let r = ui.add(
                egui::Slider::new(&mut step, 0..=max - 1)
                    .text("replay step")
                    .custom_formatter(|v, _| format!("{}", v as usize + 1)),
            );
            if r.changed() {
                live = false;
            }
            self.replay = if live { None } else { Some(step) };
            ui.separator();
            ui.label("overlay");
            ui.selectable_value(&mut self.overlay, Overlay::None, "none");
            ui.selectable_value(&mut self.overlay, Overlay::FixedStep, "step fixed");
            ui.selectable_value(&mut self.overlay, Overlay::Confidence, "confidence");
        });
    }

    fn save_buttons(&mut self, ui: &mut egui::Ui) {
        let Some(l) = self.lanes.first() else { return };
        if l.running || l.result.is_none() {
            return;
        }
        let (save_png, save_gif) = ui
            .horizontal(|ui| {
                (
                    ui.button("Save PNG").clicked(),
                    ui.button("Save GIF").clicked(),
                )
            })
            .inner;
        if save_png {
            let path = PathBuf::from(format!("tessera-{}.png", l.settings.seed));
            self.message = Some(match self.save_png(&path) {
                Ok(()) => format!("saved {}", path.display()),
                Err(e) => format!("{e:#}"),
            });
        }
        if save_gif {
            let path = PathBuf::from(format!("tessera-{}.gif", l.settings.seed));
            self.message = Some(match self.save_gif(&path) {
                Ok(()) => format!("saved {}", path.display()),
                Err(e) => format!("{e:#}"),
            });
        }
    }

    /// Decodes tokens on the engine's device and reads the pixels back (for files only).
    fn decode_cpu(
        &self,
        tokens: &[u32],
        grid: (usize, usize),
    ) -> Result<(Vec<f32>, (usize, usize))> {
        let Some(gpu) = &self.gpu else {
            anyhow::bail!("no GPU device")
        };
        let Some(model) = &self.model else {
            anyhow::bail!("no model loaded")
        };
        Ok(model.decode(gpu, tokens, 1, grid)?)
    }

    fn save_png(&self, path: &std::path::Path) -> Result<()> {
        let l = self.lanes.first().context("nothing generated")?;
        let (_, tokens, grid) = l.result.as_ref().context("still running")?;
        let (chw, (w, h)) = self.decode_cpu(tokens, *grid)?;
        let s = &l.settings;
        let opts = s.sampler_options();
        use tessera_engine::pipeline::settings::{Condition, Settings};
        let classes = self.model.as_ref().and_then(|m| match m.conditioning() {
            ModelConditioning::Class { classes } => Some(classes),
            ModelConditioning::Text => None,
        });
        let condition = match l.class {
            Some(label) => Condition::Class {
                label,
                name: classes.and_then(|n| crate::render::class_name(label, n)),
            },
            None => Condition::Text {
                prompt: &s.prompt,
                negative_prompt: &s.negative_prompt,
            },
        };
        let guided = self.model.as_ref().is_some_and(|m| m.has_guidance());
        let model_name = crate::render::model_name(
            (!self.model_arg.trim().is_empty()).then_some(self.model_arg.trim()),
        );
        let params = Settings {
            condition,
            sampler: &opts,
            guidance: guided.then_some(s.guidance),
            size: (w, h),
            model: &model_name,
        }
        .parameters();
        let text = std::collections::HashMap::from([("parameters".to_owned(), params)]);
        crate::files::write_atomically(path, &crate::files::png_bytes(&chw, w, h, &text)?)
    }

    fn save_gif(&self, path: &std::path::Path) -> Result<()> {
        let l = self.lanes.first().context("nothing generated")?;
        let mask_id = self.mask_id().unwrap_or(0);
        let mut frames = Vec::new();
        for f in &l.frames {
            let (chw, size) = self.decode_cpu(&f.predicted, f.grid)?;
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

    fn inpaint_ui(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            ui.label("Image");
            ui.add(
                egui::TextEdit::singleline(&mut self.image_path)
                    .hint_text("path to a PNG, or drop a file"),
            );
            if ui.button("Load").clicked() {
                let p = self.image_path.clone();
                self.load_edit_image(ui.ctx(), &p);
            }
            if ui.button("Use last result").clicked() {
                self.use_last_result(ui.ctx());
            }
        });
        let Some(e) = &mut self.edit else {
            ui.label("Load an image (or use the last result), paint the area to regenerate, then Inpaint.");
            return;
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
        ui.horizontal(|ui| {
            if ui.button("Inpaint").clicked() {
                self.run_inpaint(ui.ctx());
            }
            ui.separator();
            ui.label("grow canvas (tokens) L T R B");
            for g in &mut self.grow {
                ui.add(egui::DragValue::new(g).range(0..=16));
            }
            if ui.button("Outpaint").clicked() {
                self.run_outpaint(ui.ctx());
            }
            self.cancel_button(ui);
        });
    }

    fn load_edit_image(&mut self, ctx: &egui::Context, path: &str) {
        match crate::files::read_image(std::path::Path::new(path)) {
            Ok((pixels, w, h)) => self.set_edit(ctx, pixels, (w, h)),
            Err(e) => self.message = Some(format!("{e:#}")),
        }
    }

    fn use_last_result(&mut self, ctx: &egui::Context) {
        let last = self
            .lanes
            .first()
            .and_then(|l| l.result.as_ref())
            .map(|(_, t, g)| (t.clone(), *g));
        let Some((tokens, grid)) = last else {
            self.message = Some("no result yet".into());
            return;
        };
        match self.decode_cpu(&tokens, grid) {
            Ok((pixels, size)) => self.set_edit(ctx, pixels, size),
            Err(e) => self.message = Some(format!("{e:#}")),
        }
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

    fn run_inpaint(&mut self, ctx: &egui::Context) {
        let (Some(e), Some(model)) = (&self.edit, &self.model) else {
            return;
        };
        let f = model.vq_factor();
        let m = model.pixel_multiple();
        let (w, h) = e.size;
        if w % m != 0 || h % m != 0 {
            self.message = Some(format!(
                "the image is {w}×{h}; this model needs sides that are multiples of {m}"
            ));
            return;
        }
        if e.mask.len() != w * h {
            return;
        }
        // The painted mask as the 8-bit image a saved mask file would be.
        let l8: Vec<u8> = e
            .mask
            .iter()
            .map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
            .collect();
        let mask = crate::render::mask_to_grid(&l8, (w, h), (w / f, h / f));
        if !mask.iter().any(|m| *m) {
            self.message = Some("paint the area to regenerate first".into());
            return;
        }
        let start = Start::Inpaint {
            image: e.pixels.clone(),
            size: e.size,
            mask,
        };
        self.start(ctx, vec![self.settings.clone()], Some(start));
    }

    fn run_outpaint(&mut self, ctx: &egui::Context) {
        let Some(e) = &self.edit else { return };
        if self.grow.iter().sum::<usize>() == 0 {
            self.message = Some("set how many tokens to grow the canvas by".into());
            return;
        }
        let start = Start::Outpaint {
            image: e.pixels.clone(),
            size: e.size,
            grow: self.grow,
        };
        self.start(ctx, vec![self.settings.clone()], Some(start));
    }

    fn compare_ui(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            ui.label("Configurations (same prompt, seed, steps, guidance):");
            if self.compare.len() < 4 && ui.button("+").clicked() {
                self.compare.push((SamplerKind::Amused, Schedule::Pow(2.0)));
            }
            if self.compare.len() > 2 && ui.button("−").clicked() {
                self.compare.pop();
            }
            if ui.button("Run compare").clicked() {
                let lanes = self
                    .compare
                    .iter()
                    .map(|(k, s)| Settings {
                        sampler: *k,
                        schedule: *s,
                        ..self.settings.clone()
                    })
                    .collect();
                self.start(ui.ctx(), lanes, None);
            }
            self.cancel_button(ui);
        });
        ui.horizontal_wrapped(|ui| {
            for (i, (k, s)) in self.compare.iter_mut().enumerate() {
                ui.group(|ui| {
                    egui::ComboBox::from_id_salt(("cmp-sampler", i))
                        .selected_text(k.to_string())
                        .show_ui(ui, |ui| {
                            for kk in [
                                SamplerKind::Amused,
                                SamplerKind::MaskGit,
                                SamplerKind::Paella,
                            ] {
                                ui.selectable_value(k, kk, kk.to_string());
                            }
                        });
                    schedule_picker(ui, ("cmp-schedule", i), s);
                });
            }
        });
        let n = self.lanes.len();
        if n == 0 {
            return;
        }
        let size = ((ui.available_width() / n as f32 - 28.0) / 2.0).clamp(48.0, 240.0);
        ui.horizontal(|ui| {
            for i in 0..n {
                ui.vertical(|ui| {
                    ui.set_max_width(2.0 * size + 8.0);
                    self.current_lane_view(ui, i, size);
                });
            }
        });
        let curves: Vec<(String, Vec<[f64; 2]>)> = self
            .lanes
            .iter()
            .map(|l| (l.settings.label(), l.fixed_curve()))
            .collect();
        egui_plot::Plot::new("fixed-vs-step")
            .height(180.0)
            .legend(egui_plot::Legend::default())
            .x_axis_label("step")
            .y_axis_label("tokens fixed")
            .show(ui, |plot| {
                for (name, pts) in curves {
                    plot.line(egui_plot::Line::new(name, egui_plot::PlotPoints::from(pts)));
                }
            });
    }

    fn screenshot_logic(&mut self, ctx: &egui::Context) {
        if self.shot_state != ShotState::Waiting {
            return;
        }
        let done = !self.lanes.is_empty() && self.lanes.iter().all(|l| !l.running);
        if !done {
            return;
        }
        let Some(path) = self.screenshot.clone() else {
            return;
        };
        if let Some(step) = self.shot_step
            && self.replay != Some(step)
        {
            // Show that step first; shoot on the next frame.
            self.replay = Some(step);
            ctx.request_repaint();
            return;
        }
        self.shot_state = ShotState::Requested;
        let failed = self.failed.clone();
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

fn schedule_picker(
    ui: &mut egui::Ui,
    id: impl std::hash::Hash + std::fmt::Debug,
    schedule: &mut Schedule,
) {
    egui::ComboBox::from_id_salt(id)
        .selected_text(schedule.to_string())
        .show_ui(ui, |ui| {
            for (name, s) in Schedule::NAMED {
                ui.selectable_value(schedule, s, name);
            }
        });
    if let Schedule::Pow(p) = schedule {
        let mut v = *p as f32;
        if ui
            .add(egui::Slider::new(&mut v, 0.25..=4.0).text("power"))
            .changed()
        {
            *p = f64::from(v);
        }
    }
}

impl eframe::App for App {
    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        self.receive();
        let dropped: Vec<PathBuf> = ctx.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_path_buf())
                .collect()
        });
        if let Some(p) = dropped.first() {
            self.image_path = p.display().to_string();
            self.load_edit_image(ctx, &p.display().to_string());
            self.mode = Mode::Inpaint;
        }
        if ctx.input(|i| i.modifiers.command && i.key_pressed(egui::Key::Enter))
            && self.mode == Mode::Generate
        {
            self.start(ctx, vec![self.settings.clone()], None);
        }
        if ctx.input(|i| i.key_pressed(egui::Key::Escape)) {
            self.cancel_runs();
        }
        self.screenshot_logic(ctx);
        if self.lanes.iter().any(|l| l.running) {
            ctx.request_repaint_after(std::time::Duration::from_millis(100));
        }
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        egui::Panel::top("top").show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.strong("tessera");
                ui.separator();
                ui.label("Model");
                ui.add(
                    egui::TextEdit::singleline(&mut self.model_arg)
                        .hint_text("folder or hub id (empty: embedded default)")
                        .desired_width(360.0),
                );
                if ui.button("Open").clicked() {
                    self.load_model();
                }
                if let Some(g) = &self.gpu {
                    ui.label(format!("GPU: {} ({:?})", g.info.name, g.info.backend));
                }
            });
            if let Some(reason) = self.device_lost.clone() {
                ui.horizontal(|ui| {
                    ui.colored_label(
                        Color32::from_rgb(255, 110, 90),
                        format!(
                            "The GPU device was lost ({reason}). Nothing more can run on it; \
                             a restart opens a new one."
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
        });
        egui::Panel::left("settings")
            .default_size(280.0)
            .show(ui, |ui| {
                egui::ScrollArea::vertical().show(ui, |ui| self.settings_panel(ui));
            });
        egui::CentralPanel::default().show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.selectable_value(&mut self.mode, Mode::Generate, "Generate");
                ui.selectable_value(&mut self.mode, Mode::Inpaint, "Inpaint / outpaint");
                ui.selectable_value(&mut self.mode, Mode::Compare, "Compare");
            });
            ui.separator();
            match self.mode {
                Mode::Generate => {
                    ui.horizontal(|ui| {
                        if ui
                            .add_enabled(
                                self.model.is_some(),
                                egui::Button::new("Generate  (Ctrl+Enter)"),
                            )
                            .clicked()
                        {
                            self.start(ui.ctx(), vec![self.settings.clone()], None);
                        }
                        self.cancel_button(ui);
                    });
                    let size = ((ui.available_width() - 16.0) / 2.0).clamp(128.0, 420.0);
                    self.current_lane_view(ui, 0, size);
                }
                Mode::Inpaint => {
                    self.inpaint_ui(ui);
                    if !self.lanes.is_empty() {
                        ui.separator();
                        self.current_lane_view(ui, 0, 256.0);
                    }
                }
                Mode::Compare => self.compare_ui(ui),
            }
            ui.separator();
            self.timeline(ui);
            self.save_buttons(ui);
        });
    }
}

impl App {
    /// The Cancel control, enabled while a run is going (Esc does the same).
    fn cancel_button(&mut self, ui: &mut egui::Ui) {
        if ui
            .add_enabled(self.running(), egui::Button::new("Cancel  (Esc)"))
            .clicked()
        {
            self.cancel_runs();
        }
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
    /// Start in Compare mode with these configurations, e.g. amused:cosine,amused:linear.
    #[arg(long, value_name = "SAMPLER:SCHEDULE,..", value_delimiter = ',', value_parser = parse_lane)]
    pub compare: Vec<(SamplerKind, Schedule)>,
}

fn parse_lane(s: &str) -> Result<(SamplerKind, Schedule), String> {
    let (k, sch) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: expected SAMPLER:SCHEDULE"))?;
    Ok((k.parse()?, sch.parse()?))
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
        // the adapter's real limits and its optional features.
        create.device_descriptor = Arc::new(|adapter: &wgpu::Adapter| wgpu::DeviceDescriptor {
            label: Some("tessera"),
            required_features: adapter.features() & tessera_engine::gpu::WANTED_FEATURES,
            required_limits: adapter.limits(),
            ..Default::default()
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
            let f = app.failed.clone();
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
