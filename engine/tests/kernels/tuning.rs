//! Kernel tuning ([`Tuner`]) on a real device: a tuned call measures its candidates once per
//! shape, outside the work counts, and computes what the CPU reference does whichever kernel
//! wins. Runs on lavapipe with tuning switched on (off there by default).

use std::sync::OnceLock;

use tessera_engine::gpu::{KernelFamily, Tuner};
use tessera_engine::ops::attention::{AttentionSpec, attention};
use tessera_engine::ops::conv::{Conv2dSpec, conv2d};
use tessera_engine::ops::matmul::{BLayout, Epilogue, matmul, matmul_fused};
use tessera_engine::{GpuContext, Recorder, Tensor};

use crate::common::{assert_close, randn, rng};

/// A context of its own (the shared one keeps the adapter's default: no tuning on lavapipe),
/// tuning in memory.
fn tuned() -> &'static GpuContext {
    static CTX: OnceLock<GpuContext> = OnceLock::new();
    CTX.get_or_init(|| {
        let mut ctx = GpuContext::new().expect("GPU tests need a wgpu adapter");
        ctx.set_tuner(Tuner::in_memory());
        ctx
    })
}

fn up(name: &str, shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::from_f32(tuned(), name, shape, data).expect("upload")
}

/// Runs `f` on the tuned context in `family`, returning its output, the tuner's new
/// measurements and the dispatches counted.
fn run_tuned(
    family: KernelFamily,
    f: impl FnOnce(&mut Recorder<'_>) -> tessera_engine::Result<Tensor>,
) -> (Vec<f32>, usize, u64) {
    let ctx = tuned();
    let (measured, work) = (ctx.tuner().stats().measured, ctx.work_counts());
    let mut rec = ctx.recorder();
    rec.set_kernel_family(family);
    let out = f(&mut rec).expect("op");
    rec.submit();
    let got = out.to_f32(ctx).expect("download");
    assert_eq!(ctx.take_device_error(), None);
    (
        got,
        ctx.tuner().stats().measured - measured,
        (ctx.work_counts() - work).dispatches,
    )
}

/// Tolerance: the f32 kernels' where the adapter has no cooperative matrices; where it has
/// them, a tensor-core kernel may win and round its operands to f16.
fn tol() -> f64 {
    if tuned().cooperative_matrix().is_some() {
        2e-2
    } else {
        1e-4
    }
}

fn has_choice(prefix: &str) -> bool {
    tuned()
        .tuner()
        .choices()
        .iter()
        .any(|(k, _)| k.starts_with(prefix))
}

/// A kernel the driver refuses while being timed (here: a bind group that leaves out the
/// kernel's inputs) is an error of the timing, not a fast no-op, and its validation error
/// stays out of the context's error slot.
#[test]
fn timing_a_refused_kernel_is_an_error() {
    use tessera_engine::gpu::time_calls;
    let ctx = crate::common::ctx();
    let spec = tessera_engine::shaders::all_specs()
        .into_iter()
        .find(|s| s.entry == "matmul")
        .expect("a matmul kernel");
    let timed = time_calls(ctx, |rec| {
        let out = Tensor::empty(ctx, "out", &[64], tessera_engine::DType::F32)?;
        rec.dispatch(
            &spec,
            &[0u8; 32],
            &[(4, tessera_engine::gpu::Binding::Tensor(&out))],
            [1, 1, 1],
        )?;
        Ok(out)
    });
    assert!(
        matches!(timed, Err(tessera_engine::Error::Tuning { .. })),
        "{timed:?}"
    );
    assert_eq!(ctx.take_device_error(), None);
}

/// One test: the measurement counts are the tuner's, shared by everything on its context.
#[test]
fn tuned_kernels_match_the_reference_and_measure_once() {
    matmuls();
    convolutions_and_attention();
}

fn matmuls() {
    // Off the tiles, B shared (folded into M) and batched, both layouts, a gated unit.
    for family in crate::common::FAMILIES {
        for (batch, m, n, k, layout, b_batched) in [
            (2, 37, 70, 52, BLayout::NK, false),
            (3, 19, 44, 28, BLayout::KN, true),
        ] {
            let mut r = rng(41 + m as u64);
            let a = randn(&mut r, batch * m * k);
            let b = randn(&mut r, if b_batched { batch } else { 1 } * n * k);
            let ta = up("a", &[batch, m, k], &a);
            let b_shape = match (layout, b_batched) {
                (BLayout::NK, false) => vec![n, k],
                (BLayout::KN, false) => vec![k, n],
                (BLayout::NK, true) => vec![batch, n, k],
                (BLayout::KN, true) => vec![batch, k, n],
            };
            let tb = up("b", &b_shape, &b);
            let want = crate::matmul::reference(&a, &b, None, batch, m, n, k, layout, b_batched);
            let (got, measured, dispatches) =
                run_tuned(family, |rec| matmul(rec, &ta, &tb, None, layout));
            assert_close("tuned matmul", &got, &want, tol(), tol());
            assert_eq!(
                measured, 1,
                "{family:?} {layout:?}: one shape, one measurement"
            );
            assert_eq!(dispatches, 1, "tuning's own dispatches are not counted");
            let (again, measured, _) = run_tuned(family, |rec| matmul(rec, &ta, &tb, None, layout));
            assert_eq!(measured, 0, "the same shape again reuses the choice");
            assert_eq!(got, again, "the same kernel both times");
        }
    }
    assert!(has_choice("matmul Tiled F32 NK batch 1 [74, 70, 52]"));
    assert!(has_choice(
        "matmul Cpu F32 KN batched-B batch 3 [19, 44, 28]"
    ));
    // A gated unit: value rows then gate rows, GELU on the gate.
    let (m, n, k) = (21, 24, 36);
    let mut r = rng(7);
    let a = randn(&mut r, m * k);
    let b = randn(&mut r, 2 * n * k);
    let (ta, tb) = (up("a", &[m, k], &a), up("b", &[2 * n, k], &b));
    let both = crate::matmul::reference(&a, &b, None, 1, m, 2 * n, k, BLayout::NK, false);
    let gelu = |x: f64| 0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2));
    let want: Vec<f64> = (0..m * n)
        .map(|i| {
            let (row, col) = (i / n, i % n);
            both[row * 2 * n + col] * gelu(both[row * 2 * n + n + col])
        })
        .collect();
    let epilogue = Epilogue {
        gated: true,
        activation: Some(tessera_engine::ops::matmul::Activation::GeluErf),
        ..Epilogue::default()
    };
    let (got, measured, _) = run_tuned(KernelFamily::Tiled, |rec| {
        matmul_fused(rec, &ta, &tb, BLayout::NK, &epilogue)
    });
    assert_close("tuned gated matmul", &got, &want, tol(), tol());
    assert_eq!(measured, 1);
}

fn convolutions_and_attention() {
    let (xs, cout) = ([2, 12, 9, 11], 10);
    let s = Conv2dSpec::same(1);
    let mut r = rng(5);
    let x = randn(&mut r, xs.iter().product());
    let wt = randn(&mut r, cout * xs[1] * 9);
    let (want, shape) = crate::conv::conv_ref(&x, xs, &wt, [cout, 3, 3], None, &s);
    let (tx, tw) = (up("x", &xs, &x), up("w", &[cout, xs[1], 3, 3], &wt));
    for family in crate::common::FAMILIES {
        let (got, measured, dispatches) = run_tuned(family, |rec| conv2d(rec, &tx, &tw, None, &s));
        assert_eq!(got.len(), shape.iter().product::<usize>());
        assert_close("tuned conv2d", &got, &want, tol(), tol());
        assert_eq!((measured, dispatches), (1, 1), "{family:?}");
    }
    assert!(has_choice("conv2d Cpu F32 [2, 12, 9, 11] by [10, 3, 3]"));

    // Attention off its query tiles, self and causal.
    let (b, lq, lk, h, d) = (2, 13, 17, 3, 8);
    let w = h * d;
    let mut r = rng(9);
    let q = randn(&mut r, b * lq * w);
    let k = randn(&mut r, b * lk * w);
    let v = randn(&mut r, b * lk * w);
    let (tq, tk, tv) = (
        up("q", &[b, lq, w], &q),
        up("k", &[b, lk, w], &k),
        up("v", &[b, lk, w], &v),
    );
    for causal in [false, true] {
        let mut spec = AttentionSpec::new(h, d);
        spec.causal = causal;
        let want =
            crate::attention::reference(&q, &k, &v, (b, lq, lk), (h, d), (w, 0), (w, 0, 0), causal);
        let (got, measured, dispatches) = run_tuned(KernelFamily::Tiled, |rec| {
            attention(rec, &tq, &tk, &tv, &spec)
        });
        assert_close("tuned attention", &got, &want, tol(), tol());
        assert_eq!((measured, dispatches), (1, 1), "causal {causal}");
    }
    assert!(has_choice("attention Tiled causal [2, 3, 13, 17, 8]"));
}
