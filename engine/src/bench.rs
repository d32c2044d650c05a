//! Kernel micro-benchmarks behind `tessera bench`: time per call and achieved GFLOPS of the
//! engine's kernels at fixed shapes, measured by wall clock around whole submissions.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::gpu::{GpuContext, Profile, Recorder, Tensor, WorkCounts};
use crate::models::amused::GenerationDefaults;
use crate::ops;
use crate::ops::attention::AttentionSpec;
use crate::ops::conv::{Conv2dSpec, ConvStrategy};
use crate::ops::matmul::{BLayout, Epilogue, MatmulStrategy, Problem};
use crate::pipeline::{self, Condition, Model, ModelConditioning};

/// One measured kernel configuration.
#[derive(Clone, Debug)]
pub struct KernelTiming {
    pub name: String,
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
/// (at least once); returns milliseconds per call.
fn time_it(
    ctx: &GpuContext,
    budget: Duration,
    mut record: impl FnMut(&mut Recorder<'_>) -> Result<Tensor>,
) -> Result<f64> {
    let mut rec = ctx.recorder();
    let out = record(&mut rec)?;
    rec.submit();
    ctx.wait_idle();
    drop(out);
    let start = Instant::now();
    let mut calls = 0u32;
    while calls == 0 || start.elapsed() < budget {
        let mut rec = ctx.recorder();
        let out = record(&mut rec)?;
        rec.submit();
        ctx.wait_idle();
        drop(out);
        calls += 1;
    }
    Ok(start.elapsed().as_secs_f64() * 1e3 / f64::from(calls))
}

/// Matmul `[n, n] × [n, n]ᵀ` with f32 or f16 weights, by the kernel
/// [`MatmulStrategy::choose`] picks (`strategy` None; named "matmul") or by `strategy` (named
/// "matmul/<strategy>").
pub fn matmul(
    ctx: &GpuContext,
    n: usize,
    f16: bool,
    strategy: Option<MatmulStrategy>,
    budget: Duration,
) -> Result<KernelTiming> {
    let a = Tensor::from_f32(ctx, "bench.a", &[n, n], &pseudo_random(n * n, 1))?;
    let w = pseudo_random(n * n, 2);
    let b = if f16 {
        Tensor::from_f32_as_f16(ctx, "bench.b", &[n, n], &w)?
    } else {
        Tensor::from_f32(ctx, "bench.b", &[n, n], &w)?
    };
    // The weight format `matmul` itself would pick, so the rows measure what models run.
    let ms = time_it(ctx, budget, |rec| {
        let format = ops::matmul::weight_format(rec, &b);
        ops::matmul::matmul_with_strategy(
            rec,
            &a,
            &b,
            &Epilogue::default(),
            BLayout::NK,
            format,
            strategy,
        )
    })?;
    let flops = 2.0 * (n as f64).powi(3);
    Ok(KernelTiming {
        name: strategy.map_or_else(|| "matmul".into(), |s| format!("matmul/{s:?}")),
        shape: vec![n, n, n],
        dtype: if f16 { "f16" } else { "f32" },
        ms,
        gflops: flops / (ms * 1e6),
    })
}

/// The matmul strategies other than the chosen one that compute `[n, n] × [n, n]ᵀ` (for the
/// kernel table's comparison rows).
pub fn other_matmul_strategies(ctx: &GpuContext, n: usize) -> Vec<MatmulStrategy> {
    let problem = Problem {
        m: n,
        n,
        k: n,
        layout: BLayout::NK,
        gated: false,
    };
    let chosen = MatmulStrategy::choose(ctx.kernel_family(), ctx.cooperative_matrix_16(), &problem);
    MatmulStrategy::ALL
        .into_iter()
        .filter(|s| *s != chosen && s.available(ctx) && s.supports(&problem))
        .collect()
}

/// Fused attention, `batch × heads` heads of `head_dim` over `lq` queries and `lk` keys.
pub fn attention(
    ctx: &GpuContext,
    [batch, heads, lq, lk, head_dim]: [usize; 5],
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
    let ms = time_it(ctx, budget, |rec| {
        ops::attention::attention(rec, &q, &k, &v, &spec)
    })?;
    let flops = 4.0 * (batch * heads * lq * lk * head_dim) as f64;
    Ok(KernelTiming {
        name: "attention".into(),
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
    let ms = time_it(ctx, budget, |rec| {
        ops::conv::conv2d_with_strategy(rec, &x, &wt, None, &spec, strategy)
    })?;
    let flops = 2.0 * (cout * cin * 9 * size * size) as f64;
    Ok(KernelTiming {
        name: strategy.map_or_else(|| "conv3x3".into(), |s| format!("conv3x3/{s:?}")),
        shape: vec![cin, cout, size, size],
        dtype: "f32",
        ms,
        gflops: flops / (ms * 1e6),
    })
}

/// The convolution strategies other than the chosen one (for the kernel table's comparison
/// rows).
pub fn other_conv_strategies(ctx: &GpuContext) -> Vec<ConvStrategy> {
    let chosen = ConvStrategy::choose(ctx.kernel_family(), 1);
    ConvStrategy::ALL
        .into_iter()
        .filter(|s| *s != chosen && s.supports(1))
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
    pub step_ms: f64,
    pub decode_ms: f64,
    pub total_ms: f64,
    pub peak_bytes: u64,
    /// Compute dispatches and queue submissions per decoding step (sampling and readback
    /// included), averaged over the steps.
    pub dispatches_per_step: f64,
    pub submits_per_step: f64,
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
/// class-conditional one class 0; `steps` steps of the model's own sampler, then the VQ decode
/// of every image.
pub fn end_to_end(
    ctx: &GpuContext,
    name: &str,
    model: &Model,
    steps: usize,
    batch: usize,
) -> Result<EndToEnd> {
    ctx.trim_pool();
    let t0 = Instant::now();
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
        start: pipeline::Start::Blank(model.grid()),
    };
    let plan = pipeline::plan(ctx, model, &req)?;
    ctx.wait_idle();
    let text_ms = t0.elapsed().as_secs_f64() * 1e3;
    let mut phases = Vec::new();
    end_phase(ctx, &mut phases, "text");
    let t1 = Instant::now();
    let mut work = WorkCounts::default();
    let generated = plan.run(ctx, &mut |e| {
        work.dispatches += e.work.dispatches;
        work.submits += e.work.submits;
        ControlFlow::Continue(())
    })?;
    let step_ms = t1.elapsed().as_secs_f64() * 1e3 / steps.max(1) as f64;
    // As in `--render`: the conditioning is released before decoding.
    drop(plan);
    end_phase(ctx, &mut phases, "steps");
    let t2 = Instant::now();
    let _ = model.decode(ctx, &generated.tokens, batch, generated.grid)?;
    let decode_ms = t2.elapsed().as_secs_f64() * 1e3;
    end_phase(ctx, &mut phases, "decode");
    Ok(EndToEnd {
        phases,
        model: name.to_owned(),
        steps,
        batch,
        text_ms,
        step_ms,
        decode_ms,
        total_ms: t0.elapsed().as_secs_f64() * 1e3,
        peak_bytes: ctx.memory_stats().1,
        dispatches_per_step: work.dispatches as f64 / steps.max(1) as f64,
        submits_per_step: work.submits as f64 / steps.max(1) as f64,
    })
}
