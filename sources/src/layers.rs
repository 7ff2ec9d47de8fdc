//! Peeling the layer stack of a source: detect by magic, remove at most one
//! compression layer (D9), detect again, and refuse what must not be
//! imported as raw (G2).

use std::io::Read;

use formats::probe::{detect, PROBE_LEN};
use formats::{FormatError, Probe};

use crate::decode::decoder;
use crate::peek::PeekReader;
use crate::SourceError;

/// What the user says the source is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SourceFormat {
    /// Decide from the content (the default, and CDI's behaviour).
    #[default]
    Auto,
    /// Copy the bytes as they are, without decompression (D7).
    Raw,
    /// Expect qcow2 (after decompression).
    Qcow2,
}

/// Options for [`open_layers`].
#[derive(Debug, Clone)]
pub struct LayerOptions {
    /// What the user says the source is.
    pub format: SourceFormat,
    /// Threads for the xz decoder.
    pub xz_threads: u32,
}

impl Default for LayerOptions {
    fn default() -> Self {
        LayerOptions {
            format: SourceFormat::Auto,
            xz_threads: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        }
    }
}

/// A source with its compression removed and its format detected.
pub struct Opened {
    /// The compression layer removed, if any.
    pub compression: Option<Probe>,
    /// The format of the decoded stream.
    pub format: Probe,
    /// The decoded stream, positioned at its start.
    pub reader: PeekReader<Box<dyn Read + Send>>,
    /// Things the user should know (D7 warnings).
    pub warnings: Vec<String>,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("compression", &self.compression)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

impl Opened {
    /// The layers, outermost first, e.g. `xz -> qcow2`.
    pub fn describe(&self) -> String {
        match self.compression {
            Some(c) => format!("{} -> {}", c.name(), self.format.name()),
            None => self.format.name().to_string(),
        }
    }
}

/// Errors from [`open_layers`].
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// A byte-plane error.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// A format error (unsupported or unexpected format).
    #[error(transparent)]
    Format(#[from] FormatError),
}

impl formats::error::Classify for LayerError {
    fn kind(&self) -> formats::ErrorKind {
        match self {
            LayerError::Source(e) => e.kind(),
            LayerError::Format(e) => e.kind(),
        }
    }
}

fn probe<R: Read>(r: &mut PeekReader<R>) -> Result<Probe, SourceError> {
    Ok(detect(r.peek(PROBE_LEN).map_err(SourceError::Reading)?))
}

/// Refuses an image format (found under any compression) that is not
/// imported: a recognised unsupported format (G2), a qcow version other
/// than 2 or 3, anything but qcow2 when qcow2 was insisted on. Readers
/// that skip [`open_layers`] (random access) call this on what they found.
pub fn check_format(format: Probe, wanted: SourceFormat) -> Result<(), FormatError> {
    if format.is_unsupported() {
        return Err(FormatError::UnsupportedFormat {
            format: format.name(),
        });
    }
    if let Probe::Qcow { version } = format {
        if version != 2 && version != 3 {
            return Err(FormatError::UnsupportedVersion { version });
        }
    }
    if wanted == SourceFormat::Qcow2 && !matches!(format, Probe::Qcow { .. }) {
        return Err(FormatError::NotExpectedFormat {
            expected: "qcow2",
            found: format.name(),
        });
    }
    Ok(())
}

/// Detects and removes the layers of `input`.
pub fn open_layers(input: Box<dyn Read + Send>, opts: &LayerOptions) -> Result<Opened, LayerError> {
    let mut outer = PeekReader::new(input);
    let first = probe(&mut outer)?;
    if opts.format == SourceFormat::Raw {
        let mut warnings = Vec::new();
        if first != Probe::Raw {
            warnings.push(format!(
                "Source carries a {} signature but is copied as raw, as asked",
                first.name()
            ));
        }
        return Ok(Opened {
            compression: None,
            format: Probe::Raw,
            reader: PeekReader::new(Box::new(outer)),
            warnings,
        });
    }
    let (compression, mut reader) = if first.is_compression() {
        let d = decoder(first, outer, opts.xz_threads).map_err(SourceError::Reading)?;
        (Some(first), PeekReader::new(d))
    } else {
        (
            None,
            PeekReader::new(Box::new(outer) as Box<dyn Read + Send>),
        )
    };
    let format = if compression.is_some() {
        probe(&mut reader)?
    } else {
        first
    };
    if let (Some(outer), true) = (compression, format.is_compression()) {
        return Err(SourceError::NestedCompression {
            outer: outer.name(),
            inner: format.name(),
        }
        .into());
    }
    check_format(format, opts.format)?;
    Ok(Opened {
        compression,
        format,
        reader,
        warnings: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use formats::error::Classify;
    use formats::ErrorKind;
    use std::io::{Cursor, Write};

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn open(v: Vec<u8>, format: SourceFormat) -> Result<Opened, LayerError> {
        let opts = LayerOptions {
            format,
            xz_threads: 1,
        };
        open_layers(Box::new(Cursor::new(v)), &opts)
    }

    #[test]
    fn gzip_inside_gzip_is_nested_compression() {
        let e = open(gz(&gz(b"x")), SourceFormat::Auto).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(e.to_string().contains("nested compression"), "{e}");
    }

    #[test]
    fn explicit_raw_keeps_compressed_bytes_and_warns() {
        let v = gz(b"x");
        let mut o = open(v.clone(), SourceFormat::Raw).unwrap();
        assert_eq!(o.warnings.len(), 1);
        let mut out = Vec::new();
        o.reader.read_to_end(&mut out).unwrap();
        assert_eq!(out, v);
    }

    #[test]
    fn qcow_version_1_is_unsupported() {
        let mut v = b"QFI\xfb\x00\x00\x00\x01".to_vec();
        v.resize(512, 0);
        let e = open(v, SourceFormat::Auto).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(e.to_string().contains("qcow2 version 1"), "{e}");
    }

    #[test]
    fn expecting_qcow2_on_raw_is_a_format_error() {
        let e = open(vec![0; 1024], SourceFormat::Qcow2).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Format);
        assert!(e.to_string().contains("not a qcow2 image"), "{e}");
    }
}
