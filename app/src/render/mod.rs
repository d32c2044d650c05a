//! `tessera --render OUT.png`: headless generation with any model family, sampler and schedule,
//! inpainting, outpainting, img2img, PNGs with their settings, token dumps, and animations of
//! the decoding. The arguments and their checks against the model are in `plan`, the animation
//! in `animation`, writing the outputs (and checking them before any work) in `output`.

mod animation;
pub mod from_png;
mod output;
mod plan;

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tessera_engine::GpuContext;
use tessera_engine::pipeline::settings::{Condition, Settings};
use tessera_engine::pipeline::{self, Model};
use tessera_engine::sampling::{GuidanceSchedule, SamplerKind, Schedule};

use animation::Animation;
pub use animation::frame;
pub use output::gif_bytes;
use output::{check_outputs, write_outputs};
pub use plan::{Plan, mask_to_grid, plan};
pub use plan::{check_options, check_stages, check_stages_for, request};

/// What to generate and how: the options `--render`, `tessera batch` and the app share.
#[derive(Args, Clone, Default)]
pub struct GenerationArgs {
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
    /// Paella's sampling temperature T0[:T1] (default: v3 1:0.2, v1 1:1).
    #[arg(long, value_name = "T0[:T1]")]
    pub softmax_temperature: Option<String>,
    /// Locally typical filtering before each draw, keeping mass M in (0, 1]; 0 turns it off
    /// (default: 0.2 for Paella v1, as published; off otherwise).
    #[arg(long, value_name = "M")]
    pub typical_mass: Option<f32>,
    /// How the guidance scale varies over the steps: constant, linear (Muse: none at first,
    /// full at the end), cosine (open-muse), first:N (Paella: only the first N steps).
    #[arg(long, value_name = "NAME")]
    pub guidance_schedule: Option<GuidanceSchedule>,
    /// Mask-free editing (Muse) of --image under --prompt: N times, re-mask a random fraction F
    /// of its tokens (default 0.3) and resample them.
    #[arg(long, value_name = "N[:F]", requires = "image")]
    pub edit: Option<String>,
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
    /// Take every option not given here from the settings this PNG carries (as tessera and
    /// AUTOMATIC1111 write them): `--render out.png --from-png in.png` redoes that image.
    #[arg(long, value_name = "IN.png")]
    pub from_png: Option<PathBuf>,
    /// img2img strength in (0, 1]: the fraction of the schedule re-run (default 0.5).
    #[arg(long, value_name = "F")]
    pub strength: Option<f64>,
    /// Stages to run of a two-stage model (a base and a super-resolution stage): 2 (the
    /// default) or 1 (stop after the base, at its lower resolution).
    #[arg(long, value_name = "N")]
    pub stages: Option<usize>,
    /// Decoding steps of a two-stage model's super-resolution stage (default: its
    /// super_res/tessera.json, else 8).
    #[arg(long, value_name = "N")]
    pub sr_steps: Option<usize>,
}

#[derive(Args, Clone, Default)]
pub struct RenderArgs {
    /// Render headlessly to this PNG (with --batch N > 1: OUT-1.png … OUT-N.png).
    #[arg(long, value_name = "OUT.png")]
    pub render: Option<PathBuf>,
    #[command(flatten)]
    pub generation: GenerationArgs,
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

impl std::ops::Deref for RenderArgs {
    type Target = GenerationArgs;
    fn deref(&self) -> &GenerationArgs {
        &self.generation
    }
}

impl std::ops::DerefMut for RenderArgs {
    fn deref_mut(&mut self) -> &mut GenerationArgs {
        &mut self.generation
    }
}

/// Where `--model` points: a folder, a checkpoint file or a hub id (downloaded into the local
/// cache first when it is not there: [`crate::hub`]) ([`Model::locate`]), or without one the
/// embedded default model's folder (see [`crate::embedded`]).
///
/// In the browser the model's files are fetched into memory first ([`crate::hub::web`]) and
/// this is where they are mounted.
pub fn model_path(arg: Option<&str>) -> Result<PathBuf> {
    #[cfg(target_arch = "wasm32")]
    return Ok(crate::hub::web::mount_root(arg));
    #[cfg(not(target_arch = "wasm32"))]
    match arg {
        Some(m) => {
            crate::hub::fetch_if_missing(m)?;
            Ok(Model::locate(m)?)
        }
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

/// ImageNet-1k class names in label order (assets/imagenet_classes.txt).
pub const IMAGENET_CLASSES: &str = include_str!("../../../assets/imagenet_classes.txt");

/// The name of `class` when the model has the 1000 ImageNet classes.
pub fn class_name(class: u32, num_classes: usize) -> Option<&'static str> {
    (num_classes == 1000)
        .then(|| IMAGENET_CLASSES.lines().nth(class as usize))
        .flatten()
}

/// The `parameters` text chunk of image `k` of the images `req` made (see
/// `pipeline::settings`): its own seed (`sampling::image_seed`), so the PNG redoes that image
/// alone.
pub fn settings_text(
    a: &RenderArgs,
    model: &Model,
    plan: &Plan,
    req: &pipeline::Request<'_>,
    size: (usize, usize),
    k: usize,
) -> HashMap<String, String> {
    let model_name = model_name(a.model.as_deref());
    let mut opts = plan.opts.clone();
    opts.seed = tessera_engine::sampling::image_seed(opts.seed, k);
    let params = Settings {
        condition: req.condition,
        sampler: &opts,
        guidance: model.has_guidance().then_some(plan.guidance),
        size,
        model: &model_name,
        stages: plan.stages,
    }
    .parameters();
    HashMap::from([("parameters".to_owned(), params)])
}

/// Runs `--render`: every check, then the model, the run and the outputs.
pub fn run(a: &RenderArgs, out: &Path) -> Result<()> {
    let from_png;
    let a = match &a.from_png {
        Some(png) => {
            from_png = RenderArgs {
                generation: from_png::apply(&a.generation, png)?,
                ..a.clone()
            };
            &from_png
        }
        None => a,
    };
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
    let rule = if opts.uses_schedule() {
        format!("{} schedule", opts.schedule)
    } else {
        let (t0, t1) = opts.softmax_temperature;
        format!("temperature {t0}→{t1}")
    };
    let stages = match plan.stages {
        Some(pipeline::Stages::Both { super_res_steps }) => {
            format!(" + {super_res_steps} super-resolution steps")
        }
        Some(pipeline::Stages::BaseOnly) => " (base stage only)".to_owned(),
        None => String::new(),
    };
    eprintln!(
        "seed {} · {} sampler · {rule} · {} steps{stages} · {what}",
        opts.seed, opts.kind, opts.steps
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
        bar.set_length(ev.steps as u64);
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
    if let Some(line) = tuning_line(&ctx) {
        eprintln!("{line}");
    }
    let texts: Vec<_> = (0..generated.batch)
        .map(|k| settings_text(a, &model, &plan, &req, (w, h), k))
        .collect();
    write_outputs(
        a,
        out,
        &images,
        (w, h),
        &texts,
        &generated.tokens,
        (generated.batch, generated.grid),
        &frames,
    )
}

/// A line saying that this process timed kernels on its GPU (its first run there, or a call
/// shape new to the tune file: [`tessera_engine::gpu::Tuner`]), which is why it took longer
/// than the next run will; `None` when it timed none.
pub fn tuning_line(ctx: &GpuContext) -> Option<String> {
    let tuner = ctx.tuner();
    let stats = tuner.stats();
    (stats.measured > 0).then(|| {
        let kept = match tuner.file() {
            Some(f) => format!("kept in {}", f.display()),
            None => "kept for this process only".to_owned(),
        };
        format!(
            "timed the kernels of {} call shape{} on this GPU in {:.1} s, once ({kept})",
            stats.measured,
            if stats.measured == 1 { "" } else { "s" },
            stats.ms / 1e3
        )
    })
}
