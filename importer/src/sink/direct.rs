//! O_DIRECT writes, coalesced. On the VM disks we measured, buffered
//! write-back of 2 GB took 4-8 s where O_DIRECT took 1.8 s
//! (benches/RESULTS.md); qemu-img's `-t none` is the same choice. Each
//! O_DIRECT write waits for the device, so contiguous extents are gathered
//! in an aligned buffer and written in pieces of up to 4 MiB. Unaligned
//! edges still go through the page cache.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// Alignment of O_DIRECT buffers, offsets and lengths (covers 4Kn disks).
pub const DIRECT_ALIGN: usize = 4096;
/// Size of the gathering buffer: the largest single O_DIRECT write.
pub const DIRECT_MAX: usize = 4 << 20;

/// A second descriptor on the target opened with O_DIRECT, and an aligned
/// buffer gathering contiguous writes.
pub struct DirectWriter {
    file: File,
    buf: Vec<u8>,
    start: usize,
    /// Guest offset of the gathered bytes, and how many there are.
    pending: Option<(u64, usize)>,
}

impl std::fmt::Debug for DirectWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectWriter")
            .field("pending", &self.pending)
            .finish_non_exhaustive()
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
        Some(DirectWriter {
            file,
            buf,
            start,
            pending: None,
        })
    }

    /// Takes `data` at `offset` into the gathering buffer when it extends
    /// the pending run or can start one (aligned offset); returns `false`
    /// (nothing taken) when the caller should write it buffered. `plain`
    /// is the buffered descriptor, for unaligned tails.
    pub fn write(&mut self, plain: &File, offset: u64, mut data: &[u8]) -> io::Result<bool> {
        let contiguous = matches!(self.pending, Some((s, n)) if s + n as u64 == offset);
        if !contiguous {
            self.flush(plain)?;
            if offset % DIRECT_ALIGN as u64 != 0 {
                return Ok(false);
            }
            self.pending = Some((offset, 0));
        }
        while !data.is_empty() {
            let (s, n) = self.pending.expect("a run is open");
            let take = data.len().min(DIRECT_MAX - n);
            let at = self.start + n;
            self.buf[at..at + take].copy_from_slice(&data[..take]);
            self.pending = Some((s, n + take));
            data = &data[take..];
            if n + take == DIRECT_MAX {
                self.flush(plain)?;
                self.pending = Some((s + DIRECT_MAX as u64, 0));
            }
        }
        Ok(true)
    }

    /// Writes the gathered run: its aligned part with O_DIRECT, an
    /// unaligned tail through `plain`.
    pub fn flush(&mut self, plain: &File) -> io::Result<()> {
        let Some((s, n)) = self.pending.take() else {
            return Ok(());
        };
        let aligned = n / DIRECT_ALIGN * DIRECT_ALIGN;
        if aligned > 0 {
            self.file
                .write_all_at(&self.buf[self.start..self.start + aligned], s)?;
        }
        if aligned < n {
            plain.write_all_at(
                &self.buf[self.start + aligned..self.start + n],
                s + aligned as u64,
            )?;
        }
        Ok(())
    }
}
