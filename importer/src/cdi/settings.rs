//! The import's settings from CDI's environment: each CDI variable, or
//! the flag of the same meaning (for tests and runs outside a pod); an
//! empty variable counts as unset, as in CDI.

use std::path::{Path, PathBuf};

use sources::http::HttpOptions;

use super::outcome::Outcome;
use super::{parse_bool, under, Settings};
use crate::cli::seconds;
use crate::ImportError;

/// `diskimport import`: each setting is a flag or CDI's environment variable.
#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// Root under which every CDI path is taken (/data, /dev/cdi-block-volume, /dev/termination-log, /certs, /extraheaders). Env DISKIMPORT_ROOT.
    #[arg(long)]
    root: Option<PathBuf>,
    /// IMPORTER_SOURCE: http, registry or none.
    #[arg(long)]
    source: Option<String>,
    /// IMPORTER_ENDPOINT: the URL, or the image (docker://, oci-archive:).
    #[arg(long)]
    endpoint: Option<String>,
    /// IMPORTER_CONTENTTYPE: kubevirt or archive.
    #[arg(long)]
    content_type: Option<String>,
    /// IMPORTER_IMAGE_SIZE: requested size (Kubernetes quantity).
    #[arg(long)]
    image_size: Option<String>,
    /// OWNER_UID: the progress metric's label.
    #[arg(long)]
    owner_uid: Option<String>,
    /// FILESYSTEM_OVERHEAD: fraction of the volume kept free (default 0.06).
    #[arg(long)]
    filesystem_overhead: Option<String>,
    /// INSECURE_TLS: true to skip certificate verification.
    #[arg(long)]
    insecure_tls: Option<String>,
    /// PREALLOCATION: true or false.
    #[arg(long)]
    preallocation: Option<String>,
    /// CACHE_MODE (accepted; O_DIRECT is always tried).
    #[arg(long)]
    cache_mode: Option<String>,
    /// IMPORTER_CERT_DIR: CA certificates for the endpoint.
    #[arg(long)]
    cert_dir: Option<PathBuf>,
    /// IMPORTER_PROXY_CERT_DIR: CA certificates for the proxy.
    #[arg(long)]
    proxy_cert_dir: Option<PathBuf>,
    /// IMPORTER_REGISTRY_IMAGE_ARCHITECTURE: the architecture to pull from a multi-arch image.
    #[arg(long)]
    registry_arch: Option<String>,
    /// IMPORTER_CHECKSUM: ALGO:HEX of the source as served.
    #[arg(long)]
    checksum: Option<String>,
    /// IMPORTER_READY_FILE: wait (at most 60 s) for this file first.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// IMPORTER_DONE_FILE: created after success.
    #[arg(long)]
    done_file: Option<PathBuf>,
    /// How long to wait for the ready file.
    #[arg(long, value_name = "SECS", default_value = "60")]
    ready_timeout: f64,
    /// How often progress is logged, in seconds.
    #[arg(long, value_name = "SECS", default_value = "5")]
    log_interval: f64,
    /// Where the progress metric is served over HTTPS ("off" for nowhere). Env DISKIMPORT_METRICS_ADDRESS.
    #[arg(long)]
    metrics_address: Option<String>,
    /// Retries of transient HTTP failures.
    #[arg(long, default_value = "5")]
    retries: u32,
    /// First retry delay in seconds.
    #[arg(long, value_name = "SECS", default_value = "1")]
    retry_delay: f64,
}

/// A CDI variable or its flag; empty counts as unset.
pub(crate) fn setting(flag: Option<String>, var: &str) -> Option<String> {
    flag.or_else(|| std::env::var(var).ok())
        .filter(|v| !v.is_empty())
}

impl ImportArgs {
    /// The settings: flags first, then CDI's variables.
    pub fn settings(self) -> Result<Settings, ImportError> {
        let mut extra: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with("IMPORTER_EXTRA_HEADER_"))
            .collect();
        extra.sort();
        let metrics = match setting(self.metrics_address, "DISKIMPORT_METRICS_ADDRESS").as_deref() {
            Some("off") => None,
            Some(a) => Some(a.parse().map_err(|_| {
                ImportError::Usage(format!(
                    "Invalid metrics address {:?}",
                    formats::text::escape(a)
                ))
            })?),
            None => Some(std::net::SocketAddr::from(([0, 0, 0, 0], 8443))),
        };
        let mut http = sources::http::HttpOptions::default();
        http.retry.retries = self.retries;
        http.retry.base_delay = seconds("retry delay", self.retry_delay)?;
        Ok(Settings {
            root: self
                .root
                .or_else(|| std::env::var_os("DISKIMPORT_ROOT").map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from("/")),
            source: setting(self.source, "IMPORTER_SOURCE").unwrap_or_else(|| "http".into()),
            endpoint: setting(self.endpoint, "IMPORTER_ENDPOINT").unwrap_or_default(),
            content_type: setting(self.content_type, "IMPORTER_CONTENTTYPE").unwrap_or_default(),
            image_size: setting(self.image_size, "IMPORTER_IMAGE_SIZE"),
            owner_uid: setting(self.owner_uid, "OWNER_UID").unwrap_or_default(),
            filesystem_overhead: setting(self.filesystem_overhead, "FILESYSTEM_OVERHEAD"),
            insecure_tls: setting(self.insecure_tls, "INSECURE_TLS"),
            preallocation: setting(self.preallocation, "PREALLOCATION"),
            cache_mode: setting(self.cache_mode, "CACHE_MODE"),
            access_key_id: setting(None, "IMPORTER_ACCESS_KEY_ID"),
            secret_key: setting(None, "IMPORTER_SECRET_KEY"),
            cert_dir: self
                .cert_dir
                .or_else(|| setting(None, "IMPORTER_CERT_DIR").map(PathBuf::from)),
            proxy_cert_dir: self
                .proxy_cert_dir
                .or_else(|| setting(None, "IMPORTER_PROXY_CERT_DIR").map(PathBuf::from)),
            extra_headers: extra.into_iter().map(|(_, v)| v).collect(),
            checksum: setting(self.checksum, "IMPORTER_CHECKSUM"),
            registry_arch: setting(self.registry_arch, "IMPORTER_REGISTRY_IMAGE_ARCHITECTURE"),
            ready_file: self
                .ready_file
                .or_else(|| setting(None, "IMPORTER_READY_FILE").map(PathBuf::from)),
            done_file: self
                .done_file
                .or_else(|| setting(None, "IMPORTER_DONE_FILE").map(PathBuf::from)),
            metrics,
            pull_method: setting(None, "IMPORTER_PULL_METHOD"),
            ready_timeout: Some(seconds("ready timeout", self.ready_timeout)?),
            log_interval: Some(seconds("log interval", self.log_interval)?),
            http,
        })
    }
}

/// `IMPORTER_CHECKSUM`, parsed.
pub(super) fn checksum_setting(s: &Settings) -> Result<Option<sources::meter::Checksum>, Outcome> {
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
pub(super) fn http_options(s: &Settings) -> Result<HttpOptions, Outcome> {
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
