//! Targets: a regular file or a block device, behind the
//! [`formats::sink::Sink`] contract.
//!
//! ```text
//! inspect(path) -> TargetInfo { kind, exists, capacity }   (no side effects)
//!        |  virtual size <= capacity ?  else refuse, nothing created
//!        v
//! open(info) -> AnySink { File(FileSink) | Block(BlockSink) } + CleanupGuard
//!        |  extents ...
//!        v
//! finish(final size): set length, preallocate, fsync   -> guard disarmed
//! ```
//!
//! A failed import never leaves a target that looks complete (G5): the guard
//! removes a file it created, truncates a file that existed, and wipes the
//! first MiB of a block device.

pub mod block;
pub mod direct;
pub mod file;

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use formats::sink::Sink;

pub use block::BlockSink;
pub use file::FileSink;

use crate::error::ImportError;

/// How the target's space is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Preallocation {
    /// Sparse: zero ranges of a file are holes, never written. Block
    /// devices still get every hole zeroed, since they are not known to
    /// read as zero.
    #[default]
    Off,
    /// The whole file is allocated with `fallocate` (unwritten extents read
    /// as zero without being written). Where the filesystem cannot, falls
    /// back to [`Preallocation::Full`].
    Falloc,
    /// Every byte is written, zeroes included.
    Full,
}

impl std::str::FromStr for Preallocation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(Preallocation::Off),
            "falloc" => Ok(Preallocation::Falloc),
            "full" => Ok(Preallocation::Full),
            other => Err(format!(
                "Invalid preallocation {:?}: expected off, falloc or full",
                formats::text::escape(other)
            )),
        }
    }
}

/// What kind of target a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// A regular file (created when missing).
    File,
    /// A block device.
    Block,
}

/// What we know about a target before touching it.
#[derive(Debug, Clone)]
pub struct TargetInfo {
    /// The path.
    pub path: PathBuf,
    /// File or block device.
    pub kind: TargetKind,
    /// Whether the path exists already.
    pub exists: bool,
    /// How many bytes the image may take: the device size, the requested
    /// target size, or the free space of the file's filesystem.
    pub capacity: u64,
}

fn target_error(path: &Path, source: io::Error) -> ImportError {
    ImportError::Target {
        path: formats::text::escape(&path.display().to_string()),
        source,
    }
}

/// Looks at `path` without changing anything. `target_size` is the
/// requested size of a file target.
pub fn inspect(path: &Path, target_size: Option<u64>) -> Result<TargetInfo, ImportError> {
    let shown = || formats::text::escape(&path.display().to_string());
    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            let ft = meta.file_type();
            if ft.is_symlink() {
                // TD09: never write through a symlink.
                return Err(ImportError::TargetNotUsable {
                    path: shown(),
                    reason: "is a symbolic link",
                });
            }
            if ft.is_block_device() {
                let f = File::open(path).map_err(|e| target_error(path, e))?;
                let size = block::device_size(&f).map_err(|e| target_error(path, e))?;
                return Ok(TargetInfo {
                    path: path.to_owned(),
                    kind: TargetKind::Block,
                    exists: true,
                    capacity: size,
                });
            }
            if !ft.is_file() {
                return Err(ImportError::TargetNotUsable {
                    path: shown(),
                    reason: "is not a regular file or block device",
                });
            }
            let capacity = match target_size {
                Some(s) => s,
                // The file is truncated before writing, so its blocks count
                // as free.
                None => free_space(path)? + std::os::unix::fs::MetadataExt::blocks(&meta) * 512,
            };
            Ok(TargetInfo {
                path: path.to_owned(),
                kind: TargetKind::File,
                exists: true,
                capacity,
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let capacity = match target_size {
                Some(s) => s,
                None => free_space(path)?,
            };
            Ok(TargetInfo {
                path: path.to_owned(),
                kind: TargetKind::File,
                exists: false,
                capacity,
            })
        }
        Err(e) => Err(target_error(path, e)),
    }
}

/// Refuses a target that is the source itself: the same file (a hard link
/// or a symlink to it included), the same block device under any node, or
/// a loop device backed by the source file. Writing would destroy the
/// source as it is read. Called before anything is opened for writing.
/// `source` is a path, or `None` for standard input.
pub fn refuse_source_as_target(source: Option<&Path>, target: &Path) -> Result<(), ImportError> {
    use std::os::unix::fs::MetadataExt;
    /// (is a block device, st_dev, st_ino, st_rdev).
    type Id = (bool, u64, u64, u64);
    let of = |m: std::fs::Metadata| -> Id {
        (m.file_type().is_block_device(), m.dev(), m.ino(), m.rdev())
    };
    let Ok(t) = std::fs::metadata(target).map(of) else {
        // A target that does not exist yet cannot be the source.
        return Ok(());
    };
    let s: Id = match source {
        Some(p) => match std::fs::metadata(p) {
            Ok(m) => of(m),
            // Opening the source reports its own error.
            Err(_) => return Ok(()),
        },
        None => match rustix::fs::fstat(std::io::stdin()) {
            Ok(st) => (
                rustix::fs::FileType::from_raw_mode(st.st_mode)
                    == rustix::fs::FileType::BlockDevice,
                st.st_dev,
                st.st_ino,
                st.st_rdev,
            ),
            Err(_) => return Ok(()),
        },
    };
    let same = match (s.0, t.0) {
        (true, true) => s.3 == t.3,
        (false, false) => (s.1, s.2) == (t.1, t.2),
        (false, true) => File::open(target)
            .ok()
            .and_then(|f| block::loop_backing(&f))
            .is_some_and(|backing| backing == (s.1, s.2)),
        (true, false) => false,
    };
    if same {
        return Err(ImportError::TargetNotUsable {
            path: formats::text::escape(&target.display().to_string()),
            reason: "is the source itself",
        });
    }
    Ok(())
}

/// Free space for unprivileged writers on the filesystem that holds `path`.
fn free_space(path: &Path) -> Result<u64, ImportError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // The error names the target the user gave, not its directory.
    let st = rustix::fs::statvfs(dir).map_err(|e| target_error(path, e.into()))?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// An opened target.
#[derive(Debug)]
#[must_use = "call finish() to fsync and set the final size"]
pub enum AnySink {
    /// A regular file.
    File(FileSink),
    /// A block device.
    Block(BlockSink),
}

/// Options for opening a target.
#[derive(Debug, Clone, Copy, Default)]
pub struct SinkOptions {
    /// Space allocation policy.
    pub preallocation: Preallocation,
    /// File: the size to grow to (never shrinks).
    pub target_size: Option<u64>,
    /// Block: zero the device past the virtual size too (D16).
    pub zero_tail: bool,
}

/// Opens the target described by `info`, creating or truncating a file.
/// Returns the sink and the guard that undoes it on failure.
pub fn open(info: &TargetInfo, opts: SinkOptions) -> Result<(AnySink, CleanupGuard), ImportError> {
    let path = &info.path;
    let err = |e| target_error(path, e);
    match info.kind {
        TargetKind::Block => {
            let f = File::options()
                .read(true)
                .write(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(path)
                .map_err(err)?;
            let guard = CleanupGuard::new(path, Cleanup::WipeDevice(f.try_clone().map_err(err)?));
            let direct = direct::DirectWriter::open(path);
            Ok((
                AnySink::Block(BlockSink::new(f, info.capacity, opts, direct)),
                guard,
            ))
        }
        TargetKind::File => {
            let mut o = File::options();
            o.read(true)
                .write(true)
                .mode(0o644)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
            if info.exists {
                // TD10: an existing file is emptied first, so no old bytes
                // survive in the holes of the new image.
                o.truncate(true);
            } else {
                o.create_new(true);
            }
            let f = o.open(path).map_err(err)?;
            let cleanup = if info.exists {
                Cleanup::Truncate(f.try_clone().map_err(err)?)
            } else {
                Cleanup::Remove
            };
            let direct = direct::DirectWriter::open(path);
            Ok((
                AnySink::File(FileSink::new(f, opts, direct)),
                CleanupGuard::new(path, cleanup),
            ))
        }
    }
}

impl AnySink {
    /// Reserves space for an image of `size` bytes, when the size is known
    /// before the data (TD03: fail before writing).
    pub fn begin(&mut self, size: u64) -> io::Result<()> {
        match self {
            AnySink::File(f) => f.begin(size),
            AnySink::Block(_) => Ok(()),
        }
    }

    /// Sets the final size, preallocates, and fsyncs. Returns whether
    /// preallocation was applied.
    pub fn finish(self, virtual_size: u64) -> io::Result<bool> {
        match self {
            AnySink::File(f) => f.finish(virtual_size),
            AnySink::Block(b) => b.finish(virtual_size),
        }
    }
}

impl Sink for AnySink {
    fn write_data(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        match self {
            AnySink::File(f) => f.write_data(offset, data),
            AnySink::Block(b) => b.write_data(offset, data),
        }
    }

    fn write_zeroes(&mut self, offset: u64, len: u64) -> io::Result<()> {
        match self {
            AnySink::File(f) => f.write_zeroes(offset, len),
            AnySink::Block(b) => b.write_zeroes(offset, len),
        }
    }
}

/// What to undo on failure.
#[derive(Debug)]
enum Cleanup {
    Remove,
    Truncate(File),
    WipeDevice(File),
}

/// Undoes a target on drop unless [`CleanupGuard::disarm`] was called.
#[derive(Debug)]
pub struct CleanupGuard {
    path: PathBuf,
    cleanup: Option<Cleanup>,
}

impl CleanupGuard {
    fn new(path: &Path, cleanup: Cleanup) -> Self {
        CleanupGuard {
            path: path.to_owned(),
            cleanup: Some(cleanup),
        }
    }

    /// The import succeeded: keep the target.
    pub fn disarm(mut self) {
        self.cleanup = None;
    }
}

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        match self.cleanup.take() {
            None => {}
            Some(Cleanup::Remove) => {
                let _ = std::fs::remove_file(&self.path);
            }
            Some(Cleanup::Truncate(f)) => {
                let _ = f.set_len(0);
                let _ = f.sync_all();
            }
            Some(Cleanup::WipeDevice(f)) => {
                // Partition tables and filesystem superblocks live in the
                // first MiB: zeroing it keeps a half-written device from
                // looking like a complete disk.
                let len = block::device_size(&f).unwrap_or(0).min(1 << 20);
                let _ = block::zero_range(&f, 0, len);
                let _ = f.sync_all();
            }
        }
    }
}
