//! How to reach the server: retry policy, TLS, credentials, headers,
//! timeouts, egress; header lines and header files parsed.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};

use super::{tls, EgressPolicy, HttpError};

/// Retry behaviour for transient failures.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts after the first one.
    pub retries: u32,
    /// First back-off delay; doubled each time.
    pub base_delay: Duration,
    /// Longest back-off delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 5,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `attempt` (0-based). A transfer that
    /// broke after making progress is retried at once (`progressed`): a
    /// reset every few hundred megabytes must not cost a back-off each
    /// time; only failures in a row back off.
    pub(crate) fn delay_after(&self, attempt: u32, progressed: bool) -> Duration {
        if progressed && attempt == 0 {
            Duration::ZERO
        } else {
            self.delay(attempt)
        }
    }

    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        self.base_delay
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max_delay)
    }
}

/// How to reach the server.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Directories of extra CA certificates (PEM), e.g. CDI's
    /// `IMPORTER_CERT_DIR` and the proxy CA directory.
    pub ca_dirs: Vec<PathBuf>,
    /// Skip certificate verification.
    pub insecure: bool,
    /// Basic auth user.
    pub username: Option<String>,
    /// Basic auth password.
    pub password: Option<String>,
    /// Extra request headers; all treated as secrets (never logged, never
    /// sent cross-origin).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
    /// Give up when no byte arrives for this long (CDI: 10 minutes).
    pub idle_timeout: Duration,
    /// Give up when the whole download takes longer than this.
    pub deadline: Option<Duration>,
    /// Parallel connections for range reads.
    pub connections: usize,
    /// Where connections may go.
    pub egress: EgressPolicy,
    /// A client certificate and key (PEM files) to present.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// Parallel connections for range reads unless told otherwise: measured
/// with the range block size (ranges.rs, benches/RESULTS.md "Range
/// blocks"); the CLI's `--connections` default is this too.
pub const DEFAULT_CONNECTIONS: u16 = 8;

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            ca_dirs: Vec::new(),
            insecure: false,
            username: None,
            password: None,
            headers: Vec::new(),
            retry: RetryPolicy::default(),
            idle_timeout: Duration::from_secs(600),
            deadline: None,
            connections: usize::from(DEFAULT_CONNECTIONS),
            egress: EgressPolicy::default(),
            client_cert: None,
        }
    }
}

/// Parses a `Name: value` header line (`--header`, CDI's
/// `IMPORTER_EXTRA_HEADER_<n>` and its secret header files).
pub fn parse_header(line: &str) -> Result<(HeaderName, HeaderValue), HttpError> {
    let line = line.trim_end_matches(['\r', '\n']);
    let bad = |why: &str| {
        // The value may be a secret: only the name is shown.
        let name = line.split(':').next().unwrap_or_default();
        HttpError::Config(format!(
            "Invalid header {:?}: {why}",
            formats::text::escape(name)
        ))
    };
    let (name, value) = line
        .split_once(':')
        .ok_or_else(|| bad("expected Name: value"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| bad("bad name"))?;
    let mut value = HeaderValue::from_str(value.trim()).map_err(|_| bad("bad value"))?;
    value.set_sensitive(true);
    Ok((name, value))
}

/// Reads the header files of `dir`: every non-hidden regular file in it or
/// in its immediate subdirectories (CDI mounts secret headers as
/// `/extraheaders/<n>/<key>`) holds one `Name: value` line.
pub fn read_header_dir(dir: &std::path::Path) -> Result<Vec<(HeaderName, HeaderValue)>, HttpError> {
    let mut files = tls::visible_files(dir)?;
    for sub in std::fs::read_dir(dir).map_err(|e| HttpError::Config(e.to_string()))? {
        let sub = sub.map_err(|e| HttpError::Config(e.to_string()))?;
        if !sub.file_name().to_string_lossy().starts_with('.')
            && std::fs::metadata(sub.path()).is_ok_and(|m| m.is_dir())
        {
            files.extend(tls::visible_files(&sub.path())?);
        }
    }
    let mut headers = Vec::with_capacity(files.len());
    for f in &files {
        let text = std::fs::read_to_string(f).map_err(|e| {
            HttpError::Config(format!(
                "Reading header file {:?}: {e}",
                formats::text::escape(&f.display().to_string())
            ))
        })?;
        if !text.contains(':') {
            // CDI drops a header without ':'; the file is named, never
            // its content.
            tracing::warn!(
                file = %formats::text::escape(&f.display().to_string()),
                "Ignoring a header file without ':'."
            );
            continue;
        }
        headers.push(parse_header(text.trim())?);
    }
    Ok(headers)
}
