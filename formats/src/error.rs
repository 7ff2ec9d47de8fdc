//! Error classification shared by the whole workspace, and the errors of
//! this crate.
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
/// the hostile-inputs specification.
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
            ErrorKind::Target => "target",
            ErrorKind::Truncated => "truncated",
            ErrorKind::Unsafe => "unsafe",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Usage => "usage",
            ErrorKind::Internal => "internal",
        }
    }

    /// Whether retrying the same request may succeed.
    pub fn is_transient(self) -> bool {
        matches!(self, ErrorKind::Source)
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

/// Errors from detecting and reading image formats.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// An `io::Error` carrying a typed error from a lower stage (a decoder
    /// inside a `Read` chain); its kind is preserved.
    #[error("{0}")]
    Classified(#[source] io::Error, ErrorKind),
    /// A qcow2 error.
    #[error(transparent)]
    Qcow2(#[from] crate::qcow2::Qcow2Error),
    /// The source is an HTML page (a login or error page), not an image
    /// (D13).
    #[error("Server returned an HTML page, not a disk image")]
    HtmlPage,
    /// The stream was expected to be of one format and is not.
    #[error("Source is not a {expected} image (detected {found})")]
    NotExpectedFormat {
        /// The format the caller asked for.
        expected: &'static str,
        /// The format detected from the magic bytes.
        found: &'static str,
    },
    /// Reading the image failed.
    #[error("Reading the image at offset {offset}")]
    Reading {
        /// Offset in the decoded stream where the read failed.
        offset: u64,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A qcow image of a version we do not read (1 is the obsolete qcow
    /// format, above 3 is unknown).
    #[error("Unsupported qcow2 version {version}")]
    UnsupportedVersion {
        /// The header's version field.
        version: u32,
    },
    /// A recognised image format we do not import.
    #[error("{format} is not supported")]
    UnsupportedFormat {
        /// The format's common name.
        format: &'static str,
    },
}

impl Classify for FormatError {
    fn kind(&self) -> ErrorKind {
        match self {
            FormatError::Classified(_, kind) => *kind,
            FormatError::NotExpectedFormat { .. } | FormatError::HtmlPage => ErrorKind::Format,
            FormatError::Qcow2(e) => e.kind(),
            FormatError::Reading { source, .. } => classify_io(source),
            FormatError::UnsupportedFormat { .. } | FormatError::UnsupportedVersion { .. } => {
                ErrorKind::Unsupported
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinded_io_error_keeps_its_kind_through_io_error() {
        let e = kinded_io(ErrorKind::Integrity, "CRC mismatch");
        assert_eq!(classify_io(&e), ErrorKind::Integrity);
        assert_eq!(e.to_string(), "CRC mismatch");
    }

    #[test]
    fn plain_unexpected_eof_is_truncated() {
        let e = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert_eq!(classify_io(&e), ErrorKind::Truncated);
    }
}
