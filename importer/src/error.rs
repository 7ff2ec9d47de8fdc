//! Errors of the importer, classified by [`ErrorKind`] for exit codes and
//! messages.

use std::io;

use formats::error::{Classify, ErrorKind};
use formats::FormatError;
use sources::layers::LayerError;
use sources::SourceError;

/// Errors from a conversion or import.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// A format error.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The HTTP source failed.
    #[error(transparent)]
    Http(#[from] sources::http::HttpError),
    /// An internal failure (a worker thread panicked).
    #[error("Internal error: {0}")]
    Internal(String),
    /// Detecting or decoding the source layers failed.
    #[error(transparent)]
    Layers(#[from] LayerError),
    /// The target filesystem is full or over quota (TD01, TD02).
    #[error(
        "No space left on target {path:?}: the image is larger than the reported available storage"
    )]
    NoSpace {
        /// The target path, escaped.
        path: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The streamed output grew past the target's capacity (C07: a
    /// decompression bomb or an image larger than the target).
    #[error("Image is larger than the reported available storage {available}: output passed {written} bytes")]
    OutputTooLarge {
        /// Output bytes reached.
        written: u64,
        /// The capacity.
        available: u64,
    },
    /// Reading the source failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Writing the target failed.
    #[error("Writing target {path:?}")]
    Target {
        /// The target path, escaped.
        path: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The target path is not something we write to.
    #[error("Target {path:?} {reason}")]
    TargetNotUsable {
        /// The target path, escaped.
        path: String,
        /// Why.
        reason: &'static str,
    },
    /// The image is larger than the target (refused before writing).
    #[error("Virtual image size {virtual_size} is larger than the reported available storage {available}")]
    TooLarge {
        /// The image's virtual size in bytes.
        virtual_size: u64,
        /// The target's capacity in bytes.
        available: u64,
    },
    /// A command-line value is invalid.
    #[error("{0}")]
    Usage(String),
}

impl ImportError {
    /// The image does not fit the target: refused from its size up front,
    /// its output passed the capacity, or the filesystem ran out of space
    /// (CDI's upload server answers these 400).
    pub fn is_capacity(&self) -> bool {
        matches!(
            self,
            ImportError::TooLarge { .. }
                | ImportError::OutputTooLarge { .. }
                | ImportError::NoSpace { .. }
        )
    }
}

impl Classify for ImportError {
    fn kind(&self) -> ErrorKind {
        match self {
            ImportError::Format(e) => e.kind(),
            ImportError::Http(e) => e.kind(),
            ImportError::Internal(_) => ErrorKind::Internal,
            ImportError::Layers(e) => e.kind(),
            ImportError::NoSpace { .. } => ErrorKind::Target,
            ImportError::OutputTooLarge { .. } | ImportError::TooLarge { .. } => ErrorKind::Size,
            ImportError::Source(e) => e.kind(),
            ImportError::Target { .. } | ImportError::TargetNotUsable { .. } => ErrorKind::Target,
            ImportError::Usage(_) => ErrorKind::Usage,
        }
    }
}

impl ImportError {
    /// The HTTP error inside, if fetching is what failed.
    pub fn http(&self) -> Option<&sources::http::HttpError> {
        match self {
            ImportError::Http(h) => Some(h),
            ImportError::Source(s) => s.http(),
            ImportError::Layers(sources::layers::LayerError::Source(s)) => s.http(),
            _ => None,
        }
    }

    /// Classifies a write error on `path`: no space and quota errors are
    /// capacity errors (CDI's `IsNoCapacityError`).
    pub fn writing(path: &str, source: io::Error) -> Self {
        match source.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => ImportError::NoSpace {
                path: path.to_owned(),
                source,
            },
            _ => ImportError::Target {
                path: path.to_owned(),
                source,
            },
        }
    }

    /// Wraps an error from the byte plane.
    pub fn reading(source: io::Error) -> Self {
        ImportError::Source(SourceError::Reading(source))
    }
}

/// Process exit code for a failure of `kind` (`convert` and `info`; the
/// CDI `import` entrypoint always exits 1 on failure, as CDI does).
pub fn exit_code(kind: ErrorKind) -> i32 {
    match kind {
        ErrorKind::Usage => 2,
        ErrorKind::Format | ErrorKind::Unsafe | ErrorKind::Unsupported => 3,
        ErrorKind::Size => 4,
        ErrorKind::Integrity | ErrorKind::Truncated => 5,
        ErrorKind::Source | ErrorKind::Unavailable => 6,
        ErrorKind::Target => 7,
        ErrorKind::Limit => 8,
        ErrorKind::Auth => 9,
        // Internal, and kinds added later until they get their own code.
        _ => 10,
    }
}

/// One line: the top message and the root cause; `verbose` gives the whole
/// chain. Control characters are escaped.
pub fn describe(err: &dyn std::error::Error, verbose: bool) -> String {
    let mut parts = vec![err.to_string()];
    let mut cur: Option<&dyn std::error::Error> = err.source();
    let mut chain = Vec::new();
    while let Some(e) = cur {
        chain.push(e.to_string());
        cur = e.source();
    }
    if verbose {
        parts.extend(chain);
    } else if let Some(root) = chain.pop() {
        parts.push(root);
    }
    parts.dedup();
    formats::text::escape(&parts.join(": "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// EDQUOT cannot be provoked on this kernel (no quota support), so its
    /// classification is checked here: a quota hit reads like a full disk.
    #[test]
    fn quota_and_full_disk_are_the_same_capacity_error() {
        for errno in [libc::EDQUOT, libc::ENOSPC] {
            let e = ImportError::writing("out.raw", io::Error::from_raw_os_error(errno));
            assert_eq!(
                e.to_string(),
                "No space left on target \"out.raw\": the image is larger than the reported available storage"
            );
            assert_eq!(e.kind(), ErrorKind::Target);
        }
        let e = ImportError::writing("out.raw", io::Error::from_raw_os_error(libc::EIO));
        assert_eq!(e.to_string(), "Writing target \"out.raw\"");
    }
}
