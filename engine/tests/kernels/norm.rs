use tessera_engine::ops::norm::{
    NormSpec, global_response_norm, group_norm, layer_norm, layer_norm_channels,
    layer_norm_modulated,
};

use crate::common::*;

fn norm_rows(
    x: &[f32],
    cols: usize,
    w: Option<&[f32]>,
    b: Option<&[f32]>,
    eps: f64,
    mean: bool,
) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(cols) {
        let r = to_f64(row);
        let mu = if mean {
            r.iter().sum::<f64>() / cols as f64
        } else {
            0.0
        };
        let var = r.iter().map(|v| (v - mu) * (v - mu)).sum::<f64>() / cols as f64;
        let rstd = 1.0 / (var + eps).sqrt();
        for (j, v) in r.iter().enumerate() {
            let mut y = (v - mu) * rstd;
            if let Some(w) = w {
                y *= f64::from(w[j]);
            }
            if let Some(b) = b {
                y += f64::from(b[j]);
            }
            out.push(y);
        }
    }
    out
}

#[test]
fn layer_norm_with_and_without_affine() {
    for family in FAMILIES {
        layer_norm_with_and_without_affine_in(family);
    }
}

fn layer_norm_with_and_without_affine_in(family: tessera_engine::gpu::KernelFamily) {
    let mut r = rng(1);
    for &(rows, cols) in &[(1, 1), (3, 7), (5, 300), (2, 1000), (130, 33)] {
        let x: Vec<f32> = randn(&mut r, rows * cols)
            .iter()
            .map(|v| v * 3.0 + 0.5)
            .collect();
        let w = randn(&mut r, cols);
        let b = randn(&mut r, cols);
        let (tx, tw, tb) = (
            upload("x", &[rows, cols], &x),
            upload("w", &[cols], &w),
            upload("b", &[cols], &b),
        );
        let full = run_in(family, |rec| {
            layer_norm(rec, &tx, &NormSpec::layer(Some(&tw), Some(&tb), 1e-5))
        });
        assert_close(
            &format!("layer_norm affine {family:?}"),
            &download(&full),
            &norm_rows(&x, cols, Some(&w), Some(&b), 1e-5, true),
            1e-4,
            1e-4,
        );
        let plain = run_in(family, |rec| {
            layer_norm(rec, &tx, &NormSpec::layer(None, None, 1e-6))
        });
        assert_close(
            &format!("layer_norm plain {family:?}"),
            &download(&plain),
            &norm_rows(&x, cols, None, None, 1e-6, true),
            1e-4,
            1e-4,
        );
        let wonly = run_in(family, |rec| {
            layer_norm(rec, &tx, &NormSpec::layer(Some(&tw), None, 1e-12))
        });
        assert_close(
            &format!("layer_norm weight only {family:?}"),
            &download(&wonly),
            &norm_rows(&x, cols, Some(&w), None, 1e-12, true),
            1e-4,
            1e-4,
        );
    }
}

#[test]
fn rms_norm_with_and_without_weight() {
    for family in FAMILIES {
        rms_norm_with_and_without_weight_in(family);
    }
}

fn rms_norm_with_and_without_weight_in(family: tessera_engine::gpu::KernelFamily) {
    let mut r = rng(2);
    let (rows, cols) = (6, 257);
    let x = randn(&mut r, rows * cols);
    let w = randn(&mut r, cols);
    let (tx, tw) = (upload("x", &[2, 3, cols], &x), upload("w", &[cols], &w));
    let y = run_in(family, |rec| {
        layer_norm(rec, &tx, &NormSpec::rms(Some(&tw), 1e-6))
    });
    assert_eq!(y.shape(), &[2, 3, cols]);
    assert_close(
        &format!("rms_norm {family:?}"),
        &download(&y),
        &norm_rows(&x, cols, Some(&w), None, 1e-6, false),
        1e-4,
        1e-4,
    );
    let y = run_in(family, |rec| {
        layer_norm(rec, &tx, &NormSpec::rms(None, 1e-6))
    });
    assert_close(
        &format!("rms_norm plain {family:?}"),
        &download(&y),
        &norm_rows(&x, cols, None, None, 1e-6, false),
        1e-4,
        1e-4,
    );
}

#[test]
fn channel_norm_on_nchw_matches_permuted_row_norm() {
    for family in FAMILIES {
        channel_norm_on_nchw_matches_permuted_row_norm_in(family);
    }
}

fn channel_norm_on_nchw_matches_permuted_row_norm_in(family: tessera_engine::gpu::KernelFamily) {
    let mut r = rng(3);
    let (b, c, h, w) = (2, 13, 3, 5);
    let x = randn(&mut r, b * c * h * w);
    let wt = randn(&mut r, c);
    // NCHW → rows of C.
    let mut rows = Vec::new();
    for bi in 0..b {
        for p in 0..h * w {
            for ci in 0..c {
                rows.push(x[(bi * c + ci) * h * w + p]);
            }
        }
    }
    let want_rows = norm_rows(&rows, c, Some(&wt), None, 1e-6, false);
    let mut want = vec![0.0; x.len()];
    for bi in 0..b {
        for p in 0..h * w {
            for ci in 0..c {
                want[(bi * c + ci) * h * w + p] = want_rows[(bi * h * w + p) * c + ci];
            }
        }
    }
    let (tx, tw) = (upload("x", &[b, c, h, w], &x), upload("w", &[c], &wt));
    let y = run_in(family, |rec| {
        layer_norm_channels(rec, &tx, &NormSpec::rms(Some(&tw), 1e-6))
    });
    assert_close(
        &format!("channel rms_norm {family:?}"),
        &download(&y),
        &want,
        1e-4,
        1e-4,
    );
}

fn group_norm_ref(
    x: &[f32],
    (b, c, hw): (usize, usize, usize),
    g: usize,
    w: &[f32],
    bias: &[f32],
    silu: bool,
) -> Vec<f64> {
    let cpg = c / g;
    let mut out = vec![0.0; x.len()];
    for bi in 0..b {
        for gi in 0..g {
            let base = (bi * c + gi * cpg) * hw;
            let vals = to_f64(&x[base..base + cpg * hw]);
            let mu = vals.iter().sum::<f64>() / vals.len() as f64;
            let var = vals.iter().map(|v| (v - mu).powi(2)).sum::<f64>() / vals.len() as f64;
            for (e, v) in vals.iter().enumerate() {
                let ch = gi * cpg + e / hw;
                let mut y = (v - mu) / (var + 1e-6).sqrt() * f64::from(w[ch]) + f64::from(bias[ch]);
                if silu {
                    y /= 1.0 + (-y).exp();
                }
                out[base + e] = y;
            }
        }
    }
    out
}

#[test]
fn group_norm_nchw_with_fused_silu() {
    let mut r = rng(4);
    // The last three groups are over one 8192-value piece of the GPU kernel: 2 uneven pieces,
    // 13, and more than its 64 pieces (the piece grows), with a large mean.
    for &(b, c, h, w, g) in &[
        (1, 4, 1, 1, 2),
        (2, 12, 5, 7, 3),
        (1, 64, 9, 9, 32),
        (2, 8, 45, 61, 2),
        (1, 6, 128, 130, 1),
        (1, 4, 400, 400, 1),
    ] {
        let offset = if h * w > 1000 { 40.0 } else { -0.3 };
        let x: Vec<f32> = randn(&mut r, b * c * h * w)
            .iter()
            .map(|v| v * 2.0 + offset)
            .collect();
        let wt = randn(&mut r, c);
        let bs = randn(&mut r, c);
        let (tx, tw, tb) = (
            upload("x", &[b, c, h, w], &x),
            upload("w", &[c], &wt),
            upload("b", &[c], &bs),
        );
        for (family, silu) in FAMILIES.into_iter().flat_map(|f| [(f, false), (f, true)]) {
            let y = run_in(family, |rec| {
                group_norm(rec, &tx, g, Some(&tw), Some(&tb), 1e-6, silu)
            });
            let want = group_norm_ref(&x, (b, c, h * w), g, &wt, &bs, silu);
            assert_close(
                &format!("group_norm {b}x{c}x{h}x{w} g{g} silu={silu} {family:?}"),
                &download(&y),
                &want,
                1e-4,
                1e-4,
            );
        }
    }
}

#[test]
fn group_norm_rejects_indivisible_groups() {
    let tx = upload("x", &[1, 6, 2, 2], &[0.0; 24]);
    let mut rec = ctx().recorder();
    assert!(group_norm(&mut rec, &tx, 4, None, None, 1e-6, false).is_err());
}

#[test]
fn global_response_norm_channels_last() {
    let mut r = rng(5);
    let (b, h, w, c) = (2, 3, 5, 300);
    let x = randn(&mut r, b * h * w * c);
    let gamma = randn(&mut r, c);
    let beta = randn(&mut r, c);
    let mut want = vec![0.0; x.len()];
    for bi in 0..b {
        let g: Vec<f64> = (0..c)
            .map(|ci| {
                (0..h * w)
                    .map(|p| f64::from(x[(bi * h * w + p) * c + ci]).powi(2))
                    .sum::<f64>()
                    .sqrt()
            })
            .collect();
        let mean = g.iter().sum::<f64>() / c as f64;
        for p in 0..h * w {
            for ci in 0..c {
                let i = (bi * h * w + p) * c + ci;
                let v = f64::from(x[i]);
                want[i] =
                    f64::from(gamma[ci]) * (v * g[ci] / (mean + 1e-6)) + f64::from(beta[ci]) + v;
            }
        }
    }
    let tx = upload("x", &[b, h, w, c], &x);
    let (tg, tb) = (
        upload("gamma", &[1, 1, 1, c], &gamma),
        upload("beta", &[1, 1, 1, c], &beta),
    );
    // Both families: one pass on CPU adapters, squares over channel blocks then the mean on
    // GPUs (300 channels: off the 32-channel block; 15 positions: off the 8 lanes).
    for family in FAMILIES {
        let y = run_in(family, |rec| global_response_norm(rec, &tx, &tg, &tb, 1e-6));
        assert_close(&format!("grn {family:?}"), &download(&y), &want, 1e-4, 1e-4);
    }
}

/// Norm + adaptive modulation in one dispatch against the f64 norm followed by
/// `·(1 + scale) + shift` with each batch item's own [scale | shift], both families, LayerNorm
/// with affine terms and RMS norm, sizes off the 256-wide workgroup.
#[test]
fn norm_with_modulation_per_batch_item() {
    let mut r = rng(77);
    for family in FAMILIES {
        for &(b, l, c, mean) in &[(1, 1, 5, true), (2, 7, 300, false), (3, 33, 70, true)] {
            let x: Vec<f32> = randn(&mut r, b * l * c)
                .iter()
                .map(|v| v * 2.0 + 0.3)
                .collect();
            let w = randn(&mut r, c);
            let bias = randn(&mut r, c);
            let emb = randn(&mut r, b * 2 * c);
            let (tx, tw, tb, te) = (
                upload("x", &[b, l, c], &x),
                upload("w", &[c], &w),
                upload("b", &[c], &bias),
                upload("emb", &[b, 2 * c], &emb),
            );
            let spec = if mean {
                NormSpec::layer(Some(&tw), Some(&tb), 1e-5)
            } else {
                NormSpec::rms(Some(&tw), 1e-6)
            };
            let out = run_in(family, |rec| layer_norm_modulated(rec, &tx, &spec, &te));
            let n = norm_rows(
                &x,
                c,
                Some(&w),
                mean.then_some(&bias[..]),
                if mean { 1e-5 } else { 1e-6 },
                mean,
            );
            let want: Vec<f64> = n
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    let (bi, j) = (i / (l * c), i % c);
                    let scale = f64::from(emb[bi * 2 * c + j]);
                    let shift = f64::from(emb[bi * 2 * c + c + j]);
                    v * (1.0 + scale) + shift
                })
                .collect();
            assert_close(
                &format!("modulated norm {b}x{l}x{c} mean={mean} {family:?}"),
                &download(&out),
                &want,
                2e-5,
                2e-5,
            );
        }
    }
    // emb must be [B, 2C].
    let tx = upload("x", &[2, 3, 4], &[1.0; 24]);
    let te = upload("emb", &[2, 4], &[0.0; 8]);
    let mut rec = ctx().recorder();
    assert!(layer_norm_modulated(&mut rec, &tx, &NormSpec::rms(None, 1e-6), &te).is_err());
}
