//! Runs and their lanes: starting and cancelling generation on worker threads, receiving their
//! steps, and showing a lane (token grid beside the decoded preview) with the replay timeline.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};

use egui::Vec2;

use tessera_engine::GpuContext;
use tessera_engine::pipeline::{Model, Start};
use tessera_engine::sampling::{SamplerKind, Schedule};

use super::canvas::{self, GridView, Overlay};
use super::session::Session;
use super::settings::Settings;
use super::worker::{self, Cancel, Finished, Job, Msg, Preview};

/// One step as received, with its preview texture.
#[derive(Clone)]
pub struct Frame {
    pub step: usize,
    /// 0: the base (or only) stage; 1: a two-stage model's super-resolution stage.
    pub stage: usize,
    pub tokens: Vec<u32>,
    pub newly_fixed: Vec<bool>,
    pub confidence: Vec<f32>,
    pub predicted: Vec<u32>,
    pub preview: Preview,
    pub grid: (usize, usize),
    pub ms: f64,
    pub fixed_total: usize,
}

/// What to start a lane with: its settings, its class label (class-conditional models) and
/// its model (None: the session's).
pub struct LaneSpec {
    pub settings: Settings,
    pub class: Option<u32>,
    pub model: Option<(String, Arc<Model>)>,
}

/// One generation run (Compare mode runs 2–4 side by side).
pub struct Lane {
    pub settings: Settings,
    /// The model it ran on, and its name when it is not the session's.
    pub model: Arc<Model>,
    pub model_name: Option<String>,
    /// The class label it ran with (class-conditional models).
    pub class: Option<u32>,
    pub frames: Vec<Frame>,
    pub steps: usize,
    /// The final image (its crisp texture belongs to the strip of images made this session
    /// once received).
    pub result: Option<Finished>,
    pub error: Option<String>,
    pub running: bool,
    /// The device it runs on and how many call shapes its kernel tuner had measured when the
    /// lane started: until the first step arrives, the lane says when the engine is timing
    /// kernels (a GPU's first run; [`tessera_engine::gpu::Tuner`]).
    pub tuning: Option<(Arc<GpuContext>, usize)>,
}

impl Lane {
    pub(super) fn new(
        settings: Settings,
        class: Option<u32>,
        model: Arc<Model>,
        model_name: Option<String>,
    ) -> Self {
        Self {
            model,
            model_name,
            class,
            steps: settings.steps,
            settings,
            frames: Vec::new(),
            result: None,
            error: None,
            running: true,
            tuning: None,
        }
    }

    /// Call shapes whose kernels were timed since the lane started (0 without a device).
    fn tuned_since_start(&self) -> usize {
        self.tuning.as_ref().map_or(0, |(gpu, at_start)| {
            gpu.tuner().stats().measured.saturating_sub(*at_start)
        })
    }

    /// What the lane shows before its first step.
    fn waiting_text(&self) -> String {
        if !self.running {
            return "no steps".to_owned();
        }
        match self.tuned_since_start() {
            0 => "starting…".to_owned(),
            n => format!(
                "starting… timing this GPU's kernels, once: {n} call shape{}",
                if n == 1 { "" } else { "s" }
            ),
        }
    }

    /// Sampler · schedule, and the model when it is the lane's own.
    pub fn label(&self) -> String {
        match &self.model_name {
            Some(m) => format!("{} · {m}", self.settings.label()),
            None => self.settings.label(),
        }
    }

    /// Tokens fixed after each step, `[step (1-based), count]`, one line per stage (a two-stage
    /// run's super-resolution stage starts again from none fixed, on its larger grid).
    pub fn fixed_curves(&self) -> Vec<Vec<[f64; 2]>> {
        let mut lines: Vec<Vec<[f64; 2]>> = Vec::new();
        let mut stage = None;
        for f in &self.frames {
            if stage != Some(f.stage) {
                stage = Some(f.stage);
                lines.push(Vec::new());
            }
            if let Some(line) = lines.last_mut() {
                line.push([(f.step + 1) as f64, f.fixed_total as f64]);
            }
        }
        lines
    }
}

/// The lanes of the latest start, the channel their workers post to, and how they are shown.
pub struct Runs {
    pub lanes: Vec<Lane>,
    tx: Sender<Msg>,
    rx: Receiver<Msg>,
    /// Stops the runs of the latest start (Cancel button, Esc).
    cancel: Cancel,
    /// Step shown (None: follow the newest).
    pub replay: Option<usize>,
    pub overlay: Overlay,
    /// Decoded images drawn smooth (linear) rather than crisp (nearest) when enlarged.
    pub smooth: bool,
    /// The zoomed and panned part of each lane's view, by lane; `Rect::ZERO` (or none yet)
    /// fits the whole view.
    pub views: std::cell::RefCell<Vec<egui::Rect>>,
    /// Final images received since the app last took them (their textures and what made
    /// them), for the strip of images made this session, which then owns the textures.
    pub finished: Vec<(egui::TextureId, String)>,
}

impl Default for Runs {
    fn default() -> Self {
        let (tx, rx) = channel();
        Self {
            lanes: Vec::new(),
            tx,
            rx,
            cancel: Cancel::default(),
            replay: None,
            overlay: Overlay::None,
            smooth: false,
            views: std::cell::RefCell::new(Vec::new()),
            finished: Vec::new(),
        }
    }
}

impl Runs {
    /// True while any lane of the latest start is running.
    pub fn running(&self) -> bool {
        self.lanes.iter().any(|l| l.running)
    }

    /// Asks the running lanes to stop after their current step; their buffers go back to the
    /// pool when their threads return.
    pub fn cancel(&mut self, session: &mut Session) {
        if self.running() {
            self.cancel.cancel();
            session.message = Some("cancelling…".into());
        }
    }

    /// The Cancel control, enabled while a run is going (Esc does the same).
    pub fn cancel_button(&mut self, ui: &mut egui::Ui, session: &mut Session) {
        if ui
            .add_enabled(self.running(), egui::Button::new("Cancel  (Esc)"))
            .clicked()
        {
            self.cancel(session);
        }
    }

    fn free_lanes(&mut self, session: &Session) {
        let Some(t) = &session.textures else {
            return;
        };
        for l in self.lanes.drain(..) {
            t.free(
                l.frames
                    .iter()
                    .flat_map(|f| [f.preview.crisp, f.preview.smooth]),
            );
            // The final image's crisp texture belongs to the strip.
            t.free(l.result.iter().map(|f| f.preview.smooth));
        }
    }

    /// Starts one lane per spec, each on its own model or the session's.
    pub fn start(
        &mut self,
        session: &mut Session,
        ctx: &egui::Context,
        lanes: Vec<LaneSpec>,
        start: Option<Start>,
    ) {
        if let Some(reason) = &session.device_lost {
            session.message = Some(format!(
                "the GPU device was lost ({reason}): restart tessera"
            ));
            return;
        }
        let (Some(gpu), Some(textures)) = (session.gpu.clone(), session.textures.clone()) else {
            session.message = Some("no GPU device".into());
            return;
        };
        if session.model.is_none() && lanes.iter().any(|l| l.model.is_none()) {
            session.message = Some("open a model first".into());
            return;
        }
        // Runs still going stop, and a new channel keeps their last messages out of the new
        // lanes.
        self.cancel.cancel();
        self.cancel = Cancel::default();
        (self.tx, self.rx) = channel();
        session.message = None;
        // Give the old runs' textures back.
        self.free_lanes(session);
        self.replay = None;
        for (i, spec) in lanes.into_iter().enumerate() {
            let LaneSpec {
                settings: s,
                class,
                model,
            } = spec;
            let (model, model_name) = match model {
                Some((name, m)) => (m, Some(name)),
                None => match session.model.clone() {
                    Some(m) => (m, None),
                    None => return,
                },
            };
            let super_res = s.super_res_options(&model);
            let start = start
                .clone()
                .unwrap_or(Start::Blank(model.grid_for(super_res)));
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
                super_res,
                cancel: self.cancel.clone(),
            };
            let mut lane = Lane::new(s, class, model.clone(), model_name);
            lane.tuning = Some((gpu.clone(), gpu.tuner().stats().measured));
            self.lanes.push(lane);
            worker::spawn(
                gpu.clone(),
                model.clone(),
                textures.clone(),
                job,
                self.tx.clone(),
                ctx.clone(),
            );
        }
    }

    /// Takes what the workers posted since the last frame.
    pub fn receive(&mut self, session: &mut Session) {
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                Msg::Step(lane, m) => {
                    if let Some(l) = self.lanes.get_mut(lane) {
                        l.steps = m.steps;
                        l.frames.push(Frame {
                            step: m.step,
                            stage: m.stage,
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
                Msg::Done(lane, finished) => {
                    if let Some(l) = self.lanes.get_mut(lane) {
                        let id = finished.preview;
                        l.result = Some(*finished);
                        l.running = false;
                        let what = if l.settings.prompt.is_empty() {
                            l.class.map_or_else(String::new, |c| format!("class {c}"))
                        } else {
                            l.settings.prompt.clone()
                        };
                        self.finished.push((
                            id.crisp,
                            format!("{what} · seed {} · {}", l.settings.seed, l.label()),
                        ));
                    }
                }
                Msg::Cancelled(lane, why) => {
                    if let Some(l) = self.lanes.get_mut(lane) {
                        l.error = Some(why.clone());
                        l.running = false;
                    }
                    session.message = Some(why);
                }
                Msg::Failed(lane, f) => {
                    if let Some(l) = self.lanes.get_mut(lane) {
                        l.error = Some(f.message.clone());
                        l.running = false;
                    }
                    if f.device_lost {
                        session.device_lost = Some(f.message.clone());
                    }
                    session.message = Some(f.message);
                    session
                        .failed
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
    }

    /// The first lane's final image, once it has it.
    pub fn last_result(&self) -> Option<&Finished> {
        self.lanes.first().and_then(|l| l.result.as_ref())
    }

    /// Lane `lane` at the replay step: the token grid (with the overlay) beside the decoded
    /// preview (the final image once done), and a status line.
    pub fn lane_view(&self, ui: &mut egui::Ui, lane: usize, size: f32) {
        let Some(l) = self.lanes.get(lane) else {
            return;
        };
        let mask_id = l.model.mask_id();
        let Some(last) = l.frames.len().checked_sub(1) else {
            ui.add_sized([size * 2.0 + 8.0, size], egui::Label::new(l.waiting_text()));
            return;
        };
        let idx = self.replay.unwrap_or(last).min(last);
        let f = &l.frames[idx];
        let mut fixed_at = vec![None; f.tokens.len()];
        for fr in &l.frames[..=idx] {
            for (i, nf) in fr.newly_fixed.iter().enumerate() {
                if *nf && fixed_at[i].is_none() {
                    fixed_at[i] = Some(fr.step);
                }
            }
        }
        // Zoom (Ctrl/⌘ + scroll, pinch) and pan (drag) the grid and the image together.
        let mut view = self
            .views
            .borrow()
            .get(lane)
            .copied()
            .unwrap_or(egui::Rect::ZERO);
        // Each lane's scene gets its own id: a scene draws in a layer named by it, and two
        // scenes in one layer would share one transform.
        ui.push_id(("lane view", lane), |ui| {
            ui.allocate_ui(Vec2::new(size * 2.0 + 8.0, size), |ui| {
                egui::Scene::new()
                    .zoom_range(0.25..=32.0)
                    .show(ui, &mut view, |ui| {
                        ui.horizontal(|ui| {
                            let (rect, grid_response) =
                                ui.allocate_exact_size(Vec2::splat(size), egui::Sense::hover());
                            let grid_view = GridView {
                                grid: f.grid,
                                tokens: &f.tokens,
                                newly_fixed: &f.newly_fixed,
                                confidence: &f.confidence,
                                fixed_at: &fixed_at,
                                steps: l.steps,
                                mask_id,
                            };
                            canvas::draw_grid(
                                ui.painter(),
                                rect,
                                Some(f.preview.crisp),
                                &grid_view,
                                self.overlay,
                            );
                            // Hover readout: token id, step fixed, confidence of the cell under
                            // the pointer.
                            if let Some(cell) = grid_response
                                .hover_pos()
                                .and_then(|p| canvas::cell_at(rect, f.grid, p))
                            {
                                grid_response
                                    .on_hover_text_at_pointer(canvas::readout(&grid_view, cell));
                            }
                            let shown = if self.replay.is_none() && !l.running {
                                l.result.as_ref().map(|r| r.preview)
                            } else {
                                None
                            };
                            ui.add(egui::Image::new((
                                shown.unwrap_or(f.preview).id(self.smooth),
                                Vec2::splat(size),
                            )));
                        });
                    });
            })
        });
        let mut views = self.views.borrow_mut();
        if views.len() <= lane {
            views.resize(lane + 1, egui::Rect::ZERO);
        }
        views[lane] = view;
        let status = if l.running {
            "running"
        } else if l.error.is_some() {
            "failed"
        } else {
            "done"
        };
        // A two-stage model's steps: the base's, then the super-resolution stage's.
        let stage = if f.stage == 1 { " · super-res" } else { "" };
        ui.add(
            egui::Label::new(format!(
                "{} · step {}/{}{stage} · {:.0} ms/step · {status}",
                l.label(),
                f.step + 1,
                l.steps,
                f.ms
            ))
            .truncate(),
        );
    }

    /// The replay slider ("live" follows the newest step) and the overlay choice.
    pub fn timeline(&mut self, ui: &mut egui::Ui) {
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
            ui.separator();
            ui.checkbox(&mut self.smooth, "smooth")
                .on_hover_text("draw enlarged images smoothed (linear) instead of crisp pixels");
            if ui
                .button("fit")
                .on_hover_text("undo zoom (Ctrl + scroll) and pan (drag)")
                .clicked()
            {
                self.views.borrow_mut().clear();
            }
        });
    }
}
