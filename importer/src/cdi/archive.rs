//! The `archive` content type: a tar (optionally gz/xz/zst) from the
//! endpoint, extracted into /data entry by entry, confined beneath it
//! (D12, T21).
//!
//! Every path is resolved with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`
//! from a descriptor of /data: no entry can reach outside it and no
//! symbolic link is ever followed while extracting, whatever earlier
//! entries created. `..` components, devices, FIFOs, sockets and sparse
//! entries are refused; setuid, setgid and sticky bits are dropped;
//! symbolic links are created only when their target stays beneath /data;
//! hard links only to files beneath it. Owners are not restored.

use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path};
use std::sync::Arc;

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
use sources::layers::{open_layers, LayerOptions};
use sources::meter::{Checksum, Meter, MeteredReader};
use sources::SourceError;

use super::{Outcome, Settings, Target};
use crate::progress::ProgressState;

/// Why an archive was refused.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// An entry that must not be extracted (D12).
    #[error("Unsafe archive entry {path:?}: {reason}")]
    Unsafe {
        /// The entry's path, escaped.
        path: String,
        /// Why.
        reason: &'static str,
    },
    /// The stream is not a tar archive.
    #[error("Archive content type needs a tar archive, found {0}")]
    NotTar(&'static str),
    /// The content does not fit the volume.
    #[error("Archive content is larger than the reported available storage {0}")]
    TooLarge(u64),
    /// A Block volume cannot hold an archive.
    #[error("Archive content type needs a Filesystem volume")]
    BlockVolume,
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// Any other failure.
    #[error("{0}")]
    Other(String),
}

fn unsafe_entry(path: &Path, reason: &'static str) -> ArchiveError {
    ArchiveError::Unsafe {
        path: formats::text::escape(&path.display().to_string()),
        reason,
    }
}

/// The normal components of an entry path: leading `/` and `.` dropped,
/// `..` refused.
fn components(path: &Path) -> Result<Vec<&OsStr>, ArchiveError> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            Component::ParentDir => return Err(unsafe_entry(path, "path contains \"..\"")),
        }
    }
    Ok(out)
}

const BENEATH: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

fn map_resolve(e: rustix::io::Errno, path: &Path) -> ArchiveError {
    // ELOOP/EXDEV: a symbolic link or an escape on the way; ENOTDIR: a
    // directory component that is a symbolic link (O_NOFOLLOW) or a file.
    if e == rustix::io::Errno::LOOP
        || e == rustix::io::Errno::XDEV
        || e == rustix::io::Errno::NOTDIR
    {
        unsafe_entry(path, "path goes through a symbolic link or a non-directory")
    } else {
        ArchiveError::Io(e.into())
    }
}

/// Opens (creating when missing) the directory `comps` beneath `root`.
fn open_dir(root: &OwnedFd, comps: &[&OsStr], path: &Path) -> Result<OwnedFd, ArchiveError> {
    let mut fd = rustix::fs::openat2(
        root,
        ".",
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        BENEATH,
    )
    .map_err(|e| map_resolve(e, path))?;
    for c in comps {
        let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
        fd = match rustix::fs::openat2(&fd, *c, flags, Mode::empty(), BENEATH) {
            Ok(f) => f,
            Err(rustix::io::Errno::NOENT) => {
                rustix::fs::mkdirat(&fd, *c, Mode::from_raw_mode(0o755))
                    .map_err(|e| ArchiveError::Io(e.into()))?;
                rustix::fs::openat2(&fd, *c, flags, Mode::empty(), BENEATH)
                    .map_err(|e| map_resolve(e, path))?
            }
            Err(e) => return Err(map_resolve(e, path)),
        };
    }
    Ok(fd)
}

/// Mode bits kept: permissions only (setuid, setgid, sticky dropped).
fn safe_mode(mode: u32) -> Mode {
    Mode::from_raw_mode(mode & 0o777)
}

/// Whether a symbolic link at `dir/…` pointing to `target` stays beneath
/// the root.
fn link_stays_beneath(dir: &[&OsStr], target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth = dir.len() as i64;
    for c in target.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// Extracts every entry of `archive` beneath `root`; returns the bytes of
/// regular files written. Fails once they pass `capacity`.
pub fn extract(input: impl Read, root: &Path, capacity: u64) -> Result<u64, ArchiveError> {
    let root_fd: OwnedFd = std::fs::File::open(root)?.into();
    let mut archive = tar::Archive::new(input);
    let mut written = 0u64;
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let comps = components(&path)?;
        let Some((name, dir)) = comps.split_last() else {
            continue;
        };
        let header = entry.header();
        let kind = header.entry_type();
        let mode = header.mode().unwrap_or(0o644);
        let parent = open_dir(&root_fd, dir, &path)?;
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = header.size()?;
                written = written.saturating_add(size);
                if written > capacity {
                    return Err(ArchiveError::TooLarge(capacity));
                }
                let fd = rustix::fs::openat2(
                    &parent,
                    *name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::TRUNC
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                    BENEATH,
                )
                .map_err(|e| map_resolve(e, &path))?;
                let mut file = std::fs::File::from(fd);
                io::copy(&mut entry, &mut file)?;
                rustix::fs::fchmod(file.as_fd(), safe_mode(mode))
                    .map_err(|e| ArchiveError::Io(e.into()))?;
            }
            tar::EntryType::Directory => {
                let mut all = dir.to_vec();
                all.push(name);
                let fd = open_dir(&root_fd, &all, &path)?;
                rustix::fs::fchmod(&fd, safe_mode(mode) | Mode::RUSR | Mode::WUSR | Mode::XUSR)
                    .map_err(|e| ArchiveError::Io(e.into()))?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()?
                    .ok_or_else(|| unsafe_entry(&path, "symbolic link without a target"))?
                    .into_owned();
                if !link_stays_beneath(dir, &target) {
                    return Err(unsafe_entry(
                        &path,
                        "symbolic link points outside the volume",
                    ));
                }
                rustix::fs::symlinkat(&target, &parent, *name)
                    .map_err(|e| ArchiveError::Io(e.into()))?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name()?
                    .ok_or_else(|| unsafe_entry(&path, "hard link without a target"))?
                    .into_owned();
                let tcomps = components(&target)?;
                let Some((tname, tdir)) = tcomps.split_last() else {
                    return Err(unsafe_entry(&path, "hard link to the volume root"));
                };
                let tparent = open_dir(&root_fd, tdir, &target)?;
                rustix::fs::linkat(&tparent, *tname, &parent, *name, AtFlags::empty())
                    .map_err(|e| ArchiveError::Io(e.into()))?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                return Err(unsafe_entry(&path, "devices and FIFOs are refused"));
            }
            tar::EntryType::GNUSparse => {
                return Err(unsafe_entry(&path, "sparse entries are not supported"));
            }
            // PAX and GNU long-name records are consumed by the reader;
            // anything else is not a file system object we create.
            _ => {}
        }
    }
    Ok(written)
}

/// Removes everything in `dir` but `lost+found`.
fn clean(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name() == "lost+found" {
            continue;
        }
        let p = e.path();
        // remove_dir_all never follows symbolic links.
        let _ = match e.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&p),
            _ => std::fs::remove_file(&p),
        };
    }
}

fn fetch_and_extract(
    s: &Settings,
    data_dir: &Path,
    capacity: u64,
    checksum: Option<&Checksum>,
    http: sources::http::HttpOptions,
    progress: &Arc<ProgressState>,
) -> Result<(), (ArchiveError, bool)> {
    let fail = |e: ArchiveError| (e, false);
    let (_client, res, body) = sources::http::open_url(&s.endpoint, http)
        .map_err(|e| fail(ArchiveError::Other(e.to_string())))?;
    let meter = Meter::new(checksum);
    progress.attach(meter.clone(), res.length);
    let reader = MeteredReader::new(body, meter.clone());
    let mut opened = open_layers(Box::new(reader), &LayerOptions::default())
        .map_err(|e| fail(ArchiveError::Other(crate::error::describe(&e, false))))?;
    if opened.format != formats::Probe::Tar {
        return Err(fail(ArchiveError::NotTar(opened.format.name())));
    }
    extract(&mut opened.reader, data_dir, capacity).map_err(fail)?;
    // The rest (tar's end blocks and padding) is part of what is hashed.
    io::copy(&mut opened.reader, &mut io::sink()).map_err(|e| fail(e.into()))?;
    match meter.verify() {
        Ok(()) => Ok(()),
        Err(e @ SourceError::ChecksumMismatch { .. }) => {
            Err((ArchiveError::Other(crate::error::describe(&e, false)), true))
        }
        Err(e) => Err(fail(ArchiveError::Other(e.to_string()))),
    }
}

/// Extracts the archive at the endpoint into the data directory.
pub(super) fn import(
    s: &Settings,
    target: &Target,
    image_size: Option<u64>,
    overhead: f64,
    progress: &Arc<ProgressState>,
) -> Outcome {
    if target.block {
        return Outcome::failed(format!(
            "Unable to process data: {}",
            ArchiveError::BlockVolume
        ));
    }
    let capacity = match target.file_capacity(image_size, overhead) {
        Ok(c) => c,
        Err(e) => return Outcome::failed(super::failure_message(&e)),
    };
    let checksum = match super::checksum_setting(s) {
        Ok(c) => c,
        Err(o) => return o,
    };
    let http = match super::http_options(s) {
        Ok(h) => h,
        Err(o) => return o,
    };
    match fetch_and_extract(
        s,
        &target.data_dir,
        capacity,
        checksum.as_ref(),
        http,
        progress,
    ) {
        Ok(()) => Outcome::complete(false, "Import Complete"),
        Err((e, mismatch)) => {
            clean(&target.data_dir);
            let message = crate::error::describe(&e, false);
            if mismatch {
                Outcome::checksum_mismatch(message)
            } else {
                Outcome::failed(super::processing_failed(message))
            }
        }
    }
}
