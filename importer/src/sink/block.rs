//! A block-device target. A device is not known to read as zero, so every
//! zero extent is zeroed explicitly, with `BLKZEROOUT` where the kernel
//! offers it (never discard, which may not zero) and zero writes otherwise.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use formats::sink::Sink;

use super::direct::DirectWriter;
use super::file::write_zero_bytes;
use super::{Preallocation, SinkOptions};

/// `_IOR(0x12, 114, size_t)` from `<linux/fs.h>`: device size in bytes.
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
/// `_IO(0x12, 127)` from `<linux/fs.h>`: zero a byte range, argument
/// `uint64_t[2] = {start, length}`, both multiples of 512.
const BLKZEROOUT: libc::c_ulong = 0x127f;

/// The size of a block device in bytes.
pub fn device_size(f: &File) -> io::Result<u64> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points
    // to a live, properly aligned u64 on our stack.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), BLKGETSIZE64, &mut size as *mut u64) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(size)
}

/// Zeroes `[offset, offset + len)` of a device: `BLKZEROOUT` for the
/// 512-aligned middle, zero writes for unaligned edges and where the ioctl
/// is not supported.
pub fn zero_range(f: &File, offset: u64, len: u64) -> io::Result<()> {
    let end = offset + len;
    let a_start = offset.div_ceil(512) * 512;
    let a_end = end / 512 * 512;
    if a_end <= a_start {
        return write_zero_bytes(f, offset, len);
    }
    write_zero_bytes(f, offset, a_start - offset)?;
    write_zero_bytes(f, a_end, end - a_end)?;
    let range: [u64; 2] = [a_start, a_end - a_start];
    // SAFETY: BLKZEROOUT reads two u64s through the pointer, which points to
    // a live array of two u64s on our stack; the kernel does not keep it.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), BLKZEROOUT, range.as_ptr()) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EOPNOTSUPP) | Some(libc::ENOTTY) | Some(libc::EINVAL) => {
                write_zero_bytes(f, a_start, a_end - a_start)
            }
            _ => Err(e),
        };
    }
    Ok(())
}

/// A block device being written.
#[derive(Debug)]
pub struct BlockSink {
    file: File,
    size: u64,
    opts: SinkOptions,
    direct: Option<DirectWriter>,
}

impl BlockSink {
    pub(crate) fn new(
        file: File,
        size: u64,
        opts: SinkOptions,
        direct: Option<DirectWriter>,
    ) -> Self {
        BlockSink {
            file,
            size,
            opts,
            direct,
        }
    }

    /// Zeroes the tail past the image when asked (D16), then fsyncs.
    /// Returns whether preallocation was applied (every byte of the image
    /// range is written or zeroed on a device, so when it was asked).
    pub fn finish(mut self, virtual_size: u64) -> io::Result<bool> {
        if let Some(d) = &mut self.direct {
            d.finish(&self.file)?;
        }
        if self.opts.zero_tail && self.size > virtual_size {
            zero_range(&self.file, virtual_size, self.size - virtual_size)?;
        }
        self.file.sync_all()?;
        Ok(self.opts.preallocation != Preallocation::Off)
    }
}

impl Sink for BlockSink {
    fn write_data(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        if let Some(d) = &mut self.direct {
            if d.write(&self.file, offset, data)? {
                return Ok(());
            }
        }
        self.file.write_all_at(data, offset)
    }

    fn write_zeroes(&mut self, offset: u64, len: u64) -> io::Result<()> {
        // The gathered run ends before this range (extents come in order
        // and never overlap), so its writes may still be in flight while
        // the range is zeroed.
        if let Some(d) = &mut self.direct {
            d.flush(&self.file)?;
        }
        if self.opts.preallocation == Preallocation::Full {
            write_zero_bytes(&self.file, offset, len)
        } else {
            zero_range(&self.file, offset, len)
        }
    }
}

/// `LOOP_GET_STATUS64` from `<linux/loop.h>`.
const LOOP_GET_STATUS64: libc::c_ulong = 0x4C05;

/// `struct loop_info64` from `<linux/loop.h>` (232 bytes).
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// The backing file of a loop device as (device, inode), or `None` for
/// any other device (or a loop device without a file).
pub fn loop_backing(f: &File) -> Option<(u64, u64)> {
    // SAFETY: LoopInfo64 is plain old data; all-zero bytes are a valid value.
    let mut info: LoopInfo64 = unsafe { std::mem::zeroed() };
    // SAFETY: LOOP_GET_STATUS64 writes one struct loop_info64 through the
    // pointer, which points to a live LoopInfo64 of the same layout on our
    // stack; on other devices the ioctl fails and writes nothing.
    let rc = unsafe {
        libc::ioctl(
            f.as_raw_fd(),
            LOOP_GET_STATUS64,
            &mut info as *mut LoopInfo64,
        )
    };
    (rc == 0 && info.lo_inode != 0).then_some((info.lo_device, info.lo_inode))
}
