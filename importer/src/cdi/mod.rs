//! `diskimport import`: the CDI importer pod contract
//! (docs/cdi.md, README "diskimport import").
//!
//! The controller configures the importer only through environment
//! variables and mounted paths, and reads back only the exit code, the
//! termination message and the progress metric. Every path is taken under
//! a root (`/` in a pod, a temporary directory in tests).
//!
//! ```text
//! env/flags -> Settings -> {http -> pipeline::convert | none -> blank | archive -> extract}
//!           -> Outcome { exit code, termination message }  + metrics on :8443
//! ```

pub mod archive;
pub mod metrics;
pub mod node;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use formats::error::Classify;
use sources::http::{HttpError, HttpOptions};
use sources::layers::SourceFormat;
use sources::SourceError;

use crate::error::describe;
use crate::pipeline::{self, ConvertOptions};
use crate::progress::{ProgressLog, ProgressState};
use crate::sink::{self, Preallocation, SinkOptions, TargetKind};
use crate::ImportError;
use node::{node_endpoint, node_labels};

/// Kubernetes truncates termination messages here; CDI refuses longer JSON.
pub const MAX_TERMINATION: usize = 4096;
/// How long to wait for `IMPORTER_READY_FILE`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How often an import logs its progress.
pub const LOG_INTERVAL: Duration = Duration::from_secs(5);
/// CDI's default filesystem overhead.
pub const DEFAULT_OVERHEAD: f64 = 0.06;
/// Usable space is rounded down to this.
const ALIGN: u64 = 1 << 20;

/// The import's settings: each from a flag, else from CDI's variable.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Every absolute path (/data, /dev/..., /certs, ...) is taken under it.
    pub root: PathBuf,
    /// `IMPORTER_SOURCE`.
    pub source: String,
    /// `IMPORTER_ENDPOINT`.
    pub endpoint: String,
    /// `IMPORTER_CONTENTTYPE`.
    pub content_type: String,
    /// `IMPORTER_IMAGE_SIZE`.
    pub image_size: Option<String>,
    /// `OWNER_UID`.
    pub owner_uid: String,
    /// `FILESYSTEM_OVERHEAD`.
    pub filesystem_overhead: Option<String>,
    /// `INSECURE_TLS`.
    pub insecure_tls: Option<String>,
    /// `PREALLOCATION`.
    pub preallocation: Option<String>,
    /// `CACHE_MODE` (`TRYNONE` or empty; O_DIRECT is always tried).
    pub cache_mode: Option<String>,
    /// `IMPORTER_ACCESS_KEY_ID`.
    pub access_key_id: Option<String>,
    /// `IMPORTER_SECRET_KEY`.
    pub secret_key: Option<String>,
    /// `IMPORTER_CERT_DIR`.
    pub cert_dir: Option<PathBuf>,
    /// `IMPORTER_PROXY_CERT_DIR`.
    pub proxy_cert_dir: Option<PathBuf>,
    /// `IMPORTER_EXTRA_HEADER_<n>` values, `Name: value`.
    pub extra_headers: Vec<String>,
    /// `IMPORTER_CHECKSUM`.
    pub checksum: Option<String>,
    /// `IMPORTER_READY_FILE`.
    pub ready_file: Option<PathBuf>,
    /// `IMPORTER_DONE_FILE`.
    pub done_file: Option<PathBuf>,
    /// Where the progress metric is served (CDI: 0.0.0.0:8443).
    pub metrics: Option<SocketAddr>,
    /// `IMPORTER_PULL_METHOD`: `node` when a container disk is served by
    /// the image's own pod (node pull).
    pub pull_method: Option<String>,
    /// How long to wait for the ready file (CDI: 60 s).
    pub ready_timeout: Option<Duration>,
    /// How often progress is logged (default [`LOG_INTERVAL`]).
    pub log_interval: Option<Duration>,
    /// Retry, timeout and egress settings (flags of `convert`).
    pub http: HttpOptions,
}

/// What the process reports: its exit code, the termination message, and
/// a line for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Process exit code.
    pub exit_code: u8,
    /// The termination message; None: none is written (CDI's behaviour for
    /// an unparsable `PREALLOCATION`).
    pub termination: Option<String>,
    /// For the log.
    pub log: String,
}

impl Outcome {
    fn failed(message: String) -> Self {
        let message = one_line(&message);
        Outcome {
            exit_code: 1,
            termination: Some(message.clone()),
            log: message,
        }
    }

    /// CDI's answer to a checksum mismatch: the target is cleaned (by the
    /// caller), the message says "checksum mismatch", and the exit is 0 so
    /// the pod is not restarted in a loop.
    fn checksum_mismatch(message: String) -> Self {
        Outcome {
            exit_code: 0,
            termination: Some(json_message(false, &BTreeMap::new(), &message)),
            log: message,
        }
    }

    fn complete(preallocation_applied: bool, message: &str) -> Self {
        Self::complete_with_labels(preallocation_applied, &BTreeMap::new(), message)
    }

    fn complete_with_labels(
        preallocation_applied: bool,
        labels: &BTreeMap<String, String>,
        message: &str,
    ) -> Self {
        Outcome {
            exit_code: 0,
            termination: Some(json_message(preallocation_applied, labels, message)),
            log: message.to_owned(),
        }
    }
}

/// First line only, control characters escaped, at most
/// [`MAX_TERMINATION`] bytes (cut on a character boundary).
pub fn one_line(s: &str) -> String {
    let first = s.lines().next().unwrap_or_default();
    let mut out = formats::text::escape(first);
    if out.len() > MAX_TERMINATION {
        let mut cut = MAX_TERMINATION;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

/// CDI's JSON termination message, fields in CDI's order; the message is
/// shortened so the whole stays within [`MAX_TERMINATION`] bytes.
pub fn json_message(
    preallocation_applied: bool,
    labels: &BTreeMap<String, String>,
    message: &str,
) -> String {
    let render = |m: &str| {
        let mut s = format!(
            "{{\"scratchSpaceRequired\":false,\"preallocationApplied\":{preallocation_applied}"
        );
        if !labels.is_empty() {
            s.push_str(",\"labels\":");
            s.push_str(&serde_json::to_string(labels).unwrap_or_else(|_| "{}".into()));
        }
        s.push_str(",\"message\":");
        s.push_str(&serde_json::to_string(m).unwrap_or_else(|_| "\"\"".into()));
        s.push('}');
        s
    };
    let mut m = one_line(message);
    loop {
        let s = render(&m);
        if s.len() <= MAX_TERMINATION || m.is_empty() {
            return s;
        }
        let mut cut = m
            .len()
            .saturating_sub(s.len() - MAX_TERMINATION)
            .min(m.len() - 1);
        while !m.is_char_boundary(cut) {
            cut -= 1;
        }
        m.truncate(cut);
    }
}

/// Go's `strconv.ParseBool`.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// CDI's usable space: the available bytes less the filesystem overhead,
/// `RoundDown(ceil(avail / (1 + overhead)), 1 MiB)` (cdi-contract.md §1).
pub fn usable_space(available: u64, overhead: f64) -> u64 {
    let usable = (available as f64 / (1.0 + overhead)).ceil();
    let usable = if usable >= u64::MAX as f64 {
        u64::MAX
    } else {
        usable as u64
    };
    usable / ALIGN * ALIGN
}

/// `path` (absolute, as CDI names it) under `root`.
pub fn under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// Writes the termination message: mode 0600, one line.
pub fn write_termination(root: &Path, message: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = under(root, Path::new("/dev/termination-log"));
    let mut f = std::fs::File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(message.as_bytes())
}

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
        other => return Outcome::failed(format!("Unknown data source: {other}")),
    }
    // The endpoint is a URL of a scheme the source takes, never a path in
    // the importer's own container (a PVC annotation could otherwise copy a
    // mounted service-account token into a volume). CDI's words.
    if s.source == "http" && !sources::http::is_url(&s.endpoint) {
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

/// The volume: a block device at /dev/cdi-block-volume when it exists,
/// else /data/disk.img.
#[derive(Debug, Clone)]
pub struct Target {
    /// The block device or the image file.
    pub path: PathBuf,
    /// The data directory (Filesystem mode).
    pub data_dir: PathBuf,
    /// Block mode.
    pub block: bool,
}

impl Target {
    fn find(root: &Path) -> Target {
        let dev = under(root, Path::new("/dev/cdi-block-volume"));
        let data_dir = under(root, Path::new("/data"));
        if std::fs::symlink_metadata(&dev).is_ok() {
            Target {
                path: dev,
                data_dir,
                block: true,
            }
        } else {
            Target {
                path: data_dir.join("disk.img"),
                data_dir,
                block: false,
            }
        }
    }

    /// CDI's available space (docs/cdi.md, "Space"): what the image may
    /// take. Block: the device size; Filesystem: min(free space,
    /// IMPORTER_IMAGE_SIZE). The filesystem overhead plays no part here.
    pub fn available(&self, image_size: Option<u64>) -> Result<u64, ImportError> {
        let free = sink::inspect(&self.path, None)?.capacity;
        Ok(match image_size {
            Some(s) if !self.block => s.min(free),
            _ => free,
        })
    }
}

fn failure_message(e: &ImportError) -> String {
    match e {
        ImportError::TooLarge {
            virtual_size,
            available,
        } => format!(
            "Unable to process data: virtual image size {virtual_size} is larger than the reported available storage {available}. A larger PVC is required"
        ),
        _ => processing_failed(e, e.http()),
    }
}

/// CDI's failure text: errors reaching the HTTP server keep their own
/// words ("Unable to connect to http data source: ..."), everything else
/// is "Unable to process data: ...". Decided on the error's type.
fn processing_failed(e: &(dyn std::error::Error + 'static), http: Option<&HttpError>) -> String {
    let text = describe(e, false);
    if http.is_some_and(HttpError::is_connect_failure) {
        text
    } else {
        format!("Unable to process data: {text}")
    }
}

/// `IMPORTER_CHECKSUM`, parsed.
fn checksum_setting(s: &Settings) -> Result<Option<sources::meter::Checksum>, Outcome> {
    match s.checksum.as_deref().filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(c) => c
            .parse()
            .map(Some)
            .map_err(|e| Outcome::failed(format!("Unable to process data: {e}"))),
    }
}

/// The whole download's bound in `import` when none is given: CDI has
/// none, but a pod must not trickle forever (docs/http.md, "Retries").
pub const IMPORT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The HTTP client settings from CDI's variables.
fn http_options(s: &Settings) -> Result<HttpOptions, Outcome> {
    let mut http = s.http.clone();
    http.deadline.get_or_insert(IMPORT_DEADLINE);
    http.insecure = s
        .insecure_tls
        .as_deref()
        .and_then(parse_bool)
        .unwrap_or(false);
    http.username = s.access_key_id.clone().filter(|v| !v.is_empty());
    http.password = s.secret_key.clone().filter(|v| !v.is_empty());
    if http.password.is_some() && http.username.is_none() {
        http.username = Some(String::new());
    }
    for dir in [&s.cert_dir, &s.proxy_cert_dir].into_iter().flatten() {
        let d = under(&s.root, dir);
        if d.is_dir() {
            http.ca_dirs.push(d);
        }
    }
    for h in &s.extra_headers {
        if !h.contains(':') {
            // CDI drops such a header; it is logged here, never its text.
            tracing::warn!("Ignoring an extra header without ':'.");
            continue;
        }
        match sources::http::parse_header(h) {
            Ok(h) => http.headers.push(h),
            Err(e) => return Err(Outcome::failed(format!("Unable to process data: {e}"))),
        }
    }
    let header_dir = under(&s.root, Path::new("/extraheaders"));
    if header_dir.is_dir() {
        match sources::http::read_header_dir(&header_dir) {
            Ok(h) => http.headers.extend(h),
            Err(e) => return Err(Outcome::failed(format!("Unable to process data: {e}"))),
        }
    }
    Ok(http)
}

fn http(
    s: &Settings,
    target: &Target,
    image_size: Option<u64>,
    overhead: f64,
    preallocate: bool,
    progress: &Arc<ProgressState>,
) -> Outcome {
    let http = match http_options(s) {
        Ok(h) => h,
        Err(o) => return o,
    };
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
        progress_state: Some(progress.clone()),
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
            } else {
                BTreeMap::new()
            };
            Outcome::complete_with_labels(report.preallocation_applied, &labels, "Import Complete")
        }
        // The pipeline has removed the target.
        Err(ImportError::Source(e @ SourceError::ChecksumMismatch { .. })) => {
            Outcome::checksum_mismatch(describe(&e, false))
        }
        Err(e) => {
            tracing::error!(kind = %e.kind(), "Import failed.");
            Outcome::failed(failure_message(&e))
        }
    }
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
    fn usable_space_matches_cdi_numbers_worked_out_by_hand() {
        let gib = 1u64 << 30;
        let mib = 1u64 << 20;
        // (free or request, overhead, RoundDown(ceil(x / (1 + o)), 1 MiB)).
        for (avail, overhead, want) in [
            // 1073741824 / 1.06 = 1012964003.8 -> 966 MiB.
            (gib, 0.06, 1_012_924_416),
            (gib, 0.0, gib),
            // 1073741824 / 1.55 = 692736660.6 -> 660 MiB.
            (gib, 0.55, 692_060_160),
            (gib, 1.0, 512 * mib),
            // A 10Gi DataVolume's PVC, 11381663335 bytes: exactly 10 GiB.
            (11_381_663_335, 0.06, 10 * gib),
            // The same PVC's free space after mkfs.ext4 -m0: 9965 MiB.
            (11_077_079_040, 0.06, 10_449_059_840),
            (64 * mib, 0.06, 60 * mib),
            (0, 0.06, 0),
        ] {
            assert_eq!(usable_space(avail, overhead), want, "{avail} {overhead}");
        }
    }

    #[test]
    fn termination_messages_are_one_bounded_line() {
        let long = format!("a\u{1b}[31m{}\nsecond line", "x".repeat(10_000));
        let plain = one_line(&long);
        assert!(plain.len() <= MAX_TERMINATION);
        assert!(!plain.contains('\n') && !plain.contains('\u{1b}'));
        let json = json_message(false, &BTreeMap::new(), &format!("é{}", "\"".repeat(5000)));
        assert!(json.len() <= MAX_TERMINATION, "{}", json.len());
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["scratchSpaceRequired"], false);
        let ok = json_message(true, &BTreeMap::new(), "Import Complete");
        assert_eq!(
            ok,
            r#"{"scratchSpaceRequired":false,"preallocationApplied":true,"message":"Import Complete"}"#
        );
    }

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

    #[test]
    fn go_booleans_parse_like_strconv() {
        assert_eq!(parse_bool("True"), Some(true));
        assert_eq!(parse_bool("0"), Some(false));
        assert_eq!(parse_bool("yes"), None);
        assert_eq!(parse_bool(""), None);
    }
}
