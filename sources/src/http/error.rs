//! Errors of the HTTP source. The words CDI's controller and users know are
//! kept: "Unable to connect to http data source", "expected status code
//! 200, got 404".

use formats::error::{Classify, ErrorKind};

/// Errors from fetching a URL.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The server could not be reached (after retries).
    #[error("Unable to connect to http data source: {detail}")]
    Connect {
        /// Root cause, escaped.
        detail: String,
    },
    /// The server answered with a status we do not take.
    #[error(
        "Unable to connect to http data source: expected status code {expected}, got {status}. Status: {status} {reason}"
    )]
    Status {
        /// The status we wanted (200, or 206 for a range).
        expected: u16,
        /// The status received.
        status: u16,
        /// Its reason phrase.
        reason: String,
    },
    /// More redirects than allowed (H11).
    #[error("Too many redirects (more than {0})")]
    TooManyRedirects(usize),
    /// A redirect to something other than http(s) (H12).
    #[error("Redirect to unsupported scheme {0:?}")]
    RedirectScheme(String),
    /// A redirect from https to http (H13).
    #[error("Refusing redirect from https to http: {0}")]
    Downgrade(String),
    /// A redirect without a usable `Location`.
    #[error("Redirect {status} without a usable Location header")]
    BadRedirect {
        /// The redirect status.
        status: u16,
    },
    /// The destination address is refused by the egress policy (H15).
    #[error("Destination not allowed: {0}")]
    Destination(String),
    /// TLS failed (H20).
    #[error("Unable to connect to http data source: TLS error: {0}")]
    Tls(String),
    /// The server refused our TLS client certificate, or wanted one.
    #[error("Unable to connect to http data source: TLS client authentication failed: {0}")]
    ClientAuth(String),
    /// No byte arrived for the idle timeout (H17).
    #[error("No progress for {0} s: giving up")]
    Idle(u64),
    /// The total deadline passed.
    #[error("Deadline of {0} s passed")]
    Deadline(u64),
    /// The body ended early and could not be resumed (H08, H10).
    #[error("Download ended at byte {got} of {expected}: {detail}")]
    Truncated {
        /// Bytes received.
        got: u64,
        /// Bytes announced (or "unknown").
        expected: String,
        /// Why it could not be resumed.
        detail: String,
    },
    /// A `206` for another range than asked (H07).
    #[error("Server answered the range request {asked} with {got:?}")]
    BadRange {
        /// The range asked for.
        asked: String,
        /// The `Content-Range` received, escaped.
        got: String,
    },
    /// The resource changed between requests (H23).
    #[error("Resource changed during the download ({0}): not mixing two versions")]
    Changed(String),
    /// The body broke off (reset, early close).
    #[error("Download interrupted: {0}")]
    Interrupted(String),
    /// The response headers are unusable (too large, malformed) (H21).
    #[error("Unusable response from http data source: {0}")]
    Protocol(String),
    /// A URL we will not fetch.
    #[error("Invalid URL {url:?}: {reason}")]
    Url {
        /// The URL, escaped and without credentials.
        url: String,
        /// Why.
        reason: String,
    },
    /// A client setting is invalid (CA file, header, password file).
    #[error("{0}")]
    Config(String),
}

impl Classify for HttpError {
    fn kind(&self) -> ErrorKind {
        match self {
            HttpError::Truncated { .. } => ErrorKind::Truncated,
            HttpError::Config(_) | HttpError::Url { .. } => ErrorKind::Usage,
            HttpError::Status {
                status: 401 | 403, ..
            }
            | HttpError::ClientAuth(_) => ErrorKind::Auth,
            HttpError::Status {
                status: 408 | 429 | 500..=599,
                ..
            }
            | HttpError::Connect { .. }
            | HttpError::Interrupted(_) => ErrorKind::Unavailable,
            _ => ErrorKind::Source,
        }
    }
}

impl HttpError {
    /// Whether this is one of the errors CDI reports as "Unable to connect
    /// to http data source" (its termination message keeps those words
    /// instead of "Unable to process data").
    pub fn is_connect_failure(&self) -> bool {
        matches!(
            self,
            HttpError::Connect { .. }
                | HttpError::Status { .. }
                | HttpError::Tls(_)
                | HttpError::ClientAuth(_)
        )
    }

    /// The error as an `io::Error` that keeps its kind (for `Read` paths).
    pub fn into_io(self) -> std::io::Error {
        formats::error::kinded_io(self.kind(), self.to_string())
    }
}
