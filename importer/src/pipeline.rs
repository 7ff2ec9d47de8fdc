//! The conversion pipeline: one pass, bounded memory, both cores busy.
//!
//! ```text
//! producer thread                          bounded channel      consumer (this thread)
//! source -> meter -> decoder -> Chunker  ==[QUEUE x 512 KiB]==>  split_zeroes -> coalesce -> Sink
//!   or: sparse local file (SEEK_DATA)                          capacity check, ordering check
//! ```
//!
//! The producer does the reading and decompression (xz adds its own
//! threads); the consumer does zero detection and the writes. Everything
//! that can refuse the import (format, size) runs before the target is
//! created, so a refused import leaves no trace (G5).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

use formats::extent::ZeroCoalescer;
use formats::qcow2::stream::{Qcow2Stream, SpillOptions};
use formats::qcow2::{Qcow2Reader, References};
use formats::raw::{round_up_sector, BufferReturn, Chunker};
use formats::read_at::{PrefetchFile, ReadAt};
use formats::sink::Sink;
use formats::zero::split_zeroes;
use formats::{Extent, ExtentReader, FormatError, Probe};
use sources::file::{LocalSource, SparseFileChunks};
use sources::http::{HttpClient, HttpCounts, HttpOptions};
use sources::layers::{open_layers, LayerOptions, Opened, SourceFormat};
use sources::meter::{Checksum, Meter, MeteredReader};
use sources::peek::PeekReader;

use crate::error::ImportError;
use crate::progress::ProgressBar;
use crate::sink::{self, Preallocation, SinkOptions};

/// Extents in flight between producer and consumer: with 512 KiB chunks
/// this bounds the queue at 2 MiB whatever the image size.
const QUEUE: usize = 4;
/// The same for qcow2, whose data extents are up to 4 MiB.
const QCOW2_QUEUE: usize = 2;

/// What to convert, and how.
#[derive(Debug, Clone, Default)]
pub struct ConvertOptions {
    /// A path, or `-` for standard input.
    pub source: String,
    /// The target file or block device.
    pub target: PathBuf,
    /// What the user says the source is.
    pub source_format: SourceFormat,
    /// Space allocation policy.
    pub preallocation: Preallocation,
    /// What the image may take (else the free space of a file's
    /// filesystem, or a device's size).
    pub target_size: Option<u64>,
    /// File targets: grow to this size, never shrink.
    pub grow_to: Option<u64>,
    /// Expected checksum of the source bytes.
    pub checksum: Option<Checksum>,
    /// Block targets: zero past the image too (D16).
    pub zero_tail: bool,
    /// Show a progress bar.
    pub progress: bool,
    /// Where the qcow2 stream path may spill, and how much.
    pub spill: SpillOptions,
    /// How to fetch http(s) sources.
    pub http: HttpOptions,
    /// Progress for a metric endpoint (CDI's progress counter).
    pub progress_state: Option<Arc<crate::progress::ProgressState>>,
}

/// What a successful conversion did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    /// The layers, e.g. `xz -> raw`.
    pub layers: String,
    /// Size of the written image in bytes.
    pub virtual_size: u64,
    /// Bytes written as data.
    pub data_bytes: u64,
    /// Bytes that read as zero (holes or zeroed ranges).
    pub zero_bytes: u64,
    /// Source bytes read.
    pub source_bytes: u64,
    /// Whether preallocation was applied.
    pub preallocation_applied: bool,
    /// Warnings for the user.
    pub warnings: Vec<String>,
    /// How the image was read: "sparse file", "stream", "random access".
    pub read_path: &'static str,
    /// What the HTTP source did, for http(s) sources.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpReport>,
}

/// Counters of an HTTP download.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct HttpReport {
    /// Requests sent.
    pub requests: u64,
    /// Failed attempts that were retried.
    pub retries: u64,
    /// Broken bodies continued with a range request.
    pub resumes: u64,
    /// Body bytes received.
    pub fetched_bytes: u64,
    /// Body bytes received a second time.
    pub refetched_bytes: u64,
}

impl From<HttpCounts> for HttpReport {
    fn from(c: HttpCounts) -> Self {
        HttpReport {
            requests: c.requests,
            retries: c.retries,
            resumes: c.resumes,
            fetched_bytes: c.fetched_bytes,
            refetched_bytes: c.refetched_bytes,
        }
    }
}

/// Where the extents come from.
enum Producer {
    /// A local raw file, read hole-aware.
    Sparse(SparseFileChunks, Arc<Meter>),
    /// Any byte stream (decompressed when needed).
    Stream(Chunker<PeekReader<Box<dyn Read + Send>>>),
    /// A qcow2 image read by random access (a local file, or HTTP ranges).
    Qcow2(Box<Qcow2Reader<Box<dyn ReadAt>>>),
    /// A qcow2 image read in one forward pass from a stream.
    Qcow2Stream(Box<Qcow2Stream<PeekReader<Box<dyn Read + Send>>>>),
}

impl Producer {
    fn next(&mut self) -> Result<Option<Extent>, ImportError> {
        match self {
            Producer::Sparse(chunks, meter) => {
                let e = chunks.next_chunk().map_err(ImportError::reading)?;
                if let Some(e) = &e {
                    meter.advance(e.len());
                }
                Ok(e)
            }
            Producer::Stream(c) => Ok(c.next_chunk()?),
            Producer::Qcow2(r) => Ok(r.next_extent()?),
            Producer::Qcow2Stream(r) => {
                let e = r.next_extent()?;
                if e.is_none() {
                    if r.spooled() {
                        tracing::warn!(
                            spilled = r.spilled_bytes(),
                            "qcow2 layout needed more than the spill area: the rest was spooled to scratch."
                        );
                    } else {
                        tracing::info!(spilled = r.spilled_bytes(), "qcow2 streamed in one pass.");
                    }
                }
                Ok(e)
            }
        }
    }

    /// Runs the producer on its own thread.
    fn spawn(mut self) -> Spawned {
        // qcow2 extents are up to 4 MiB: a shorter queue keeps the same
        // bytes in flight as the raw path's 512 KiB chunks.
        let depth = match &self {
            Producer::Qcow2(_) | Producer::Qcow2Stream(_) => QCOW2_QUEUE,
            Producer::Stream(_) | Producer::Sparse(..) => QUEUE,
        };
        let recycle = match &mut self {
            // Queue plus the extents being filled and written.
            Producer::Stream(c) => Some(c.recycle(depth + 2)),
            Producer::Qcow2(r) => Some(r.recycle(depth + 2)),
            Producer::Sparse(..) | Producer::Qcow2Stream(_) => None,
        };
        let (tx, rx) = sync_channel(depth);
        let handle = std::thread::Builder::new()
            .name("producer".into())
            .spawn(move || loop {
                match self.next() {
                    Ok(Some(e)) => {
                        if tx.send(Ok(e)).is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            })
            .expect("spawning the producer thread");
        Spawned {
            rx,
            handle,
            recycle,
        }
    }
}

/// A running producer.
struct Spawned {
    rx: Receiver<Result<Extent, ImportError>>,
    handle: std::thread::JoinHandle<()>,
    recycle: Option<BufferReturn>,
}

impl Spawned {
    /// Pumps everything into `sink`, then waits for the producer.
    fn run(
        self,
        sink: &mut impl Sink,
        capacity: u64,
        target: &str,
    ) -> Result<PumpStats, ImportError> {
        let result = pump(self.rx, self.recycle, sink, capacity, target);
        // The receiver is gone: the producer stops at its next send.
        self.handle
            .join()
            .map_err(|_| ImportError::Internal("the producer thread panicked".into()))?;
        result
    }
}

/// Counts of what [`pump`] wrote.
#[derive(Debug, Default, Clone, Copy)]
pub struct PumpStats {
    /// End of the last extent: the image size.
    pub end: u64,
    /// Bytes written as data.
    pub data_bytes: u64,
    /// Bytes of zero extents.
    pub zero_bytes: u64,
}

/// Moves every extent from `rx` into `sink`, splitting out zero blocks and
/// merging zero runs; fails when the output passes `capacity`.
fn pump(
    rx: Receiver<Result<Extent, ImportError>>,
    recycle: Option<BufferReturn>,
    sink: &mut impl Sink,
    capacity: u64,
    target: &str,
) -> Result<PumpStats, ImportError> {
    let mut stats = PumpStats::default();
    let mut coalescer = ZeroCoalescer::default();
    let mut emit = |e: Extent| -> Result<(), ImportError> {
        match &e {
            Extent::Data { data, .. } => stats.data_bytes += data.len() as u64,
            Extent::Zero { len, .. } => stats.zero_bytes += len,
        }
        sink.write_extent(&e)
            .map_err(|err| ImportError::writing(target, err))
    };
    for item in rx {
        let extent = item?;
        if extent.offset() != stats.end {
            return Err(ImportError::Internal(format!(
                "extent at {} does not follow {}",
                extent.offset(),
                stats.end
            )));
        }
        stats.end = extent.end();
        if stats.end > capacity {
            return Err(ImportError::OutputTooLarge {
                written: stats.end,
                available: capacity,
            });
        }
        match extent {
            Extent::Data { offset, data } => {
                split_zeroes(offset, &data, &mut |e| coalescer.push(e, &mut emit))?;
                if let Some(r) = &recycle {
                    r.give(data);
                }
            }
            zero => coalescer.push(zero, &mut emit)?,
        }
    }
    coalescer.flush(&mut emit)?;
    Ok(stats)
}

/// A source opened, its layers peeled, and the way to read it chosen.
struct Prepared {
    opened_layers: String,
    warnings: Vec<String>,
    producer: Producer,
    /// Known before reading the data: a local uncompressed raw file, qcow2.
    virtual_size: Option<u64>,
    /// Header facts when the image is qcow2.
    qcow2: Option<QcowFacts>,
    meter: Arc<Meter>,
    source_size: Option<u64>,
    /// The HTTP client, for its counters.
    http: Option<HttpClient>,
}

impl Prepared {
    fn read_path(&self) -> &'static str {
        match &self.producer {
            Producer::Sparse(..) => "sparse file",
            Producer::Stream(_) => "stream",
            Producer::Qcow2(_) => "random access",
            Producer::Qcow2Stream(_) => "stream",
        }
    }
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
    reader: PeekReader<Box<dyn Read + Send>>,
    spill: SpillOptions,
    refs: References,
) -> Result<(Producer, Option<u64>, QcowFacts), ImportError> {
    let stream = Qcow2Stream::open_with(reader, spill, refs).map_err(FormatError::from)?;
    let facts = QcowFacts::of(stream.header());
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

fn prepare_http(
    source: &str,
    format: SourceFormat,
    checksum: Option<&Checksum>,
    spill: SpillOptions,
    refs: References,
    http: &HttpOptions,
) -> Result<Prepared, ImportError> {
    let (client, res, body) = sources::http::open_url(source, http.clone())?;
    let meter = Meter::new(checksum);
    let reader = MeteredReader::new(body, meter.clone());
    let opts = LayerOptions {
        format,
        ..LayerOptions::default()
    };
    let mut opened: Opened = open_layers(Box::new(reader), &opts)?;
    let mut warnings = std::mem::take(&mut opened.warnings);
    if format != SourceFormat::Raw && opened.format == Probe::Raw && opened.compression.is_none() {
        let head = opened
            .reader
            .peek(formats::probe::PROBE_LEN)
            .map_err(ImportError::reading)?;
        if looks_like_html(res.content_type.as_deref(), head) {
            return Err(FormatError::HtmlPage.into());
        }
        if res.length.is_none() && checksum.is_none() {
            // H09: without a length or a checksum a cut-off raw body looks
            // like a complete one.
            warnings.push(
                "Server sent no Content-Length: a truncated raw download cannot be detected (give --checksum to verify it)".into(),
            );
        }
    }
    if let Some(t) = res.content_type.as_deref() {
        // CDI warns on text/*; text/plain is many servers' default type
        // for unknown extensions (.qcow2), so only HTML is worth a word.
        if t.trim_start().to_ascii_lowercase().starts_with("text/html") {
            warnings.push(format!(
                "Server says the content is {:?}",
                formats::text::escape(t)
            ));
        }
    }
    let layers = opened.describe();
    let plain = opened.compression.is_none();
    let (producer, virtual_size, qcow2) = match opened.format {
        Probe::Raw => {
            let size = res.length.filter(|_| plain).map(round_up_sector);
            (Producer::Stream(Chunker::new(opened.reader)), size, None)
        }
        Probe::Qcow { .. } if plain && res.random_access() && !meter.is_hashing() => {
            // Random access by range requests; the stream opened for
            // detection is closed. A checksum needs every byte once, in
            // order, so it takes the stream path below.
            drop(opened);
            meter.reset_count();
            let (p, size, facts) =
                qcow2_random(Box::new(client.ranges(&res, Some(meter.clone()))), refs)?;
            (p, size, Some(facts))
        }
        Probe::Qcow { .. } => {
            let (p, size, facts) = qcow2_stream(opened.reader, spill, refs)?;
            (p, size, Some(facts))
        }
        other => {
            return Err(FormatError::UnsupportedFormat {
                format: other.name(),
            }
            .into())
        }
    };
    Ok(Prepared {
        opened_layers: layers,
        warnings,
        producer,
        virtual_size,
        qcow2,
        meter,
        source_size: res.length,
        http: Some(client),
    })
}

fn prepare(
    source: &str,
    format: SourceFormat,
    checksum: Option<&Checksum>,
    spill: SpillOptions,
    refs: References,
    http: &HttpOptions,
) -> Result<Prepared, ImportError> {
    if sources::http::is_url(source) {
        return prepare_http(source, format, checksum, spill, refs, http);
    }
    if let Some(scheme) = sources::http::scheme_of(source) {
        return Err(ImportError::Usage(format!(
            "Unsupported source scheme {:?}: http, https, a path or - are accepted",
            formats::text::escape(scheme)
        )));
    }
    let local = LocalSource::open(source)?;
    let meter = Meter::new(checksum);
    let reader = MeteredReader::new(local.reader().map_err(ImportError::reading)?, meter.clone());
    let opts = LayerOptions {
        format,
        ..LayerOptions::default()
    };
    let mut opened: Opened = open_layers(Box::new(reader), &opts)?;
    let layers = opened.describe();
    let plain_file = local.is_regular && opened.compression.is_none();
    let source_size = local.size;
    if let Probe::Qcow { .. } = opened.format {
        let (producer, virtual_size, facts) = match (&local.file, plain_file) {
            (Some(f), true) => {
                if meter.is_hashing() {
                    // Random access bypasses the stream: hash the file
                    // first, so a mismatch refuses the import before the
                    // target exists.
                    std::io::copy(&mut opened.reader, &mut std::io::sink())
                        .map_err(ImportError::reading)?;
                    meter.verify()?;
                }
                let f = f.try_clone().map_err(ImportError::reading)?;
                qcow2_random(
                    Box::new(PrefetchFile::new(f).map_err(ImportError::reading)?),
                    refs,
                )?
            }
            _ => qcow2_stream(opened.reader, spill, refs)?,
        };
        return Ok(Prepared {
            opened_layers: layers,
            warnings: opened.warnings,
            virtual_size,
            qcow2: Some(facts),
            producer,
            meter,
            source_size,
            http: None,
        });
    }
    if opened.format != Probe::Raw {
        return Err(FormatError::UnsupportedFormat {
            format: opened.format.name(),
        }
        .into());
    }
    let virtual_size = if plain_file {
        local.size.map(round_up_sector)
    } else {
        None
    };
    let producer = match (&local.file, local.size) {
        (Some(f), Some(size)) if plain_file && !meter.is_hashing() => {
            // Hole-aware reads; the peeked prefix is simply not used.
            let f = f.try_clone().map_err(ImportError::reading)?;
            meter.reset_count();
            Producer::Sparse(
                SparseFileChunks::new(f, size).map_err(ImportError::reading)?,
                meter.clone(),
            )
        }
        _ => Producer::Stream(Chunker::new(opened.reader)),
    };
    Ok(Prepared {
        opened_layers: layers,
        warnings: opened.warnings,
        producer,
        virtual_size,
        qcow2: None,
        meter,
        source_size,
        http: None,
    })
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
    fn of(h: &formats::qcow2::Header) -> Self {
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

/// Converts `opts.source` into `opts.target`.
pub fn convert(opts: &ConvertOptions) -> Result<Report, ImportError> {
    if !sources::http::is_url(&opts.source) {
        let local = (opts.source != "-").then(|| Path::new(&opts.source));
        sink::refuse_source_as_target(local, &opts.target)?;
    }
    let prepared = prepare(
        &opts.source,
        opts.source_format,
        opts.checksum.as_ref(),
        opts.spill.clone(),
        References::Refuse,
        &opts.http,
    )?;
    for w in &prepared.warnings {
        tracing::warn!("{w}.");
    }
    tracing::info!(
        layers = %prepared.opened_layers,
        virtual_size = ?prepared.virtual_size,
        source_size = ?prepared.source_size,
        read_path = prepared.read_path(),
        "Source opened"
    );
    let info = sink::inspect(&opts.target, opts.target_size)?;
    if let Some(size) = prepared.virtual_size {
        if size > info.capacity {
            return Err(ImportError::TooLarge {
                virtual_size: size,
                available: info.capacity,
            });
        }
    }
    let target = formats::text::escape(&opts.target.display().to_string());
    let sink_opts = SinkOptions {
        preallocation: opts.preallocation,
        target_size: opts.grow_to,
        zero_tail: opts.zero_tail,
    };
    let (sink, guard) = sink::open(&info, sink_opts)?;
    // Declared after the guard so it is dropped (and its writes finished)
    // before the guard cleans up after a failure.
    let mut sink = sink;
    if let Some(size) = prepared.virtual_size {
        sink.begin(size)
            .map_err(|e| ImportError::writing(&target, e))?;
    }
    let _bar = opts
        .progress
        .then(|| ProgressBar::start(prepared.meter.clone(), prepared.source_size));
    if let Some(p) = &opts.progress_state {
        p.attach(prepared.meter.clone(), prepared.source_size);
    }
    let read_path = prepared.read_path();
    let stats = prepared
        .producer
        .spawn()
        .run(&mut sink, info.capacity, &target)?;
    // A raw file whose length is not a multiple of 512 gets a zero tail
    // from the Chunker; the sparse path pads here (D12).
    let size = round_up_sector(stats.end);
    prepared.meter.verify()?;
    let applied = sink
        .finish(size)
        .map_err(|e| ImportError::writing(&target, e))?;
    guard.disarm();
    Ok(Report {
        layers: prepared.opened_layers,
        virtual_size: size,
        data_bytes: stats.data_bytes,
        zero_bytes: stats.zero_bytes + (size - stats.end),
        source_bytes: prepared.meter.bytes(),
        preallocation_applied: applied,
        warnings: prepared.warnings,
        read_path,
        http: prepared.http.as_ref().map(|c| c.stats().into()),
    })
}

/// What `info` reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InfoReport {
    /// The layers, outermost first, e.g. `["xz", "raw"]`.
    pub layers: Vec<String>,
    /// The image format after decompression.
    pub format: String,
    /// Virtual size in bytes (raw: the length rounded up to 512).
    pub virtual_size: u64,
    /// Bytes that hold data.
    pub allocated_bytes: u64,
    /// Bytes that read as zero.
    pub zero_bytes: u64,
    /// Source bytes read.
    pub source_bytes: u64,
    /// qcow2 details, when the image is qcow2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qcow2: Option<QcowFacts>,
}

/// A sink that only counts.
struct CountingSink;

impl Sink for CountingSink {
    fn write_data(&mut self, _offset: u64, _data: &[u8]) -> std::io::Result<()> {
        Ok(())
    }

    fn write_zeroes(&mut self, _offset: u64, _len: u64) -> std::io::Result<()> {
        Ok(())
    }
}

fn qcow2_report(
    layers: Vec<String>,
    meter: &Meter,
    virtual_size: Option<u64>,
    allocated: u64,
    facts: QcowFacts,
) -> InfoReport {
    let size = virtual_size.unwrap_or(0);
    InfoReport {
        format: layers.last().cloned().unwrap_or_default(),
        layers,
        virtual_size: size,
        allocated_bytes: allocated,
        zero_bytes: size.saturating_sub(allocated),
        source_bytes: meter.bytes(),
        qcow2: Some(facts),
    }
}

/// Inspects a source without writing anything.
pub fn info(
    source: &str,
    format: SourceFormat,
    http: &HttpOptions,
) -> Result<InfoReport, ImportError> {
    let prepared = prepare(
        source,
        format,
        None,
        SpillOptions::default(),
        References::Describe,
        http,
    )?;
    let layers = prepared
        .opened_layers
        .split(" -> ")
        .map(str::to_owned)
        .collect::<Vec<_>>();
    let facts = prepared.qcow2.as_ref();
    if facts.is_some_and(|f| f.data_file.is_some()) {
        // Data clusters live in the other file: the header is all there is
        // to describe, and the data file is never opened.
        let facts = facts.cloned().expect("checked");
        return Ok(qcow2_report(
            layers,
            &prepared.meter,
            prepared.virtual_size,
            0,
            facts,
        ));
    }
    if let Producer::Qcow2(mut r) = prepared.producer {
        // The mapping alone answers: no data is read or decompressed.
        let stats = r.map_summary().map_err(FormatError::from)?;
        let mut facts = prepared.qcow2.expect("qcow2 facts with a qcow2 producer");
        facts.data_bytes = stats.data_bytes;
        facts.compressed_bytes = stats.compressed_bytes;
        facts.zero_bytes = stats.zero_bytes;
        let allocated = stats.data_bytes + stats.compressed_bytes;
        return Ok(qcow2_report(
            layers,
            &prepared.meter,
            prepared.virtual_size,
            allocated,
            facts,
        ));
    }
    if let Producer::Qcow2Stream(mut r) = prepared.producer {
        // A stream can only be mapped by reading it through.
        let mut stats = PumpStats::default();
        while let Some(e) = r.next_extent()? {
            match e {
                Extent::Data { data, .. } => stats.data_bytes += data.len() as u64,
                Extent::Zero { len, .. } => stats.zero_bytes += len,
            }
        }
        let mut facts = prepared.qcow2.expect("qcow2 facts with a qcow2 producer");
        facts.path = if r.spooled() {
            "stream, then scratch"
        } else {
            "stream"
        };
        facts.spilled_bytes = r.spilled_bytes();
        facts.data_bytes = stats.data_bytes;
        facts.zero_bytes = stats.zero_bytes;
        return Ok(qcow2_report(
            layers,
            &prepared.meter,
            prepared.virtual_size,
            stats.data_bytes,
            facts,
        ));
    }
    let stats = prepared
        .producer
        .spawn()
        .run(&mut CountingSink, u64::MAX, "-")?;
    let size = round_up_sector(stats.end);
    Ok(InfoReport {
        format: layers.last().cloned().unwrap_or_default(),
        layers,
        virtual_size: size,
        allocated_bytes: stats.data_bytes,
        zero_bytes: stats.zero_bytes + (size - stats.end),
        source_bytes: prepared.meter.bytes(),
        qcow2: None,
    })
}
