//! Muse's super-resolution stage for aMUSEd-format models (Chang et al. 2023, *Muse*, §2.4 and
//! Fig. 4, <https://arxiv.org/abs/2301.00704>): a transformer that predicts the high-resolution
//! tokens of an image from the base model's low-resolution tokens and the prompt. No released
//! weights of such a stage exist; this is tessera's own format, trained by `tools/train`
//! (`train_super_res.py`), with the PyTorch reference in `tools/train/super_res_model.py` that
//! the parity fixtures come from.
//!
//! Architecture (the paper's, built from aMUSEd's blocks):
//! - **low-resolution encoder** (`low_res_encoder.*`): the low-res token ids `[B, lh, lw]` are
//!   embedded (`embeddings`, never masked) plus a learned position table
//!   (`position_embeddings`), pass through `low_res_num_layers` pre-norm transformer layers
//!   (diffusers `BasicTransformerBlock` with `norm_type = "layer_norm"`, self-attention only,
//!   GEGLU feed-forward, biases everywhere), a final `norm_out` and `proj_out` to the text
//!   encoder's width;
//! - **high-resolution transformer**: a diffusers `UVit2DModel` (every weight under its own
//!   name) whose cross-attention context is the text hidden states with the low-res encoder's
//!   outputs appended along the sequence (`[B, 77 + lh·lw, encoder_hidden_size]`), and whose token
//!   embeddings get a learned position table (`position_embeddings.weight`
//!   `[sample_size², block_out_channels]`) so that a high-res token can find its low-res
//!   neighbours.
//!
//! Classifier-free guidance: the unconditional rows pair the negative prompt's text with the
//! same low-resolution tokens (only the text is dropped).
//!
//! Folder layout (`<model>/super_res/`, beside the base `AmusedPipeline` that diffusers loads
//! and that ignores this folder): `model_index.json` (`_class_name`
//! `"TesseraSuperResPipeline"`), `transformer/{config.json, diffusion_pytorch_model.safetensors}`
//! (`_class_name` `"SuperResTransformer"`: every `UVit2DModel` key plus the `low_res_*` keys of
//! [`Config`]), `scheduler/scheduler_config.json` (an `AmusedScheduler`'s), and an optional
//! `tessera.json` of generation defaults (`steps`, 8 without one, as in the paper, and
//! `choice_temperature`; guidance is the base stage's, so a `guidance_scale` or
//! `guidance_schedule` there is refused). The stage
//! decodes with the base pipeline's `vqvae` at its own, larger token grid: there is no second VQ.

use std::path::Path;

use serde::Deserialize;

use super::uvit2d::{self, Conditioning, PreparedConditioning, UVit2DModel};
use super::{GenerationDefaults, SchedulerConfig};
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, Recorder, Tensor};
use crate::io::{Loader, ModelFolder, files, read_config};
use crate::models::nn::{Attention, Linear, Norm};
use crate::ops;
use crate::ops::matmul::Activation;

/// The `_class_name` of `super_res/model_index.json`.
pub const PIPELINE_CLASS: &str = "TesseraSuperResPipeline";

/// Steps of the stage when its folder gives none (the paper's 8).
pub const DEFAULT_STEPS: usize = 8;

/// `super_res/transformer/config.json`: a `UVit2DModel` config (its `sample_size` is the
/// high-res token grid's side) plus the low-resolution encoder's sizes.
#[derive(Clone, Debug, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    pub uvit: uvit2d::Config,
    /// Side of the low-res token grid (the base model's).
    pub low_res_sample_size: usize,
    /// Codes of the low-res tokens (the base model's codebook).
    pub low_res_codebook_size: usize,
    pub low_res_hidden_size: usize,
    pub low_res_num_layers: usize,
    pub low_res_num_attention_heads: usize,
    pub low_res_intermediate_size: usize,
}

impl Config {
    /// The UVit2D checks plus the encoder's sizes; `file` names the config in errors.
    pub fn validate(&self, file: &Path) -> Result<()> {
        self.uvit.validate(file)?;
        let positive = [
            ("sample_size", self.uvit.sample_size),
            ("low_res_sample_size", self.low_res_sample_size),
            ("low_res_codebook_size", self.low_res_codebook_size),
            ("low_res_hidden_size", self.low_res_hidden_size),
            (
                "low_res_num_attention_heads",
                self.low_res_num_attention_heads,
            ),
            ("low_res_intermediate_size", self.low_res_intermediate_size),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(Error::config(file, key, "must be at least 1"));
            }
        }
        if !self
            .low_res_hidden_size
            .is_multiple_of(self.low_res_num_attention_heads)
        {
            return Err(Error::config(
                file,
                "low_res_num_attention_heads",
                format!(
                    "must divide low_res_hidden_size {}",
                    self.low_res_hidden_size
                ),
            ));
        }
        Ok(())
    }

    /// The high-res token grid (height, width).
    pub fn grid(&self) -> (usize, usize) {
        (self.uvit.sample_size, self.uvit.sample_size)
    }

    /// The low-res token grid (height, width) it is conditioned on.
    pub fn low_res_grid(&self) -> (usize, usize) {
        (self.low_res_sample_size, self.low_res_sample_size)
    }
}

/// One layer of the low-res encoder: diffusers `BasicTransformerBlock` with
/// `norm_type = "layer_norm"` and no cross-attention (`norm1` → `attn1` → +x, `norm3` → GEGLU
/// `ff` → +x).
struct LowResLayer {
    norm1: Norm,
    attn1: Attention,
    norm3: Norm,
    ff_proj: Linear,
    ff_out: Linear,
}

impl LowResLayer {
    fn new(l: &Loader<'_>, c: &Config) -> Result<Self> {
        let (d, heads, eps) = (
            c.low_res_hidden_size,
            c.low_res_num_attention_heads,
            c.uvit.layer_norm_eps,
        );
        Ok(Self {
            norm1: Norm::layer(&l.pp("norm1"), d, eps, true, true)?,
            attn1: Attention::self_attention(&l.pp("attn1"), d, heads, d / heads, true, true)?,
            norm3: Norm::layer(&l.pp("norm3"), d, eps, true, true)?,
            ff_proj: Linear::new(
                &l.pp("ff.net.0.proj"),
                d,
                2 * c.low_res_intermediate_size,
                true,
            )?,
            ff_out: Linear::new(&l.pp("ff.net.2"), c.low_res_intermediate_size, d, true)?,
        })
    }

    fn forward(&self, rec: &mut Recorder<'_>, x: &Tensor) -> Result<Tensor> {
        let n = self.norm1.forward(rec, x)?;
        let x = self.attn1.forward(rec, &n, None, Some(x))?;
        let n = self.norm3.forward(rec, &x)?;
        let f = self.ff_proj.forward_gated(rec, &n, Activation::GeluErf)?;
        self.ff_out.forward_residual(rec, &f, Some(&x))
    }
}

/// `low_res_encoder.*`: low-res token ids → states that join the text in cross-attention.
struct LowResEncoder {
    embeddings: Tensor,
    /// `[1, lh·lw, low_res_hidden_size]`.
    position_embeddings: Tensor,
    layers: Vec<LowResLayer>,
    norm_out: Norm,
    proj_out: Linear,
    grid: (usize, usize),
    codebook: usize,
}

impl LowResEncoder {
    fn new(l: &Loader<'_>, c: &Config) -> Result<Self> {
        let d = c.low_res_hidden_size;
        let n = c.low_res_sample_size * c.low_res_sample_size;
        Ok(Self {
            embeddings: l.tensor("embeddings.weight", &[c.low_res_codebook_size, d])?,
            position_embeddings: l
                .tensor("position_embeddings.weight", &[n, d])?
                .reshape(&[1, n, d])?,
            layers: (0..c.low_res_num_layers)
                .map(|i| LowResLayer::new(&l.pp("layers").pp(i), c))
                .collect::<Result<_>>()?,
            norm_out: Norm::layer(&l.pp("norm_out"), d, c.uvit.layer_norm_eps, true, true)?,
            proj_out: Linear::new(&l.pp("proj_out"), d, c.uvit.encoder_hidden_size, true)?,
            grid: c.low_res_grid(),
            codebook: c.low_res_codebook_size,
        })
    }

    /// ids u32 `[b, lh, lw]` → `[times·b, lh·lw, encoder_hidden_size]`, row `r` encoding the
    /// grid of image `r mod b` (both halves of a guided batch see the same low-res tokens).
    fn forward(&self, rec: &mut Recorder<'_>, ids: &Tensor, times: usize) -> Result<Tensor> {
        let [b, h, w] = *ids.shape() else {
            return Err(Error::shape(
                "super-res low-res encoder",
                format!("low-res tokens {:?} are not [B, h, w]", ids.shape()),
            ));
        };
        if (h, w) != self.grid {
            return Err(Error::shape(
                "super-res low-res encoder",
                format!(
                    "low-res tokens are {h}×{w}; this stage is conditioned on {}×{}",
                    self.grid.0, self.grid.1
                ),
            ));
        }
        let x = ops::embed::embedding_repeated(
            rec,
            &ids.reshape(&[b, h * w])?,
            &self.embeddings,
            times,
        )?;
        let mut x = ops::elementwise::add(rec, &x, &self.position_embeddings)?;
        for layer in &self.layers {
            x = layer.forward(rec, &x)?;
        }
        let x = self.norm_out.forward(rec, &x)?;
        self.proj_out.forward(rec, &x)
    }
}

/// `super_res/transformer`: low-res tokens + text → logits over the high-res tokens' codes.
pub struct SuperResTransformer {
    pub config: Config,
    /// The high-res transformer (every `UVit2DModel` weight under its diffusers name).
    pub uvit: UVit2DModel,
    /// `position_embeddings.weight` as `[1, h·w, block_out_channels]`.
    position_embeddings: Tensor,
    low_res_encoder: LowResEncoder,
}

impl SuperResTransformer {
    /// Loads `config.json` and the weights of a `super_res/transformer/` folder.
    pub fn load(ctx: &GpuContext, dir: &Path) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let config: Config = read_config(&cfg_path)?;
        config.validate(&cfg_path)?;
        Loader::load_component(ctx, dir, &["diffusion_pytorch_model", "model"], true, |l| {
            Self::new(l, &config)
        })
    }

    /// Builds the model from any loader.
    pub fn new(l: &Loader<'_>, c: &Config) -> Result<Self> {
        let n = c.uvit.sample_size * c.uvit.sample_size;
        let ch = c.uvit.block_out_channels;
        Ok(Self {
            config: c.clone(),
            uvit: UVit2DModel::new(l, &c.uvit)?,
            position_embeddings: l
                .tensor("position_embeddings.weight", &[n, ch])?
                .reshape(&[1, n, ch])?,
            low_res_encoder: LowResEncoder::new(&l.pp("low_res_encoder"), c)?,
        })
    }

    /// The step-invariant part of a forward pass: the low-res encoder over `low_res` u32
    /// `[b, lh, lw]`, its states appended to each row's text (`cond.hidden` `[B, L, E]`, `B` a
    /// multiple of `b`; row `r` takes image `r mod b`'s low-res tokens), then
    /// [`UVit2DModel::prepare`] on that context.
    ///
    /// # Errors
    /// Low-res ids outside the codebook (checked by the caller for host ids), shapes that do
    /// not agree; GPU failures.
    pub fn prepare(
        &self,
        rec: &mut Recorder<'_>,
        cond: &Conditioning<'_>,
        low_res: &Tensor,
    ) -> Result<PreparedConditioning> {
        let rows = cond.hidden.shape().first().copied().unwrap_or(0);
        let b = low_res.shape().first().copied().unwrap_or(0);
        if b == 0 || rows == 0 || !rows.is_multiple_of(b) {
            return Err(Error::shape(
                "super-res transformer",
                format!(
                    "{b} low-res grids for {rows} rows of text conditioning {:?}",
                    cond.hidden.shape()
                ),
            ));
        }
        let lr = self.low_res_encoder.forward(rec, low_res, rows / b)?;
        let context = ops::layout::concat(rec, &[cond.hidden, &lr], 1)?;
        self.uvit.prepare(
            rec,
            &Conditioning {
                pooled: cond.pooled,
                hidden: &context,
                micro_conds: cond.micro_conds,
            },
        )
    }

    /// High-res tokens u32 `[b, h, w]` (mask id allowed) → logits `[B, h·w, codebook_size]` for
    /// the `B` rows of `prepared` (as [`UVit2DModel::forward_prepared`]).
    pub fn forward_prepared(
        &self,
        rec: &mut Recorder<'_>,
        tokens: &Tensor,
        prepared: &PreparedConditioning,
    ) -> Result<Tensor> {
        self.uvit
            .forward_positioned(rec, tokens, prepared, Some(&self.position_embeddings))
    }

    /// Codes of the low-res tokens the stage takes.
    pub fn low_res_codebook_size(&self) -> usize {
        self.low_res_encoder.codebook
    }
}

/// `<model>/super_res/`: the super-resolution stage of a two-stage aMUSEd model.
pub struct SuperResPipeline {
    pub folder: ModelFolder,
    pub transformer: SuperResTransformer,
    pub scheduler: SchedulerConfig,
    /// `super_res/tessera.json`; its steps default to [`DEFAULT_STEPS`].
    pub defaults: GenerationDefaults,
}

impl SuperResPipeline {
    /// The stage's folder under a base pipeline folder, when there is one.
    pub fn folder_of(base: &ModelFolder) -> Option<std::path::PathBuf> {
        let dir = base.root.join("super_res");
        files::is_file(&dir.join("model_index.json")).then_some(dir)
    }

    /// Loads `dir` (`<model>/super_res`): its `model_index.json` must name
    /// [`PIPELINE_CLASS`].
    pub fn load(ctx: &GpuContext, dir: &Path) -> Result<Self> {
        let folder = ModelFolder::open(dir)?;
        let index_path = dir.join("model_index.json");
        let index: serde_json::Value = read_config(&index_path)?;
        let class = index.get("_class_name").and_then(|v| v.as_str());
        if class != Some(PIPELINE_CLASS) {
            return Err(Error::config(
                &index_path,
                "_class_name",
                format!("{class:?} is not {PIPELINE_CLASS:?}"),
            ));
        }
        if files::is_dir(&dir.join("vqvae")) {
            return Err(Error::file(
                dir.join("vqvae"),
                "a second VQ for the super-resolution stage is not supported: the stage decodes \
                 with the base pipeline's vqvae",
            ));
        }
        let transformer = SuperResTransformer::load(ctx, &folder.component("transformer")?)?;
        let sched_path = folder.component("scheduler")?.join("scheduler_config.json");
        let scheduler: SchedulerConfig = read_config(&sched_path)?;
        let mut defaults = GenerationDefaults::read(&folder)?;
        if defaults.guidance_scale.is_some() || defaults.guidance_schedule.is_some() {
            return Err(Error::file(
                folder.root.join(GenerationDefaults::FILE),
                "guidance_scale and guidance_schedule belong in the base folder's tessera.json: \
                 the super-resolution stage runs with the base stage's guidance",
            ));
        }
        defaults.steps.get_or_insert(DEFAULT_STEPS);
        Ok(Self {
            folder,
            transformer,
            scheduler,
            defaults,
        })
    }
}
