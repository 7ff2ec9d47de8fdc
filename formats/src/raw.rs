//! Raw images: a byte stream becomes an extent stream.
//!
//! [`Chunker`] cuts any `Read` into fixed-size [`Extent::Data`] chunks and
//! ends with the zero padding to the next 512-byte multiple (TD12: the output
//! of a raw input is its length rounded up to 512, as qemu does). Zero
//! detection is a separate step ([`crate::zero::split_zeroes`]) so the
//! pipeline can run it on another core; [`RawReader`] is both together.

use std::collections::VecDeque;
use std::io::{self, Read};

use bytes::BytesMut;

use crate::pool::BufferPool;
pub use crate::pool::BufferReturn;
use crate::zero::split_zeroes;
use crate::{Extent, ExtentReader, FormatError};

/// Size of the chunks a [`Chunker`] reads; a multiple of every zero and
/// sector granularity.
pub const CHUNK_SIZE: usize = 512 << 10;

/// Sector size that raw output lengths are rounded up to.
pub const SECTOR: u64 = 512;

/// Rounds `n` up to a multiple of [`SECTOR`].
pub fn round_up_sector(n: u64) -> u64 {
    n.div_ceil(SECTOR) * SECTOR
}

/// Reads a byte stream in [`CHUNK_SIZE`] pieces, as data extents.
#[derive(Debug)]
pub struct Chunker<R> {
    inner: R,
    offset: u64,
    done: bool,
    pool: Option<BufferPool>,
}

impl<R: Read> Chunker<R> {
    /// Wraps a byte stream.
    pub fn new(inner: R) -> Self {
        Chunker {
            inner,
            offset: 0,
            done: false,
            pool: None,
        }
    }

    /// Returns a handle through which consumers give chunk buffers back;
    /// at most `depth` idle buffers are kept.
    pub fn recycle(&mut self, depth: usize) -> BufferReturn {
        BufferPool::install(&mut self.pool, depth)
    }

    fn buffer(&mut self) -> BytesMut {
        match &self.pool {
            Some(p) => p.take(CHUNK_SIZE, CHUNK_SIZE),
            None => BytesMut::zeroed(CHUNK_SIZE),
        }
    }

    /// Bytes read so far.
    pub fn position(&self) -> u64 {
        self.offset
    }

    /// The next chunk (full unless the stream ended), then the sector
    /// padding as a zero extent, then `None`.
    pub fn next_chunk(&mut self) -> Result<Option<Extent>, FormatError> {
        if self.done {
            return Ok(None);
        }
        let mut buf = self.buffer();
        let mut filled = 0;
        while filled < CHUNK_SIZE {
            match self.inner.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(FormatError::Reading {
                        offset: self.offset + filled as u64,
                        source,
                    })
                }
            }
        }
        let offset = self.offset;
        if filled == 0 {
            self.done = true;
            let padded = round_up_sector(offset);
            return Ok((padded > offset).then_some(Extent::Zero {
                offset,
                len: padded - offset,
            }));
        }
        buf.truncate(filled);
        self.offset += filled as u64;
        Ok(Some(Extent::Data {
            offset,
            data: buf.freeze(),
        }))
    }
}

/// A raw image read from a byte stream, with zero detection: the simple
/// single-threaded form of the pipeline's raw path.
#[derive(Debug)]
pub struct RawReader<R> {
    chunker: Chunker<R>,
    queue: VecDeque<Extent>,
}

impl<R: Read> RawReader<R> {
    /// Wraps a byte stream.
    pub fn new(inner: R) -> Self {
        RawReader {
            chunker: Chunker::new(inner),
            queue: VecDeque::new(),
        }
    }
}

impl<R: Read> ExtentReader for RawReader<R> {
    fn virtual_size(&self) -> Option<u64> {
        None
    }

    fn next_extent(&mut self) -> Result<Option<Extent>, FormatError> {
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Ok(Some(e));
            }
            match self.chunker.next_chunk()? {
                None => return Ok(None),
                Some(Extent::Data { offset, data }) => {
                    let q = &mut self.queue;
                    split_zeroes(offset, &data, &mut |e| {
                        q.push_back(e);
                        Ok::<_, FormatError>(())
                    })?;
                }
                Some(zero) => return Ok(Some(zero)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::{drain, MemSink};
    use proptest::prelude::*;

    #[test]
    fn odd_length_input_is_padded_to_512() {
        let data = vec![3u8; 1000];
        let mut sink = MemSink::default();
        let size = drain(&mut RawReader::new(&data[..]), &mut sink).unwrap();
        assert_eq!(size, 1024);
        assert_eq!(&sink.contents()[..1000], &data[..]);
        assert_eq!(&sink.contents()[1000..], &[0u8; 24][..]);
    }

    #[test]
    fn returned_buffers_are_reused() {
        let data: Vec<u8> = (0..3 * CHUNK_SIZE).map(|i| (i % 251) as u8).collect();
        let mut c = Chunker::new(&data[..]);
        let ret = c.recycle(2);
        let Some(Extent::Data { data: first, .. }) = c.next_chunk().unwrap() else {
            panic!("expected data");
        };
        let ptr = first.as_ptr();
        ret.give(first);
        let Some(Extent::Data { data: second, .. }) = c.next_chunk().unwrap() else {
            panic!("expected data");
        };
        assert_eq!(second.as_ptr(), ptr, "buffer not reused");
        assert_eq!(&second[..], &data[CHUNK_SIZE..2 * CHUNK_SIZE]);
    }

    #[test]
    fn empty_input_is_an_empty_image() {
        let mut sink = MemSink::default();
        let size = drain(&mut RawReader::new(&[][..]), &mut sink).unwrap();
        assert_eq!(size, 0);
    }

    proptest! {
        #[test]
        fn raw_reader_extents_cover_input_exactly(
            runs in proptest::collection::vec((any::<bool>(), 1usize..300_000), 0..12)
        ) {
            let mut data = Vec::new();
            for (i, (zero, n)) in runs.iter().enumerate() {
                data.extend(std::iter::repeat_n(if *zero { 0 } else { i as u8 | 1 }, *n));
            }
            let mut r = RawReader::new(&data[..]);
            let mut pos = 0;
            let mut rebuilt = Vec::new();
            while let Some(e) = r.next_extent().unwrap() {
                prop_assert_eq!(e.offset(), pos);
                if let Extent::Data { data, .. } = &e {
                    prop_assert!(data.len() <= crate::extent::MAX_DATA_EXTENT);
                    rebuilt.extend_from_slice(data);
                } else {
                    rebuilt.extend(std::iter::repeat_n(0, e.len() as usize));
                }
                pos = e.end();
            }
            prop_assert_eq!(pos, round_up_sector(data.len() as u64));
            rebuilt.truncate(data.len());
            prop_assert_eq!(rebuilt, data);
        }
    }
}
