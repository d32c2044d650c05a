//! Kernel micro-benchmarks behind `tessera bench`: time per call and achieved GFLOPS of the
//! engine's kernels at fixed shapes, measured by wall clock around whole submissions.

use std::time::{Duration, Instant};

use crate::error::Result;
use crate::gpu::{GpuContext, Profile, Recorder, Tensor};
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

/// One sampling draw per position of `logits` `[B, L, V]` (fixed pseudo-uniforms), submitted
/// with everything recorded before it; reads back ids and confidences as the samplers do.
fn sample_and_read(mut rec: Recorder<'_>, logits: &Tensor, step: usize) -> Result<Vec<u32>> {
    let ctx = rec.ctx();
    let v = logits.shape()[2];
    let rows = logits.numel() / v;
    let uni: Vec<f32> = (0..rows)
        .map(|i| ((i * 7919 + step * 104_729) % 1000) as f32 / 1000.0)
        .collect();
    let tu = Tensor::from_f32(ctx, "uniforms", &[rows], &uni)?;
    let (ids, probs) =
        ops::sampling::categorical(&mut rec, &logits.reshape(&[rows, v])?, &tu, 1.0)?;
    rec.submit();
    let _ = probs.to_f32(ctx)?;
    ids.to_u32(ctx)
}

/// End-to-end figures of one text-to-image run (milliseconds, bytes).
#[derive(Clone, Debug)]
pub struct EndToEnd {
    pub model: String,
    pub steps: usize,
    pub batch: usize,
    pub text_ms: f64,
    pub step_ms: f64,
    pub decode_ms: f64,
    pub total_ms: f64,
    pub peak_bytes: u64,
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

/// The three networks of an aMUSEd pipeline.
pub struct Components<'a> {
    pub text: &'a crate::models::clip_text::ClipTextModel,
    pub transformer: &'a crate::models::uvit2d::UVit2DModel,
    pub vq: &'a crate::models::vq::VqModel,
}

/// Times a guided text-to-image run the way the pipeline does it: text for [uncond; cond],
/// `steps` transformer passes on a batch of 2·`batch` with guidance and sampling (reading back
/// only ids and confidences), then the VQ decode.
pub fn end_to_end(
    ctx: &GpuContext,
    name: &str,
    c: &Components<'_>,
    steps: usize,
    batch: usize,
) -> Result<EndToEnd> {
    use crate::models::uvit2d::Conditioning;
    ctx.trim_pool();
    let t0 = Instant::now();
    let tc = &c.transformer.config;
    let len = c.text.config.max_position_embeddings;
    // Two rows of token ids (an empty and a short prompt), the shape the tokenizer produces.
    let mut ids = vec![
        c.text
            .config
            .eos_token_id
            .min(c.text.config.vocab_size as u32 - 1);
        2 * len
    ];
    for (i, id) in ids.iter_mut().enumerate().skip(len).take(5) {
        *id = (i as u32 * 97) % c.text.config.vocab_size as u32;
    }
    let mut rec = ctx.recorder();
    let emb = c.text.forward(&mut rec, &ids, 2)?;
    rec.submit();
    let pooled = emb.pooled.to_f32(ctx)?;
    let text_ms = t0.elapsed().as_secs_f64() * 1e3;
    let mut phases = Vec::new();
    end_phase(ctx, &mut phases, "text");
    let repeat = |v: &[f32], per: usize| -> Vec<f32> {
        let (u, cnd) = v.split_at(per);
        let mut out = Vec::with_capacity(2 * batch * per);
        for _ in 0..batch {
            out.extend_from_slice(u);
        }
        for _ in 0..batch {
            out.extend_from_slice(cnd);
        }
        out
    };
    let hidden_v = emb.penultimate.to_f32(ctx)?;
    let (pd, hd) = (pooled.len() / 2, hidden_v.len() / 2);
    let pooled = Tensor::from_f32(ctx, "pooled", &[2 * batch, pd], &repeat(&pooled, pd))?;
    let hidden = Tensor::from_f32(
        ctx,
        "hidden",
        &[2 * batch, len, hd / len],
        &repeat(&hidden_v, hd),
    )?;
    let f = c.vq.config.scale_factor();
    let side = tc.sample_size;
    let micro_row = [(side * f) as f32, (side * f) as f32, 0.0, 0.0, 6.0];
    let micro = Tensor::from_f32(ctx, "micro", &[2 * batch, 5], &micro_row.repeat(2 * batch))?;
    let l = side * side;
    let mut tokens = vec![tc.mask_token_id(); batch * l];
    let t1 = Instant::now();
    for step in 0..steps {
        let both: Vec<u32> = tokens.iter().chain(tokens.iter()).copied().collect();
        let tt = Tensor::from_u32(ctx, "tokens", &[2 * batch, side, side], &both)?;
        let mut rec = ctx.recorder();
        let logits = c.transformer.forward(
            &mut rec,
            &tt,
            &Conditioning {
                pooled: &pooled,
                hidden: &hidden,
                micro_conds: &micro,
            },
        )?;
        let u = ops::layout::slice(&mut rec, &logits, 0, 0, batch)?;
        let cnd = ops::layout::slice(&mut rec, &logits, 0, batch, batch)?;
        let guided = ops::elementwise::axpby(&mut rec, -9.0, &u, 10.0, &cnd)?;
        tokens = sample_and_read(rec, &guided, step)?;
    }
    let step_ms = t1.elapsed().as_secs_f64() * 1e3 / steps.max(1) as f64;
    end_phase(ctx, &mut phases, "steps");
    let t2 = Instant::now();
    let tt = Tensor::from_u32(ctx, "tokens", &[batch, side, side], &tokens)?;
    let mut rec = ctx.recorder();
    let img = c.vq.decode(&mut rec, &tt)?;
    rec.submit();
    let _ = img.to_f32(ctx)?;
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
    })
}

/// End-to-end figures of a class-conditional MaskGIT run: `steps` transformer passes with
/// sampling (reading back ids and confidences), then the VQGAN decode. `text_ms` is 0.
pub fn maskgit_end_to_end(
    ctx: &GpuContext,
    name: &str,
    mg: &crate::models::maskgit::MaskGit,
    steps: usize,
    batch: usize,
) -> Result<EndToEnd> {
    ctx.trim_pool();
    let t0 = Instant::now();
    let (gh, gw) = mg.grid();
    let l = gh * gw;
    let labels: Vec<u32> = (0..batch as u32)
        .map(|b| b % mg.num_classes() as u32)
        .collect();
    let mut tokens = vec![mg.mask_id(); batch * l];
    for step in 0..steps {
        let tt = Tensor::from_u32(ctx, "tokens", &[batch, gh, gw], &tokens)?;
        let mut rec = ctx.recorder();
        let logits = mg.logits(&mut rec, &tt, &labels)?;
        tokens = sample_and_read(rec, &logits, step)?;
    }
    let step_ms = t0.elapsed().as_secs_f64() * 1e3 / steps.max(1) as f64;
    let mut phases = Vec::new();
    end_phase(ctx, &mut phases, "steps");
    let t1 = Instant::now();
    let tt = Tensor::from_u32(ctx, "tokens", &[batch, gh, gw], &tokens)?;
    let mut rec = ctx.recorder();
    let img = mg.decode(&mut rec, &tt)?;
    rec.submit();
    let _ = img.to_f32(ctx)?;
    let decode_ms = t1.elapsed().as_secs_f64() * 1e3;
    end_phase(ctx, &mut phases, "decode");
    Ok(EndToEnd {
        phases,
        model: name.to_owned(),
        steps,
        batch,
        text_ms: 0.0,
        step_ms,
        decode_ms,
        total_ms: t0.elapsed().as_secs_f64() * 1e3,
        peak_bytes: ctx.memory_stats().1,
    })
}
