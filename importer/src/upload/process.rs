//! One upload written to the volume: a disk image through the pipeline,
//! an archive through the confined extractor, a block-device clone as raw
//! bytes (docs/upload.md).

use std::io::Read;
use std::sync::Arc;

use super::{volume, UploadSettings};
use crate::cdi::usable_space;
use crate::pipeline::{convert_source, ConvertOptions, Milestones};
use crate::sink::Preallocation;
use crate::ImportError;

/// Writes one upload to the volume: the pipeline for disk images, the
/// confined extractor for archives. Returns whether preallocation was
/// applied.
pub(super) fn process(
    s: &UploadSettings,
    archive: bool,
    body: Box<dyn Read + Send>,
    length: Option<u64>,
    checksum: Option<sources::meter::Checksum>,
    milestones: Arc<Milestones>,
    progress: &Arc<crate::progress::ProgressState>,
) -> Result<bool, ImportError> {
    let target = volume(s);
    let available = target.available(s.image_size)?;
    if archive {
        if target.block {
            return Err(ImportError::Usage(
                "archive uploads need a Filesystem volume".into(),
            ));
        }
        let source = sources::source::Source::from_body("upload", body, length, checksum.as_ref());
        let r = extract_archive(source, &target.data_dir, available);
        if r.is_err() {
            crate::cdi::archive::clean(&target.data_dir);
        }
        return r.map(|()| false);
    }
    let (target_size, grow_to) = if target.block {
        (None, None)
    } else {
        (
            Some(available),
            s.image_size.map(|_| usable_space(available, s.overhead)),
        )
    };
    let opts = ConvertOptions {
        target: target.path.clone(),
        preallocation: if s.preallocate {
            Preallocation::Falloc
        } else {
            Preallocation::Off
        },
        target_size,
        grow_to,
        checksum: checksum.clone(),
        milestones: Some(milestones),
        progress_state: Some(progress.clone()),
        ..Default::default()
    };
    let source = sources::source::Source::from_body("upload", body, length, checksum.as_ref());
    let report = convert_source(source, &opts)?;
    if !target.block {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&target.path, std::fs::Permissions::from_mode(0o660));
    }
    tracing::info!(layers = %report.layers, virtual_size = report.virtual_size, source_bytes = report.source_bytes, "Upload written");
    Ok(report.preallocation_applied)
}

/// A block-device clone: the decoded stream is the source device's bytes,
/// written as they are (zero blocks as holes), never interpreted.
pub(super) fn process_clone(
    s: &UploadSettings,
    raw: Box<dyn Read + Send>,
    checksum: Option<sources::meter::Checksum>,
    progress: &Arc<crate::progress::ProgressState>,
) -> Result<bool, ImportError> {
    let target = volume(s);
    let available = target.available(s.image_size)?;
    let opts = ConvertOptions {
        target: target.path.clone(),
        source_format: sources::layers::SourceFormat::Raw,
        target_size: (!target.block).then_some(available),
        checksum: checksum.clone(),
        progress_state: Some(progress.clone()),
        ..Default::default()
    };
    let source = sources::source::Source::from_body("clone", raw, None, checksum.as_ref());
    convert_source(source, &opts)?;
    Ok(false)
}

fn extract_archive(
    mut source: sources::source::Source,
    dir: &std::path::Path,
    capacity: u64,
) -> Result<(), ImportError> {
    use sources::layers::{open_layers, LayerOptions};
    let meter = source.meter().clone();
    let reader = source.take_stream()?;
    let mut opened = open_layers(Box::new(reader), &LayerOptions::default())?;
    if opened.format != formats::Probe::Tar {
        return Err(ImportError::Usage(format!(
            "the archive upload is {}, not a tar",
            opened.format.name()
        )));
    }
    crate::cdi::archive::extract(&mut opened.reader, dir, capacity)
        .map_err(|e| ImportError::Internal(crate::error::describe(&e, false)))?;
    std::io::copy(&mut opened.reader, &mut std::io::sink()).map_err(ImportError::reading)?;
    meter.verify()?;
    Ok(())
}

/// A Filesystem clone: a tar of the source volume made with `tar -S` by
/// CDI's cloner. Into a Filesystem volume it is extracted (sparse entries
/// kept sparse; CDI reports preallocation applied); onto a block device the
/// first entry whose name holds `disk.img` is written, holes as zeroes.
pub(super) fn process_fs_clone(
    s: &UploadSettings,
    tar: Box<dyn Read + Send>,
) -> Result<bool, ImportError> {
    let target = volume(s);
    let available = target.available(s.image_size)?;
    let internal =
        |e: &dyn std::error::Error| ImportError::Internal(crate::error::describe(e, false));
    if !target.block {
        return match crate::cdi::archive::extract_with(tar, &target.data_dir, available, true) {
            Ok(_) => Ok(true),
            Err(e) => {
                crate::cdi::archive::clean(&target.data_dir);
                Err(internal(&e))
            }
        };
    }
    let mut archive = tar::Archive::new(sources::targuard::TarGuard::allowing_sparse(tar));
    for entry in archive.entries().map_err(|e| internal(&e))? {
        let mut entry = entry.map_err(|e| internal(&e))?;
        let is_disk = String::from_utf8_lossy(&entry.path_bytes()).contains("disk.img");
        let kind = entry.header().entry_type();
        if !is_disk || !(kind.is_file() || kind == tar::EntryType::GNUSparse) {
            continue;
        }
        if entry.size() > available {
            return Err(ImportError::TooLarge {
                virtual_size: entry.size(),
                available,
            });
        }
        let mut dev = std::fs::OpenOptions::new()
            .write(true)
            .open(&target.path)
            .map_err(|e| ImportError::Target {
                path: formats::text::escape(&target.path.display().to_string()),
                source: e,
            })?;
        let target_err = |e: std::io::Error| ImportError::Target {
            path: formats::text::escape(&target.path.display().to_string()),
            source: e,
        };
        if let Err(e) = std::io::copy(&mut entry, &mut dev) {
            // A device cut short must not look like a complete disk: its
            // first MiB is zeroed, as the sinks do on failure.
            use std::io::{Seek, Write};
            let _ = dev.seek(std::io::SeekFrom::Start(0));
            let _ = dev.write_all(&vec![0u8; 1 << 20]);
            let _ = dev.sync_all();
            return Err(target_err(e));
        }
        dev.sync_all().map_err(target_err)?;
        return Ok(false);
    }
    Err(ImportError::Usage(
        "the clone stream holds no disk.img".into(),
    ))
}
