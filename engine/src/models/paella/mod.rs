//! Paella (Rampas et al., dome272/Paella): a convolutional generator that re-samples every
//! token of a grid at each step and re-noises towards the initial random tokens. Two released
//! generations: v1 (`DenoiseUNet`, ruDALL-E's Gumbel VQGAN f8, a CLIP ViT-g text embedding)
//! and v3 (`Paella`, its own f4 VQGAN, ByT5-XL token states and a CLIP ViT-H text embedding).
//!
//! A Paella folder holds the released files under any names; which is which is read from
//! their keys: a generator (`byt5_mapper.weight`: v3's `paella_v3.pt`;
//! `down_blocks.0.0.cond_mapper.weight`: v1's `model_600000.pt`), its VQGAN
//! (`vquantizer.codebook.weight`: `vqgan_f4.pt`; `quantize.embed.weight`:
//! `vqgan.gumbelf8-sber.model.ckpt`), and the text encoders in transformers layout in `byt5/`
//! (v3) and `clip/` (or, when missing, the official hub ids from the local Hugging Face cache).
//! An optional `tessera.json` gives what a v3 state dict does not store:
//! `{"nhead": [..], "self_attn": ..}`.

pub mod denoise_unet;
pub mod gumbel_vq;
pub mod modules;
mod resample;
pub mod vqgan;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::gpu::{GpuContext, Recorder, Tensor};
use crate::io::{Checkpoint, Loader, files, read_config, resolve_dir};
use crate::models::clip_text::ClipTextModel;
use crate::models::clip_tokenizer::ClipTokenizer;
use crate::models::t5::{T5Encoder, byt5_ids};
use crate::ops;
use crate::sampling::{GuidanceSchedule, SamplerOptions, Step, TokenModel};

/// ByT5 token limit of the official pipelines (`max_length=768`, truncation).
pub const BYT5_MAX_LENGTH: usize = 768;

/// The hub ids the official code loads its text encoders from.
pub const BYT5_HUB_ID: &str = "google/byt5-xl";
pub const CLIP_V3_HUB_ID: &str = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K";

/// A checkpoint whose layout is not the model's, named with its file.
pub(crate) fn layout_error(ckpt: &Checkpoint, msg: impl std::fmt::Display) -> Error {
    Error::shape("load", format!("{}: {msg}", ckpt.describe()))
}

/// Numeric children of `prefix.` in the checkpoint (`down_blocks` → {0, 1, 2}).
pub(crate) fn indices(ckpt: &Checkpoint, prefix: &str) -> BTreeSet<usize> {
    let p = format!("{prefix}.");
    ckpt.names()
        .filter_map(|n| n.strip_prefix(&p))
        .filter_map(|rest| rest.split('.').next()?.parse().ok())
        .collect()
}

/// The shape of `name`, which must have `rank` dims.
pub(crate) fn shape_of<'a>(ckpt: &'a Checkpoint, name: &str, rank: usize) -> Result<&'a [usize]> {
    match ckpt.shape(name) {
        Some(s) if s.len() == rank => Ok(s),
        Some(s) => Err(layout_error(
            ckpt,
            format!("{name} is {s:?}, expected rank {rank}"),
        )),
        None => Err(layout_error(ckpt, format!("tensor {name} is missing"))),
    }
}

/// What a checkpoint file of a Paella folder holds, from its keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The v3 generator (`Paella`).
    GeneratorV3,
    /// The v1 generator (`DenoiseUNet`).
    GeneratorV1,
    /// The v3 f4 VQGAN.
    VqganF4,
    /// ruDALL-E's Gumbel VQGAN f8 (v1).
    GumbelVq,
    /// v3's CLIP-embedding prior (`PriorModel`).
    Prior,
}

impl Part {
    fn of_keys(keys: &[String]) -> Option<Part> {
        let has = |k: &str| keys.iter().any(|n| n == k);
        if has("byt5_mapper.weight") {
            Some(Part::GeneratorV3)
        } else if has("down_blocks.0.0.cond_mapper.weight") {
            Some(Part::GeneratorV1)
        } else if has("vquantizer.codebook.weight") {
            Some(Part::VqganF4)
        } else if has("quantize.embed.weight") {
            Some(Part::GumbelVq)
        } else if has("blocks.0.weight") && has("blocks.1.0.weight") {
            Some(Part::Prior)
        } else {
            None
        }
    }
}

/// The checkpoint files directly in `dir` and what each holds (files of other kinds skipped).
fn parts(dir: &Path) -> Result<Vec<(PathBuf, Part)>> {
    let mut files: Vec<PathBuf> = files::list(dir)
        .map_err(|e| Error::file(dir, e.to_string()))?
        .into_iter()
        .filter(|p| {
            files::is_file(p)
                && p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| matches!(e, "pt" | "pth" | "ckpt" | "bin" | "safetensors"))
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        if let Some(part) = Part::of_keys(&Checkpoint::keys(&f)?) {
            out.push((f, part));
        }
    }
    Ok(out)
}

/// Whether `dir` is a Paella folder: a directory without `model_index.json` (so not a diffusers
/// folder) holding checkpoint files (`.pt`, `.pth`, `.ckpt`, `.bin`, `.safetensors`); which
/// file is which is decided when it is opened ([`PaellaPipeline::load`]), by their keys.
pub fn is_paella_folder(dir: &Path) -> bool {
    files::is_dir(dir)
        && !files::is_file(&dir.join("model_index.json"))
        && files::list(dir).is_ok_and(|entries| {
            entries.iter().any(|e| {
                files::is_file(e)
                    && e.extension()
                        .and_then(|x| x.to_str())
                        .is_some_and(is_checkpoint_ext)
            })
        })
}

fn is_checkpoint_ext(ext: &str) -> bool {
    matches!(ext, "pt" | "pth" | "ckpt" | "bin" | "safetensors")
}

/// `tessera.json` in a Paella folder: settings a state dict does not hold.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Attention heads per level (the official constructor's `nhead`, −1 where a level has no
    /// attention; default width / 80).
    pub nhead: Option<Vec<i64>>,
    /// Image tokens attend to themselves too (default true, as released).
    pub self_attn: Option<bool>,
}

/// The noise-level embedding of the official `gen_r_embedding`, in its f32 arithmetic:
/// `r·10000`, frequencies `exp(−k·ln(10000)/(half − 1))`, `[sin | cos]` (zero-padded to an odd
/// width). Returns `[r.len(), dim]` row-major.
pub fn r_embedding(r: &[f32], dim: usize) -> Vec<f32> {
    let half = dim / 2;
    let step = (10000f64.ln() / (half.max(2) - 1) as f64) as f32;
    let freqs: Vec<f32> = (0..half).map(|k| (k as f32 * -step).exp()).collect();
    let mut out = Vec::with_capacity(r.len() * dim);
    for &ri in r {
        let x = ri * 10000.0;
        let args: Vec<f32> = freqs.iter().map(|f| x * f).collect();
        out.extend(args.iter().map(|a| a.sin()));
        out.extend(args.iter().map(|a| a.cos()));
        if dim % 2 == 1 {
            out.push(0.0);
        }
    }
    out
}

/// A text encoder folder: `sub` in the model folder, else the hub id from the local cache.
fn encoder_dir(root: &Path, sub: &str, hub_id: &str) -> Result<PathBuf> {
    let local = root.join(sub);
    if files::is_dir(&local) {
        return Ok(local);
    }
    resolve_dir(hub_id).map_err(|_| {
        Error::file(
            &local,
            format!(
                "missing: Paella needs its {sub} text encoder here (transformers layout) or \
                 {hub_id} in the Hugging Face cache"
            ),
        )
    })
}

/// The prompt's embeddings as the generator takes them.
pub struct TextConditioning {
    /// ByT5 ids and `last_hidden_state` `[1, T, d]` (v3 only).
    pub byt5: Option<(Vec<u32>, Tensor)>,
    pub clip_ids: Vec<u32>,
    /// CLIP `text_embeds` `[1, projection_dim]`.
    pub clip: Tensor,
}

/// Paella's two released generations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// The first paper version: `DenoiseUNet`, the Sber Gumbel VQGAN f8, CLIP ViT-g text.
    V1,
    /// Paper v2 / the LAION release: `Paella`, the f4 VQGAN, ByT5-XL + CLIP ViT-H text.
    V3,
}

/// The generator of either version.
pub enum Generator {
    V1(Box<denoise_unet::DenoiseUNet>),
    V3(Box<modules::Paella>),
}

/// The VQGAN of either version.
pub enum Vq {
    /// v1: pixels in [−1, 1].
    Gumbel(Box<gumbel_vq::GumbelVq>),
    /// v3: pixels in [0, 1].
    F4(Box<vqgan::VqModel>),
}

impl Vq {
    /// Pixels per token side.
    pub fn scale_factor(&self) -> usize {
        match self {
            Vq::Gumbel(v) => v.config.scale_factor(),
            Vq::F4(v) => v.config.scale_factor(),
        }
    }

    pub fn codebook_size(&self) -> usize {
        match self {
            Vq::Gumbel(v) => v.config.n_embed,
            Vq::F4(v) => v.config.codebook_size,
        }
    }

    /// Code ids u32 `[B, h, w]` → the decoder's raw image `[B, 3, H, W]`.
    pub fn decode(&self, rec: &mut Recorder<'_>, ids: &Tensor) -> Result<Tensor> {
        match self {
            Vq::Gumbel(v) => v.decode(rec, ids),
            Vq::F4(v) => v.decode(rec, ids),
        }
    }

    /// Image `[B, 3, H, W]` in [0, 1] → code ids u32 `[B, h, w]`.
    pub fn encode(&self, rec: &mut Recorder<'_>, image: &Tensor) -> Result<Tensor> {
        match self {
            Vq::Gumbel(v) => v.encode(rec, image),
            Vq::F4(v) => v.encode(rec, image),
        }
    }

    /// The raw decoder output's value for black and for white: (0, 1), or (−1, 1) for v1.
    pub fn output_range(&self) -> (f32, f32) {
        match self {
            Vq::Gumbel(_) => (-1.0, 1.0),
            Vq::F4(_) => (0.0, 1.0),
        }
    }
}

/// Every component of a Paella folder.
pub struct PaellaPipeline {
    pub root: PathBuf,
    pub version: Version,
    pub generator: Generator,
    pub vq: Vq,
    /// v3 only.
    pub byt5: Option<T5Encoder>,
    pub clip_tokenizer: ClipTokenizer,
    pub clip: ClipTextModel,
}

/// The hub id of the CLIP text tower each version uses.
pub const CLIP_V1_HUB_ID: &str = "laion/CLIP-ViT-g-14-laion2B-s12B-b42K";

fn mismatch(path: &Path, what: String) -> Error {
    Error::file(path, what)
}

impl PaellaPipeline {
    /// Opens a Paella folder (see the module docs).
    ///
    /// # Errors
    /// A folder without a generator or without its VQGAN, missing text encoders, tensors
    /// missing or of the wrong shape (the message names the file and the key), parts that do
    /// not fit each other.
    pub fn load(ctx: &GpuContext, root: &Path) -> Result<Self> {
        let found = parts(root)?;
        let find = |part: Part| {
            found
                .iter()
                .find(|(_, p)| *p == part)
                .map(|(f, _)| f.clone())
        };
        let (version, gen_path) = match (find(Part::GeneratorV3), find(Part::GeneratorV1)) {
            (Some(p), _) => (Version::V3, p),
            (None, Some(p)) => (Version::V1, p),
            (None, None) => {
                return Err(Error::file(
                    root,
                    "no Paella generator checkpoint (v3: paella_v3.pt, v1: model_600000.pt)",
                ));
            }
        };
        let (vq_part, vq_hint) = match version {
            Version::V3 => (Part::VqganF4, "v3: vqgan_f4.pt, keys vquantizer.*"),
            Version::V1 => (
                Part::GumbelVq,
                "v1: vqgan.gumbelf8-sber.model.ckpt, keys quantize.*",
            ),
        };
        let vq_path = find(vq_part).ok_or_else(|| {
            Error::file(
                root,
                format!("no VQGAN checkpoint beside the generator ({vq_hint})"),
            )
        })?;
        let clip_dir = match version {
            Version::V3 => encoder_dir(root, "clip", CLIP_V3_HUB_ID)?,
            Version::V1 => encoder_dir(root, "clip", CLIP_V1_HUB_ID)?,
        };
        let byt5_dir = match version {
            Version::V3 => Some(encoder_dir(root, "byt5", BYT5_HUB_ID)?),
            Version::V1 => None,
        };
        let clip_tokenizer = ClipTokenizer::from_dir(&clip_dir)?;
        let clip = ClipTextModel::load(ctx, &clip_dir)?;
        let clip_dim = clip.config.projection_dim;
        let ckpt = Checkpoint::open(std::slice::from_ref(&gen_path))?;
        let (generator, num_labels) = match version {
            Version::V3 => {
                let settings: Settings = if files::is_file(&root.join("tessera.json")) {
                    read_config(&root.join("tessera.json"))?
                } else {
                    Settings::default()
                };
                let nhead: Option<Vec<usize>> = settings
                    .nhead
                    .as_ref()
                    .map(|h| h.iter().map(|&n| usize::try_from(n).unwrap_or(0)).collect());
                let config = modules::Config::infer(
                    &ckpt,
                    nhead.as_deref(),
                    settings.self_attn.unwrap_or(true),
                )?;
                if config.clip_embd != clip_dim {
                    return Err(mismatch(
                        &clip_dir,
                        format!(
                            "CLIP text embeddings are {clip_dim}-d; the generator's clip_mapper \
                             takes {}",
                            config.clip_embd
                        ),
                    ));
                }
                let g = Loader::load(ctx, &ckpt, true, |l| modules::Paella::new(l, &config))?;
                (Generator::V3(Box::new(g)), config.num_labels)
            }
            Version::V1 => {
                let config = denoise_unet::Config::infer(&ckpt)?;
                if config.c_cond <= clip_dim {
                    return Err(mismatch(
                        &clip_dir,
                        format!(
                            "CLIP text embeddings are {clip_dim}-d; the generator's condition is \
                             {}-d (CLIP + noise level)",
                            config.c_cond
                        ),
                    ));
                }
                let g = Loader::load(ctx, &ckpt, true, |l| {
                    denoise_unet::DenoiseUNet::new(l, &config)
                })?;
                (Generator::V1(Box::new(g)), config.num_labels)
            }
        };
        drop(ckpt);
        let ckpt = Checkpoint::open(std::slice::from_ref(&vq_path))?;
        let vq = match version {
            Version::V3 => {
                let c = vqgan::Config::infer(&ckpt)?;
                Vq::F4(Box::new(Loader::load(ctx, &ckpt, false, |l| {
                    vqgan::VqModel::new(l, &c)
                })?))
            }
            Version::V1 => {
                let c = gumbel_vq::Config::infer(&ckpt)?;
                Vq::Gumbel(Box::new(Loader::load(ctx, &ckpt, false, |l| {
                    gumbel_vq::GumbelVq::new(l, &c)
                })?))
            }
        };
        if vq.codebook_size() != num_labels {
            return Err(mismatch(
                &vq_path,
                format!(
                    "codebook of {} codes; the generator predicts {num_labels}",
                    vq.codebook_size()
                ),
            ));
        }
        let byt5 = match (&byt5_dir, &generator) {
            (Some(dir), Generator::V3(g)) => {
                let t5 = T5Encoder::load(ctx, dir)?;
                if t5.config.d_model != g.config.byt5_embd {
                    return Err(mismatch(
                        dir,
                        format!(
                            "ByT5 states are {}-d; the generator's byt5_mapper takes {}",
                            t5.config.d_model, g.config.byt5_embd
                        ),
                    ));
                }
                Some(t5)
            }
            _ => None,
        };
        Ok(Self {
            root: root.to_path_buf(),
            version,
            generator,
            vq,
            byt5,
            clip_tokenizer,
            clip,
        })
    }

    /// A released configuration with synthetic weights ([`Checkpoint::synthetic`]): the
    /// generator and VQGAN in their published sizes; the text encoders are stand-ins of the
    /// published output widths (one small layer each), with `clip_tokenizer` for the prompt.
    /// For benchmarks of the generator and decoder at their real cost.
    ///
    /// # Errors
    /// GPU allocation failures.
    pub fn synthetic(
        ctx: &GpuContext,
        version: Version,
        clip_tokenizer: ClipTokenizer,
    ) -> Result<Self> {
        let ckpt = Checkpoint::synthetic(1);
        let clip_config = |projection_dim: usize| crate::models::clip_text::Config {
            vocab_size: 49408,
            hidden_size: 64,
            intermediate_size: 128,
            projection_dim,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            max_position_embeddings: 77,
            hidden_act: "gelu".into(),
            layer_norm_eps: 1e-5,
            eos_token_id: 2,
        };
        let clip = Loader::load(ctx, &ckpt, true, |l| {
            ClipTextModel::from_loader(l, &clip_config(1024))
        })?;
        let (generator, vq, byt5) = match version {
            Version::V3 => {
                let c = modules::Config::released();
                let g = Loader::load(ctx, &ckpt, true, |l| modules::Paella::new(l, &c))?;
                let vc = vqgan::Config::released();
                let v = Loader::load(ctx, &ckpt, false, |l| vqgan::VqModel::new(l, &vc))?;
                let tc = crate::models::t5::Config {
                    vocab_size: 384,
                    d_model: c.byt5_embd,
                    d_kv: 16,
                    d_ff: 64,
                    num_heads: 2,
                    num_layers: 1,
                    relative_attention_num_buckets: 32,
                    relative_attention_max_distance: 128,
                    layer_norm_epsilon: 1e-6,
                    feed_forward_proj: "gated-gelu".into(),
                };
                let t5 = Loader::load(ctx, &ckpt, true, |l| T5Encoder::from_loader(l, &tc))?;
                (Generator::V3(Box::new(g)), Vq::F4(Box::new(v)), Some(t5))
            }
            Version::V1 => {
                let c = denoise_unet::Config::released();
                let g = Loader::load(ctx, &ckpt, true, |l| denoise_unet::DenoiseUNet::new(l, &c))?;
                let vc = gumbel_vq::Config::released();
                let v = Loader::load(ctx, &ckpt, false, |l| gumbel_vq::GumbelVq::new(l, &vc))?;
                (Generator::V1(Box::new(g)), Vq::Gumbel(Box::new(v)), None)
            }
        };
        Ok(Self {
            root: PathBuf::from(format!("<synthetic Paella {version:?}>")),
            version,
            generator,
            vq,
            byt5,
            clip_tokenizer,
            clip,
        })
    }

    /// Codebook size (logit columns).
    pub fn num_labels(&self) -> usize {
        match &self.generator {
            Generator::V1(g) => g.config.num_labels,
            Generator::V3(g) => g.config.num_labels,
        }
    }

    /// What the token grid's sides must be multiples of.
    pub fn grid_multiple(&self) -> usize {
        match &self.generator {
            Generator::V1(g) => g.grid_multiple(),
            Generator::V3(g) => g.config.grid_multiple(),
        }
    }

    /// The published sampling settings: v3 `sample` (12 steps, temperature 1.0 → 0.2, CFG 8);
    /// v1 `sample` (12 steps, temperature 1, typical filtering 0.2, CFG 5).
    pub fn sampler_defaults(&self, mut o: SamplerOptions) -> SamplerOptions {
        o.steps = 12;
        if self.version == Version::V1 {
            o.softmax_temperature = (1.0, 1.0);
            o.typical_mass = Some(0.2);
        }
        o
    }

    pub fn default_guidance(&self) -> f32 {
        match self.version {
            Version::V1 => 5.0,
            Version::V3 => 8.0,
        }
    }

    /// ByT5 states (v3) and the CLIP text embedding of `prompt` (official `embed_clip` / ByT5
    /// with `padding="longest"` on one caption: no padding, no attention mask).
    ///
    /// # Errors
    /// Tokenizer and GPU failures.
    pub fn embed(&self, rec: &mut Recorder<'_>, prompt: &str) -> Result<TextConditioning> {
        let byt5 = match &self.byt5 {
            Some(t5) => {
                let ids = byt5_ids(prompt, BYT5_MAX_LENGTH);
                let states = t5.forward(rec, &ids)?;
                Some((ids, states))
            }
            None => None,
        };
        // open_clip's tokenize pads with 0 after the end token (the pooled embedding, read at
        // the end token under a causal mask, does not depend on the padding).
        let mut clip_ids = self.clip_tokenizer.encode(prompt)?;
        if let Some(end) = clip_ids
            .iter()
            .position(|&t| t == self.clip_tokenizer.eos_id)
        {
            clip_ids[end + 1..].fill(0);
        }
        let clip = self.clip.forward(rec, &clip_ids, 1)?.pooled;
        Ok(TextConditioning {
            byt5,
            clip_ids,
            clip,
        })
    }

    /// The generator with `prompt` (and, when `guidance` ≠ 1, the unconditional branch)
    /// prepared for `batch` grids. The unconditional branch: v3 the negative prompt's
    /// embeddings (the empty prompt's by default); v1 an all-zero text embedding, as
    /// published, or the negative prompt's when one is given.
    ///
    /// # Errors
    /// Text encoder and GPU failures.
    pub fn guided(
        &self,
        ctx: &GpuContext,
        prompt: &str,
        negative_prompt: &str,
        batch: usize,
        (guidance, schedule): (f32, GuidanceSchedule),
        grid: (usize, usize),
    ) -> Result<GuidedPaella<'_>> {
        let mut rec = ctx.recorder();
        let mut prepare = |text: Option<&str>| -> Result<Condition> {
            let t = match text {
                Some(text) => Some(self.embed(&mut rec, text)?),
                None => None,
            };
            Ok(match &self.generator {
                Generator::V3(g) => {
                    let t = t.ok_or_else(|| Error::shape("paella", "v3 needs a text condition"))?;
                    let (_, states) = t
                        .byt5
                        .ok_or_else(|| Error::shape("paella", "v3 needs ByT5 states"))?;
                    let byt5 = ops::embed::repeat_rows(&mut rec, &states, batch)?;
                    let clip = ops::embed::repeat_rows(&mut rec, &t.clip, batch)?;
                    Condition::V3(g.prepare(&mut rec, &byt5, &clip)?)
                }
                Generator::V1(_) => {
                    let clip = match t {
                        Some(t) => ops::embed::repeat_rows(&mut rec, &t.clip, batch)?,
                        None => {
                            let d = self.clip.config.projection_dim;
                            ops::layout::zeros(&mut rec, &[batch, d])?
                        }
                    };
                    Condition::V1(clip)
                }
            })
        };
        let cond = prepare(Some(prompt))?;
        let uncond = if guidance != 1.0 {
            let negative = if self.version == Version::V1 && negative_prompt.is_empty() {
                None
            } else {
                Some(negative_prompt)
            };
            Some(prepare(negative)?)
        } else {
            None
        };
        rec.submit();
        Ok(GuidedPaella {
            pipe: self,
            cond,
            uncond,
            guidance,
            schedule,
            grid,
        })
    }
}

/// A prepared condition of either generator.
enum Condition {
    V1(Tensor),
    V3(modules::Prepared),
}

/// The generator under fixed conditions: the sampler's model. Step i of n runs the official
/// noise level — v3 `r = 1 − i/n` (`linspace(1, 0, n + 1)`), v1 `r = i/n` (`linspace(0, 1,
/// n + 1)`, the model embedding γ(r) = cos(r·π/2)) — and re-noises with v3's `t` or v1's γ;
/// with guidance s the logits are `s·cond + (1 − s)·uncond` (`lerp(uncond, cond, s)`), the
/// branches run apart (v3's conditions differ in length).
pub struct GuidedPaella<'a> {
    pipe: &'a PaellaPipeline,
    cond: Condition,
    uncond: Option<Condition>,
    guidance: f32,
    schedule: GuidanceSchedule,
    grid: (usize, usize),
}

impl GuidedPaella<'_> {
    fn branch(
        &self,
        rec: &mut Recorder<'_>,
        tokens: &Tensor,
        r: f32,
        c: &Condition,
    ) -> Result<Tensor> {
        match (&self.pipe.generator, c) {
            (Generator::V3(g), Condition::V3(p)) => g.forward(rec, tokens, r, p),
            (Generator::V1(g), Condition::V1(clip)) => g.forward(rec, tokens, clip, r),
            _ => Err(Error::shape("paella", "condition of the other version")),
        }
    }

    /// Logits at the official noise level `r` of the model's version, guided with scale `s`
    /// (1: the conditional branch alone, the unconditional one not run).
    ///
    /// # Errors
    /// Shapes; GPU failures.
    pub fn logits_at(
        &self,
        rec: &mut Recorder<'_>,
        tokens: &Tensor,
        r: f32,
        s: f32,
    ) -> Result<Tensor> {
        let cond = self.branch(rec, tokens, r, &self.cond)?;
        match &self.uncond {
            Some(u) if s != 1.0 => {
                let uncond = self.branch(rec, tokens, r, u)?;
                ops::elementwise::axpby(rec, s, &cond, 1.0 - s, &uncond)
            }
            _ => Ok(cond),
        }
    }
}

impl TokenModel for GuidedPaella<'_> {
    fn grid(&self) -> (usize, usize) {
        self.grid
    }

    fn codebook_size(&self) -> usize {
        self.pipe.num_labels()
    }

    /// Paella has no mask token: the sampler marks unknown positions with the first id past
    /// the codebook and replaces them with noise before the model sees them.
    fn mask_id(&self) -> u32 {
        self.pipe.num_labels() as u32
    }

    fn logits(&self, rec: &mut Recorder<'_>, tokens: &Tensor, step: Step) -> Result<Tensor> {
        let r = match self.pipe.version {
            Version::V3 => 1.0 - step.progress(),
            Version::V1 => step.progress(),
        };
        let s = self.schedule.scale(self.guidance, step);
        self.logits_at(rec, tokens, r, s)
    }

    fn noise_level(&self, step: Step) -> f32 {
        match self.pipe.version {
            Version::V3 => 1.0 - step.progress(),
            Version::V1 => (step.progress() * std::f32::consts::FRAC_PI_2).cos(),
        }
    }
}
