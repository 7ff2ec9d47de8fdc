//! The block-plane currency: extents of the virtual disk in guest order.
//!
//! Every format reader yields [`Extent`]s in strictly increasing, contiguous
//! guest order starting at 0; a sink only ever sees this stream, so sparse
//! output and qcow2 are the normal path rather than special cases.

use bytes::Bytes;

use crate::FormatError;

/// The largest [`Extent::Data`] a reader yields, so memory stays bounded.
pub const MAX_DATA_EXTENT: usize = 4 << 20;

/// One piece of the virtual disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extent {
    /// Content for `[offset, offset + data.len())`; at most
    /// [`MAX_DATA_EXTENT`] bytes.
    Data {
        /// Guest offset in bytes.
        offset: u64,
        /// The bytes.
        data: Bytes,
    },
    /// `[offset, offset + len)` reads as zeroes. The sink decides whether to
    /// skip, punch or write.
    Zero {
        /// Guest offset in bytes.
        offset: u64,
        /// Length in bytes.
        len: u64,
    },
}

impl Extent {
    /// Guest offset of the first byte.
    pub fn offset(&self) -> u64 {
        match self {
            Extent::Data { offset, .. } | Extent::Zero { offset, .. } => *offset,
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Extent::Data { data, .. } => data.len() as u64,
            Extent::Zero { len, .. } => *len,
        }
    }

    /// Whether the extent covers no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Guest offset one past the last byte.
    pub fn end(&self) -> u64 {
        self.offset() + self.len()
    }
}

/// A format reader: yields the extents of a virtual disk in guest order.
pub trait ExtentReader {
    /// The virtual size, when it is known before the end of the stream
    /// (always for qcow2 and local raw files; not for a compressed stream).
    fn virtual_size(&self) -> Option<u64>;

    /// The next extent, or `None` after the last one.
    fn next_extent(&mut self) -> Result<Option<Extent>, FormatError>;
}

/// Merges adjacent [`Extent::Zero`]s so a sink sees as few zero requests as
/// possible (each may be an ioctl on a block device).
#[derive(Debug, Default)]
pub struct ZeroCoalescer {
    pending: Option<(u64, u64)>,
}

impl ZeroCoalescer {
    /// Feeds one extent; calls `emit` for every extent that is complete.
    pub fn push<E>(
        &mut self,
        extent: Extent,
        emit: &mut impl FnMut(Extent) -> Result<(), E>,
    ) -> Result<(), E> {
        match extent {
            Extent::Zero { offset, len } => match &mut self.pending {
                Some((start, plen)) if *start + *plen == offset => *plen += len,
                _ => {
                    self.flush(emit)?;
                    self.pending = Some((offset, len));
                }
            },
            data => {
                self.flush(emit)?;
                emit(data)?;
            }
        }
        Ok(())
    }

    /// Emits the pending zero range, if any.
    pub fn flush<E>(&mut self, emit: &mut impl FnMut(Extent) -> Result<(), E>) -> Result<(), E> {
        if let Some((offset, len)) = self.pending.take() {
            if len > 0 {
                emit(Extent::Zero { offset, len })?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adjacent_zero_extents_are_merged() {
        let mut c = ZeroCoalescer::default();
        let mut out = Vec::new();
        let mut emit = |e| {
            out.push(e);
            Ok::<_, ()>(())
        };
        c.push(Extent::Zero { offset: 0, len: 10 }, &mut emit)
            .unwrap();
        c.push(Extent::Zero { offset: 10, len: 5 }, &mut emit)
            .unwrap();
        c.push(
            Extent::Data {
                offset: 15,
                data: Bytes::from_static(b"x"),
            },
            &mut emit,
        )
        .unwrap();
        c.push(Extent::Zero { offset: 16, len: 4 }, &mut emit)
            .unwrap();
        c.flush(&mut emit).unwrap();
        assert_eq!(
            out,
            vec![
                Extent::Zero { offset: 0, len: 15 },
                Extent::Data {
                    offset: 15,
                    data: Bytes::from_static(b"x")
                },
                Extent::Zero { offset: 16, len: 4 },
            ]
        );
    }
}
