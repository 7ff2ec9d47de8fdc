//! The router: one decision table from what the source is to the reader
//! that reads it (docs/sources.md, "Routing"), for `convert`, `info` and
//! `import`.
//!
//! | format (first bytes) | compressed | random access | checksum | reader |
//! | --- | --- | --- | --- | --- |
//! | qcow2 | no | yes | no | qcow2 random access (local file, HTTP ranges) |
//! | qcow2 | any other case | | | qcow2 one-pass stream |
//! | raw | no | local regular file | no | hole-aware file chunks |
//! | raw | any other case | | | stream chunker |
//! | anything else | | | | refused (or copied as is with `--source-format raw`) |
//!
//! A checksum needs every byte once, in order: it always takes a stream.
//! The source is read exactly one way, so no byte is metered twice.

use formats::probe::{detect, PROBE_LEN};
use formats::qcow2::stream::{Qcow2Stream, SpillOptions};
use formats::qcow2::{Qcow2Reader, References};
use formats::raw::{round_up_sector, Chunker};
use formats::read_at::ReadAt;
use formats::{ExtentReader, FormatError, Probe};
use sources::layers::{check_format, open_layers, LayerOptions, SourceFormat};
use sources::source::Source;

use super::pump::{Producer, Stream};
use crate::error::ImportError;

/// How to read a source, as the router decided.
pub(crate) struct Routed {
    /// The layers, e.g. `xz -> qcow2`.
    pub layers: String,
    pub warnings: Vec<String>,
    pub producer: Producer,
    /// Known before reading the data: uncompressed raw of known length,
    /// qcow2.
    pub virtual_size: Option<u64>,
    /// Header facts when the image is qcow2.
    pub qcow2: Option<QcowFacts>,
}

/// What the caller wants from the image.
#[derive(Debug, Clone, Default)]
pub(crate) struct Want {
    pub format: SourceFormat,
    pub spill: SpillOptions,
    pub refs: References,
}

/// Chooses the reader for `source` and opens it.
pub(crate) fn route(source: &mut Source, want: &Want) -> Result<Routed, ImportError> {
    let first = detect(source.peek(PROBE_LEN)?);
    let hashing = source.meter().is_hashing();
    let trusted = want.format != SourceFormat::Raw;
    match first {
        Probe::Qcow { .. } if trusted && !hashing && source.has_random_access() => {
            check_format(first, want.format)?;
            let src = source.take_random()?.expect("random access was offered");
            let (producer, size, facts) = qcow2_random(src, want.refs)?;
            return Ok(Routed {
                layers: first.name().into(),
                warnings: Vec::new(),
                producer,
                virtual_size: size,
                qcow2: Some(facts),
            });
        }
        Probe::Raw
            if want.format == SourceFormat::Auto && !hashing && source.has_sparse_reads() =>
        {
            let chunks = source
                .take_sparse()?
                .expect("hole-aware reads were offered");
            return Ok(Routed {
                layers: first.name().into(),
                warnings: Vec::new(),
                producer: Producer::Sparse(chunks),
                virtual_size: source.length().map(round_up_sector),
                qcow2: None,
            });
        }
        _ => {}
    }
    let opts = LayerOptions {
        format: want.format,
        ..LayerOptions::default()
    };
    let mut opened = open_layers(Box::new(source.take_stream()?), &opts)?;
    let mut warnings = std::mem::take(&mut opened.warnings);
    let layers = opened.describe();
    let plain = opened.compression.is_none();
    match opened.format {
        Probe::Raw => {
            if source.is_remote() && want.format != SourceFormat::Raw && plain {
                check_http_raw(source, &mut opened.reader, &mut warnings)?;
            }
            Ok(Routed {
                layers,
                warnings,
                producer: Producer::Stream(Chunker::new(opened.reader)),
                virtual_size: source.length().filter(|_| plain).map(round_up_sector),
                qcow2: None,
            })
        }
        Probe::Qcow { .. } => {
            let (producer, size, facts) = qcow2_stream(opened.reader, want)?;
            Ok(Routed {
                layers,
                warnings,
                producer,
                virtual_size: size,
                qcow2: Some(facts),
            })
        }
        other => Err(FormatError::UnsupportedFormat {
            format: other.name(),
        }
        .into()),
    }
}

/// A raw body over HTTP: refuse an HTML page (D13) and warn where a
/// truncation could not be seen (H09) or the server calls it HTML.
fn check_http_raw(
    source: &Source,
    reader: &mut Stream,
    warnings: &mut Vec<String>,
) -> Result<(), ImportError> {
    let head = reader
        .peek(formats::probe::PROBE_LEN)
        .map_err(ImportError::reading)?;
    if looks_like_html(source.content_type(), head) {
        return Err(FormatError::HtmlPage.into());
    }
    if source.length().is_none() && !source.meter().is_hashing() {
        // H09: without a length or a checksum a cut-off raw body looks
        // like a complete one.
        warnings.push(
            "Server sent no Content-Length: a truncated raw download cannot be detected (give --checksum to verify it)".into(),
        );
    }
    if let Some(t) = source.content_type() {
        // CDI warns on text/*; text/plain is many servers' default type
        // for unknown extensions (.qcow2), so only HTML is worth a word.
        if t.trim_start().to_ascii_lowercase().starts_with("text/html") {
            warnings.push(format!(
                "Server says the content is {:?}",
                formats::text::escape(t)
            ));
        }
    }
    Ok(())
}

/// qcow2 read by random access from `src` (a local file or HTTP ranges):
/// the producer, the virtual size and the header facts.
fn qcow2_random(
    src: Box<dyn ReadAt>,
    refs: References,
) -> Result<(Producer, Option<u64>, QcowFacts), ImportError> {
    let r = Qcow2Reader::open_with(src, refs).map_err(FormatError::from)?;
    let facts = QcowFacts::of(r.header());
    let size = r.virtual_size();
    Ok((Producer::Qcow2(Box::new(r)), size, facts))
}

/// qcow2 read in one forward pass from `reader`.
fn qcow2_stream(
    reader: Stream,
    want: &Want,
) -> Result<(Producer, Option<u64>, QcowFacts), ImportError> {
    let stream =
        Qcow2Stream::open_with(reader, want.spill.clone(), want.refs).map_err(FormatError::from)?;
    let mut facts = QcowFacts::of(stream.header());
    facts.path = "stream";
    let size = stream.virtual_size();
    Ok((Producer::Qcow2Stream(Box::new(stream)), size, facts))
}

/// D13: an HTML page served instead of an image (a login or error page).
fn looks_like_html(content_type: Option<&str>, head: &[u8]) -> bool {
    let html = content_type.is_some_and(|t| {
        let t = t.trim_start().to_ascii_lowercase();
        t.starts_with("text/html") || t.starts_with("application/xhtml")
    });
    let first = head.iter().find(|b| !b.is_ascii_whitespace());
    html && first == Some(&b'<')
}

/// qcow2 facts for `info`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QcowFacts {
    /// Header version (2 or 3).
    pub version: u32,
    /// Cluster size in bytes.
    pub cluster_size: u64,
    /// Compression type of compressed clusters.
    pub compression_type: &'static str,
    /// Features present.
    pub features: Vec<&'static str>,
    /// Guest bytes in plain data clusters.
    pub data_bytes: u64,
    /// Guest bytes in compressed clusters.
    pub compressed_bytes: u64,
    /// Guest bytes that read as zero.
    pub zero_bytes: u64,
    /// How the image was read: "random access" or "stream".
    pub path: &'static str,
    /// Bytes the stream path kept in its spill file.
    pub spilled_bytes: u64,
    /// The backing file the image names, escaped (never opened).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backing_file: Option<String>,
    /// The external data file the image needs, escaped (never opened).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_file: Option<String>,
    /// Why `convert` and `import` would refuse the image, if they would.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused_on_import: Option<String>,
}

impl QcowFacts {
    pub(crate) fn of(h: &formats::qcow2::Header) -> Self {
        QcowFacts {
            version: h.version,
            cluster_size: h.cluster_size(),
            compression_type: h.compression.name(),
            features: h.feature_names(),
            data_bytes: 0,
            compressed_bytes: 0,
            zero_bytes: 0,
            path: "random access",
            spilled_bytes: 0,
            backing_file: h.backing_file.clone(),
            data_file: h.data_file.clone(),
            refused_on_import: h.check_references().err().map(|e| e.to_string()),
        }
    }
}
