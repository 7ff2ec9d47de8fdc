//! The classification every error of the workspace maps to: a leaf
//! module (it depends on nothing in the workspace), so error types of any
//! module can implement [`Classify`] without import cycles.
//!
//! ```text
//! FormatError (formats) ─┐
//! SourceError (sources) ─┼─ kind() ─> ErrorKind ─> retry? exit code? message
//! ImportError (importer)─┘
//! ```
//!
//! Callers branch on [`ErrorKind`], never on message text.

use std::io;

/// What went wrong, coarsely: the classification used for retries, exit
/// codes and termination messages. The names follow the outcome kinds of
/// the rules in docs/ids.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Authentication with the source failed.
    Auth,
    /// The input is malformed.
    Format,
    /// A checksum, digest or CRC did not match.
    Integrity,
    /// A resource bound was hit (memory, count, length).
    Limit,
    /// The image does not fit the target.
    Size,
    /// The source could not be read (network, HTTP status, open failure).
    Source,
    /// The source is unavailable for now and may answer if asked again:
    /// a connection error, a 5xx, 408 or 429 status, a broken body.
    Unavailable,
    /// Writing the target failed (I/O error, no space, not a usable target).
    Target,
    /// The input ended before it was complete.
    Truncated,
    /// The input asks for something we refuse on principle (backing file,
    /// external data file, unsafe path).
    Unsafe,
    /// The input is recognised but not supported.
    Unsupported,
    /// The command line or configuration is invalid.
    Usage,
    /// A bug: something that cannot happen did (a panicked thread, a
    /// broken invariant).
    Internal,
}

impl ErrorKind {
    /// The short lowercase name used in messages and tests.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Auth => "auth",
            ErrorKind::Format => "format",
            ErrorKind::Integrity => "integrity",
            ErrorKind::Limit => "limit",
            ErrorKind::Size => "size",
            ErrorKind::Source => "source",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Target => "target",
            ErrorKind::Truncated => "truncated",
            ErrorKind::Unsafe => "unsafe",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Usage => "usage",
            ErrorKind::Internal => "internal",
        }
    }

    /// Whether retrying the same request may succeed: what every retry
    /// loop asks (docs/http.md, "Retries").
    pub fn is_transient(self) -> bool {
        matches!(self, ErrorKind::Unavailable)
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Implemented by every typed error of the workspace.
pub trait Classify {
    /// The coarse classification of this error.
    fn kind(&self) -> ErrorKind;
}

/// A typed error that travelled through an `io::Error` (the byte plane is a
/// chain of `std::io::Read`), so that its kind survives the trip.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct KindedIoError {
    /// The classification to report.
    pub kind: ErrorKind,
    /// The message, already safe to show.
    pub message: String,
}

/// Wraps a classified message into an `io::Error` for a `Read` chain.
pub fn kinded_io(kind: ErrorKind, message: impl Into<String>) -> io::Error {
    let io_kind = match kind {
        ErrorKind::Truncated => io::ErrorKind::UnexpectedEof,
        _ => io::ErrorKind::InvalidData,
    };
    io::Error::new(
        io_kind,
        KindedIoError {
            kind,
            message: message.into(),
        },
    )
}

/// Classifies an `io::Error` from the byte plane: a [`KindedIoError`] keeps
/// its kind, an unexpected end of input is [`ErrorKind::Truncated`], anything
/// else is a failure of the source.
pub fn classify_io(err: &io::Error) -> ErrorKind {
    if let Some(k) = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<KindedIoError>())
    {
        return k.kind;
    }
    match err.kind() {
        io::ErrorKind::UnexpectedEof => ErrorKind::Truncated,
        _ => ErrorKind::Source,
    }
}
