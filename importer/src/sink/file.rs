//! A regular-file target: sparse by default (holes are never written),
//! with `fallocate` or full preallocation on request.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use formats::sink::Sink;

use super::direct::DirectWriter;
use super::{Preallocation, SinkOptions};

/// Start write-back of every this many written bytes, so the final fsync
/// is short and dirty page-cache memory stays bounded.
const WRITEBACK_STEP: u64 = 64 << 20;

/// A static block of zeroes for explicit zero writes.
pub(crate) static ZEROES: [u8; 1 << 20] = [0; 1 << 20];

/// Writes `len` zero bytes at `offset`.
pub(crate) fn write_zero_bytes(file: &File, mut offset: u64, mut len: u64) -> io::Result<()> {
    while len > 0 {
        let n = len.min(ZEROES.len() as u64) as usize;
        file.write_all_at(&ZEROES[..n], offset)?;
        offset += n as u64;
        len -= n as u64;
    }
    Ok(())
}

/// A regular file being written. The file is new or was truncated to zero
/// when opened, so every range not written reads as zero.
#[derive(Debug)]
pub struct FileSink {
    file: File,
    opts: SinkOptions,
    /// Preallocation actually in force (falloc may fall back to full).
    mode: Preallocation,
    /// One past the last byte the extent stream has covered.
    end: u64,
    /// Where the next write-back request starts.
    writeback_from: u64,
    written_since_writeback: u64,
    direct: Option<DirectWriter>,
}

impl FileSink {
    pub(crate) fn new(file: File, opts: SinkOptions, direct: Option<DirectWriter>) -> Self {
        FileSink {
            direct,
            file,
            opts,
            mode: opts.preallocation,
            end: 0,
            writeback_from: 0,
            written_since_writeback: 0,
        }
    }

    /// Allocates `size` bytes up front when preallocation is asked, so a
    /// lack of space fails before any data is written (TD03).
    pub fn begin(&mut self, size: u64) -> io::Result<()> {
        let size = size.max(self.opts.target_size.unwrap_or(0));
        match self.mode {
            Preallocation::Off => Ok(()),
            Preallocation::Falloc => self.allocate(size),
            // Reserve the space now (best effort); every byte is still
            // written as it comes.
            Preallocation::Full => match fallocate(&self.file, size) {
                Err(e) if is_unsupported(&e) => Ok(()),
                other => other,
            },
        }
    }

    /// fallocate, falling back to writing zeroes where unsupported (TD04).
    fn allocate(&mut self, size: u64) -> io::Result<()> {
        match fallocate(&self.file, size) {
            Err(e) if is_unsupported(&e) => {
                self.mode = Preallocation::Full;
                Ok(())
            }
            other => other,
        }
    }

    fn start_writeback(&mut self, upto: u64) {
        // SAFETY: sync_file_range takes a valid open descriptor and plain
        // integers; it only starts write-back of dirty pages in the range
        // (SYNC_FILE_RANGE_WRITE does not wait), and a failure is harmless
        // because fsync in finish() is what guarantees durability.
        unsafe {
            libc::sync_file_range(
                self.file.as_raw_fd(),
                self.writeback_from as i64,
                (upto - self.writeback_from) as i64,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
        self.writeback_from = upto;
        self.written_since_writeback = 0;
    }

    /// Sets the length to the virtual size (or the larger requested target
    /// size: never shrinks), completes preallocation, and fsyncs. Returns
    /// whether preallocation was applied.
    pub fn finish(mut self, virtual_size: u64) -> io::Result<bool> {
        if let Some(d) = &mut self.direct {
            d.finish(&self.file)?;
        }
        let len = virtual_size.max(self.opts.target_size.unwrap_or(0));
        self.file.set_len(len)?;
        match self.mode {
            Preallocation::Off => {}
            Preallocation::Falloc => {
                self.allocate(len)?;
                if self.mode == Preallocation::Full {
                    fill_holes(&self.file, 0, len)?;
                }
            }
            Preallocation::Full => {
                // Zero extents were written as they came; the part past the
                // image (growth to the target size) is written now.
                if len > self.end {
                    write_zero_bytes(&self.file, self.end, len - self.end)?;
                }
            }
        }
        self.file.sync_all()?;
        Ok(self.mode != Preallocation::Off)
    }
}

impl Sink for FileSink {
    fn write_data(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.end = self.end.max(offset + data.len() as u64);
        if let Some(d) = &mut self.direct {
            if d.write(&self.file, offset, data)? {
                return Ok(());
            }
        }
        self.file.write_all_at(data, offset)?;
        self.written_since_writeback += data.len() as u64;
        if self.written_since_writeback >= WRITEBACK_STEP {
            self.start_writeback(offset + data.len() as u64);
        }
        Ok(())
    }

    fn write_zeroes(&mut self, offset: u64, len: u64) -> io::Result<()> {
        if self.mode == Preallocation::Full {
            if let Some(d) = &mut self.direct {
                d.flush(&self.file)?;
            }
            write_zero_bytes(&self.file, offset, len)?;
        }
        // Otherwise the range is a hole (or an unwritten extent) already.
        self.end = self.end.max(offset + len);
        Ok(())
    }
}

fn fallocate(file: &File, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, len)
        .map_err(io::Error::from)
}

fn is_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) | Some(libc::EINVAL)
    )
}

/// Writes zeroes into every hole of `[start, end)`.
fn fill_holes(file: &File, start: u64, end: u64) -> io::Result<()> {
    use rustix::fs::{seek, SeekFrom};
    let mut pos = start;
    while pos < end {
        let hole = match seek(file, SeekFrom::Hole(pos)) {
            Ok(h) => h.min(end),
            Err(_) => return write_zero_bytes(file, pos, end - pos),
        };
        if hole >= end {
            break;
        }
        let data = match seek(file, SeekFrom::Data(hole)) {
            Ok(d) => d.min(end),
            Err(_) => end,
        };
        write_zero_bytes(file, hole, data - hole)?;
        pos = data;
    }
    Ok(())
}
