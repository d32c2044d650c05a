//! Compare mode: 2–4 configurations (sampler, schedule, and optionally their own model) run
//! with the same prompt and seed side by side, with the tokens fixed per step and the mask
//! schedule of each.

use egui::Color32;
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
        // Per lane (one colour each): tokens fixed after each step, and the fraction of tokens
        // its mask schedule leaves masked, one line per stage: a two-stage run's
        // super-resolution stage starts again, all masked, after the base's steps, on its own
        // schedule.
        let lanes: Vec<(String, Color32, Lines, Lines)> = runs
            .lanes
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let base = l.settings.steps.clamp(1, l.steps.max(1));
                let mut schedule = vec![schedule_points(l.settings.schedule, 0, base)];
                let super_res = l.steps - base;
                if super_res > 0
                    && let Some(s) = l.model.super_res_schedule()
                {
                    schedule.push(schedule_points(s, base, super_res));
                }
                let colour = LANE_COLOURS[i % LANE_COLOURS.len()];
                (l.label(), colour, l.fixed_curves(), schedule)
            })
            .collect();
        let lines =
            |plot: &mut egui_plot::PlotUi<'_>, name: &str, colour, lines: &[Vec<[f64; 2]>]| {
                for pts in lines {
                    plot.line(
                        egui_plot::Line::new(name, egui_plot::PlotPoints::from(pts.clone()))
                            .color(colour),
                    );
                }
            };
        ui.columns(2, |cols| {
            egui_plot::Plot::new("fixed-vs-step")
                .height(180.0)
                .legend(egui_plot::Legend::default())
                .x_axis_label("step")
                .y_axis_label("tokens fixed")
                .show(&mut cols[0], |plot| {
                    for (name, colour, fixed, _) in &lanes {
                        lines(plot, name, *colour, fixed);
                    }
                });
            egui_plot::Plot::new("mask-schedule")
                .height(180.0)
                .legend(egui_plot::Legend::default())
                .x_axis_label("step")
                .y_axis_label("masked fraction")
                .show(&mut cols[1], |plot| {
                    for (name, colour, _, schedule) in &lanes {
                        lines(plot, name, *colour, schedule);
                    }
                });
        });
        run
    }
}

/// A plot's lines for one lane: `[x, y]` points, one line per stage.
type Lines = Vec<Vec<[f64; 2]>>;

/// One colour per lane, the same in both plots (a lane draws a line per stage).
const LANE_COLOURS: [Color32; 4] = [
    Color32::from_rgb(230, 95, 85),
    Color32::from_rgb(90, 145, 235),
    Color32::from_rgb(110, 190, 95),
    Color32::from_rgb(225, 175, 60),
];

/// `[step, masked fraction]` after each of a stage's `steps` steps on `schedule`, from `first`
/// (its start, all masked) on.
fn schedule_points(schedule: Schedule, first: usize, steps: usize) -> Vec<[f64; 2]> {
    (0..=steps)
        .map(|s| {
            let r = s as f64 / steps.max(1) as f64;
            [(first + s) as f64, schedule.mask_ratio(r, 1024)]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A super-resolution stage's points start masked at the base's last step and end
    /// unmasked after its own.
    #[test]
    fn a_stage_schedule_runs_from_all_masked_to_none() {
        let pts = schedule_points(Schedule::Cosine, 12, 8);
        assert_eq!(pts.len(), 9);
        assert_eq!(pts[0], [12.0, 1.0]);
        assert_eq!(pts[8][0], 20.0);
        assert!(pts[8][1] <= 1e-6, "{pts:?}");
        assert!(pts.windows(2).all(|w| w[1][1] <= w[0][1]), "{pts:?}");
    }
}
