use tessera_engine::ops::matmul::{
    Activation, BLayout, Epilogue, MatmulStrategy, Problem, linear, matmul, matmul_with_format,
    matmul_with_strategy,
};
use tessera_engine::shaders::{CoopShape, WeightFormat};
use tessera_engine::{DType, Error, GpuContext, Tensor};

use crate::common::*;

/// C[b] = A[b]·op(B[b or shared]) + bias, in f64.
#[allow(clippy::too_many_arguments)]
pub(crate) fn reference(
    a: &[f32],
    b: &[f32],
    bias: Option<&[f32]>,
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    layout: BLayout,
    b_batched: bool,
) -> Vec<f64> {
    let mut c = vec![0.0f64; batch * m * n];
    for bi in 0..batch {
        let bo = if b_batched { bi * n * k } else { 0 };
        for i in 0..m {
            for j in 0..n {
                let mut s = bias.map_or(0.0, |bb| f64::from(bb[j]));
                for p in 0..k {
                    let bv = match layout {
                        BLayout::KN => b[bo + p * n + j],
                        BLayout::NK => b[bo + j * k + p],
                    };
                    s += f64::from(a[bi * m * k + i * k + p]) * f64::from(bv);
                }
                c[bi * m * n + i * n + j] = s;
            }
        }
    }
    c
}

/// The kernel strategies that compute a product of this shape (at least one always does).
fn strategies(m: usize, n: usize, k: usize, layout: BLayout, gated: bool) -> Vec<MatmulStrategy> {
    let problem = Problem {
        m,
        n,
        k,
        layout,
        gated,
    };
    let v: Vec<MatmulStrategy> = MatmulStrategy::ALL
        .into_iter()
        .filter(|s| s.available(ctx()) && s.supports(&problem))
        .collect();
    assert!(v.contains(&MatmulStrategy::Tile32));
    v
}

fn round_f16(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect()
}

#[allow(clippy::too_many_arguments)]
fn check(
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    layout: BLayout,
    b_batched: bool,
    with_bias: bool,
    format: WeightFormat,
    seed: u64,
) {
    let mut r = rng(seed);
    let a = randn(&mut r, batch * m * k);
    let nb = if b_batched { batch } else { 1 };
    let mut b = randn(&mut r, nb * n * k);
    if format != WeightFormat::F32 {
        b = round_f16(&b);
    }
    let bias = with_bias.then(|| randn(&mut r, n));
    let ta = upload("a", &[batch, m, k], &a);
    let b_shape: Vec<usize> = match (layout, b_batched) {
        (BLayout::KN, false) => vec![k, n],
        (BLayout::NK, false) => vec![n, k],
        (BLayout::KN, true) => vec![batch, k, n],
        (BLayout::NK, true) => vec![batch, n, k],
    };
    let tb = match format {
        WeightFormat::F32 => upload("b", &b_shape, &b),
        _ => Tensor::from_f32_as_f16(ctx(), "b", &b_shape, &b).expect("upload f16"),
    };
    let tbias = bias.as_ref().map(|v| upload("bias", &[n], v));
    let want = reference(&a, &b, bias.as_deref(), batch, m, n, k, layout, b_batched);
    let atol = 2e-5 * (k as f64).sqrt();
    // Every kernel strategy that computes this product, whatever the adapter would pick.
    let gm = if b_batched { m } else { batch * m };
    for strategy in strategies(gm, n, k, layout, false) {
        let out = run(|rec| {
            matmul_with_strategy(
                rec,
                &ta,
                &tb,
                &Epilogue::bias(tbias.as_ref()),
                layout,
                format,
                Some(strategy),
            )
        });
        assert_eq!(out.shape(), &[batch, m, n]);
        // The cooperative-matrix kernel multiplies f16 roundings of A and B.
        let want = if strategy.rounds_to_f16() {
            &reference(
                &round_f16(&a),
                &round_f16(&b),
                bias.as_deref(),
                batch,
                m,
                n,
                k,
                layout,
                b_batched,
            )
        } else {
            &want
        };
        assert_close(
            &format!(
                "matmul {batch}x{m}x{n}x{k} {layout:?} batched={b_batched} {format:?} {strategy:?}"
            ),
            &download(&out),
            want,
            atol,
            1e-4,
        );
    }
}

#[test]
fn register_blocked_kernel_edges_batches_and_formats() {
    // Its block is 64 rows × 128 columns: sizes below, across and not multiples of it.
    check_nk_cases(
        &[
            (1, 1, 1, 4, false),
            (1, 130, 260, 36, false),
            (2, 65, 129, 8, true),
            (3, 64, 128, 64, false),
            (1, 7, 300, 100, false),
        ],
        500,
    );
}

/// [`check`] on `[N, K]` products `(batch, m, n, k, b_batched)` in every weight format the
/// adapter has, bias on every other one.
fn check_nk_cases(cases: &[(usize, usize, usize, usize, bool)], mut seed: u64) {
    let mut formats = vec![WeightFormat::F32, WeightFormat::F16Packed];
    if ctx().has_f16() {
        formats.push(WeightFormat::F16);
    }
    for &(batch, m, n, k, b_batched) in cases {
        for &format in &formats {
            check(
                batch,
                m,
                n,
                k,
                BLayout::NK,
                b_batched,
                seed.is_multiple_of(2),
                format,
                seed,
            );
            seed += 1;
        }
    }
}

/// The few-row kernel (at most 8 rows; 32 columns and 8 lanes along K per workgroup): rows 1–8,
/// columns off its 32, K off its 8-lane stride, batched and shared B, every weight format.
#[test]
fn few_row_kernel_edges_batches_and_formats() {
    let cases = [
        (1, 1, 1, 4, false),
        (1, 1, 33, 36, false),
        (1, 8, 70, 1028, false),
        (3, 2, 40, 12, true),
        (2, 4, 65, 20, false),
    ];
    for &(batch, m, n, k, b_batched) in &cases {
        let rows = if b_batched { m } else { batch * m };
        assert!(strategies(rows, n, k, BLayout::NK, false).contains(&MatmulStrategy::Gemv));
    }
    check_nk_cases(&cases, 700);
}

#[test]
fn f32_odd_sizes_both_layouts_with_and_without_bias() {
    let mut seed = 1;
    for &(m, n, k) in &[
        (1, 1, 1),
        (7, 5, 3),
        (33, 31, 17),
        (64, 64, 64),
        (70, 45, 100),
    ] {
        for layout in [BLayout::KN, BLayout::NK] {
            for bias in [false, true] {
                check(1, m, n, k, layout, false, bias, WeightFormat::F32, seed);
                seed += 1;
            }
        }
    }
}

#[test]
fn f32_batched_b_and_shared_b() {
    check(
        3,
        19,
        37,
        41,
        BLayout::NK,
        true,
        true,
        WeightFormat::F32,
        100,
    );
    check(
        3,
        19,
        37,
        41,
        BLayout::KN,
        true,
        false,
        WeightFormat::F32,
        101,
    );
    check(
        4,
        9,
        33,
        20,
        BLayout::NK,
        false,
        true,
        WeightFormat::F32,
        102,
    );
    check(
        2,
        33,
        16,
        48,
        BLayout::KN,
        false,
        false,
        WeightFormat::F32,
        103,
    );
}

#[test]
fn f16_packed_weights() {
    check(
        1,
        35,
        29,
        45,
        BLayout::NK,
        false,
        true,
        WeightFormat::F16Packed,
        200,
    );
    check(
        2,
        17,
        30,
        33,
        BLayout::KN,
        true,
        false,
        WeightFormat::F16Packed,
        201,
    );
    // Odd K and N: element pairs straddle rows.
    check(
        1,
        5,
        7,
        9,
        BLayout::NK,
        false,
        false,
        WeightFormat::F16Packed,
        202,
    );
}

#[test]
fn f16_native_weights() {
    if !ctx().has_f16() {
        // The packed path above covers this device; say so loudly rather than pass silently.
        eprintln!(
            "adapter {:?} lacks SHADER_F16: native f16 matmul not run",
            ctx().info.name
        );
        return;
    }
    check(
        1,
        35,
        29,
        45,
        BLayout::NK,
        false,
        true,
        WeightFormat::F16,
        300,
    );
    check(
        2,
        17,
        30,
        33,
        BLayout::KN,
        true,
        false,
        WeightFormat::F16,
        301,
    );
    check(
        1,
        5,
        7,
        9,
        BLayout::NK,
        false,
        false,
        WeightFormat::F16,
        302,
    );
}

#[test]
fn linear_uses_pytorch_weight_layout_and_keeps_leading_dims() {
    let mut r = rng(400);
    let (b, l, inp, out) = (2, 5, 12, 7);
    let x = randn(&mut r, b * l * inp);
    let w = randn(&mut r, out * inp);
    let tx = upload("x", &[b, l, inp], &x);
    let tw = upload("w", &[out, inp], &w);
    let y = run(|rec| linear(rec, &tx, &tw, None));
    assert_eq!(y.shape(), &[b, l, out]);
    let want = reference(&x, &w, None, 1, b * l, out, inp, BLayout::NK, false);
    assert_close("linear", &download(&y), &want, 1e-4, 1e-4);
}

#[test]
fn dispatch_picks_f16_kernel_for_f16_weights() {
    let mut r = rng(401);
    let a = randn(&mut r, 6 * 10);
    let w = round_f16(&randn(&mut r, 4 * 10));
    let ta = upload("a", &[6, 10], &a);
    let tw = Tensor::from_f32_as_f16(ctx(), "w", &[4, 10], &w).expect("upload");
    assert_eq!(tw.dtype(), DType::F16);
    let y = run(|rec| matmul(rec, &ta, &tw, None, BLayout::NK));
    let want = reference(&a, &w, None, 1, 6, 4, 10, BLayout::NK, false);
    assert_close("matmul f16 auto", &download(&y), &want, 1e-4, 1e-4);
}

#[test]
fn mismatched_inner_dims_are_an_error_naming_both_tensors() {
    let ta = upload("acts", &[4, 8], &[0.0; 32]);
    let tb = upload("proj.weight", &[3, 9], &[0.0; 27]);
    let mut rec = ctx().recorder();
    let err = matmul(&mut rec, &ta, &tb, None, BLayout::NK).expect_err("K mismatch");
    let msg = err.to_string();
    assert!(matches!(err, Error::Shape { .. }), "{msg}");
    assert!(msg.contains("acts") && msg.contains("proj.weight"), "{msg}");
}

fn activate(act: Option<Activation>, x: f64) -> f64 {
    let sigmoid = |v: f64| 1.0 / (1.0 + (-v).exp());
    match act {
        None => x,
        Some(Activation::GeluErf) => 0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2)),
        Some(Activation::GeluTanh) => {
            0.5 * x
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh())
        }
        Some(Activation::QuickGelu) => x * sigmoid(1.702 * x),
        Some(Activation::Silu) => x * sigmoid(x),
    }
}

/// The fused epilogue (bias, activation, residual; gated units) on both kernel families,
/// against `act(A·Bᵀ + bias) + residual` computed in f64 — and for gated units
/// `(v + bias_v)·act(g + bias_g) + residual` with v, g the products with B's two halves.
#[test]
fn epilogue_bias_activation_residual_and_gated_units() {
    let acts = [
        None,
        Some(Activation::GeluErf),
        Some(Activation::GeluTanh),
        Some(Activation::QuickGelu),
        Some(Activation::Silu),
    ];
    let mut seed = 900;
    // Sizes off both kernels' tiles (32×32; 64×128 and 64 gated outputs), one batch of 2.
    for &(batch, m, n, k) in &[(1, 5, 7, 12), (2, 70, 130, 36), (1, 33, 65, 20)] {
        for gated in [false, true] {
            for (ai, &act) in acts.iter().enumerate() {
                for format in [WeightFormat::F32, WeightFormat::F16Packed] {
                    seed += 1;
                    let with_bias = (seed + ai as u64).is_multiple_of(2);
                    let with_residual = seed % 3 != 0;
                    let mut r = rng(seed);
                    let b_rows = if gated { 2 * n } else { n };
                    let a = randn(&mut r, batch * m * k);
                    let mut b = randn(&mut r, b_rows * k);
                    if format != WeightFormat::F32 {
                        b = round_f16(&b);
                    }
                    let bias = with_bias.then(|| randn(&mut r, b_rows));
                    let res = with_residual.then(|| randn(&mut r, batch * m * n));
                    // The expected C from given A and B values (the cooperative-matrix kernel
                    // multiplies their f16 roundings).
                    let expect = |a: &[f32], b: &[f32]| -> Vec<f64> {
                        let prod = reference(
                            a,
                            b,
                            bias.as_deref(),
                            1,
                            batch * m,
                            b_rows,
                            k,
                            BLayout::NK,
                            false,
                        );
                        (0..batch * m * n)
                            .map(|i| {
                                let (row, col) = (i / n, i % n);
                                let v = if gated {
                                    prod[row * b_rows + col]
                                        * activate(act, prod[row * b_rows + n + col])
                                } else {
                                    activate(act, prod[row * b_rows + col])
                                };
                                v + res.as_ref().map_or(0.0, |r| f64::from(r[i]))
                            })
                            .collect()
                    };
                    let want = expect(&a, &b);
                    let ta = upload("a", &[batch, m, k], &a);
                    let tb = match format {
                        WeightFormat::F32 => upload("b", &[b_rows, k], &b),
                        _ => Tensor::from_f32_as_f16(ctx(), "b", &[b_rows, k], &b).expect("f16"),
                    };
                    let tbias = bias.as_ref().map(|v| upload("bias", &[b_rows], v));
                    let tres = res.as_ref().map(|v| upload("res", &[batch, m, n], v));
                    let epilogue = Epilogue {
                        bias: tbias.as_ref(),
                        activation: act,
                        residual: tres.as_ref(),
                        gated,
                    };
                    for strategy in strategies(batch * m, n, k, BLayout::NK, gated) {
                        let out = run(|rec| {
                            matmul_with_strategy(
                                rec,
                                &ta,
                                &tb,
                                &epilogue,
                                BLayout::NK,
                                format,
                                Some(strategy),
                            )
                        });
                        assert_eq!(out.shape(), &[batch, m, n]);
                        let want = if strategy.rounds_to_f16() {
                            &expect(&round_f16(&a), &round_f16(&b))
                        } else {
                            &want
                        };
                        assert_close(
                            &format!(
                                "epilogue {batch}x{m}x{n}x{k} gated={gated} {act:?} bias={with_bias} residual={with_residual} {format:?} {strategy:?}"
                            ),
                            &download(&out),
                            want,
                            5e-5 * (k as f64).sqrt(),
                            1e-4,
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn epilogue_shapes_are_checked() {
    let a = upload("a", &[2, 3, 4], &[0.5; 24]);
    let b = upload("b", &[5, 4], &[0.5; 20]);
    let wrong = upload("res", &[2, 3, 4], &[0.0; 24]);
    let mut rec = ctx().recorder();
    let residual = Epilogue {
        residual: Some(&wrong),
        ..Epilogue::default()
    };
    let err = matmul_with_format(&mut rec, &a, &b, &residual, BLayout::NK, WeightFormat::F32);
    assert!(
        matches!(err, Err(Error::Shape { .. })),
        "residual of the wrong shape"
    );
    // Gated units need an even number of B rows.
    let gated = Epilogue {
        gated: true,
        ..Epilogue::default()
    };
    let err = matmul_with_format(&mut rec, &a, &b, &gated, BLayout::NK, WeightFormat::F32);
    assert!(matches!(err, Err(Error::Shape { .. })), "odd gated B");
}

/// The 64×64 kernel at sizes across and off its tile (and the choice that sends large GPU
/// products to it), with every epilogue flag; gated units are refused by name.
#[test]
fn tile64_kernel_edges_and_choice() {
    let cases = [
        (1, 64, 64, 16, BLayout::NK),
        (1, 65, 63, 17, BLayout::KN),
        (2, 130, 129, 40, BLayout::NK),
        (1, 1, 200, 33, BLayout::KN),
        (1, 128, 128, 128, BLayout::NK),
    ];
    for (seed, &(batch, m, n, k, layout)) in (1200u64..).zip(&cases) {
        check(
            batch,
            m,
            n,
            k,
            layout,
            false,
            seed % 2 == 0,
            WeightFormat::F32,
            seed,
        );
    }
    let big = Problem {
        m: 512,
        n: 1024,
        k: 1024,
        layout: BLayout::NK,
        gated: false,
    };
    use tessera_engine::gpu::KernelFamily;
    assert_eq!(
        MatmulStrategy::choose(KernelFamily::Tiled, false, &big),
        MatmulStrategy::Rows
    );
    let kn = Problem {
        layout: BLayout::KN,
        ..big
    };
    assert_eq!(
        MatmulStrategy::choose(KernelFamily::Tiled, false, &kn),
        MatmulStrategy::Tile64
    );
    assert_eq!(
        MatmulStrategy::choose(KernelFamily::Tiled, false, &Problem { gated: true, ..big }),
        MatmulStrategy::Rows
    );
    assert_eq!(
        MatmulStrategy::choose(KernelFamily::Tiled, true, &Problem { m: 2, ..big }),
        MatmulStrategy::Gemv
    );
    assert_eq!(
        MatmulStrategy::choose(KernelFamily::Tiled, false, &Problem { m: 9, ..kn }),
        MatmulStrategy::Tile32
    );
    assert_eq!(
        MatmulStrategy::choose(KernelFamily::Tiled, true, &Problem { gated: true, ..big }),
        MatmulStrategy::Coop64
    );
    assert_eq!(
        MatmulStrategy::choose(KernelFamily::Tiled, true, &Problem { k: 1022, ..big }),
        MatmulStrategy::Coop16
    );

    assert_eq!(
        MatmulStrategy::choose(KernelFamily::Cpu, true, &big),
        MatmulStrategy::Rows
    );
    assert_eq!(
        MatmulStrategy::choose(KernelFamily::Tiled, true, &big),
        MatmulStrategy::Coop64
    );
    let a = upload("a", &[2, 8], &[0.5; 16]);
    let b = upload("b", &[6, 8], &[0.5; 48]);
    let err = tessera_engine::ops::matmul::matmul_with_strategy(
        &mut ctx().recorder(),
        &a,
        &b,
        &Epilogue {
            gated: true,
            ..Epilogue::default()
        },
        BLayout::NK,
        WeightFormat::F32,
        Some(MatmulStrategy::Tile64),
    )
    .expect_err("gated on Tile64");
    assert!(err.to_string().contains("Tile64"), "{err}");
}

/// The probe that picks the tensor-core shape where an adapter reports a range of subgroup
/// widths (Metal, AMD) picks, where the width is fixed, the shape the context took from it,
/// and its trial comes out right: on lavapipe in Mesa 26 (`tools/dev/coop-lavapipe.sh`), `M8`;
/// on NVIDIA, `M16`.
#[test]
#[ignore = "needs cooperative matrices (a GPU, or lavapipe ≥ 26: tools/dev/coop-lavapipe.sh)"]
fn coop_shape_probe_agrees_with_a_fixed_subgroup_width() {
    let mut c = GpuContext::new().expect("adapter");
    let fixed = c.cooperative_matrix().unwrap_or_else(|| {
        panic!(
            "this adapter ({}) has no cooperative matrices the kernels use: {:?}",
            c.info.name,
            c.cooperative_matrix_configs()
        )
    });
    assert_eq!(c.info.subgroup_min_size, fixed.subgroup());
    assert_eq!(c.probe_coop_shape(&CoopShape::ALL), Some(fixed));
    assert_eq!(
        c.cooperative_matrix(),
        Some(fixed),
        "the probe leaves the context's shape"
    );
}

/// Every tensor-core shape whose subgroups are a whole multiple of the adapter's (fixed) width
/// computes the context's trial problems right (matmuls and convolution exact, attention within
/// 1e-2): kernels compiled for wider subgroups repeat work but stay right
/// (`GpuContext::coop_trial`). On lavapipe's 8-wide subgroups that runs the 128-, 256- and
/// 512-invocation mappings (`M8`, `M8W16`, `M8W32`; Apple GPUs take `M8W32`), which no adapter
/// here runs natively (lavapipe 26 at 512 bits, 16-wide, crashes compiling any
/// cooperative-matrix kernel).
#[test]
#[ignore = "needs cooperative matrices (a GPU, or lavapipe ≥ 26: tools/dev/coop-lavapipe.sh)"]
fn coop_trial_passes_for_every_shape_as_wide_as_the_adapters_subgroups_or_wider() {
    let mut c = GpuContext::new().expect("adapter");
    let fixed = c
        .cooperative_matrix()
        .expect("cooperative matrices the kernels use");
    let width = c.info.subgroup_max_size;
    let invocations = c.limits().max_compute_invocations_per_workgroup;
    let mut tried = Vec::new();
    for shape in CoopShape::ALL {
        if shape.size() == fixed.size()
            && shape.subgroup().is_multiple_of(width)
            && shape.workgroup() <= invocations
        {
            assert!(c.coop_trial(shape).expect("trial runs"), "{shape:?}");
            tried.push(shape);
        }
    }
    assert!(tried.contains(&fixed), "{tried:?}");
    assert_eq!(
        c.cooperative_matrix(),
        Some(fixed),
        "the trials leave the context's shape"
    );
}

/// The tensor-core kernels on an adapter that has cooperative matrices (16×16 fragments and
/// 32-wide subgroups on an NVIDIA GPU through Vulkan; 8×8 and 8 on lavapipe in Mesa 26):
/// sizes on and off their 2×2-fragment, 64×64 and 8×8-fragment (128×128 with 16×16 fragments)
/// tiles and K steps, both layouts, every weight
/// format, the epilogue (gated units: `epilogue_bias_activation_residual_and_gated_units`,
/// which runs every available strategy). The project's CI lavapipe has none, so it runs where
/// `tools/bench/run_device.sh` or `tools/dev/coop-lavapipe.sh` run the kernel tests with
/// `--ignored`; there, an adapter without them fails it rather than skipping.
#[test]
#[ignore = "needs cooperative matrices (a GPU, or lavapipe ≥ 26: tools/dev/coop-lavapipe.sh)"]
fn coop_kernels_on_an_adapter_with_cooperative_matrices() {
    assert!(
        MatmulStrategy::Coop16.available(ctx())
            && MatmulStrategy::Coop64.available(ctx())
            && MatmulStrategy::Coop128.available(ctx()),
        "this adapter ({}) has no cooperative matrices the kernels use: {:?}",
        ctx().info.name,
        ctx().cooperative_matrix_configs()
    );
    let mut formats = vec![WeightFormat::F32, WeightFormat::F16Packed];
    if ctx().has_f16() {
        formats.push(WeightFormat::F16);
    }
    let cases = [
        (1, 32, 32, 16, BLayout::NK),
        (1, 33, 31, 17, BLayout::KN),
        (2, 130, 100, 72, BLayout::NK),
        (1, 512, 256, 320, BLayout::NK),
        (1, 5, 70, 40, BLayout::KN),
        (1, 70, 68, 100, BLayout::KN),
        (3, 64, 64, 64, BLayout::NK),
        (1, 200, 300, 1028, BLayout::NK),
    ];
    for (seed, &(batch, m, n, k, layout)) in (1300u64..).zip(&cases) {
        for &format in &formats {
            check(
                batch,
                m,
                n,
                k,
                layout,
                seed.is_multiple_of(2),
                seed % 3 == 0,
                format,
                seed,
            );
        }
    }
}
