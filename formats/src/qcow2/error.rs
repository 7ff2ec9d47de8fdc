//! qcow2 errors. Every message names the offending value; names read from
//! the image are escaped before they get here.

use std::io;

use crate::kind::{classify_io, Classify, ErrorKind};

/// Errors from parsing and reading a qcow2 image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Qcow2Error {
    /// The image names a backing file (G1: never opened).
    #[error("Backing file {name:?} is not allowed: images are imported without a backing chain")]
    BackingFile {
        /// The name, escaped.
        name: String,
    },
    /// A structure lies (partly) past the end of the file.
    #[error("{what} at {offset:#x} (+{len:#x}) lies beyond end of file ({file_size:#x})")]
    BeyondEnd {
        /// What the structure is.
        what: &'static str,
        /// Its host offset.
        offset: u64,
        /// Its length.
        len: u64,
        /// The file size.
        file_size: u64,
        /// Truncated (a cut file) or format (a wild pointer).
        kind: ErrorKind,
    },
    /// The corrupt bit is set (D2).
    #[error("Image is marked corrupt")]
    Corrupt,
    /// A compressed cluster did not decompress to exactly one cluster.
    #[error("Compressed cluster at {offset:#x}: decompression failed ({reason})")]
    Decompression {
        /// Host offset of the compressed data.
        offset: u64,
        /// What went wrong.
        reason: String,
    },
    /// The image is encrypted.
    #[error("Encrypted images are not supported (crypt_method {method})")]
    Encrypted {
        /// The header's crypt_method.
        method: u32,
    },
    /// The image uses an external data file (G1: never opened).
    #[error("External data file {name:?} is not allowed")]
    ExternalDataFile {
        /// The name from the extension, escaped, or empty.
        name: String,
    },
    /// A header field has an invalid value.
    #[error("Invalid qcow2 {field} {value:#x}: {reason}")]
    InvalidField {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A structure overlaps image metadata (D6).
    #[error("{what} at {offset:#x} overlaps {other}")]
    Overlap {
        /// What the structure is.
        what: &'static str,
        /// Its host offset.
        offset: u64,
        /// What it overlaps.
        other: &'static str,
    },
    /// A bound on what the reader keeps was reached.
    #[error("qcow2 {what} exceeds the limit of {limit}")]
    Limit {
        /// What was counted.
        what: &'static str,
        /// The bound.
        limit: u64,
    },
    /// Reading the image failed.
    #[error("Reading qcow2 {what} at {offset:#x}")]
    Reading {
        /// What was being read.
        what: &'static str,
        /// Host offset.
        offset: u64,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Reserved bits are set in a table entry (D5).
    #[error("{what} {entry:#018x} has reserved bits set")]
    ReservedBits {
        /// The table.
        what: &'static str,
        /// The entry.
        entry: u64,
    },
    /// A pointer is not aligned as the format requires.
    #[error("{what} offset {offset:#x} is not cluster aligned")]
    Unaligned {
        /// What the pointer designates.
        what: &'static str,
        /// The offset.
        offset: u64,
    },
    /// A feature the reader does not implement.
    #[error("Unsupported qcow2 {what} {value}")]
    Unsupported {
        /// The feature.
        what: &'static str,
        /// Its value or name, escaped.
        value: String,
    },
    /// An unknown incompatible feature bit is set.
    #[error("Unsupported qcow2 feature: unknown incompatible feature bit {bit} ({name})")]
    UnknownIncompatible {
        /// The bit number.
        bit: u32,
        /// Its name from the feature table, escaped, or "unnamed".
        name: String,
    },
}

impl Classify for Qcow2Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Qcow2Error::BackingFile { .. } | Qcow2Error::ExternalDataFile { .. } => {
                ErrorKind::Unsafe
            }
            Qcow2Error::BeyondEnd { kind, .. } => *kind,
            Qcow2Error::Corrupt
            | Qcow2Error::Decompression { .. }
            | Qcow2Error::InvalidField { .. }
            | Qcow2Error::Overlap { .. }
            | Qcow2Error::ReservedBits { .. }
            | Qcow2Error::Unaligned { .. } => ErrorKind::Format,
            Qcow2Error::Encrypted { .. }
            | Qcow2Error::Unsupported { .. }
            | Qcow2Error::UnknownIncompatible { .. } => ErrorKind::Unsupported,
            Qcow2Error::Limit { .. } => ErrorKind::Limit,
            Qcow2Error::Reading { source, .. } => classify_io(source),
        }
    }
}

/// Checks that `[offset, offset + len)` lies inside a file of `file_size`
/// bytes. A structure cut by the end of the file, or starting within a
/// cluster past it, reads as a truncated download; anything else is a wild
/// pointer (format).
pub fn check_in_file(
    what: &'static str,
    offset: u64,
    len: u64,
    file_size: u64,
    cluster: u64,
) -> Result<(), Qcow2Error> {
    match offset.checked_add(len) {
        Some(end) if end <= file_size => Ok(()),
        _ => {
            let straddles = offset < file_size && len <= 2 * cluster;
            let just_past = offset >= file_size && offset - file_size < cluster;
            Err(Qcow2Error::BeyondEnd {
                what,
                offset,
                len,
                file_size,
                kind: if straddles || just_past {
                    ErrorKind::Truncated
                } else {
                    ErrorKind::Format
                },
            })
        }
    }
}
