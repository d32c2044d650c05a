//! `--render`'s arguments resolved against the model: number ranges checked before anything
//! is opened ([`check_options`]), the model's defaults, the start image and mask, and the
//! engine's request, checked against the model before any work.

use std::path::Path;

use anyhow::{Context, Result, bail};
use tessera_engine::pipeline::settings::Condition;
use tessera_engine::pipeline::{Model, ModelConditioning, Request, Stages, Start, SuperResOptions};
use tessera_engine::sampling::{SamplerKind, SamplerOptions};

use super::{RenderArgs, class_name};
use crate::files::{Fit, read_image_fitted};

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
    /// A two-stage model's super-resolution stage (`--stages`, `--sr-steps`).
    pub super_res: SuperResOptions,
    /// How the stages run, for the settings text (`None`: a model of one stage).
    pub stages: Option<Stages>,
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
    if let Some(g) = a.guidance_schedule {
        opts.guidance_schedule = g;
    }
    match a.typical_mass {
        Some(0.0) => opts.typical_mass = None,
        Some(m) if m > 0.0 && m <= 1.0 => opts.typical_mass = Some(m),
        Some(m) => bail!("--typical-mass {m} must be in (0, 1], or 0 for off"),
        None => {}
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
    let super_res = SuperResOptions {
        skip: match a.stages {
            None | Some(2) => false,
            Some(_) => true,
        },
        steps: a.sr_steps,
    };
    // Stage options on a model of one stage are refused by the engine's check below.
    let super_res_steps = a.sr_steps.or(model.default_super_res_steps());
    let stages = Stages::of(model, &super_res, super_res_steps.unwrap_or_default());
    check_stages_for(a.stages, model)?;
    let check = |start: Start| -> Result<Plan> {
        let plan = Plan {
            opts: opts.clone(),
            guidance,
            start,
            super_res,
            stages,
        };
        model.check(&request(a, model, &plan))?;
        Ok(plan)
    };
    check(Start::Blank(model.grid_for(super_res)))?;
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
            Start::Blank(model.grid_for(super_res))
        }
        (Some(img), mask) => {
            let f = model.vq_factor();
            // Sides must be multiples of the VQ factor times the transformer's own down/up
            // sampling, or the one size of a fixed grid: resized to fit where they are not (to
            // multiples only for outpainting, which a fixed grid refuses).
            let multiple = model.pixel_multiple();
            let fit = match Fit::for_model(model, super_res) {
                Fit::Exact(..) if a.outpaint.is_some() => Fit::Multiple(multiple),
                fit => fit,
            };
            let fitted = read_image_fitted(img, fit)?;
            let (pixels, w, h, file_size) =
                (fitted.pixels, fitted.width, fitted.height, fitted.file_size);
            if let Some(spec) = &a.edit {
                if a.strength.is_some() || mask.is_some() || a.outpaint.is_some() {
                    bail!(
                        "--edit re-masks at random: it takes no --mask, --strength or --outpaint"
                    );
                }
                let (iterations, fraction) = edit_spec(spec)?;
                Start::Edit {
                    image: pixels,
                    size: (w, h),
                    iterations,
                    fraction,
                }
            } else if let Some(spec) = &a.outpaint {
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
pub fn request<'a>(a: &'a RenderArgs, model: &Model, plan: &Plan) -> Request<'a> {
    Request {
        condition: condition(a, model),
        batch: a.batch,
        guidance: plan.guidance,
        sampler: plan.opts.clone(),
        start: plan.start.clone(),
        super_res: plan.super_res,
    }
}

/// `--edit N[:F]`: iterations (1–1000) and the fraction re-masked each time (default 0.3).
fn edit_spec(spec: &str) -> Result<(usize, f64)> {
    let (n, f) = spec.split_once(':').unwrap_or((spec, "0.3"));
    let n: usize = n
        .trim()
        .parse()
        .ok()
        .filter(|n| (1..=1000).contains(n))
        .with_context(|| format!("--edit {spec:?}: N must be a whole number in 1–1000"))?;
    let f: f64 = f
        .trim()
        .parse()
        .ok()
        .filter(|f: &f64| *f > 0.0 && *f < 1.0)
        .with_context(|| format!("--edit {spec:?}: F must be a fraction in (0, 1)"))?;
    Ok((n, f))
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

/// The rules about the options that do not depend on the model, checked once, before the GPU
/// and the model are opened, for every family (the model-dependent rules follow in [`plan`]).
pub fn check_options(a: &RenderArgs) -> Result<()> {
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
    if let Some(steps) = a.sr_steps
        && !(1..=MAX_STEPS).contains(&steps)
    {
        bail!("--sr-steps must be from 1 to {MAX_STEPS}, got {steps}");
    }
    check_stages(a.stages)?;
    if a.stages == Some(1) && a.sr_steps.is_some() {
        bail!("--sr-steps sets the super-resolution stage, which --stages 1 skips");
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

/// `--stages` (of `--render` and `tessera bench`) before the model opens: 1 or 2.
pub fn check_stages(stages: Option<usize>) -> Result<()> {
    if let Some(n) = stages
        && !(1..=2).contains(&n)
    {
        bail!("--stages must be 1 or 2, got {n}");
    }
    Ok(())
}

/// `--stages` against the opened model: 2 only for a two-stage model (the engine's request
/// check refuses `--stages 1` on a model of one stage).
pub fn check_stages_for(stages: Option<usize>, model: &Model) -> Result<()> {
    if stages == Some(2) && model.stages() == 1 {
        bail!(
            "--stages 2 applies to two-stage models (a super_res/ folder); this model has one stage"
        );
    }
    Ok(())
}
