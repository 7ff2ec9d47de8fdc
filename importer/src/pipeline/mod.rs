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

use std::path::PathBuf;
use std::sync::Arc;

use formats::qcow2::stream::SpillOptions;
use formats::qcow2::References;
use formats::raw::round_up_sector;
use formats::sink::Sink;
use formats::{Extent, ExtentReader, FormatError};
use sources::http::{HttpCounts, HttpOptions};
use sources::layers::SourceFormat;
use sources::meter::{Checksum, Meter};
use sources::registry::{ImageFacts, ImageRef, Wanted};
use sources::source::{OpenOptions, Source, SourceSpec};

use crate::error::ImportError;
use crate::progress::ProgressBar;
use crate::sink::{self, Preallocation, SinkOptions};

mod pump;
mod route;

use pump::Producer;
pub use pump::{Capacity, PumpStats};
pub use route::QcowFacts;
use route::{route, Want};

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
    /// How to fetch http(s) sources and registries.
    pub http: HttpOptions,
    /// The platform to pull from a multi-platform image.
    pub wanted: Wanted,
    /// Progress for a metric endpoint (CDI's progress counter).
    pub progress_state: Option<Arc<crate::progress::ProgressState>>,
    /// Milestones a caller waits on (the upload server's async answer).
    pub milestones: Option<Arc<Milestones>>,
}

/// How far a conversion got, for callers that answer before it ends (the
/// upload server's async routes, docs/upload.md "Async").
#[derive(Debug, Default)]
pub struct Milestones {
    sized: std::sync::atomic::AtomicBool,
    produced: std::sync::atomic::AtomicBool,
}

impl Milestones {
    /// The image's size is known and fits the target (a qcow2 header, or a
    /// raw body of known length): refused up front otherwise.
    pub fn sized(&self) -> bool {
        self.sized.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Every extent was produced and handed to the sink within capacity;
    /// what is left is flushing, verifying and resizing.
    pub fn produced(&self) -> bool {
        self.produced.load(std::sync::atomic::Ordering::SeqCst)
    }
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
    /// What was pulled, for image sources.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageFacts>,
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

/// Converts `opts.source` into `opts.target`.
pub fn convert(opts: &ConvertOptions) -> Result<Report, ImportError> {
    let spec = SourceSpec::parse(&opts.source)?;
    match &spec {
        SourceSpec::File(p) => sink::refuse_source_as_target(Some(p), &opts.target)?,
        SourceSpec::Stdin => sink::refuse_source_as_target(None, &opts.target)?,
        SourceSpec::Image(ImageRef::OciArchive { path, .. }) => {
            sink::refuse_source_as_target(Some(path), &opts.target)?;
        }
        SourceSpec::Http(_) | SourceSpec::Image(_) | SourceSpec::Body(_) => {}
    }
    let open = OpenOptions {
        http: opts.http.clone(),
        wanted: opts.wanted.clone(),
    };
    let source = Source::open(spec, &open, opts.checksum.as_ref())?;
    convert_source(source, opts)
}

/// Converts an opened `source` into `opts.target` (`opts.source` is not
/// looked at): the upload server hands its request bodies in here.
pub fn convert_source(mut source: Source, opts: &ConvertOptions) -> Result<Report, ImportError> {
    let want = Want {
        format: opts.source_format,
        spill: opts.spill.clone(),
        refs: References::Refuse,
    };
    let prepared = route(&mut source, &want)?;
    for w in &prepared.warnings {
        tracing::warn!("{w}.");
    }
    let meter = source.meter().clone();
    if let Some(i) = source.image() {
        tracing::info!(
            image = %i.reference,
            manifest = %i.manifest_digest,
            platform = %i.platform.shown(),
            layer = %i.layer,
            file = %formats::text::escape(&i.file),
            "Image resolved"
        );
    }
    tracing::info!(
        layers = %prepared.layers,
        virtual_size = ?prepared.virtual_size,
        source_size = ?source.length(),
        read_path = prepared.producer.read_path(),
        "Source opened"
    );
    let info = sink::inspect(&opts.target, opts.target_size)?;
    // A sparse file with no size asked of it only needs room for its data
    // (as qemu-img): a 2 TiB image holding a few MiB fits a small disk.
    // Anything that must hold the whole image is checked up front
    // (docs/targets.md, "Capacity").
    let whole = opts.target_size.is_some()
        || opts.preallocation != Preallocation::Off
        || info.kind == sink::TargetKind::Block;
    let capacity = if whole {
        if let Some(size) = prepared.virtual_size {
            if size > info.capacity {
                return Err(ImportError::TooLarge {
                    virtual_size: size,
                    available: info.capacity,
                });
            }
        }
        Capacity::Size(info.capacity)
    } else {
        Capacity::Data(info.capacity)
    };
    let target = formats::text::escape(&opts.target.display().to_string());
    let sink_opts = SinkOptions {
        preallocation: opts.preallocation,
        target_size: opts.grow_to,
        zero_tail: opts.zero_tail,
    };
    let (sink, guard) = sink::open(&info, sink_opts)?;
    if let (Some(m), Some(_)) = (&opts.milestones, prepared.virtual_size) {
        m.sized.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    // Declared after the guard so it is dropped (and its writes finished)
    // before the guard cleans up after a failure.
    let mut sink = sink;
    if let Some(size) = prepared.virtual_size {
        sink.begin(size)
            .map_err(|e| ImportError::writing(&target, e))?;
    }
    let _bar = opts
        .progress
        .then(|| ProgressBar::start(meter.clone(), source.length()));
    if let Some(p) = &opts.progress_state {
        p.attach(meter.clone(), source.length());
    }
    let read_path = prepared.producer.read_path();
    let stats = prepared
        .producer
        .spawn()
        .run(&mut sink, capacity, &target)?;
    if let Some(m) = &opts.milestones {
        m.produced.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    // A raw file whose length is not a multiple of 512 gets a zero tail
    // from the Chunker; the sparse path pads here (TD12).
    let size = round_up_sector(stats.end);
    meter.verify()?;
    let applied = sink
        .finish(size)
        .map_err(|e| ImportError::writing(&target, e))?;
    guard.disarm();
    Ok(Report {
        layers: prepared.layers,
        virtual_size: size,
        data_bytes: stats.data_bytes,
        zero_bytes: stats.zero_bytes + (size - stats.end),
        source_bytes: meter.bytes(),
        preallocation_applied: applied,
        warnings: prepared.warnings,
        read_path,
        http: source.http().map(|c| c.stats().into()),
        image: source.image().cloned(),
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
    /// The container image, for image sources.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageFacts>,
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
        image: None,
    }
}

/// Inspects a source without writing anything.
pub fn info(
    source: &str,
    format: SourceFormat,
    open: &OpenOptions,
) -> Result<InfoReport, ImportError> {
    let mut source = Source::open(SourceSpec::parse(source)?, open, None)?;
    let image = source.image().cloned();
    let mut report = info_of(&mut source, format)?;
    report.image = image;
    Ok(report)
}

fn info_of(source: &mut Source, format: SourceFormat) -> Result<InfoReport, ImportError> {
    let want = Want {
        format,
        spill: SpillOptions::default(),
        refs: References::Describe,
    };
    let prepared = route(source, &want)?;
    let meter = source.meter().clone();
    let layers = prepared
        .layers
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
            &meter,
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
            &meter,
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
            &meter,
            prepared.virtual_size,
            stats.data_bytes,
            facts,
        ));
    }
    let stats = prepared
        .producer
        .spawn()
        .run(&mut CountingSink, Capacity::Size(u64::MAX), "-")?;
    let size = round_up_sector(stats.end);
    Ok(InfoReport {
        format: layers.last().cloned().unwrap_or_default(),
        layers,
        virtual_size: size,
        allocated_bytes: stats.data_bytes,
        zero_bytes: stats.zero_bytes + (size - stats.end),
        source_bytes: meter.bytes(),
        qcow2: None,
        image: None,
    })
}
