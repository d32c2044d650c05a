//! Kernel lab: times a matmul WGSL file (same bindings as shaders/matmul.wgsl with f32 weights)
//! and checks it against a CPU reference. For kernel development only.
//!
//!   cargo run --release -p tessera-engine --example matmul_lab -- FILE.wgsl M N K TM TN [reps]
//!
//! LAB_F16=1 uploads B as f16 (for kernels whose prelude reads f16); TM and TN are the rows and
//! columns of C one workgroup covers.
use std::time::Instant;

use tessera_engine::gpu::GpuContext;
use wgpu::util::DeviceExt;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let src = std::fs::read_to_string(&a[1]).expect("read wgsl");
    let p = |i: usize| a[i].parse::<u32>().expect("number");
    let (m, n, k, tm, tn) = (p(2), p(3), p(4), p(5), p(6));
    let reps = a.get(7).map(|s| s.parse::<u32>().unwrap_or(3)).unwrap_or(3);
    let half_b = std::env::var("LAB_F16").is_ok();
    let ctx = GpuContext::new().expect("gpu");
    let dev = &ctx.device;
    let av: Vec<f32> = (0..m * k)
        .map(|i| ((i * 7 % 13) as f32 - 6.0) / 7.0)
        .collect();
    let bv: Vec<f32> = (0..n * k)
        .map(|i| ((i * 5 % 11) as f32 - 5.0) / 9.0)
        .collect();
    let bias: Vec<f32> = (0..n).map(|i| i as f32 * 0.01).collect();
    let params: [u32; 8] = [m, n, k, 1, 0, 0, 0, 1];
    let buf = |d: &[u8], u: wgpu::BufferUsages| {
        dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: d,
            usage: u,
        })
    };
    let st = wgpu::BufferUsages::STORAGE;
    let pb = buf(bytemuck::cast_slice(&params), wgpu::BufferUsages::UNIFORM);
    let ab = buf(bytemuck::cast_slice(&av), st);
    let bh: Vec<half::f16> = bv.iter().map(|&x| half::f16::from_f32(x)).collect();
    let bv: Vec<f32> = if half_b {
        bh.iter().map(|x| x.to_f32()).collect()
    } else {
        bv
    };
    let bb = if half_b {
        buf(bytemuck::cast_slice(&bh), st)
    } else {
        buf(bytemuck::cast_slice(&bv), st)
    };
    let biasb = buf(bytemuck::cast_slice(&bias), st);
    let cb = dev.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: u64::from(m * n * 4),
        usage: st | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let rb = dev.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: u64::from(m * n * 4),
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let desc = wgpu::ShaderModuleDescriptor {
        label: None,
        source: wgpu::ShaderSource::Wgsl(src.into()),
    };
    let module = dev.create_shader_module(desc);
    let pipe = dev.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: None,
        layout: None,
        module: &module,
        entry_point: Some("matmul"),
        compilation_options: Default::default(),
        cache: None,
    });
    let bg = dev.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipe.get_bind_group_layout(0),
        entries: &[
            wgpu::BindGroupEntry {
                binding: 0,
                resource: pb.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 1,
                resource: ab.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 2,
                resource: bb.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 3,
                resource: biasb.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 4,
                resource: cb.as_entire_binding(),
            },
        ],
    });
    let run = |copy: bool| {
        let mut enc = dev.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            pass.set_pipeline(&pipe);
            pass.set_bind_group(0, &bg, &[]);
            pass.dispatch_workgroups(n.div_ceil(tn), m.div_ceil(tm), 1);
        }
        if copy {
            enc.copy_buffer_to_buffer(&cb, 0, &rb, 0, u64::from(m * n * 4));
        }
        ctx.queue.submit([enc.finish()]);
        dev.poll(wgpu::PollType::wait_indefinitely()).expect("poll");
    };
    run(true);
    let mut best = f64::MAX;
    for _ in 0..reps {
        let t = Instant::now();
        run(false);
        best = best.min(t.elapsed().as_secs_f64());
    }
    let slice = rb.slice(..);
    slice.map_async(wgpu::MapMode::Read, |_| {});
    dev.poll(wgpu::PollType::wait_indefinitely()).expect("poll");
    let got: Vec<f32> = bytemuck::cast_slice(&slice.get_mapped_range().expect("map")).to_vec();
    let mut worst = 0f64;
    for i in (0..m).step_by(((m / 37).max(1)) as usize) {
        for j in 0..n {
            let mut s = f64::from(bias[j as usize]);
            for kk in 0..k {
                s += f64::from(av[(i * k + kk) as usize]) * f64::from(bv[(j * k + kk) as usize]);
            }
            worst = worst.max((s - f64::from(got[(i * n + j) as usize])).abs());
        }
    }
    let flops = 2.0 * f64::from(m) * f64::from(n) * f64::from(k);
    println!(
        "{} {m}x{n}x{k}: {:.2} ms  {:.2} GFLOPS  max err {:.2e}",
        a[1],
        best * 1e3,
        flops / best / 1e9,
        worst
    );
}
