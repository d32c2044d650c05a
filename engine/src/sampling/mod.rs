//! Iterative parallel decoding of token grids, independent of the model: MaskGIT
//! (confidence-based re-masking from the initial unknown count), aMUSEd (diffusers'
//! `AmusedScheduler`) and Paella (re-noising to the initial random tokens).
//!
//! The loop here asks the model for logits and draws each position's code; what a step does
//! with those draws is its family's: `remask::step` (MaskGIT, aMUSEd) or `paella::step`.
//! Randomness comes from one ChaCha8 stream per image, seeded by the caller and drawn on the
//! host in a fixed order (categorical uniforms here, then the step's own: Gumbel uniforms or
//! re-noise uniforms), so a seed fixes every draw whatever the GPU.

pub mod guidance;
mod paella;
mod remask;
pub mod schedule;

use std::ops::ControlFlow;
use web_time::Instant;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub use guidance::GuidanceSchedule;
pub use schedule::Schedule;

use crate::error::{Error, Result};
use crate::gpu::{GpuContext, Readback, Recorder, Tensor, WorkCounts};
use crate::ops;

/// Where the sampler is when it asks a model for logits: step `index` (0-based) of `steps`.
///
/// Networks that take a noise level or timestep (Paella's `r`) derive it from this with their
/// own reference's convention; MaskGIT's and aMUSEd's transformers ignore it. Conditions other
/// than the step (prompt embeddings, class labels, a super-resolution stage's low-res tokens)
/// are the model's own state, prepared once per image before the loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    pub index: usize,
    pub steps: usize,
}

impl Step {
    /// The fraction of the schedule done before this step, in [0, 1).
    pub fn progress(self) -> f32 {
        self.index as f32 / self.steps.max(1) as f32
    }
}

/// A model the samplers can drive: guided logits for a batch of token grids.
pub trait TokenModel {
    /// Token grid (height, width).
    fn grid(&self) -> (usize, usize);
    /// Number of real codes (logit columns).
    fn codebook_size(&self) -> usize;
    /// The [MASK] id.
    fn mask_id(&self) -> u32;
    /// Guided logits `[B, h·w, codebook]` for tokens u32 `[B, h, w]` at sampler step `step`.
    fn logits(&self, rec: &mut Recorder<'_>, tokens: &Tensor, step: Step) -> Result<Tensor>;
    /// Paella's sampler: the fraction of unknown tokens that are noise when `step` begins (the
    /// re-noising probability after the step before it). Default: linear, `1 − index/steps`
    /// (Paella v3's `t`); Paella v1 uses its cosine `γ(r)`.
    fn noise_level(&self, step: Step) -> f32 {
        1.0 - step.progress()
    }
}

/// Which decoding rule fills the grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SamplerKind {
    MaskGit,
    Amused,
    Paella,
}

impl std::str::FromStr for SamplerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "maskgit" => Ok(SamplerKind::MaskGit),
            "amused" | "muse" => Ok(SamplerKind::Amused),
            "paella" => Ok(SamplerKind::Paella),
            _ => Err(format!("unknown sampler {s:?} (maskgit, amused, paella)")),
        }
    }
}

impl std::fmt::Display for SamplerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SamplerKind::MaskGit => "maskgit",
            SamplerKind::Amused => "amused",
            SamplerKind::Paella => "paella",
        })
    }
}

/// Settings of one decoding run.
#[derive(Clone, Debug)]
pub struct SamplerOptions {
    pub kind: SamplerKind,
    pub schedule: Schedule,
    /// Total steps of the full schedule.
    pub steps: usize,
    /// First step to run (img2img / editing start part-way through the schedule).
    pub start_step: usize,
    /// Choice temperature for re-masking: MaskGIT uses `.0·(1 − r)`, aMUSEd
    /// `linspace(.0, .1, steps)`.
    pub choice_temperature: (f32, f32),
    /// Paella's sampling temperature, annealed `linspace(.0, .1, steps)`.
    pub softmax_temperature: (f32, f32),
    /// aMUSEd inpainting: the masked fraction scales the schedule.
    pub starting_mask_ratio: f64,
    /// Locally typical filtering of the logits before each draw, keeping this much probability
    /// mass (Paella v1's default 0.2); `None`: off.
    pub typical_mass: Option<f32>,
    /// How the classifier-free guidance scale varies over the steps (models with an
    /// unconditional branch apply it).
    pub guidance_schedule: GuidanceSchedule,
    pub seed: u64,
}

impl SamplerOptions {
    /// `kind`'s own defaults ([`Self::maskgit`], [`Self::amused`] or [`Self::paella`]).
    pub fn for_kind(kind: SamplerKind, seed: u64) -> Self {
        match kind {
            SamplerKind::MaskGit => Self::maskgit(seed),
            SamplerKind::Amused => Self::amused(seed),
            SamplerKind::Paella => Self::paella(seed),
        }
    }

    /// diffusers AmusedPipeline defaults: 12 steps, cosine, choice temperature 2 → 0.
    pub fn amused(seed: u64) -> Self {
        Self {
            kind: SamplerKind::Amused,
            schedule: Schedule::Cosine,
            steps: 12,
            start_step: 0,
            choice_temperature: (2.0, 0.0),
            softmax_temperature: (1.0, 0.2),
            starting_mask_ratio: 1.0,
            typical_mass: None,
            guidance_schedule: GuidanceSchedule::Constant,
            seed,
        }
    }

    /// MaskGIT's class-conditional settings: 8 steps at 256 px, cosine, τ₀ 4.5.
    pub fn maskgit(seed: u64) -> Self {
        Self {
            kind: SamplerKind::MaskGit,
            steps: 8,
            choice_temperature: (4.5, 0.0),
            ..Self::amused(seed)
        }
    }

    /// Paella v3 defaults: 12 steps, temperature 1.0 → 0.2.
    pub fn paella(seed: u64) -> Self {
        Self {
            kind: SamplerKind::Paella,
            ..Self::amused(seed)
        }
    }

    /// Whether the mask schedule and the choice temperature apply: MaskGIT's and aMUSEd's
    /// re-masking use them; Paella re-samples every token from a linear noise level with its
    /// softmax temperature instead.
    pub fn uses_schedule(&self) -> bool {
        self.kind != SamplerKind::Paella
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.steps == 0 || self.start_step >= self.steps {
            return Err(Error::invalid(
                "sampler",
                format!(
                    "steps {} with start step {}: need 0 ≤ start < steps",
                    self.steps, self.start_step
                ),
            ));
        }
        let (t0, t1) = self.softmax_temperature;
        if self.kind == SamplerKind::Paella && !(t0 > 0.0 && t1 > 0.0) {
            return Err(Error::invalid(
                "sampler",
                "Paella temperatures must be positive",
            ));
        }
        Ok(())
    }
}

/// What one decoding step did; the CLI prints progress from it, the app animates it.
pub struct StepEvent<'a> {
    /// Index of this step within the full schedule (of every stage, numbered through).
    pub step: usize,
    pub steps: usize,
    /// The stage the step belongs to: 0 for the base (or only) stage, 1 for a two-stage
    /// model's super-resolution stage (whose grid is larger).
    pub stage: usize,
    /// Token grid (height, width) of each image.
    pub grid: (usize, usize),
    /// Grid state after the step, `[B, h, w]` flattened (mask id where still masked).
    pub tokens: &'a [u32],
    /// The model's prediction for every position this step (a full grid, for previews).
    pub predicted: &'a [u32],
    /// Positions that became fixed in this step.
    pub newly_fixed: &'a [bool],
    /// Probability of each position's predicted token (temperature-free softmax).
    pub confidence: &'a [f32],
    /// Wall time of the step in milliseconds.
    pub ms: f64,
    /// GPU work the step issued (dispatches and submissions through the context).
    pub work: WorkCounts,
}

fn linspace(a: f32, b: f32, n: usize, i: usize) -> f32 {
    if n <= 1 {
        a
    } else {
        a + (b - a) * i as f32 / (n - 1) as f32
    }
}

/// What one step reads: the tokens it started from (`cur`, u32 `[B·l]`, the mask id where
/// unknown) and what the model's logits gave at every position (`ids`, the drawn codes, and
/// `probs`, their probabilities).
#[derive(Clone, Copy)]
struct StepInput<'a> {
    opts: &'a SamplerOptions,
    step: usize,
    batch: usize,
    /// Positions per grid (h·w).
    l: usize,
    mask: u32,
    cur: &'a [u32],
    ids: &'a [u32],
    probs: &'a [f32],
}

impl StepInput<'_> {
    /// Whether this is the schedule's last step (its predictions are the result).
    fn is_last(&self) -> bool {
        self.step + 1 == self.opts.steps
    }
}

/// What one step leaves: the tokens the next step starts from, this step's predictions (the
/// result if it is the last) and the positions that became final in it.
struct StepOutcome {
    next: Vec<u32>,
    predicted: Vec<u32>,
    newly_fixed: Vec<bool>,
}

/// `count` distinct positions of `0..n`, drawn uniformly from a ChaCha8 stream seeded with
/// `seed` (a partial Fisher–Yates shuffle), in draw order.
pub fn random_subset(n: usize, count: usize, seed: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut all: Vec<usize> = (0..n).collect();
    let count = count.min(n);
    for i in 0..count {
        let j = rng.random_range(i..n);
        all.swap(i, j);
    }
    all.truncate(count);
    all
}

/// The seed of image `k` of a batch run with `seed`: `seed + k`, so that image is redone alone
/// by a run of one image with that seed (the PNG of image k records it).
pub fn image_seed(seed: u64, k: usize) -> u64 {
    seed.wrapping_add(k as u64)
}

/// Runs the decoding loop from `init` (u32 `[B·h·w]`, mask id where unknown) and returns the
/// final tokens (no mask ids left).
pub fn generate(
    ctx: &GpuContext,
    model: &dyn TokenModel,
    batch: usize,
    init: &[u32],
    opts: &SamplerOptions,
    on_step: &mut dyn FnMut(&StepEvent<'_>) -> ControlFlow<()>,
) -> Result<Vec<u32>> {
    generate_from(ctx, model, batch, init, None, opts, on_step)
}

/// [`generate`] with the Paella sampler's unknown positions starting from `start` (u32
/// `[B·h·w]`, codes) instead of random codes: Paella's img2img, which feeds the image's
/// tokens at the first noise level and re-noises towards random codes (the official
/// `sample(init_x=…)`). Other samplers ignore `start`.
pub fn generate_from(
    ctx: &GpuContext,
    model: &dyn TokenModel,
    batch: usize,
    init: &[u32],
    start: Option<&[u32]>,
    opts: &SamplerOptions,
    on_step: &mut dyn FnMut(&StepEvent<'_>) -> ControlFlow<()>,
) -> Result<Vec<u32>> {
    // With blocking readbacks the loop never waits on a future: one poll runs it through.
    pollster::block_on(decode_loop(
        ctx,
        model,
        batch,
        (init, start),
        opts,
        on_step,
        Readback::Block,
    ))
}

/// [`generate_from`] with every readback awaited, never blocking the thread: the browser's
/// form (its main thread must not block). The same steps, draws and results.
///
/// # Errors
/// As [`generate_from`].
pub async fn generate_from_async(
    ctx: &GpuContext,
    model: &dyn TokenModel,
    batch: usize,
    init: &[u32],
    start: Option<&[u32]>,
    opts: &SamplerOptions,
    on_step: &mut dyn FnMut(&StepEvent<'_>) -> ControlFlow<()>,
) -> Result<Vec<u32>> {
    decode_loop(
        ctx,
        model,
        batch,
        (init, start),
        opts,
        on_step,
        Readback::Await,
    )
    .await
}

/// The decoding loop of [`generate_from`] and [`generate_from_async`], waiting for its
/// per-step readbacks as `mode` says.
pub(crate) async fn decode_loop(
    ctx: &GpuContext,
    model: &dyn TokenModel,
    batch: usize,
    (init, start): (&[u32], Option<&[u32]>),
    opts: &SamplerOptions,
    on_step: &mut dyn FnMut(&StepEvent<'_>) -> ControlFlow<()>,
    mode: Readback,
) -> Result<Vec<u32>> {
    opts.validate()?;
    let (h, w) = model.grid();
    let l = h * w;
    let mask = model.mask_id();
    let codebook = model.codebook_size();
    if init.len() != batch * l {
        return Err(Error::shape(
            "sampler",
            format!("{} initial tokens for batch {batch} of {h}×{w}", init.len()),
        ));
    }
    if let Some(&bad) = init.iter().find(|&&t| t != mask && t as usize >= codebook) {
        return Err(Error::shape(
            "sampler",
            format!("initial token {bad} is neither a code nor the mask id"),
        ));
    }
    // Image k of the batch draws from its own stream, seeded with seed + k, in the same order
    // as a batch of one: image k of `--batch N` is image 0 of a run with seed + k.
    let mut rngs: Vec<ChaCha8Rng> = (0..batch)
        .map(|b| ChaCha8Rng::seed_from_u64(image_seed(opts.seed, b)))
        .collect();
    let known: Vec<bool> = init.iter().map(|&t| t != mask).collect();
    let mut cur = init.to_vec();
    // Paella starts unknown positions from random codes and re-noises back to them.
    let noise: Vec<u32> = (0..batch * l)
        .map(|i| rngs[i / l].random_range(0..codebook as u32))
        .collect();
    if let Some(start) = start
        && (start.len() != init.len() || start.iter().any(|&t| t as usize >= codebook))
    {
        return Err(Error::shape(
            "sampler",
            "the start tokens must be codes, one per position",
        ));
    }
    if opts.kind == SamplerKind::Paella {
        for (i, t) in cur.iter_mut().enumerate() {
            if !known[i] {
                *t = start.map_or(noise[i], |s| s[i]);
            }
        }
    }
    let n0: Vec<usize> = (0..batch)
        .map(|b| known[b * l..(b + 1) * l].iter().filter(|k| !**k).count())
        .collect();
    let mut final_tokens = cur.clone();
    // Paella: positions not re-noised in the previous step.
    let mut settled = known.clone();
    for step in opts.start_step..opts.steps {
        let t_start = Instant::now();
        let work_start = ctx.work_counts();
        let last = step + 1 == opts.steps;
        let temperature = match opts.kind {
            SamplerKind::Paella => linspace(
                opts.softmax_temperature.0,
                opts.softmax_temperature.1,
                opts.steps,
                step,
            ),
            _ => 1.0,
        };
        let uniforms: Vec<f32> = (0..batch * l)
            .map(|i| rngs[i / l].random::<f32>())
            .collect();
        let (ids, probs) = {
            let tokens = Tensor::from_u32(ctx, "tokens", &[batch, h, w], &cur)?;
            let mut rec = ctx.recorder();
            let logits = model.logits(
                &mut rec,
                &tokens,
                Step {
                    index: step,
                    steps: opts.steps,
                },
            )?;
            if logits.shape() != [batch, l, codebook] {
                return Err(Error::shape(
                    "sampler",
                    format!(
                        "model returned logits {:?}, expected [{batch}, {l}, {codebook}]",
                        logits.shape()
                    ),
                ));
            }
            let tu = Tensor::from_f32(ctx, "uniforms", &[batch * l], &uniforms)?;
            let mut logits = logits.reshape(&[batch * l, codebook])?;
            if let Some(mass) = opts.typical_mass {
                logits = ops::sampling::typical_filter(&mut rec, &logits, mass)?;
            }
            let (ids, probs) = ops::sampling::categorical(&mut rec, &logits, &tu, temperature)?;
            rec.submit();
            let ids = ids.read_u32(ctx, mode).await?;
            // Non-finite logits (a model or a guidance scale that overflows f32) leave the
            // sampling kernel no valid choice: stop rather than feed garbage ids back.
            if let Some(bad) = ids.iter().find(|&&id| id as usize >= codebook) {
                return Err(Error::shape(
                    "sampler",
                    format!(
                        "step {step} sampled id {bad}, outside the codebook of {codebook}: the \
                         logits are not finite (guidance or temperature too large?)"
                    ),
                ));
            }
            (ids, probs.read_f32(ctx, mode).await?)
        };
        let inp = StepInput {
            opts,
            step,
            batch,
            l,
            mask,
            cur: &cur,
            ids: &ids,
            probs: &probs,
        };
        let StepOutcome {
            next,
            predicted,
            newly_fixed,
        } = match opts.kind {
            SamplerKind::MaskGit | SamplerKind::Amused => remask::step(&inp, &n0, &mut rngs),
            SamplerKind::Paella => {
                let t_next = model.noise_level(Step {
                    index: step + 1,
                    steps: opts.steps,
                });
                let mut state = paella::Renoise {
                    known: &known,
                    init,
                    noise: &noise,
                    settled: &mut settled,
                };
                paella::step(&inp, &mut state, t_next, &mut rngs)
            }
        };
        final_tokens.clone_from(&predicted);
        cur = next;
        let shown = if last { &final_tokens } else { &cur };
        let flow = on_step(&StepEvent {
            step,
            steps: opts.steps,
            stage: 0,
            grid: (h, w),
            tokens: shown,
            predicted: &predicted,
            newly_fixed: &newly_fixed,
            confidence: &probs,
            ms: t_start.elapsed().as_secs_f64() * 1e3,
            work: ctx.work_counts() - work_start,
        });
        if flow.is_break() && !last {
            return Err(Error::Cancelled {
                step: step + 1,
                steps: opts.steps,
            });
        }
    }
    Ok(final_tokens)
}

/// The step img2img starts at: the last ⌊steps·strength⌋ of `steps` run.
///
/// # Errors
/// A strength outside (0, 1], or one that runs no step.
pub fn img2img_start_step(steps: usize, strength: f64) -> Result<usize> {
    if !(strength > 0.0 && strength <= 1.0) {
        return Err(Error::invalid(
            "img2img",
            format!("strength {strength} must be in (0, 1]"),
        ));
    }
    let run = ((steps as f64) * strength) as usize;
    if run == 0 {
        return Err(Error::invalid(
            "img2img",
            format!("strength {strength} × {steps} steps runs no step"),
        ));
    }
    Ok(steps - run)
}

/// img2img start: from `tokens` (all known), run the last ⌊steps·strength⌋ steps, first
/// masking each token independently with the schedule's ratio at that point (diffusers
/// `add_noise`). Returns (tokens, start step).
pub fn img2img_start(
    tokens: &[u32],
    mask: u32,
    opts: &SamplerOptions,
    strength: f64,
) -> Result<(Vec<u32>, usize)> {
    let start = img2img_start_step(opts.steps, strength)?;
    // Mask as the schedule has it when step `start` begins: γ(start / steps). diffusers reads
    // the same value except at strength 1, where its index wraps to the last step and masks
    // nothing; here strength 1 masks everything, i.e. regenerates the image.
    let p = opts
        .schedule
        .mask_ratio(start as f64 / opts.steps as f64, tokens.len());
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed ^ 0x1316_2a2a);
    let out = tokens
        .iter()
        .map(|&t| {
            if f64::from(rng.random::<f32>()) < p {
                mask
            } else {
                t
            }
        })
        .collect();
    Ok((out, start))
}
