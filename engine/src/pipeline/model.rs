//! One model type for every family (diffusers' auto-pipeline is the anchor): [`Model::open`]
//! detects the family from what is on disk, and every caller — `--render`, the inspection
//! commands, the benchmark and the app — plans, samples, decodes and encodes through it
//! without knowing which family it holds. What only some families take (a class label, a
//! prompt, classifier-free guidance, outpainting) is checked here, once, against the opened
//! model ([`Model::check`]).

use std::path::{Path, PathBuf};

use super::settings::Condition;
use super::{GuidedTransformer, Request, Start, SuperResOptions};

/// Added to the request's seed for a super-resolution stage's sampler, so its draws are not
/// the base stage's.
const SUPER_RES_SEED_OFFSET: u64 = 0x5eed_0000_0002;
use crate::error::{Error, Result};
use crate::gpu::{DType, GpuContext, Readback, Recorder, Tensor};
use crate::io::ModelFolder;
use crate::models::amused::AmusedPipeline;
use crate::models::amused::super_res::SuperResPipeline;
use crate::models::clip_text::TextEmbeddings;
use crate::models::maskgit::{self, MaskGit};
use crate::models::paella::{self, PaellaPipeline};
use crate::sampling::{GuidanceSchedule, SamplerKind, SamplerOptions, Schedule, Step, TokenModel};

/// A model of any family, with everything it needs to generate.
pub enum Model {
    /// A diffusers aMUSEd folder (CLIP text encoder, UVit2D transformer, VQ model).
    Amused(Box<AmusedPipeline>),
    /// MaskGIT's released Flax checkpoints (class-conditional transformer and VQGAN).
    MaskGit(Box<MaskGit>),
    /// A Paella v3 folder (generator, f4 VQGAN, ByT5 and CLIP text encoders).
    Paella(Box<PaellaPipeline>),
}

/// One output of [`Model::embed_text`].
pub enum TextOutput {
    /// Token ids of one tokenizer.
    Ids(Vec<u32>),
    /// An embedding tensor.
    Tensor(Tensor),
}

/// The model families tessera runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Amused,
    MaskGit,
    Paella,
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Family::Amused => "aMUSEd",
            Family::MaskGit => "MaskGIT",
            Family::Paella => "Paella",
        })
    }
}

/// What a model is conditioned on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conditioning {
    /// A prompt (and a negative prompt where the model has classifier-free guidance).
    Text,
    /// A class label in `0..classes`.
    Class { classes: usize },
}

/// A request option some families do not take, named as the CLI spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestOption {
    Class,
    Prompt,
    NegativePrompt,
    Guidance,
    Outpaint,
    NoiseLevel,
    GuidanceSchedule,
    Edit,
    Stages,
    SuperResSteps,
}

impl std::fmt::Display for RequestOption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RequestOption::Class => "--class",
            RequestOption::Prompt => "--prompt",
            RequestOption::NegativePrompt => "--negative-prompt",
            RequestOption::Guidance => "--guidance",
            RequestOption::Outpaint => "--outpaint",
            RequestOption::NoiseLevel => "--noise-level",
            RequestOption::GuidanceSchedule => "--guidance-schedule",
            RequestOption::Edit => "--edit",
            RequestOption::Stages => "--stages",
            RequestOption::SuperResSteps => "--sr-steps",
        })
    }
}

impl Model {
    /// Opens the model at `path`: MaskGIT checkpoints (a `maskgit_*`/`tokenizer_*` checkpoint
    /// file, or a folder holding such a pair) or a diffusers aMUSEd folder (`model_index.json`).
    ///
    /// # Errors
    /// What the family's loader reports: missing or mismatched files, tensors, configs.
    pub fn open(ctx: &GpuContext, path: &Path) -> Result<Self> {
        if maskgit::is_checkpoint_path(path) {
            return Ok(Model::MaskGit(Box::new(MaskGit::load(ctx, path)?)));
        }
        if paella::is_paella_folder(path) {
            return Ok(Model::Paella(Box::new(PaellaPipeline::load(ctx, path)?)));
        }
        Ok(Model::Amused(Box::new(AmusedPipeline::load(
            ctx,
            &ModelFolder::open(path)?,
        )?)))
    }

    /// The path [`Self::open`] takes for what a user typed: MaskGIT checkpoints (a file, or a
    /// folder holding them) as they are, a folder, or an `owner/name` hub id found in the local
    /// Hugging Face cache ([`crate::io::resolve_model`]).
    ///
    /// # Errors
    /// Neither a path nor a cached hub id, or a file that is no model.
    pub fn locate(arg: &str) -> Result<PathBuf> {
        let path = Path::new(arg);
        if maskgit::is_checkpoint_path(path) {
            return Ok(path.to_owned());
        }
        crate::io::resolve_dir(arg)
    }

    pub fn family(&self) -> Family {
        match self {
            Model::Amused(_) => Family::Amused,
            Model::MaskGit(_) => Family::MaskGit,
            Model::Paella(_) => Family::Paella,
        }
    }

    pub fn conditioning(&self) -> Conditioning {
        match self {
            Model::Amused(_) | Model::Paella(_) => Conditioning::Text,
            Model::MaskGit(m) => Conditioning::Class {
                classes: m.num_classes(),
            },
        }
    }

    /// Whether the model has an unconditional branch, so classifier-free guidance applies.
    pub fn has_guidance(&self) -> bool {
        matches!(self, Model::Amused(_) | Model::Paella(_))
    }

    /// The token grid (height, width) it generates by default: a two-stage model's output
    /// grid (its super-resolution stage's).
    pub fn grid(&self) -> (usize, usize) {
        self.grid_for(SuperResOptions::default())
    }

    /// Generation stages: 2 for an aMUSEd folder with a super-resolution stage
    /// (`super_res/`), else 1.
    pub fn stages(&self) -> usize {
        if self.super_res_stage().is_some() {
            2
        } else {
            1
        }
    }

    /// A two-stage model's base pipeline and super-resolution stage; `None` for a model of one
    /// stage.
    pub(crate) fn super_res_stage(&self) -> Option<(&AmusedPipeline, &SuperResPipeline)> {
        match self {
            Model::Amused(p) => p.super_res.as_ref().map(|sr| (&**p, sr)),
            _ => None,
        }
    }

    /// The error for a super-resolution `option` or command on a model of one stage.
    fn one_stage(option: RequestOption) -> Error {
        Error::Request {
            option,
            message: "applies to two-stage models (a base and a super-resolution stage, \
                      super_res/); this model has one stage"
                .into(),
        }
    }

    /// A two-stage model's super-resolution steps when the user gives none (its
    /// `super_res/tessera.json`'s, else 8); `None` for a model of one stage.
    pub fn default_super_res_steps(&self) -> Option<usize> {
        self.super_res_stage().map(|(_, sr)| {
            sr.defaults
                .steps
                .unwrap_or(crate::models::amused::super_res::DEFAULT_STEPS)
        })
    }

    /// The token grid (height, width) a run with `super_res` ends on by default: a two-stage
    /// model's super-resolution grid, or its base grid when the stage is skipped.
    pub fn grid_for(&self, super_res: SuperResOptions) -> (usize, usize) {
        if let (false, Some((_, sr))) = (super_res.skip, self.super_res_stage()) {
            return sr.transformer.config.grid();
        }
        match self {
            Model::Amused(p) => {
                let s = p.transformer.config.sample_size;
                (s, s)
            }
            Model::MaskGit(m) => m.grid(),
            // The released model's 256 px.
            Model::Paella(p) => {
                let n = 256 / p.vq.scale_factor();
                let m = p.grid_multiple();
                (n.div_ceil(m) * m, n.div_ceil(m) * m)
            }
        }
    }

    /// Whether its positions are fixed (learned position embeddings of one grid size): then
    /// only that grid runs, and outpainting does not apply.
    pub fn fixed_grid(&self) -> bool {
        self.fixed_grid_for(SuperResOptions::default())
    }

    /// [`Self::fixed_grid`] for a run with `super_res`: a two-stage model's super-resolution
    /// stage has learned positions of one grid.
    pub fn fixed_grid_for(&self, super_res: SuperResOptions) -> bool {
        matches!(self, Model::MaskGit(_)) || !super_res.skip && self.super_res_stage().is_some()
    }

    /// A two-stage model's super-resolution masking schedule (its `super_res/scheduler`'s, as
    /// [`Self::super_res_sampler`] takes it outside inpainting); `None` for a model of one stage
    /// or a name the engine does not know (which a run refuses).
    pub fn super_res_schedule(&self) -> Option<Schedule> {
        let (_, sr) = self.super_res_stage()?;
        sr.scheduler.masking_schedule.parse().ok()
    }

    /// The super-resolution stage's sampler for `req`: the base's kind, guidance schedule and
    /// seed stream moved on (so the two stages draw apart), the stage's own steps (the
    /// request's, else its `tessera.json`'s, else 8), choice temperature and masking schedule
    /// (linear when inpainting, as for the base).
    ///
    /// # Errors
    /// A model without the stage; a scheduler config naming an unknown schedule.
    pub fn super_res_sampler(&self, req: &Request<'_>) -> Result<SamplerOptions> {
        let Some((_, sr)) = self.super_res_stage() else {
            return Err(Self::one_stage(RequestOption::Stages));
        };
        let seed = req.sampler.seed.wrapping_add(SUPER_RES_SEED_OFFSET);
        let mut o = sr.defaults.sampler_options(req.sampler.kind, seed);
        if let Some(steps) = req.super_res.steps {
            o.steps = steps;
        }
        o.guidance_schedule = req.sampler.guidance_schedule;
        o.schedule = if matches!(req.start, Start::Inpaint { .. }) {
            Schedule::Linear
        } else {
            sr.scheduler
                .masking_schedule
                .parse()
                .map_err(|e: String| Error::config(&sr.folder.root, "masking_schedule", e))?
        };
        o.validate()?;
        Ok(o)
    }

    /// Logit rows per image in one buffer under `guidance`: 2 where both branches run as one
    /// batch (aMUSEd), else 1 (Paella runs its branches apart).
    pub fn logit_rows_per_image(&self, guidance: f32) -> u64 {
        match self {
            Model::Amused(_) if guidance > 1.0 => 2,
            _ => 1,
        }
    }

    /// Which ids the transformer's input takes: the codebook, plus the mask id where the model
    /// has one (aMUSEd, MaskGIT; Paella has none).
    pub fn input_vocab(&self) -> usize {
        match self {
            Model::Paella(p) => p.num_labels(),
            _ => self.mask_id().max(self.codebook_size() as u32 - 1) as usize + 1,
        }
    }

    /// Pixels per token side (the VQ's scale factor).
    pub fn vq_factor(&self) -> usize {
        match self {
            Model::Amused(p) => p.vqvae.config.scale_factor(),
            Model::MaskGit(m) => m.vqgan.config.scale_factor(),
            Model::Paella(p) => p.vq.scale_factor(),
        }
    }

    /// The one image size (width, height) in pixels that a run with `super_res` takes, where
    /// its grid is fixed ([`Self::fixed_grid_for`]: MaskGIT's 256×256, a two-stage model's
    /// output size); `None` where any sides that are multiples of [`Self::pixel_multiple`] run.
    pub fn fixed_image_size(&self, super_res: SuperResOptions) -> Option<(usize, usize)> {
        let (h, w) = self.grid_for(super_res);
        let f = self.vq_factor();
        self.fixed_grid_for(super_res).then_some((w * f, h * f))
    }

    /// What input image sides must be multiples of, in pixels: the VQ factor, times 2 for a
    /// transformer that halves the token grid.
    pub fn pixel_multiple(&self) -> usize {
        let down = match self {
            Model::Amused(p) if p.transformer.config.downsample => 2,
            Model::Paella(p) => p.grid_multiple(),
            _ => 1,
        };
        self.vq_factor() * down
    }

    pub fn mask_id(&self) -> u32 {
        match self {
            Model::Amused(p) => p.scheduler.mask_token_id,
            Model::MaskGit(m) => m.mask_id(),
            // No mask token: the sampler's marker for unknown positions, never fed to the model.
            Model::Paella(p) => p.num_labels() as u32,
        }
    }

    pub fn codebook_size(&self) -> usize {
        match self {
            Model::Amused(p) => p.transformer.config.codebook_size,
            Model::MaskGit(m) => m.codebook_size(),
            Model::Paella(p) => p.num_labels(),
        }
    }

    /// The sampler this model's reference pipeline uses.
    pub fn default_sampler(&self) -> SamplerKind {
        match self {
            Model::Amused(_) => SamplerKind::Amused,
            Model::MaskGit(_) => SamplerKind::MaskGit,
            Model::Paella(_) => SamplerKind::Paella,
        }
    }

    /// Sampler settings for `kind` (default: [`Self::default_sampler`]) as this model's
    /// reference pipeline sets them: aMUSEd's folder defaults (`tessera.json`, else 12 steps)
    /// and its scheduler's schedule (linear when `inpainting`, as diffusers' inpainting
    /// pipeline does); MaskGIT's paper settings (8 steps at 256 px, 12 at 512, cosine).
    ///
    /// # Errors
    /// An aMUSEd scheduler config naming an unknown schedule.
    pub fn sampler_defaults(
        &self,
        kind: Option<SamplerKind>,
        seed: u64,
        inpainting: bool,
    ) -> Result<SamplerOptions> {
        let kind = kind.unwrap_or(self.default_sampler());
        Ok(match self {
            Model::Amused(p) => {
                let mut o = p.defaults.sampler_options(kind, seed);
                o.schedule = if inpainting {
                    Schedule::Linear
                } else {
                    p.scheduler
                        .masking_schedule
                        .parse()
                        .map_err(|e: String| Error::config(&p.folder.root, "masking_schedule", e))?
                };
                o
            }
            Model::MaskGit(m) => {
                let mut o = SamplerOptions::for_kind(kind, seed);
                o.steps = if m.image_size() > 256 { 12 } else { 8 };
                o.schedule = Schedule::Cosine;
                o
            }
            Model::Paella(p) => p.sampler_defaults(SamplerOptions::for_kind(kind, seed)),
        })
    }

    /// The guidance scale its reference pipeline uses (1: none).
    pub fn default_guidance(&self) -> f32 {
        match self {
            Model::Amused(p) => p.defaults.guidance(),
            Model::MaskGit(_) => 1.0,
            Model::Paella(p) => p.default_guidance(),
        }
    }

    /// Refuses a request this model cannot honour, naming the option and the rule: a class
    /// label for a text model, a prompt or guidance for a model without text or an
    /// unconditional branch, outpainting or another grid where positions are fixed.
    ///
    /// # Errors
    /// [`Error::Request`].
    pub fn check(&self, req: &Request<'_>) -> Result<()> {
        let refuse = |option, message: String| Err(Error::Request { option, message });
        match (self.conditioning(), req.condition) {
            (Conditioning::Text, Condition::Class { .. }) => {
                return refuse(
                    RequestOption::Class,
                    "applies to class-conditional models (MaskGIT's ImageNet checkpoints); this \
                     is a text-to-image model: describe the image with --prompt"
                        .into(),
                );
            }
            (
                Conditioning::Class { classes },
                Condition::Text {
                    prompt,
                    negative_prompt,
                },
            ) => {
                let option = if !prompt.is_empty() {
                    RequestOption::Prompt
                } else if !negative_prompt.is_empty() {
                    RequestOption::NegativePrompt
                } else {
                    return refuse(
                        RequestOption::Class,
                        format!(
                            "is needed: this is a class-conditional {} model; pass --class N \
                             (0–{})",
                            self.family(),
                            classes.saturating_sub(1)
                        ),
                    );
                };
                return refuse(
                    option,
                    format!(
                        "does not apply to {}'s class-conditional checkpoints (no text, no \
                         unconditional branch): choose the image with --class",
                        self.family()
                    ),
                );
            }
            (Conditioning::Class { classes }, Condition::Class { label, .. })
                if label as usize >= classes =>
            {
                return refuse(
                    RequestOption::Class,
                    format!("{label} is outside 0–{}", classes.saturating_sub(1)),
                );
            }
            _ => {}
        }
        if !self.has_guidance() && req.sampler.guidance_schedule != GuidanceSchedule::Constant {
            return refuse(
                RequestOption::GuidanceSchedule,
                format!(
                    "does not apply to {}'s class-conditional checkpoints (no unconditional \
                     branch)",
                    self.family()
                ),
            );
        }
        if !self.has_guidance() && req.guidance != 1.0 {
            return refuse(
                RequestOption::Guidance,
                format!(
                    "does not apply to {}'s class-conditional checkpoints (no unconditional \
                     branch): choose the image with --class",
                    self.family()
                ),
            );
        }
        if !self.has_guidance() && matches!(req.start, Start::Edit { .. }) {
            return refuse(
                RequestOption::Edit,
                format!(
                    "applies to text models with an unconditional branch; {}'s class-conditional \
                     checkpoints have none",
                    self.family()
                ),
            );
        }
        if self.stages() == 1 && (req.super_res.skip || req.super_res.steps.is_some()) {
            let option = if req.super_res.skip {
                RequestOption::Stages
            } else {
                RequestOption::SuperResSteps
            };
            return Err(Self::one_stage(option));
        }
        if req.super_res.skip && req.super_res.steps.is_some() {
            return refuse(
                RequestOption::SuperResSteps,
                "sets the super-resolution stage, which --stages 1 skips".into(),
            );
        }
        if req.super_res.steps == Some(0) {
            return refuse(RequestOption::SuperResSteps, "must be at least 1".into());
        }
        if self.fixed_grid_for(req.super_res) {
            if matches!(req.start, Start::Outpaint { .. }) {
                let (h, w) = self.grid_for(req.super_res);
                return refuse(
                    RequestOption::Outpaint,
                    format!("needs a model without fixed positions; this grid is fixed at {h}×{w}"),
                );
            }
            let want = self.grid_for(req.super_res);
            let got = req.start.grid(self.vq_factor());
            if got != want {
                let f = self.vq_factor();
                return Err(Error::shape(
                    "generate",
                    format!(
                        "the image is {}×{} px; this {} model works on {}×{} px only",
                        got.1 * f,
                        got.0 * f,
                        self.family(),
                        want.1 * f,
                        want.0 * f
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The sampler's model for `req` (conditioning prepared once, see [`GuidedTransformer`]).
    pub(crate) fn token_model<'a>(
        &'a self,
        ctx: &GpuContext,
        req: &Request<'_>,
        grid: (usize, usize),
    ) -> Result<Box<dyn TokenModel + 'a>> {
        Ok(match (self, req.condition) {
            (
                Model::Amused(p),
                Condition::Text {
                    prompt,
                    negative_prompt,
                },
            ) => Box::new(GuidedTransformer::new(
                ctx,
                p,
                prompt,
                negative_prompt,
                req.batch,
                (req.guidance, req.sampler.guidance_schedule),
                grid,
            )?),
            (Model::MaskGit(m), Condition::Class { label, .. }) => {
                Box::new(m.class_conditional(&vec![label; req.batch])?)
            }
            (
                Model::Paella(p),
                Condition::Text {
                    prompt,
                    negative_prompt,
                },
            ) => Box::new(p.guided(
                ctx,
                prompt,
                negative_prompt,
                req.batch,
                (req.guidance, req.sampler.guidance_schedule),
                grid,
            )?),
            _ => {
                self.check(req)?;
                return Err(Error::shape("generate", "condition does not fit the model"));
            }
        })
    }

    /// The prompt's token ids and text embeddings as the model's encoders give them, named as
    /// `tessera embed-text` writes them: aMUSEd `input_ids`, `pooled` (CLIP `text_embeds`
    /// `[1, D]`), `hidden` (the penultimate layer `[1, 77, W]`); Paella v3 `byt5_input_ids`,
    /// `byt5` (`[1, T, D]`), `clip_input_ids`, `clip` (`[1, D]`).
    ///
    /// # Errors
    /// [`Error::Request`] for a model without a text encoder; tokenizer and GPU failures.
    pub fn embed_text(
        &self,
        rec: &mut Recorder<'_>,
        prompt: &str,
    ) -> Result<Vec<(&'static str, TextOutput)>> {
        match self {
            Model::Amused(p) => {
                let (
                    ids,
                    TextEmbeddings {
                        pooled,
                        penultimate,
                    },
                ) = p.text.embed(rec, &[prompt])?;
                Ok(vec![
                    ("input_ids", TextOutput::Ids(ids)),
                    ("pooled", TextOutput::Tensor(pooled)),
                    ("hidden", TextOutput::Tensor(penultimate)),
                ])
            }
            Model::Paella(p) => {
                let t = p.embed(rec, prompt)?;
                let mut out = Vec::new();
                if let Some((ids, states)) = t.byt5 {
                    out.push(("byt5_input_ids", TextOutput::Ids(ids)));
                    out.push(("byt5", TextOutput::Tensor(states)));
                }
                out.push(("clip_input_ids", TextOutput::Ids(t.clip_ids)));
                out.push(("clip", TextOutput::Tensor(t.clip)));
                Ok(out)
            }
            Model::MaskGit(_) => Err(Error::Request {
                option: RequestOption::Prompt,
                message: format!(
                    "does not apply to {}: it has no text encoder (class-conditional)",
                    self.family()
                ),
            }),
        }
    }

    /// Conditional logits `[B, h·w, codebook]` of token grids `tokens` `[B, h, w]` (mask id
    /// where unknown) under `condition`, without guidance: the transformer's output as the
    /// reference's forward pass gives it (aMUSEd: the prompt's CLIP embeddings and micro-conds
    /// for the grid's size; MaskGIT: `logits[:, 1:, :codebook]`).
    ///
    /// # Errors
    /// A condition the model does not take, shapes, GPU failures.
    ///
    /// `noise_level`: Paella's r ∈ [0, 1] as its version's official forward takes it (default: the
    /// first step's); other families take none.
    pub fn logits(
        &self,
        ctx: &GpuContext,
        tokens: &Tensor,
        condition: Condition<'_>,
        noise_level: Option<f32>,
    ) -> Result<Tensor> {
        let &[b, h, w] = tokens.shape() else {
            return Err(Error::shape(
                "forward",
                format!("tokens {:?} are not [B, h, w]", tokens.shape()),
            ));
        };
        let req = Request {
            condition,
            batch: b,
            guidance: 1.0,
            sampler: SamplerOptions::amused(0),
            start: Start::Blank((h, w)),
            // The base stage's transformer (of a two-stage model too).
            super_res: SuperResOptions {
                skip: self.stages() == 2,
                steps: None,
            },
        };
        self.check(&req)?;
        if let Some(r) = noise_level {
            let Model::Paella(p) = self else {
                return Err(Error::Request {
                    option: RequestOption::NoiseLevel,
                    message: format!("applies to Paella models; this is {}", self.family()),
                });
            };
            if !(0.0..=1.0).contains(&r) {
                return Err(Error::Request {
                    option: RequestOption::NoiseLevel,
                    message: format!("{r} is outside [0, 1]"),
                });
            }
            let Condition::Text { prompt, .. } = condition else {
                return Err(Error::invalid("forward", "Paella takes a prompt"));
            };
            let model = p.guided(ctx, prompt, "", b, (1.0, Default::default()), (h, w))?;
            let mut rec = ctx.recorder();
            let logits = model.logits_at(&mut rec, tokens, r, 1.0)?;
            rec.submit();
            return Ok(logits);
        }
        let model = self.token_model(ctx, &req, (h, w))?;
        let mut rec = ctx.recorder();
        let logits = model.logits(&mut rec, tokens, Step { index: 0, steps: 1 })?;
        rec.submit();
        Ok(logits)
    }

    /// A two-stage model's super-resolution transformer: conditional logits `[B, h·w,
    /// codebook]` for high-res `tokens` u32 `[B, h, w]` (mask id allowed) given the base
    /// stage's `low_res` tokens u32 `[B, lh, lw]` and `prompt`, no guidance (`tessera forward
    /// --stage super-res`).
    ///
    /// # Errors
    /// [`Error::Request`] for a model without the stage; ids outside the codebooks, grids other
    /// than the stage's; GPU failures.
    pub fn super_res_logits(
        &self,
        ctx: &GpuContext,
        tokens: &Tensor,
        low_res: &[u32],
        prompt: &str,
    ) -> Result<Tensor> {
        let Some((p, sr)) = self.super_res_stage() else {
            return Err(Self::one_stage(RequestOption::Stages));
        };
        let &[b, h, w] = tokens.shape() else {
            return Err(Error::shape(
                "forward",
                format!("tokens {:?} are not [B, h, w]", tokens.shape()),
            ));
        };
        let want = sr.transformer.config.grid();
        if (h, w) != want {
            return Err(Error::shape(
                "forward",
                format!(
                    "tokens are {h}×{w}; the super-resolution stage works on {}×{}",
                    want.0, want.1
                ),
            ));
        }
        let lr_grid = sr.transformer.config.low_res_grid();
        if low_res.len() != b * lr_grid.0 * lr_grid.1 {
            return Err(Error::shape(
                "forward",
                format!(
                    "{} low-res tokens for {b} grids of {}×{}",
                    low_res.len(),
                    lr_grid.0,
                    lr_grid.1
                ),
            ));
        }
        let f = p.vqvae.config.scale_factor();
        let mut rec = ctx.recorder();
        let text = super::TextRows::new(
            &mut rec,
            p,
            (prompt, ""),
            b,
            (1.0, Default::default()),
            (w * f, h * f),
        )?;
        rec.submit();
        let model = GuidedTransformer::super_res(ctx, sr, &text, low_res, lr_grid)?;
        let mut rec = ctx.recorder();
        let logits = model.logits(&mut rec, tokens, Step { index: 0, steps: 1 })?;
        rec.submit();
        Ok(logits)
    }

    /// Code ids u32 `[B, h, w]` → image `[B, 3, h·f, w·f]`, the decoder's output before
    /// clipping (in [−1, 1] for Paella v1; [`Self::pixels_to_unit`] maps it).
    pub fn decode_tensor(&self, rec: &mut Recorder<'_>, ids: &Tensor) -> Result<Tensor> {
        match self {
            Model::Amused(p) => p.vqvae.decode(rec, ids),
            Model::MaskGit(m) => m.decode(rec, ids),
            Model::Paella(p) => p.vq.decode(rec, ids),
        }
    }

    /// Image `[B, 3, H, W]` in [0, 1] → nearest-code ids u32 `[B, H/f, W/f]`.
    pub fn encode_tensor(&self, rec: &mut Recorder<'_>, image: &Tensor) -> Result<Tensor> {
        match self {
            Model::Amused(p) => p.vqvae.encode(rec, image),
            Model::MaskGit(m) => m.encode(rec, image),
            Model::Paella(p) => p.vq.encode(rec, image),
        }
    }

    /// Maps the decoder's raw output ([`Self::decode_tensor`]) to [0, 1] in place: clipped,
    /// after rescaling from [−1, 1] for decoders trained on that range (Paella v1's).
    pub fn pixels_to_unit(&self, v: &mut [f32]) {
        let (lo, hi) = match self {
            Model::Paella(p) => p.vq.output_range(),
            _ => (0.0, 1.0),
        };
        for x in v {
            *x = ((*x - lo) / (hi - lo)).clamp(0.0, 1.0);
        }
    }

    /// Decodes `batch` token grids to images `[B, 3, H, W]` clipped to [0, 1], and their size
    /// (width, height).
    ///
    /// One image per submission: the decoder's full-resolution activations are its largest
    /// tensors, and decoding images one at a time keeps the peak memory that of one image.
    pub fn decode(
        &self,
        ctx: &GpuContext,
        tokens: &[u32],
        batch: usize,
        grid: (usize, usize),
    ) -> Result<(Vec<f32>, (usize, usize))> {
        pollster::block_on(self.decode_with(ctx, tokens, batch, grid, Readback::Block))
    }

    /// [`Self::decode`], its readbacks waiting as `mode` says ([`Readback::Await`] in the
    /// browser).
    ///
    /// # Errors
    /// As [`Self::decode`].
    pub async fn decode_with(
        &self,
        ctx: &GpuContext,
        tokens: &[u32],
        batch: usize,
        grid: (usize, usize),
        mode: Readback,
    ) -> Result<(Vec<f32>, (usize, usize))> {
        let per = grid.0 * grid.1;
        if tokens.len() != batch * per {
            return Err(Error::shape(
                "decode",
                format!(
                    "{} tokens for {batch} grids of {}×{}",
                    tokens.len(),
                    grid.0,
                    grid.1
                ),
            ));
        }
        let mut out = Vec::new();
        let mut size = (0, 0);
        for one in tokens.chunks(per.max(1)) {
            let t = Tensor::from_u32(ctx, "tokens", &[1, grid.0, grid.1], one)?;
            let mut rec = ctx.recorder();
            let img = self.decode_tensor(&mut rec, &t)?;
            rec.submit();
            debug_assert_eq!(img.dtype(), DType::F32);
            size = (img.shape()[3], img.shape()[2]);
            let mut v = img.read_f32(ctx, mode).await?;
            self.pixels_to_unit(&mut v);
            out.extend(v);
        }
        Ok((out, size))
    }

    /// Encodes one image `[1, 3, H, W]` in [0, 1] of `size` (width, height) to its code ids
    /// and token grid (height, width).
    ///
    /// # Errors
    /// Sides that are not multiples of the VQ factor; GPU failures.
    pub fn encode(
        &self,
        ctx: &GpuContext,
        image: &[f32],
        size: (usize, usize),
    ) -> Result<(Vec<u32>, (usize, usize))> {
        pollster::block_on(self.encode_with(ctx, image, size, Readback::Block))
    }

    /// [`Self::encode`], its readback waiting as `mode` says.
    ///
    /// # Errors
    /// As [`Self::encode`].
    pub async fn encode_with(
        &self,
        ctx: &GpuContext,
        image: &[f32],
        size: (usize, usize),
        mode: Readback,
    ) -> Result<(Vec<u32>, (usize, usize))> {
        let (w, h) = size;
        let f = self.vq_factor();
        if w % f != 0 || h % f != 0 || w == 0 || h == 0 {
            return Err(Error::shape(
                "encode",
                format!("image is {w}×{h}; this model needs sides that are multiples of {f}"),
            ));
        }
        let t = Tensor::from_f32(ctx, "image", &[1, 3, h, w], image)?;
        let mut rec = ctx.recorder();
        let ids = self.encode_tensor(&mut rec, &t)?;
        rec.submit();
        Ok((ids.read_u32(ctx, mode).await?, (h / f, w / f)))
    }
}
