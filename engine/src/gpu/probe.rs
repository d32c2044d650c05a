//! What an adapter that reports a range of subgroup widths (wgpu's Metal backend: 4–64; AMD
//! through Vulkan: 32–64) really runs its compute kernels with, and a trial of the tensor-core
//! kernels at that width: their mapping of fragments to subgroups is only right where the
//! width is exactly the one they are compiled for ([`CoopShape`](crate::shaders::CoopShape)).

use super::{DType, GpuContext, Tensor};
use crate::error::Result;
use crate::ops::matmul::{self, BLayout, Epilogue, MatmulStrategy};
use crate::ops::{attention, conv};
use crate::shaders::WeightFormat;

/// One workgroup of 128 invocations (the size of the attention kernel's and the smallest of
/// the 64×64-tile kernels'), each writing the `subgroup_size` builtin.
const PROBE: &str = "@group(0) @binding(0) var<storage, read_write> widths: array<u32>;
@compute @workgroup_size(128, 1, 1)
fn probe(@builtin(local_invocation_index) li: u32, @builtin(subgroup_size) width: u32) {
    widths[li] = width;
}
";

/// The subgroup width a 128-invocation compute workgroup runs with on `ctx`'s device, measured
/// by one dispatch that waits for the GPU (native targets only): `Some(width)` if every
/// invocation reports the same, `None` if they differ. Needs `Features::SUBGROUP`.
///
/// # Errors
/// A lost device or a failed readback.
pub(crate) fn subgroup_width(ctx: &GpuContext) -> Result<Option<u32>> {
    let out = Tensor::empty(ctx, "subgroup widths", &[128], DType::U32)?;
    let device = &ctx.device;
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("subgroup width probe"),
        source: wgpu::ShaderSource::Wgsl(PROBE.into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("subgroup width probe"),
        layout: None,
        module: &module,
        entry_point: Some("probe"),
        compilation_options: wgpu::PipelineCompilationOptions::default(),
        cache: None,
    });
    let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("subgroup width probe"),
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[wgpu::BindGroupEntry {
            binding: 0,
            resource: out.buffer().as_entire_binding(),
        }],
    });
    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
    {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(1, 1, 1);
    }
    ctx.queue.submit([encoder.finish()]);
    let widths = out.to_u32(ctx)?;
    let first = widths[0];
    Ok(widths.iter().all(|&w| w == first).then_some(first))
}

/// Whether every tensor-core kernel computes a small problem off its tiles right with the
/// shape `ctx` holds: the matmuls (`Coop64`, whose workgroups are the shape's 64×64-tile ones;
/// `Coop16`, one subgroup each; `Coop128`, eight) and the convolutions (`conv2d_coop.wgsl`, the
/// 64×64-tile mapping again, K in both orders) bit for bit against the CPU on small integers,
/// whose f16 roundings, products and f32 sums are exact; attention (128 invocations, 128 /
/// width subgroups) within 1e-2 of the plain flash kernel on the same device (f16 roundings of
/// Q, K, V and P). A mapping that
/// does not fit the subgroups the kernels really run with almost surely fails one. Waits for
/// the GPU.
///
/// # Errors
/// A lost device, a refused kernel or a failed readback.
pub(crate) fn coop_trial(ctx: &GpuContext) -> Result<bool> {
    Ok(matmul_trial(ctx)? && conv_trial(ctx)? && attention_trial(ctx)?)
}

/// Small integers in -r..=r, varied along the index.
fn ints(n: usize, step: usize, r: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * step) % (2 * r + 1)) as f32 - r as f32)
        .collect()
}

/// [136, 40] · [144, 40]ᵀ on `Coop64`, `Coop16` and, where the adapter's limits take it,
/// `Coop128` (a whole 128×128 tile and parts of three more with 16×16 fragments), exact.
fn matmul_trial(ctx: &GpuContext) -> Result<bool> {
    let (m, k, n) = (136, 40, 144);
    let (a, b) = (ints(m * k, 7, 4), ints(n * k, 5, 3));
    let want: Vec<f32> = (0..m * n)
        .map(|e| {
            let (i, j) = (e / n, e % n);
            (0..k).map(|l| a[i * k + l] * b[j * k + l]).sum()
        })
        .collect();
    let a = Tensor::from_f32(ctx, "trial A", &[m, k], &a)?;
    let b = Tensor::from_f32(ctx, "trial B", &[n, k], &b)?;
    let strategies = [
        MatmulStrategy::Coop64,
        MatmulStrategy::Coop16,
        MatmulStrategy::Coop128,
    ];
    for strategy in strategies.into_iter().filter(|s| s.available(ctx)) {
        let mut rec = ctx.recorder();
        let c = matmul::matmul_with_strategy(
            &mut rec,
            &a,
            &b,
            &Epilogue::bias(None),
            BLayout::NK,
            WeightFormat::F32,
            Some(strategy),
        )?;
        rec.submit();
        if c.to_f32(ctx)? != want {
            log::debug!("cooperative matrices: the {strategy:?} trial product is wrong");
            return Ok(false);
        }
    }
    Ok(true)
}

/// 3×3 convolutions to 72 channels on a 9×9 image (81 pixels), zero padding 1, exact: from 4
/// channels (`ConvStrategy::Coop`) and from 32 (`ConvStrategy::CoopTaps`).
fn conv_trial(ctx: &GpuContext) -> Result<bool> {
    Ok(conv_trial_from(ctx, 4)? && conv_trial_from(ctx, conv::COOP_SLICE)?)
}

fn conv_trial_from(ctx: &GpuContext, cin: usize) -> Result<bool> {
    let (cout, hw) = (72, 9);
    let (x, w) = (ints(cin * hw * hw, 5, 3), ints(cout * cin * 9, 7, 2));
    let mut want = vec![0.0f32; cout * hw * hw];
    for (co, plane) in want.chunks_mut(hw * hw).enumerate() {
        for (q, out) in plane.iter_mut().enumerate() {
            let (y, xx) = (q / hw, q % hw);
            for ci in 0..cin {
                for t in 0..9 {
                    let (iy, ix) = ((y + t / 3).checked_sub(1), (xx + t % 3).checked_sub(1));
                    if let (Some(iy), Some(ix)) = (iy, ix)
                        && iy < hw
                        && ix < hw
                    {
                        *out += w[(co * cin + ci) * 9 + t] * x[(ci * hw + iy) * hw + ix];
                    }
                }
            }
        }
    }
    let x = Tensor::from_f32(ctx, "trial image", &[1, cin, hw, hw], &x)?;
    let w = Tensor::from_f32(ctx, "trial kernel", &[cout, cin, 3, 3], &w)?;
    let mut rec = ctx.recorder();
    let y = conv::conv2d_with_strategy(
        &mut rec,
        &x,
        &w,
        None,
        &conv::Conv2dSpec::same(1),
        Some(if cin.is_multiple_of(conv::COOP_SLICE) {
            conv::ConvStrategy::CoopTaps
        } else {
            conv::ConvStrategy::Coop
        }),
    )?;
    rec.submit();
    let ok = y.to_f32(ctx)? == want;
    if !ok {
        log::debug!("cooperative matrices: the convolution trial from {cin} channels is wrong");
    }
    Ok(ok)
}

/// Self-attention of 40 queries and keys, 2 heads of 32, on the tensor-core kernel and the
/// plain flash kernel: the largest difference at most 1e-2 (values of order 1).
fn attention_trial(ctx: &GpuContext) -> Result<bool> {
    let (l, heads, d) = (40, 2, 32);
    let data = |step: usize| -> Vec<f32> {
        ints(l * heads * d, step, 4)
            .iter()
            .map(|v| v / 4.0)
            .collect()
    };
    let q = Tensor::from_f32(ctx, "trial Q", &[1, l, heads * d], &data(7))?;
    let k = Tensor::from_f32(ctx, "trial K", &[1, l, heads * d], &data(5))?;
    let v = Tensor::from_f32(ctx, "trial V", &[1, l, heads * d], &data(3))?;
    let spec = attention::AttentionSpec::new(heads, d);
    let mut outs = Vec::new();
    for kernel in [
        attention::AttentionKernel::Coop,
        attention::AttentionKernel::Flash,
    ] {
        let mut rec = ctx.recorder();
        let o = attention::attention_with_kernel(&mut rec, &q, &k, &v, &spec, Some(kernel))?;
        rec.submit();
        outs.push(o.to_f32(ctx)?);
    }
    // NaN fails too.
    let ok = outs[0]
        .iter()
        .zip(&outs[1])
        .all(|(a, b)| (a - b).abs() <= 1e-2);
    if !ok {
        log::debug!("cooperative matrices: the attention trial is off by more than 1e-2");
    }
    Ok(ok)
}
