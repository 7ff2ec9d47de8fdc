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
