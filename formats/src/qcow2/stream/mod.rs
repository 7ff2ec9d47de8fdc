//! The forward-only qcow2 reader: for images that arrive as a byte stream
//! (inside gz/xz/zst, on stdin, over HTTP without ranges), in one pass.
//!
//! ```text
//! stream --> [header][refcount table][refcount blocks][L1][L2][data..][L2][data..]
//!              parsed   parsed         skipped         parsed parsed  emitted in guest order
//! ```
//!
//! Extents still come out in guest order. Images written by `qemu-img
//! convert` keep every L2 table before the data it maps, so each data
//! cluster is emitted as it streams past and nothing is kept. Bytes that
//! stream past before anything says what they are (data written by a
//! running guest before its L2 table, snapshot tables, ...) go to a spill
//! file at their host offset, bounded by a limit, and are read back from
//! there when the mapping asks for them.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;

use super::compressed::Decompressor;
use super::error::Qcow2Error;
use super::header::{self, Header};
use super::map::{Geometry, MetaMap, Piece, Source};
use super::{
    decode_batch, header_meta, max_compressed_input, past_end, References, SNAPSHOT_FIXED,
};
use crate::extent::MAX_DATA_EXTENT;
use crate::raw::round_up_sector;
use crate::{ErrorKind, Extent, ExtentReader, FormatError};

mod fetch;
mod meta;
mod spill;

/// Shared last sectors carried in memory before they go to the spill file.
const MAX_CARRIED: usize = 4096;

/// Most data ranges remembered while the refcount table is still ahead in
/// the stream (they are checked against its blocks once it is parsed).
const MAX_CLAIMS: usize = 1 << 20;

/// Where spilled bytes go, and how many may.
#[derive(Debug, Clone)]
pub struct SpillOptions {
    /// Directory of the spill file (created only when something spills).
    pub dir: PathBuf,
    /// Most bytes kept in the spill area; past it the rest of the stream
    /// is spooled to the same directory and read back by random access.
    pub limit: u64,
}

impl Default for SpillOptions {
    fn default() -> Self {
        SpillOptions {
            dir: std::env::temp_dir(),
            limit: 256 << 20,
        }
    }
}

/// Host ranges kept in the spill file.
#[derive(Debug, Default)]
struct Spill {
    file: Option<File>,
    ranges: Vec<(u64, u64)>,
    bytes: u64,
}

/// What a host range streaming past is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    L1,
    RefcountTable,
    /// An L2 table (several L1 entries may share one).
    L2,
    /// The fixed part of a snapshot table entry; the number of entries
    /// left, this one included.
    Snapshot(u32),
    /// Metadata that is only stepped over (refcount blocks, the variable
    /// part of snapshot entries).
    Skip,
}

/// A qcow2 image read in one forward pass.
pub struct Qcow2Stream<R> {
    input: R,
    pos: u64,
    header: Header,
    geo: Geometry,
    cluster: u64,
    /// L2 table offsets per L1 index, once the L1 table streamed past.
    l1: Option<Vec<u64>>,
    /// Every L2 table offset, with the last L1 index that uses it.
    l2_last: HashMap<u64, usize>,
    /// Parsed L2 tables not yet passed by the output, by host offset.
    l2: HashMap<u64, Vec<u8>>,
    /// Their pointers by host offset: (host start, host end, guest offset
    /// inside the table's range), per table.
    rev: HashMap<u64, Vec<(u64, u64, u64)>>,
    /// L2 tables still ahead in the stream.
    l2_ahead: usize,
    /// The refcount table is still ahead: data ranges used until then are
    /// remembered, to be checked against its blocks (D6).
    claims: Option<Vec<(u64, u64)>>,
    /// Start of the snapshot table and the end of its last entry so far.
    snapshots: (u64, u64),
    /// The output is complete; what is left is only validated.
    finished: bool,
    /// The last metadata read from the stream, for tables that point back
    /// into it.
    last_meta: (u64, Vec<u8>),
    /// The last sector of the last data read: compressed clusters share
    /// sectors with the next one ("another compressed cluster may map to
    /// the tail of the final sector"), which reads it straight after.
    carry: std::collections::BTreeMap<u64, Vec<u8>>,
    /// The rest of the stream went to scratch (spill limit exceeded).
    spooled: bool,
    /// The last sector of the most recent data read. When it also holds
    /// the start of a compressed cluster of the next L2 range, whose table
    /// is still ahead (qemu packs compressed data across the range's end),
    /// that cluster is read from here.
    last_tail: (u64, Vec<u8>),
    /// Metadata still ahead in the stream: (host, len, role), in order.
    ahead: BTreeSet<(u64, u64, Role)>,
    meta: MetaMap,
    out: u64,
    padded_end: u64,
    spill: Spill,
    spill_opts: SpillOptions,
    decompressors: [Decompressor; 2],
    /// Data buffers handed back by the consumer (crate::pool).
    pool: Option<crate::pool::BufferPool>,
}

impl<R> std::fmt::Debug for Qcow2Stream<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qcow2Stream")
            .field("pos", &self.pos)
            .field("out", &self.out)
            .field("spilled", &self.spill.bytes)
            .finish_non_exhaustive()
    }
}

fn cut(what: &'static str, offset: u64, len: u64, at: u64) -> Qcow2Error {
    Qcow2Error::BeyondEnd {
        what,
        offset,
        len,
        file_size: at,
        kind: ErrorKind::Truncated,
    }
}

impl<R: Read> Qcow2Stream<R> {
    /// Reads the header from the start of `input` and prepares the pass.
    pub fn open(input: R, spill_opts: SpillOptions) -> Result<Self, Qcow2Error> {
        Self::open_with(input, spill_opts, References::Refuse)
    }

    /// [`Self::open`], with images that name another file refused or
    /// described.
    pub fn open_with(
        mut input: R,
        spill_opts: SpillOptions,
        refs: References,
    ) -> Result<Self, Qcow2Error> {
        let mut prefix = vec![0u8; 512];
        let got = read_full(&mut input, &mut prefix).map_err(|source| Qcow2Error::Reading {
            what: "header",
            offset: 0,
            source,
        })?;
        prefix.truncate(got);
        let cluster = header::cluster_size_of(&prefix)?;
        let mut first = prefix;
        if got == 512 {
            first.resize(cluster as usize, 0);
            let more =
                read_full(&mut input, &mut first[512..]).map_err(|source| Qcow2Error::Reading {
                    what: "header",
                    offset: 512,
                    source,
                })?;
            first.truncate(512 + more);
        }
        let header = header::parse(&first)?;
        if refs == References::Refuse {
            header.check_references()?;
        }
        let pos = first.len() as u64;
        let mut meta = header_meta(&header)?;
        let l1_bytes = u64::from(header.l1_size) * 8;
        let rt_len = u64::from(header.refcount_table_clusters) * cluster;
        let mut ahead = BTreeSet::new();
        ahead.insert((header.refcount_table_offset, rt_len, Role::RefcountTable));
        if header.l1_size > 0 {
            // Only its entries must be in the file (as random access checks
            // it); its padding to whole clusters is in the metadata map
            // (never data) through header_meta.
            ahead.insert((header.l1_table_offset, l1_bytes, Role::L1));
        }
        meta.seal();
        let snapshots = header.snapshots_offset;
        let nb_snapshots = header.nb_snapshots;
        let compression = header.compression;
        // The L1 and refcount tables lie past the header cluster (checked
        // above). The snapshot table may start in it: the header cluster
        // is carried so that anything pointing back into it can be read.
        let mut carry = std::collections::BTreeMap::new();
        carry.insert(0, first);
        let mut s = Qcow2Stream {
            geo: Geometry::of(&header),
            input,
            pos,
            cluster,
            l1: (header.l1_size == 0).then(Vec::new),
            l2_last: HashMap::new(),
            l2: HashMap::new(),
            rev: HashMap::new(),
            l2_ahead: 0,
            claims: Some(Vec::new()),
            snapshots: (snapshots, snapshots),
            finished: false,
            last_meta: (0, Vec::new()),
            carry,
            spooled: false,
            last_tail: (0, Vec::new()),
            ahead,
            meta,
            out: 0,
            padded_end: round_up_sector(header.size),
            header,
            spill: Spill::default(),
            spill_opts,
            pool: None,
            decompressors: [
                Decompressor::new(compression),
                Decompressor::new(compression),
            ],
        };
        if nb_snapshots > 0 {
            s.add_meta(snapshots, SNAPSHOT_FIXED, Role::Snapshot(nb_snapshots))?;
        }
        Ok(s)
    }

    /// Reuses data buffers: the consumer gives finished extents back
    /// through the returned handle (at most `depth` kept idle).
    pub fn recycle(&mut self, depth: usize) -> crate::pool::BufferReturn {
        crate::pool::BufferPool::install(&mut self.pool, depth)
    }

    /// The parsed header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Bytes kept in the spill file so far.
    pub fn spilled_bytes(&self) -> u64 {
        self.spill.bytes
    }

    /// Whether the rest of the stream was spooled to scratch.
    pub fn spooled(&self) -> bool {
        self.spooled
    }

    /// The piece at guest `g` (map.rs), or `None` while the L1 table or
    /// the range's L2 table is still ahead.
    fn piece_at(&mut self, g: u64) -> Result<Option<Piece>, Qcow2Error> {
        let Some(l1) = &self.l1 else { return Ok(None) };
        let l2_off = l1.get(self.geo.l1_index(g)).copied().unwrap_or(0);
        if l2_off == 0 {
            return Ok(Some(self.geo.unallocated(g)));
        }
        match self.l2.get(&l2_off) {
            Some(table) => Ok(Some(self.geo.piece(table, g)?)),
            None => Ok(None),
        }
    }

    fn check_data(&self, what: &'static str, host: u64, len: u64) -> Result<(), Qcow2Error> {
        self.meta.check_clear(what, host, len, self.cluster)
    }

    fn next(&mut self) -> Result<Option<Extent>, Qcow2Error> {
        let size = self.header.size;
        if let Some(tail) = past_end(&mut self.out, size, self.padded_end) {
            return Ok(tail);
        }
        let g = self.out;
        let first = loop {
            match self.piece_at(g)? {
                Some(p) => break p,
                None => {
                    // The L1 or this range's L2 table is still ahead:
                    // parse the next metadata in stream order.
                    match self.ahead.first() {
                        Some(&(off, _, _)) => {
                            self.advance_to(off)?;
                            self.take_group()?;
                        }
                        None => return Err(cut("L2 table", g, self.cluster, self.pos)),
                    }
                }
            }
        };
        // Join the pieces that follow, as far as their tables are known.
        let limit = match first.source {
            Source::Zero => u64::MAX,
            _ => MAX_DATA_EXTENT as u64,
        };
        let mut len = first.len;
        let mut pieces = vec![first];
        while g + len < size && len < limit {
            match self.piece_at(g + len)? {
                Some(p) if self.geo.joins(&first, len, &p, limit) => {
                    len += p.len;
                    // Only a compressed batch needs its pieces (at most
                    // MAX_DATA_EXTENT / cluster of them).
                    if matches!(p.source, Source::Compressed { .. }) {
                        pieces.push(p);
                    }
                }
                _ => break,
            }
        }
        let e = match first.source {
            Source::Zero => Extent::Zero { offset: g, len },
            Source::Data(host) => {
                self.check_data("Data cluster", host, len)?;
                let data = self.read_host("data cluster", host, len, g + len)?;
                Extent::Data {
                    offset: g,
                    data: data.freeze(),
                }
            }
            Source::Compressed { .. } => {
                // Read the batch in stream order, decode on two threads.
                let mut inputs = Vec::with_capacity(pieces.len());
                for p in &pieces {
                    let Source::Compressed { host, len: clen } = p.source else {
                        unreachable!("only compressed pieces join a compressed one")
                    };
                    let take = clen.min(max_compressed_input(self.cluster));
                    self.check_data("Compressed cluster", host, take)?;
                    let (mut input, got) =
                        self.read_host_short("compressed cluster", host, take, p.guest + p.len)?;
                    // The final sector of the last cluster may be cut short.
                    if got < take && (got == 0 || take - got >= 512) {
                        return Err(cut("Compressed cluster", host, take, host + got));
                    }
                    input.truncate(got as usize);
                    inputs.push(input);
                }
                let refs: Vec<&[u8]> = inputs.iter().map(|b| &b[..]).collect();
                let mut out = decode_batch(
                    &mut self.decompressors,
                    &refs,
                    self.cluster as usize,
                    self.pool.as_ref(),
                )
                .map_err(|(i, reason)| Qcow2Error::Decompression {
                    offset: match pieces[i].source {
                        Source::Compressed { host, .. } => host,
                        _ => 0,
                    },
                    reason,
                })?;
                // The last cluster may be clipped at the virtual size.
                out.truncate(len as usize);
                Extent::Data {
                    offset: g,
                    data: out.freeze(),
                }
            }
        };
        self.out = e.end();
        // L2 tables whose range the output has passed are not needed.
        let coverage = self.header.l2_coverage();
        let done = (self.out / coverage) as usize;
        let last = &self.l2_last;
        self.l2
            .retain(|t, _| last.get(t).is_some_and(|&i| i >= done));
        self.rev
            .retain(|t, _| last.get(t).is_some_and(|&i| i >= done));
        Ok(Some(e))
    }

    /// After the last extent: the metadata still ahead is read and checked
    /// (it must lie inside the file, as random access requires), then the
    /// rest of the stream, so checksums and decoders see every byte.
    fn finish(&mut self) -> Result<(), Qcow2Error> {
        self.finished = true;
        self.l2.clear();
        self.rev.clear();
        if self.spooled {
            self.parse_passed_ahead()?;
        }
        while let Some(&(off, len, _)) = self.ahead.first() {
            if self.spooled {
                return Err(cut("Metadata", off, len, self.pos));
            }
            self.advance_to(off)?;
            self.take_group()?;
        }
        let mut sink = [0u8; 64 << 10];
        loop {
            match self.input.read(&mut sink) {
                Ok(0) => return Ok(()),
                Ok(n) => self.pos += n as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(Qcow2Error::Reading {
                        what: "trailing clusters",
                        offset: self.pos,
                        source,
                    })
                }
            }
        }
    }
}

impl<R: Read> ExtentReader for Qcow2Stream<R> {
    fn virtual_size(&self) -> Option<u64> {
        Some(self.padded_end)
    }

    fn next_extent(&mut self) -> Result<Option<Extent>, FormatError> {
        let e = self.next()?;
        if e.is_none() && !self.finished {
            self.finish()?;
        }
        Ok(e)
    }
}

fn read_full(r: &mut (impl Read + ?Sized), buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
