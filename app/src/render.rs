//! `tessera --render OUT.png`: headless generation with any sampler and schedule, inpainting,
//! img2img, PNGs with their settings, token dumps, and animations of the decoding.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tessera_engine::GpuContext;
use tessera_engine::pipeline::settings::{Condition, Settings};
use tessera_engine::pipeline::{self, Model, ModelConditioning, Request, Start};
use tessera_engine::sampling::{SamplerKind, SamplerOptions, Schedule, StepEvent};

use crate::files::{Out, png_bytes, read_image_fitted, write_atomically, write_tensors};

#[derive(Args, Clone, Default)]
pub struct RenderArgs {
    /// Render headlessly to this PNG (with --batch N > 1: OUT-1.png … OUT-N.png).
    #[arg(long, value_name = "OUT.png")]
    pub render: Option<PathBuf>,
    /// Model folder or hub id (default: the embedded model in assets/models/emoji).
    #[arg(long, value_name = "DIR|ID")]
    pub model: Option<String>,
    /// What to draw.
    #[arg(long, default_value = "")]
    pub prompt: String,
    /// Class label for class-conditional models (MaskGIT's ImageNet checkpoints: 0–999).
    #[arg(long, value_name = "N")]
    pub class: Option<u32>,
    /// What to steer away from (classifier-free guidance's unconditional branch).
    #[arg(long, default_value = "")]
    pub negative_prompt: String,
    /// Random seed (default: a fresh one, printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Decoding steps (default: the model folder's tessera.json, else 12).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Decoding rule: maskgit, amused or paella (default: amused).
    #[arg(long, value_name = "NAME")]
    pub sampler: Option<SamplerKind>,
    /// Mask schedule: cosine, linear, square, cubic, sqrt, pow:P, log, exp (default: the
    /// model's scheduler setting; linear when inpainting, as the reference inpaint pipeline).
    #[arg(long, value_name = "NAME")]
    pub schedule: Option<Schedule>,
    /// Classifier-free guidance scale (default: the model folder's tessera.json, else 10; ≤ 1
    /// turns guidance off).
    #[arg(long, value_name = "S")]
    pub guidance: Option<f32>,
    /// Re-masking (choice) temperature T0[:T1] (default: 2:0 for amused, or the model folder's
    /// tessera.json; 4.5 for maskgit).
    #[arg(long, value_name = "T0[:T1]")]
    pub choice_temperature: Option<String>,
    /// Paella's sampling temperature T0[:T1] (default 1:0.2).
    #[arg(long, value_name = "T0[:T1]")]
    pub softmax_temperature: Option<String>,
    /// Start from this image: img2img, or inpainting with --mask.
    #[arg(long, value_name = "IN.png")]
    pub image: Option<PathBuf>,
    /// Inpainting mask, same size as --image: white = repaint.
    #[arg(long, value_name = "MASK.png", requires = "image")]
    pub mask: Option<PathBuf>,
    /// Outpainting: extend the --image canvas by LEFT,TOP,RIGHT,BOTTOM pixels (multiples of the
    /// VQ scale, e.g. 16) and generate only the new area.
    #[arg(
        long,
        value_name = "L,T,R,B",
        requires = "image",
        conflicts_with = "mask"
    )]
    pub outpaint: Option<String>,
    /// img2img strength in (0, 1]: the fraction of the schedule re-run (default 0.5).
    #[arg(long, value_name = "F")]
    pub strength: Option<f64>,
    /// Images per prompt.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub batch: usize,
    /// Also write the final tokens (i64 [B, h, w]) to this safetensors file.
    #[arg(long, value_name = "F.safetensors")]
    pub tokens_out: Option<PathBuf>,
    /// Also write an animated GIF of the decoding (token grid | decoded preview, per step).
    #[arg(long, value_name = "STEPS.gif")]
    pub gif: Option<PathBuf>,
    /// Also write one PNG per step into this folder.
    #[arg(long, value_name = "DIR")]
    pub frames: Option<PathBuf>,
}

/// Where `--model` points: a folder, a checkpoint file or a hub id in the local cache
/// ([`Model::locate`]), or without one the embedded default model's folder (see
/// [`crate::embedded`]).
pub fn model_path(arg: Option<&str>) -> Result<PathBuf> {
    match arg {
        Some(m) => Ok(Model::locate(m)?),
        None => crate::embedded::default_model(),
    }
}

/// Opens `--model` (any family) on `ctx`.
pub fn open_model(ctx: &GpuContext, arg: Option<&str>) -> Result<Model> {
    Ok(Model::open(ctx, &model_path(arg)?)?)
}

/// How the model appears in the settings text: as the user named it, or the embedded model.
pub fn model_name(arg: Option<&str>) -> String {
    arg.map_or_else(|| "emoji".to_owned(), str::to_owned)
}

/// Largest |guidance| and temperature accepted: with logits of any trained model (|x| ≲ 10³)
/// the guided, scaled and exponentiated values stay finite in f32.
const MAX_GUIDANCE: f32 = 1e4;
const MAX_TEMPERATURE: f32 = 1e4;
/// Smallest Paella sampling temperature (logits are divided by it).
const MIN_SOFTMAX_TEMPERATURE: f32 = 1e-3;
/// Most decoding steps accepted (the published samplers use 8–48).
const MAX_STEPS: usize = 1000;
/// Most pixels `--outpaint` may add on one side.
const MAX_OUTPAINT: usize = 8192;
/// Most images per prompt accepted before the model's own size limits are known.
const MAX_BATCH: usize = 4096;

/// `--softmax-temperature T0[:T1]`: both at least [`MIN_SOFTMAX_TEMPERATURE`].
fn softmax_temperature(t: &str) -> Result<(f32, f32)> {
    let (t0, t1) = temperature_pair(t, "softmax-temperature")?;
    if t0.min(t1) < MIN_SOFTMAX_TEMPERATURE {
        bail!("--softmax-temperature must be at least {MIN_SOFTMAX_TEMPERATURE}");
    }
    Ok((t0, t1))
}

/// A guidance scale (from `--guidance` or the model's defaults) whose arithmetic stays finite.
fn check_guidance(g: f32) -> Result<()> {
    if !(g.is_finite() && g.abs() <= MAX_GUIDANCE) {
        bail!("--guidance must be a number from -{MAX_GUIDANCE} to {MAX_GUIDANCE}, got {g}");
    }
    Ok(())
}

fn temperature_pair(s: &str, what: &str) -> Result<(f32, f32)> {
    let parse = |v: &str| -> Result<f32> {
        v.trim()
            .parse::<f32>()
            .ok()
            .filter(|x| x.is_finite() && (0.0..=MAX_TEMPERATURE).contains(x))
            .with_context(|| {
                format!(
                    "--{what} {s:?}: expected T0 or T0:T1 with numbers from 0 to {MAX_TEMPERATURE}"
                )
            })
    };
    match s.split_once(':') {
        Some((a, b)) => Ok((parse(a)?, parse(b)?)),
        None => {
            let t = parse(s)?;
            Ok((t, t))
        }
    }
}

/// Settings resolved against the model's defaults, checked before any output is written.
pub struct Plan {
    pub opts: SamplerOptions,
    pub guidance: f32,
    pub start: Start,
}

/// `--seed`, or a fresh one.
fn seed(a: &RenderArgs) -> u64 {
    a.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            % 1_000_000_000
    })
}

/// `--class` or the prompts, as the request's condition.
pub fn condition<'a>(a: &'a RenderArgs, model: &Model) -> Condition<'a> {
    match a.class {
        Some(label) => Condition::Class {
            label,
            name: match model.conditioning() {
                ModelConditioning::Class { classes } => class_name(label, classes),
                ModelConditioning::Text => None,
            },
        },
        None => Condition::Text {
            prompt: &a.prompt,
            negative_prompt: &a.negative_prompt,
        },
    }
}

/// Resolves the arguments against the model's defaults and reads the start image; the
/// model-dependent rules are the engine's ([`Model::check`], run here before any work).
pub fn plan(a: &RenderArgs, model: &Model) -> Result<Plan> {
    let inpainting = a.mask.is_some() || a.outpaint.is_some();
    let mut opts = model.sampler_defaults(a.sampler, seed(a), inpainting)?;
    let kind = opts.kind;
    if let Some(s) = a.schedule {
        opts.schedule = s;
    }
    if let Some(steps) = a.steps {
        opts.steps = steps;
    }
    if let Some(t) = &a.choice_temperature {
        let (t0, t1) = temperature_pair(t, "choice-temperature")?;
        opts.choice_temperature = if t.contains(':') {
            (t0, t1)
        } else {
            (
                t0,
                if kind == SamplerKind::Amused {
                    0.01
                } else {
                    t0
                },
            )
        };
    }
    if let Some(t) = &a.softmax_temperature {
        opts.softmax_temperature = softmax_temperature(t)?;
    }
    let guidance = a.guidance.unwrap_or_else(|| model.default_guidance());
    check_guidance(guidance)?;
    if model.has_guidance() && !a.negative_prompt.is_empty() && guidance <= 1.0 {
        bail!(
            "--negative-prompt needs classifier-free guidance: --guidance above 1 (this run's is \
             {guidance})"
        );
    }
    // Checked before the image is read: a class for a text model, a prompt for a class model.
    let check = |start: Start| -> Result<Plan> {
        let plan = Plan {
            opts: opts.clone(),
            guidance,
            start,
        };
        model.check(&request(a, model, &plan))?;
        Ok(plan)
    };
    check(Start::Blank(model.grid()))?;
    // A request is conditioned on a class or on text, not both.
    if a.class.is_some() {
        for (flag, given) in [
            ("--prompt", !a.prompt.is_empty()),
            ("--negative-prompt", !a.negative_prompt.is_empty()),
        ] {
            if given {
                bail!(
                    "{flag} does not apply with --class: class-conditional models take no text \
                     (choose the image with --class)"
                );
            }
        }
    }
    let start = match (&a.image, &a.mask) {
        (None, _) => {
            if a.strength.is_some() {
                bail!("--strength needs --image");
            }
            Start::Blank(model.grid())
        }
        (Some(img), mask) => {
            let f = model.vq_factor();
            // Sides must be multiples of the VQ factor times the transformer's own down/up
            // sampling: resized to fit where they are not.
            let multiple = model.pixel_multiple();
            let fitted = read_image_fitted(img, multiple)?;
            let (pixels, w, h, file_size) =
                (fitted.pixels, fitted.width, fitted.height, fitted.file_size);
            if let Some(spec) = &a.outpaint {
                if a.strength.is_some() {
                    bail!("--strength applies to img2img, not outpainting");
                }
                let grow = outpaint_grow(spec, f, multiple)?;
                Start::Outpaint {
                    image: pixels,
                    size: (w, h),
                    grow,
                }
            } else {
                match mask {
                    Some(m) => {
                        if a.strength.is_some_and(|s| s != 1.0) {
                            bail!(
                                "--strength applies to img2img; inpainting always regenerates \
                                 the masked tokens"
                            );
                        }
                        let grid = read_mask(m, file_size, (w / f, h / f))?;
                        if !grid.iter().any(|r| *r) {
                            bail!(
                                "{}: the mask selects no token (white = repaint)",
                                m.display()
                            );
                        }
                        Start::Inpaint {
                            image: pixels,
                            size: (w, h),
                            mask: grid,
                        }
                    }
                    None => Start::Img2Img {
                        image: pixels,
                        size: (w, h),
                        // Its range was checked with the other options (check_options).
                        strength: a.strength.unwrap_or(0.5),
                    },
                }
            }
        }
    };
    check(start)
}

/// The engine's request for `plan`.
fn request<'a>(a: &'a RenderArgs, model: &Model, plan: &Plan) -> Request<'a> {
    Request {
        condition: condition(a, model),
        batch: a.batch,
        guidance: plan.guidance,
        sampler: plan.opts.clone(),
        start: plan.start.clone(),
    }
}

/// `--outpaint L,T,R,B` in pixels → token counts to grow the grid by.
/// `multiple`: what each side must be a multiple of in pixels (the VQ factor `f`, times 2 for
/// a transformer that halves the token grid).
fn outpaint_grow(spec: &str, f: usize, multiple: usize) -> Result<[usize; 4]> {
    let sides: Vec<usize> = spec
        .split(',')
        .map(|v| v.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .ok()
        .filter(|v: &Vec<usize>| v.len() == 4)
        .with_context(|| {
            format!("--outpaint {spec:?}: expected four pixel counts LEFT,TOP,RIGHT,BOTTOM")
        })?;
    if sides.iter().any(|v| v % multiple != 0) || sides.iter().sum::<usize>() == 0 {
        bail!(
            "--outpaint {spec:?}: each side must be a multiple of {multiple} pixels (this model's \
             token grid) and at least one non-zero"
        );
    }
    if sides.iter().any(|&v| v > MAX_OUTPAINT) {
        bail!("--outpaint {spec:?}: at most {MAX_OUTPAINT} pixels a side");
    }
    Ok([sides[0] / f, sides[1] / f, sides[2] / f, sides[3] / f])
}

/// The mask image as a token grid: grayscale, resized to the grid with Lanczos, ≥ 0.5 = repaint.
fn read_mask(path: &Path, image_size: (usize, usize), grid: (usize, usize)) -> Result<Vec<bool>> {
    let img = crate::files::open_image(path, "mask")?;
    if (img.width() as usize, img.height() as usize) != image_size {
        bail!(
            "{}: mask is {}×{}, the image {}×{}; they must match",
            path.display(),
            img.width(),
            img.height(),
            image_size.0,
            image_size.1
        );
    }
    let size = (img.width() as usize, img.height() as usize);
    Ok(mask_to_grid(
        &crate::pil_resize::luma_l8(&img.to_rgb8()),
        size,
        grid,
    ))
}

/// An 8-bit grayscale mask (255 = repaint; `size` = (width, height)) as a token grid
/// (width, height), as diffusers' inpainting pipelines make it: Pillow's LANCZOS resize of the
/// "L" image to the grid, bit for bit ([`crate::pil_resize`]), then /255 binarised at 0.5.
pub fn mask_to_grid(l8: &[u8], size: (usize, usize), grid: (usize, usize)) -> Vec<bool> {
    crate::pil_resize::mask_grid(l8, size, grid)
}

/// Where a path points, for comparing paths that may not exist yet: the canonical parent folder
/// joined with the file name.
fn resolved(p: &Path) -> PathBuf {
    if let Ok(c) = p.canonicalize() {
        return c;
    }
    let parent = p
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match (parent.canonicalize(), p.file_name()) {
        (Ok(dir), Some(name)) => dir.join(name),
        _ => p.to_path_buf(),
    }
}

/// Is `name` a frame file tessera writes into `--frames` (`step-<digits>.png`)?
fn is_frame_name(name: &str) -> bool {
    name.strip_prefix("step-")
        .and_then(|r| r.strip_suffix(".png"))
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

/// Frame file name of step `i` (0-based) of `n`: zero-padded so names sort in step order.
fn frame_name(i: usize, n: usize) -> String {
    let width = n.to_string().len().max(2);
    format!("step-{:0width$}.png", i + 1)
}

/// The rules about the options that do not depend on the model, checked once, before the GPU
/// and the model are opened, for every family (the model-dependent rules follow in [`plan`]).
fn check_options(a: &RenderArgs) -> Result<()> {
    if !(1..=MAX_BATCH).contains(&a.batch) {
        bail!(
            "--batch must be from 1 to {MAX_BATCH}, got {} (the adapter's buffer limits are \
             checked once the model is loaded)",
            a.batch
        );
    }
    if let Some(g) = a.guidance {
        check_guidance(g)?;
    }
    if let Some(steps) = a.steps
        && !(1..=MAX_STEPS).contains(&steps)
    {
        bail!("--steps must be from 1 to {MAX_STEPS}, got {steps}");
    }
    if let Some(t) = &a.choice_temperature {
        temperature_pair(t, "choice-temperature")?;
    }
    if let Some(t) = &a.softmax_temperature {
        // Every family's default sampler (aMUSEd's, MaskGIT's) ignores it.
        if a.sampler != Some(SamplerKind::Paella) {
            bail!(
                "--softmax-temperature applies to the paella sampler (this run uses {})",
                a.sampler
                    .map_or_else(|| "the model's default".to_owned(), |k| k.to_string())
            );
        }
        softmax_temperature(t)?;
    }
    if let Some(s) = a.strength
        && !(s > 0.0 && s <= 1.0)
    {
        bail!("--strength {s} must be in (0, 1]");
    }
    Ok(())
}

/// Checks every output path before any work: no two outputs name the same file, no output
/// overwrites an input, and a `--frames` folder holds nothing but tessera's own frames (which
/// the render replaces as a complete set).
///
/// Runs after [`check_options`], which bounds the batch it enumerates.
fn check_outputs(a: &RenderArgs, out: &Path) -> Result<()> {
    let mut outputs: Vec<(String, PathBuf)> = (0..a.batch)
        .map(|i| ("--render".to_owned(), output_path(out, i, a.batch)))
        .collect();
    if let Some(g) = &a.gif {
        outputs.push(("--gif".into(), g.clone()));
    }
    if let Some(t) = &a.tokens_out {
        outputs.push(("--tokens-out".into(), t.clone()));
    }
    let mut inputs: Vec<(&str, &Path)> = Vec::new();
    if let Some(i) = &a.image {
        inputs.push(("--image", i));
    }
    if let Some(m) = &a.mask {
        inputs.push(("--mask", m));
    }
    if let Some(m) = a.model.as_deref().map(Path::new).filter(|m| m.exists()) {
        inputs.push(("--model", m));
    }
    let resolved_outputs: Vec<(&str, PathBuf)> = outputs
        .iter()
        .map(|(flag, p)| (flag.as_str(), resolved(p)))
        .collect();
    for (i, (flag, p)) in resolved_outputs.iter().enumerate() {
        if p.is_dir() {
            bail!("{flag} {} is a folder; name a file", p.display());
        }
        if let Some((other, _)) = resolved_outputs[..i].iter().find(|(_, q)| q == p) {
            bail!(
                "{other} and {flag} both name {}: give each output its own file",
                p.display()
            );
        }
        for (input, path) in &inputs {
            let q = resolved(path);
            if &q == p {
                bail!(
                    "{flag} {} would overwrite the input {input} {}",
                    p.display(),
                    path.display()
                );
            }
        }
    }
    if let Some(d) = &a.frames {
        if d.exists() && !d.is_dir() {
            bail!("--frames {} is a file; name a folder", d.display());
        }
        let rd = resolved(d);
        // An output named like a frame inside the folder would be deleted with the old frames.
        if let Some((flag, p)) = resolved_outputs.iter().find(|(_, p)| {
            p.parent() == Some(&rd)
                && p.file_name()
                    .is_some_and(|n| is_frame_name(&n.to_string_lossy()))
        }) {
            bail!("{flag} {} lies among the --frames files", p.display());
        }
        if d.is_dir() {
            let others: Vec<String> = std::fs::read_dir(d)
                .with_context(|| format!("reading {}", d.display()))?
                .filter_map(|e| e.ok())
                // This run's own outputs may live there too.
                .filter(|e| {
                    !resolved_outputs
                        .iter()
                        .any(|(_, p)| *p == resolved(&e.path()))
                })
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !is_frame_name(n))
                .collect();
            if !others.is_empty() {
                bail!(
                    "--frames {} holds other files ({}): tessera writes a complete set of \
                     step-N.png there; give it an empty or new folder",
                    d.display(),
                    others[..others.len().min(3)].join(", ")
                );
            }
        }
    }
    Ok(())
}

fn output_path(out: &Path, i: usize, batch: usize) -> PathBuf {
    if batch == 1 {
        return out.to_path_buf();
    }
    let stem = out
        .file_stem()
        .map_or_else(|| "image".into(), |s| s.to_string_lossy().into_owned());
    let ext = out
        .extension()
        .map_or_else(|| "png".into(), |s| s.to_string_lossy().into_owned());
    out.with_file_name(format!("{stem}-{}.{ext}", i + 1))
}

/// One animation frame: the token grid (masked cells dark, fixed cells showing the decoded
/// preview, cells fixed this step outlined) beside the decoded preview.
pub fn frame(
    preview: &[f32],
    (w, h): (usize, usize),
    grid: (usize, usize),
    ev: &StepEvent<'_>,
    mask_id: u32,
) -> image::RgbaImage {
    let (gh, gw) = grid;
    let mut img = image::RgbaImage::new((2 * w + 4) as u32, h as u32);
    let px = |x: usize, y: usize| -> [u8; 3] {
        std::array::from_fn(|c| {
            (preview[(c * h + y) * w + x].clamp(0.0, 1.0) * 255.0).round() as u8
        })
    };
    for y in 0..h {
        for x in 0..w {
            let (ty, tx) = (y * gh / h, x * gw / w);
            let t = ty * gw + tx;
            let (cy0, cx0) = (ty * h / gh, tx * w / gw);
            let (cy1, cx1) = ((ty + 1) * h / gh - 1, (tx + 1) * w / gw - 1);
            let edge = y == cy0 || y == cy1 || x == cx0 || x == cx1;
            let c = if ev.tokens[t] == mask_id {
                if edge { [70, 70, 78] } else { [40, 40, 46] }
            } else if ev.newly_fixed[t] && edge {
                [255, 214, 10]
            } else {
                px(x, y)
            };
            img.put_pixel(x as u32, y as u32, image::Rgba([c[0], c[1], c[2], 255]));
            let p = px(x, y);
            img.put_pixel(
                (w + 4 + x) as u32,
                y as u32,
                image::Rgba([p[0], p[1], p[2], 255]),
            );
        }
    }
    img
}

/// `--gif` / `--frames`: one frame per step, of the first image of the batch.
struct Animation {
    on: bool,
    frames: Vec<image::RgbaImage>,
    error: Option<anyhow::Error>,
}

impl Animation {
    /// Creates the `--frames` folder up front, so a bad path fails before any generation.
    fn new(a: &RenderArgs) -> Result<Self> {
        if let Some(d) = &a.frames {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        Ok(Self {
            on: a.gif.is_some() || a.frames.is_some(),
            frames: Vec::new(),
            error: None,
        })
    }

    /// Adds step `ev`'s frame: the token grid beside the preview `decode` makes from the
    /// predicted tokens, scaled up to at least 256 px high. After a failed decode it records
    /// nothing more; [`Self::finish`] reports the failure.
    fn record(
        &mut self,
        ev: &StepEvent<'_>,
        mask_id: u32,
        decode: impl FnOnce(&[u32]) -> Result<(Vec<f32>, (usize, usize))>,
    ) {
        if !self.on || self.error.is_some() {
            return;
        }
        let l = ev.grid.0 * ev.grid.1;
        let first = &ev.predicted[..l];
        let (img, size) = match decode(first) {
            Ok(v) => v,
            Err(e) => {
                self.error = Some(e);
                return;
            }
        };
        let one = StepEvent {
            step: ev.step,
            steps: ev.steps,
            grid: ev.grid,
            tokens: &ev.tokens[..l],
            predicted: first,
            newly_fixed: &ev.newly_fixed[..l],
            confidence: &ev.confidence[..l],
            ms: ev.ms,
            work: ev.work,
        };
        let f = frame(&img, size, ev.grid, &one, mask_id);
        let k = 256u32.div_ceil(f.height()).max(1);
        self.frames.push(image::imageops::resize(
            &f,
            f.width() * k,
            f.height() * k,
            image::imageops::FilterType::Nearest,
        ));
    }

    /// The frames, or the error of the preview decode that failed.
    fn finish(self) -> Result<Vec<image::RgbaImage>> {
        match self.error {
            Some(e) => Err(e.context("decoding a preview frame")),
            None => Ok(self.frames),
        }
    }
}

/// ImageNet-1k class names in label order (assets/imagenet_classes.txt).
pub const IMAGENET_CLASSES: &str = include_str!("../../assets/imagenet_classes.txt");

/// The name of `class` when the model has the 1000 ImageNet classes.
pub fn class_name(class: u32, num_classes: usize) -> Option<&'static str> {
    (num_classes == 1000)
        .then(|| IMAGENET_CLASSES.lines().nth(class as usize))
        .flatten()
}

pub fn run(a: &RenderArgs, out: &Path) -> Result<()> {
    check_options(a)?;
    check_outputs(a, out)?;
    let ctx = GpuContext::new()?;
    let model = open_model(&ctx, a.model.as_deref())?;
    let plan = plan(a, &model)?;
    let mut animation = Animation::new(a)?;
    let req = request(a, &model, &plan);
    let opts = &plan.opts;
    let what = match req.condition {
        Condition::Class { label, name } => match name {
            Some(n) => format!("class {label} ({n})"),
            None => format!("class {label}"),
        },
        Condition::Text { .. } => format!("guidance {}", plan.guidance),
    };
    eprintln!(
        "seed {} · {} sampler · {} schedule · {} steps · {what}",
        opts.seed, opts.kind, opts.schedule, opts.steps
    );
    let bar = ProgressBar::new(opts.steps as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} step {pos}/{len} {msg}")
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    let mask_id = model.mask_id();
    let mut fixed_per_step: Vec<usize> = Vec::new();
    let generated = pipeline::generate(&ctx, &model, &req, &mut |ev| {
        fixed_per_step.push(ev.newly_fixed.iter().filter(|f| **f).count());
        bar.set_position(ev.step as u64 + 1);
        bar.set_message(format!("{:.0} ms/step", ev.ms));
        animation.record(ev, mask_id, |first| {
            Ok(model.decode(&ctx, first, 1, ev.grid)?)
        });
        ControlFlow::Continue(())
    })?;
    bar.finish_and_clear();
    let counts: Vec<String> = fixed_per_step.iter().map(usize::to_string).collect();
    eprintln!("tokens fixed per step: {}", counts.join(" "));
    let frames = animation.finish()?;
    let (images, (w, h)) =
        model.decode(&ctx, &generated.tokens, generated.batch, generated.grid)?;
    let model_name = model_name(a.model.as_deref());
    let params = Settings {
        condition: req.condition,
        sampler: opts,
        guidance: model.has_guidance().then_some(plan.guidance),
        size: (w, h),
        model: &model_name,
    }
    .parameters();
    let text = HashMap::from([("parameters".to_owned(), params)]);
    write_outputs(
        a,
        out,
        &images,
        (w, h),
        &text,
        &generated.tokens,
        (generated.batch, generated.grid),
        &frames,
    )
}

/// Writes everything a render produced: the PNGs (with `text` chunks), `--tokens-out`, and the
/// animation `frames` to `--gif` / `--frames` (recorded when either is given). Everything is encoded first and
/// the image files are written last, each atomically.
#[allow(clippy::too_many_arguments)]
fn write_outputs(
    a: &RenderArgs,
    out: &Path,
    images: &[f32],
    (w, h): (usize, usize),
    text: &HashMap<String, String>,
    tokens: &[u32],
    (batch, grid): (usize, (usize, usize)),
    frames: &[image::RgbaImage],
) -> Result<()> {
    let per = 3 * w * h;
    let mut pngs = Vec::new();
    for i in 0..batch {
        pngs.push((
            output_path(out, i, batch),
            png_bytes(&images[i * per..(i + 1) * per], w, h, text)?,
        ));
    }
    if let Some(t) = &a.tokens_out {
        let ids = tokens.iter().map(|&v| i64::from(v)).collect();
        write_tensors(t, &[Out::I64("tokens", vec![batch, grid.0, grid.1], ids)])?;
    }
    if let Some(g) = &a.gif {
        write_atomically(g, &gif_bytes(frames)?)?;
    }
    if let Some(d) = &a.frames {
        let mut encoded = Vec::new();
        for f in frames {
            let mut bytes = Vec::new();
            f.write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Png,
            )?;
            encoded.push(bytes);
        }
        // A complete set: an earlier run's frames (checked to be the folder's only files)
        // go first, so a shorter run leaves none of them behind.
        for e in std::fs::read_dir(d).with_context(|| format!("reading {}", d.display()))? {
            let e = e?;
            if is_frame_name(&e.file_name().to_string_lossy()) {
                std::fs::remove_file(e.path())
                    .with_context(|| format!("removing {}", e.path().display()))?;
            }
        }
        for (i, bytes) in encoded.iter().enumerate() {
            write_atomically(&d.join(frame_name(i, encoded.len())), bytes)?;
        }
    }
    for (path, bytes) in &pngs {
        write_atomically(path, bytes)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

pub fn gif_bytes(frames: &[image::RgbaImage]) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    {
        let mut enc = image::codecs::gif::GifEncoder::new_with_speed(&mut bytes, 10);
        enc.set_repeat(image::codecs::gif::Repeat::Infinite)?;
        let n = frames.len();
        for (i, f) in frames.iter().enumerate() {
            // Hold the last frame longer.
            let ms = if i + 1 == n { 1500 } else { 400 };
            let delay = image::Delay::from_numer_denom_ms(ms, 1);
            enc.encode_frame(image::Frame::from_parts(f.clone(), 0, 0, delay))?;
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::{frame_name, is_frame_name};

    #[test]
    fn frame_names_sort_in_step_order_for_any_step_count() {
        for n in [1, 9, 12, 99, 100, 1000] {
            let names: Vec<String> = (0..n).map(|i| frame_name(i, n)).collect();
            let mut sorted = names.clone();
            sorted.sort();
            assert_eq!(names, sorted, "{n} steps");
            assert!(names.iter().all(|f| is_frame_name(f)));
        }
        assert!(!is_frame_name("step-.png") && !is_frame_name("notes.txt"));
        assert!(!is_frame_name("step-1a.png"));
    }
}
