//! Kernel micro-benchmarks behind `tessera bench`: time per call and achieved GFLOPS of the
//! engine's kernels at fixed shapes, measured by wall clock around whole submissions.

use std::time::{Duration, Instant};

use crate::error::Result;
use crate::gpu::{GpuContext, Recorder, Tensor};
use crate::ops;
use crate::ops::attention::AttentionSpec;
use crate::ops::conv::Conv2dSpec;
use crate::ops::matmul::BLayout;

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

/// Matmul `[n, n] × [n, n]ᵀ` with f32 or f16 weights.
pub fn matmul(ctx: &GpuContext, n: usize, f16: bool, budget: Duration) -> Result<KernelTiming> {
    let a = Tensor::from_f32(ctx, "bench.a", &[n, n], &pseudo_random(n * n, 1))?;
    let w = pseudo_random(n * n, 2);
    let b = if f16 {
        Tensor::from_f32_as_f16(ctx, "bench.b", &[n, n], &w)?
    } else {
        Tensor::from_f32(ctx, "bench.b", &[n, n], &w)?
    };
    let ms = time_it(ctx, budget, |rec| {
        ops::matmul::matmul(rec, &a, &b, None, BLayout::NK)
    })?;
    let flops = 2.0 * (n as f64).powi(3);
    Ok(KernelTiming {
        name: "matmul".into(),
        shape: vec![n, n, n],
        dtype: if f16 { "f16" } else { "f32" },
        ms,
        gflops: flops / (ms * 1e6),
    })
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
        ops::conv::conv2d(rec, &x, &wt, None, &spec)
    })?;
    let flops = 2.0 * (cout * cin * 9 * size * size) as f64;
    Ok(KernelTiming {
        name: "conv3x3".into(),
        shape: vec![cin, cout, size, size],
        dtype: "f32",
        ms,
        gflops: flops / (ms * 1e6),
    })
}
