//! Generation off the UI thread: a job runs the engine's pipeline (the same code path as
//! `--render`) and streams each step to the UI over a channel. Previews are decoded, packed
//! to RGBA8 and copied into textures on the GPU, then registered with egui-wgpu, so pixels
//! never travel through the CPU.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;

use tessera_engine::pipeline::{self, Condition, Model, Request, Start};
use tessera_engine::sampling::SamplerOptions;
use tessera_engine::{GpuContext, Tensor, ops};

/// One step of one lane, ready to show.
pub struct StepMsg {
    pub step: usize,
    pub steps: usize,
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
    Done(usize, Preview, Vec<u32>, (usize, usize)),
    /// The run stopped at the user's request (the message says after which step).
    Cancelled(usize, String),
    Failed(usize, Failure),
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

/// A VQ decoder: token ids `[B, h, w]` → image `[B, 3, H, W]`.
pub type Decoder<'a> =
    &'a dyn Fn(&mut tessera_engine::Recorder<'_>, &Tensor) -> tessera_engine::Result<Tensor>;

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

/// Decodes one token grid into a new texture registered with egui, all on the GPU.
pub fn decode_to_texture(
    gpu: &GpuContext,
    decode: Decoder<'_>,
    rs: &egui_wgpu::RenderState,
    tokens: &[u32],
    grid: (usize, usize),
) -> tessera_engine::Result<Preview> {
    let t = Tensor::from_u32(gpu, "tokens", &[1, grid.0, grid.1], tokens)?;
    let mut rec = gpu.recorder();
    let img = decode(&mut rec, &t)?;
    let (h, w) = (img.shape()[2], img.shape()[3]);
    let packed = ops::layout::to_rgba8(&mut rec, &img, 0)?;
    let texture = rs.device.create_texture(&wgpu::TextureDescriptor {
        label: Some("tessera preview"),
        size: wgpu::Extent3d {
            width: w as u32,
            height: h as u32,
            depth_or_array_layers: 1,
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::Rgba8Unorm,
        usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
        view_formats: &[],
    });
    rec.copy_to_texture(&packed, &texture)?;
    rec.submit();
    let view = texture.create_view(&wgpu::TextureViewDescriptor::default());
    let mut r = rs.renderer.write();
    Ok(Preview {
        crisp: r.register_native_texture(&rs.device, &view, wgpu::FilterMode::Nearest),
        smooth: r.register_native_texture(&rs.device, &view, wgpu::FilterMode::Linear),
    })
}

/// Where a worker sends its steps: decodes each step's prediction into a texture and posts it.
struct Streamer<'a> {
    gpu: &'a GpuContext,
    rs: &'a egui_wgpu::RenderState,
    decode: Decoder<'a>,
    tx: &'a Sender<Msg>,
    repaint: &'a egui::Context,
    lane: usize,
    mask_id: u32,
    cancel: &'a Cancel,
    /// A preview failed: the run stopped and the failure was posted.
    preview_failed: std::cell::Cell<bool>,
}

impl Streamer<'_> {
    /// Posts the step's preview; stops the run when it was cancelled or the preview failed.
    fn step(&self, ev: &tessera_engine::sampling::StepEvent<'_>) -> ControlFlow<()> {
        if self.cancel.is_cancelled() {
            return ControlFlow::Break(());
        }
        let preview = match decode_to_texture(self.gpu, self.decode, self.rs, ev.predicted, ev.grid)
        {
            Ok(id) => id,
            Err(e) => {
                let mut failure = Failure::from(&e);
                failure.message = format!("preview: {}", failure.message);
                let _ = self.tx.send(Msg::Failed(self.lane, failure));
                self.repaint.request_repaint();
                self.preview_failed.set(true);
                return ControlFlow::Break(());
            }
        };
        let fixed_total = ev
            .tokens
            .iter()
            .zip(ev.predicted)
            .filter(|(t, p)| t == p && **t != self.mask_id)
            .count();
        let _ = self.tx.send(Msg::Step(
            self.lane,
            Box::new(StepMsg {
                step: ev.step,
                steps: ev.steps,
                tokens: ev.tokens.to_vec(),
                predicted: ev.predicted.to_vec(),
                newly_fixed: ev.newly_fixed.to_vec(),
                confidence: ev.confidence.to_vec(),
                preview,
                grid: ev.grid,
                ms: ev.ms,
                fixed_total,
            }),
        ));
        self.repaint.request_repaint();
        ControlFlow::Continue(())
    }

    /// Posts the final image (or the failure) of the run.
    fn finish(&self, result: tessera_engine::Result<(Vec<u32>, (usize, usize))>) {
        if self.preview_failed.get() {
            return;
        }
        let msg = match result.and_then(|(tokens, grid)| {
            Ok((
                decode_to_texture(self.gpu, self.decode, self.rs, &tokens, grid)?,
                tokens,
                grid,
            ))
        }) {
            Ok((id, tokens, grid)) => Msg::Done(self.lane, id, tokens, grid),
            Err(e @ tessera_engine::Error::Cancelled { .. }) => {
                Msg::Cancelled(self.lane, e.to_string())
            }
            Err(e) => Msg::Failed(self.lane, Failure::from(&e)),
        };
        let _ = self.tx.send(msg);
        self.repaint.request_repaint();
    }
}

/// Runs `job` on `model` (any family) in a new thread, streaming its steps to `tx`.
pub fn spawn(
    gpu: Arc<GpuContext>,
    model: Arc<Model>,
    rs: egui_wgpu::RenderState,
    job: Job,
    tx: Sender<Msg>,
    repaint: egui::Context,
) {
    std::thread::spawn(move || {
        let lane = job.lane;
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
        };
        let decode =
            |rec: &mut tessera_engine::Recorder<'_>, t: &Tensor| model.decode_tensor(rec, t);
        let out = Streamer {
            gpu: &gpu,
            rs: &rs,
            decode: &decode,
            tx: &tx,
            repaint: &repaint,
            lane,
            mask_id: model.mask_id(),
            cancel: &job.cancel,
            preview_failed: Default::default(),
        };
        let result = pipeline::generate(&gpu, &model, &req, &mut |ev| out.step(ev));
        out.finish(result.map(|g| (g.tokens, g.grid)));
    });
}
