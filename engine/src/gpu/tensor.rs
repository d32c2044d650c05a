//! GPU tensors: a pooled buffer plus shape, dtype and a name used in error messages.

use std::fmt;
use std::sync::Arc;

use super::context::GpuContext;
use super::pool::PooledBuffer;
use crate::error::{Error, Result};

/// Element types a tensor buffer can hold. `F16` is stored packed, two values per 32-bit word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    U32,
    I32,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F16 => 2,
            _ => 4,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::U32 => "u32",
            DType::I32 => "i32",
        })
    }
}

/// A dense, row-major tensor in a GPU storage buffer. Cloning shares the buffer.
#[derive(Clone)]
pub struct Tensor {
    buf: Arc<PooledBuffer>,
    shape: Vec<usize>,
    dtype: DType,
    name: Arc<str>,
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Tensor({:?}, {}, {:?})",
            self.name, self.dtype, self.shape
        )
    }
}

pub(crate) fn byte_len(shape: &[usize], dtype: DType) -> u64 {
    (shape.iter().product::<usize>() * dtype.size()) as u64
}

impl Tensor {
    /// Uploads raw bytes (little-endian elements of `dtype`) into a fresh buffer of at most
    /// `max_buffer_size` (model weights are also checked against the binding limit at load).
    pub fn upload_bytes(
        ctx: &GpuContext,
        name: &str,
        shape: &[usize],
        dtype: DType,
        data: &[u8],
    ) -> Result<Self> {
        let want = byte_len(shape, dtype);
        if data.len() as u64 != want {
            return Err(Error::shape(
                "upload",
                format!(
                    "tensor {name:?} of shape {shape:?} {dtype} needs {want} bytes, got {}",
                    data.len()
                ),
            ));
        }
        ctx.check_buffer(name, want)?;
        let buf = ctx.pool.upload(&ctx.device, &ctx.queue, name, data)?;
        Ok(Self {
            buf: Arc::new(buf),
            shape: shape.to_vec(),
            dtype,
            name: name.into(),
        })
    }

    pub fn from_f32(ctx: &GpuContext, name: &str, shape: &[usize], data: &[f32]) -> Result<Self> {
        Self::upload_bytes(ctx, name, shape, DType::F32, bytemuck::cast_slice(data))
    }

    /// Uploads f32 values converted to f16 (stored packed).
    pub fn from_f32_as_f16(
        ctx: &GpuContext,
        name: &str,
        shape: &[usize],
        data: &[f32],
    ) -> Result<Self> {
        let h: Vec<half::f16> = data.iter().map(|&v| half::f16::from_f32(v)).collect();
        Self::upload_bytes(ctx, name, shape, DType::F16, bytemuck::cast_slice(&h))
    }

    pub fn from_u32(ctx: &GpuContext, name: &str, shape: &[usize], data: &[u32]) -> Result<Self> {
        Self::upload_bytes(ctx, name, shape, DType::U32, bytemuck::cast_slice(data))
    }

    pub fn from_i32(ctx: &GpuContext, name: &str, shape: &[usize], data: &[i32]) -> Result<Self> {
        Self::upload_bytes(ctx, name, shape, DType::I32, bytemuck::cast_slice(data))
    }

    /// An uninitialised tensor from the pool (its contents are whatever the buffer last held).
    /// Its size is checked against `max_buffer_size`; binding it whole needs it to fit
    /// `max_storage_buffer_binding_size` too, which each dispatch checks.
    pub fn empty(ctx: &GpuContext, name: &str, shape: &[usize], dtype: DType) -> Result<Self> {
        let bytes = byte_len(shape, dtype);
        ctx.check_buffer(name, bytes)?;
        let buf = ctx.pool.acquire(&ctx.device, name, bytes)?;
        Ok(Self {
            buf: Arc::new(buf),
            shape: shape.to_vec(),
            dtype,
            name: name.into(),
        })
    }

    /// A stand-in carrying only shape and dtype over a tiny buffer: used while a model's weights
    /// are checked before anything is uploaded. Never bind it.
    pub(crate) fn placeholder(
        ctx: &GpuContext,
        name: &str,
        shape: &[usize],
        dtype: DType,
    ) -> Result<Self> {
        Ok(Self {
            buf: Arc::new(ctx.pool.acquire(&ctx.device, name, 16)?),
            shape: shape.to_vec(),
            dtype,
            name: name.into(),
        })
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Size of the tensor's data in bytes (the buffer may be larger).
    pub fn byte_len(&self) -> u64 {
        byte_len(&self.shape, self.dtype)
    }

    pub fn buffer(&self) -> &wgpu::Buffer {
        self.buf.buffer()
    }

    /// A handle that keeps the tensor's pooled buffer out of the pool while it lives.
    pub(crate) fn hold(&self) -> Arc<PooledBuffer> {
        Arc::clone(&self.buf)
    }

    /// Same buffer, new shape with the same element count.
    pub fn reshape(&self, shape: &[usize]) -> Result<Self> {
        if shape.iter().product::<usize>() != self.numel() {
            return Err(Error::shape(
                "reshape",
                format!("cannot view {:?} {:?} as {shape:?}", self.name, self.shape),
            ));
        }
        Ok(Self {
            shape: shape.to_vec(),
            ..self.clone()
        })
    }

    /// Same buffer under another name (for error messages).
    pub fn renamed(&self, name: &str) -> Self {
        Self {
            name: name.into(),
            ..self.clone()
        }
    }

    /// Errors unless the dtype is `want`.
    pub fn expect_dtype(&self, op: &'static str, want: DType) -> Result<()> {
        if self.dtype != want {
            return Err(Error::DType {
                op,
                name: self.name.to_string(),
                got: self.dtype,
                expected: want.to_string(),
            });
        }
        Ok(())
    }

    /// Copies the tensor's bytes back to the CPU (waits for all submitted work).
    ///
    /// Blocks the calling thread; [`Tensor::download_bytes_async`] is the awaitable form (the
    /// one a browser needs, where nothing may block).
    pub fn download_bytes(&self, ctx: &GpuContext) -> Result<Vec<u8>> {
        let pending = self.start_download(ctx)?;
        ctx.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(pending.index.clone()),
                timeout: None,
            })
            .map_err(|e| pending.fail(ctx, e.to_string()))?;
        // The submission is done, but the mapping's callback may be running on another
        // thread that polled the device (tests share one): wait for it.
        let (lock, ready) = &*pending.state;
        let mut st = lock.lock().map_err(|e| pending.fail(ctx, e.to_string()))?;
        let mapped = loop {
            if let Some(r) = st.result.take() {
                break r;
            }
            st = ready
                .wait_timeout(st, std::time::Duration::from_millis(10))
                .map_err(|e| pending.fail(ctx, e.to_string()))?
                .0;
            let _ = ctx.device.poll(wgpu::PollType::Poll);
        };
        drop(st);
        pending.finish(ctx, mapped)
    }

    /// [`Tensor::download_bytes`] as a future: resolves once the GPU has copied the bytes and
    /// the buffer is mapped. On the web the browser's event loop completes the mapping; on
    /// native targets each poll of the future also polls the device, without blocking.
    ///
    /// # Errors
    /// As [`Tensor::download_bytes`]: a lost device, an error the GPU reported, a failed map.
    pub async fn download_bytes_async(&self, ctx: &GpuContext) -> Result<Vec<u8>> {
        let pending = self.start_download(ctx)?;
        let r = Mapped {
            state: pending.state.clone(),
            device: &ctx.device,
        }
        .await;
        pending.finish(ctx, r)
    }

    /// Copies into a mappable buffer, submits, and asks for the mapping.
    fn start_download(&self, ctx: &GpuContext) -> Result<PendingDownload<'_>> {
        ctx.check_device()?;
        let len = self.byte_len();
        let padded = len.max(4).next_multiple_of(4);
        let staging = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("tessera readback"),
            size: padded,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("tessera readback"),
            });
        enc.copy_buffer_to_buffer(self.buffer(), 0, &staging, 0, padded);
        let index = ctx.submit_commands([enc.finish()]);
        let state = Arc::new((
            std::sync::Mutex::new(MapState::default()),
            std::sync::Condvar::new(),
        ));
        let done = state.clone();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            if let Ok(mut st) = done.0.lock() {
                st.result = Some(r);
                if let Some(w) = st.waker.take() {
                    w.wake();
                }
            }
            done.1.notify_all();
        });
        Ok(PendingDownload {
            tensor: self,
            staging,
            len,
            index,
            state,
        })
    }
    /// Downloads as f32 (f16 tensors are widened).
    pub fn to_f32(&self, ctx: &GpuContext) -> Result<Vec<f32>> {
        self.f32_check()?;
        self.f32_from(&self.download_bytes(ctx)?)
    }

    pub fn to_u32(&self, ctx: &GpuContext) -> Result<Vec<u32>> {
        self.u32_check()?;
        Ok(bytemuck::pod_collect_to_vec(&self.download_bytes(ctx)?))
    }

    /// [`Tensor::to_f32`], waiting as `mode` says (awaited: the browser's way).
    ///
    /// # Errors
    /// As [`Tensor::to_f32`].
    pub async fn read_f32(&self, ctx: &GpuContext, mode: Readback) -> Result<Vec<f32>> {
        match mode {
            Readback::Block => self.to_f32(ctx),
            Readback::Await => {
                self.f32_check()?;
                self.f32_from(&self.download_bytes_async(ctx).await?)
            }
        }
    }

    /// [`Tensor::to_u32`], waiting as `mode` says.
    ///
    /// # Errors
    /// As [`Tensor::to_u32`].
    pub async fn read_u32(&self, ctx: &GpuContext, mode: Readback) -> Result<Vec<u32>> {
        match mode {
            Readback::Block => self.to_u32(ctx),
            Readback::Await => {
                self.u32_check()?;
                Ok(bytemuck::pod_collect_to_vec(
                    &self.download_bytes_async(ctx).await?,
                ))
            }
        }
    }

    fn f32_check(&self) -> Result<()> {
        if matches!(self.dtype, DType::F32 | DType::F16) {
            return Ok(());
        }
        Err(Error::DType {
            op: "to_f32",
            name: self.name.to_string(),
            got: self.dtype,
            expected: "f32 or f16".into(),
        })
    }

    fn f32_from(&self, bytes: &[u8]) -> Result<Vec<f32>> {
        Ok(match self.dtype {
            DType::F16 => bytemuck::pod_collect_to_vec::<u8, half::f16>(bytes)
                .into_iter()
                .map(f32::from)
                .collect(),
            _ => bytemuck::pod_collect_to_vec(bytes),
        })
    }

    fn u32_check(&self) -> Result<()> {
        if matches!(self.dtype, DType::U32 | DType::I32) {
            return Ok(());
        }
        Err(Error::DType {
            op: "to_u32",
            name: self.name.to_string(),
            got: self.dtype,
            expected: "u32 or i32".into(),
        })
    }
}

/// How a readback waits for the GPU: by blocking the thread (native code, the fastest there),
/// or by awaiting the buffer's mapping (the browser, whose main thread must not block).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readback {
    Block,
    Await,
}

/// The mapping of a readback buffer, as its callback reports it.
#[derive(Default)]
struct MapState {
    result: Option<std::result::Result<(), wgpu::BufferAsyncError>>,
    waker: Option<std::task::Waker>,
}

/// A readback on its way: the staging buffer, the submission, and the mapping's state.
struct PendingDownload<'a> {
    tensor: &'a Tensor,
    staging: wgpu::Buffer,
    len: u64,
    index: wgpu::SubmissionIndex,
    /// Set by the mapping callback, which also notifies the condition variable.
    state: Arc<(std::sync::Mutex<MapState>, std::sync::Condvar)>,
}

impl PendingDownload<'_> {
    /// A lost device explains any failure better than the failure itself; wgpu reports a
    /// destroyed device's loss from its next maintenance, so poll first.
    fn fail(&self, ctx: &GpuContext, reason: String) -> Error {
        let _ = ctx.device.poll(wgpu::PollType::Poll);
        match ctx.check_device() {
            Err(lost) => lost,
            Ok(()) => Error::Readback {
                name: self.tensor.name.to_string(),
                reason,
            },
        }
    }

    /// The bytes, once the mapping succeeded.
    fn finish(
        self,
        ctx: &GpuContext,
        mapped: std::result::Result<(), wgpu::BufferAsyncError>,
    ) -> Result<Vec<u8>> {
        mapped.map_err(|e| self.fail(ctx, e.to_string()))?;
        if let Some(e) = ctx.take_device_error() {
            return Err(self.fail(ctx, format!("the GPU reported an error: {e}")));
        }
        let out = self
            .staging
            .slice(..)
            .get_mapped_range()
            .map_err(|e| self.fail(ctx, e.to_string()))?[..self.len as usize]
            .to_vec();
        self.staging.unmap();
        Ok(out)
    }
}

/// Resolves when a readback buffer's mapping callback has run.
struct Mapped<'a> {
    state: Arc<(std::sync::Mutex<MapState>, std::sync::Condvar)>,
    device: &'a wgpu::Device,
}

impl std::future::Future for Mapped<'_> {
    type Output = std::result::Result<(), wgpu::BufferAsyncError>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        // Native devices run callbacks from `poll`; on the web this does nothing and the
        // browser runs them.
        let _ = self.device.poll(wgpu::PollType::Poll);
        let Ok(mut st) = self.state.0.lock() else {
            return std::task::Poll::Ready(Err(wgpu::BufferAsyncError));
        };
        match st.result.take() {
            Some(r) => std::task::Poll::Ready(r),
            None => {
                st.waker = Some(cx.waker().clone());
                // Native: nothing else would wake us, so ask to be polled again.
                if !cfg!(target_arch = "wasm32") {
                    cx.waker().wake_by_ref();
                }
                std::task::Poll::Pending
            }
        }
    }
}
