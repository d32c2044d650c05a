use tessera_engine::Tensor;
use tessera_engine::ops::embed::{
    Sinusoidal, Table, check_ids, embedding, embedding_repeated, embedding_table,
    sinusoidal_embedding,
};

use crate::common::*;

#[test]
fn embedding_gathers_rows() {
    let mut r = rng(1);
    let (vocab, c) = (54, 33);
    let table = randn(&mut r, vocab * c);
    let ids: Vec<u32> = vec![0, 53, 7, 7, 20, 1, 52];
    let tt = upload("table", &[vocab, c], &table);
    let ti = Tensor::from_u32(ctx(), "ids", &[1, 7], &ids).expect("ids");
    let y = run(|rec| embedding(rec, &ti, &tt));
    assert_eq!(y.shape(), &[1, 7, c]);
    let want: Vec<f64> = ids
        .iter()
        .flat_map(|&i| table[i as usize * c..][..c].iter().map(|&v| f64::from(v)))
        .collect();
    assert_close("embedding", &download(&y), &want, 0.0, 0.0);
}

#[test]
fn a_table_split_into_row_blocks_gathers_like_one_table() {
    // What a table over the binding limit becomes: 54 rows in blocks of 20, 20, 14; ids from
    // every block, and GPU-side ids past the vocabulary clamped to the last row as before.
    let mut r = rng(2);
    let (vocab, c) = (54, 9);
    let table = randn(&mut r, vocab * c);
    let ids: Vec<u32> = vec![0, 53, 19, 20, 39, 40, 7, 99];
    let split = Table::from_f32_in_blocks(ctx(), "table", &[vocab, c], &table, 20).expect("split");
    assert_eq!(split.blocks(), 3);
    let ti = Tensor::from_u32(ctx(), "ids", &[2, 4], &ids).expect("ids");
    let y = run(|rec| embedding_table(rec, &ti, &split));
    assert_eq!(y.shape(), &[2, 4, c]);
    let want: Vec<f64> = ids
        .iter()
        .flat_map(|&i| {
            let i = (i as usize).min(vocab - 1);
            table[i * c..][..c].iter().map(|&v| f64::from(v))
        })
        .collect();
    assert_close("split embedding", &download(&y), &want, 0.0, 0.0);
}

#[test]
fn host_ids_outside_vocabulary_are_reported() {
    assert!(check_ids("tokens", &[1, 2, 3], 4).is_ok());
    let err = check_ids("tokens", &[1, 9, 3], 4).expect_err("9 ≥ 4");
    assert!(err.to_string().contains("tokens[1] = 9"), "{err}");
}

fn timestep_ref(x: f64, o: &Sinusoidal) -> Vec<f64> {
    let half = o.dim / 2;
    let mut sin = Vec::new();
    let mut cos = Vec::new();
    for j in 0..half {
        let f = (-(f64::from(o.max_period)).ln() * j as f64
            / (half as f64 - f64::from(o.downscale_freq_shift)))
        .exp();
        let a = f64::from(o.scale) * x * f;
        sin.push(a.sin());
        cos.push(a.cos());
    }
    let mut v = if o.flip_sin_to_cos {
        [cos, sin].concat()
    } else {
        [sin, cos].concat()
    };
    if o.dim % 2 == 1 {
        v.push(0.0);
    }
    v
}

#[test]
fn sinusoidal_matches_timestep_embedding() {
    // aMUSEd micro-conditioning: 256-d, flip_sin_to_cos, shift 0, values like 256 and 6.
    let vals = [256.0f32, 256.0, 0.0, 0.0, 6.0, 0.37];
    let tv = upload("micro", &[vals.len()], &vals);
    // Paella: a noise level r ∈ [0, 1] scaled by 10000.
    let ratios = [0.0f32, 0.37, 1.0];
    let tr = upload("r", &[ratios.len()], &ratios);
    for (opts, vals, tv) in [
        (
            Sinusoidal {
                flip_sin_to_cos: true,
                downscale_freq_shift: 0.0,
                ..Sinusoidal::new(256)
            },
            &vals[..],
            &tv,
        ),
        (
            Sinusoidal {
                scale: 10000.0,
                ..Sinusoidal::new(64)
            },
            &ratios[..],
            &tr,
        ),
        (Sinusoidal::new(33), &vals[..], &tv),
    ] {
        let y = run(|rec| sinusoidal_embedding(rec, tv, &opts));
        assert_eq!(y.shape(), &[vals.len(), opts.dim]);
        let want: Vec<f64> = vals
            .iter()
            .flat_map(|&v| timestep_ref(f64::from(v), &opts))
            .collect();
        // Arguments reach 1e4 (scale·r); f32 rounding of the argument bounds the error there.
        let atol = if opts.scale > 1.0 { 5e-3 } else { 1e-4 };
        assert_close(
            &format!("sinusoidal {opts:?}"),
            &download(&y),
            &want,
            atol,
            0.0,
        );
    }
}

/// Ids `[B, L]` repeated along the batch: row r of `[k·B, L, C]` looks up row `r mod B`.
#[test]
fn repeated_ids_gather_each_batch_row_again() {
    let mut r = rng(5);
    let (vocab, c) = (19, 7);
    let table = randn(&mut r, vocab * c);
    let ids: Vec<u32> = vec![3, 18, 0, 5, 5, 11];
    let tt = upload("table", &[vocab, c], &table);
    let ti = Tensor::from_u32(ctx(), "ids", &[2, 3], &ids).expect("ids");
    for times in [1, 2, 3] {
        let y = run(|rec| embedding_repeated(rec, &ti, &tt, times));
        assert_eq!(y.shape(), &[2 * times, 3, c]);
        let want: Vec<f64> = (0..times)
            .flat_map(|_| ids.iter())
            .flat_map(|&i| table[i as usize * c..][..c].iter().map(|&v| f64::from(v)))
            .collect();
        assert_close("repeated embedding", &download(&y), &want, 0.0, 0.0);
    }
    let mut rec = ctx().recorder();
    assert!(embedding_repeated(&mut rec, &ti, &tt, 0).is_err());
}
