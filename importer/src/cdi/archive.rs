//! The `archive` content type: a tar (optionally gz/xz/zst) from the
//! endpoint, extracted into /data entry by entry, confined beneath it
//! (D12, T21).
//!
//! Every path is resolved with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`
//! from a descriptor of /data: no entry can reach outside it and no
//! symbolic link is ever followed while extracting, whatever earlier
//! entries created. `..` components, devices, FIFOs, sockets and sparse
//! entries are refused; setuid, setgid and sticky bits are dropped;
//! symbolic links are created only when their target resolves beneath
//! /data, following the links already created, and every link is resolved
//! again once the archive is complete (a later link can change what an
//! earlier one means); hard links only to files beneath it, never to a
//! symbolic link. Owners are not restored. Long names and PAX records are
//! bounded before they are read ([`sources::targuard`]), and the capacity
//! check counts each entry's real size (a PAX `size` included).

use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path};
use std::sync::Arc;

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
use sources::layers::{open_layers, LayerOptions};
use sources::meter::Checksum;
use sources::targuard::{TarGuard, TarGuardError};
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
    /// The tar structure was refused before it was read (bounds, sparse
    /// entries, bad PAX paths).
    #[error("{0}")]
    Guard(TarGuardError),
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
    Io(io::Error),
    /// Opening or reading the source failed.
    #[error(transparent)]
    Source(SourceError),
    /// Peeling the compression layers failed.
    #[error(transparent)]
    Layers(sources::layers::LayerError),
}

impl From<io::Error> for ArchiveError {
    fn from(e: io::Error) -> Self {
        match TarGuardError::find(&e) {
            Some(g) => ArchiveError::Guard(g.clone()),
            None => ArchiveError::Io(e),
        }
    }
}

impl ArchiveError {
    /// The HTTP error inside, if that is what failed.
    pub fn http(&self) -> Option<&sources::http::HttpError> {
        match self {
            ArchiveError::Source(s) => s.http(),
            ArchiveError::Layers(sources::layers::LayerError::Source(s)) => s.http(),
            _ => None,
        }
    }
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

/// Opens the directory `comps` beneath `root`, never through a symbolic
/// link; with `create`, missing directories are made on the way.
fn walk_dirs(root: &OwnedFd, comps: &[&OsStr], create: bool) -> rustix::io::Result<OwnedFd> {
    let mut fd = rustix::fs::openat2(
        root,
        ".",
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        BENEATH,
    )?;
    let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    for c in comps {
        fd = match rustix::fs::openat2(&fd, *c, flags, Mode::empty(), BENEATH) {
            Err(rustix::io::Errno::NOENT) if create => {
                rustix::fs::mkdirat(&fd, *c, Mode::from_raw_mode(0o755))?;
                rustix::fs::openat2(&fd, *c, flags, Mode::empty(), BENEATH)?
            }
            other => other?,
        };
    }
    Ok(fd)
}

/// Opens (creating when missing) the directory `comps` beneath `root`.
fn open_dir(root: &OwnedFd, comps: &[&OsStr], path: &Path) -> Result<OwnedFd, ArchiveError> {
    walk_dirs(root, comps, true).map_err(|e| map_resolve(e, path))
}

/// Mode bits kept: permissions only (setuid, setgid, sticky dropped).
fn safe_mode(mode: u32) -> Mode {
    Mode::from_raw_mode(mode & 0o777)
}

/// Most symbolic links followed while resolving one link's target (the
/// kernel's own bound).
const MAX_LINK_HOPS: usize = 40;

/// The text of the symbolic link at `comps` beneath the root, or `None`
/// when that path is missing, not a link, or below a non-directory.
fn read_link(root: &OwnedFd, comps: &[std::ffi::OsString]) -> Option<std::ffi::OsString> {
    let (name, dir) = comps.split_last()?;
    let dir: Vec<&OsStr> = dir.iter().map(|c| c.as_os_str()).collect();
    let fd = walk_dirs(root, &dir, false).ok()?;
    let text = rustix::fs::readlinkat(&fd, name, Vec::new()).ok()?;
    Some(std::os::unix::ffi::OsStringExt::from_vec(text.into_bytes()))
}

/// Whether a symbolic link in directory `dir` with text `target` resolves
/// beneath the root as the tree stands: `..` may not climb above the root,
/// absolute targets never stay beneath it, and every link met on the way
/// (made by earlier entries) is followed, at most [`MAX_LINK_HOPS`] times.
/// Components that do not exist yet are taken as plain directories.
fn resolves_beneath(root: &OwnedFd, dir: &[&OsStr], target: &Path) -> bool {
    let mut at: Vec<std::ffi::OsString> = dir.iter().map(|c| c.to_os_string()).collect();
    let mut pending: std::collections::VecDeque<std::ffi::OsString> =
        std::collections::VecDeque::new();
    let push_front = |pending: &mut std::collections::VecDeque<_>, t: &Path| -> bool {
        if t.has_root() {
            return false;
        }
        for c in t.components().rev() {
            match c {
                Component::Normal(n) => pending.push_front(n.to_os_string()),
                Component::ParentDir => pending.push_front("..".into()),
                Component::CurDir => {}
                Component::RootDir | Component::Prefix(_) => return false,
            }
        }
        true
    };
    if !push_front(&mut pending, target) {
        return false;
    }
    let mut hops = 0;
    while let Some(c) = pending.pop_front() {
        if c == ".." {
            if at.pop().is_none() {
                return false;
            }
            continue;
        }
        at.push(c);
        if let Some(text) = read_link(root, &at) {
            hops += 1;
            at.pop();
            if hops > MAX_LINK_HOPS || !push_front(&mut pending, Path::new(&text)) {
                return false;
            }
        }
    }
    true
}

/// Extracts every entry of `archive` beneath `root`; returns the bytes of
/// regular files written. Fails once they pass `capacity`.
pub fn extract(input: impl Read, root: &Path, capacity: u64) -> Result<u64, ArchiveError> {
    extract_with(input, root, capacity, false)
}

/// Writes `size` bytes of `entry` to `file`, leaving all-zero 64 KiB
/// blocks as holes (a sparse entry's holes arrive as zeroes).
fn copy_sparse(entry: &mut impl Read, file: &mut std::fs::File, size: u64) -> io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    let mut buf = vec![0u8; 64 << 10];
    let mut done = 0u64;
    while done < size {
        let want = (size - done).min(buf.len() as u64) as usize;
        entry.read_exact(&mut buf[..want])?;
        if buf[..want].iter().all(|&b| b == 0) {
            file.seek(SeekFrom::Current(want as i64))?;
        } else {
            file.write_all(&buf[..want])?;
        }
        done += want as u64;
    }
    file.set_len(size)
}

/// [`extract`]; with `sparse`, old GNU sparse entries (what `tar -S`
/// writes, as CDI's cloner does) are extracted too, their holes kept
/// (host-assisted clone targets; archives refuse them, D11).
pub fn extract_with(
    input: impl Read,
    root: &Path,
    capacity: u64,
    sparse: bool,
) -> Result<u64, ArchiveError> {
    let root_fd: OwnedFd = std::fs::File::open(root)?.into();
    let guard = if sparse {
        TarGuard::allowing_sparse(input)
    } else {
        TarGuard::new(input)
    };
    let mut archive = tar::Archive::new(guard);
    let mut written = 0u64;
    // Every symbolic link made, as (directory, name, text): resolved again
    // at the end.
    let mut links: Vec<(
        Vec<std::ffi::OsString>,
        std::path::PathBuf,
        std::path::PathBuf,
    )> = Vec::new();
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
        let file_kind = matches!(kind, tar::EntryType::Regular | tar::EntryType::Continuous)
            || (sparse && kind == tar::EntryType::GNUSparse);
        match kind {
            _ if file_kind => {
                // The real size: a PAX `size` overrides the header's field;
                // a sparse entry's is its expanded size.
                let size = entry.size();
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
                copy_sparse(&mut entry, &mut file, size)?;
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
                if !resolves_beneath(&root_fd, dir, &target) {
                    return Err(unsafe_entry(
                        &path,
                        "symbolic link points outside the volume",
                    ));
                }
                rustix::fs::symlinkat(&target, &parent, *name)
                    .map_err(|e| ArchiveError::Io(e.into()))?;
                links.push((
                    dir.iter().map(|c| c.to_os_string()).collect(),
                    path.clone(),
                    target,
                ));
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
                // A hard link to a symbolic link is a copy of its text in
                // another directory, where it may mean something else.
                let st = rustix::fs::statat(&tparent, *tname, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| ArchiveError::Io(e.into()))?;
                if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink
                {
                    return Err(unsafe_entry(&path, "hard link to a symbolic link"));
                }
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
    // Links made later can change where earlier ones lead (`c -> x/..`
    // before `x -> .`): every link must still resolve beneath the root.
    for (dir, path, target) in &links {
        let dir: Vec<&OsStr> = dir.iter().map(|c| c.as_os_str()).collect();
        if !resolves_beneath(&root_fd, &dir, target) {
            return Err(unsafe_entry(
                path,
                "symbolic link points outside the volume",
            ));
        }
    }
    Ok(written)
}

/// Removes everything in `dir` but `lost+found`.
pub(crate) fn clean(dir: &Path) {
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
    let spec = sources::source::SourceSpec::Http(s.endpoint.clone());
    let open = sources::source::OpenOptions {
        http,
        ..Default::default()
    };
    let mut source = sources::source::Source::open(spec, &open, checksum)
        .map_err(|e| fail(ArchiveError::Source(e)))?;
    let meter = source.meter().clone();
    progress.attach(meter.clone(), source.length());
    let reader = source
        .take_stream()
        .map_err(|e| fail(ArchiveError::Source(e)))?;
    let mut opened = open_layers(Box::new(reader), &LayerOptions::default())
        .map_err(|e| fail(ArchiveError::Layers(e)))?;
    if opened.format != formats::Probe::Tar {
        return Err(fail(ArchiveError::NotTar(opened.format.name())));
    }
    extract(&mut opened.reader, data_dir, capacity).map_err(fail)?;
    // The rest (tar's end blocks and padding) is part of what is hashed.
    io::copy(&mut opened.reader, &mut io::sink()).map_err(|e| fail(e.into()))?;
    match meter.verify() {
        Ok(()) => Ok(()),
        Err(e @ SourceError::ChecksumMismatch { .. }) => Err((ArchiveError::Source(e), true)),
        Err(e) => Err(fail(ArchiveError::Source(e))),
    }
}

/// Extracts the archive at the endpoint into the data directory.
pub(super) fn import(
    s: &Settings,
    target: &Target,
    image_size: Option<u64>,
    progress: &Arc<ProgressState>,
) -> Outcome {
    if target.block {
        return Outcome::failed(format!(
            "Unable to process data: {}",
            ArchiveError::BlockVolume
        ));
    }
    let capacity = match target.available(image_size) {
        Ok(c) => c,
        Err(e) => return Outcome::failed(super::outcome::failure_message(&e)),
    };
    let checksum = match super::settings::checksum_setting(s) {
        Ok(c) => c,
        Err(o) => return o,
    };
    let http = match super::settings::http_options(s) {
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
                Outcome::failed(super::outcome::processing_failed(&e, e.http()))
            }
        }
    }
}
