//! MaskGIT (google-research/maskgit) run straight from its released Flax checkpoints:
//! `maskgit_imagenet{256,512}_checkpoint` (the class-conditional transformer) and
//! `tokenizer_imagenet{256,512}_checkpoint` (the VQGAN). Paper: Chang et al. 2022, MaskGIT,
//! <https://arxiv.org/abs/2202.04200>.
//!
//! No config file exists: every size is read off the arrays ([`transformer::Config::infer`],
//! [`vqgan::Config::infer`]) and a file whose arrays do not fit that architecture exactly fails
//! naming the first missing, misshapen or unexpected key path. The vocabulary is
//! `codes + classes + 1`: a class token is `codebook_size + label` and leads the sequence, the
//! mask token is the last row. MaskGIT uses no classifier-free guidance; [`ClassConditional`]
//! drives [`sampling::generate`](crate::sampling::generate) with a fixed label per image.

pub mod transformer;
pub mod vqgan;

use crate::io::files;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::gpu::{DType, GpuContext, Recorder, Tensor};
use crate::io::flax::{FlaxFile, FlaxLoader};
use crate::ops;
use crate::sampling::TokenModel;

pub use transformer::Transformer;
pub use vqgan::Vqgan;

pub mod synthetic;

const TRANSFORMER_PREFIX: &str = "maskgit_";
const TOKENIZER_PREFIX: &str = "tokenizer_";
const SUFFIX: &str = "_checkpoint";

/// Whether `path` is meant as MaskGIT checkpoints: a `maskgit_*_checkpoint` or
/// `tokenizer_*_checkpoint` file, or a folder holding one (and no `model_index.json`), so a
/// broken or mismatched set gets MaskGIT's own error rather than another family's.
pub fn is_checkpoint_path(path: &Path) -> bool {
    let named = |n: &str| {
        n.ends_with(SUFFIX)
            && (n.starts_with(TRANSFORMER_PREFIX) || n.starts_with(TOKENIZER_PREFIX))
    };
    if files::is_dir(path) {
        if files::is_file(&path.join("model_index.json")) {
            return false;
        }
        files::list(path).is_ok_and(|entries| {
            entries
                .iter()
                .filter_map(|e| e.file_name())
                .any(|n| named(&n.to_string_lossy()))
        })
    } else {
        path.file_name()
            .is_some_and(|n| named(&n.to_string_lossy()))
    }
}

/// The (transformer, tokenizer) files `path` names: a directory holding
/// `maskgit_<name>_checkpoint` and `tokenizer_<name>_checkpoint` (paired by `<name>` when it
/// holds several), or either file, whose sibling must lie beside it.
pub fn checkpoint_files(path: &Path) -> Result<(PathBuf, PathBuf)> {
    if files::is_dir(path) {
        let mut transformers = Vec::new();
        let mut tokenizers = Vec::new();
        for entry in files::list(path).map_err(|e| Error::file(path, e))? {
            let name = entry
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !name.ends_with(SUFFIX) || !files::is_file(&entry) {
                continue;
            }
            if let Some(rest) = name.strip_prefix(TRANSFORMER_PREFIX) {
                transformers.push(rest.to_owned());
            } else if let Some(rest) = name.strip_prefix(TOKENIZER_PREFIX) {
                tokenizers.push(rest.to_owned());
            }
        }
        transformers.sort();
        tokenizers.sort();
        let rest = match (transformers.as_slice(), tokenizers.as_slice()) {
            ([t], _) if tokenizers.contains(t) => t.clone(),
            // A transformer and a tokenizer of different checkpoints (say imagenet256 and
            // imagenet512) would load with sizes inferred from the mismatch.
            ([t], [k]) => {
                return Err(Error::file(
                    path,
                    format!(
                        "{TRANSFORMER_PREFIX}{t} and {TOKENIZER_PREFIX}{k} belong to different \
                         checkpoints ({} vs {}): put the matching pair together, or pass one file \
                         with its partner beside it",
                        t.trim_end_matches(SUFFIX),
                        k.trim_end_matches(SUFFIX)
                    ),
                ));
            }
            ([], _) | (_, []) => {
                return Err(Error::file(
                    path,
                    format!(
                        "needs a {TRANSFORMER_PREFIX}*{SUFFIX} and a {TOKENIZER_PREFIX}*{SUFFIX} \
                         file (found {} and {})",
                        transformers.len(),
                        tokenizers.len()
                    ),
                ));
            }
            _ => {
                return Err(Error::file(
                    path,
                    format!(
                        "holds several MaskGIT checkpoints ({}); pass one file",
                        transformers
                            .iter()
                            .map(|t| format!("{TRANSFORMER_PREFIX}{t}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        };
        return Ok((
            path.join(format!("{TRANSFORMER_PREFIX}{rest}")),
            path.join(format!("{TOKENIZER_PREFIX}{rest}")),
        ));
    }
    if !files::is_file(path) {
        return Err(Error::file(path, "no such file or directory"));
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = path.parent().unwrap_or(Path::new("."));
    let (transformer, tokenizer) = if let Some(rest) = name.strip_prefix(TRANSFORMER_PREFIX) {
        (
            path.to_path_buf(),
            dir.join(format!("{TOKENIZER_PREFIX}{rest}")),
        )
    } else if let Some(rest) = name.strip_prefix(TOKENIZER_PREFIX) {
        (
            dir.join(format!("{TRANSFORMER_PREFIX}{rest}")),
            path.to_path_buf(),
        )
    } else {
        return Err(Error::file(
            path,
            format!(
                "expected a file named {TRANSFORMER_PREFIX}*{SUFFIX} or \
                 {TOKENIZER_PREFIX}*{SUFFIX} (or their folder)"
            ),
        ));
    };
    for (p, what) in [(&transformer, "transformer"), (&tokenizer, "tokenizer")] {
        if !files::is_file(p) {
            return Err(Error::file(
                p,
                format!(
                    "the {what} checkpoint belonging to {} is missing",
                    path.display()
                ),
            ));
        }
    }
    Ok((transformer, tokenizer))
}

/// A MaskGIT model: transformer and VQGAN tokenizer.
pub struct MaskGit {
    pub transformer: Transformer,
    pub vqgan: Vqgan,
}

impl MaskGit {
    /// Loads a checkpoint folder, or either checkpoint file with its sibling beside it (see
    /// [`checkpoint_files`]).
    pub fn load(ctx: &GpuContext, path: &Path) -> Result<Self> {
        let (transformer, tokenizer) = checkpoint_files(path)?;
        let tokenizer = FlaxFile::read(&tokenizer)?;
        let transformer = FlaxFile::read(&transformer)?;
        Self::from_flax(ctx, &transformer, &tokenizer)
    }

    /// Builds the model from parsed (or in-memory) Flax variables.
    pub fn from_flax(
        ctx: &GpuContext,
        transformer: &FlaxFile,
        tokenizer: &FlaxFile,
    ) -> Result<Self> {
        let vc = vqgan::Config::infer(tokenizer)?;
        let tc = transformer::Config::infer(transformer, vc.codebook_size)?;
        let vqgan = FlaxLoader::load(ctx, tokenizer, "MaskGIT VQGAN", |l| Vqgan::new(l, &vc))?;
        let transformer = FlaxLoader::load(ctx, transformer, "MaskGIT transformer", |l| {
            Transformer::new(l, &tc)
        })?;
        Ok(Self { transformer, vqgan })
    }

    /// Side of the square images it generates, in pixels.
    pub fn image_size(&self) -> usize {
        self.transformer.config.grid * self.vqgan.config.scale_factor()
    }

    /// Token grid (height, width).
    pub fn grid(&self) -> (usize, usize) {
        let g = self.transformer.config.grid;
        (g, g)
    }

    pub fn num_classes(&self) -> usize {
        self.transformer.config.num_classes
    }

    pub fn codebook_size(&self) -> usize {
        self.vqgan.config.codebook_size
    }

    /// The [MASK] id: the last vocabulary row.
    pub fn mask_id(&self) -> u32 {
        self.transformer.config.mask_id()
    }

    /// `[class token] + tokens` `[B, 1 + h·w]` for tokens `[B, h, w]` (u32 or i32) and one label
    /// per image (or one label for all).
    fn sequence(&self, rec: &mut Recorder<'_>, tokens: &Tensor, labels: &[u32]) -> Result<Tensor> {
        const OP: &str = "MaskGIT transformer";
        let (gh, gw) = self.grid();
        let b = match *tokens.shape() {
            [b, h, w] if h == gh && w == gw && b > 0 => b,
            _ => {
                return Err(Error::shape(
                    OP,
                    format!("tokens {:?} are not [B, {gh}, {gw}]", tokens.shape()),
                ));
            }
        };
        if labels.len() != 1 && labels.len() != b {
            return Err(Error::shape(
                OP,
                format!("{} class labels for a batch of {b}", labels.len()),
            ));
        }
        if let Some(&bad) = labels.iter().find(|&&l| l as usize >= self.num_classes()) {
            return Err(Error::shape(
                OP,
                format!(
                    "class label {bad} is outside 0–{}",
                    self.num_classes().saturating_sub(1)
                ),
            ));
        }
        let first = self.codebook_size() as u32;
        let class_ids: Vec<u32> = (0..b).map(|i| first + labels[i % labels.len()]).collect();
        let ctx = rec.ctx();
        let class = match tokens.dtype() {
            DType::U32 => Tensor::from_u32(ctx, "maskgit.class_token", &[b, 1], &class_ids)?,
            DType::I32 => Tensor::from_i32(
                ctx,
                "maskgit.class_token",
                &[b, 1],
                &class_ids.iter().map(|&i| i as i32).collect::<Vec<_>>(),
            )?,
            got => {
                return Err(Error::DType {
                    op: OP,
                    name: tokens.name().to_owned(),
                    got,
                    expected: "u32 or i32".into(),
                });
            }
        };
        ops::layout::concat(rec, &[&class, &tokens.reshape(&[b, gh * gw])?], 1)
    }

    /// Raw transformer output for tokens `[B, h, w]` (mask id where unknown) and class labels:
    /// logits over the whole vocabulary at every position, class position first
    /// `[B, 1 + h·w, vocab_size]`.
    pub fn logits_full(
        &self,
        rec: &mut Recorder<'_>,
        tokens: &Tensor,
        labels: &[u32],
    ) -> Result<Tensor> {
        let seq = self.sequence(rec, tokens, labels)?;
        self.transformer.forward(rec, &seq)
    }

    /// Logits of the image positions over the codes `[B, h·w, codebook_size]`, as the official
    /// sampler uses them (`logits[:, 1:, :codebook_size]`).
    pub fn logits(
        &self,
        rec: &mut Recorder<'_>,
        tokens: &Tensor,
        labels: &[u32],
    ) -> Result<Tensor> {
        let full = self.logits_full(rec, tokens, labels)?;
        let (h, w) = self.grid();
        let image = ops::layout::slice(rec, &full, 1, 1, h * w)?;
        ops::layout::slice(rec, &image, 2, 0, self.codebook_size())
    }

    /// Code ids u32 `[B, h, w]` → image `[B, 3, h·f, w·f]` (≈ [0, 1], unclipped).
    pub fn decode(&self, rec: &mut Recorder<'_>, ids: &Tensor) -> Result<Tensor> {
        self.vqgan.decode(rec, ids)
    }

    /// Image `[B, 3, H, W]` in [0, 1] → nearest-code ids u32 `[B, H/f, W/f]`.
    pub fn encode(&self, rec: &mut Recorder<'_>, image: &Tensor) -> Result<Tensor> {
        self.vqgan.encode(rec, image)
    }

    /// The transformer conditioned on `labels` (one per image, or one for all) as a sampler
    /// model.
    pub fn class_conditional(&self, labels: &[u32]) -> Result<ClassConditional<'_>> {
        if labels.is_empty() {
            return Err(Error::shape("MaskGIT", "no class label"));
        }
        if let Some(&bad) = labels.iter().find(|&&l| l as usize >= self.num_classes()) {
            return Err(Error::shape(
                "MaskGIT",
                format!(
                    "class label {bad} is outside 0–{}",
                    self.num_classes().saturating_sub(1)
                ),
            ));
        }
        Ok(ClassConditional {
            model: self,
            labels: labels.to_vec(),
        })
    }
}

/// MaskGIT with fixed class labels, for [`sampling::generate`](crate::sampling::generate).
pub struct ClassConditional<'a> {
    model: &'a MaskGit,
    labels: Vec<u32>,
}

impl TokenModel for ClassConditional<'_> {
    fn grid(&self) -> (usize, usize) {
        self.model.grid()
    }

    fn codebook_size(&self) -> usize {
        self.model.codebook_size()
    }

    fn mask_id(&self) -> u32 {
        self.model.mask_id()
    }

    fn logits(
        &self,
        rec: &mut Recorder<'_>,
        tokens: &Tensor,
        _: crate::sampling::Step,
    ) -> Result<Tensor> {
        self.model.logits(rec, tokens, &self.labels)
    }
}
