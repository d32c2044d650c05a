//! Generation, inpainting, outpainting and img2img for every model family: a [`Model`] opened
//! from a path, a [`Request`] checked against it, then [`plan`] (images encoded, conditioning
//! prepared once) and [`Plan::run`] (the sampler's loop). The CLI's `--render`, the inspection
//! commands, the benchmark and the desktop app all call these.

mod model;
pub mod settings;

pub use model::{Conditioning as ModelConditioning, Family, Model, RequestOption, TextOutput};
pub use settings::{Condition, Stages};

use std::ops::ControlFlow;

use crate::error::{Error, Result};
use crate::gpu::{GpuContext, Readback, Recorder, Tensor};
use crate::models::amused::super_res::{SuperResPipeline, SuperResTransformer};
use crate::models::amused::uvit2d::{Conditioning, PreparedConditioning, UVit2DModel};
use crate::models::amused::{AmusedPipeline, micro_conds};
use crate::ops;
use crate::sampling::{
    self, GuidanceSchedule, SamplerKind, SamplerOptions, Step, StepEvent, TokenModel,
};

/// The transformer with fixed conditioning: `[uncond; cond]` text for guidance > 1 (as
/// diffusers batches it), the conditional text alone otherwise. Everything that depends on the
/// conditioning alone (text projections, cross-attention keys and values, modulations; a
/// super-resolution stage's low-res encoder) is computed once here, not at every step.
pub struct GuidedTransformer<'a> {
    transformer: StageTransformer<'a>,
    mask_id: u32,
    prepared: PreparedConditioning,
    guidance: f32,
    schedule: GuidanceSchedule,
    grid: (usize, usize),
}

/// The network a [`GuidedTransformer`] runs.
#[derive(Clone, Copy)]
enum StageTransformer<'a> {
    Base(&'a UVit2DModel),
    SuperRes(&'a SuperResTransformer),
}

/// A prompt's conditioning rows for `batch` images: `[uncond; cond]` with guidance.
struct TextRows {
    pooled: Tensor,
    hidden: Tensor,
    micro: Tensor,
    guidance: f32,
    schedule: GuidanceSchedule,
}

impl TextRows {
    /// Embeds the prompts for `batch` images of `size_px` (width, height) pixels, recorded in
    /// `rec` (the caller submits).
    fn new(
        rec: &mut Recorder<'_>,
        pipe: &AmusedPipeline,
        (prompt, negative_prompt): (&str, &str),
        batch: usize,
        (guidance, schedule): (f32, GuidanceSchedule),
        size_px: (usize, usize),
    ) -> Result<Self> {
        if batch == 0 {
            return Err(Error::invalid("generate", "batch must be at least 1"));
        }
        let guided = guidance > 1.0;
        let prompts: Vec<&str> = if guided {
            vec![negative_prompt, prompt]
        } else {
            vec![prompt]
        };
        let (_, emb) = pipe.text.embed(rec, &prompts)?;
        let pooled = ops::embed::repeat_rows(rec, &emb.pooled, batch)?;
        let hidden = ops::embed::repeat_rows(rec, &emb.penultimate, batch)?;
        let rows = if guided { 2 * batch } else { batch };
        Ok(Self {
            micro: Self::micro(rec.ctx(), rows, size_px)?,
            pooled,
            hidden,
            guidance,
            schedule,
        })
    }

    /// The `[rows, 5]` micro-conditioning of images of `size_px` at diffusers' defaults
    /// (`micro_conditioning_crop_coord` (0, 0), `micro_conditioning_aesthetic_score` 6).
    fn micro(ctx: &GpuContext, rows: usize, size_px: (usize, usize)) -> Result<Tensor> {
        micro_conds(ctx, rows, size_px, (0.0, 0.0), 6.0)
    }

    /// The same prompt rows for images of another `size_px` (a two-stage model's other stage):
    /// the text embeddings are shared, only the micro-conditioning is new.
    fn resized(&self, ctx: &GpuContext, size_px: (usize, usize)) -> Result<Self> {
        let rows = self.pooled.shape()[0];
        Ok(Self {
            pooled: self.pooled.clone(),
            hidden: self.hidden.clone(),
            micro: Self::micro(ctx, rows, size_px)?,
            guidance: self.guidance,
            schedule: self.schedule,
        })
    }

    fn conditioning(&self) -> Conditioning<'_> {
        Conditioning {
            pooled: &self.pooled,
            hidden: &self.hidden,
            micro_conds: &self.micro,
        }
    }
}

impl<'a> GuidedTransformer<'a> {
    /// Encodes the prompts and prepares conditioning for `batch` images of `grid` tokens.
    pub fn new(
        ctx: &GpuContext,
        pipe: &'a AmusedPipeline,
        prompt: &str,
        negative_prompt: &str,
        batch: usize,
        guidance: (f32, GuidanceSchedule),
        grid: (usize, usize),
    ) -> Result<Self> {
        let f = pipe.vqvae.config.scale_factor();
        let mut rec = ctx.recorder();
        let text = TextRows::new(
            &mut rec,
            pipe,
            (prompt, negative_prompt),
            batch,
            guidance,
            (grid.1 * f, grid.0 * f),
        )?;
        let guided = Self::base(&mut rec, pipe, &text, grid)?;
        rec.submit();
        Ok(guided)
    }

    /// The base transformer with `text`'s conditioning prepared (recorded in `rec`; the caller
    /// submits) for a grid of `grid` tokens.
    fn base(
        rec: &mut Recorder<'_>,
        pipe: &'a AmusedPipeline,
        text: &TextRows,
        grid: (usize, usize),
    ) -> Result<Self> {
        let prepared = pipe.transformer.prepare(rec, &text.conditioning())?;
        Ok(Self {
            transformer: StageTransformer::Base(&pipe.transformer),
            mask_id: pipe.scheduler.mask_token_id,
            prepared,
            guidance: text.guidance,
            schedule: text.schedule,
            grid,
        })
    }

    /// A two-stage model's super-resolution stage conditioned on `text` and the base stage's
    /// tokens `low_res` (`[b, lh, lw]` flattened, `low_res_grid` = (lh, lw)).
    fn super_res(
        ctx: &GpuContext,
        sr: &'a SuperResPipeline,
        text: &TextRows,
        low_res: &[u32],
        low_res_grid: (usize, usize),
    ) -> Result<Self> {
        let per = low_res_grid.0 * low_res_grid.1;
        let b = low_res.len() / per.max(1);
        ops::embed::check_ids(
            "low-res tokens",
            low_res,
            sr.transformer.low_res_codebook_size(),
        )?;
        let ids = Tensor::from_u32(
            ctx,
            "low_res_tokens",
            &[b, low_res_grid.0, low_res_grid.1],
            low_res,
        )?;
        let mut rec = ctx.recorder();
        let prepared = sr
            .transformer
            .prepare(&mut rec, &text.conditioning(), &ids)?;
        rec.submit();
        Ok(Self {
            transformer: StageTransformer::SuperRes(&sr.transformer),
            mask_id: sr.scheduler.mask_token_id,
            prepared,
            guidance: text.guidance,
            schedule: text.schedule,
            grid: sr.transformer.config.grid(),
        })
    }
}

impl TokenModel for GuidedTransformer<'_> {
    fn grid(&self) -> (usize, usize) {
        self.grid
    }

    fn codebook_size(&self) -> usize {
        match self.transformer {
            StageTransformer::Base(t) => t.config.codebook_size,
            StageTransformer::SuperRes(t) => t.config.uvit.codebook_size,
        }
    }

    fn mask_id(&self) -> u32 {
        self.mask_id
    }

    fn logits(&self, rec: &mut Recorder<'_>, tokens: &Tensor, step: Step) -> Result<Tensor> {
        // With guidance the prepared conditioning has 2B rows and the transformer runs the B
        // token grids through both halves.
        let logits = match self.transformer {
            StageTransformer::Base(t) => t.forward_prepared(rec, tokens, &self.prepared)?,
            StageTransformer::SuperRes(t) => t.forward_prepared(rec, tokens, &self.prepared)?,
        };
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
    /// The start of a two-stage model's base stage for this start at the output resolution:
    /// images averaged over `factor`×`factor` pixel blocks, an inpainting mask's cells kept
    /// where any of the `factor`×`factor` cells they cover is masked (the mask is at the token
    /// grid of a VQ of scale `vq_factor`), a blank grid divided.
    ///
    /// # Errors
    /// Sides that `factor` does not divide; outpainting (two-stage models have fixed grids).
    pub fn scaled_down(&self, factor: usize, vq_factor: usize) -> Result<Start> {
        if factor <= 1 {
            return Ok(self.clone());
        }
        let uneven = |what: String| {
            Error::shape(
                "super-resolution",
                format!("{what} is not a multiple of the stages' factor {factor}"),
            )
        };
        let image = |image: &[f32], (w, h): (usize, usize)| -> Result<(Vec<f32>, (usize, usize))> {
            if w % factor != 0 || h % factor != 0 || image.len() != 3 * w * h {
                return Err(uneven(format!("a {w}×{h} image")));
            }
            let (sw, sh) = (w / factor, h / factor);
            let norm = 1.0 / (factor * factor) as f32;
            let mut out = vec![0.0; 3 * sw * sh];
            for c in 0..3 {
                for y in 0..sh {
                    for x in 0..sw {
                        let mut acc = 0.0;
                        for dy in 0..factor {
                            let row = &image[(c * h + y * factor + dy) * w + x * factor..];
                            acc += row[..factor].iter().sum::<f32>();
                        }
                        out[(c * sh + y) * sw + x] = acc * norm;
                    }
                }
            }
            Ok((out, (sw, sh)))
        };
        Ok(match self {
            Start::Blank((h, w)) => {
                if h % factor != 0 || w % factor != 0 {
                    return Err(uneven(format!("a {h}×{w} token grid")));
                }
                Start::Blank((h / factor, w / factor))
            }
            Start::Inpaint {
                image: px,
                size,
                mask,
            } => {
                let (image, small) = image(px, *size)?;
                // The mask is at the token grid: the image's sides over the VQ factor.
                let (w, h) = *size;
                let (gw, gh) = (w / vq_factor.max(1), h / vq_factor.max(1));
                if gw * gh != mask.len() || gw % factor != 0 || gh % factor != 0 {
                    return Err(uneven(format!("a {gw}×{gh} inpainting mask")));
                }
                let (sw, sh) = (gw / factor, gh / factor);
                let mut small_mask = vec![false; sw * sh];
                for y in 0..gh {
                    for x in 0..gw {
                        if mask[y * gw + x] {
                            small_mask[(y / factor) * sw + x / factor] = true;
                        }
                    }
                }
                Start::Inpaint {
                    image,
                    size: small,
                    mask: small_mask,
                }
            }
            Start::Img2Img {
                image: px,
                size,
                strength,
            } => {
                let (image, size) = image(px, *size)?;
                Start::Img2Img {
                    image,
                    size,
                    strength: *strength,
                }
            }
            Start::Edit {
                image: px,
                size,
                iterations,
                fraction,
            } => {
                let (image, size) = image(px, *size)?;
                Start::Edit {
                    image,
                    size,
                    iterations: *iterations,
                    fraction: *fraction,
                }
            }
            Start::Outpaint { .. } => {
                return Err(Error::shape(
                    "super-resolution",
                    "outpainting needs a model without fixed positions",
                ));
            }
        })
    }

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
    /// The base stage's sampler (the only stage of most models).
    pub sampler: SamplerOptions,
    /// Where generation starts, at the output resolution: for a two-stage model running both
    /// stages, the super-resolution stage's grid (the base stage starts from it scaled down).
    pub start: Start,
    /// A two-stage model's super-resolution stage.
    pub super_res: SuperResOptions,
}

/// How a two-stage model's super-resolution stage runs ([`Model::stages`]); models of one
/// stage take only the default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SuperResOptions {
    /// Stop after the base stage (the CLI's `--stages 1`): the base's image is the output.
    pub skip: bool,
    /// Steps of the stage; `None`: the model's (its `super_res/tessera.json`, else 8).
    pub steps: Option<usize>,
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
    base: StageStart,
    /// A two-stage model's super-resolution stage, run on the base stage's tokens.
    super_res: Option<SuperResPlan<'a>>,
    batch: usize,
}

/// Where one stage's sampling starts.
struct StageStart {
    init: Vec<u32>,
    /// Paella img2img: the image's tokens, where the unknown positions start.
    start: Option<Vec<u32>>,
    /// Mask-free editing: (iterations, fraction re-masked each time).
    edit: Option<(usize, f64)>,
    opts: SamplerOptions,
    grid: (usize, usize),
}

impl StageStart {
    /// Steps the stage reports (an edit's iterations numbered through).
    fn steps(&self) -> usize {
        self.edit.map_or(1, |(n, _)| n) * self.opts.steps
    }
}

/// The super-resolution stage of a plan: its text conditioning is embedded at plan time, the
/// low-resolution encoder runs once the base stage's tokens exist.
struct SuperResPlan<'a> {
    stage: &'a SuperResPipeline,
    text: TextRows,
    start: StageStart,
}

impl Plan<'_> {
    /// Runs the decoding loop; `on_step` sees every step (for an edit, the steps of all its
    /// iterations, numbered through; for a two-stage model, the base's steps then the
    /// super-resolution stage's).
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
        let Some(sr) = &self.super_res else {
            let tokens = run_stage(
                ctx,
                self.model.as_ref(),
                &self.base,
                self.batch,
                on_step,
                mode,
            )
            .await?;
            return Ok(Generated {
                tokens,
                grid: self.base.grid,
                batch: self.batch,
            });
        };
        let total = self.base.steps() + sr.start.steps();
        let mut numbered = |stage: usize, offset: usize, ev: &StepEvent<'_>| {
            on_step(&StepEvent {
                step: offset + ev.step,
                steps: total,
                stage,
                ..*ev
            })
        };
        let low_res = run_stage(
            ctx,
            self.model.as_ref(),
            &self.base,
            self.batch,
            &mut |ev| numbered(0, 0, ev),
            mode,
        )
        .await?;
        let model =
            GuidedTransformer::super_res(ctx, sr.stage, &sr.text, &low_res, self.base.grid)?;
        let offset = self.base.steps();
        let tokens = run_stage(
            ctx,
            &model,
            &sr.start,
            self.batch,
            &mut |ev| numbered(1, offset, ev),
            mode,
        )
        .await?;
        Ok(Generated {
            tokens,
            grid: sr.start.grid,
            batch: self.batch,
        })
    }
}

/// One stage's sampling: the decoding loop from `stage`'s start, or an edit's iterations.
async fn run_stage(
    ctx: &GpuContext,
    model: &dyn TokenModel,
    stage: &StageStart,
    batch: usize,
    on_step: &mut dyn FnMut(&StepEvent<'_>) -> ControlFlow<()>,
    mode: Readback,
) -> Result<Vec<u32>> {
    let Some((iterations, fraction)) = stage.edit else {
        return sampling::decode_loop(
            ctx,
            model,
            batch,
            (&stage.init, stage.start.as_deref()),
            &stage.opts,
            on_step,
            mode,
        )
        .await;
    };
    let mask = model.mask_id();
    let per = stage.grid.0 * stage.grid.1;
    let count = ((per as f64 * fraction).round() as usize).clamp(1, per);
    let mut tokens = stage.init.clone();
    let total = stage.steps();
    for it in 0..iterations {
        let mut opts = stage.opts.clone();
        opts.seed = stage.opts.seed.wrapping_add((it as u64 + 1) << 32);
        opts.starting_mask_ratio = count as f64 / per as f64;
        let mut init = tokens.clone();
        for (k, image) in init.chunks_mut(per).enumerate() {
            let seed = sampling::image_seed(opts.seed, k) ^ 0x0ed1_7ed1;
            for i in sampling::random_subset(per, count, seed) {
                image[i] = mask;
            }
        }
        let offset = it * stage.opts.steps;
        tokens = sampling::decode_loop(
            ctx,
            model,
            batch,
            (&init, None),
            &opts,
            &mut |ev| {
                on_step(&StepEvent {
                    step: offset + ev.step,
                    steps: total,
                    ..*ev
                })
            },
            mode,
        )
        .await?;
    }
    Ok(tokens)
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
        return Err(Error::invalid("generate", "batch must be at least 1"));
    }
    model.check(req)?;
    check_batch_fits(ctx, model, req)?;
    let b = req.batch;
    let two_stage = if req.super_res.skip {
        None
    } else {
        model.super_res_stage()
    };
    let Some((pipe, sr)) = two_stage else {
        let base = stage_start(
            ctx,
            model,
            &req.start,
            b,
            (model.mask_id(), req.sampler.clone()),
            mode,
        )
        .await?;
        let token_model = model.token_model(ctx, req, base.grid)?;
        return Ok(Plan {
            model: token_model,
            base,
            super_res: None,
            batch: b,
        });
    };
    // Two stages: the request's start is at the output resolution; the base stage starts from
    // it scaled down to its own grid, the super-resolution stage from it as it is.
    let factor = sr.transformer.config.uvit.sample_size / sr.transformer.config.low_res_sample_size;
    let base_start = req.start.scaled_down(factor, model.vq_factor())?;
    let base = stage_start(
        ctx,
        model,
        &base_start,
        b,
        (model.mask_id(), req.sampler.clone()),
        mode,
    )
    .await?;
    let sr_opts = model.super_res_sampler(req)?;
    let start = stage_start(
        ctx,
        model,
        &req.start,
        b,
        (sr.scheduler.mask_token_id, sr_opts),
        mode,
    )
    .await?;
    let Condition::Text {
        prompt,
        negative_prompt,
    } = req.condition
    else {
        return Err(Error::shape("generate", "condition does not fit the model"));
    };
    // The prompts are encoded once for both stages; each stage has its own micro-conditioning
    // (its image size).
    let f = pipe.vqvae.config.scale_factor();
    let mut rec = ctx.recorder();
    let text = TextRows::new(
        &mut rec,
        pipe,
        (prompt, negative_prompt),
        b,
        (req.guidance, req.sampler.guidance_schedule),
        (start.grid.1 * f, start.grid.0 * f),
    )?;
    let base_text = text.resized(ctx, (base.grid.1 * f, base.grid.0 * f))?;
    let token_model = Box::new(GuidedTransformer::base(
        &mut rec, pipe, &base_text, base.grid,
    )?);
    rec.submit();
    Ok(Plan {
        model: token_model,
        base,
        super_res: Some(SuperResPlan {
            stage: sr,
            text,
            start,
        }),
        batch: b,
    })
}

/// Where one stage starts for `start`: its tokens (the image encoded; mask ids where the stage
/// generates) for `batch` images, and `opts` adjusted to it (inpainting's masked fraction,
/// img2img's first step). `mask` is the stage's mask id.
async fn stage_start(
    ctx: &GpuContext,
    model: &Model,
    start: &Start,
    batch: usize,
    (mask, mut opts): (u32, SamplerOptions),
    mode: Readback,
) -> Result<StageStart> {
    let b = batch;
    let mut paella_start = None;
    let mut edit = None;
    let (init, grid) = match start {
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
                return Err(Error::invalid(
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
                return Err(Error::invalid(
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
            let (h, w) = start.grid(model.vq_factor());
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
                paella_start = Some(ids.repeat(b));
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
    Ok(StageStart {
        init,
        start: paella_start,
        edit,
        opts,
        grid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_scales_down_to_the_base_stage() {
        // 4×2 px, channels 0, 1, 2 holding x + 10·y (+ 100·c): 2×2 blocks average.
        let (w, h) = (4, 2);
        let image: Vec<f32> = (0..3)
            .flat_map(|c| {
                (0..h).flat_map(move |y| (0..w).map(move |x| (x + 10 * y + 100 * c) as f32))
            })
            .collect();
        let Start::Img2Img {
            image: small,
            size,
            strength,
        } = (Start::Img2Img {
            image: image.clone(),
            size: (w, h),
            strength: 0.4,
        })
        .scaled_down(2, 1)
        .expect("scales")
        else {
            panic!("img2img stays img2img");
        };
        assert_eq!((size, strength), ((2, 1), 0.4));
        assert_eq!(small, vec![5.5, 7.5, 105.5, 107.5, 205.5, 207.5]);
        // The mask at the token grid (VQ factor 1 here): a cell of the 2×1 grid is kept where
        // any of its four cells is.
        let mut mask = vec![false; 8];
        mask[7] = true;
        let Start::Inpaint {
            mask: small, size, ..
        } = (Start::Inpaint {
            image: image.clone(),
            size: (w, h),
            mask,
        })
        .scaled_down(2, 1)
        .expect("scales")
        else {
            panic!("inpaint stays inpaint");
        };
        assert_eq!((small, size), (vec![false, true], (2, 1)));
        assert!(matches!(
            Start::Blank((8, 6)).scaled_down(2, 4),
            Ok(Start::Blank((4, 3)))
        ));
        // Sides the factor does not divide, and outpainting, are refused.
        assert!(Start::Blank((7, 6)).scaled_down(2, 4).is_err());
        let odd = Start::Edit {
            image: vec![0.0; 3 * 3 * 2],
            size: (3, 2),
            iterations: 1,
            fraction: 0.5,
        };
        assert!(odd.scaled_down(2, 1).is_err());
        let grow = Start::Outpaint {
            image,
            size: (w, h),
            grow: [1, 0, 0, 0],
        };
        assert!(grow.scaled_down(2, 1).is_err());
        assert!(
            grow.scaled_down(1, 1).is_ok(),
            "factor 1 is the start itself"
        );
    }
}
