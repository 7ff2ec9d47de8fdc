//! Local sources: a file path or `-` for standard input, and hole-aware
//! reading of sparse local files (what qemu-img does with
//! `SEEK_DATA`/`SEEK_HOLE`), so a mostly empty raw image is not read byte by
//! byte.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileTypeExt;

use formats::read_at::{PrefetchFile, ReadAt};

use bytes::BytesMut;
use formats::Extent;

use crate::SourceError;

/// An opened local source.
#[derive(Debug)]
pub struct LocalSource {
    /// The file, or `None` for standard input.
    pub file: Option<File>,
    /// Its size when known (regular files and block devices).
    pub size: Option<u64>,
    /// Whether it is a regular file (holes can be found with `SEEK_DATA`).
    pub is_regular: bool,
}

impl LocalSource {
    /// Opens `path`, or standard input for `-`.
    pub fn open(path: &str) -> Result<Self, SourceError> {
        if path == "-" {
            return Ok(LocalSource {
                file: None,
                size: None,
                is_regular: false,
            });
        }
        let opening = |source| SourceError::Opening {
            path: formats::text::escape(path),
            source,
        };
        let file = File::open(path).map_err(opening)?;
        let meta = file.metadata().map_err(opening)?;
        let ft = meta.file_type();
        let size = if ft.is_file() {
            Some(meta.len())
        } else if ft.is_block_device() {
            Some(
                rustix::fs::seek(&file, rustix::fs::SeekFrom::End(0))
                    .map_err(|e| opening(e.into()))?,
            )
        } else if ft.is_fifo() || ft.is_char_device() {
            None
        } else {
            return Err(SourceError::UnsupportedSourceType {
                path: formats::text::escape(path),
            });
        };
        if ft.is_file() {
            // Doubles the kernel's readahead for the sequential stream path.
            let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::Sequential);
        }
        Ok(LocalSource {
            file: Some(file),
            size,
            is_regular: ft.is_file(),
        })
    }

    /// A sequential reader over the whole source.
    pub fn reader(&self) -> io::Result<Box<dyn Read + Send>> {
        match &self.file {
            Some(f) => Ok(Box::new(f.try_clone()?)),
            None => Ok(Box::new(io::stdin())),
        }
    }
}

/// Data chunks of a sparse file: larger than the stream path's, fewer
/// hand-overs (the zero detection after them still works in 4 KiB
/// blocks).
pub const SPARSE_CHUNK: usize = 2 << 20;

/// Reads a regular file as extents, skipping its holes without reading
/// them: data regions come as [`Extent::Data`] chunks (zero detection is
/// still the pipeline's job), holes as [`Extent::Zero`].
#[derive(Debug)]
pub struct SparseFileChunks {
    meter: Option<std::sync::Arc<crate::meter::Meter>>,
    /// Chunk buffers handed back by the consumer (formats::pool).
    pool: Option<formats::pool::BufferPool>,
    file: PrefetchFile,
    size: u64,
    pos: u64,
    data_end: u64,
    readahead: formats::read_at::Readahead,
}

impl SparseFileChunks {
    /// Reads `file` of `size` bytes.
    pub fn new(file: File, size: u64) -> io::Result<Self> {
        Ok(SparseFileChunks {
            meter: None,
            pool: None,
            file: PrefetchFile::new(file)?,
            size,
            pos: 0,
            data_end: 0,
            readahead: formats::read_at::Readahead::default(),
        })
    }

    /// Returns the handle through which the consumer gives chunk buffers
    /// back; at most `depth` idle buffers are kept. Without it every chunk
    /// is a fresh zeroed buffer: a memset of every byte read, measured at
    /// a quarter of a warm raw conversion (benches/RESULTS.md).
    pub fn recycle(&mut self, depth: usize) -> formats::pool::BufferReturn {
        formats::pool::BufferPool::install(&mut self.pool, depth)
    }

    /// Counts the data read on `meter` (holes are not read, so not counted).
    pub fn metered(mut self, meter: std::sync::Arc<crate::meter::Meter>) -> Self {
        self.meter = Some(meter);
        self
    }

    /// The next extent, or `None` at the end of the file.
    pub fn next_chunk(&mut self) -> io::Result<Option<Extent>> {
        use rustix::fs::{seek, SeekFrom};
        if self.pos >= self.size {
            return Ok(None);
        }
        if self.pos >= self.data_end {
            // Find the next data region. ENXIO means only a hole remains.
            let data = match seek(self.file.file(), SeekFrom::Data(self.pos)) {
                Ok(d) => d.min(self.size),
                Err(rustix::io::Errno::NXIO) => self.size,
                // A filesystem without SEEK_DATA: everything is data.
                Err(_) => {
                    self.data_end = self.size;
                    self.pos
                }
            };
            if data > self.pos {
                let zero = Extent::Zero {
                    offset: self.pos,
                    len: data - self.pos,
                };
                self.pos = data;
                return Ok(Some(zero));
            }
            if self.data_end <= self.pos {
                self.data_end = match seek(self.file.file(), SeekFrom::Hole(self.pos)) {
                    Ok(h) => h.min(self.size),
                    Err(_) => self.size,
                };
            }
        }
        // Chunks end on SPARSE_CHUNK boundaries so reads stay aligned.
        let boundary = (self.pos / SPARSE_CHUNK as u64 + 1) * SPARSE_CHUNK as u64;
        let end = self.data_end.min(boundary);
        let len = (end - self.pos) as usize;
        self.readahead.ahead(&self.file, self.pos);
        // Every byte of the buffer is read into below.
        let mut buf = match &self.pool {
            Some(p) => p.take(len, SPARSE_CHUNK),
            None => BytesMut::zeroed(len),
        };
        self.file.read_exact_at(&mut buf, self.pos)?;
        let e = Extent::Data {
            offset: self.pos,
            data: buf.freeze(),
        };
        if let Some(m) = &self.meter {
            m.advance(len as u64);
        }
        self.pos = end;
        Ok(Some(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};

    #[test]
    fn sparse_file_holes_are_zero_extents_and_data_is_exact() {
        let mut f = tempfile_in_target();
        f.seek(SeekFrom::Start(8 << 20)).unwrap();
        f.write_all(&[7u8; 5000]).unwrap();
        f.set_len(20 << 20).unwrap();
        let size = f.metadata().unwrap().len();
        let mut r = SparseFileChunks::new(f, size).unwrap();
        let mut pos = 0;
        let mut data = Vec::new();
        while let Some(e) = r.next_chunk().unwrap() {
            assert_eq!(e.offset(), pos);
            if let Extent::Data { data: d, offset } = &e {
                data.push((*offset, d.iter().filter(|&&b| b == 7).count()));
            }
            pos = e.end();
        }
        assert_eq!(pos, 20 << 20);
        assert_eq!(data.iter().map(|d| d.1).sum::<usize>(), 5000);
    }

    fn tempfile_in_target() -> File {
        let dir = std::env::temp_dir();
        let path = dir.join(format!("sparse-test-{}", std::process::id()));
        let f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        f
    }
}
