//! The import itself: settings checked, the volume found, then an HTTP
//! import, a blank image or an archive, and the outcome.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use formats::error::Classify;
use sources::layers::SourceFormat;
use sources::SourceError;

use super::node::{node_endpoint, node_labels};
use super::outcome::{failure_message, Outcome};
use super::settings::{checksum_setting, http_options};
use super::space::{usable_space, Target};
use super::{
    archive, metrics, parse_bool, under, Settings, DEFAULT_OVERHEAD, LOG_INTERVAL, READY_TIMEOUT,
};
use crate::error::describe;
use crate::pipeline::{self, ConvertOptions};
use crate::progress::{ProgressLog, ProgressState};
use crate::sink::{self, Preallocation, SinkOptions, TargetKind};
use crate::ImportError;

/// Runs the import and returns what to report.
pub fn run(s: &Settings) -> Outcome {
    // CDI: an unparsable PREALLOCATION exits 1 without a message.
    let preallocate = match s.preallocation.as_deref().filter(|v| !v.is_empty()) {
        None => false,
        Some(v) => match parse_bool(v) {
            Some(b) => b,
            None => {
                return Outcome {
                    exit_code: 1,
                    termination: None,
                    log: format!("Invalid PREALLOCATION {:?}", formats::text::escape(v)),
                }
            }
        },
    };
    let content = match s.content_type.as_str() {
        "" | "kubevirt" => ContentType::Kubevirt,
        "archive" => ContentType::Archive,
        other => {
            return Outcome::failed(format!(
                "Unable to process data: unknown content type {:?}",
                formats::text::escape(other)
            ))
        }
    };
    match s.source.as_str() {
        "http" | "none" => {}
        "registry" => {
            // CDI: any other content type is a usage error logged without
            // a termination message (exit 1).
            if content != ContentType::Kubevirt || s.content_type.is_empty() {
                return Outcome {
                    exit_code: 1,
                    termination: None,
                    log: format!(
                        "Unsupported content type {:?} for a registry source: kubevirt is required",
                        formats::text::escape(&s.content_type)
                    ),
                };
            }
            // CDI takes docker:// and oci-archive: here; oci: is ours.
            if let Err(e) = sources::registry::ImageRef::parse(&s.endpoint) {
                return Outcome::failed(registry_failure(&ImportError::Source(e.into())));
            }
        }
        other => return Outcome::failed(format!("Unknown data source: {other}")),
    }
    // The endpoint is a URL of a scheme the source takes, never a path in
    // the importer's own container (a PVC annotation could otherwise copy a
    // mounted service-account token into a volume). CDI's words.
    if s.source == "http" && !sources::http::is_url(&s.endpoint) {
        // (An image reference is only taken with IMPORTER_SOURCE=registry.)
        let scheme = sources::http::scheme_of(&s.endpoint).unwrap_or_default();
        return Outcome::failed(format!(
            "Unable to connect to http data source: HTTP request errored: Get {:?}: unsupported protocol scheme {:?}",
            sources::http::redact_text(&s.endpoint),
            formats::text::escape(scheme)
        ));
    }
    if s.source == "none" && content == ContentType::Archive {
        return Outcome::failed("Cannot create empty disk with content type archive".into());
    }
    let overhead = match s.filesystem_overhead.as_deref().filter(|v| !v.is_empty()) {
        None => DEFAULT_OVERHEAD,
        Some(v) => match v.parse::<f64>() {
            // CDIConfig accepts 0 to 1 inclusive.
            Ok(f) if (0.0..=1.0).contains(&f) => f,
            _ => {
                return Outcome::failed(format!(
                    "Unable to process data: invalid FILESYSTEM_OVERHEAD {:?}",
                    formats::text::escape(v)
                ))
            }
        },
    };
    let image_size = match s.image_size.as_deref().filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => match crate::size::parse_size(v) {
            Ok(n) => Some(n),
            Err(e) => return Outcome::failed(format!("Unable to process data: {e}")),
        },
    };
    if let Some(ready) = &s.ready_file {
        let ready = under(&s.root, ready);
        let start = std::time::Instant::now();
        while !ready.exists() {
            if start.elapsed() > s.ready_timeout.unwrap_or(READY_TIMEOUT) {
                return Outcome::failed(format!("Timeout waiting for file {}", ready.display()));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let s = &match node_endpoint(s) {
        Ok(s) => s,
        Err(o) => return o,
    };
    let progress = Arc::new(ProgressState::default());
    let _metrics = match s.metrics {
        Some(addr) => {
            match metrics::MetricsServer::start(addr, s.owner_uid.clone(), progress.clone()) {
                Ok(m) => Some(m),
                Err(e) => {
                    // Progress is a nicety: the import goes on without it.
                    tracing::warn!("Progress metric not served: {e}");
                    None
                }
            }
        }
        None => None,
    };
    let target = Target::find(&s.root);
    tracing::info!(
        source = %if s.source == "none" { "none".into() } else { sources::http::redact_text(&s.endpoint) },
        target = %target.path.display(),
        mode = if target.block { "Block" } else { "Filesystem" },
        content_type = ?content,
        "Import starting"
    );
    let _log = ProgressLog::start(progress.clone(), s.log_interval.unwrap_or(LOG_INTERVAL));
    let outcome = match (s.source.as_str(), content) {
        ("none", _) => blank(&target, image_size, overhead, preallocate),
        (_, ContentType::Archive) => archive::import(s, &target, image_size, &progress),
        _ => http(s, &target, image_size, overhead, preallocate, &progress),
    };
    if outcome.exit_code == 0 {
        progress.complete();
        if let Some(done) = &s.done_file {
            let _ = std::fs::write(under(&s.root, done), b"");
        }
    }
    outcome
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ContentType {
    Kubevirt,
    Archive,
}

fn http(
    s: &Settings,
    target: &Target,
    image_size: Option<u64>,
    overhead: f64,
    preallocate: bool,
    progress: &Arc<ProgressState>,
) -> Outcome {
    let mut http = match http_options(s) {
        Ok(h) => h,
        Err(o) => return o,
    };
    let registry = s.source == "registry";
    let mut wanted = sources::registry::Wanted::default();
    if registry {
        // CDI gives registry credentials only when both are set.
        if http.username.as_deref().is_none_or(str::is_empty) || http.password.is_none() {
            http.username = None;
            http.password = None;
        }
        if let Some(arch) = &s.registry_arch {
            wanted = sources::registry::Wanted {
                platform: sources::registry::Platform {
                    architecture: arch.clone(),
                    os: "linux".into(),
                    variant: None,
                },
                explicit: true,
            };
        }
    }
    let checksum = match checksum_setting(s) {
        Ok(c) => c,
        Err(o) => return o,
    };
    let available = match target.available(image_size) {
        Ok(a) => a,
        Err(e) => return Outcome::failed(failure_message(&e)),
    };
    // A Filesystem image is validated against the available space and,
    // when a size was requested, grown to the usable part of it (the
    // overhead taken off); a Block device is neither (docs/cdi.md).
    let (target_size, grow_to) = if target.block {
        (None, None)
    } else {
        (
            Some(available),
            image_size.map(|_| usable_space(available, overhead)),
        )
    };
    let opts = ConvertOptions {
        source: s.endpoint.clone(),
        target: target.path.clone(),
        source_format: SourceFormat::Auto,
        preallocation: if preallocate {
            Preallocation::Falloc
        } else {
            Preallocation::Off
        },
        target_size,
        grow_to,
        checksum,
        zero_tail: false,
        progress: false,
        spill: formats::qcow2::stream::SpillOptions::default(),
        http,
        wanted,
        progress_state: Some(progress.clone()),
        milestones: None,
    };
    let started = std::time::Instant::now();
    match pipeline::convert(&opts) {
        Ok(report) => {
            for w in &report.warnings {
                tracing::warn!("{w}.");
            }
            if !target.block {
                let _ =
                    std::fs::set_permissions(&target.path, std::fs::Permissions::from_mode(0o660));
            }
            let secs = started.elapsed().as_secs_f64();
            tracing::info!(
                layers = %report.layers,
                virtual_size = report.virtual_size,
                read_path = report.read_path,
                source_bytes = report.source_bytes,
                written_bytes = report.data_bytes,
                seconds = (secs * 10.0).round() / 10.0,
                mib_per_s = (report.source_bytes as f64 / secs.max(1e-3) / f64::from(1 << 20) * 10.0).round() / 10.0,
                "Import complete"
            );
            let labels = if s.pull_method.as_deref() == Some("node") {
                node_labels(&s.endpoint)
            } else if let Some(image) = &report.image {
                // Labels from the selected platform's config Env.
                super::node::envs_to_labels(&image.env)
            } else {
                BTreeMap::new()
            };
            Outcome::complete_with_labels(report.preallocation_applied, &labels, "Import Complete")
        }
        // The pipeline has removed the target.
        Err(ImportError::Source(e @ SourceError::ChecksumMismatch { .. })) => {
            Outcome::checksum_mismatch(describe(&e, false))
        }
        Err(e) if registry => {
            tracing::error!(kind = %e.kind(), "Import failed.");
            Outcome::failed(registry_failure(&e))
        }
        Err(e) => {
            tracing::error!(kind = %e.kind(), "Import failed.");
            Outcome::failed(failure_message(&e))
        }
    }
}

/// CDI's wording for a failed registry import: its controller sets the
/// reason `ImagePullFailed` on "failed to pull image", and its tests match
/// the prefix and the platform-choice text (docs/registry.md, "Messages").
fn registry_failure(e: &ImportError) -> String {
    let registry = match e {
        ImportError::Source(SourceError::Registry(r)) => Some(r.as_ref()),
        _ => None,
    };
    if let Some(r @ sources::registry::RegistryError::Reference { .. }) = registry {
        return format!("Unable to process data: {}", describe(r, false));
    }
    if matches!(e, ImportError::TooLarge { .. }) {
        return failure_message(e);
    }
    let choice = if registry.is_some_and(|r| r.is_choice_failure()) {
        "Error retrieving image: "
    } else {
        ""
    };
    format!(
        "Unable to process data: Unable to transfer source data to scratch space: Failed to read registry image: {choice}{}",
        describe(e, false)
    )
}

fn blank(target: &Target, image_size: Option<u64>, overhead: f64, preallocate: bool) -> Outcome {
    let result = (|| -> Result<bool, ImportError> {
        if target.block {
            if !preallocate {
                return Ok(false);
            }
            let info = sink::inspect(&target.path, None)?;
            let (sink, guard) = sink::open(
                &info,
                SinkOptions {
                    preallocation: Preallocation::Full,
                    target_size: None,
                    zero_tail: true,
                },
            )?;
            let applied = sink
                .finish(0)
                .map_err(|e| ImportError::writing(&target.path.display().to_string(), e))?;
            guard.disarm();
            return Ok(applied);
        }
        // CDI: usable(min(free space, IMPORTER_IMAGE_SIZE)).
        let size = usable_space(target.available(image_size)?, overhead);
        let info = sink::inspect(&target.path, Some(size))?;
        debug_assert_eq!(info.kind, TargetKind::File);
        let (mut sink, guard) = sink::open(
            &info,
            SinkOptions {
                preallocation: if preallocate {
                    Preallocation::Falloc
                } else {
                    Preallocation::Off
                },
                target_size: Some(size),
                zero_tail: false,
            },
        )?;
        let shown = target.path.display().to_string();
        sink.begin(size)
            .map_err(|e| ImportError::writing(&shown, e))?;
        let applied = sink
            .finish(size)
            .map_err(|e| ImportError::writing(&shown, e))?;
        guard.disarm();
        let _ = std::fs::set_permissions(&target.path, std::fs::Permissions::from_mode(0o660));
        Ok(applied)
    })();
    match result {
        Ok(applied) => Outcome::complete(applied, "Import Complete"),
        Err(e) => Outcome::failed(format!(
            "Unable to create blank image: {}",
            describe(&e, false)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_bounds_the_download_by_a_day_unless_told_otherwise() {
        let s = Settings::default();
        let h = http_options(&s).unwrap();
        assert_eq!(h.deadline, Some(std::time::Duration::from_secs(86_400)));
        let mut s = Settings::default();
        s.http.deadline = Some(std::time::Duration::from_secs(30));
        let h = http_options(&s).unwrap();
        assert_eq!(h.deadline, Some(std::time::Duration::from_secs(30)));
    }
}
