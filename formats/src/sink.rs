//! The Sink contract: where the policy about zeroes lives.
//!
//! The trait is synchronous on purpose: sinks do blocking disk I/O and the
//! pipeline runs them on a dedicated thread (never a tokio worker), fed by a
//! bounded channel of extents. The OS implementations (file, block device)
//! live in `importer::sink`; [`MemSink`] is the in-memory reference.

use std::io;

use crate::{Extent, ExtentReader, FormatError};

/// A target for the extent stream.
pub trait Sink {
    /// Writes `data` at guest `offset`.
    fn write_data(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;

    /// Makes `[offset, offset + len)` read as zeroes. A sink that knows the
    /// range already reads as zero may do nothing.
    fn write_zeroes(&mut self, offset: u64, len: u64) -> io::Result<()>;

    /// Writes one extent.
    fn write_extent(&mut self, extent: &Extent) -> io::Result<()> {
        match extent {
            Extent::Data { offset, data } => self.write_data(*offset, data),
            Extent::Zero { offset, len } => self.write_zeroes(*offset, *len),
        }
    }
}

/// An in-memory sink: the dense reference every other sink is compared with.
#[derive(Debug, Default, Clone)]
pub struct MemSink {
    buf: Vec<u8>,
    /// How many bytes were passed to `write_zeroes`.
    pub zero_bytes: u64,
    /// How many bytes were passed to `write_data`.
    pub data_bytes: u64,
}

impl MemSink {
    /// The image written so far.
    pub fn contents(&self) -> &[u8] {
        &self.buf
    }

    /// Sets the final size (the reader's virtual size).
    pub fn set_len(&mut self, len: u64) {
        self.buf.resize(len as usize, 0);
    }

    fn ensure(&mut self, end: u64) {
        if self.buf.len() < end as usize {
            self.buf.resize(end as usize, 0);
        }
    }
}

impl Sink for MemSink {
    fn write_data(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let end = offset + data.len() as u64;
        self.ensure(end);
        self.buf[offset as usize..end as usize].copy_from_slice(data);
        self.data_bytes += data.len() as u64;
        Ok(())
    }

    fn write_zeroes(&mut self, offset: u64, len: u64) -> io::Result<()> {
        let end = offset + len;
        self.ensure(end);
        self.buf[offset as usize..end as usize].fill(0);
        self.zero_bytes += len;
        Ok(())
    }
}

/// Errors from [`drain`].
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    /// The reader failed.
    #[error(transparent)]
    Reader(#[from] FormatError),
    /// The sink failed.
    #[error("Writing the target")]
    Sink(#[source] io::Error),
    /// The reader broke the extent contract.
    #[error("Extent at {offset} does not follow the previous one ending at {expected}")]
    OutOfOrder {
        /// Offset of the offending extent.
        offset: u64,
        /// Where it should have started.
        expected: u64,
    },
}

/// Copies every extent of `reader` into `sink` on the current thread,
/// checking the ordering contract; returns the final size (end of the last
/// extent).
pub fn drain(reader: &mut impl ExtentReader, sink: &mut impl Sink) -> Result<u64, DrainError> {
    let mut pos = 0u64;
    while let Some(e) = reader.next_extent()? {
        if e.offset() != pos {
            return Err(DrainError::OutOfOrder {
                offset: e.offset(),
                expected: pos,
            });
        }
        sink.write_extent(&e).map_err(DrainError::Sink)?;
        pos = e.end();
    }
    Ok(pos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn mem_sink_equals_dense_reference(
            pieces in proptest::collection::vec((any::<bool>(), 1u64..5000, any::<u8>()), 0..30)
        ) {
            let mut sink = MemSink::default();
            let mut dense = Vec::new();
            let mut pos = 0;
            for (zero, len, byte) in pieces {
                let e = if zero {
                    Extent::Zero { offset: pos, len }
                } else {
                    Extent::Data { offset: pos, data: Bytes::from(vec![byte; len as usize]) }
                };
                sink.write_extent(&e).unwrap();
                dense.extend(std::iter::repeat_n(if zero { 0 } else { byte }, len as usize));
                pos += len;
            }
            prop_assert_eq!(sink.contents(), &dense[..]);
        }
    }
}
