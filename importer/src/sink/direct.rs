//! O_DIRECT writes for large aligned extents. On the VM disks we measured,
//! buffered write-back of 2 GB took 4-8 s where O_DIRECT took 1.8 s
//! (benches/RESULTS.md); qemu-img's `-t none` is the same choice. Small or
//! unaligned pieces still go through the page cache, where they cost less
//! than a synchronous device round trip.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// Alignment of O_DIRECT buffers, offsets and lengths (covers 4Kn disks).
pub const DIRECT_ALIGN: usize = 4096;
/// Extents smaller than this are written buffered.
pub const DIRECT_MIN: usize = 64 << 10;
/// Largest single O_DIRECT write (the largest data extent).
pub const DIRECT_MAX: usize = formats::extent::MAX_DATA_EXTENT;

/// A second descriptor on the target opened with O_DIRECT, and an aligned
/// bounce buffer.
pub struct DirectWriter {
    file: File,
    buf: Vec<u8>,
    start: usize,
}

impl std::fmt::Debug for DirectWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectWriter").finish_non_exhaustive()
    }
}

impl DirectWriter {
    /// Opens `path` for O_DIRECT writes; `None` where the filesystem does
    /// not support it (tmpfs).
    pub fn open(path: &Path) -> Option<Self> {
        let file = File::options()
            .write(true)
            .custom_flags(libc::O_DIRECT | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .ok()?;
        let buf = vec![0u8; DIRECT_MAX + DIRECT_ALIGN];
        let start = buf.as_ptr().align_offset(DIRECT_ALIGN);
        if start >= DIRECT_ALIGN {
            return None;
        }
        Some(DirectWriter { file, buf, start })
    }

    /// Writes `data` at `offset` if it qualifies for O_DIRECT; returns
    /// `false` (nothing written) when the caller should write it buffered.
    pub fn try_write(&mut self, offset: u64, data: &[u8]) -> io::Result<bool> {
        let len = data.len();
        if !(DIRECT_MIN..=DIRECT_MAX).contains(&len)
            || len % DIRECT_ALIGN != 0
            || offset % DIRECT_ALIGN as u64 != 0
        {
            return Ok(false);
        }
        let bounce = &mut self.buf[self.start..self.start + len];
        bounce.copy_from_slice(data);
        self.file.write_all_at(bounce, offset)?;
        Ok(true)
    }
}
