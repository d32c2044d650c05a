//! Records many dispatches into one command encoder (and one compute pass), then submits once.
use std::sync::Arc;

use super::context::{GpuContext, KernelFamily};
use super::pool::PooledBuffer;
use super::profile::ProfileClock;
use super::tensor::Tensor;
use crate::error::{Error, Result};
use crate::shaders::KernelSpec;

/// A storage binding of a dispatch.
#[derive(Clone, Copy)]
pub enum Binding<'a> {
    Tensor(&'a Tensor),
    /// A tiny placeholder buffer for an optional input that is switched off (e.g. no bias).
    Unused,
}

/// Collects dispatches for one submission. Ops take `&mut Recorder` and return their outputs;
/// nothing runs until [`Recorder::submit`].
pub struct Recorder<'a> {
    ctx: &'a GpuContext,
    encoder: wgpu::CommandEncoder,
    pass: Option<wgpu::ComputePass<'static>>,
    dispatches: usize,
    placeholder: Option<wgpu::Buffer>,
    profile: Option<RecorderProfile>,
    family: KernelFamily,
    /// Every buffer a recorded command uses, kept out of the pool until the commands are
    /// submitted: an op's intermediate tensors drop before submission, and another thread
    /// sharing the context must not get their buffers and submit writes to them first.
    held: Vec<Arc<PooledBuffer>>,
    /// The dispatches' uniform parameters, packed into a few buffers.
    uniforms: UniformArena,
    /// This recorder's host time ([`WorkCounts::record_ns`](crate::gpu::WorkCounts::record_ns)).
    clock: HostClock,
    /// Whether its dispatches, submissions and host time count in
    /// [`GpuContext::work_counts`] (all but kernel tuning's).
    counted: bool,
}

/// A recorder's host time: from its creation, less the queue's submit calls (lavapipe runs
/// the commands inside them).
struct HostClock {
    started: web_time::Instant,
    in_submit: std::time::Duration,
}

impl HostClock {
    fn new() -> Self {
        Self {
            started: web_time::Instant::now(),
            in_submit: std::time::Duration::ZERO,
        }
    }

    /// Submits `commands` through `ctx` (counted or not), the call's time left out of
    /// [`HostClock::host`].
    fn submit(
        &mut self,
        ctx: &GpuContext,
        commands: wgpu::CommandBuffer,
        counted: bool,
    ) -> wgpu::SubmissionIndex {
        let t = web_time::Instant::now();
        let index = if counted {
            ctx.submit_commands([commands])
        } else {
            ctx.submit_uncounted([commands])
        };
        self.in_submit += t.elapsed();
        index
    }

    /// The host time so far, less the submit calls.
    fn host(&self) -> std::time::Duration {
        self.started.elapsed().saturating_sub(self.in_submit)
    }
}

/// The `Params` of many dispatches in one uniform buffer (a new one every [`ARENA_BYTES`]), at
/// offsets aligned to the adapter's `min_uniform_buffer_offset_alignment`, written with one
/// `write_buffer` per buffer before the commands that read them are submitted — instead of a
/// buffer and a write per dispatch (host time that showed on the H200's text stage and costs
/// a JavaScript call each in the browser).
#[derive(Default)]
struct UniformArena {
    chunks: Vec<ArenaChunk>,
}

struct ArenaChunk {
    buffer: wgpu::Buffer,
    data: Vec<u8>,
    /// Bytes of `data` already written to `buffer`.
    written: usize,
}

/// Size of one arena buffer: 256 dispatches at the usual 256-byte alignment.
const ARENA_BYTES: u64 = 64 * 1024;

impl UniformArena {
    /// Places `params` and returns the chunk, offset and size to bind it at.
    fn push(
        &mut self,
        device: &wgpu::Device,
        align: u64,
        params: &[u8],
    ) -> (usize, u64, Option<wgpu::BufferSize>) {
        let size = (params.len() as u64).next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT);
        let fits = self.chunks.last().map(|c| {
            let at = (c.data.len() as u64).next_multiple_of(align);
            (at + size <= ARENA_BYTES).then_some(at)
        });
        let at = match fits.flatten() {
            Some(at) => at,
            None => {
                self.chunks.push(ArenaChunk {
                    buffer: device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some("tessera params"),
                        size: ARENA_BYTES.max(size),
                        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                        mapped_at_creation: false,
                    }),
                    data: Vec::new(),
                    written: 0,
                });
                0
            }
        };
        let chunk = self.chunks.len() - 1;
        let data = &mut self.chunks[chunk].data;
        data.resize(at as usize, 0);
        data.extend_from_slice(params);
        data.resize((at + size) as usize, 0);
        (chunk, at, wgpu::BufferSize::new(size))
    }

    /// Writes what is not written yet (before a submission); chunks that are full and written
    /// are dropped (wgpu keeps them alive until the commands using them are done).
    fn write(&mut self, queue: &wgpu::Queue) {
        for c in &mut self.chunks {
            if c.written < c.data.len() {
                queue.write_buffer(&c.buffer, c.written as u64, &c.data[c.written..]);
                c.written = c.data.len();
            }
        }
        let last = self.chunks.pop();
        self.chunks.clear();
        self.chunks.extend(last);
    }
}

/// Dispatches (pairs of timestamps) per query set.
const PROFILE_SET: usize = 512;

/// A recorder's share of a profile: query sets and the kernel of each timed dispatch.
struct RecorderProfile {
    clock: ProfileClock,
    sets: Vec<wgpu::QuerySet>,
    labels: Vec<String>,
}

impl GpuContext {
    pub fn recorder(&self) -> Recorder<'_> {
        Recorder {
            ctx: self,
            encoder: self
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("tessera ops"),
                }),
            pass: None,
            dispatches: 0,
            placeholder: None,
            family: self.kernel_family(),
            held: Vec::new(),
            uniforms: UniformArena::default(),
            clock: HostClock::new(),
            profile: self.profile_clock().map(|clock| RecorderProfile {
                clock,
                sets: Vec::new(),
                labels: Vec::new(),
            }),
            counted: true,
        }
    }

    /// A recorder for kernel tuning's timing runs: never profiled, and its work is left out
    /// of [`GpuContext::work_counts`].
    pub(crate) fn tuning_recorder(&self) -> Recorder<'_> {
        Recorder {
            profile: None,
            counted: false,
            ..self.recorder()
        }
    }
}

impl<'a> Recorder<'a> {
    pub fn ctx(&self) -> &'a GpuContext {
        self.ctx
    }

    /// The kernel variants ops recorded here pick (the context's, unless set).
    pub fn kernel_family(&self) -> KernelFamily {
        self.family
    }

    /// Makes the ops recorded from now on pick `family`'s kernels (tests compare both).
    pub fn set_kernel_family(&mut self, family: KernelFamily) {
        self.family = family;
    }

    /// Number of dispatches recorded so far.
    pub fn dispatch_count(&self) -> usize {
        self.dispatches
    }

    /// Records one dispatch of `spec`. `params` (the module's `#[repr(C)]` Pod `Params` as bytes)
    /// is bound at binding 0 as a uniform; each `(index, binding)` as storage. The list must name
    /// exactly the bindings the entry point uses.
    pub fn dispatch(
        &mut self,
        spec: &KernelSpec,
        params: &[u8],
        bindings: &[(u32, Binding<'_>)],
        workgroups: [u32; 3],
    ) -> Result<()> {
        let max = self.ctx.limits().max_compute_workgroups_per_dimension;
        if workgroups.iter().any(|&w| w > max) {
            return Err(Error::OverLimit {
                name: format!("dispatch of {spec} with {workgroups:?} workgroups"),
                bytes: u64::from(*workgroups.iter().max().unwrap_or(&0)),
                limit_name: "max_compute_workgroups_per_dimension",
                limit: u64::from(max),
            });
        }
        if workgroups.contains(&0) {
            return Ok(());
        }
        self.ctx.check_device()?;
        let device = &self.ctx.device;
        let pipeline = self.ctx.pipelines.get(device, spec);
        // Written by `write_buffer` at submission (not mapped at creation: mapping panics on a
        // lost device, `write_buffer` reports through the error handler), which lands before
        // this recorder's commands run.
        let align = u64::from(self.ctx.limits().min_uniform_buffer_offset_alignment);
        let (chunk, offset, size) = self.uniforms.push(device, align, params);
        if self.placeholder.is_none() && bindings.iter().any(|(_, b)| matches!(b, Binding::Unused))
        {
            self.placeholder = Some(device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("tessera unused binding"),
                size: 16,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            }));
        }
        let max_binding = self.ctx.limits().max_storage_buffer_binding_size;
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &self.uniforms.chunks[chunk].buffer,
                offset,
                size,
            }),
        }];
        for (index, b) in bindings {
            let buffer = match b {
                Binding::Tensor(t) => {
                    if t.byte_len() > max_binding {
                        return Err(Error::OverLimit {
                            name: format!("{:?} {:?} bound by {spec}", t.name(), t.shape()),
                            bytes: t.byte_len(),
                            limit_name: "max_storage_buffer_binding_size",
                            limit: max_binding,
                        });
                    }
                    self.held.push(t.hold());
                    t.buffer()
                }
                Binding::Unused => self.placeholder.as_ref().unwrap_or_else(|| unreachable!()),
            };
            // Pooled buffers are rounded up to a size class, which may pass the binding limit
            // even though the tensor inside does not (checked above): bind at most the limit.
            let size = buffer.size().min(max_binding);
            entries.push(wgpu::BindGroupEntry {
                binding: *index,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer,
                    offset: 0,
                    size: wgpu::BufferSize::new(size),
                }),
            });
        }
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        self.dispatches += 1;
        if self.counted {
            self.ctx.count_dispatch();
        }
        let Some(profile) = self.profile.as_mut() else {
            let pass = self.pass.get_or_insert_with(|| {
                self.encoder
                    .begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some("tessera ops"),
                        timestamp_writes: None,
                    })
                    .forget_lifetime()
            });
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(workgroups[0], workgroups[1], workgroups[2]);
            return Ok(());
        };
        // Profiling: one pass per dispatch, timed by GPU timestamps or by a submit-and-wait.
        self.pass = None;
        let label = format!("{}::{}", spec.module.name(), spec.entry);
        let i = profile.labels.len();
        let timestamps = match profile.clock {
            ProfileClock::GpuTimestamps => {
                if i % PROFILE_SET == 0 {
                    profile
                        .sets
                        .push(device.create_query_set(&wgpu::QuerySetDescriptor {
                            label: Some("tessera profile"),
                            ty: wgpu::QueryType::Timestamp,
                            count: (2 * PROFILE_SET) as u32,
                        }));
                }
                let slot = (2 * (i % PROFILE_SET)) as u32;
                Some(wgpu::ComputePassTimestampWrites {
                    query_set: &profile.sets[i / PROFILE_SET],
                    beginning_of_pass_write_index: Some(slot),
                    end_of_pass_write_index: Some(slot + 1),
                })
            }
            ProfileClock::WallClock => None,
        };
        {
            let mut pass = self
                .encoder
                .begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("tessera profiled op"),
                    timestamp_writes: timestamps,
                });
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(workgroups[0], workgroups[1], workgroups[2]);
        }
        if profile.clock == ProfileClock::WallClock {
            // Everything recorded so far, this dispatch last, in one submission.
            let t = web_time::Instant::now();
            self.submit_recorded();
            self.ctx.wait_idle();
            self.ctx
                .add_profile_time(&label, t.elapsed().as_secs_f64() * 1e3);
        } else {
            profile.labels.push(label);
        }
        Ok(())
    }

    /// Records a copy of `len` elements from element `src_at` of `src` to element `dst_at` of
    /// `dst` (same dtype; byte offsets and length must be multiples of 4, as buffer copies
    /// require). Neither tensor needs to fit one storage binding.
    pub fn copy_elements(
        &mut self,
        (src, src_at): (&Tensor, usize),
        (dst, dst_at): (&Tensor, usize),
        len: usize,
    ) -> Result<()> {
        let size = src.dtype().size();
        let in_range = |t: &Tensor, at: usize| at.checked_add(len).is_some_and(|e| e <= t.numel());
        let aligned = |elems: usize| (elems * size).is_multiple_of(4);
        let valid = src.dtype() == dst.dtype()
            && in_range(src, src_at)
            && in_range(dst, dst_at)
            && aligned(src_at)
            && aligned(dst_at)
            && aligned(len);
        if !valid {
            return Err(Error::shape(
                "copy",
                format!(
                    "{len} elements from {src_at} of {src:?} to {dst_at} of {dst:?}: out of \
                     range, dtypes differ or not 4-byte aligned"
                ),
            ));
        }
        if len == 0 {
            return Ok(());
        }
        self.pass = None;
        self.held.push(src.hold());
        self.held.push(dst.hold());
        self.encoder.copy_buffer_to_buffer(
            src.buffer(),
            (src_at * size) as u64,
            dst.buffer(),
            (dst_at * size) as u64,
            (len * size) as u64,
        );
        Ok(())
    }

    /// Records a copy of packed RGBA8 rows (`[H, row pitch]` u32, from
    /// [`ops::layout::to_rgba8`](crate::ops::layout::to_rgba8)) into an `Rgba8Unorm` texture of
    /// the same width and height.
    pub fn copy_to_texture(&mut self, rgba: &Tensor, texture: &wgpu::Texture) -> Result<()> {
        let [h, pitch] = *rgba.shape() else {
            return Err(Error::shape(
                "copy_to_texture",
                format!("{:?} is not [H, pitch]", rgba.shape()),
            ));
        };
        let size = texture.size();
        if size.height as usize != h || (size.width as usize) > pitch || (pitch * 4) % 256 != 0 {
            return Err(Error::shape(
                "copy_to_texture",
                format!(
                    "rows {:?} do not fit a {}×{} texture",
                    rgba.shape(),
                    size.width,
                    size.height
                ),
            ));
        }
        self.pass = None;
        self.held.push(rgba.hold());
        self.encoder.copy_buffer_to_texture(
            wgpu::TexelCopyBufferInfo {
                buffer: rgba.buffer(),
                layout: wgpu::TexelCopyBufferLayout {
                    offset: 0,
                    bytes_per_row: Some((pitch * 4) as u32),
                    rows_per_image: Some(h as u32),
                },
            },
            texture.as_image_copy(),
            wgpu::Extent3d {
                width: size.width,
                height: size.height,
                depth_or_array_layers: 1,
            },
        );
        Ok(())
    }

    /// Submits what has been recorded so far and goes on recording into a fresh encoder. The
    /// buffers those commands held go back to the pool, so a long chain of large activations
    /// (a VQ decoder) reuses memory between flushes. A profiling recorder resolves its
    /// timestamps once, at [`Recorder::submit`], so there this does nothing.
    pub fn flush(&mut self) {
        if self.profile.is_none() {
            self.submit_recorded();
        }
    }

    /// Submits the commands recorded so far, continues in a fresh encoder and releases the
    /// buffers those commands held (they are on the queue now).
    fn submit_recorded(&mut self) {
        self.pass = None;
        self.uniforms.write(&self.ctx.queue);
        let encoder = std::mem::replace(
            &mut self.encoder,
            self.ctx
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("tessera ops"),
                }),
        );
        self.clock.submit(self.ctx, encoder.finish(), self.counted);
        self.held.clear();
    }

    /// Submits everything recorded.
    pub fn submit(mut self) -> wgpu::SubmissionIndex {
        self.pass = None;
        self.uniforms.write(&self.ctx.queue);
        match self.profile.take() {
            Some(p) if !p.labels.is_empty() => {
                self.ctx.count_record(self.clock.host());
                self.submit_timed(p)
            }
            _ if !self.counted => self.ctx.submit_uncounted([self.encoder.finish()]),
            _ => {
                let commands = self.encoder.finish();
                self.ctx.count_record(self.clock.host());
                self.ctx.submit_commands([commands])
            }
        }
    }

    /// Submits with the timestamp queries resolved and read back (waits for the GPU), adding
    /// each dispatch's time to the context's profile.
    fn submit_timed(mut self, p: RecorderProfile) -> wgpu::SubmissionIndex {
        let device = &self.ctx.device;
        let bytes = (p.sets.len() * PROFILE_SET * 2 * 8) as u64;
        let resolve = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("tessera profile resolve"),
            size: bytes,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let readback = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("tessera profile readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        for (j, set) in p.sets.iter().enumerate() {
            let used = (p.labels.len() - j * PROFILE_SET).min(PROFILE_SET);
            let offset = (j * PROFILE_SET * 2 * 8) as u64;
            self.encoder
                .resolve_query_set(set, 0..(2 * used) as u32, &resolve, offset);
        }
        self.encoder
            .copy_buffer_to_buffer(&resolve, 0, &readback, 0, bytes);
        let index = self.ctx.submit_commands([self.encoder.finish()]);
        let slice = readback.slice(..);
        slice.map_async(wgpu::MapMode::Read, |_| {});
        self.ctx.wait_idle();
        let period_ms = f64::from(self.ctx.queue.get_timestamp_period()) * 1e-6;
        match slice.get_mapped_range() {
            Ok(view) => {
                let ticks: &[u64] = bytemuck::cast_slice(&view);
                for (i, label) in p.labels.iter().enumerate() {
                    let d = ticks[2 * i + 1].saturating_sub(ticks[2 * i]);
                    self.ctx.add_profile_time(label, d as f64 * period_ms);
                }
            }
            Err(e) => log::warn!("profile timestamps unreadable: {e}"),
        }
        index
    }
}

/// Splits `n` workgroups over x and y so neither exceeds `max` (shaders linearise
/// `wid.x + wid.y * num_workgroups.x` and skip the overhang).
pub fn linear_workgroups(n: u32, max: u32) -> [u32; 3] {
    if n <= max {
        [n, 1, 1]
    } else {
        [max, n.div_ceil(max), 1]
    }
}
