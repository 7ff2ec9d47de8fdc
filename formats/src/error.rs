//! The errors of this crate; their classification lives in [`crate::kind`]
//! (re-exported here).

use std::io;

pub use crate::kind::{classify_io, kinded_io, Classify, ErrorKind, KindedIoError};

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
