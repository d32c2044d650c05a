use tessera_engine::ops::conv::{
    Conv2dSpec, ConvStrategy, PadMode, conv_transpose2d, conv2d, conv2d_with_strategy,
    depthwise_conv2d_nhwc, depthwise_conv2d_nhwc_padded, pad2d, upsample_nearest,
};

use crate::common::*;

#[allow(clippy::too_many_arguments)]
pub(crate) fn conv_ref(
    x: &[f32],
    [b, cin, h, w]: [usize; 4],
    wt: &[f32],
    [cout, kh, kw]: [usize; 3],
    bias: Option<&[f32]>,
    s: &Conv2dSpec,
) -> (Vec<f64>, [usize; 4]) {
    let [sh, sw] = s.stride;
    let [pt, pb, pl, pr] = s.padding;
    let oh = (h + pt + pb - kh) / sh + 1;
    let ow = (w + pl + pr - kw) / sw + 1;
    let (cin_g, cout_g) = (cin / s.groups, cout / s.groups);
    let mut out = vec![0.0; b * cout * oh * ow];
    for bi in 0..b {
        for co in 0..cout {
            let g = co / cout_g;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = bias.map_or(0.0, |bb| f64::from(bb[co]));
                    for ci in 0..cin_g {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * sh + ky) as isize - pt as isize;
                                let ix = (ox * sw + kx) as isize - pl as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    continue;
                                }
                                let xv = x[((bi * cin + g * cin_g + ci) * h + iy as usize) * w
                                    + ix as usize];
                                let wv = wt[((co * cin_g + ci) * kh + ky) * kw + kx];
                                acc += f64::from(xv) * f64::from(wv);
                            }
                        }
                    }
                    out[((bi * cout + co) * oh + oy) * ow + ox] = acc;
                }
            }
        }
    }
    (out, [b, cout, oh, ow])
}

fn check(xs: [usize; 4], cout: usize, k: [usize; 2], s: Conv2dSpec, bias: bool, seed: u64) {
    let mut r = rng(seed);
    let [b, cin, h, w] = xs;
    let x = randn(&mut r, b * cin * h * w);
    let wt = randn(&mut r, cout * (cin / s.groups) * k[0] * k[1]);
    let bs = bias.then(|| randn(&mut r, cout));
    let tx = upload("x", &xs, &x);
    let tw = upload("w", &[cout, cin / s.groups, k[0], k[1]], &wt);
    let tb = bs.as_ref().map(|v| upload("b", &[cout], v));
    let (want, shape) = conv_ref(&x, xs, &wt, [cout, k[0], k[1]], bs.as_deref(), &s);
    // Every kernel strategy that computes this convolution, whatever the adapter would pick.
    for strategy in ConvStrategy::ALL
        .into_iter()
        .filter(|st| st.supports(s.groups, cin, (k[0], k[1])) && st.available(ctx()))
    {
        let y = run(|rec| conv2d_with_strategy(rec, &tx, &tw, tb.as_ref(), &s, Some(strategy)));
        assert_eq!(y.shape(), &shape);
        // The cooperative-matrix kernel multiplies f16 roundings of the input and weights.
        let (want, atol) = if strategy.tensor_cores() {
            let round = |v: &[f32]| -> Vec<f32> {
                v.iter().map(|&a| half::f16::from_f32(a).to_f32()).collect()
            };
            let taps = (cin / s.groups * k[0] * k[1]) as f64;
            let (w16, _) = conv_ref(
                &round(&x),
                xs,
                &round(&wt),
                [cout, k[0], k[1]],
                bs.as_deref(),
                &s,
            );
            (w16, 2e-5 * taps.sqrt())
        } else {
            (want.clone(), 1e-4)
        };
        assert_close(
            &format!("conv2d {xs:?}→{cout} k{k:?} {s:?} {strategy:?}"),
            &download(&y),
            &want,
            atol.max(1e-4),
            1e-4,
        );
    }
}

#[test]
fn register_blocked_conv_edges() {
    // Blocks of 32 channels × 64 pixels per workgroup: sizes across and not multiples of them.
    check([1, 3, 9, 11], 35, [3, 3], Conv2dSpec::same(1), true, 40);
    check([2, 33, 8, 8], 7, [3, 3], Conv2dSpec::same(1), false, 41);
    check([1, 4, 13, 5], 64, [1, 1], Conv2dSpec::same(0), true, 42);
}

#[test]
fn implicit_gemm_conv_edges() {
    // Tiles of 64 channels × 64 pixels and K steps of 16 taps: across and off them, with the
    // VQ decoder's 3×3 and an odd kernel, stride and padding.
    check([1, 16, 9, 9], 64, [3, 3], Conv2dSpec::same(1), true, 60);
    check([2, 7, 11, 13], 70, [3, 3], Conv2dSpec::same(1), false, 61);
    check([1, 33, 8, 8], 65, [1, 1], Conv2dSpec::same(0), true, 62);
    let odd = Conv2dSpec {
        stride: [2, 1],
        padding: [2, 0, 1, 2],
        groups: 1,
    };
    check([1, 5, 17, 10], 9, [5, 3], odd, true, 63);
}

#[test]
fn conv_strategy_choice() {
    use tessera_engine::gpu::KernelFamily::{Cpu, Tiled};
    let choose = ConvStrategy::choose;
    assert_eq!(choose(Tiled, false, 1, 128, (3, 3)), ConvStrategy::Rows);
    assert_eq!(choose(Cpu, true, 1, 128, (3, 3)), ConvStrategy::Rows);
    assert_eq!(choose(Tiled, true, 4, 128, (3, 3)), ConvStrategy::Direct);
    // Tensor cores: tap by tap where the input channels fill the slices and there are taps.
    assert_eq!(choose(Tiled, true, 1, 128, (3, 3)), ConvStrategy::CoopTaps);
    assert_eq!(choose(Tiled, true, 1, 32, (4, 4)), ConvStrategy::CoopTaps);
    assert_eq!(choose(Tiled, true, 1, 8, (3, 3)), ConvStrategy::Coop);
    assert_eq!(choose(Tiled, true, 1, 48, (3, 3)), ConvStrategy::Coop);
    assert_eq!(choose(Tiled, true, 1, 128, (1, 1)), ConvStrategy::Coop);
    assert!(!ConvStrategy::CoopTaps.supports(2, 128, (3, 3)));
    assert!(ConvStrategy::Direct.supports(4, 6, (3, 3)));
}

/// `CoopTaps` refuses what it does not compute instead of computing it wrong, on any adapter
/// (the shape is checked before the feature).
#[test]
fn tap_major_conv_refuses_channels_off_its_slices() {
    let x = upload("x", &[1, 48, 4, 4], &vec![0.0; 48 * 16]);
    let w = upload("w", &[8, 48, 3, 3], &vec![0.0; 8 * 48 * 9]);
    let mut rec = ctx().recorder();
    let s = Conv2dSpec::same(1);
    let err = conv2d_with_strategy(&mut rec, &x, &w, None, &s, Some(ConvStrategy::CoopTaps))
        .expect_err("CoopTaps accepted 48 input channels");
    assert!(err.to_string().contains("48 input channels"), "{err}");
}

/// The tensor-core implicit GEMM (`ConvStrategy::Coop`) on an adapter that has cooperative
/// matrices (an NVIDIA GPU; lavapipe in Mesa 26): tiles of 64 channels × 64 pixels and
/// K slices of 32 taps, across and off them, 1×1, 3×3 and 4×4 kernels, stride and padding.
/// `check` runs it beside the other strategies wherever it is available; this test fails on an
/// adapter without it rather than skipping (`--ignored`: tools/bench/run_device.sh,
/// tools/dev/coop-lavapipe.sh).
#[test]
#[ignore = "needs cooperative matrices (a GPU, or lavapipe ≥ 26: tools/dev/coop-lavapipe.sh)"]
fn coop_kernels_conv_on_an_adapter_with_cooperative_matrices() {
    assert!(
        ConvStrategy::Coop.available(ctx()),
        "this adapter ({}) has no cooperative matrices the kernels use: {:?}",
        ctx().info.name,
        ctx().cooperative_matrix_configs()
    );
    check([1, 16, 9, 9], 64, [3, 3], Conv2dSpec::same(1), true, 1500);
    check([2, 7, 11, 13], 70, [3, 3], Conv2dSpec::same(1), false, 1501);
    check(
        [1, 40, 12, 12],
        130,
        [1, 1],
        Conv2dSpec::same(0),
        true,
        1502,
    );
    let strided = Conv2dSpec {
        stride: [2, 2],
        padding: [1, 2, 1, 2],
        groups: 1,
    };
    check([1, 9, 17, 15], 33, [4, 4], strided, true, 1503);
    // Input channels that fill slices of 32: `CoopTaps` beside `Coop` (check runs both), one
    // and several slices per tap, several tiles of output channels and pixels, edges off them.
    check([1, 32, 9, 11], 70, [3, 3], Conv2dSpec::same(1), true, 1504);
    check([2, 96, 13, 7], 64, [3, 3], Conv2dSpec::same(1), false, 1505);
    check([1, 64, 17, 15], 33, [4, 4], strided, true, 1506);
    check(
        [1, 128, 5, 70],
        130,
        [3, 3],
        Conv2dSpec::same(1),
        true,
        1507,
    );
}

#[test]
fn conv3x3_same_padding_with_bias() {
    check([2, 5, 7, 9], 6, [3, 3], Conv2dSpec::same(1), true, 1);
    check([1, 3, 16, 16], 8, [3, 3], Conv2dSpec::same(1), false, 2);
}

#[test]
fn conv1x1_and_strided_and_asymmetric_padding() {
    check([2, 7, 5, 3], 4, [1, 1], Conv2dSpec::same(0), true, 3);
    // VQ encoder downsample: pad (0, 1, 0, 1) then 3×3 stride 2.
    let down = Conv2dSpec {
        stride: [2, 2],
        padding: [0, 1, 0, 1],
        groups: 1,
    };
    check([1, 4, 8, 8], 4, [3, 3], down, true, 4);
    check([1, 4, 7, 9], 3, [3, 3], down, false, 5);
    // aMUSEd 512 downsample: 2×2 stride 2.
    check(
        [2, 6, 6, 6],
        6,
        [2, 2],
        Conv2dSpec {
            stride: [2, 2],
            padding: [0; 4],
            groups: 1,
        },
        false,
        6,
    );
}

#[test]
fn depthwise_and_grouped() {
    check(
        [2, 8, 6, 5],
        8,
        [3, 3],
        Conv2dSpec {
            groups: 8,
            ..Conv2dSpec::same(1)
        },
        true,
        7,
    );
    check(
        [1, 6, 5, 5],
        9,
        [3, 3],
        Conv2dSpec {
            groups: 3,
            ..Conv2dSpec::same(1)
        },
        true,
        8,
    );
}

#[test]
fn conv_rejects_mismatched_weight() {
    let tx = upload("x", &[1, 4, 3, 3], &[0.0; 36]);
    let tw = upload("conv.weight", &[2, 3, 3, 3], &[0.0; 54]);
    let mut rec = ctx().recorder();
    let err = conv2d(&mut rec, &tx, &tw, None, &Conv2dSpec::same(1)).expect_err("cin");
    assert!(err.to_string().contains("conv.weight"), "{err}");
}

#[allow(clippy::too_many_arguments)]
fn conv_t_ref(
    x: &[f32],
    [b, cin, h, w]: [usize; 4],
    wt: &[f32],
    cout: usize,
    k: usize,
    s: usize,
    p: usize,
    bias: &[f32],
) -> Vec<f64> {
    let (oh, ow) = ((h - 1) * s + k - 2 * p, (w - 1) * s + k - 2 * p);
    let mut out = vec![0.0; b * cout * oh * ow];
    for bi in 0..b {
        for co in 0..cout {
            for v in out[(bi * cout + co) * oh * ow..][..oh * ow].iter_mut() {
                *v = f64::from(bias[co]);
            }
        }
        for ci in 0..cin {
            for iy in 0..h {
                for ix in 0..w {
                    let xv = f64::from(x[((bi * cin + ci) * h + iy) * w + ix]);
                    for co in 0..cout {
                        for ky in 0..k {
                            for kx in 0..k {
                                let oy = (iy * s + ky) as isize - p as isize;
                                let ox = (ix * s + kx) as isize - p as isize;
                                if oy < 0 || ox < 0 || oy >= oh as isize || ox >= ow as isize {
                                    continue;
                                }
                                out[((bi * cout + co) * oh + oy as usize) * ow + ox as usize] +=
                                    xv * f64::from(wt[((ci * cout + co) * k + ky) * k + kx]);
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

#[test]
fn transposed_conv_k2s2_and_k4s2p1() {
    let mut r = rng(9);
    // The last two have more pixels and channels than one register block (64 × 32).
    for &(xs, cout, k, s, p, with_bias) in &[
        ([2, 5, 3, 4], 6, 2, 2, 0, true),
        ([1, 3, 5, 5], 2, 4, 2, 1, true),
        ([2, 7, 9, 11], 35, 2, 2, 0, false),
        ([1, 4, 3, 5], 9, 3, 3, 0, true),
    ] {
        let [b, cin, h, w] = xs;
        let x = randn(&mut r, b * cin * h * w);
        let wt = randn(&mut r, cin * cout * k * k);
        let bs = if with_bias {
            randn(&mut r, cout)
        } else {
            vec![0.0; cout]
        };
        let (tx, tw, tb) = (
            upload("x", &xs, &x),
            upload("w", &[cin, cout, k, k], &wt),
            upload("b", &[cout], &bs),
        );
        let want = conv_t_ref(&x, xs, &wt, cout, k, s, p, &bs);
        for family in FAMILIES {
            let y = run_in(family, |rec| {
                conv_transpose2d(rec, &tx, &tw, with_bias.then_some(&tb), s, p)
            });
            assert_eq!(
                y.shape(),
                &[b, cout, (h - 1) * s + k - 2 * p, (w - 1) * s + k - 2 * p]
            );
            assert_close(
                &format!("conv_transpose2d k{k} s{s} p{p} {family:?}"),
                &download(&y),
                &want,
                1e-4,
                1e-4,
            );
        }
    }
}

#[test]
fn nearest_upsample_and_zero_pad() {
    let mut r = rng(10);
    let (b, c, h, w) = (2, 3, 3, 5);
    let x = randn(&mut r, b * c * h * w);
    let tx = upload("x", &[b, c, h, w], &x);
    let up = run(|rec| upsample_nearest(rec, &tx, 2));
    assert_eq!(up.shape(), &[b, c, 2 * h, 2 * w]);
    let mut want = Vec::new();
    for bc in 0..b * c {
        for y in 0..2 * h {
            for xx in 0..2 * w {
                want.push(f64::from(x[(bc * h + y / 2) * w + xx / 2]));
            }
        }
    }
    assert_close("upsample", &download(&up), &want, 0.0, 0.0);
    let padded = run(|rec| pad2d(rec, &tx, [0, 1, 2, 1]));
    let (oh, ow) = (h + 1, w + 3);
    assert_eq!(padded.shape(), &[b, c, oh, ow]);
    let mut want = Vec::new();
    for bc in 0..b * c {
        for y in 0..oh {
            for xx in 0..ow {
                let inside = y < h && (2..2 + w).contains(&xx);
                want.push(if inside {
                    f64::from(x[(bc * h + y) * w + xx - 2])
                } else {
                    0.0
                });
            }
        }
    }
    assert_close("pad2d", &download(&padded), &want, 0.0, 0.0);
}

/// Channels-last depthwise conv against the NCHW reference (permuted), odd sizes, stride,
/// asymmetric padding, with and without bias; a non-depthwise weight is refused.
#[test]
fn depthwise_channels_last_matches_nchw_reference() {
    let mut seed = 700;
    for &(b, c, h, w, k, stride, pad, bias) in &[
        (1, 5, 7, 9, 3, 1, [1, 1, 1, 1], true),
        (2, 33, 8, 8, 3, 1, [1, 1, 1, 1], false),
        (1, 4, 9, 6, 3, 2, [0, 1, 1, 0], true),
        (1, 3, 5, 5, 1, 1, [0, 0, 0, 0], true),
    ] {
        seed += 1;
        let mut r = rng(seed);
        let x_nchw = randn(&mut r, b * c * h * w);
        let wt = randn(&mut r, c * k * k);
        let bs = bias.then(|| randn(&mut r, c));
        let s = Conv2dSpec {
            stride: [stride, stride],
            padding: pad,
            groups: c,
        };
        let (want_nchw, [_, _, oh, ow]) =
            conv_ref(&x_nchw, [b, c, h, w], &wt, [c, k, k], bs.as_deref(), &s);
        // NCHW → NHWC for the input, and the expectation.
        let nhwc = |v: &[f32], hh: usize, ww: usize| -> Vec<f32> {
            let mut o = vec![0.0; v.len()];
            for bi in 0..b {
                for ci in 0..c {
                    for y in 0..hh {
                        for xx in 0..ww {
                            o[((bi * hh + y) * ww + xx) * c + ci] =
                                v[((bi * c + ci) * hh + y) * ww + xx];
                        }
                    }
                }
            }
            o
        };
        let want_f32: Vec<f32> = want_nchw.iter().map(|&v| v as f32).collect();
        let want: Vec<f64> = nhwc(&want_f32, oh, ow).into_iter().map(f64::from).collect();
        let tx = upload("x", &[b, h, w, c], &nhwc(&x_nchw, h, w));
        let tw = upload("w", &[c, 1, k, k], &wt);
        let tb = bs.as_ref().map(|v| upload("b", &[c], v));
        for family in FAMILIES {
            let out = run_in(family, |rec| {
                depthwise_conv2d_nhwc(rec, &tx, &tw, tb.as_ref(), &s)
            });
            assert_eq!(out.shape(), &[b, oh, ow, c]);
            assert_close(
                &format!("depthwise nhwc {b}x{h}x{w}x{c} k{k} s{stride} {family:?}"),
                &download(&out),
                &want,
                1e-5,
                1e-5,
            );
        }
    }
    let x = upload("x", &[1, 4, 4, 6], &[0.0; 96]);
    let dense = upload("w", &[6, 6, 3, 3], &[0.0; 324]);
    let mut rec = ctx().recorder();
    let s = Conv2dSpec {
        groups: 6,
        ..Conv2dSpec::same(1)
    };
    assert!(depthwise_conv2d_nhwc(&mut rec, &x, &dense, None, &s).is_err());
}

/// Channels-last grouped depthwise conv with n inputs per group (PyTorch's `groups=C` over
/// `C·n` inputs: output c reads inputs c·n .. c·n + n, the channel pairing after a skip
/// concatenation) and the three padding modes, against a direct CPU loop (NHWC indices).
#[test]
fn depthwise_groups_and_padding_modes_match_reference() {
    let mut seed = 900;
    for &(b, c, n, h, w, k, stride, pad, mode) in &[
        (1, 5, 2, 7, 9, 3, 1, [1, 1, 1, 1], PadMode::Zeros),
        (2, 3, 2, 6, 5, 3, 1, [1, 1, 1, 1], PadMode::Replicate),
        (1, 4, 1, 5, 8, 3, 1, [1, 1, 1, 1], PadMode::Reflect),
        (1, 6, 1, 9, 7, 5, 2, [2, 1, 2, 2], PadMode::Replicate),
        (1, 2, 3, 4, 6, 3, 1, [2, 2, 1, 1], PadMode::Reflect),
    ] {
        seed += 1;
        let mut r = rng(seed);
        let cin = c * n;
        let x = randn(&mut r, b * h * w * cin);
        let wt = randn(&mut r, c * n * k * k);
        let bs = randn(&mut r, c);
        let [pt, pb, pl, pr] = pad;
        let oh = (h + pt + pb - k) / stride + 1;
        let ow = (w + pl + pr - k) / stride + 1;
        let edge = |i: isize, len: usize| -> Option<usize> {
            let last = len as isize - 1;
            if (0..=last).contains(&i) {
                return Some(i as usize);
            }
            match mode {
                PadMode::Zeros => None,
                PadMode::Replicate => Some(i.clamp(0, last) as usize),
                PadMode::Reflect => Some(if i < 0 { -i } else { 2 * last - i } as usize),
            }
        };
        let mut want = vec![0.0f64; b * oh * ow * c];
        for bi in 0..b {
            for oy in 0..oh {
                for ox in 0..ow {
                    for co in 0..c {
                        let mut acc = f64::from(bs[co]);
                        for ky in 0..k {
                            let Some(iy) = edge((oy * stride + ky) as isize - pt as isize, h)
                            else {
                                continue;
                            };
                            for kx in 0..k {
                                let Some(ix) = edge((ox * stride + kx) as isize - pl as isize, w)
                                else {
                                    continue;
                                };
                                for j in 0..n {
                                    let xv = x[((bi * h + iy) * w + ix) * cin + co * n + j];
                                    let wv = wt[((co * n + j) * k + ky) * k + kx];
                                    acc += f64::from(xv) * f64::from(wv);
                                }
                            }
                        }
                        want[((bi * oh + oy) * ow + ox) * c + co] = acc;
                    }
                }
            }
        }
        let s = Conv2dSpec {
            stride: [stride, stride],
            padding: pad,
            groups: c,
        };
        let tx = upload("x", &[b, h, w, cin], &x);
        let tw = upload("w", &[c, n, k, k], &wt);
        let tb = upload("b", &[c], &bs);
        for family in FAMILIES {
            let out = run_in(family, |rec| {
                depthwise_conv2d_nhwc_padded(rec, &tx, &tw, Some(&tb), &s, mode)
            });
            assert_eq!(out.shape(), &[b, oh, ow, c]);
            assert_close(
                &format!("depthwise {b}x{h}x{w}x{c}·{n} k{k} s{stride} {mode:?} {family:?}"),
                &download(&out),
                &want,
                1e-5,
                1e-5,
            );
        }
    }
    // Reflection needs a padding below the side.
    let x = upload("x", &[1, 2, 2, 1], &[0.0; 4]);
    let wt = upload("w", &[1, 1, 5, 5], &[0.0; 25]);
    let s = Conv2dSpec {
        groups: 1,
        ..Conv2dSpec::same(2)
    };
    let mut rec = ctx().recorder();
    assert!(depthwise_conv2d_nhwc_padded(&mut rec, &x, &wt, None, &s, PadMode::Reflect).is_err());
}
