//! `tessera bench`: kernel figures on the chosen adapter, as a table or one JSON object.

use std::time::Duration;

use anyhow::Result;
use clap::Args;
use tessera_engine::GpuContext;
use tessera_engine::bench::{self, KernelTiming};

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
}

pub fn run(args: &BenchArgs) -> Result<()> {
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
            println!(
                "{:<10} {:<24} {:<4} {:>10.3} ms {:>9.2} GFLOPS",
                t.name,
                format!("{:?}", t.shape),
                t.dtype,
                t.ms,
                t.gflops
            );
        }
        timings.push(t);
    };
    for &n in &args.sizes {
        emit(bench::matmul(&ctx, n, false, budget)?);
        emit(bench::matmul(&ctx, n, true, budget)?);
    }
    // aMUSEd-256 shapes: 16 heads × 64 over 256 image tokens, self and cross (77 text tokens).
    emit(bench::attention(&ctx, [1, 16, 256, 256, 64], budget)?);
    emit(bench::attention(&ctx, [1, 16, 256, 77, 64], budget)?);
    // VQ decoder's widest 3×3 conv at 16×16 and its 128-channel conv at 64×64.
    emit(bench::conv3x3(&ctx, [768, 768, 16], budget)?);
    emit(bench::conv3x3(&ctx, [128, 128, 64], budget)?);
    if args.json {
        let kernels: Vec<_> = timings
            .iter()
            .map(|t| {
                serde_json::json!({
                    "name": t.name, "shape": t.shape, "dtype": t.dtype, "ms": t.ms, "gflops": t.gflops
                })
            })
            .collect();
        let out = serde_json::json!({
            "adapter": { "name": ctx.info.name, "backend": format!("{:?}", ctx.info.backend) },
            "kernels": kernels,
        });
        println!("{out}");
    }
    Ok(())
}
