//! Generation, inpainting, outpainting and img2img for every model family: a [`Model`] opened
//! from a path, a [`Request`] checked against it, then [`plan`] (images encoded, conditioning
//! prepared once) and [`Plan::run`] (the sampler's loop). The CLI's `--render`, the inspection
//! commands, the benchmark and the desktop app all call these.

mod model;
pub mod settings;

pub use model::{Conditioning as ModelConditioning, Family, Model, RequestOption, TextOutput};
pub use settings::Condition;

use std::ops::ControlFlow;

use crate::error::{Error, Result};
use crate::gpu::{GpuContext, Readback, Recorder, Tensor};
use crate::models::amused::uvit2d::{Conditioning, PreparedConditioning};
use crate::models::amused::{AmusedPipeline, micro_conds};
use crate::ops;
use crate::sampling::{
    self, GuidanceSchedule, SamplerKind, SamplerOptions, Step, StepEvent, TokenModel,
};

/// The transformer with fixed conditioning: `[uncond; cond]` text for guidance > 1 (as
/// diffusers batches it), the conditional text alone otherwise. Everything that depends on the
/// conditioning alone (text projections, cross-attention keys and values, modulations) is
/// computed once here, not at every step.
pub struct GuidedTransformer<'a> {
    pipe: &'a AmusedPipeline,
    prepared: PreparedConditioning,
    guidance: f32,
    schedule: GuidanceSchedule,
    grid: (usize, usize),
}

impl<'a> GuidedTransformer<'a> {
    /// Encodes the prompts and prepares conditioning for `batch` images of `grid` tokens.
    pub fn new(
        ctx: &GpuContext,
        pipe: &'a AmusedPipeline,
        prompt: &str,
        negative_prompt: &str,
        batch: usize,
        (guidance, schedule): (f32, GuidanceSchedule),
        grid: (usize, usize),
    ) -> Result<Self> {
        if batch == 0 {
            return Err(Error::shape("generate", "batch must be at least 1"));
        }
        let guided = guidance > 1.0;
        let mut rec = ctx.recorder();
        let prompts: Vec<&str> = if guided {
            vec![negative_prompt, prompt]
        } else {
            vec![prompt]
        };
        let (_, emb) = pipe.text.embed(&mut rec, &prompts)?;
        let pooled = ops::embed::repeat_rows(&mut rec, &emb.pooled, batch)?;
        let hidden = ops::embed::repeat_rows(&mut rec, &emb.penultimate, batch)?;
        let f = pipe.vqvae.config.scale_factor();
        let rows = if guided { 2 * batch } else { batch };
        let micro = micro_conds(ctx, rows, (grid.1 * f, grid.0 * f), (0.0, 0.0), 6.0)?;
        let prepared = pipe.transformer.prepare(
            &mut rec,
            &Conditioning {
                pooled: &pooled,
                hidden: &hidden,
                micro_conds: &micro,
            },
        )?;
        rec.submit();
        Ok(Self {
            pipe,
            prepared,
            guidance,
            schedule,
            grid,
        })
    }
}

impl TokenModel for GuidedTransformer<'_> {
    fn grid(&self) -> (usize, usize) {
        self.grid
    }

    fn codebook_size(&self) -> usize {
        self.pipe.transformer.config.codebook_size
    }

    fn mask_id(&self) -> u32 {
        self.pipe.scheduler.mask_token_id
    }

    fn logits(&self, rec: &mut Recorder<'_>, tokens: &Tensor, step: Step) -> Result<Tensor> {
        // With guidance the prepared conditioning has 2B rows and the transformer runs the B
        // token grids through both halves.
        let logits = self
            .pipe
            .transformer
            .forward_prepared(rec, tokens, &self.prepared)?;
        if self.guidance > 1.0 {
            let s = self.schedule.scale(self.guidance, step);
            ops::elementwise::guidance(rec, &logits, s)
        } else {
            Ok(logits)
        }
    }
}

/// Where generation starts.
#[derive(Clone, Debug)]
pub enum Start {
    /// An all-[MASK] grid of this many tokens (height, width).
    Blank((usize, usize)),
    /// An image `[1, 3, H, W]` in [0, 1] and a token-grid mask (true = regenerate).
    Inpaint {
        image: Vec<f32>,
        size: (usize, usize),
        mask: Vec<bool>,
    },
    /// Outpainting: the image's own tokens placed in a grid grown by `[left, top, right,
    /// bottom]` tokens; only the new cells are generated.
    Outpaint {
        image: Vec<f32>,
        size: (usize, usize),
        grow: [usize; 4],
    },
    /// An image `[1, 3, H, W]` in [0, 1], partly re-masked by `strength` ∈ (0, 1].
    Img2Img {
        image: Vec<f32>,
        size: (usize, usize),
        strength: f64,
    },
    /// Muse's mask-free editing: from the image's tokens, `iterations` times re-mask a random
    /// `fraction` ∈ (0, 1) of them and resample those under the prompt (each time a full run of
    /// the sampler over the re-masked tokens, the others kept).
    Edit {
        image: Vec<f32>,
        size: (usize, usize),
        iterations: usize,
        fraction: f64,
    },
}

impl Start {
    /// The token grid (height, width) generation fills, for a VQ of scale factor `f`: the
    /// image's grid, grown by the outpainting margins.
    pub fn grid(&self, f: usize) -> (usize, usize) {
        let f = f.max(1);
        match self {
            Start::Blank(grid) => *grid,
            Start::Inpaint { size, .. }
            | Start::Img2Img { size, .. }
            | Start::Edit { size, .. } => (size.1 / f, size.0 / f),
            Start::Outpaint { size, grow, .. } => (
                (size.1 / f).saturating_add(grow[1]).saturating_add(grow[3]),
                (size.0 / f).saturating_add(grow[0]).saturating_add(grow[2]),
            ),
        }
    }
}

/// What a generation request asks for.
pub struct Request<'a> {
    /// A prompt (text models) or a class label (class-conditional models).
    pub condition: Condition<'a>,
    pub batch: usize,
    pub guidance: f32,
    pub sampler: SamplerOptions,
    pub start: Start,
}

/// Final tokens of every image and the grid they fill.
#[derive(Debug)]
pub struct Generated {
    pub tokens: Vec<u32>,
    pub grid: (usize, usize),
    pub batch: usize,
}

/// A request made ready to sample: images encoded, prompts embedded, the conditioning
/// prepared. [`generate`] is [`plan`] then [`Plan::run`]; the benchmark times the two apart.
pub struct Plan<'a> {
    model: Box<dyn TokenModel + 'a>,
    init: Vec<u32>,
    /// Paella img2img: the image's tokens, where the unknown positions start.
    start: Option<Vec<u32>>,
    /// Mask-free editing: (iterations, fraction re-masked each time).
    edit: Option<(usize, f64)>,
    opts: SamplerOptions,
    grid: (usize, usize),
    batch: usize,
}

impl Plan<'_> {
    /// Runs the decoding loop; `on_step` sees every step (for an edit, the steps of all its
    /// iterations, numbered through).
    pub fn run(
        &self,
        ctx: &GpuContext,
        on_step: &mut dyn FnMut(&StepEvent<'_>) -> ControlFlow<()>,
    ) -> Result<Generated> {
        pollster::block_on(self.run_with(ctx, on_step, Readback::Block))
    }

    /// [`Plan::run`] with its readbacks awaited, never blocking the thread (the browser's
    /// form): the same steps and results.
    ///
    /// # Errors
    /// As [`Plan::run`].
    pub async fn run_async(
        &self,
        ctx: &GpuContext,
        on_step: &mut dyn FnMut(&StepEvent<'_>) -> ControlFlow<()>,
    ) -> Result<Generated> {
        self.run_with(ctx, on_step, Readback::Await).await
    }

    /// [`Plan::run`] with its readbacks done as `mode` says.
    ///
    /// # Errors
    /// As [`Plan::run`].
    pub async fn run_with(
        &self,
        ctx: &GpuContext,
        on_step: &mut dyn FnMut(&StepEvent<'_>) -> ControlFlow<()>,
        mode: Readback,
    ) -> Result<Generated> {
        let Some((iterations, fraction)) = self.edit else {
            let tokens = sampling::decode_loop(
                ctx,
                self.model.as_ref(),
                self.batch,
                (&self.init, self.start.as_deref()),
                &self.opts,
                on_step,
                mode,
            )
            .await?;
            return Ok(Generated {
                tokens,
                grid: self.grid,
                batch: self.batch,
            });
        };
        let mask = self.model.mask_id();
        let per = self.grid.0 * self.grid.1;
        let count = ((per as f64 * fraction).round() as usize).clamp(1, per);
        let mut tokens = self.init.clone();
        let total = iterations * self.opts.steps;
        for it in 0..iterations {
            let mut opts = self.opts.clone();
            opts.seed = self.opts.seed.wrapping_add((it as u64 + 1) << 32);
            opts.starting_mask_ratio = count as f64 / per as f64;
            let mut init = tokens.clone();
            for (k, image) in init.chunks_mut(per).enumerate() {
                let seed = sampling::image_seed(opts.seed, k) ^ 0x0ed1_7ed1;
                for i in sampling::random_subset(per, count, seed) {
                    image[i] = mask;
                }
            }
            let offset = it * self.opts.steps;
            tokens = sampling::decode_loop(
                ctx,
                self.model.as_ref(),
                self.batch,
                (&init, None),
                &opts,
                &mut |ev| {
                    on_step(&StepEvent {
                        step: offset + ev.step,
                        steps: total,
                        grid: ev.grid,
                        tokens: ev.tokens,
                        predicted: ev.predicted,
                        newly_fixed: ev.newly_fixed,
                        confidence: ev.confidence,
                        ms: ev.ms,
                        work: ev.work,
                    })
                },
                mode,
            )
            .await?;
        }
        Ok(Generated {
            tokens,
            grid: self.grid,
            batch: self.batch,
        })
    }
}

/// Refuses a batch whose logits (`[rows, h·w, codebook]` f32, rows = 2·batch with guidance)
/// would not fit one storage binding of this adapter, before any work; the message names the
/// largest batch that fits.
fn check_batch_fits(ctx: &GpuContext, model: &Model, req: &Request<'_>) -> Result<()> {
    let (h, w) = req.start.grid(model.vq_factor());
    let codebook = model.codebook_size();
    let per_row = (h as u64)
        .saturating_mul(w as u64)
        .saturating_mul(codebook as u64)
        .saturating_mul(4);
    let rows_per_image = model.logit_rows_per_image(req.guidance);
    let limit = ctx.limits().max_storage_buffer_binding_size;
    let bytes = per_row
        .saturating_mul(rows_per_image)
        .saturating_mul(req.batch as u64);
    if bytes > limit {
        let fits = limit / per_row.saturating_mul(rows_per_image).max(1);
        return Err(Error::shape(
            "generate",
            format!(
                "batch {} needs {} MiB of logits in one buffer ({h}×{w} tokens × {codebook} codes \
                 × 4 B × {} rows); this adapter allows {} MiB: use a batch of at most {fits}",
                req.batch,
                bytes >> 20,
                rows_per_image * req.batch as u64,
                limit >> 20
            ),
        ));
    }
    Ok(())
}

/// Runs the request; `on_step` sees every decoding step and may stop the run.
pub fn generate(
    ctx: &GpuContext,
    model: &Model,
    req: &Request<'_>,
    on_step: &mut dyn FnMut(&StepEvent<'_>) -> ControlFlow<()>,
) -> Result<Generated> {
    plan(ctx, model, req)?.run(ctx, on_step)
}

/// [`generate`] with every readback awaited (the browser's form; see [`Readback`]).
///
/// # Errors
/// As [`generate`].
pub async fn generate_async(
    ctx: &GpuContext,
    model: &Model,
    req: &Request<'_>,
    on_step: &mut dyn FnMut(&StepEvent<'_>) -> ControlFlow<()>,
) -> Result<Generated> {
    generate_with(ctx, model, req, on_step, Readback::Await).await
}

/// [`generate`] with every readback done as `mode` says (the app picks the form its platform
/// needs: blocking on a worker thread natively, awaited in the browser).
///
/// # Errors
/// As [`generate`].
pub async fn generate_with(
    ctx: &GpuContext,
    model: &Model,
    req: &Request<'_>,
    on_step: &mut dyn FnMut(&StepEvent<'_>) -> ControlFlow<()>,
    mode: Readback,
) -> Result<Generated> {
    plan_with(ctx, model, req, mode)
        .await?
        .run_with(ctx, on_step, mode)
        .await
}

/// Prepares the request: checks it against the model ([`Model::check`]), encodes its image
/// (inpainting, outpainting, img2img), and prepares the step-invariant conditioning (prompt
/// embeddings, cross-attention keys and values, modulations; a class token).
pub fn plan<'a>(ctx: &GpuContext, model: &'a Model, req: &Request<'_>) -> Result<Plan<'a>> {
    pollster::block_on(plan_with(ctx, model, req, Readback::Block))
}

/// [`plan`] with the start image's encoding read back as `mode` says.
pub async fn plan_with<'a>(
    ctx: &GpuContext,
    model: &'a Model,
    req: &Request<'_>,
    mode: Readback,
) -> Result<Plan<'a>> {
    if req.batch == 0 {
        return Err(Error::shape("generate", "batch must be at least 1"));
    }
    model.check(req)?;
    check_batch_fits(ctx, model, req)?;
    let mask = model.mask_id();
    let mut opts = req.sampler.clone();
    let b = req.batch;
    let mut start = None;
    let mut edit = None;
    let (init, grid) = match &req.start {
        Start::Blank(grid) => (vec![mask; b * grid.0 * grid.1], *grid),
        Start::Inpaint {
            image,
            size,
            mask: region,
        } => {
            let (ids, grid) = model.encode_with(ctx, image, *size, mode).await?;
            if region.len() != ids.len() {
                return Err(Error::shape(
                    "inpaint",
                    format!(
                        "mask has {} cells, the token grid {}",
                        region.len(),
                        ids.len()
                    ),
                ));
            }
            let masked = region.iter().filter(|m| **m).count();
            if masked == 0 {
                return Err(Error::shape(
                    "inpaint",
                    "the mask selects no token (white = repaint)",
                ));
            }
            opts.starting_mask_ratio = masked as f64 / ids.len() as f64;
            let one: Vec<u32> = ids
                .iter()
                .zip(region)
                .map(|(&t, &m)| if m { mask } else { t })
                .collect();
            (one.repeat(b), grid)
        }
        Start::Edit {
            image,
            size,
            iterations,
            fraction,
        } => {
            if *iterations == 0 || !(*fraction > 0.0 && *fraction < 1.0) {
                return Err(Error::shape(
                    "edit",
                    format!(
                        "{iterations} iterations re-masking {fraction} of the tokens: need at \
                         least one iteration and a fraction in (0, 1)"
                    ),
                ));
            }
            let (ids, grid) = model.encode_with(ctx, image, *size, mode).await?;
            edit = Some((*iterations, *fraction));
            (ids.repeat(b), grid)
        }
        Start::Outpaint { image, size, grow } => {
            let (ids, (gh, gw)) = model.encode_with(ctx, image, *size, mode).await?;
            let [l, t, _, _] = *grow;
            let (h, w) = req.start.grid(model.vq_factor());
            let mut one = vec![mask; h * w];
            for y in 0..gh {
                one[(y + t) * w + l..][..gw].copy_from_slice(&ids[y * gw..][..gw]);
            }
            opts.starting_mask_ratio = (h * w - gh * gw) as f64 / (h * w) as f64;
            (one.repeat(b), (h, w))
        }
        Start::Img2Img {
            image,
            size,
            strength,
        } => {
            let (ids, grid) = model.encode_with(ctx, image, *size, mode).await?;
            if opts.kind == SamplerKind::Paella {
                // Paella re-samples every token: it starts from the image's tokens at noise
                // level ≈ strength (the official `sample(init_x=…, t_start=…)`).
                opts.start_step = sampling::img2img_start_step(opts.steps, *strength)?;
                start = Some(ids.repeat(b));
                (vec![mask; b * ids.len()], grid)
            } else {
                // Each image re-masks with its own stream, as a run of one with its seed would.
                let mut masked = Vec::with_capacity(b * ids.len());
                let mut first = 0;
                for k in 0..b {
                    let mut one = opts.clone();
                    one.seed = sampling::image_seed(opts.seed, k);
                    let (m, s) = sampling::img2img_start(&ids, mask, &one, *strength)?;
                    masked.extend(m);
                    first = s;
                }
                opts.start_step = first;
                (masked, grid)
            }
        }
    };
    let token_model = model.token_model(ctx, req, grid)?;
    Ok(Plan {
        model: token_model,
        init,
        start,
        edit,
        opts,
        grid,
        batch: b,
    })
}
