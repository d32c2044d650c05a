use tessera_engine::ops::elementwise::{
    UnaryOp, add, axpby, div, geglu, guidance, modulate, mul, softmax, sub, unary,
};

use crate::common::*;

fn gelu_erf(x: f64) -> f64 {
    0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

#[test]
fn activations_and_scalar_ops() {
    let mut r = rng(1);
    // Wide range, including large |x| where tanh/exp saturate; odd length.
    let mut x: Vec<f32> = randn(&mut r, 1001).iter().map(|v| v * 8.0).collect();
    x.extend([0.0, -30.0, 30.0, 1e-4, -1e-4]);
    let tx = upload("x", &[x.len()], &x);
    type Reference = fn(f64) -> f64;
    let cases: [(UnaryOp, Reference); 6] = [
        (UnaryOp::Scale(-2.5), |v| -2.5 * v),
        (UnaryOp::AddScalar(0.75), |v| v + 0.75),
        (UnaryOp::GeluErf, gelu_erf),
        (UnaryOp::GeluTanh, |v| {
            0.5 * v
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v.powi(3))).tanh())
        }),
        (UnaryOp::QuickGelu, |v| v * sigmoid(1.702 * v)),
        (UnaryOp::Silu, |v| v * sigmoid(v)),
    ];
    for (op, f) in cases {
        let y = run(|rec| unary(rec, &tx, op));
        let want: Vec<f64> = x.iter().map(|&v| f(f64::from(v))).collect();
        assert_close(&format!("{op:?}"), &download(&y), &want, 2e-6, 2e-6);
    }
}

#[test]
fn binary_ops_broadcast() {
    let mut r = rng(2);
    // [2, 3, 5, 7] with [3, 1, 7], [1], and [2, 1, 5, 1].
    let shape = [2usize, 3, 5, 7];
    let n: usize = shape.iter().product();
    let a = randn(&mut r, n);
    let ta = upload("a", &shape, &a);
    let idx = |i: usize| {
        let (i3, r) = (i % 7, i / 7);
        let (i2, r) = (r % 5, r / 5);
        (r / 3, r % 3, i2, i3)
    };
    let b1 = randn(&mut r, 3 * 7);
    let t1 = upload("b1", &[3, 1, 7], &b1);
    let y = run(|rec| add(rec, &ta, &t1));
    assert_eq!(y.shape(), &shape);
    let want: Vec<f64> = (0..n)
        .map(|i| {
            let (_, i1, _, i3) = idx(i);
            f64::from(a[i]) + f64::from(b1[i1 * 7 + i3])
        })
        .collect();
    assert_close("add broadcast", &download(&y), &want, 1e-6, 1e-6);

    let t2 = upload("s", &[1], &[0.5]);
    let y = run(|rec| mul(rec, &ta, &t2));
    let want: Vec<f64> = a.iter().map(|&v| f64::from(v) * 0.5).collect();
    assert_close("mul scalar", &download(&y), &want, 1e-6, 1e-6);

    let b3: Vec<f32> = randn(&mut r, 2 * 5).iter().map(|v| v + 2.0).collect();
    let t3 = upload("b3", &[2, 1, 5, 1], &b3);
    let y = run(|rec| div(rec, &ta, &t3));
    let want: Vec<f64> = (0..n)
        .map(|i| {
            let (i0, _, i2, _) = idx(i);
            f64::from(a[i]) / f64::from(b3[i0 * 5 + i2])
        })
        .collect();
    assert_close("div broadcast", &download(&y), &want, 1e-6, 1e-6);
    // Broadcast on the left operand too.
    let y = run(|rec| sub(rec, &t3, &ta));
    let want: Vec<f64> = (0..n)
        .map(|i| {
            let (i0, _, i2, _) = idx(i);
            f64::from(b3[i0 * 5 + i2]) - f64::from(a[i])
        })
        .collect();
    assert_close("sub broadcast lhs", &download(&y), &want, 1e-6, 1e-6);
}

#[test]
fn classifier_free_guidance_as_axpby() {
    let mut r = rng(3);
    let u = randn(&mut r, 300);
    let c = randn(&mut r, 300);
    let s = 10.0f32;
    let (tu, tc) = (upload("u", &[3, 100], &u), upload("c", &[3, 100], &c));
    let y = run(|rec| axpby(rec, 1.0 - s, &tu, s, &tc));
    let want: Vec<f64> = u
        .iter()
        .zip(&c)
        .map(|(&u, &c)| f64::from(u) + f64::from(s) * (f64::from(c) - f64::from(u)))
        .collect();
    assert_close("cfg", &download(&y), &want, 1e-5, 1e-5);
}

#[test]
fn add_rejects_incompatible_shapes() {
    let ta = upload("a", &[2, 3], &[0.0; 6]);
    let tb = upload("b", &[4], &[0.0; 4]);
    let mut rec = ctx().recorder();
    assert!(add(&mut rec, &ta, &tb).is_err());
}

#[test]
fn geglu_splits_value_then_gate() {
    let mut r = rng(4);
    let (rows, h) = (7, 45);
    let x: Vec<f32> = randn(&mut r, rows * 2 * h)
        .iter()
        .map(|v| v * 3.0)
        .collect();
    let tx = upload("x", &[1, rows, 2 * h], &x);
    let y = run(|rec| geglu(rec, &tx));
    assert_eq!(y.shape(), &[1, rows, h]);
    let mut want = Vec::new();
    for row in x.chunks(2 * h) {
        for j in 0..h {
            want.push(f64::from(row[j]) * gelu_erf(f64::from(row[h + j])));
        }
    }
    assert_close("geglu", &download(&y), &want, 2e-6, 2e-6);
}

#[test]
fn softmax_rows_with_scale() {
    let mut r = rng(5);
    for &(rows, cols) in &[(1, 1), (3, 77), (2, 8192), (5, 300)] {
        let x: Vec<f32> = randn(&mut r, rows * cols)
            .iter()
            .map(|v| v * 20.0)
            .collect();
        let tx = upload("x", &[rows, cols], &x);
        let y = run(|rec| softmax(rec, &tx, 0.5));
        let mut want = Vec::new();
        for row in x.chunks(cols) {
            let s: Vec<f64> = row.iter().map(|&v| 0.5 * f64::from(v)).collect();
            let mx = s.iter().cloned().fold(f64::MIN, f64::max);
            let z: f64 = s.iter().map(|v| (v - mx).exp()).sum();
            want.extend(s.iter().map(|v| (v - mx).exp() / z));
        }
        assert_close(
            &format!("softmax {rows}x{cols}"),
            &download(&y),
            &want,
            1e-6,
            1e-4,
        );
    }
}

#[test]
fn modulation_scale_then_shift_per_batch_item() {
    let mut r = rng(6);
    let (b, l, c) = (3, 11, 37);
    let x = randn(&mut r, b * l * c);
    let emb = randn(&mut r, b * 2 * c);
    let (tx, te) = (
        upload("x", &[b, l, c], &x),
        upload("emb", &[b, 2 * c], &emb),
    );
    let y = run(|rec| modulate(rec, &tx, &te));
    let mut want = Vec::new();
    for bi in 0..b {
        for li in 0..l {
            for ci in 0..c {
                let v = f64::from(x[(bi * l + li) * c + ci]);
                let scale = f64::from(emb[bi * 2 * c + ci]);
                let shift = f64::from(emb[bi * 2 * c + c + ci]);
                want.push(v * (1.0 + scale) + shift);
            }
        }
    }
    assert_close("modulate", &download(&y), &want, 1e-6, 1e-6);
}

/// Guidance on a stacked [uncond; cond] batch, one dispatch: `u + s·(c − u)` per element, odd
/// sizes, and a batch that is not stacked pairs is refused.
#[test]
fn guidance_on_stacked_batch() {
    let mut r = rng(31);
    for &(b, l, v) in &[(1, 1, 1), (2, 7, 33), (3, 5, 257)] {
        let x = randn(&mut r, 2 * b * l * v);
        let tx = upload("x", &[2 * b, l, v], &x);
        let s = 7.5f32;
        let out = run(|rec| guidance(rec, &tx, s));
        assert_eq!(out.shape(), &[b, l, v]);
        let half = b * l * v;
        let want: Vec<f64> = (0..half)
            .map(|i| {
                let (u, c) = (f64::from(x[i]), f64::from(x[half + i]));
                u + f64::from(s) * (c - u)
            })
            .collect();
        assert_close("guidance", &download(&out), &want, 1e-5, 1e-5);
    }
    let odd = upload("x", &[3, 2], &[0.0; 6]);
    let mut rec = ctx().recorder();
    assert!(guidance(&mut rec, &odd, 2.0).is_err());
}
