//! A pool of storage buffers that reuses allocations.
//!
//! Requests are rounded up to a size class (eight classes per power of two, so at most 12.5 %
//! is wasted) and served from buffers that earlier tensors released. Release happens when the
//! last [`PooledBuffer`] handle drops. A [`Recorder`](super::Recorder) holds a handle to every
//! buffer its commands use until it is submitted, so a buffer only returns to the pool once the
//! work using it is on the queue, and any later user (any thread) is queued after it. The engine
//! never writes a reused buffer from the CPU (uploads always make a fresh buffer, see
//! `Tensor::upload_bytes`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

#[cfg(not(target_arch = "wasm32"))]
use crate::error::Error;
use crate::error::Result;

/// Every pooled buffer has these usages, so any tensor can be read, written, copied and bound.
pub const USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

#[derive(Default)]
struct PoolState {
    free: HashMap<u64, Vec<wgpu::Buffer>>,
    live_bytes: u64,
    peak_bytes: u64,
}

#[derive(Default)]
pub struct BufferPool {
    state: Mutex<PoolState>,
}

/// Rounds `bytes` up to its size class (multiple of 4, at least 16).
pub fn size_class(bytes: u64) -> u64 {
    let b = bytes.max(16);
    let p = 63 - b.leading_zeros(); // floor(log2 b) ≥ 4
    let step = (1u64 << (p - 3)).max(4);
    b.next_multiple_of(step)
}

impl BufferPool {
    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A buffer of at least `bytes`, reused when one of that size class is free. When the device
    /// is out of memory, idle buffers are freed and the allocation tried once more before
    /// [`Error::OutOfMemory`].
    pub fn acquire(
        self: &Arc<Self>,
        device: &wgpu::Device,
        name: &str,
        bytes: u64,
    ) -> Result<PooledBuffer> {
        let size = size_class(bytes);
        let reused = self.lock().free.get_mut(&size).and_then(Vec::pop);
        let buffer = match reused {
            Some(b) => b,
            None => self.create(device, name, size)?,
        };
        Ok(self.lend(buffer, size))
    }

    /// Counts `buffer` (`size` bytes) as live and hands it out.
    fn lend(self: &Arc<Self>, buffer: wgpu::Buffer, size: u64) -> PooledBuffer {
        let mut st = self.lock();
        st.live_bytes += size;
        st.peak_bytes = st.peak_bytes.max(st.live_bytes);
        PooledBuffer {
            buffer: Some(buffer),
            size,
            pool: Arc::clone(self),
        }
    }

    /// A new buffer of `size` bytes. On the web the browser reports an out-of-memory error
    /// later, through the device's error handler (an error scope there resolves only on the
    /// event loop, which must not be blocked on).
    #[cfg(target_arch = "wasm32")]
    fn create(&self, device: &wgpu::Device, name: &str, size: u64) -> Result<wgpu::Buffer> {
        Ok(device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(name),
            size,
            usage: USAGE,
            mapped_at_creation: false,
        }))
    }

    /// A new buffer of `size` bytes, catching the device's out-of-memory error.
    #[cfg(not(target_arch = "wasm32"))]
    fn create(&self, device: &wgpu::Device, name: &str, size: u64) -> Result<wgpu::Buffer> {
        let attempt = || {
            let scope = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
            let buffer = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(name),
                size,
                usage: USAGE,
                mapped_at_creation: false,
            });
            // Native backends resolve the scope at once; nothing is awaited on the GPU.
            match pollster::block_on(scope.pop()) {
                None => Ok(buffer),
                Some(e) => Err(e.to_string()),
            }
        };
        attempt()
            .or_else(|first| {
                log::warn!("out of GPU memory for {name:?} ({size} B): freeing idle buffers");
                self.trim();
                attempt().map_err(|_| first)
            })
            .map_err(|reason| Error::OutOfMemory {
                name: name.to_owned(),
                bytes: size,
                live: self.stats().0,
                reason,
            })
    }

    /// A fresh buffer holding `data` (padded with zeros to a multiple of 4 bytes).
    pub fn upload(
        self: &Arc<Self>,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        label: &str,
        data: &[u8],
    ) -> Result<PooledBuffer> {
        let padded;
        let contents = if data.len().is_multiple_of(4) && !data.is_empty() {
            data
        } else {
            padded = {
                let mut v = data.to_vec();
                v.resize(data.len().max(4).next_multiple_of(4), 0);
                v
            };
            &padded
        };
        let size = contents.len() as u64;
        // Not `create_buffer_init`: its mapping panics on a lost device; `write_buffer` reports
        // through the error handler and lands before any later submission.
        let buffer = self.create(device, label, size)?;
        queue.write_buffer(&buffer, 0, contents);
        Ok(self.lend(buffer, size))
    }

    fn release(&self, buffer: wgpu::Buffer, size: u64) {
        let mut st = self.lock();
        st.live_bytes = st.live_bytes.saturating_sub(size);
        st.free.entry(size).or_default().push(buffer);
    }

    /// (bytes held by live tensors, peak of that since the pool was made or reset).
    pub fn stats(&self) -> (u64, u64) {
        let st = self.lock();
        (st.live_bytes, st.peak_bytes)
    }

    /// Resets the peak to the live size, keeping the idle buffers.
    pub fn reset_peak(&self) {
        let mut st = self.lock();
        st.peak_bytes = st.live_bytes;
    }

    /// Destroys all idle buffers and resets the peak to the live size.
    pub fn trim(&self) {
        let mut st = self.lock();
        for (_, bufs) in st.free.drain() {
            for b in bufs {
                b.destroy();
            }
        }
        st.peak_bytes = st.live_bytes;
    }
}

/// A buffer on loan from the pool; goes back when dropped.
pub struct PooledBuffer {
    buffer: Option<wgpu::Buffer>,
    size: u64,
    pool: Arc<BufferPool>,
}

impl PooledBuffer {
    pub fn buffer(&self) -> &wgpu::Buffer {
        // Only `drop` takes the buffer out.
        self.buffer.as_ref().unwrap_or_else(|| unreachable!())
    }

    pub fn size(&self) -> u64 {
        self.size
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let Some(b) = self.buffer.take() {
            self.pool.release(b, self.size);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes_cover_request_with_bounded_waste() {
        for bytes in [
            1u64,
            4,
            15,
            16,
            17,
            100,
            1000,
            4096,
            4097,
            1 << 20,
            3_000_001,
        ] {
            let c = size_class(bytes);
            assert!(c >= bytes, "{bytes} -> {c}");
            assert_eq!(c % 4, 0);
            assert!(
                c as f64 <= (bytes.max(16) as f64) * 1.125 + 4.0,
                "{bytes} -> {c}"
            );
        }
    }
}
