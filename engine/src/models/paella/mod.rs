//! Paella (Rampas et al., dome272/Paella): a convolutional generator that re-samples every
//! token of a grid at each step from noise level r = 1 down to 0, re-noising to the initial
//! random tokens; v3 conditions on ByT5-XL token states and an OpenCLIP text embedding.
//!
//! A Paella folder holds the released files under any names; which is which is read from
//! their keys: the v3 generator (`byt5_mapper.weight`, `paella_v3.pt`), its f4 VQGAN
//! (`vquantizer.codebook.weight`, `vqgan_f4.pt`), and the text encoders in transformers
//! layout in `byt5/` and `clip/` (or, when missing, `google/byt5-xl` and
//! `laion/CLIP-ViT-H-14-laion2B-s32B-b79K` from the local Hugging Face cache). An optional
//! `tessera.json` gives what a state dict does not store: `{"nhead": [..], "self_attn": ..}`.

pub mod modules;
pub mod vqgan;

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::gpu::{GpuContext, Recorder, Tensor};
use crate::io::{Checkpoint, Loader, read_config, resolve_dir};
use crate::models::clip_text::ClipTextModel;
use crate::models::clip_tokenizer::ClipTokenizer;
use crate::models::t5::{T5Encoder, byt5_ids};
use crate::ops;
use crate::sampling::{Step, TokenModel};

/// ByT5 token limit of the official pipelines (`max_length=768`, truncation).
pub const BYT5_MAX_LENGTH: usize = 768;

/// The hub ids the official code loads its text encoders from.
pub const BYT5_HUB_ID: &str = "google/byt5-xl";
pub const CLIP_V3_HUB_ID: &str = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K";

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
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::file(dir, e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
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
    dir.is_dir()
        && !dir.join("model_index.json").is_file()
        && std::fs::read_dir(dir).is_ok_and(|entries| {
            entries.filter_map(|e| e.ok()).any(|e| {
                e.path().is_file()
                    && e.path()
                        .extension()
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
    if local.is_dir() {
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

/// The prompt's embeddings as Paella v3 takes them.
pub struct TextConditioning {
    pub byt5_ids: Vec<u32>,
    /// ByT5 `last_hidden_state` `[1, T, d]`.
    pub byt5: Tensor,
    pub clip_ids: Vec<u32>,
    /// CLIP `text_embeds` `[1, projection_dim]`.
    pub clip: Tensor,
}

/// Every component of a Paella v3 folder.
pub struct PaellaPipeline {
    pub root: PathBuf,
    pub generator: modules::Paella,
    pub vqgan: vqgan::VqModel,
    pub byt5: T5Encoder,
    pub clip_tokenizer: ClipTokenizer,
    pub clip: ClipTextModel,
}

impl PaellaPipeline {
    /// Opens a Paella folder (see the module docs).
    ///
    /// # Errors
    /// A folder without a generator or a VQGAN, a v1 generator (not supported yet), missing
    /// text encoders, tensors missing or of the wrong shape (the message names the file and
    /// the key).
    pub fn load(ctx: &GpuContext, root: &Path) -> Result<Self> {
        let found = parts(root)?;
        let find = |part: Part| {
            found
                .iter()
                .find(|(_, p)| *p == part)
                .map(|(f, _)| f.clone())
        };
        if find(Part::GeneratorV3).is_none() && find(Part::GeneratorV1).is_some() {
            return Err(Error::file(
                root,
                "holds a Paella v1 generator (DenoiseUNet); tessera runs Paella v3 so far",
            ));
        }
        let gen_path = find(Part::GeneratorV3)
            .ok_or_else(|| Error::file(root, "no Paella generator checkpoint (paella_v3.pt)"))?;
        let vq_path = find(Part::VqganF4).ok_or_else(|| {
            Error::file(
                root,
                "no VQGAN checkpoint beside the generator (v3: vqgan_f4.pt, keys vquantizer.*)",
            )
        })?;
        let settings: Settings = if root.join("tessera.json").is_file() {
            read_config(&root.join("tessera.json"))?
        } else {
            Settings::default()
        };
        let byt5_dir = encoder_dir(root, "byt5", BYT5_HUB_ID)?;
        let clip_dir = encoder_dir(root, "clip", CLIP_V3_HUB_ID)?;
        let ckpt = Checkpoint::open(std::slice::from_ref(&gen_path))?;
        let nhead: Option<Vec<usize>> = settings
            .nhead
            .as_ref()
            .map(|h| h.iter().map(|&n| usize::try_from(n).unwrap_or(0)).collect());
        let config =
            modules::Config::infer(&ckpt, nhead.as_deref(), settings.self_attn.unwrap_or(true))?;
        let generator = Loader::load(ctx, &ckpt, true, |l| modules::Paella::new(l, &config))?;
        drop(ckpt);
        let ckpt = Checkpoint::open(std::slice::from_ref(&vq_path))?;
        let vq_config = vqgan::Config::infer(&ckpt)?;
        let vqgan = Loader::load(ctx, &ckpt, false, |l| vqgan::VqModel::new(l, &vq_config))?;
        if vq_config.codebook_size != config.num_labels {
            return Err(Error::file(
                &vq_path,
                format!(
                    "codebook of {} codes; the generator predicts {}",
                    vq_config.codebook_size, config.num_labels
                ),
            ));
        }
        let byt5 = T5Encoder::load(ctx, &byt5_dir)?;
        if byt5.config.d_model != config.byt5_embd {
            return Err(Error::file(
                &byt5_dir,
                format!(
                    "ByT5 states are {}-d; the generator's byt5_mapper takes {}",
                    byt5.config.d_model, config.byt5_embd
                ),
            ));
        }
        let clip_tokenizer = ClipTokenizer::from_dir(&clip_dir)?;
        let clip = ClipTextModel::load(ctx, &clip_dir)?;
        if clip.config.projection_dim != config.clip_embd {
            return Err(Error::file(
                &clip_dir,
                format!(
                    "CLIP text embeddings are {}-d; the generator's clip_mapper takes {}",
                    clip.config.projection_dim, config.clip_embd
                ),
            ));
        }
        Ok(Self {
            root: root.to_path_buf(),
            generator,
            vqgan,
            byt5,
            clip_tokenizer,
            clip,
        })
    }

    /// ByT5 states and the CLIP text embedding of `prompt` (official `embed_clip` / ByT5 with
    /// `padding="longest"` on one caption: no padding, no attention mask).
    ///
    /// # Errors
    /// Tokenizer and GPU failures.
    pub fn embed(&self, rec: &mut Recorder<'_>, prompt: &str) -> Result<TextConditioning> {
        let ids = byt5_ids(prompt, BYT5_MAX_LENGTH);
        let byt5 = self.byt5.forward(rec, &ids)?;
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
            byt5_ids: ids,
            byt5,
            clip_ids,
            clip,
        })
    }

    /// The generator with `prompt` (and `negative_prompt` for the unconditional branch when
    /// `guidance` ≠ 1) prepared for `batch` grids.
    ///
    /// # Errors
    /// Text encoder and GPU failures.
    pub fn guided(
        &self,
        ctx: &GpuContext,
        prompt: &str,
        negative_prompt: &str,
        batch: usize,
        guidance: f32,
        grid: (usize, usize),
    ) -> Result<GuidedPaella<'_>> {
        let mut rec = ctx.recorder();
        let mut prepare = |text: &str| -> Result<modules::Prepared> {
            let t = self.embed(&mut rec, text)?;
            let byt5 = repeat(&mut rec, &t.byt5, batch)?;
            let clip = repeat(&mut rec, &t.clip, batch)?;
            self.generator.prepare(&mut rec, &byt5, &clip)
        };
        let cond = prepare(prompt)?;
        let uncond = if guidance != 1.0 {
            Some(prepare(negative_prompt)?)
        } else {
            None
        };
        rec.submit();
        Ok(GuidedPaella {
            pipe: self,
            cond,
            uncond,
            guidance,
            grid,
        })
    }
}

/// `t` `[1, ..]` repeated to `[n, ..]`.
fn repeat(rec: &mut Recorder<'_>, t: &Tensor, n: usize) -> Result<Tensor> {
    if n == 1 {
        return Ok(t.clone());
    }
    let parts: Vec<&Tensor> = std::iter::repeat_n(t, n).collect();
    ops::layout::concat(rec, &parts, 0)
}

/// The v3 generator under fixed conditions: the sampler's model. The noise level of step i of
/// n is `r = 1 − i/n` (the official `linspace(1, 0, steps + 1)`); with guidance s the logits
/// are `s·cond + (1 − s)·uncond`, the unconditional branch run separately (its condition has
/// another length: ByT5 states of the negative prompt).
pub struct GuidedPaella<'a> {
    pipe: &'a PaellaPipeline,
    cond: modules::Prepared,
    uncond: Option<modules::Prepared>,
    guidance: f32,
    grid: (usize, usize),
}

impl GuidedPaella<'_> {
    /// Guided logits at an explicit noise level.
    ///
    /// # Errors
    /// Shapes; GPU failures.
    pub fn logits_at(&self, rec: &mut Recorder<'_>, tokens: &Tensor, r: f32) -> Result<Tensor> {
        let g = &self.pipe.generator;
        let cond = g.forward(rec, tokens, r, &self.cond)?;
        match &self.uncond {
            Some(u) => {
                let uncond = g.forward(rec, tokens, r, u)?;
                ops::elementwise::axpby(rec, self.guidance, &cond, 1.0 - self.guidance, &uncond)
            }
            None => Ok(cond),
        }
    }
}

impl TokenModel for GuidedPaella<'_> {
    fn grid(&self) -> (usize, usize) {
        self.grid
    }

    fn codebook_size(&self) -> usize {
        self.pipe.generator.config.num_labels
    }

    /// Paella has no mask token: the sampler marks unknown positions with the first id past
    /// the codebook and replaces them with noise before the model sees them.
    fn mask_id(&self) -> u32 {
        self.pipe.generator.config.num_labels as u32
    }

    fn logits(&self, rec: &mut Recorder<'_>, tokens: &Tensor, step: Step) -> Result<Tensor> {
        self.logits_at(rec, tokens, 1.0 - step.progress())
    }
}
