//! The producer thread and the pump: extents flow from the reader the
//! router chose, through a bounded channel, into zero detection and the
//! sink (pipeline/mod.rs has the picture).

use std::io::Read;
use std::sync::mpsc::{sync_channel, Receiver};

use formats::extent::ZeroCoalescer;
use formats::qcow2::stream::Qcow2Stream;
use formats::qcow2::Qcow2Reader;
use formats::raw::{BufferReturn, Chunker};
use formats::read_at::ReadAt;
use formats::sink::Sink;
use formats::zero::split_zeroes;
use formats::{Extent, ExtentReader};
use sources::file::SparseFileChunks;
use sources::peek::PeekReader;

use crate::error::ImportError;

/// Extents in flight between producer and consumer: with 512 KiB chunks
/// this bounds the queue at 2 MiB whatever the image size.
const QUEUE: usize = 4;
/// The same for qcow2 and sparse files, whose data extents are up to 4 and
/// 2 MiB.
const QCOW2_QUEUE: usize = 2;

/// The forward stream a reader consumes.
pub(crate) type Stream = PeekReader<Box<dyn Read + Send>>;

/// Where the extents come from: the reader the router chose.
pub(crate) enum Producer {
    /// A local raw file, read hole-aware.
    Sparse(SparseFileChunks),
    /// Any byte stream (decompressed when needed).
    Stream(Chunker<Stream>),
    /// A qcow2 image read by random access (a local file, or HTTP ranges).
    Qcow2(Box<Qcow2Reader<Box<dyn ReadAt>>>),
    /// A qcow2 image read in one forward pass from a stream.
    Qcow2Stream(Box<Qcow2Stream<Stream>>),
}

impl Producer {
    /// How the image is read, for reports and logs.
    pub(crate) fn read_path(&self) -> &'static str {
        match self {
            Producer::Sparse(_) => "sparse file",
            Producer::Stream(_) | Producer::Qcow2Stream(_) => "stream",
            Producer::Qcow2(_) => "random access",
        }
    }

    pub(crate) fn next(&mut self) -> Result<Option<Extent>, ImportError> {
        match self {
            Producer::Sparse(chunks) => chunks.next_chunk().map_err(ImportError::reading),
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
    pub(crate) fn spawn(mut self) -> Spawned {
        // qcow2 extents are up to 4 MiB: a shorter queue keeps the same
        // bytes in flight as the raw path's 512 KiB chunks.
        let depth = match &self {
            Producer::Qcow2(_) | Producer::Qcow2Stream(_) | Producer::Sparse(_) => QCOW2_QUEUE,
            Producer::Stream(_) => QUEUE,
        };
        let recycle = match &mut self {
            // Queue plus the extents being filled and written.
            Producer::Stream(c) => Some(c.recycle(depth + 2)),
            Producer::Qcow2(r) => Some(r.recycle(depth + 2)),
            Producer::Qcow2Stream(r) => Some(r.recycle(depth + 2)),
            Producer::Sparse(c) => Some(c.recycle(depth + 2)),
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

/// What the output is held to (docs/targets.md, "Capacity").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capacity {
    /// The image's size may not pass this: a device, a requested size,
    /// preallocation, a CDI volume.
    Size(u64),
    /// The data written may not pass this: a sparse file on a filesystem
    /// with this much free space (holes take none).
    Data(u64),
}

/// A running producer.
pub(crate) struct Spawned {
    rx: Receiver<Result<Extent, ImportError>>,
    handle: std::thread::JoinHandle<()>,
    recycle: Option<BufferReturn>,
}

impl Spawned {
    /// Pumps everything into `sink`, then waits for the producer.
    pub(crate) fn run(
        self,
        sink: &mut impl Sink,
        capacity: Capacity,
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
    capacity: Capacity,
    target: &str,
) -> Result<PumpStats, ImportError> {
    let mut stats = PumpStats::default();
    let mut coalescer = ZeroCoalescer::default();
    let mut emit = |e: Extent| -> Result<(), ImportError> {
        match &e {
            Extent::Data { data, .. } => {
                stats.data_bytes += data.len() as u64;
                if let Capacity::Data(cap) = capacity {
                    if stats.data_bytes > cap {
                        return Err(ImportError::OutputTooLarge {
                            written: stats.data_bytes,
                            available: cap,
                        });
                    }
                }
            }
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
        if let Capacity::Size(cap) = capacity {
            if stats.end > cap {
                return Err(ImportError::OutputTooLarge {
                    written: stats.end,
                    available: cap,
                });
            }
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
