//! The GPU runtime itself: pool reuse, limits, many dispatches per encoder, caller-owned devices.
//! These tests make their own context so pool statistics are not shared with other tests.

use tessera_engine::ops::elementwise::{UnaryOp, unary};
use tessera_engine::{DType, Error, GpuContext, Tensor};

use crate::common::ctx;

fn fresh() -> GpuContext {
    GpuContext::new().expect("adapter (see common::ctx for the install hint)")
}

#[test]
fn pool_reuses_released_buffers() {
    let c = fresh();
    let a = Tensor::empty(&c, "a", &[1000], DType::F32).expect("alloc");
    let (live, peak) = c.memory_stats();
    assert!(live >= 4000 && peak == live, "{live} {peak}");
    drop(a);
    assert_eq!(c.memory_stats().0, 0);
    // Same size class: served from the pool, so the peak does not grow.
    let _b = Tensor::empty(&c, "b", &[990], DType::F32).expect("alloc");
    assert_eq!(c.memory_stats().1, peak);
    c.trim_pool();
}

/// Sizes past the adapter's limits: a weight over one storage binding is refused at load
/// (before anything is uploaded), an activation over it may exist but a kernel that does not
/// split its work refuses to bind it, and nothing over `max_buffer_size` is allocated.
#[test]
fn tensor_over_binding_limit_is_a_named_error() {
    let limit = ctx().limits().max_storage_buffer_binding_size;
    let elems = (limit / 4 + 1) as usize;
    let ckpt = tessera_engine::io::Checkpoint::synthetic(1);
    let err = tessera_engine::io::Loader::load(ctx(), &ckpt, false, |l| {
        l.tensor("transformer.huge.weight", &[elems])
    })
    .expect_err("too big");
    let msg = err.to_string();
    assert!(matches!(err, Error::OverLimit { .. }), "{msg}");
    assert!(
        msg.contains("transformer.huge.weight") && msg.contains(&limit.to_string()),
        "{msg}"
    );

    let big = Tensor::empty(ctx(), "activation", &[elems], DType::F32).expect("allocate");
    let mut rec = ctx().recorder();
    let err = unary(&mut rec, &big, UnaryOp::Scale(2.0)).expect_err("bind");
    let msg = err.to_string();
    assert!(matches!(err, Error::OverLimit { .. }), "{msg}");
    assert!(
        msg.contains("activation") && msg.contains("max_storage_buffer_binding_size"),
        "{msg}"
    );
    drop(rec);
    drop(big);

    let max = ctx().limits().max_buffer_size;
    let err = Tensor::empty(ctx(), "huge", &[(max / 4 + 1) as usize], DType::F32)
        .expect_err("over max_buffer_size");
    assert!(err.to_string().contains("max_buffer_size"), "{err}");
}

#[test]
fn upload_with_wrong_byte_count_is_an_error() {
    let err = Tensor::upload_bytes(ctx(), "w", &[2, 3], DType::F32, &[0u8; 20]).expect_err("short");
    assert!(err.to_string().contains("24 bytes"), "{err}");
}

#[test]
fn many_dispatches_in_one_encoder() {
    let x = Tensor::from_f32(ctx(), "x", &[3], &[1.0, 2.0, 3.0]).expect("x");
    let mut rec = ctx().recorder();
    let mut t = x;
    for _ in 0..40 {
        t = unary(&mut rec, &t, UnaryOp::AddScalar(0.5)).expect("op");
    }
    assert_eq!(rec.dispatch_count(), 40);
    rec.submit();
    assert_eq!(t.to_f32(ctx()).expect("read"), vec![21.0, 22.0, 23.0]);
}

#[test]
fn engine_runs_on_a_caller_owned_device() {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY);
    let instance = wgpu::Instance::new(desc);
    let adapter =
        pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
            .expect("adapter");
    let (device, queue) =
        pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default()))
            .expect("device");
    let c = GpuContext::from_device(device, queue, adapter.get_info());
    assert!(!c.has_f16(), "default descriptor requests no features");
    let x = Tensor::from_f32(&c, "x", &[2], &[1.0, -1.0]).expect("x");
    let mut rec = c.recorder();
    let y = unary(&mut rec, &x, UnaryOp::Scale(3.0)).expect("op");
    rec.submit();
    assert_eq!(y.to_f32(&c).expect("read"), vec![3.0, -3.0]);
}

#[test]
fn asynchronous_gpu_errors_are_reported_not_panicked() {
    let c = fresh();
    // MAP_READ may only pair with COPY_DST: wgpu reports a validation error asynchronously,
    // which by default would panic.
    let _bad = c.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("invalid usage"),
        size: 16,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let x = Tensor::from_f32(&c, "x", &[2], &[1.0, 2.0]).expect("x");
    let err = x
        .to_f32(&c)
        .expect_err("the pending GPU error surfaces at readback");
    assert!(err.to_string().contains("GPU reported an error"), "{err}");
    assert!(c.take_device_error().is_none(), "taken once");
    assert_eq!(x.to_f32(&c).expect("later readbacks work"), vec![1.0, 2.0]);
}

#[test]
fn buffers_of_dropped_intermediates_stay_out_of_the_pool_until_their_recorder_is_submitted() {
    // Recorder A computes out = 3·(2·x) and drops the intermediate 2·x before submitting.
    // Recorder B, submitted first (as another thread sharing the context might), allocates a
    // tensor of the same size and fills it. If A's intermediate buffer went back to the pool
    // at the drop, B would get it and A would read B's fill.
    let c = fresh();
    let x: Vec<f32> = (0..1000).map(|i| i as f32).collect();
    let tx = Tensor::from_f32(&c, "x", &[1000], &x).expect("upload");
    let mut a = c.recorder();
    let mid = unary(&mut a, &tx, UnaryOp::Scale(2.0)).expect("scale");
    let out = unary(&mut a, &mid, UnaryOp::Scale(3.0)).expect("scale");
    drop(mid);
    let mut b = c.recorder();
    let other = tessera_engine::ops::layout::fill(&mut b, &[1000], DType::F32, 7.0f32.to_bits())
        .expect("fill");
    b.submit();
    a.submit();
    let got = out.to_f32(&c).expect("read");
    let want: Vec<f32> = x.iter().map(|v| 6.0 * v).collect();
    assert_eq!(got, want);
    assert!(other.to_f32(&c).expect("read").iter().all(|&v| v == 7.0));
}

#[test]
fn flush_submits_what_is_recorded_and_releases_its_buffers() {
    let c = fresh();
    let x: Vec<f32> = (0..1000).map(|i| i as f32).collect();
    let tx = Tensor::from_f32(&c, "x", &[1000], &x).expect("upload");
    let mut rec = c.recorder();
    let mid = unary(&mut rec, &tx, UnaryOp::Scale(2.0)).expect("scale");
    let out = unary(&mut rec, &mid, UnaryOp::Scale(3.0)).expect("scale");
    drop(mid);
    let live = c.memory_stats().0;
    rec.flush();
    // The intermediate's buffer is back in the pool once its commands are on the queue.
    assert!(c.memory_stats().0 < live);
    let out2 = unary(&mut rec, &out, UnaryOp::Scale(0.5)).expect("scale");
    rec.submit();
    let want: Vec<f32> = x.iter().map(|v| 3.0 * v).collect();
    assert_eq!(out2.to_f32(&c).expect("read"), want);
}

/// A device lost mid-session (a real `Device::destroy`, as a driver reset does) makes the
/// next readback an error, not a panic or a hang, and the process can open a fresh context and
/// compute again.
#[test]
fn lost_device_is_an_error_and_a_fresh_context_works() {
    let c = fresh();
    let x = Tensor::from_f32(&c, "x", &[4], &[1.0, -2.0, 3.0, -4.0]).expect("upload");
    c.device.destroy();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut rec = c.recorder();
        let y = unary(&mut rec, &x, UnaryOp::Scale(2.0))?;
        rec.submit();
        y.to_f32(&c)
    }));
    match result {
        Ok(Err(e)) => eprintln!("lost device: {e}"),
        Ok(Ok(v)) => panic!("a destroyed device computed {v:?}"),
        Err(_) => panic!("a destroyed device panicked instead of returning an error"),
    }
    drop(x);
    drop(c);
    let again = fresh();
    let x = Tensor::from_f32(&again, "x", &[2], &[1.5, -1.0]).expect("upload");
    let mut rec = again.recorder();
    let y = unary(&mut rec, &x, UnaryOp::Scale(2.0)).expect("op");
    rec.submit();
    assert_eq!(y.to_f32(&again).expect("read"), [3.0, -2.0]);
}

/// The awaitable readback (the browser's) gives what the blocking one gives, after work that
/// is still running when it is asked for; on a destroyed device it is an error, not a hang.
#[test]
fn awaited_readback_equals_the_blocking_one() {
    let c = fresh();
    let data: Vec<f32> = (0..1000).map(|i| i as f32 * 0.5 - 7.0).collect();
    let x = Tensor::from_f32(&c, "x", &[1000], &data).expect("upload");
    let mut rec = c.recorder();
    let y = unary(&mut rec, &x, UnaryOp::Scale(3.0)).expect("op");
    rec.submit();
    let awaited = pollster::block_on(y.download_bytes_async(&c)).expect("awaited readback");
    assert_eq!(awaited, y.download_bytes(&c).expect("blocking readback"));
    let want: Vec<f32> = data.iter().map(|v| v * 3.0).collect();
    assert_eq!(bytemuck::cast_slice::<u8, f32>(&awaited), &want[..]);
    // Odd byte counts are padded for the copy and trimmed again.
    let z = Tensor::from_u32(&c, "z", &[3], &[7, 8, 9]).expect("upload");
    assert_eq!(
        pollster::block_on(z.download_bytes_async(&c))
            .expect("read")
            .len(),
        12
    );
    c.device.destroy();
    assert!(pollster::block_on(y.download_bytes_async(&c)).is_err());
}

/// Readbacks from several threads on one device, blocking and awaited, all complete with the
/// right values. (A thread's mapping callback may run inside another thread's poll after the
/// first thread's wait for its submission returned; a readback that assumed its callback had
/// run failed once that way in CI. This test does not reproduce that timing reliably.)
#[test]
fn concurrent_readbacks_on_one_device_all_complete() {
    let c = std::sync::Arc::new(fresh());
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let c = c.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    let v = (t * 100 + i) as f32;
                    let x = Tensor::from_f32(&c, "x", &[64], &[v; 64]).expect("upload");
                    let mut rec = c.recorder();
                    let y = unary(&mut rec, &x, UnaryOp::Scale(2.0)).expect("op");
                    rec.submit();
                    let got = if i % 2 == 0 {
                        y.to_f32(&c).expect("blocking readback")
                    } else {
                        let b = pollster::block_on(y.download_bytes_async(&c)).expect("awaited");
                        bytemuck::cast_slice::<u8, f32>(&b).to_vec()
                    };
                    assert_eq!(got, vec![2.0 * v; 64]);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
}

/// The subgroup-width probe (what the context picks a tensor-core shape by where an adapter
/// reports a range of widths, as Metal's 4–64) reads a width within what the adapter reports,
/// the same in every invocation where the adapter fixes it (lavapipe: 8 at its default 256
/// bits). Without `SUBGROUP` it is a named error.
#[test]
fn subgroup_width_probe_reads_a_width_the_adapter_reports() {
    let c = fresh();
    let (min, max) = (c.info.subgroup_min_size, c.info.subgroup_max_size);
    match c.measure_subgroup_width() {
        Ok(width) => {
            let width = width.expect("one width for every invocation");
            assert!((min..=max).contains(&width), "{width} outside {min}–{max}");
            assert!(width.is_power_of_two(), "{width}");
        }
        Err(e) => {
            assert!(!c.features().contains(wgpu::Features::SUBGROUP), "{e}");
            assert!(matches!(e, Error::MissingFeature { .. }), "{e}");
        }
    }
}
