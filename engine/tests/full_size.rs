//! The published amused-256 configuration at full size (≈ 600 M transformer parameters) with
//! synthetic weights: it must load within the adapter's limits and run one forward pass.
//! Slow on a software adapter (minutes), so ignored by default:
//! `cargo test --release -p tessera-engine --test full_size -- --ignored`.

use tessera_engine::io::{Checkpoint, Loader};
use tessera_engine::models::amused::uvit2d::{Conditioning, Config, UVit2DModel};
use tessera_engine::{GpuContext, Tensor};

#[test]
#[ignore = "minutes on lavapipe; run explicitly"]
fn amused_256_transformer_loads_and_runs_one_forward() {
    let ctx = GpuContext::new().expect("adapter");
    let cfg = Config::amused_256();
    let ckpt = Checkpoint::synthetic(7);
    let t0 = std::time::Instant::now();
    let model = Loader::load(&ctx, &ckpt, true, |l| UVit2DModel::new(l, &cfg)).expect("load");
    let (live, _) = ctx.memory_stats();
    eprintln!(
        "loaded in {:.1} s, {:.0} MiB of weights on the GPU",
        t0.elapsed().as_secs_f64(),
        live as f64 / 1048576.0
    );
    let b = 2; // classifier-free guidance batch
    let side = cfg.sample_size;
    let ids: Vec<u32> = (0..b * side * side)
        .map(|i| {
            if i % 2 == 0 {
                cfg.mask_token_id()
            } else {
                (i * 37 % 8192) as u32
            }
        })
        .collect();
    let tokens = Tensor::from_u32(&ctx, "tokens", &[b, side, side], &ids).expect("tokens");
    let pooled = Tensor::from_f32(
        &ctx,
        "pooled",
        &[b, cfg.cond_embed_dim],
        &vec![0.1; b * cfg.cond_embed_dim],
    )
    .expect("pooled");
    let hidden = Tensor::from_f32(
        &ctx,
        "hidden",
        &[b, 77, cfg.encoder_hidden_size],
        &vec![0.05; b * 77 * cfg.encoder_hidden_size],
    )
    .expect("hidden");
    let micro = Tensor::from_f32(
        &ctx,
        "micro",
        &[b, 5],
        &[256.0, 256.0, 0.0, 0.0, 6.0].repeat(b),
    )
    .expect("micro");
    let t1 = std::time::Instant::now();
    let mut rec = ctx.recorder();
    let logits = model
        .forward(
            &mut rec,
            &tokens,
            &Conditioning {
                pooled: &pooled,
                hidden: &hidden,
                micro_conds: &micro,
            },
        )
        .expect("forward");
    rec.submit();
    let v = logits.to_f32(&ctx).expect("read");
    let (_, peak) = ctx.memory_stats();
    eprintln!(
        "forward (batch {b}) in {:.1} s; peak {:.0} MiB",
        t1.elapsed().as_secs_f64(),
        peak as f64 / 1048576.0
    );
    assert_eq!(logits.shape(), &[b, side * side, cfg.codebook_size]);
    assert!(v.iter().all(|x| x.is_finite()));
    let spread = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    assert!(spread > 0.0, "logits are all zero");
}
