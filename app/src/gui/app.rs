//! The window: the top bar (session), the settings panel, and the Generate, Inpaint /
//! outpaint and Compare modes, each panel owning its state; shortcuts and dropped files.

use tessera_engine::pipeline::Start;

use super::ScreenshotArgs;
use super::compare::ComparePanel;
use super::history::{Made, RECENT_KEY, Recent, Strip};
use super::inpaint::InpaintPanel;
use super::platform::Textures;
use super::runs::{LaneSpec, Runs};
use super::save::save_buttons;
use super::screenshot::Screenshot;
use super::session::Session;
use super::settings::{Settings, SettingsPanel};
use crate::files::Fit;
use crate::render::RenderArgs;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Generate,
    Inpaint,
    Compare,
}

pub struct App {
    pub session: Session,
    settings: SettingsPanel,
    runs: Runs,
    inpaint: InpaintPanel,
    compare: ComparePanel,
    shot: Screenshot,
    mode: Mode,
    /// Prompts and models used recently (kept across restarts).
    recent: Recent,
    /// The images made this session.
    strip: Strip,
    /// A generation asked for before the model was open (the screenshot mode, the page's
    /// `run=1`): it starts once the model opens.
    autorun: bool,
    /// The start-up options, while the model they are for is still being fetched: its
    /// settings then come from them and the model, as they do when it opens at once.
    start_args: Option<RenderArgs>,
    /// What the page shows of the runs (browser only).
    #[cfg(target_arch = "wasm32")]
    page: super::page::Report,
}

impl App {
    pub fn new(cc: &eframe::CreationContext<'_>, args: &RenderArgs, shot: &ScreenshotArgs) -> Self {
        #[cfg(not(target_arch = "wasm32"))]
        let textures = cc.wgpu_render_state.clone().map(Textures::new);
        #[cfg(target_arch = "wasm32")]
        let textures = Some(Textures::new(cc.egui_ctx.clone()));
        let mut session = Session::new(textures, args.model.clone().unwrap_or_default());
        session.load_model();
        let mut app = Self {
            settings: SettingsPanel::new(args, session.model.as_deref()),
            session,
            runs: Runs::default(),
            inpaint: InpaintPanel::default(),
            compare: ComparePanel::default(),
            shot: Screenshot::new(shot.screenshot.clone(), shot.screenshot_step),
            mode: Mode::Generate,
            recent: cc
                .storage
                .and_then(|s| eframe::get_value(s, RECENT_KEY))
                .unwrap_or_default(),
            strip: Strip::default(),
            autorun: false,
            start_args: None,
            #[cfg(target_arch = "wasm32")]
            page: Default::default(),
        };
        if app.session.model.is_none() {
            app.start_args = Some(args.clone());
        }
        if !shot.compare.is_empty() {
            app.compare.configs = shot.compare.clone();
            app.mode = Mode::Compare;
        }
        if app.shot.on() || shot.run {
            app.autorun = true;
            app.start_autorun(&cc.egui_ctx);
        }
        app
    }

    /// Starts the generation asked for on start-up once the model is open.
    fn start_autorun(&mut self, ctx: &egui::Context) {
        if !self.autorun || self.session.model.is_none() {
            return;
        }
        self.autorun = false;
        match self.mode {
            Mode::Compare => self.run_compare(ctx),
            _ => self.generate(ctx, None),
        }
    }

    /// One lane with the panel's settings.
    fn generate(&mut self, ctx: &egui::Context, start: Option<Start>) {
        Recent::remember(&mut self.recent.prompts, &self.settings.settings.prompt);
        let lane = LaneSpec {
            settings: self.settings.settings.clone(),
            class: self.settings.class_label(self.session.model.as_deref()),
            model: None,
        };
        self.runs.start(&mut self.session, ctx, vec![lane], start);
        #[cfg(target_arch = "wasm32")]
        self.page.started();
    }

    /// One lane per Compare configuration, each on its own model where it names one.
    fn run_compare(&mut self, ctx: &egui::Context) {
        Recent::remember(&mut self.recent.prompts, &self.settings.settings.prompt);
        let mut lanes = Vec::new();
        for c in self.compare.configs.clone() {
            let model = if c.model.trim().is_empty() {
                None
            } else {
                match self.session.lane_model(&c.model) {
                    Ok(m) => Some((c.model.trim().to_owned(), m)),
                    Err(e) => {
                        self.session.message = Some(format!("{e:#}"));
                        return;
                    }
                }
            };
            let lane_model = model
                .as_ref()
                .map(|(_, m)| m.clone())
                .or_else(|| self.session.model.clone());
            lanes.push(LaneSpec {
                settings: Settings {
                    sampler: c.sampler,
                    schedule: c.schedule,
                    ..self.settings.settings.clone()
                },
                class: self.settings.class_label(lane_model.as_deref()),
                model,
            });
        }
        self.runs.start(&mut self.session, ctx, lanes, None);
        #[cfg(target_arch = "wasm32")]
        self.page.started();
    }

    fn open_model(&mut self, ctx: &egui::Context) {
        if let Some(m) = self.session.load_model() {
            match self.start_args.take() {
                Some(a) => self.settings = SettingsPanel::new(&a, Some(&m)),
                None => self.settings.reset_for(&m),
            }
            Recent::remember(&mut self.recent.models, &self.session.model_arg);
            self.start_autorun(ctx);
        }
    }

    /// What the open model takes with the current settings (a two-stage model's output size
    /// with its super-resolution stage on, the base's multiples with it off): images opened for
    /// editing are resized to it.
    fn image_fit(&self) -> Option<Fit> {
        let model = self.session.model.as_deref()?;
        Some(Fit::for_model(
            model,
            self.settings.settings.super_res_options(model),
        ))
    }

    /// Files dropped on the window: an image opens in the inpaint panel; in the browser a
    /// dropped model folder (read by the page's script) opens as the model.
    fn take_dropped(&mut self, ctx: &egui::Context) {
        let fit = self.image_fit();
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(f) = ctx.input(|i| i.raw.dropped_files.first().cloned()) {
            self.inpaint
                .load(ctx, &f.path().display().to_string(), &mut self.session, fit);
            self.mode = Mode::Inpaint;
        }
        #[cfg(target_arch = "wasm32")]
        match super::page::take_dropped() {
            Some(super::page::Dropped::Image(name, bytes)) => {
                self.inpaint
                    .load_bytes(ctx, &name, &bytes, &mut self.session, fit);
                self.mode = Mode::Inpaint;
            }
            Some(super::page::Dropped::Model(root)) => {
                self.session.model_arg = root;
                self.open_model(ctx);
            }
            None => {}
        }
    }
}

impl eframe::App for App {
    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, RECENT_KEY, &self.recent);
    }

    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        if self.session.poll_gpu() {
            self.open_model(ctx);
        }
        if self.session.opening_gpu() {
            ctx.request_repaint_after(std::time::Duration::from_millis(100));
        }
        if self.session.download.is_some() {
            if self.session.poll_download() {
                self.open_model(ctx);
            }
            ctx.request_repaint_after(std::time::Duration::from_millis(200));
        }
        self.session.show_notices();
        self.runs.receive(&mut self.session);
        #[cfg(target_arch = "wasm32")]
        self.page.update(&self.session, &self.runs);
        for (texture, label) in std::mem::take(&mut self.runs.finished) {
            let old = self.strip.push(Made { texture, label });
            if let Some(t) = &self.session.textures {
                t.free(old);
            }
        }
        self.take_dropped(ctx);
        if ctx.input(|i| i.modifiers.command && i.key_pressed(egui::Key::Enter))
            && self.mode == Mode::Generate
        {
            self.generate(ctx, None);
        }
        if ctx.input(|i| i.key_pressed(egui::Key::Escape)) {
            self.runs.cancel(&mut self.session);
        }
        self.shot
            .logic(ctx, &mut self.runs, &self.session.failed.clone());
        if self.runs.running() {
            ctx.request_repaint_after(std::time::Duration::from_millis(100));
        }
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        egui::Panel::top("top").show(ui, |ui| {
            if self.session.top_bar(ui, &self.recent.models) {
                self.open_model(ui.ctx());
            }
        });
        egui::Panel::left("settings")
            .default_size(280.0)
            .show(ui, |ui| {
                egui::ScrollArea::vertical().show(ui, |ui| {
                    self.settings
                        .ui(ui, self.session.model.as_deref(), &self.recent.prompts);
                });
            });
        egui::Panel::bottom("made").show(ui, |ui| self.strip.ui(ui));
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
                                self.session.model.is_some(),
                                egui::Button::new("Generate  (Ctrl+Enter)"),
                            )
                            .clicked()
                        {
                            self.generate(ui.ctx(), None);
                        }
                        self.runs.cancel_button(ui, &mut self.session);
                    });
                    let size = ((ui.available_width() - 16.0) / 2.0).clamp(128.0, 420.0);
                    self.runs.lane_view(ui, 0, size);
                }
                Mode::Inpaint => {
                    let fit = self.image_fit();
                    if let Some(start) = self.inpaint.ui(ui, &mut self.session, &mut self.runs, fit)
                    {
                        self.generate(ui.ctx(), Some(start));
                    }
                    if !self.runs.lanes.is_empty() {
                        ui.separator();
                        self.runs.lane_view(ui, 0, 256.0);
                    }
                }
                Mode::Compare => {
                    if self.compare.ui(ui, &mut self.session, &mut self.runs) {
                        self.run_compare(ui.ctx());
                    }
                }
            }
            ui.separator();
            self.runs.timeline(ui);
            save_buttons(ui, &mut self.session, &self.runs);
        });
    }
}
