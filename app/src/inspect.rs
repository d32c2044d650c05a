//! Inspection subcommands: run one model component on tensors from files and write the result,
//! so every stage can be compared with the reference implementation.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use tessera_engine::pipeline::Condition;
use tessera_engine::{GpuContext, Tensor};

use crate::files::{Out, png_bytes, read_image, read_tokens, write_atomically, write_tensors};

#[derive(Args)]
pub struct EmbedTextArgs {
    /// Model folder or hub id (resolved from the local Hugging Face cache); default: the
    /// embedded model.
    #[arg(long, value_name = "DIR|ID")]
    model: Option<String>,
    /// Text to encode.
    #[arg(long)]
    prompt: String,
    /// Output safetensors file. aMUSEd: input_ids (i64), pooled (f32), hidden (f32,
    /// penultimate layer). Paella v3: byt5_input_ids (i64), byt5 (f32 [1, T, D]),
    /// clip_input_ids (i64), clip (f32 [1, D]).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

#[derive(Args)]
pub struct ForwardArgs {
    /// Model folder or hub id (default: the embedded model).
    #[arg(long, value_name = "DIR|ID")]
    model: Option<String>,
    /// safetensors file holding `tokens` (i64 or i32, [1, h, w]; the mask id is allowed).
    #[arg(long, value_name = "FILE")]
    tokens: PathBuf,
    /// Prompt for the conditional branch.
    #[arg(long, default_value = "")]
    prompt: String,
    /// Class label (class-conditional MaskGIT models).
    #[arg(long, value_name = "N")]
    class: Option<u32>,
    /// Paella's noise level r in [0, 1] as the official forward takes it (v3: 1 is all noise,
    /// the first step; v1: 0 is all noise, γ(r) = cos(r·π/2) applied inside); default: the
    /// first step's.
    #[arg(long, value_name = "R")]
    noise_level: Option<f32>,
    /// Which transformer of a two-stage model: base, or super-res (the super-resolution
    /// stage, which also takes --low-res-tokens).
    #[arg(long, value_name = "STAGE", default_value = "base")]
    stage: Stage,
    /// safetensors file holding the base stage's `tokens` (i64 or i32, [1, lh, lw]) that
    /// --stage super-res is conditioned on.
    #[arg(long, value_name = "FILE")]
    low_res_tokens: Option<PathBuf>,
    /// Output safetensors file: logits (f32 [1, h·w, codebook]).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

/// A two-stage model's transformers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Stage {
    /// The base transformer (the only one of most models).
    Base,
    /// The super-resolution transformer (`super_res/`).
    SuperRes,
}

#[derive(Args)]
pub struct DecodeArgs {
    /// Model folder or hub id (default: the embedded model).
    #[arg(long, value_name = "DIR|ID")]
    model: Option<String>,
    /// safetensors file holding `tokens` (i64 or i32, [1, h, w], codebook ids).
    #[arg(long, value_name = "FILE")]
    tokens: PathBuf,
    /// Output PNG (the decoded image clipped to [0, 1]).
    #[arg(long, value_name = "IMAGE.png")]
    out: PathBuf,
    /// Also write the unclipped decoder output as `image` (f32 [1, 3, H, W]).
    #[arg(long, value_name = "FILE")]
    raw: Option<PathBuf>,
    /// Which stage's tokens of a two-stage model: base, or super-res (its larger grid; both
    /// stages decode with the base folder's VQ).
    #[arg(long, value_name = "STAGE", default_value = "base")]
    stage: Stage,
}

#[derive(Args)]
pub struct EncodeArgs {
    /// Model folder or hub id (default: the embedded model).
    #[arg(long, value_name = "DIR|ID")]
    model: Option<String>,
    /// Input image (RGB; read as values in [0, 1]); sides must be multiples of the VQ's scale.
    #[arg(long, value_name = "IMAGE")]
    image: PathBuf,
    /// Output safetensors file: tokens (i64 [1, h, w]).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Which stage's tokens of a two-stage model: base, or super-res (an image of the output
    /// size; both stages encode with the base folder's VQ).
    #[arg(long, value_name = "STAGE", default_value = "base")]
    stage: Stage,
}

fn token_grid(ids: &[u32], shape: &[usize], limit: usize, what: &str) -> Result<[usize; 3]> {
    let [1, h, w] = *shape else {
        bail!("tokens have shape {shape:?}, expected [1, h, w]");
    };
    if let Some((i, &id)) = ids
        .iter()
        .enumerate()
        .find(|&(_, &id)| id as usize >= limit)
    {
        bail!("tokens[{i}] = {id} is outside {what} (ids must be below {limit})");
    }
    Ok([1, h, w])
}

pub fn embed_text(a: &EmbedTextArgs) -> Result<()> {
    use tessera_engine::pipeline::TextOutput;
    let ctx = GpuContext::new()?;
    let model = crate::render::open_model(&ctx, a.model.as_deref())?;
    let mut rec = ctx.recorder();
    let outputs = model.embed_text(&mut rec, &a.prompt)?;
    rec.submit();
    let mut values = Vec::new();
    for (name, out) in &outputs {
        values.push(match out {
            TextOutput::Ids(ids) => (
                *name,
                vec![1, ids.len()],
                None,
                ids.iter().map(|&v| i64::from(v)).collect(),
            ),
            TextOutput::Tensor(t) => (*name, t.shape().to_vec(), Some(t.to_f32(&ctx)?), vec![]),
        });
    }
    let tensors: Vec<Out<'_>> = values
        .iter()
        .map(|(name, shape, f, ids)| match f {
            Some(v) => Out::F32(name, shape.clone(), v),
            None => Out::I64(name, shape.clone(), ids.clone()),
        })
        .collect();
    write_tensors(&a.out, &tensors)
}

/// The conditional logits of a token grid (`--class` for class-conditional models, the prompt
/// for text models; no guidance).
pub fn forward(a: &ForwardArgs) -> Result<()> {
    match (a.stage, &a.low_res_tokens) {
        (Stage::SuperRes, None) => bail!("--stage super-res needs --low-res-tokens"),
        (Stage::Base, Some(_)) => bail!("--low-res-tokens applies to --stage super-res"),
        (Stage::SuperRes, Some(_)) if a.class.is_some() || a.noise_level.is_some() => {
            bail!("--stage super-res takes --prompt only (no --class or --noise-level)")
        }
        _ => {}
    }
    // Read before the model loads: a bad file fails fast.
    let (ids, shape) = read_tokens(&a.tokens, "tokens")?;
    let low_res = match &a.low_res_tokens {
        Some(path) => Some(read_tokens(path, "tokens")?),
        None => None,
    };
    let ctx = GpuContext::new()?;
    let model = crate::render::open_model(&ctx, a.model.as_deref())?;
    let grid = token_grid(
        &ids,
        &shape,
        model.input_vocab(),
        "the transformer's vocabulary",
    )?;
    let tokens = Tensor::from_u32(&ctx, "tokens", &grid, &ids)?;
    let logits = match &low_res {
        Some((lo_ids, lo_shape)) => {
            check_stage_grid(
                &model,
                Stage::SuperRes,
                (grid[1], grid[2]),
                "the tokens' grid",
            )?;
            token_grid(lo_ids, lo_shape, model.codebook_size(), "the base codebook")?;
            model.super_res_logits(&ctx, &tokens, lo_ids, &a.prompt)?
        }
        None => {
            // The base stage's grid (of a two-stage model too).
            let base = tessera_engine::pipeline::SuperResOptions {
                skip: model.stages() == 2,
                steps: None,
            };
            if model.fixed_grid_for(base) && (grid[1], grid[2]) != model.grid_for(base) {
                let want = model.grid_for(base);
                bail!(
                    "tokens are {}×{}; this model's grid is {}×{}",
                    grid[1],
                    grid[2],
                    want.0,
                    want.1
                );
            }
            let condition = match a.class {
                Some(label) => Condition::Class { label, name: None },
                None => Condition::Text {
                    prompt: &a.prompt,
                    negative_prompt: "",
                },
            };
            model.logits(&ctx, &tokens, condition, a.noise_level)?
        }
    };
    let v = logits.to_f32(&ctx)?;
    write_tensors(&a.out, &[Out::F32("logits", logits.shape().to_vec(), &v)])
}

/// `--stage super-res` of `forward`, `decode` and `encode`: a two-stage model, and a grid of its
/// super-resolution stage (the stages share the base folder's VQ, so `base` takes any grid).
fn check_stage_grid(
    model: &tessera_engine::pipeline::Model,
    stage: Stage,
    grid: (usize, usize),
    what: &str,
) -> Result<()> {
    if stage == Stage::Base {
        return Ok(());
    }
    if model.stages() != 2 {
        bail!(
            "--stage super-res applies to two-stage models (a super_res/ folder); this model has \
             one stage"
        );
    }
    let want = model.grid();
    if grid != want {
        bail!(
            "{what} is {}×{}; the super-resolution stage's grid is {}×{}",
            grid.0,
            grid.1,
            want.0,
            want.1
        );
    }
    Ok(())
}

pub fn decode(a: &DecodeArgs) -> Result<()> {
    let ctx = GpuContext::new()?;
    let (ids, shape) = read_tokens(&a.tokens, "tokens")?;
    let model = crate::render::open_model(&ctx, a.model.as_deref())?;
    let grid = token_grid(&ids, &shape, model.codebook_size(), "the VQ codebook")?;
    check_stage_grid(&model, a.stage, (grid[1], grid[2]), "the tokens' grid")?;
    let tokens = Tensor::from_u32(&ctx, "tokens", &grid, &ids)?;
    let mut rec = ctx.recorder();
    let image = model.decode_tensor(&mut rec, &tokens)?;
    rec.submit();
    let v = image.to_f32(&ctx)?;
    let (h, w) = (image.shape()[2], image.shape()[3]);
    if image.shape()[1] != 3 {
        bail!(
            "the VQ decodes {} channels; a PNG needs 3",
            image.shape()[1]
        );
    }
    if let Some(raw) = &a.raw {
        write_tensors(raw, &[Out::F32("image", image.shape().to_vec(), &v)])?;
    }
    let mut unit = v;
    model.pixels_to_unit(&mut unit);
    let png = png_bytes(&unit, w, h, &HashMap::new())?;
    write_atomically(&a.out, &png)
}

pub fn encode(a: &EncodeArgs) -> Result<()> {
    let ctx = GpuContext::new()?;
    let (pixels, w, h) = read_image(&a.image)?;
    let model = crate::render::open_model(&ctx, a.model.as_deref())?;
    let f = model.vq_factor();
    if w % f != 0 || h % f != 0 || w == 0 || h == 0 {
        bail!(
            "{}: image is {w}×{h}; this model needs sides that are multiples of {f}",
            a.image.display()
        );
    }
    check_stage_grid(&model, a.stage, (h / f, w / f), "the image's token grid")?;
    let (ids, (gh, gw)) = model
        .encode(&ctx, &pixels, (w, h))
        .with_context(|| format!("encoding {}", a.image.display()))?;
    let v: Vec<i64> = ids.into_iter().map(i64::from).collect();
    write_tensors(&a.out, &[Out::I64("tokens", vec![1, gh, gw], v)])
}

#[derive(Args)]
pub struct ConvertArgs {
    /// A checkpoint: a PyTorch `.pt`/`.bin`/`.ckpt` file (read without executing its pickle) or
    /// a safetensors file.
    #[arg(value_name = "IN")]
    input: PathBuf,
    /// The safetensors file to write: every tensor, dtypes as stored.
    #[arg(value_name = "OUT.safetensors")]
    out: PathBuf,
}

/// Converts a checkpoint to safetensors.
pub fn convert(a: &ConvertArgs) -> Result<()> {
    if a.input == a.out {
        bail!("{} would overwrite its input", a.out.display());
    }
    let ckpt = tessera_engine::io::Checkpoint::open(std::slice::from_ref(&a.input))?;
    let bytes = ckpt.to_safetensors()?;
    write_atomically(&a.out, &bytes)?;
    eprintln!(
        "wrote {} tensors to {}",
        ckpt.names().count(),
        a.out.display()
    );
    Ok(())
}
