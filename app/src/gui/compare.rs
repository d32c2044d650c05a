//! Compare mode: 2–4 configurations (sampler, schedule, and optionally their own model) run
//! with the same prompt and seed side by side, with the tokens fixed per step and the mask
//! schedule of each.

use tessera_engine::sampling::{SamplerKind, Schedule};

use super::runs::Runs;
use super::session::Session;
use super::settings::{sampler_picker, schedule_picker};

/// One compare lane: its sampler and schedule, and the model it runs (empty: the open one;
/// else a folder, checkpoint or hub id, as the model field takes).
#[derive(Clone, Debug, PartialEq)]
pub struct CompareLane {
    pub sampler: SamplerKind,
    pub schedule: Schedule,
    pub model: String,
}

impl CompareLane {
    pub fn new(sampler: SamplerKind, schedule: Schedule) -> Self {
        Self {
            sampler,
            schedule,
            model: String::new(),
        }
    }
}

pub struct ComparePanel {
    pub configs: Vec<CompareLane>,
}

impl Default for ComparePanel {
    fn default() -> Self {
        Self {
            configs: vec![
                CompareLane::new(SamplerKind::Amused, Schedule::Cosine),
                CompareLane::new(SamplerKind::Amused, Schedule::Linear),
            ],
        }
    }
}

impl ComparePanel {
    /// The panel; true when Run compare was clicked.
    pub fn ui(&mut self, ui: &mut egui::Ui, session: &mut Session, runs: &mut Runs) -> bool {
        let mut run = false;
        ui.horizontal(|ui| {
            ui.label("Configurations (same prompt, seed, steps, guidance):");
            if self.configs.len() < 4 && ui.button("+").clicked() {
                self.configs
                    .push(CompareLane::new(SamplerKind::Amused, Schedule::Pow(2.0)));
            }
            if self.configs.len() > 2 && ui.button("−").clicked() {
                self.configs.pop();
            }
            run = ui.button("Run compare").clicked();
            runs.cancel_button(ui, session);
        });
        ui.horizontal_wrapped(|ui| {
            for (i, lane) in self.configs.iter_mut().enumerate() {
                ui.group(|ui| {
                    ui.vertical(|ui| {
                        ui.horizontal(|ui| {
                            sampler_picker(ui, ("cmp-sampler", i), &mut lane.sampler);
                            schedule_picker(ui, ("cmp-schedule", i), &mut lane.schedule);
                        });
                        let label = ui.label(format!("model of lane {}", i + 1));
                        ui.add(
                            egui::TextEdit::singleline(&mut lane.model)
                                .hint_text("the open model")
                                .desired_width(220.0),
                        )
                        .labelled_by(label.id);
                    });
                });
            }
        });
        let n = runs.lanes.len();
        if n == 0 {
            return run;
        }
        let size = ((ui.available_width() / n as f32 - 28.0) / 2.0).clamp(48.0, 240.0);
        ui.horizontal(|ui| {
            for i in 0..n {
                ui.vertical(|ui| {
                    ui.set_max_width(2.0 * size + 8.0);
                    runs.lane_view(ui, i, size);
                });
            }
        });
        let curves: Vec<(String, Vec<[f64; 2]>)> = runs
            .lanes
            .iter()
            .map(|l| (l.label(), l.fixed_curve()))
            .collect();
        // Each lane's mask schedule: the fraction of tokens the schedule leaves masked after
        // each step, beside the tokens it fixed.
        let schedules: Vec<(String, Vec<[f64; 2]>)> = runs
            .lanes
            .iter()
            .map(|l| {
                let steps = l.steps.max(1);
                let pts = (0..=steps)
                    .map(|s| {
                        let r = s as f64 / steps as f64;
                        [s as f64, l.settings.schedule.mask_ratio(r, 1024)]
                    })
                    .collect();
                (l.label(), pts)
            })
            .collect();
        ui.columns(2, |cols| {
            egui_plot::Plot::new("fixed-vs-step")
                .height(180.0)
                .legend(egui_plot::Legend::default())
                .x_axis_label("step")
                .y_axis_label("tokens fixed")
                .show(&mut cols[0], |plot| {
                    for (name, pts) in curves {
                        plot.line(egui_plot::Line::new(name, egui_plot::PlotPoints::from(pts)));
                    }
                });
            egui_plot::Plot::new("mask-schedule")
                .height(180.0)
                .legend(egui_plot::Legend::default())
                .x_axis_label("step")
                .y_axis_label("masked fraction")
                .show(&mut cols[1], |plot| {
                    for (name, pts) in schedules {
                        plot.line(egui_plot::Line::new(name, egui_plot::PlotPoints::from(pts)));
                    }
                });
        });
        run
    }
}
