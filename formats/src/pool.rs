//! Buffer reuse between a producer and its consumer.
//!
//! A 10 GiB image moves through the pipeline in 1-4 MiB buffers. Buffers
//! of that size are their own mappings in the allocator, so a fresh one
//! costs page faults and the kernel zeroing every page: measured at a
//! quarter of the CPU time of a qcow2 conversion (benches/RESULTS.md).
//! The consumer hands finished buffers back instead.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use bytes::{Bytes, BytesMut};

/// Hands used buffers back to the [`BufferPool`] that made them.
#[derive(Debug, Clone)]
pub struct BufferReturn(SyncSender<BytesMut>);

impl BufferReturn {
    /// Gives back the buffer behind `data` if nothing else refers to it.
    pub fn give(&self, data: Bytes) {
        if let Ok(buf) = data.try_into_mut() {
            // A full pool just drops the buffer.
            let _ = self.0.try_send(buf);
        }
    }
}

/// A bounded set of idle buffers.
#[derive(Debug)]
pub struct BufferPool {
    rx: Receiver<BytesMut>,
    tx: SyncSender<BytesMut>,
}

impl BufferPool {
    /// A pool keeping at most `depth` idle buffers.
    pub fn new(depth: usize) -> Self {
        let (tx, rx) = sync_channel(depth);
        BufferPool { rx, tx }
    }

    /// Installs a pool of `depth` in `slot` and returns its handle.
    pub fn install(slot: &mut Option<BufferPool>, depth: usize) -> BufferReturn {
        let pool = BufferPool::new(depth);
        let back = pool.returner();
        *slot = Some(pool);
        back
    }

    /// The handle consumers give buffers back through.
    pub fn returner(&self) -> BufferReturn {
        BufferReturn(self.tx.clone())
    }

    /// A buffer of `len` bytes with room for `capacity`. Its content is
    /// unspecified (old data or zeroes): callers overwrite all of it.
    pub fn take(&self, len: usize, capacity: usize) -> BytesMut {
        let capacity = capacity.max(len);
        while let Ok(mut b) = self.rx.try_recv() {
            if b.capacity() >= len {
                // Only the part never written before needs zeroing.
                if b.len() < len {
                    b.resize(len, 0);
                } else {
                    b.truncate(len);
                }
                return b;
            }
        }
        let mut b = BytesMut::with_capacity(capacity);
        b.resize(len, 0);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returned_buffers_are_reused_and_resized() {
        let pool = BufferPool::new(2);
        let back = pool.returner();
        let a = pool.take(100, 1000);
        let ptr = a.as_ptr();
        back.give(a.freeze());
        let b = pool.take(500, 1000);
        assert_eq!(b.as_ptr(), ptr, "not reused");
        assert_eq!(b.len(), 500);
        // A buffer still shared elsewhere is not taken back.
        let shared = b.freeze();
        let keep = shared.clone();
        back.give(shared);
        let c = pool.take(10, 10);
        assert_ne!(c.as_ptr(), keep.as_ptr());
    }
}
