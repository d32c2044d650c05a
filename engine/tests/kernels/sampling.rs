use tessera_engine::ops::sampling::{
    CategoricalKernel, argmax, categorical, categorical_with_kernel, topk, typical_filter,
};
use tessera_engine::{Error, Tensor};

use crate::common::*;

#[test]
fn argmax_first_index_on_ties() {
    let mut r = rng(1);
    let (rows, cols) = (5, 1000);
    let mut x = randn(&mut r, rows * cols);
    x[3 * cols + 17] = 5.0;
    x[3 * cols + 900] = 5.0; // tie: index 17 wins
    let tx = upload("logits", &[rows, cols], &x);
    let (ids, vals) = run(|rec| argmax(rec, &tx));
    let ids = ids.to_u32(ctx()).expect("ids");
    for (ri, row) in x.chunks(cols).enumerate() {
        let mut best = 0;
        for (j, &v) in row.iter().enumerate() {
            if v > row[best] {
                best = j;
            }
        }
        assert_eq!(ids[ri] as usize, best, "row {ri}");
    }
    assert_eq!(ids[3], 17);
    assert_eq!(download(&vals)[3], 5.0);
}

#[test]
fn topk_descending_with_index_tiebreak() {
    let mut r = rng(2);
    let (rows, cols, k) = (3, 777, 10);
    let mut x = randn(&mut r, rows * cols);
    x[5] = 2.0;
    x[6] = 2.0;
    let tx = upload("logits", &[rows, cols], &x);
    let (ids, vals) = run(|rec| topk(rec, &tx, k));
    assert_eq!(ids.shape(), &[rows, k]);
    let ids = ids.to_u32(ctx()).expect("ids");
    let vals = download(&vals);
    for (ri, row) in x.chunks(cols).enumerate() {
        let mut order: Vec<usize> = (0..cols).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        for t in 0..k {
            assert_eq!(ids[ri * k + t] as usize, order[t], "row {ri} rank {t}");
            assert_eq!(vals[ri * k + t], row[order[t]]);
        }
    }
    assert_eq!(&ids[..2], &[5, 6]);
}

/// Inverse-CDF pick in f64, plus the distance from the target to the nearest CDF boundary.
fn cdf_pick(row: &[f32], t: f64, u: f64) -> (usize, f64, f64) {
    let mx = row.iter().map(|&v| f64::from(v)).fold(f64::MIN, f64::max);
    let e: Vec<f64> = row
        .iter()
        .map(|&v| ((f64::from(v) - mx) / t).exp())
        .collect();
    let e1: Vec<f64> = row.iter().map(|&v| (f64::from(v) - mx).exp()).collect();
    let total: f64 = e.iter().sum();
    let target = u * total;
    let mut acc = 0.0;
    for (j, ej) in e.iter().enumerate() {
        let next = acc + ej;
        if next > target {
            let margin = (target - acc).min(next - target) / total;
            return (j, margin, e1[j] / e1.iter().sum::<f64>());
        }
        acc = next;
    }
    (row.len() - 1, 0.0, 0.0)
}

#[test]
fn categorical_follows_inverse_cdf_of_tempered_softmax() {
    let mut r = rng(3);
    for &(rows, cols, temp) in &[(64, 8192, 1.0f32), (50, 300, 0.5), (40, 5, 2.0)] {
        let x: Vec<f32> = randn(&mut r, rows * cols).iter().map(|v| v * 4.0).collect();
        let u: Vec<f32> = randn(&mut r, rows)
            .iter()
            .map(|v| (v + 1.0) / 2.0)
            .collect();
        let (tx, tu) = (
            upload("logits", &[rows, cols], &x),
            upload("u", &[rows], &u),
        );
        for k in CategoricalKernel::ALL {
            let (ids, probs) = run(|rec| categorical_with_kernel(rec, &tx, &tu, temp, Some(k)));
            let ids = ids.to_u32(ctx()).expect("ids");
            let probs = download(&probs);
            let mut checked = 0;
            for (ri, row) in x.chunks(cols).enumerate() {
                let (want, margin, p) = cdf_pick(row, f64::from(temp), f64::from(u[ri]));
                // Float summation order may move a target sitting on a boundary; skip those.
                if margin > 1e-5 {
                    assert_eq!(
                        ids[ri] as usize, want,
                        "{k:?}: {cols} cols, T={temp}, row {ri}"
                    );
                    assert!(
                        (f64::from(probs[ri]) - p).abs() < 1e-5 + 1e-4 * p,
                        "{k:?}: prob row {ri}"
                    );
                    checked += 1;
                }
            }
            assert!(
                checked > rows * 9 / 10,
                "{k:?}: only {checked}/{rows} rows away from boundaries"
            );
        }
    }
}

#[test]
fn categorical_frequencies_match_probabilities() {
    let logits = [0.0f32, 1.0, -1.0, 2.0, 0.5];
    let rows = 4000;
    let x: Vec<f32> = logits
        .iter()
        .cycle()
        .take(rows * logits.len())
        .copied()
        .collect();
    let mut r = rng(4);
    let u: Vec<f32> = (0..rows)
        .map(|_| rand::RngExt::random::<f32>(&mut r))
        .collect();
    let (tx, tu) = (upload("logits", &[rows, 5], &x), upload("u", &[rows], &u));
    // The kernels give the same ids (categorical_kernels_agree_bit_for_bit); the frequencies
    // of the adapter's own.
    let (ids, _) = run(|rec| categorical(rec, &tx, &tu, 1.0));
    let ids = ids.to_u32(ctx()).expect("ids");
    let z: f64 = logits.iter().map(|&v| f64::from(v).exp()).sum();
    for (j, &l) in logits.iter().enumerate() {
        let p = f64::from(l).exp() / z;
        let freq = ids.iter().filter(|&&i| i as usize == j).count() as f64 / rows as f64;
        let sigma = (p * (1.0 - p) / rows as f64).sqrt();
        assert!(
            (freq - p).abs() < 5.0 * sigma,
            "id {j}: freq {freq:.4} vs p {p:.4}"
        );
    }
}

#[test]
fn categorical_extreme_uniforms_stay_in_range() {
    let x = [0.0f32, -100.0, 3.0, -1e9];
    let tx = upload("logits", &[2, 4], &[x, x].concat());
    let tu = Tensor::from_f32(ctx(), "u", &[2], &[0.0, 0.99999994]).expect("u");
    for k in CategoricalKernel::ALL {
        let (ids, _) = run(|rec| categorical_with_kernel(rec, &tx, &tu, 1.0, Some(k)));
        let ids = ids.to_u32(ctx()).expect("ids");
        assert!(ids.iter().all(|&i| i < 3), "{k:?}: {ids:?}");
    }
}

/// Rows narrower than the workgroup (96 columns: a Paella codebook) with u at the top of
/// [0, 1): the chunk sums' scan adds the empty chunks' zeros in other orders, so its last entry
/// can round above the last column's; the draw must still land on a column of the row.
#[test]
fn categorical_top_uniform_stays_in_narrow_rows() {
    let (rows, cols) = (2048, 96);
    let mut r = rng(0x5ca1);
    let x: Vec<f32> = randn(&mut r, rows * cols).iter().map(|v| v * 3.0).collect();
    let tx = upload("logits", &[rows, cols], &x);
    let tu = Tensor::from_f32(ctx(), "u", &[rows], &vec![0.99999994; rows]).expect("u");
    for (temperature, k) in [1.0, 0.2]
        .into_iter()
        .flat_map(|t| CategoricalKernel::ALL.map(|k| (t, k)))
    {
        let (ids, _) = run(|rec| categorical_with_kernel(rec, &tx, &tu, temperature, Some(k)));
        let ids = ids.to_u32(ctx()).expect("ids");
        let bad: Vec<_> = ids
            .iter()
            .enumerate()
            .filter(|(_, i)| **i as usize >= cols)
            .collect();
        assert!(
            bad.is_empty(),
            "{k:?}, temperature {temperature}: rows with ids ≥ {cols}: {bad:?}"
        );
    }
}

/// The per-row kernel (CPU adapters) does the workgroup kernel's float operations in the same
/// order: the same ids and values bit for bit, on rows narrower and wider than the 256 chunks,
/// off and on multiples of them, at three temperatures, with −∞, huge and overflowing logits
/// (whose rows both mark as no choice) and uniforms at the ends of [0, 1).
#[test]
fn categorical_kernels_agree_bit_for_bit() {
    let mut r = rng(0xca7);
    for &cols in &[1usize, 5, 96, 255, 256, 257, 1000, 1024, 8195] {
        let rows = 37;
        let mut x: Vec<f32> = randn(&mut r, rows * cols).iter().map(|v| v * 6.0).collect();
        x[cols / 2] = f32::NEG_INFINITY;
        x[cols + cols / 3] = 80.0;
        if cols > 1 {
            x[2 * cols..3 * cols].fill(f32::NEG_INFINITY);
            x[3 * cols] = f32::INFINITY;
        }
        let mut u: Vec<f32> = randn(&mut r, rows)
            .iter()
            .map(|v| (v + 1.0) / 2.0)
            .collect();
        u[4] = 0.0;
        u[5] = 0.99999994;
        let (tx, tu) = (
            upload("logits", &[rows, cols], &x),
            upload("u", &[rows], &u),
        );
        for temperature in [1.0, 0.35, 2.5] {
            let [(ids_w, vals_w), (ids_r, vals_r)] = CategoricalKernel::ALL.map(|k| {
                let (ids, vals) =
                    run(|rec| categorical_with_kernel(rec, &tx, &tu, temperature, Some(k)));
                let bits: Vec<u32> = download(&vals).iter().map(|v| v.to_bits()).collect();
                (ids.to_u32(ctx()).expect("ids"), bits)
            });
            assert_eq!(ids_w, ids_r, "{cols} cols, T={temperature}: ids");
            assert_eq!(vals_w, vals_r, "{cols} cols, T={temperature}: values");
        }
    }
}

#[test]
fn categorical_rejects_zero_temperature() {
    let tx = upload("logits", &[1, 4], &[0.0; 4]);
    let tu = upload("u", &[1], &[0.5]);
    let mut rec = ctx().recorder();
    assert!(matches!(
        categorical(&mut rec, &tx, &tu, 0.0),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn nearest_code_is_argmin_of_euclidean_distance() {
    let mut r = rng(5);
    let (rows, dim, codes) = (37, 5, 300);
    let z = randn(&mut r, rows * dim);
    let mut book = randn(&mut r, codes * dim);
    // A duplicated code: the first copy must win.
    let dup = book[7 * dim..8 * dim].to_vec();
    book[200 * dim..201 * dim].copy_from_slice(&dup);
    let z0: Vec<f32> = dup.iter().map(|v| v + 1e-3).collect();
    let z = [z0, z].concat();
    let (tz, tb) = (
        upload("z", &[rows + 1, dim], &z),
        upload("codebook", &[codes, dim], &book),
    );
    let (ids, dist) = run(|rec| tessera_engine::ops::sampling::nearest_code(rec, &tz, &tb));
    let ids = ids.to_u32(ctx()).expect("ids");
    let dist = download(&dist);
    for (ri, row) in z.chunks(dim).enumerate() {
        let d = |j: usize| -> f64 {
            row.iter()
                .zip(&book[j * dim..][..dim])
                .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
                .sum()
        };
        let best = (0..codes)
            .min_by(|&a, &b| d(a).total_cmp(&d(b)).then(a.cmp(&b)))
            .unwrap_or(0);
        assert_eq!(ids[ri] as usize, best, "row {ri}");
        assert!((f64::from(dist[ri]) - d(best)).abs() < 1e-5);
    }
    assert_eq!(ids[0], 7);
}

/// The kept set of Paella v1's typical filtering, computed as the official code does (f64
/// here): sort by |−logp − H|, cumulative probability in that order, keep up to the first
/// index where it reaches the mass, ties with that score kept.
fn typical_keep(row: &[f32], mass: f64) -> Vec<bool> {
    let m = row
        .iter()
        .fold(f64::NEG_INFINITY, |a, &b| a.max(f64::from(b)));
    let lse = m + row
        .iter()
        .map(|&x| (f64::from(x) - m).exp())
        .sum::<f64>()
        .ln();
    let lp: Vec<f64> = row.iter().map(|&x| f64::from(x) - lse).collect();
    let h: f64 = -lp.iter().map(|l| l.exp() * l).sum::<f64>();
    let score: Vec<f64> = lp.iter().map(|l| (-l - h).abs()).collect();
    let mut order: Vec<usize> = (0..row.len()).collect();
    order.sort_by(|&a, &b| score[a].total_cmp(&score[b]));
    let mut cum = 0.0;
    let mut last = order.len() - 1;
    for (k, &j) in order.iter().enumerate() {
        cum += lp[j].exp();
        if cum >= mass {
            last = k;
            break;
        }
    }
    let threshold = score[order[last]];
    score.iter().map(|&sc| sc <= threshold).collect()
}

/// Typical filtering against the sorted reference on rows of several widths (off the
/// workgroup size) and masses; kept logits unchanged, the rest at −3e38.
#[test]
fn typical_filter_keeps_the_typical_set() {
    let mut r = rng(77);
    for &(rows, cols, mass, scale) in &[
        (7, 1000, 0.2f32, 2.0f32),
        (3, 8192, 0.2, 4.0),
        (5, 37, 0.5, 1.0),
        (4, 300, 1.0, 3.0),
        (2, 513, 0.05, 6.0),
    ] {
        let x: Vec<f32> = randn(&mut r, rows * cols)
            .iter()
            .map(|v| v * scale)
            .collect();
        let tx = upload("logits", &[rows, cols], &x);
        let out = download(&run(|rec| typical_filter(rec, &tx, mass)));
        let mut kept_total = 0;
        for (ri, row) in x.chunks(cols).enumerate() {
            let keep = typical_keep(row, f64::from(mass));
            for (j, &k) in keep.iter().enumerate() {
                let got = out[ri * cols + j];
                if k {
                    assert_eq!(
                        got, row[j],
                        "rows {rows}×{cols} mass {mass}: row {ri} token {j} kept"
                    );
                    kept_total += 1;
                } else {
                    assert_eq!(
                        got, -3.0e38,
                        "rows {rows}×{cols} mass {mass}: row {ri} token {j} removed"
                    );
                }
            }
        }
        assert!(kept_total >= rows, "at least one token per row");
        if mass < 1.0 {
            assert!(kept_total < rows * cols, "mass {mass} removes tokens");
        }
    }
    let tx = upload("logits", &[1, 4], &[0.0; 4]);
    let mut rec = ctx().recorder();
    assert!(matches!(
        typical_filter(&mut rec, &tx, 0.0),
        Err(Error::InvalidArgument { .. })
    ));
}
