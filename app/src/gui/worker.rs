//! Generation off the UI: a job runs the engine's pipeline (the same code path as `--render`)
//! on a worker thread natively, as a task on the page's event loop in the browser
//! ([`super::platform::spawn`]), and streams each step to the UI over a channel, with its
//! prediction decoded into a preview texture ([`platform::Textures`]: copied on the GPU
//! natively, read back in the browser). The final image is also read back once (for saving,
//! the page's result and inpainting).

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;

use super::platform;

use tessera_engine::pipeline::{self, Condition, Model, Request, Start};
use tessera_engine::sampling::SamplerOptions;
use tessera_engine::{GpuContext, Tensor, ops};

/// One step of one lane, ready to show.
pub struct StepMsg {
    pub step: usize,
    pub steps: usize,
    /// 0: the base (or only) stage; 1: a two-stage model's super-resolution stage.
    pub stage: usize,
    pub tokens: Vec<u32>,
    pub predicted: Vec<u32>,
    pub newly_fixed: Vec<bool>,
    pub confidence: Vec<f32>,
    pub preview: Preview,
    pub grid: (usize, usize),
    pub ms: f64,
    /// Tokens settled after the step (not masked and equal to their prediction, i.e. not
    /// re-noised by Paella).
    pub fixed_total: usize,
}

pub enum Msg {
    Step(usize, Box<StepMsg>),
    Done(usize, Box<Finished>),
    /// The run stopped at the user's request (the message says after which step).
    Cancelled(usize, String),
    Failed(usize, Failure),
}

/// A lane's final image: its texture and its pixels (NCHW [0, 1] floats of the one image, and
/// their (width, height)).
pub struct Finished {
    pub preview: Preview,
    pub pixels: Vec<f32>,
    pub size: (usize, usize),
}

/// Why a run failed.
pub struct Failure {
    pub message: String,
    /// The GPU device is gone: nothing more runs on it (see `App::device_lost`).
    pub device_lost: bool,
}

impl From<&tessera_engine::Error> for Failure {
    fn from(e: &tessera_engine::Error) -> Self {
        Failure {
            message: e.to_string(),
            device_lost: matches!(e, tessera_engine::Error::DeviceLost { .. }),
        }
    }
}

/// Asks the runs of one start to stop after their current step; shared by all their lanes.
#[derive(Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Everything a job needs, owned so it can move to the worker thread.
pub struct Job {
    pub lane: usize,
    /// The class label for class-conditional models; the prompts otherwise.
    pub class: Option<u32>,
    pub prompt: String,
    pub negative_prompt: String,
    pub guidance: f32,
    pub sampler: SamplerOptions,
    pub start: Start,
    pub super_res: tessera_engine::pipeline::SuperResOptions,
    pub cancel: Cancel,
}

/// NCHW [0, 1] floats of the first image → RGBA8 (for images that come from files).
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

/// A decoded image registered with egui twice, sampled nearest (crisp pixels when enlarged)
/// and linear (smooth).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Preview {
    pub crisp: egui::TextureId,
    pub smooth: egui::TextureId,
}

impl Preview {
    pub fn id(&self, smooth: bool) -> egui::TextureId {
        if smooth { self.smooth } else { self.crisp }
    }
}

/// Decodes one token grid with `model`'s VQ decoder into a preview texture; also returns the
/// decoded image tensor `[1, 3, H, W]`.
async fn decode_preview(
    gpu: &GpuContext,
    model: &Model,
    textures: &platform::Textures,
    tokens: &[u32],
    grid: (usize, usize),
) -> tessera_engine::Result<(Preview, Tensor)> {
    let t = Tensor::from_u32(gpu, "tokens", &[1, grid.0, grid.1], tokens)?;
    let mut rec = gpu.recorder();
    let img = model.decode_tensor(&mut rec, &t)?;
    let (h, w) = (img.shape()[2], img.shape()[3]);
    let packed = ops::layout::to_rgba8(&mut rec, &img, 0)?;
    let preview = textures.register(gpu, rec, &packed, (w, h)).await?;
    Ok((preview, img))
}

/// Where a run sends its steps: each step's prediction decoded into a preview and posted.
/// Natively the preview is made before the step returns; in the browser it is made by a task
/// of its own after the step (its readback awaited), posted with its step in order.
#[derive(Clone)]
struct Streamer {
    gpu: Arc<GpuContext>,
    model: Arc<Model>,
    textures: platform::Textures,
    tx: Sender<Msg>,
    repaint: egui::Context,
    lane: usize,
    cancel: Cancel,
    /// A preview failed: the run stops and the failure was posted.
    preview_failed: Arc<AtomicBool>,
}

impl Streamer {
    /// Posts the step with its preview; stops the run when it was cancelled or a preview
    /// failed.
    fn step(&self, ev: &tessera_engine::sampling::StepEvent<'_>) -> ControlFlow<()> {
        if self.cancel.is_cancelled() || self.preview_failed.load(Ordering::Relaxed) {
            return ControlFlow::Break(());
        }
        let mask_id = self.model.mask_id();
        let fixed_total = ev
            .tokens
            .iter()
            .zip(ev.predicted)
            .filter(|(t, p)| t == p && **t != mask_id)
            .count();
        let (step, steps, grid, ms, stage) = (ev.step, ev.steps, ev.grid, ev.ms, ev.stage);
        let (tokens, predicted) = (ev.tokens.to_vec(), ev.predicted.to_vec());
        let (newly_fixed, confidence) = (ev.newly_fixed.to_vec(), ev.confidence.to_vec());
        let out = self.clone();
        platform::run_soon(async move {
            let preview = decode_preview(&out.gpu, &out.model, &out.textures, &predicted, grid)
                .await
                .map(|(p, _)| p);
            let msg = match preview {
                Ok(preview) => Msg::Step(
                    out.lane,
                    Box::new(StepMsg {
                        step,
                        steps,
                        stage,
                        tokens,
                        predicted,
                        newly_fixed,
                        confidence,
                        preview,
                        grid,
                        ms,
                        fixed_total,
                    }),
                ),
                Err(e) => {
                    out.preview_failed.store(true, Ordering::Relaxed);
                    let mut failure = Failure::from(&e);
                    failure.message = format!("preview: {}", failure.message);
                    Msg::Failed(out.lane, failure)
                }
            };
            let _ = out.tx.send(msg);
            out.repaint.request_repaint();
        });
        ControlFlow::Continue(())
    }

    /// Posts the final image (or the failure) of the run.
    async fn finish(&self, result: tessera_engine::Result<(Vec<u32>, (usize, usize))>) {
        if self.preview_failed.load(Ordering::Relaxed) {
            return;
        }
        let finished = async {
            let (tokens, grid) = result?;
            let (preview, img) =
                decode_preview(&self.gpu, &self.model, &self.textures, &tokens, grid).await?;
            let size = (img.shape()[3], img.shape()[2]);
            let pixels = img.read_f32(&self.gpu, platform::READBACK).await?;
            Ok(Finished {
                preview,
                pixels,
                size,
            })
        };
        let msg = match finished.await {
            Ok(f) => Msg::Done(self.lane, Box::new(f)),
            Err(e @ tessera_engine::Error::Cancelled { .. }) => {
                Msg::Cancelled(self.lane, e.to_string())
            }
            Err(e) => Msg::Failed(self.lane, Failure::from(&e)),
        };
        // In the browser the last step's preview may still be on its way: the final image
        // goes after it.
        let (tx, repaint) = (self.tx.clone(), self.repaint.clone());
        platform::run_soon(async move {
            let _ = tx.send(msg);
            repaint.request_repaint();
        });
    }
}

/// Runs `job` on `model` (any family) off the UI ([`platform::spawn`]), streaming its steps to
/// `tx`.
pub fn spawn(
    gpu: Arc<GpuContext>,
    model: Arc<Model>,
    textures: platform::Textures,
    job: Job,
    tx: Sender<Msg>,
    repaint: egui::Context,
) {
    platform::spawn(move || async move {
        let req = Request {
            condition: match job.class {
                Some(label) => Condition::Class { label, name: None },
                None => Condition::Text {
                    prompt: &job.prompt,
                    negative_prompt: &job.negative_prompt,
                },
            },
            batch: 1,
            guidance: job.guidance,
            sampler: job.sampler.clone(),
            start: job.start.clone(),
            super_res: job.super_res,
        };
        let out = Streamer {
            gpu,
            model,
            textures,
            tx,
            repaint,
            lane: job.lane,
            cancel: job.cancel.clone(),
            preview_failed: Default::default(),
        };
        let result = pipeline::generate_with(
            &out.gpu,
            &out.model,
            &req,
            &mut |ev| out.step(ev),
            platform::READBACK,
        )
        .await;
        out.finish(result.map(|g| (g.tokens, g.grid))).await;
    });
}
