use tessera_engine::ops::layout::{concat, fill, permute, slice, zeros};
use tessera_engine::{DType, Tensor};

use crate::common::*;

fn iota(n: usize) -> Vec<f32> {
    (0..n).map(|i| i as f32).collect()
}

#[test]
fn permute_nchw_to_nhwc_and_back() {
    let (b, c, h, w) = (2, 3, 4, 5);
    let x = iota(b * c * h * w);
    let tx = upload("x", &[b, c, h, w], &x);
    let y = run(|rec| permute(rec, &tx, &[0, 2, 3, 1]));
    assert_eq!(y.shape(), &[b, h, w, c]);
    let mut want = Vec::new();
    for bi in 0..b {
        for yi in 0..h {
            for xi in 0..w {
                for ci in 0..c {
                    want.push(f64::from(x[((bi * c + ci) * h + yi) * w + xi]));
                }
            }
        }
    }
    assert_close("permute", &download(&y), &want, 0.0, 0.0);
    let back = run(|rec| permute(rec, &y, &[0, 3, 1, 2]));
    assert_close("permute back", &download(&back), &to_f64(&x), 0.0, 0.0);
}

#[test]
fn permute_rejects_non_permutations() {
    let tx = upload("x", &[2, 3], &[0.0; 6]);
    let mut rec = ctx().recorder();
    assert!(permute(&mut rec, &tx, &[0, 0]).is_err());
    assert!(permute(&mut rec, &tx, &[0]).is_err());
}

#[test]
fn slice_and_concat_round_trip_on_every_dim() {
    let shape = [3usize, 4, 5];
    let x = iota(60);
    let tx = upload("x", &shape, &x);
    for dim in 0..3 {
        let n = shape[dim];
        let (a, b) = run(|rec| Ok((slice(rec, &tx, dim, 0, 1)?, slice(rec, &tx, dim, 1, n - 1)?)));
        let mut sa = shape.to_vec();
        sa[dim] = 1;
        assert_eq!(a.shape(), &sa[..]);
        let joined = run(|rec| concat(rec, &[&a, &b], dim));
        assert_eq!(joined.shape(), &shape);
        assert_close(
            &format!("concat dim {dim}"),
            &download(&joined),
            &to_f64(&x),
            0.0,
            0.0,
        );
    }
    // A middle slice, checked element by element.
    let m = run(|rec| slice(rec, &tx, 2, 1, 3));
    let want: Vec<f64> = (0..3 * 4)
        .flat_map(|r| (1..4).map(move |j| (r * 5 + j) as f64))
        .collect();
    assert_close("slice", &download(&m), &want, 0.0, 0.0);
}

#[test]
fn fill_and_integer_copy() {
    let t = run(|rec| fill(rec, &[3, 7], DType::U32, 8255));
    assert_eq!(t.to_u32(ctx()).expect("ids"), vec![8255; 21]);
    let z = run(|rec| zeros(rec, &[5]));
    assert_eq!(download(&z), vec![0.0; 5]);
    let ids = Tensor::from_u32(ctx(), "ids", &[2, 3], &[1, 2, 3, 4, 5, 6]).expect("upload");
    let tr = run(|rec| permute(rec, &ids, &[1, 0]));
    assert_eq!(tr.to_u32(ctx()).expect("ids"), vec![1, 4, 2, 5, 3, 6]);
}

#[test]
fn rgba8_packing_clips_rounds_and_pads_rows() {
    let (b, h, w) = (2, 3, 70);
    let mut r = rng(8);
    let x: Vec<f32> = randn(&mut r, b * 3 * h * w)
        .iter()
        .map(|v| v * 0.8 + 0.5)
        .collect();
    let t = upload("images", &[b, 3, h, w], &x);
    let packed = run(|rec| tessera_engine::ops::layout::to_rgba8(rec, &t, 1));
    let pitch = tessera_engine::ops::layout::rgba8_row_pitch(w);
    assert_eq!(packed.shape(), &[h, pitch]);
    assert_eq!((pitch * 4) % 256, 0);
    let words = packed.to_u32(ctx()).expect("read");
    for y in 0..h {
        for xx in 0..w {
            let px = words[y * pitch + xx].to_le_bytes();
            for c in 0..3 {
                let v = x[((3 + c) * h + y) * w + xx];
                let want = (v.clamp(0.0, 1.0) * 255.0 + 0.5).floor() as i32;
                assert!(
                    (i32::from(px[c]) - want).abs() <= 1,
                    "({y},{xx}) c{c}: {} vs {want}",
                    px[c]
                );
            }
            assert_eq!(px[3], 255);
        }
    }
}

/// Permutes of rank 5 and 6 (pixel shuffles on channels-last data) against a host loop, with
/// odd sizes; rank 7 is refused.
#[test]
fn permute_up_to_rank_six_matches_host() {
    use tessera_engine::io::loader::permute_host;
    for (shape, perm) in [
        (vec![2, 3, 2, 5, 2], vec![0, 2, 4, 1, 3]),
        (vec![1, 3, 2, 5, 2, 3], vec![0, 1, 3, 5, 2, 4]),
        (vec![2, 3, 5, 3, 2, 2], vec![0, 1, 4, 2, 5, 3]),
        (vec![3, 1, 2, 2, 3, 2], vec![5, 4, 3, 2, 1, 0]),
    ] {
        let n: usize = shape.iter().product();
        let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let tx = upload("x", &shape, &x);
        let y = run(|rec| permute(rec, &tx, &perm));
        let want_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
        assert_eq!(y.shape(), &want_shape[..]);
        let want = permute_host(&x, &shape, &perm);
        assert_close(
            &format!("permute {shape:?} {perm:?}"),
            &download(&y),
            &to_f64(&want),
            0.0,
            0.0,
        );
    }
    let tx = upload("x", &[1; 7], &[0.0]);
    let mut rec = ctx().recorder();
    assert!(permute(&mut rec, &tx, &[0, 1, 2, 3, 4, 5, 6]).is_err());
}
