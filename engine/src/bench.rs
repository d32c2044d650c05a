//! Kernel micro-benchmarks behind `tessera bench`: time per call and achieved GFLOPS of the
//! engine's kernels at fixed shapes, measured by wall clock around whole submissions.

use std::ops::ControlFlow;
use std::time::Duration;

use web_time::Instant;

use crate::error::Result;
use crate::gpu::{GpuContext, Profile, Recorder, Tensor, WorkCounts};
use crate::models::amused::GenerationDefaults;
use crate::ops;
use crate::ops::attention::{AttentionKernel, AttentionSpec};
use crate::ops::conv::{Conv2dSpec, ConvStrategy};
use crate::ops::matmul::{BLayout, Epilogue, MatmulStrategy, Problem};
use crate::pipeline::{self, Condition, Model, ModelConditioning, SuperResOptions};

/// One measured kernel configuration.
#[derive(Clone, Debug)]
pub struct KernelTiming {
    pub name: String,
    /// The strategy that ran (`Debug` name): the named one, or for a row without one the
    /// engine's pick ([`MatmulStrategy::picked`] and its siblings: static, forced or tuned).
    pub kernel: String,
    pub shape: Vec<usize>,
    pub dtype: &'static str,
    pub ms: f64,
    pub gflops: f64,
}

/// Deterministic pseudo-random values in [-1, 1) (no RNG dependency in the library).
fn pseudo_random(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

/// Runs `record` once to warm up (compiles pipelines), then repeatedly until `budget` is spent
/// (at least once); returns milliseconds per call. Calls are recorded several to a submission
/// (as many as fit in about 5 ms, judged by the warm-up, at most 64), so that on a GPU the
/// figure is the kernel's time and not a submit-and-wait round trip (≈ 0.1 ms on an H200).
fn time_it(
    ctx: &GpuContext,
    budget: Duration,
    mut record: impl FnMut(&mut Recorder<'_>) -> Result<Tensor>,
) -> Result<f64> {
    let mut rec = ctx.recorder();
    drop(record(&mut rec)?);
    rec.submit();
    ctx.wait_idle();
    // A second, warm call sizes the submissions. Outputs of one submission stay allocated until
    // it is submitted: their bytes are capped too.
    let warm = Instant::now();
    let out_bytes = {
        let mut rec = ctx.recorder();
        let out = record(&mut rec)?;
        rec.submit();
        ctx.wait_idle();
        out.numel() * 4
    };
    let one = warm.elapsed().as_secs_f64();
    let reps = ((0.005 / one.max(1e-6)) as usize)
        .clamp(1, 64)
        .min((256 << 20) / out_bytes.max(1))
        .max(1);
    let start = Instant::now();
    let mut calls = 0usize;
    while calls == 0 || start.elapsed() < budget {
        let mut rec = ctx.recorder();
        for _ in 0..reps {
            drop(record(&mut rec)?);
        }
        rec.submit();
        ctx.wait_idle();
        calls += reps;
    }
    Ok(start.elapsed().as_secs_f64() * 1e3 / calls as f64)
}

/// Matmul `[m, k] × [n, k]ᵀ` (`shape` = `[m, k, n]`) with f32 or f16 weights, plain or as a
/// gated unit (B of `2n` rows), by the kernel [`MatmulStrategy::choose`] picks (`strategy`
/// None; named "matmul", or "matmul-gated") or by `strategy` (named "matmul/<strategy>").
/// GFLOPS count the multiply-adds done (twice as many B rows when gated).
pub fn matmul(
    ctx: &GpuContext,
    [m, k, n]: [usize; 3],
    gated: bool,
    f16: bool,
    strategy: Option<MatmulStrategy>,
    budget: Duration,
) -> Result<KernelTiming> {
    let b_rows = if gated { 2 * n } else { n };
    let a = Tensor::from_f32(ctx, "bench.a", &[m, k], &pseudo_random(m * k, 1))?;
    let w = pseudo_random(b_rows * k, 2);
    let b = if f16 {
        Tensor::from_f32_as_f16(ctx, "bench.b", &[b_rows, k], &w)?
    } else {
        Tensor::from_f32(ctx, "bench.b", &[b_rows, k], &w)?
    };
    let epilogue = Epilogue {
        gated,
        activation: gated.then_some(ops::matmul::Activation::GeluErf),
        ..Epilogue::default()
    };
    // The weight format and kernel `matmul` itself would pick, so the rows measure what
    // models run.
    let (format, kernel) = {
        let rec = ctx.recorder();
        let format = ops::matmul::weight_format(&rec, &b);
        let problem = Problem {
            m,
            n,
            k,
            layout: BLayout::NK,
            gated,
        };
        let call = ops::matmul::TuneCall {
            format,
            batch: 1,
            b_batched: false,
            activation: epilogue.activation,
        };
        let kernel = strategy.unwrap_or_else(|| MatmulStrategy::picked(&rec, &problem, &call));
        (format, kernel)
    };
    let ms = time_it(ctx, budget, |rec| {
        ops::matmul::matmul_with_strategy(rec, &a, &b, &epilogue, BLayout::NK, format, Some(kernel))
    })?;
    let flops = 2.0 * (m * k * b_rows) as f64;
    let base = if gated { "matmul-gated" } else { "matmul" };
    Ok(KernelTiming {
        name: strategy.map_or_else(|| base.into(), |s| format!("{base}/{s:?}")),
        kernel: format!("{kernel:?}"),
        shape: vec![m, k, n],
        dtype: if f16 { "f16" } else { "f32" },
        ms,
        gflops: flops / (ms * 1e6),
    })
}

/// The matmul strategies other than `picked` (the [`KernelTiming::kernel`] of the row without
/// one) that compute `[m, k] × [n, k]ᵀ`, for the kernel table's comparison rows.
pub fn other_matmul_strategies(
    ctx: &GpuContext,
    [m, k, n]: [usize; 3],
    gated: bool,
    picked: &str,
) -> Vec<MatmulStrategy> {
    let problem = Problem {
        m,
        n,
        k,
        layout: BLayout::NK,
        gated,
    };
    MatmulStrategy::ALL
        .into_iter()
        .filter(|s| format!("{s:?}") != picked && s.available(ctx) && s.supports(&problem))
        .collect()
}

/// The products of aMUSEd-256 with guidance (`[m, k, n]`, gated): 512 image-token rows through
/// the 1024-wide layers — attention projections, stacked Q/K/V, the GEGLU unit (2 × 2816) and
/// its output — and the CLIP-L text encoder's MLP at 2 × 77 rows.
pub const MODEL_MATMULS: [([usize; 3], bool); 5] = [
    ([512, 1024, 1024], false),
    ([512, 1024, 3072], false),
    ([512, 1024, 2816], true),
    ([512, 2816, 1024], false),
    ([154, 768, 3072], false),
];

/// Host time per dispatch: 2000 dispatches of a 64-element kernel recorded into one
/// recorder (each reading the previous one's output) and submitted, without waiting for the
/// GPU; the best of three rounds after a warm-up, in ms per dispatch (row `dispatch-host`).
/// What recording costs the CPU apart from the kernels (pipeline lookup, parameters, bind
/// group, buffer for the output), which a GPU step pays ~100–350 times.
pub fn dispatch_host(ctx: &GpuContext) -> Result<KernelTiming> {
    const N: usize = 2000;
    let x = Tensor::from_f32(ctx, "bench.x", &[64], &pseudo_random(64, 8))?;
    let mut best = f64::INFINITY;
    for round in 0..4 {
        let t = Instant::now();
        let mut rec = ctx.recorder();
        let mut y = x.clone();
        for _ in 0..N {
            y = ops::elementwise::scale(&mut rec, &y, 1.0)?;
        }
        rec.submit();
        let ms = t.elapsed().as_secs_f64() * 1e3 / N as f64;
        ctx.wait_idle();
        if round > 0 {
            best = best.min(ms);
        }
    }
    Ok(KernelTiming {
        name: "dispatch-host".into(),
        kernel: "Scale".into(),
        shape: vec![N],
        dtype: "f32",
        ms: best,
        gflops: 0.0,
    })
}

/// Fused attention, `batch × heads` heads of `head_dim` over `lq` queries and `lk` keys, by
/// `kernel` (`None`: the one the engine picks).
pub fn attention(
    ctx: &GpuContext,
    [batch, heads, lq, lk, head_dim]: [usize; 5],
    kernel: Option<AttentionKernel>,
    budget: Duration,
) -> Result<KernelTiming> {
    let w = heads * head_dim;
    let q = Tensor::from_f32(
        ctx,
        "bench.q",
        &[batch, lq, w],
        &pseudo_random(batch * lq * w, 3),
    )?;
    let k = Tensor::from_f32(
        ctx,
        "bench.k",
        &[batch, lk, w],
        &pseudo_random(batch * lk * w, 4),
    )?;
    let v = Tensor::from_f32(
        ctx,
        "bench.v",
        &[batch, lk, w],
        &pseudo_random(batch * lk * w, 5),
    )?;
    let spec = AttentionSpec::new(heads, head_dim);
    let shape = [batch, heads, lq, lk, head_dim];
    let kernel_ran = kernel.unwrap_or_else(|| {
        AttentionKernel::picked(&ctx.recorder(), shape, false, head_dim.is_multiple_of(4))
    });
    let ms = time_it(ctx, budget, |rec| {
        ops::attention::attention_with_kernel(rec, &q, &k, &v, &spec, Some(kernel_ran))
    })?;
    let flops = 4.0 * (batch * heads * lq * lk * head_dim) as f64;
    Ok(KernelTiming {
        name: kernel.map_or_else(|| "attention".into(), |k| format!("attention/{k:?}")),
        kernel: format!("{kernel_ran:?}"),
        shape: vec![batch, heads, lq, lk, head_dim],
        dtype: "f32",
        ms,
        gflops: flops / (ms * 1e6),
    })
}

/// 3×3 same-padded convolution on `[1, cin, size, size]` → `cout` channels.
pub fn conv3x3(
    ctx: &GpuContext,
    [cin, cout, size]: [usize; 3],
    strategy: Option<ConvStrategy>,
    budget: Duration,
) -> Result<KernelTiming> {
    let x = Tensor::from_f32(
        ctx,
        "bench.x",
        &[1, cin, size, size],
        &pseudo_random(cin * size * size, 6),
    )?;
    let wt = Tensor::from_f32(
        ctx,
        "bench.w",
        &[cout, cin, 3, 3],
        &pseudo_random(cout * cin * 9, 7),
    )?;
    let spec = Conv2dSpec::same(1);
    let kernel = strategy
        .unwrap_or_else(|| ConvStrategy::picked(&ctx.recorder(), [1, cin, size, size], &wt, &spec));
    let ms = time_it(ctx, budget, |rec| {
        ops::conv::conv2d_with_strategy(rec, &x, &wt, None, &spec, Some(kernel))
    })?;
    let flops = 2.0 * (cout * cin * 9 * size * size) as f64;
    Ok(KernelTiming {
        name: strategy.map_or_else(|| "conv3x3".into(), |s| format!("conv3x3/{s:?}")),
        kernel: format!("{kernel:?}"),
        shape: vec![cin, cout, size, size],
        dtype: "f32",
        ms,
        gflops: flops / (ms * 1e6),
    })
}

/// The attention kernels other than `picked` (the [`KernelTiming::kernel`] of the row without
/// one) that compute `head_dim` on this adapter, for the kernel table's comparison rows
/// (vec4-aligned layouts; the staged kernel, for unaligned ones, only where it was picked).
pub fn other_attention_kernels(
    ctx: &GpuContext,
    head_dim: usize,
    picked: &str,
) -> Vec<AttentionKernel> {
    AttentionKernel::ALL
        .into_iter()
        .filter(|k| {
            format!("{k:?}") != picked
                && *k != AttentionKernel::Staged
                && k.available(ctx, head_dim, true)
        })
        .collect()
}

/// The convolution strategies other than `picked` (the [`KernelTiming::kernel`] of the row
/// without one) that compute [`conv3x3`] from `cin` channels, for the kernel table's
/// comparison rows.
pub fn other_conv_strategies(ctx: &GpuContext, cin: usize, picked: &str) -> Vec<ConvStrategy> {
    ConvStrategy::ALL
        .into_iter()
        .filter(|s| format!("{s:?}") != picked && s.supports(1, cin, (3, 3)) && s.available(ctx))
        .collect()
}

/// End-to-end figures of one text-to-image run (milliseconds, bytes, GPU work).
#[derive(Clone, Debug)]
pub struct EndToEnd {
    pub model: String,
    pub steps: usize,
    pub batch: usize,
    /// Prompt embedding and the step-invariant conditioning (0 for class-conditional models).
    pub text_ms: f64,
    /// The host's share of `text_ms`: recording its commands, the queue's submit calls left
    /// out ([`WorkCounts::record_ns`]).
    pub text_record_ms: f64,
    /// Mean wall time of a base-stage step.
    pub step_ms: f64,
    /// The host's share of `step_ms`: recording the step's commands, likewise.
    pub step_record_ms: f64,
    /// A two-stage model's super-resolution steps (0 for a model of one stage) and their mean
    /// wall time, the low-res encoder's one pass included.
    pub super_res_steps: usize,
    pub super_res_step_ms: f64,
    pub decode_ms: f64,
    pub total_ms: f64,
    pub peak_bytes: u64,
    /// Compute dispatches and queue submissions per base-stage decoding step (sampling and
    /// readback included), averaged over the steps.
    pub dispatches_per_step: f64,
    pub submits_per_step: f64,
    /// Kernel tuning during this run ([`crate::gpu::Tuner`]): call shapes measured and the
    /// wall time spent on them (inside `total_ms`; a first run's, as a rule).
    pub tuned_shapes: usize,
    pub tune_ms: f64,
    /// Per-kernel breakdown of each phase ("text", "steps", "decode") when the context was
    /// profiling ([`GpuContext::start_profile`]); empty otherwise.
    pub phases: Vec<(&'static str, Profile)>,
}

/// Ends a profiled phase: stores its breakdown and starts the next one.
fn end_phase(ctx: &GpuContext, phases: &mut Vec<(&'static str, Profile)>, name: &'static str) {
    if let Some(p) = ctx.take_profile() {
        phases.push((name, p));
        ctx.start_profile();
    }
}

/// Times a run through the same pipeline code as `--render` ([`pipeline::plan`],
/// [`pipeline::Plan::run`], [`pipeline::Model::decode`]): for a text model a short prompt
/// against the empty prompt at guidance 10 (the aMUSEd pipeline's default), for a
/// class-conditional one class 0; `steps` steps of the model's own sampler, then a two-stage
/// model's super-resolution stage unless `super_res` skips it (its steps: `super_res.steps`,
/// else the model's), then the VQ decode of every image.
pub fn end_to_end(
    ctx: &GpuContext,
    name: &str,
    model: &Model,
    steps: usize,
    batch: usize,
    super_res: SuperResOptions,
) -> Result<EndToEnd> {
    // The pool keeps the buffers of earlier runs, as PyTorch's caching allocator keeps the
    // reference's after its warm-up: the measured (second) run allocates nothing new, and the
    // first run's time (`first_run_ms`) includes allocation and pipeline compilation.
    ctx.reset_peak();
    let t0 = Instant::now();
    let work0 = ctx.work_counts();
    let tune0 = ctx.tuner().stats();
    let mut sampler = model.sampler_defaults(None, 0, false)?;
    sampler.steps = steps;
    let (condition, guidance) = match model.conditioning() {
        ModelConditioning::Text => (
            Condition::Text {
                prompt: "a red apple",
                negative_prompt: "",
            },
            GenerationDefaults::PIPELINE_GUIDANCE,
        ),
        ModelConditioning::Class { .. } => (
            Condition::Class {
                label: 0,
                name: None,
            },
            1.0,
        ),
    };
    let req = pipeline::Request {
        condition,
        batch,
        guidance,
        sampler,
        start: pipeline::Start::Blank(model.grid_for(super_res)),
        super_res,
    };
    let plan = pipeline::plan(ctx, model, &req)?;
    ctx.wait_idle();
    let text_ms = t0.elapsed().as_secs_f64() * 1e3;
    let text_record_ms = (ctx.work_counts() - work0).record_ns as f64 * 1e-6;
    let mut phases = Vec::new();
    end_phase(ctx, &mut phases, "text");
    let t1 = Instant::now();
    let mut work = WorkCounts::default();
    // Wall time of each stage: from the run's start to the base's last step, from there to
    // the super-resolution stage's last.
    let mut ends = [None::<f64>; 2];
    let mut super_res_steps = 0;
    let generated = plan.run(ctx, &mut |e| {
        if e.stage == 0 {
            work.dispatches += e.work.dispatches;
            work.submits += e.work.submits;
            work.record_ns += e.work.record_ns;
        } else {
            super_res_steps += 1;
        }
        ends[e.stage.min(1)] = Some(t1.elapsed().as_secs_f64() * 1e3);
        ControlFlow::Continue(())
    })?;
    let base_ms = ends[0].unwrap_or_default();
    let step_ms = base_ms / steps.max(1) as f64;
    let super_res_step_ms =
        ends[1].map_or(0.0, |end| (end - base_ms) / super_res_steps.max(1) as f64);
    // As in `--render`: the conditioning is released before decoding.
    drop(plan);
    end_phase(ctx, &mut phases, "steps");
    let t2 = Instant::now();
    let _ = model.decode(ctx, &generated.tokens, batch, generated.grid)?;
    let decode_ms = t2.elapsed().as_secs_f64() * 1e3;
    end_phase(ctx, &mut phases, "decode");
    let tune = ctx.tuner().stats();
    Ok(EndToEnd {
        tuned_shapes: tune.measured - tune0.measured,
        tune_ms: tune.ms - tune0.ms,
        phases,
        model: name.to_owned(),
        steps,
        batch,
        text_ms,
        text_record_ms,
        step_ms,
        step_record_ms: work.record_ns as f64 * 1e-6 / steps.max(1) as f64,
        super_res_steps,
        super_res_step_ms,
        decode_ms,
        total_ms: t0.elapsed().as_secs_f64() * 1e3,
        peak_bytes: ctx.memory_stats().1,
        dispatches_per_step: work.dispatches as f64 / steps.max(1) as f64,
        submits_per_step: work.submits as f64 / steps.max(1) as f64,
    })
}
