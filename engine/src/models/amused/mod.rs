//! An aMUSEd pipeline folder (diffusers `AmusedPipeline`): tokenizer, CLIP text encoder,
//! UVit2D transformer, VQ model and scheduler settings, with the conditioning the reference
//! pipeline feeds them.

pub mod super_res;
pub mod uvit2d;
pub mod vq;

use serde::Deserialize;

use self::super_res::SuperResPipeline;
use self::uvit2d::{Conditioning, UVit2DModel};
use self::vq::VqModel;
use super::clip_text::{ClipTextModel, TextEmbeddings};
use super::clip_tokenizer::ClipTokenizer;
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, Recorder, Tensor};
use crate::io::{ModelFolder, read_config};
use crate::sampling::{GuidanceSchedule, SamplerKind, SamplerOptions};

/// `scheduler/scheduler_config.json` of an `AmusedScheduler`.
#[derive(Clone, Debug, Deserialize)]
pub struct SchedulerConfig {
    pub mask_token_id: u32,
    #[serde(default = "cosine")]
    pub masking_schedule: String,
}

fn cosine() -> String {
    "cosine".into()
}

/// The optional `tessera.json` beside `model_index.json`: generation settings the model was
/// tuned for, used where the user gives none. diffusers ignores the file. Every key is optional;
/// an absent file or key keeps the aMUSEd pipeline's defaults (guidance 10, 12 steps, choice
/// temperature 2 → 0, guidance at every step).
///
/// ```json
/// { "guidance_scale": 4.0, "steps": 12, "choice_temperature": [1.0, 0.0],
///   "guidance_schedule": "first:4" }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerationDefaults {
    /// Classifier-free guidance scale.
    pub guidance_scale: Option<f32>,
    /// Decoding steps.
    pub steps: Option<usize>,
    /// The aMUSEd sampler's re-masking temperature, start and end of the linear anneal.
    pub choice_temperature: Option<[f32; 2]>,
    /// How the guidance scale varies over the steps, named as `--guidance-schedule` takes it
    /// (`constant`, `linear`, `cosine`, `first:N`; [`GuidanceSchedule`]).
    #[serde(default, deserialize_with = "guidance_schedule_name")]
    pub guidance_schedule: Option<GuidanceSchedule>,
}

/// Reads `guidance_schedule` by its name (`"first:4"`); an unknown name is the file's error.
fn guidance_schedule_name<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<GuidanceSchedule>, D::Error> {
    let name = String::deserialize(d)?;
    name.parse().map(Some).map_err(serde::de::Error::custom)
}

impl GenerationDefaults {
    pub const FILE: &'static str = "tessera.json";

    /// The aMUSEd pipeline's guidance scale, used without a file or key.
    pub const PIPELINE_GUIDANCE: f32 = 10.0;

    /// Guidance scale: the file's, else the pipeline's 10.
    pub fn guidance(&self) -> f32 {
        self.guidance_scale.unwrap_or(Self::PIPELINE_GUIDANCE)
    }

    /// Sampler settings for `kind` on this model: `kind`'s own defaults, with the file's steps
    /// (else the aMUSEd pipeline's 12, whatever the sampler) and guidance schedule and, for the
    /// aMUSEd sampler, the file's choice temperature.
    pub fn sampler_options(&self, kind: SamplerKind, seed: u64) -> SamplerOptions {
        let mut o = SamplerOptions::for_kind(kind, seed);
        o.steps = self.steps.unwrap_or(SamplerOptions::amused(seed).steps);
        if let (SamplerKind::Amused, Some([t0, t1])) = (kind, self.choice_temperature) {
            o.choice_temperature = (t0, t1);
        }
        if let Some(g) = self.guidance_schedule {
            o.guidance_schedule = g;
        }
        o
    }

    /// Reads `<root>/tessera.json`; `Default` when the file is absent. Looked up through
    /// [`files`](crate::io::files), so a folder served from memory (the embedded default
    /// model, the browser's) has its file read as a folder on disk does.
    pub fn read(folder: &ModelFolder) -> Result<Self> {
        let path = folder.root.join(Self::FILE);
        if !crate::io::files::is_file(&path) {
            return Ok(Self::default());
        }
        let d: Self = read_config(&path)?;
        let bad = |what: &str| Err(Error::file(&path, what));
        if d.guidance_scale.is_some_and(|g| !g.is_finite()) {
            return bad("guidance_scale must be a finite number");
        }
        if d.steps == Some(0) {
            return bad("steps must be at least 1");
        }
        if d.choice_temperature
            .is_some_and(|t| t.iter().any(|v| !v.is_finite() || *v < 0.0))
        {
            return bad("choice_temperature must be two non-negative numbers");
        }
        Ok(d)
    }
}

/// Prompt → token ids → text embeddings.
pub struct TextStack {
    pub tokenizer: ClipTokenizer,
    pub text_encoder: ClipTextModel,
}

impl TextStack {
    pub fn load(ctx: &GpuContext, folder: &ModelFolder) -> Result<Self> {
        Ok(Self {
            tokenizer: ClipTokenizer::from_dir(&folder.component("tokenizer")?)?,
            text_encoder: ClipTextModel::load(ctx, &folder.component("text_encoder")?)?,
        })
    }

    /// Token ids (padded to the tokenizer's max length) and embeddings for each prompt.
    pub fn embed(
        &self,
        rec: &mut Recorder<'_>,
        prompts: &[&str],
    ) -> Result<(Vec<u32>, TextEmbeddings)> {
        let mut ids = Vec::new();
        for p in prompts {
            ids.extend(self.tokenizer.encode(p)?);
        }
        let emb = self.text_encoder.forward(rec, &ids, prompts.len())?;
        Ok((ids, emb))
    }
}

/// Every component of an aMUSEd folder.
pub struct AmusedPipeline {
    pub folder: ModelFolder,
    pub text: TextStack,
    pub transformer: UVit2DModel,
    pub vqvae: VqModel,
    pub scheduler: SchedulerConfig,
    /// Settings from the folder's optional `tessera.json`.
    pub defaults: GenerationDefaults,
    /// The super-resolution stage (`super_res/`) of a two-stage model.
    pub super_res: Option<SuperResPipeline>,
}

impl AmusedPipeline {
    pub fn load(ctx: &GpuContext, folder: &ModelFolder) -> Result<Self> {
        let text = TextStack::load(ctx, folder)?;
        let transformer = UVit2DModel::load(ctx, &folder.component("transformer")?)?;
        let vqvae = VqModel::load(ctx, &folder.component("vqvae")?)?;
        let sched_path = folder.component("scheduler")?.join("scheduler_config.json");
        let scheduler: SchedulerConfig = read_config(&sched_path)?;
        let vq_dir = folder.root.join("vqvae");
        check_compatible(&text, &transformer, (&vqvae, &vq_dir), &scheduler, folder)?;
        let defaults = GenerationDefaults::read(folder)?;
        let super_res = match SuperResPipeline::folder_of(folder) {
            Some(dir) => {
                let sr = SuperResPipeline::load(ctx, &dir)?;
                let sr_vq = (&vqvae, vq_dir.as_path());
                check_compatible(
                    &text,
                    &sr.transformer.uvit,
                    sr_vq,
                    &sr.scheduler,
                    &sr.folder,
                )?;
                check_stages(&transformer, scheduler.mask_token_id, &sr)?;
                Some(sr)
            }
            None => None,
        };
        Ok(Self {
            folder: folder.clone(),
            text,
            transformer,
            vqvae,
            scheduler,
            defaults,
            super_res,
        })
    }

    /// The image size the pipeline generates by default (the transformer's sample size in
    /// tokens times the VQ's scale factor), as (width, height).
    pub fn output_size(&self) -> (usize, usize) {
        let s = self.transformer.config.sample_size * self.vqvae.config.scale_factor();
        (s, s)
    }

    /// Conditional logits `[B, h·w, codebook]` for `tokens` `[B, h, w]`, no guidance.
    pub fn forward(
        &self,
        rec: &mut Recorder<'_>,
        tokens: &Tensor,
        text: &TextEmbeddings,
        micro_conds: &Tensor,
    ) -> Result<Tensor> {
        self.transformer.forward(
            rec,
            tokens,
            &Conditioning {
                pooled: &text.pooled,
                hidden: &text.penultimate,
                micro_conds,
            },
        )
    }
}

/// `[B, 5]` micro-conditioning: width, height, crop top, crop left, aesthetic score (the
/// pipeline's defaults are crop (0, 0) and score 6).
pub fn micro_conds(
    ctx: &GpuContext,
    batch: usize,
    (width, height): (usize, usize),
    crop: (f32, f32),
    score: f32,
) -> Result<Tensor> {
    let row = [width as f32, height as f32, crop.0, crop.1, score];
    let data: Vec<f32> = row.iter().copied().cycle().take(5 * batch).collect();
    Tensor::from_f32(ctx, "micro_conds", &[batch, 5], &data)
}

fn check_compatible(
    text: &TextStack,
    t: &UVit2DModel,
    (vq, vq_dir): (&VqModel, &std::path::Path),
    s: &SchedulerConfig,
    folder: &ModelFolder,
) -> Result<()> {
    let tc = &t.config;
    let file = |c: &str| folder.root.join(c).join("config.json");
    // A super-resolution stage decodes with the base folder's vqvae.
    let vq_file = vq_dir.join("config.json");
    if text.text_encoder.config.projection_dim != tc.cond_embed_dim {
        return Err(Error::config(
            file("transformer"),
            "cond_embed_dim",
            format!(
                "{} ≠ text encoder projection_dim {}",
                tc.cond_embed_dim, text.text_encoder.config.projection_dim
            ),
        ));
    }
    if text.text_encoder.config.hidden_size != tc.encoder_hidden_size {
        return Err(Error::config(
            file("transformer"),
            "encoder_hidden_size",
            format!(
                "{} ≠ text encoder hidden_size {}",
                tc.encoder_hidden_size, text.text_encoder.config.hidden_size
            ),
        ));
    }
    if vq.config.num_vq_embeddings != tc.codebook_size {
        return Err(Error::config(
            vq_file,
            "num_vq_embeddings",
            format!(
                "{} ≠ transformer codebook_size {}",
                vq.config.num_vq_embeddings, tc.codebook_size
            ),
        ));
    }
    if s.mask_token_id as usize >= tc.vocab_size || (s.mask_token_id as usize) < tc.codebook_size {
        return Err(Error::config(
            folder.root.join("scheduler/scheduler_config.json"),
            "mask_token_id",
            format!(
                "{} is not a non-code id below vocab_size {}",
                s.mask_token_id, tc.vocab_size
            ),
        ));
    }
    Ok(())
}

/// A super-resolution stage fits its base: it is conditioned on the base's token grid and codes.
fn check_stages(base: &UVit2DModel, base_mask: u32, sr: &SuperResPipeline) -> Result<()> {
    let c = &sr.transformer.config;
    let file = sr.folder.root.join("transformer/config.json");
    if c.low_res_codebook_size != base.config.codebook_size {
        return Err(Error::config(
            file,
            "low_res_codebook_size",
            format!(
                "{} ≠ the base transformer's codebook_size {}",
                c.low_res_codebook_size, base.config.codebook_size
            ),
        ));
    }
    if sr.scheduler.mask_token_id != base_mask {
        return Err(Error::config(
            sr.folder.root.join("scheduler/scheduler_config.json"),
            "mask_token_id",
            format!(
                "{} ≠ the base scheduler's mask_token_id {base_mask}",
                sr.scheduler.mask_token_id
            ),
        ));
    }
    if !c.uvit.sample_size.is_multiple_of(c.low_res_sample_size) {
        return Err(Error::config(
            file,
            "sample_size",
            format!(
                "{} is not a multiple of low_res_sample_size {}",
                c.uvit.sample_size, c.low_res_sample_size
            ),
        ));
    }
    if c.low_res_sample_size != base.config.sample_size {
        return Err(Error::config(
            file,
            "low_res_sample_size",
            format!(
                "{} ≠ the base transformer's sample_size {}",
                c.low_res_sample_size, base.config.sample_size
            ),
        ));
    }
    Ok(())
}
