//! Generation off the UI thread: a job runs the engine's pipeline (the same code path as
//! `--render`) and streams each step to the UI over a channel.

use std::sync::Arc;
use std::sync::mpsc::Sender;

use tessera_engine::GpuContext;
use tessera_engine::models::amused::AmusedPipeline;
use tessera_engine::pipeline::{self, Request, Start};
use tessera_engine::sampling::SamplerOptions;

/// One step of one lane, ready to show.
pub struct StepMsg {
    pub step: usize,
    pub steps: usize,
    pub tokens: Vec<u32>,
    pub newly_fixed: Vec<bool>,
    pub confidence: Vec<f32>,
    /// RGBA8 of the decoded prediction.
    pub preview: Vec<u8>,
    pub size: (usize, usize),
    pub grid: (usize, usize),
    pub ms: f64,
    /// Tokens settled after the step (not masked and equal to their prediction, i.e. not
    /// re-noised by Paella).
    pub fixed_total: usize,
}

pub enum Msg {
    Step(usize, Box<StepMsg>),
    Done(usize, Vec<u8>, (usize, usize)),
    Failed(usize, String),
}

/// Everything a job needs, owned so it can move to the worker thread.
pub struct Job {
    pub lane: usize,
    pub prompt: String,
    pub negative_prompt: String,
    pub guidance: f32,
    pub sampler: SamplerOptions,
    pub start: Start,
}

/// NCHW [0, 1] floats of the first image → RGBA8.
pub fn rgba(chw: &[f32], (w, h): (usize, usize)) -> Vec<u8> {
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

pub fn spawn(
    gpu: Arc<GpuContext>,
    pipe: Arc<AmusedPipeline>,
    job: Job,
    tx: Sender<Msg>,
    repaint: egui::Context,
) {
    std::thread::spawn(move || {
        let lane = job.lane;
        let req = Request {
            prompt: &job.prompt,
            negative_prompt: &job.negative_prompt,
            batch: 1,
            guidance: job.guidance,
            sampler: job.sampler.clone(),
            start: job.start,
        };
        let mask_id = pipe.scheduler.mask_token_id;
        let result = pipeline::generate(&gpu, &pipe, &req, &mut |ev| {
            let grid = ev.grid;
            let decoded = pipeline::decode(&gpu, &pipe, ev.predicted, 1, grid);
            let (preview, size) = match decoded {
                Ok((img, size)) => (rgba(&img, size), size),
                Err(e) => {
                    let _ = tx.send(Msg::Failed(lane, format!("preview: {e}")));
                    return;
                }
            };
            let _ = tx.send(Msg::Step(
                lane,
                Box::new(StepMsg {
                    step: ev.step,
                    steps: ev.steps,
                    tokens: ev.tokens.to_vec(),
                    newly_fixed: ev.newly_fixed.to_vec(),
                    confidence: ev.confidence.to_vec(),
                    preview,
                    size,
                    grid,
                    ms: ev.ms,
                    fixed_total: ev
                        .tokens
                        .iter()
                        .zip(ev.predicted)
                        .filter(|(t, p)| t == p && **t != mask_id)
                        .count(),
                }),
            ));
            repaint.request_repaint();
        });
        let msg = match result.and_then(|g| {
            let (img, size) = pipeline::decode(&gpu, &pipe, &g.tokens, 1, g.grid)?;
            Ok((rgba(&img, size), size))
        }) {
            Ok((img, size)) => Msg::Done(lane, img, size),
            Err(e) => Msg::Failed(lane, e.to_string()),
        };
        let _ = tx.send(msg);
        repaint.request_repaint();
    });
}
