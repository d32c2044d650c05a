//! Tensors larger than one storage binding: the ops that split their work (convolution, group
//! norm, nearest upsampling, elementwise sums) must give the unsplit result bit for bit, and so
//! must a whole VQ decode and encode. A second device with a lowered binding limit stands in
//! for adapters whose limit is 128 MiB (lavapipe, WebGPU's default), where amused-512's decoder
//! holds 256 MiB activations.

use std::sync::OnceLock;

use tessera_engine::gpu::KernelFamily;
use tessera_engine::io::{Checkpoint, Loader};
use tessera_engine::models::amused::vq::{Config, VqModel};
use tessera_engine::ops::conv::{Conv2dSpec, conv2d, upsample_nearest};
use tessera_engine::ops::elementwise::add;
use tessera_engine::ops::norm::group_norm;
use tessera_engine::ops::{elementwise, layout};
use tessera_engine::{Error, GpuContext, Recorder, Tensor};

/// The lowered limit: 16 KiB, so that a 16×16 image with 32 channels (32 KiB) is split.
const LIMIT: u64 = 16 << 10;

fn device(limit: Option<u64>) -> GpuContext {
    let mut ctx = GpuContext::new().unwrap_or_else(|e| {
        panic!("GPU tests need a wgpu adapter (`apt-get install mesa-vulkan-drivers`): {e}")
    });
    if let Some(bytes) = limit {
        ctx.lower_binding_limit_for_tests(bytes);
        assert_eq!(ctx.limits().max_storage_buffer_binding_size, bytes);
    }
    ctx
}

/// The adapter's own limits, and the same adapter with [`LIMIT`].
fn contexts() -> [&'static GpuContext; 2] {
    static WHOLE: OnceLock<GpuContext> = OnceLock::new();
    static SPLIT: OnceLock<GpuContext> = OnceLock::new();
    [
        WHOLE.get_or_init(|| device(None)),
        SPLIT.get_or_init(|| device(Some(LIMIT))),
    ]
}

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n as u32)
        .map(|i| {
            let h = (i ^ seed.wrapping_mul(0x9e37_79b9))
                .wrapping_mul(0x85eb_ca6b)
                .rotate_left(13)
                .wrapping_mul(0xc2b2_ae35);
            (h >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

/// Runs `op` on both devices over the same inputs (`(shape, seed)` each) in `family`, checks
/// that the split device really had to split (some input or the output is over its limit), and
/// returns both results' bits.
fn both(
    family: KernelFamily,
    inputs: &[(&[usize], u32)],
    op: impl Fn(&mut Recorder<'_>, &[Tensor]) -> tessera_engine::Result<Tensor>,
) -> [Vec<u32>; 2] {
    contexts().map(|ctx| {
        let tensors: Vec<Tensor> = inputs
            .iter()
            .map(|(shape, seed)| {
                let n = shape.iter().product();
                Tensor::from_f32(ctx, "x", shape, &values(n, *seed)).expect("upload")
            })
            .collect();
        let mut rec = ctx.recorder();
        rec.set_kernel_family(family);
        let out = op(&mut rec, &tensors).expect("op");
        rec.submit();
        let limit = ctx.limits().max_storage_buffer_binding_size;
        if limit == LIMIT {
            assert!(
                tensors.iter().chain([&out]).any(|t| t.byte_len() > limit),
                "nothing in this case exceeds the lowered limit"
            );
        }
        out.to_f32(ctx)
            .expect("download")
            .iter()
            .map(|v| v.to_bits())
            .collect()
    })
}

fn assert_same(what: &str, [whole, split]: [Vec<u32>; 2]) {
    assert_eq!(whole.len(), split.len(), "{what}: length");
    if let Some(i) = whole.iter().zip(&split).position(|(a, b)| a != b) {
        panic!(
            "{what}: element {i} differs: unsplit {}, split {}",
            f32::from_bits(whole[i]),
            f32::from_bits(split[i])
        );
    }
}

#[test]
fn split_convolutions_equal_unsplit() {
    let s1 = Conv2dSpec::same(1);
    let down = Conv2dSpec {
        stride: [2, 2],
        padding: [0, 1, 0, 1],
        groups: 1,
    };
    let wide = Conv2dSpec {
        stride: [2, 1],
        padding: [2, 2, 1, 0],
        groups: 1,
    };
    let grouped = Conv2dSpec {
        groups: 4,
        ..Conv2dSpec::same(1)
    };
    // (input, weight, spec): 3×3 same, 1×1, the VQ encoder's stride-2 downsampler, a 5×3
    // kernel with uneven padding and strides, grouped; odd sides, batch 2.
    let cases: [([usize; 4], [usize; 4], Conv2dSpec); 5] = [
        ([1, 24, 16, 16], [16, 24, 3, 3], s1),
        ([2, 20, 15, 17], [36, 20, 1, 1], Conv2dSpec::same(0)),
        ([1, 16, 33, 16], [16, 16, 3, 3], down),
        ([1, 12, 45, 13], [16, 12, 5, 3], wide),
        ([2, 16, 16, 16], [16, 4, 3, 3], grouped),
    ];
    for (i, (xs, ws, spec)) in cases.into_iter().enumerate() {
        for family in [KernelFamily::Tiled, KernelFamily::Cpu] {
            let bits = both(
                family,
                &[(&xs, 1 + i as u32), (&ws, 100 + i as u32), (&ws[..1], 7)],
                |rec, t| conv2d(rec, &t[0], &t[1], Some(&t[2]), &spec),
            );
            assert_same(&format!("conv2d {xs:?} * {ws:?} {spec:?} {family:?}"), bits);
        }
    }
}

#[test]
fn split_group_norm_upsample_and_sum_equal_unsplit() {
    for family in [KernelFamily::Tiled, KernelFamily::Cpu] {
        for silu in [false, true] {
            let bits = both(
                family,
                &[(&[2, 32, 12, 11], 3), (&[32], 4), (&[32], 5)],
                |rec, t| group_norm(rec, &t[0], 8, Some(&t[1]), Some(&t[2]), 1e-6, silu),
            );
            assert_same(&format!("group_norm silu {silu} {family:?}"), bits);
        }
        let bits = both(family, &[(&[2, 12, 9, 7], 6)], |rec, t| {
            upsample_nearest(rec, &t[0], 2)
        });
        assert_same(&format!("upsample_nearest {family:?}"), bits);
        let bits = both(
            family,
            &[(&[3, 5, 23, 21], 8), (&[3, 5, 23, 21], 9)],
            |rec, t| add(rec, &t[0], &t[1]),
        );
        assert_same(&format!("add {family:?}"), bits);
    }
}

/// A group of channels larger than the limit cannot be split: a clear error, no panic.
#[test]
fn a_piece_that_cannot_fit_is_an_error() {
    let ctx = contexts()[1];
    let x = Tensor::from_f32(ctx, "x", &[1, 64, 16, 16], &values(64 * 256, 1)).expect("upload");
    let mut rec = ctx.recorder();
    // One group of 32 channels at 16×16 is 32 KiB.
    let err = group_norm(&mut rec, &x, 2, None, None, 1e-6, false).expect_err("over the limit");
    assert!(matches!(err, Error::OverLimit { .. }), "{err}");
    assert!(err.to_string().contains("group_norm"), "{err}");
    // Ops that do not split refuse a tensor over the limit at dispatch.
    let err = layout::permute(&mut rec, &x, &[0, 2, 3, 1]).expect_err("permute over the limit");
    assert!(matches!(err, Error::OverLimit { .. }), "{err}");
    let err = elementwise::silu(&mut rec, &x).expect_err("silu over the limit");
    assert!(
        err.to_string().contains("max_storage_buffer_binding_size"),
        "{err}"
    );
}

/// Small channels at a large size, as amused-512's decoder is relative to a 128 MiB limit:
/// every weight fits one binding, every full-resolution activation does not.
fn tiny_vq() -> Config {
    let blocks = 2;
    Config {
        down_block_types: vec!["DownEncoderBlock2D".into(); blocks],
        up_block_types: vec!["UpDecoderBlock2D".into(); blocks],
        block_out_channels: vec![8, 16],
        layers_per_block: 2,
        latent_channels: 4,
        norm_num_groups: 4,
        num_vq_embeddings: 64,
        mid_block_add_attention: false,
        lookup_from_codebook: true,
        ..Config::default()
    }
}

/// A whole VQ decode and encode (resnets with channel changes, upsamplers, downsamplers) with
/// every full-resolution activation over the limit.
#[test]
fn split_vq_decode_and_encode_equal_unsplit() {
    let config = tiny_vq();
    let ckpt = Checkpoint::synthetic(11);
    let (h, w) = (16, 12);
    let ids: Vec<u32> = (0..h * w).map(|i| (i * 37 % 64) as u32).collect();
    for family in [KernelFamily::Tiled, KernelFamily::Cpu] {
        let [whole, split] = contexts().map(|ctx| {
            let vq = Loader::load(ctx, &ckpt, false, |l| VqModel::new(l, &config)).expect("load");
            let tokens = Tensor::from_u32(ctx, "ids", &[1, h, w], &ids).expect("ids");
            let mut rec = ctx.recorder();
            rec.set_kernel_family(family);
            let image = vq.decode(&mut rec, &tokens).expect("decode");
            // Encode the decoded image, squashed into [0, 1].
            let unit = elementwise::scale(&mut rec, &image, 0.25).expect("scale");
            let latents = vq.encode_latents(&mut rec, &unit).expect("encode");
            let dispatches = rec.dispatch_count();
            rec.submit();
            assert_eq!(image.shape(), [1, 3, 2 * h, 2 * w]);
            let bits = |t: &Tensor| -> Vec<u32> {
                t.to_f32(ctx)
                    .expect("download")
                    .iter()
                    .map(|v| v.to_bits())
                    .collect()
            };
            (bits(&image), bits(&latents), dispatches)
        });
        // The split run records each piece as a dispatch of its own.
        assert!(
            split.2 > whole.2,
            "{} vs {} dispatches: nothing split",
            split.2,
            whole.2
        );
        assert_same(&format!("VQ decode {family:?}"), [whole.0, split.0]);
        assert_same(&format!("VQ encode {family:?}"), [whole.1, split.1]);
    }
}
