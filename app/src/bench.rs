//! `tessera bench`: kernel figures on the chosen adapter, as a table or one JSON object.

use std::time::Duration;

use anyhow::Result;
use clap::Args;
use tessera_engine::GpuContext;
use tessera_engine::bench::{self, KernelTiming};
use tessera_engine::ops::conv::ConvStrategy;
use tessera_engine::ops::matmul::MatmulStrategy;
use tessera_engine::pipeline::{Model, SuperResOptions};

#[derive(Args)]
pub struct BenchArgs {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Matmul sizes n (n×n×n) to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [256, 512, 1024, 2048], value_name = "N,..")]
    sizes: Vec<usize>,
    /// Seconds to spend repeating each kernel (each runs at least once after a warm-up).
    #[arg(long, default_value_t = 1.0, value_name = "SECONDS")]
    budget: f64,
    /// End-to-end model: a folder or hub id (aMUSEd or MaskGIT checkpoints), `default` (the
    /// embedded model), or `amused-256-random` /
    /// `amused-512-random` / `maskgit-256-random` / `paella-v3-random` / `paella-v1-random`
    /// (published configurations, synthetic weights; Paella's text encoders are small
    /// stand-ins of the published widths).
    #[arg(long, default_value = "default", value_name = "DIR|NAME")]
    model: String,
    /// Decoding steps of the end-to-end run.
    #[arg(long, default_value_t = 12, value_name = "N")]
    steps: usize,
    /// Images per run (the transformer sees twice as many rows with guidance).
    #[arg(long, default_value_t = 1, value_name = "N")]
    batch: usize,
    /// Stages of a two-stage model to run end to end: 2 (the default: base, then
    /// super-resolution) or 1 (the base stage alone, as diffusers runs the base folder).
    #[arg(long, value_name = "1|2")]
    stages: Option<usize>,
    /// Steps of a two-stage model's super-resolution stage (default: the model's).
    #[arg(long, value_name = "N")]
    sr_steps: Option<usize>,
    /// Add kernel rows for the products of the aMUSEd-256 configuration (f16 weights, every
    /// matmul strategy the adapter runs).
    #[arg(long)]
    model_shapes: bool,
    /// Skip the kernel figures.
    #[arg(long)]
    no_kernels: bool,
    /// Skip the end-to-end run.
    #[arg(long)]
    no_end_to_end: bool,
    /// After the end-to-end run, run it again with per-kernel timing (GPU timestamp queries
    /// where the adapter has them, else wall clock per dispatch) and print the breakdown.
    #[arg(long)]
    profile: bool,
}

fn tuning_json(ctx: &GpuContext) -> serde_json::Value {
    let tuner = ctx.tuner();
    let stats = tuner.stats();
    let choices: serde_json::Map<String, serde_json::Value> = tuner
        .choices()
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    serde_json::json!({
        "on": tuner.is_on(),
        "file": tuner.file().map(|f| f.display().to_string()),
        "loaded": stats.loaded,
        "measured": stats.measured,
        "ms": stats.ms,
        "choices": choices,
    })
}

/// The model `--model` names: a synthetic published configuration, or any model folder,
/// checkpoint or hub id (`default`: the embedded model).
fn bench_model(ctx: &GpuContext, name: &str) -> Result<Model> {
    use tessera_engine::io::{Checkpoint, Loader, ModelFolder};
    use tessera_engine::models::amused::{AmusedPipeline, SchedulerConfig, TextStack};
    use tessera_engine::models::amused::{uvit2d, vq};
    use tessera_engine::models::clip_text::ClipTextModel;
    use tessera_engine::models::clip_tokenizer::ClipTokenizer;
    use tessera_engine::models::maskgit::{MaskGit, transformer, vqgan};
    let random = match name {
        "maskgit-256-random" => {
            return Ok(Model::MaskGit(Box::new(MaskGit::synthetic(
                ctx,
                &transformer::Config::imagenet_256(),
                &vqgan::Config::imagenet(),
                1,
            )?)));
        }
        "paella-v3-random" | "paella-v1-random" => {
            use tessera_engine::models::paella::{PaellaPipeline, Version};
            let version = if name == "paella-v3-random" {
                Version::V3
            } else {
                Version::V1
            };
            let folder = ModelFolder::open(&crate::render::model_path(None)?)?;
            let tokenizer = ClipTokenizer::from_dir(&folder.component("tokenizer")?)?;
            return Ok(Model::Paella(Box::new(PaellaPipeline::synthetic(
                ctx, version, tokenizer,
            )?)));
        }
        "amused-256-random" => Some(uvit2d::Config::amused_256()),
        "amused-512-random" => Some(uvit2d::Config::amused_512()),
        _ => None,
    };
    let Some(tc) = random else {
        return crate::render::open_model(ctx, (name != "default").then_some(name));
    };
    // Synthetic weights in the published sizes; the prompt goes through the default model's
    // CLIP tokenizer (its ids are valid CLIP-L ids).
    let folder = ModelFolder::open(&crate::render::model_path(None)?)?;
    let ckpt = Checkpoint::synthetic(1);
    let text_encoder = Loader::load(ctx, &ckpt, true, |l| {
        ClipTextModel::from_loader(l, &ClipTextModel::clip_l_config())
    })?;
    let transformer = Loader::load(ctx, &ckpt, true, |l| uvit2d::UVit2DModel::new(l, &tc))?;
    let vqvae = Loader::load(ctx, &ckpt, false, |l| {
        vq::VqModel::new(l, &vq::Config::amused())
    })?;
    Ok(Model::Amused(Box::new(AmusedPipeline {
        text: TextStack {
            tokenizer: ClipTokenizer::from_dir(&folder.component("tokenizer")?)?,
            text_encoder,
        },
        scheduler: SchedulerConfig {
            mask_token_id: tc.mask_token_id(),
            masking_schedule: "cosine".into(),
        },
        transformer,
        vqvae,
        defaults: Default::default(),
        super_res: None,
        folder,
    })))
}

fn end_to_end(ctx: &GpuContext, a: &BenchArgs) -> Result<bench::EndToEnd> {
    if a.steps == 0 || a.batch == 0 {
        anyhow::bail!("--steps and --batch must be at least 1");
    }
    let model = bench_model(ctx, &a.model)?;
    crate::render::check_stages_for(a.stages, &model)?;
    let super_res = SuperResOptions {
        skip: a.stages == Some(1),
        steps: a.sr_steps,
    };
    Ok(bench::end_to_end(
        ctx, &a.model, &model, a.steps, a.batch, super_res,
    )?)
}

/// `--stages` out of range, stage options without an end-to-end run (the engine's request
/// check refuses the rest: `--stages 1` or `--sr-steps` on a model of one stage, both at once,
/// zero steps).
fn check_stages(a: &BenchArgs) -> Result<()> {
    crate::render::check_stages(a.stages)?;
    if a.no_end_to_end && (a.stages.is_some() || a.sr_steps.is_some()) {
        anyhow::bail!(
            "--stages and --sr-steps set the end-to-end run, which --no-end-to-end skips"
        );
    }
    Ok(())
}

pub fn run(args: &BenchArgs) -> Result<()> {
    check_stages(args)?;
    let ctx = GpuContext::new()?;
    if !(args.budget >= 0.0 && args.budget.is_finite()) {
        anyhow::bail!(
            "--budget must be a non-negative number of seconds, got {}",
            args.budget
        );
    }
    let budget = Duration::from_secs_f64(args.budget);
    if !args.json {
        println!("adapter: {} ({:?})", ctx.info.name, ctx.info.backend);
    }
    let mut timings = Vec::new();
    let mut emit = |t: KernelTiming| {
        if !args.json {
            // A row without a named strategy says which one the engine picked.
            let name = if t.name.contains('/') || t.name == "dispatch-host" {
                t.name.clone()
            } else {
                format!("{} ({})", t.name, t.kernel)
            };
            println!(
                "{:<28} {:<24} {:<4} {:>10.3} ms {:>9.2} GFLOPS",
                name,
                format!("{:?}", t.shape),
                t.dtype,
                t.ms,
                t.gflops
            );
        }
        timings.push(t);
    };
    if !args.no_kernels {
        emit(bench::dispatch_host(&ctx)?);
        for &n in &args.sizes {
            let f32_row = bench::matmul(&ctx, [n; 3], false, false, None, budget)?;
            let picked = f32_row.kernel.clone();
            emit(f32_row);
            emit(bench::matmul(&ctx, [n; 3], false, true, None, budget)?);
            // The same product by every other kernel strategy, to compare.
            for s in bench::other_matmul_strategies(&ctx, [n; 3], false, &picked) {
                emit(bench::matmul(&ctx, [n; 3], false, false, Some(s), budget)?);
            }
        }
        if args.model_shapes {
            for (shape, gated) in bench::MODEL_MATMULS {
                let row = bench::matmul(&ctx, shape, gated, true, None, budget)?;
                let picked = row.kernel.clone();
                emit(row);
                for s in bench::other_matmul_strategies(&ctx, shape, gated, &picked) {
                    emit(bench::matmul(&ctx, shape, gated, true, Some(s), budget)?);
                }
            }
        }
        // aMUSEd-256 shapes with guidance (two rows): 16 heads × 64 over 256 image tokens,
        // self and cross (77 text tokens).
        for shape in [[2, 16, 256, 256, 64], [2, 16, 256, 77, 64]] {
            let row = bench::attention(&ctx, shape, None, budget)?;
            let picked = row.kernel.clone();
            emit(row);
            for k in bench::other_attention_kernels(&ctx, shape[4], &picked) {
                emit(bench::attention(&ctx, shape, Some(k), budget)?);
            }
        }
        // VQ decoder's widest 3×3 conv at 16×16 and its 128-channel conv at 64×64.
        for shape in [[768, 768, 16], [128, 128, 64]] {
            let row = bench::conv3x3(&ctx, shape, None, budget)?;
            let picked = row.kernel.clone();
            emit(row);
            for s in bench::other_conv_strategies(&ctx, shape[0], &picked) {
                emit(bench::conv3x3(&ctx, shape, Some(s), budget)?);
            }
        }
    }
    // A first run compiles the pipelines (and warms caches); the figures come from the second.
    let (e2e, first) = if args.no_end_to_end {
        (None, None)
    } else {
        let first = end_to_end(&ctx, args)?;
        (Some(end_to_end(&ctx, args)?), Some(first))
    };
    let first_run_ms = first.as_ref().map(|f| f.total_ms);
    // The breakdown comes from a second run: per-dispatch timing slows the run it measures.
    let profiled = if args.profile && !args.no_end_to_end {
        ctx.start_profile();
        let p = end_to_end(&ctx, args)?;
        let _ = ctx.take_profile();
        Some(p)
    } else {
        None
    };
    if let (Some(e), false) = (&e2e, args.json) {
        let super_res = if e.super_res_steps > 0 {
            format!(
                ", then {} super-resolution steps at {:.1} ms/step",
                e.super_res_steps, e.super_res_step_ms
            )
        } else {
            String::new()
        };
        let tuning = match &first {
            Some(f) if f.tuned_shapes > 0 => format!(
                ", {:.1} ms of it tuning {} kernel shapes",
                f.tune_ms, f.tuned_shapes
            ),
            _ => String::new(),
        };
        println!(
            "end to end ({}, {} steps, batch {}): text {:.1} ms ({:.1} recording), {:.1} ms/step ({:.1} recording){super_res}, decode {:.1} ms, total {:.1} ms (first run {:.1} ms{tuning}), peak {:.1} MiB, {:.1} dispatches and {:.1} submits per step",
            e.model,
            e.steps,
            e.batch,
            e.text_ms,
            e.text_record_ms,
            e.step_ms,
            e.step_record_ms,
            e.decode_ms,
            e.total_ms,
            first_run_ms.unwrap_or(0.0),
            e.peak_bytes as f64 / 1048576.0,
            e.dispatches_per_step,
            e.submits_per_step
        );
    }
    if !args.json {
        let tuner = ctx.tuner();
        let stats = tuner.stats();
        if tuner.is_on() {
            println!(
                "kernel tuning: {} shapes measured in {:.1} ms, {} loaded from {}",
                stats.measured,
                stats.ms,
                stats.loaded,
                tuner
                    .file()
                    .map_or_else(|| "nowhere".to_owned(), |f| f.display().to_string())
            );
        } else {
            println!("kernel tuning: off (TESSERA_TUNE=1 turns it on)");
        }
    }
    if let (Some(p), false) = (&profiled, args.json) {
        for (phase, prof) in &p.phases {
            let total = prof.total_ms();
            println!(
                "profile {phase} ({}, {:.1} ms in kernels):",
                prof.clock.name(),
                total
            );
            for op in prof.ops.iter().take(12) {
                println!(
                    "  {:<44} {:>6} calls {:>10.2} ms {:>5.1} %",
                    op.name,
                    op.calls,
                    op.ms,
                    100.0 * op.ms / total.max(1e-9)
                );
            }
        }
    }
    if args.json {
        let profile = profiled.map(|p| {
            let phases: Vec<_> = p
                .phases
                .iter()
                .map(|(phase, prof)| {
                    let ops: Vec<_> = prof
                        .ops
                        .iter()
                        .map(|o| serde_json::json!({"name": o.name, "calls": o.calls, "ms": o.ms}))
                        .collect();
                    serde_json::json!({"phase": phase, "clock": prof.clock.name(), "ops": ops})
                })
                .collect();
            serde_json::Value::Array(phases)
        });
        let kernels: Vec<_> = timings
            .iter()
            .map(|t| {
                serde_json::json!({
                    "name": t.name, "kernel": t.kernel, "shape": t.shape, "dtype": t.dtype,
                    "ms": t.ms, "gflops": t.gflops
                })
            })
            .collect();
        let end_to_end = e2e.map(|e| {
            serde_json::json!({
                "model": e.model, "steps": e.steps, "batch": e.batch, "text_ms": e.text_ms,
                "text_record_ms": e.text_record_ms,
                "step_ms": e.step_ms, "step_record_ms": e.step_record_ms, "super_res_steps": e.super_res_steps,
                "super_res_step_ms": e.super_res_step_ms,
                "stages": if e.super_res_steps > 0 { 2 } else { 1 },
                "decode_ms": e.decode_ms, "total_ms": e.total_ms,
                "first_run_ms": first_run_ms,
                "first_run_tune_ms": first.as_ref().map(|f| f.tune_ms),
                "first_run_tuned_shapes": first.as_ref().map(|f| f.tuned_shapes),
                "peak_bytes": e.peak_bytes, "dispatches_per_step": e.dispatches_per_step,
                "submits_per_step": e.submits_per_step
            })
        });
        let out = serde_json::json!({
            "adapter": { "name": ctx.info.name, "backend": format!("{:?}", ctx.info.backend) },
            "pipeline_cache_loaded_bytes": ctx.pipeline_cache_loaded(),
            "kernel_family": format!("{:?}", ctx.kernel_family()),
            // The tensor-core kernels' fragment size (16 or 8) and the subgroup width they are
            // compiled for (8 to 64), null without them.
            "cooperative_matrix": ctx.cooperative_matrix().map(|s| s.size()),
            "cooperative_matrix_subgroup": ctx.cooperative_matrix().map(|s| s.subgroup()),
            // Benchmarking overrides of the kernel choice (TESSERA_MATMUL, TESSERA_CONV,
            // TESSERA_ATTENTION).
            "matmul_strategy": MatmulStrategy::forced().map(|s| format!("{s:?}")),
            "conv_strategy": ConvStrategy::forced().map(|s| format!("{s:?}")),
            "attention_kernel": tessera_engine::ops::attention::AttentionKernel::forced()
                .map(|k| format!("{k:?}")),
            "shader_checks": format!("{:?}", tessera_engine::gpu::ShaderChecks::get()),
            // Kernel tuning (TESSERA_TUNE): whether it is on, its file, what it had loaded and
            // measured, and every choice it holds (call shape → strategy).
            "tuning": tuning_json(&ctx),
            "kernels": kernels,
            "end_to_end": end_to_end,
            "profile": profile,
        });
        println!("{out}");
    }
    Ok(())
}
