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
pub mod import;
pub mod metrics;
pub mod node;
pub mod outcome;
pub mod settings;
pub mod space;

pub use import::run;
pub use outcome::{json_message, one_line, write_termination, Outcome, MAX_TERMINATION};
pub use settings::ImportArgs;
pub use space::{usable_space, Target};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sources::http::HttpOptions;

/// How long to wait for `IMPORTER_READY_FILE`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How often an import logs its progress.
pub const LOG_INTERVAL: Duration = Duration::from_secs(5);
/// CDI's default filesystem overhead.
pub const DEFAULT_OVERHEAD: f64 = 0.06;

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
    /// `IMPORTER_REGISTRY_IMAGE_ARCHITECTURE`: the platform's architecture
    /// to pull (registry sources).
    pub registry_arch: Option<String>,
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

/// Go's `strconv.ParseBool` (for the upload server's settings too).
pub fn parse_go_bool(v: &str) -> Option<bool> {
    parse_bool(v)
}

/// Go's `strconv.ParseBool`.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// `path` (absolute, as CDI names it) under `root`.
pub fn under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_booleans_parse_like_strconv() {
        assert_eq!(parse_bool("True"), Some(true));
        assert_eq!(parse_bool("0"), Some(false));
        assert_eq!(parse_bool("yes"), None);
        assert_eq!(parse_bool(""), None);
    }
}
