//! The settings panel: prompt (or class picker), seed, sampler, schedule, steps, guidance and
//! temperatures, with each model's defaults.

use tessera_engine::models::amused::GenerationDefaults;
use tessera_engine::pipeline::{Model, ModelConditioning, SuperResOptions};
use tessera_engine::sampling::{GuidanceSchedule, SamplerKind, SamplerOptions, Schedule};

use crate::render::RenderArgs;

/// One run's settings (Compare mode varies the sampler and schedule per lane).
#[derive(Clone, Debug)]
pub struct Settings {
    pub prompt: String,
    pub negative_prompt: String,
    pub seed: u64,
    pub sampler: SamplerKind,
    pub schedule: Schedule,
    pub steps: usize,
    pub guidance: f32,
    pub choice_t: (f32, f32),
    pub softmax_t: (f32, f32),
    pub guidance_schedule: GuidanceSchedule,
    /// Locally typical filtering's mass (Paella v1's default 0.2); `None`: off.
    pub typical_mass: Option<f32>,
    /// A two-stage model's super-resolution stage: run it (else stop after the base) …
    pub super_res: bool,
    /// … with this many steps.
    pub super_res_steps: usize,
}

impl Settings {
    /// The arguments over `model`'s own defaults (those of its reference pipeline).
    pub fn from_args(a: &RenderArgs, model: Option<&Model>) -> Self {
        let model_opts = model
            .and_then(|m| m.sampler_defaults(a.sampler, 0, false).ok())
            .unwrap_or_else(|| {
                SamplerOptions::for_kind(a.sampler.unwrap_or(SamplerKind::Amused), 0)
            });
        let default_guidance = model.map_or(
            GenerationDefaults::PIPELINE_GUIDANCE,
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
            guidance_schedule: a.guidance_schedule.unwrap_or(model_opts.guidance_schedule),
            typical_mass: match a.typical_mass {
                Some(0.0) => None,
                Some(m) => Some(m),
                None => model_opts.typical_mass,
            },
            super_res: a.stages != Some(1),
            super_res_steps: a.sr_steps.unwrap_or_else(|| {
                model
                    .and_then(Model::default_super_res_steps)
                    .unwrap_or(tessera_engine::models::amused::super_res::DEFAULT_STEPS)
            }),
        }
    }

    /// The super-resolution stage's options for `model` (the default for a one-stage model).
    pub fn super_res_options(&self, model: &Model) -> SuperResOptions {
        if model.stages() < 2 {
            return SuperResOptions::default();
        }
        SuperResOptions {
            skip: !self.super_res,
            steps: self.super_res.then_some(self.super_res_steps),
        }
    }

    pub fn sampler_options(&self) -> SamplerOptions {
        let mut o = SamplerOptions::for_kind(self.sampler, self.seed);
        o.schedule = self.schedule;
        o.steps = self.steps;
        o.choice_temperature = self.choice_t;
        o.softmax_temperature = self.softmax_t;
        o.guidance_schedule = self.guidance_schedule;
        o.typical_mass = self.typical_mass;
        o
    }

    pub fn label(&self) -> String {
        format!("{} · {}", self.sampler, self.schedule)
    }
}

/// The panel's state: the settings and, for class-conditional models, the class label.
pub struct SettingsPanel {
    pub settings: Settings,
    pub class: u32,
    class_search: String,
}

impl SettingsPanel {
    pub fn new(a: &RenderArgs, model: Option<&Model>) -> Self {
        Self {
            settings: Settings::from_args(a, model),
            class: a.class.unwrap_or(0),
            class_search: String::new(),
        }
    }

    /// Takes a newly opened model's defaults, keeping the prompts and seed.
    pub fn reset_for(&mut self, model: &Model) {
        if let ModelConditioning::Class { classes } = model.conditioning() {
            self.class = self.class.min(classes.saturating_sub(1) as u32);
        }
        let defaults = Settings::from_args(&RenderArgs::default(), Some(model));
        let s = &mut self.settings;
        *s = Settings {
            prompt: std::mem::take(&mut s.prompt),
            negative_prompt: std::mem::take(&mut s.negative_prompt),
            seed: s.seed,
            ..defaults
        };
    }

    /// The class label to run with, for a class-conditional model.
    pub fn class_label(&self, model: Option<&Model>) -> Option<u32> {
        model.and_then(|m| match m.conditioning() {
            ModelConditioning::Class { .. } => Some(self.class),
            ModelConditioning::Text => None,
        })
    }

    /// The panel, with a menu of `recent_prompts` beside the prompt.
    pub fn ui(&mut self, ui: &mut egui::Ui, model: Option<&Model>, recent_prompts: &[String]) {
        let conditioning = model.map(|m| (m.family(), m.conditioning()));
        if let Some((family, ModelConditioning::Class { classes })) = conditioning {
            self.class_picker(ui, &family.to_string(), classes);
        }
        let class_model = matches!(conditioning, Some((_, ModelConditioning::Class { .. })));
        let guided = model.is_none_or(Model::has_guidance);
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
            guidance_schedule,
            typical_mass,
            super_res,
            super_res_steps,
        } = &mut self.settings;
        if !class_model {
            let label = ui.horizontal(|ui| {
                let label = ui.heading("Prompt");
                super::history::recent_menu(ui, "prompts", recent_prompts, prompt);
                label
            });
            let label = label.inner;
            ui.add(
                egui::TextEdit::multiline(prompt)
                    .desired_rows(2)
                    .hint_text("blue heart"),
            )
            .labelled_by(label.id);
            let label = ui.label("Negative prompt");
            ui.add(egui::TextEdit::singleline(negative_prompt))
                .labelled_by(label.id);
        }
        ui.horizontal(|ui| {
            let label = ui.label("Seed");
            ui.add(egui::DragValue::new(seed)).labelled_by(label.id);
            if ui
                .button("random")
                .on_hover_text("new random seed")
                .clicked()
            {
                *seed = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64 % 1_000_000_000);
            }
            if ui
                .button("copy")
                .on_hover_text("copy the seed to the clipboard")
                .clicked()
            {
                ui.ctx().copy_text(seed.to_string());
            }
        });
        ui.separator();
        ui.heading("Sampler");
        sampler_picker(ui, "sampler", sampler);
        schedule_picker(ui, "schedule", schedule);
        ui.add(egui::Slider::new(steps, 1..=48).text("steps"));
        if model.is_some_and(|m| m.stages() == 2) {
            ui.checkbox(super_res, "super-resolution stage")
                .on_hover_text(
                    "this model has two stages: the base makes a small image, the \
                     super-resolution stage its larger version (off: stop after the base)",
                );
            if *super_res {
                ui.add(egui::Slider::new(super_res_steps, 1..=48).text("super-res steps"));
            }
        }
        if guided {
            ui.add(egui::Slider::new(guidance, 0.0..=20.0).text("guidance"));
            guidance_schedule_picker(ui, guidance_schedule, *steps);
        }
        ui.label("Choice temperature (re-masking)");
        ui.add(egui::Slider::new(&mut choice_t.0, 0.0..=10.0).text("start"));
        ui.add(egui::Slider::new(&mut choice_t.1, 0.0..=10.0).text("end"));
        ui.label("Softmax temperature (Paella)");
        ui.add(egui::Slider::new(&mut softmax_t.0, 0.05..=2.0).text("start"));
        ui.add(egui::Slider::new(&mut softmax_t.1, 0.05..=2.0).text("end"));
        let mut typical = typical_mass.is_some();
        if ui
            .checkbox(&mut typical, "typical filtering")
            .on_hover_text("keep the locally typical tokens (Paella v1 samples this way)")
            .changed()
        {
            *typical_mass = typical.then_some(0.2);
        }
        if let Some(m) = typical_mass {
            ui.add(egui::Slider::new(m, 0.01..=1.0).text("mass"));
        }
    }

    /// Class number, its ImageNet name, and a search over the names.
    fn class_picker(&mut self, ui: &mut egui::Ui, family: &str, n: usize) {
        let heading = ui.heading("Class");
        ui.label(format!("class-conditional {family}, {n} classes"));
        ui.horizontal(|ui| {
            ui.add(egui::DragValue::new(&mut self.class).range(0..=n.saturating_sub(1) as u32))
                .labelled_by(heading.id);
            if let Some(name) = crate::render::class_name(self.class, n) {
                ui.label(name);
            }
        });
        if n == 1000 {
            let search = ui
                .add(
                    egui::TextEdit::singleline(&mut self.class_search)
                        .hint_text("find a class, e.g. retriever"),
                )
                .labelled_by(heading.id);
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
}

pub fn sampler_picker(
    ui: &mut egui::Ui,
    id: impl std::hash::Hash + std::fmt::Debug,
    sampler: &mut SamplerKind,
) {
    egui::ComboBox::new(id, "sampler")
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
}

/// Constant, Muse's linear ramp, open-muse's cosine, or guidance for the first N steps only.
fn guidance_schedule_picker(ui: &mut egui::Ui, g: &mut GuidanceSchedule, steps: usize) {
    egui::ComboBox::new("guidance_schedule", "guidance schedule")
        .selected_text(g.to_string())
        .show_ui(ui, |ui| {
            let first = match *g {
                GuidanceSchedule::First(n) => GuidanceSchedule::First(n),
                _ => GuidanceSchedule::First(steps.div_ceil(2).max(1)),
            };
            for (name, v) in [
                ("constant", GuidanceSchedule::Constant),
                ("linear", GuidanceSchedule::Linear),
                ("cosine", GuidanceSchedule::Cosine),
                ("first N steps", first),
            ] {
                ui.selectable_value(g, v, name);
            }
        });
    if let GuidanceSchedule::First(n) = g {
        ui.add(egui::Slider::new(n, 1..=steps.max(1)).text("guided steps"));
    }
}

pub fn schedule_picker(
    ui: &mut egui::Ui,
    id: impl std::hash::Hash + std::fmt::Debug,
    schedule: &mut Schedule,
) {
    egui::ComboBox::new(id, "schedule")
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
