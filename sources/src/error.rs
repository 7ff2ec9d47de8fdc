//! Errors of the byte plane.

use std::io;

use formats::error::{classify_io, Classify, ErrorKind};

/// Errors from opening, reading and decoding a source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The user checksum did not match the source bytes.
    #[error("Checksum validation failed: checksum mismatch, expected {algorithm}:{expected}, got {algorithm}:{actual}")]
    ChecksumMismatch {
        /// Hash algorithm name.
        algorithm: &'static str,
        /// The expected digest, hex.
        expected: String,
        /// The digest of what was read, hex.
        actual: String,
    },
    /// The `--checksum` value could not be understood.
    #[error("Invalid checksum {spec:?}: {reason}")]
    InvalidChecksum {
        /// The value given, escaped.
        spec: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// Compression inside compression in one stage (D9).
    #[error("Refusing nested compression: {inner} inside {outer}")]
    NestedCompression {
        /// The outer layer.
        outer: &'static str,
        /// The layer found inside it.
        inner: &'static str,
    },
    /// The source could not be opened.
    #[error("Opening source {path:?}")]
    Opening {
        /// The path, escaped.
        path: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Reading or decoding the source failed.
    #[error("Reading the source")]
    Reading(#[source] io::Error),
    /// A URL scheme no source takes.
    #[error("Unsupported source scheme {scheme:?}: http, https, docker, oci, oci-archive, a path or - are accepted")]
    UnsupportedScheme {
        /// The scheme, escaped.
        scheme: String,
    },
    /// The source was already read one way (a bug in the caller).
    #[error("The source was already read")]
    AlreadyRead,
    /// Fetching an HTTP source failed.
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
    /// Pulling an image failed (boxed: the variant is large).
    #[error(transparent)]
    Registry(Box<crate::registry::RegistryError>),
    /// The source is not something we can read (a directory, a socket).
    #[error("Source {path:?} is not a regular file, block device or pipe")]
    UnsupportedSourceType {
        /// The path, escaped.
        path: String,
    },
}

impl From<crate::registry::RegistryError> for SourceError {
    fn from(e: crate::registry::RegistryError) -> Self {
        SourceError::Registry(Box::new(e))
    }
}

impl SourceError {
    /// The HTTP error inside, if fetching is what failed.
    pub fn http(&self) -> Option<&crate::http::HttpError> {
        match self {
            SourceError::Http(h) => Some(h),
            _ => None,
        }
    }
}

impl Classify for SourceError {
    fn kind(&self) -> ErrorKind {
        match self {
            SourceError::ChecksumMismatch { .. } => ErrorKind::Integrity,
            SourceError::InvalidChecksum { .. } => ErrorKind::Usage,
            SourceError::NestedCompression { .. } => ErrorKind::Unsupported,
            SourceError::Opening { .. } | SourceError::UnsupportedSourceType { .. } => {
                ErrorKind::Source
            }
            SourceError::Reading(e) => classify_io(e),
            SourceError::UnsupportedScheme { .. } => ErrorKind::Usage,
            SourceError::AlreadyRead => ErrorKind::Internal,
            SourceError::Http(e) => e.kind(),
            SourceError::Registry(e) => e.kind(),
        }
    }
}
