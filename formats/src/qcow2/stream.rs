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
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use bytes::BytesMut;

use super::compressed::Decompressor;
use super::error::Qcow2Error;
use super::header::{self, Header};
use super::table::{decode_l1, decode_l2, decode_refcount_entry, L2Entry};
use super::{
    check_snapshot_table_len, decode_batch, header_meta, max_compressed_input, past_end,
    snapshot_entry_len, MetaMap, References, SNAPSHOT_FIXED,
};
use crate::extent::MAX_DATA_EXTENT;
use crate::raw::round_up_sector;
use crate::{ErrorKind, Extent, ExtentReader, FormatError};

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

fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().expect("8 bytes"))
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

    /// The parsed header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Bytes kept in the spill file so far.
    pub fn spilled_bytes(&self) -> u64 {
        self.spill.bytes
    }

    /// Notes metadata at `[off, off + len)`: parsed when the stream gets
    /// there, or now from what was kept if it already streamed past.
    fn add_meta(&mut self, off: u64, len: u64, role: Role) -> Result<(), Qcow2Error> {
        // Anything not wholly behind is read (the part still ahead must be
        // in the file, as random access requires).
        if off + len > self.pos || self.spooled {
            if role == Role::L2 && self.ahead.insert((off, len, role)) {
                self.l2_ahead += 1;
            } else {
                self.ahead.insert((off, len, role));
            }
            return Ok(());
        }
        if role == Role::Skip || (role == Role::L2 && self.finished) {
            // Streamed past: it is inside the file, and nothing reads it.
            return Ok(());
        }
        let bytes = self.read_spilled("metadata", off, len)?;
        self.parse_meta(role, off, &bytes)
    }

    fn parse_meta(&mut self, role: Role, off: u64, bytes: &[u8]) -> Result<(), Qcow2Error> {
        let cluster = self.cluster;
        match role {
            Role::RefcountTable => {
                let claims = self.claims.take().unwrap_or_default();
                let claims = merge(claims);
                for e in bytes.chunks_exact(8).map(be64) {
                    let Some(e) = decode_refcount_entry(e, cluster)? else {
                        continue;
                    };
                    // What random access refuses because it reads this
                    // table first: L2 tables and data on a refcount block.
                    if self.l2_last.contains_key(&e) {
                        return Err(Qcow2Error::Overlap {
                            what: "L2 table",
                            offset: e,
                            other: "a refcount block",
                        });
                    }
                    if let Some(&(h, _)) = claims
                        .get(claims.partition_point(|c| c.1 <= e))
                        .filter(|c| c.0 < e + cluster)
                    {
                        return Err(Qcow2Error::Overlap {
                            what: "Data cluster",
                            offset: h.max(e),
                            other: "a refcount block",
                        });
                    }
                    self.meta.add(e, cluster, "a refcount block");
                    self.add_meta(e, cluster, Role::Skip)?;
                }
                self.meta.seal();
            }
            Role::L1 => {
                let entries = self.header.l1_size as usize;
                let mut l1 = Vec::with_capacity(entries);
                for e in bytes.chunks_exact(8).take(entries).map(be64) {
                    let l2 = decode_l1(e, cluster)?.unwrap_or(0);
                    if l2 != 0 {
                        if let Some(other) = self.meta.overlap(l2, cluster) {
                            return Err(Qcow2Error::Overlap {
                                what: "L2 table",
                                offset: l2,
                                other,
                            });
                        }
                        self.l2_last.insert(l2, l1.len());
                    }
                    l1.push(l2);
                }
                let mut tables: Vec<u64> = self.l2_last.keys().copied().collect();
                tables.sort_unstable();
                self.l1 = Some(l1);
                for l2 in tables {
                    self.meta.add(l2, cluster, "an L2 table");
                    // Streamed past before the L1 said what it was: read
                    // from the spill file.
                    self.add_meta(l2, cluster, Role::L2)?;
                }
                self.meta.seal();
            }
            Role::L2 => {
                if !self.finished {
                    self.index_l2(off, bytes);
                    self.l2.insert(off, bytes.to_vec());
                }
            }
            Role::Snapshot(left) => {
                let unpadded = snapshot_entry_len(bytes);
                let start = self.snapshots.0;
                self.snapshots.1 = off + unpadded;
                let next = off + unpadded.div_ceil(8) * 8;
                check_snapshot_table_len(next - start)?;
                if unpadded > SNAPSHOT_FIXED {
                    self.add_meta(off + SNAPSHOT_FIXED, unpadded - SNAPSHOT_FIXED, Role::Skip)?;
                }
                if left > 1 {
                    self.add_meta(next, SNAPSHOT_FIXED, Role::Snapshot(left - 1))?;
                } else {
                    // The whole table is known: what random access refuses
                    // because it walks it first.
                    let end = self.snapshots.1;
                    let lo = start.saturating_sub(cluster - 1);
                    if let Some(&l2) = self.l2_last.keys().find(|&&t| t >= lo && t < end) {
                        return Err(Qcow2Error::Overlap {
                            what: "L2 table",
                            offset: l2,
                            other: "the snapshot table",
                        });
                    }
                    self.meta.add(start, end - start, "the snapshot table");
                    self.meta.seal();
                }
            }
            Role::Skip => {}
        }
        Ok(())
    }

    fn spill_file(&mut self) -> Result<&File, Qcow2Error> {
        if self.spill.file.is_none() {
            let f = tempfile::tempfile_in(&self.spill_opts.dir).map_err(|source| {
                Qcow2Error::Reading {
                    what: "spill file",
                    offset: 0,
                    source,
                }
            })?;
            self.spill.file = Some(f);
        }
        Ok(self.spill.file.as_ref().expect("just created"))
    }

    fn keep(&mut self, off: u64, bytes: &[u8]) -> Result<(), Qcow2Error> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.spill.bytes += bytes.len() as u64;
        let f = self.spill_file()?;
        f.write_all_at(bytes, off)
            .map_err(|source| Qcow2Error::Reading {
                what: "spill file",
                offset: off,
                source,
            })?;
        match self.spill.ranges.last_mut() {
            Some(last) if last.1 == off => last.1 += bytes.len() as u64,
            _ => self.spill.ranges.push((off, off + bytes.len() as u64)),
        }
        if self.spill.bytes > self.spill_opts.limit && !self.spooled {
            self.spool_rest()?;
        }
        Ok(())
    }

    /// The spill area is full: copy the rest of the stream to scratch and
    /// finish by random access over it (every later read is then served
    /// from the spill file).
    fn spool_rest(&mut self) -> Result<(), Qcow2Error> {
        self.spooled = true;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let at = self.pos;
            let got = self.read_stream_short(&mut buf, "stream")?;
            if got == 0 {
                break;
            }
            self.spill.bytes += got as u64;
            let f = self.spill_file()?;
            f.write_all_at(&buf[..got], at)
                .map_err(|source| Qcow2Error::Reading {
                    what: "spill file",
                    offset: at,
                    source,
                })?;
            match self.spill.ranges.last_mut() {
                Some(last) if last.1 == at => last.1 += got as u64,
                _ => self.spill.ranges.push((at, at + got as u64)),
            }
        }
        self.parse_passed_ahead()
    }

    /// Parses metadata that the stream already passed (after spooling).
    fn parse_passed_ahead(&mut self) -> Result<(), Qcow2Error> {
        while let Some(&(off, len, role)) = self.ahead.first() {
            if off >= self.pos {
                break;
            }
            self.pop_ahead();
            if off + len > self.pos {
                return Err(cut("Metadata", off, len, self.pos));
            }
            if role == Role::Skip {
                continue;
            }
            let bytes = self.read_spilled("metadata", off, len)?;
            self.parse_meta(role, off, &bytes)?;
        }
        Ok(())
    }

    fn pop_ahead(&mut self) -> Option<(u64, u64, Role)> {
        let a = self.ahead.pop_first()?;
        if a.2 == Role::L2 {
            self.l2_ahead -= 1;
        }
        Some(a)
    }

    /// Reads the first metadata ahead (the stream is at or past its start)
    /// together with every entry overlapping it, and parses them. Tables
    /// may overlap where the format allows it (a refcount block on the L1
    /// table): each is parsed from the same bytes.
    fn take_group(&mut self) -> Result<(), Qcow2Error> {
        let Some(first) = self.pop_ahead() else {
            return Ok(());
        };
        let start = first.0;
        let mut end = first.0 + first.1;
        let mut group = vec![first];
        while let Some(&(off, len, _)) = self.ahead.first() {
            if off >= end.max(self.pos) {
                break;
            }
            end = end.max(off + len);
            group.extend(self.pop_ahead());
        }
        let behind_end = self.pos.min(end);
        let mut bytes = if start < behind_end {
            match self.read_spilled("metadata", start, behind_end - start) {
                Ok(b) => b,
                // Only skipped ranges start behind: their bytes are unused.
                Err(_) if group.iter().all(|g| g.2 == Role::Skip || g.0 >= behind_end) => {
                    vec![0; (behind_end - start) as usize]
                }
                Err(e) => return Err(e),
            }
        } else {
            Vec::new()
        };
        if end > self.pos {
            let have = bytes.len();
            bytes.resize((end - start) as usize, 0);
            self.read_stream(&mut bytes[have..], "metadata")?;
        }
        for &(off, len, role) in &group {
            if role != Role::Skip {
                let from = (off - start) as usize;
                let slice = bytes[from..from + len as usize].to_vec();
                self.last_meta = (start, bytes);
                self.parse_meta(role, off, &slice)?;
                bytes = std::mem::take(&mut self.last_meta.1);
            }
        }
        self.last_meta = (start, bytes);
        Ok(())
    }

    /// Whether the rest of the stream was spooled to scratch.
    pub fn spooled(&self) -> bool {
        self.spooled
    }

    /// Bytes that already streamed past, from the carried sectors and the
    /// spill file.
    fn read_spilled(
        &mut self,
        what: &'static str,
        off: u64,
        len: u64,
    ) -> Result<Vec<u8>, Qcow2Error> {
        let end = off + len;
        let mut buf = vec![0u8; len as usize];
        let mut pos = off;
        while pos < end {
            let dst = (pos - off) as usize;
            let mut kept = None;
            for (ts, t) in [&self.last_tail, &self.last_meta] {
                if *ts <= pos && pos < ts + t.len() as u64 {
                    let n = ((ts + t.len() as u64).min(end) - pos) as usize;
                    let from = (pos - ts) as usize;
                    buf[dst..dst + n].copy_from_slice(&t[from..from + n]);
                    kept = Some(n);
                    break;
                }
            }
            if let Some(n) = kept {
                pos += n as u64;
                continue;
            }
            if let Some((&cs, c)) = self.carry.range(..=pos).next_back() {
                let ce = cs + c.len() as u64;
                if pos < ce {
                    let n = (ce.min(end) - pos) as usize;
                    let from = (pos - cs) as usize;
                    buf[dst..dst + n].copy_from_slice(&c[from..from + n]);
                    pos += n as u64;
                    continue;
                }
            }
            let Some(&(_, se)) = self
                .spill
                .ranges
                .iter()
                .find(|&&(s, e)| s <= pos && pos < e)
            else {
                return Err(Qcow2Error::InvalidField {
                    field: what,
                    value: off,
                    reason: "needed after it streamed past and was not kept (data before its L2 table that was discarded, or a backwards pointer)",
                });
            };
            let n = (se.min(end) - pos) as usize;
            let f = self.spill.file.as_ref().expect("ranges imply a file");
            f.read_exact_at(&mut buf[dst..dst + n], pos)
                .map_err(|source| Qcow2Error::Reading {
                    what: "spill file",
                    offset: pos,
                    source,
                })?;
            pos += n as u64;
        }
        Ok(buf)
    }

    /// Streams forward to `target`, parsing metadata on the way and
    /// spilling bytes whose meaning is not known yet.
    fn advance_to(&mut self, target: u64) -> Result<(), Qcow2Error> {
        if self.spooled {
            self.parse_passed_ahead()?;
            if target > self.pos {
                return Err(cut("Image", target, 0, self.pos));
            }
            return Ok(());
        }
        while self.pos < target {
            if self.ahead.first().is_some_and(|a| a.0 <= self.pos) {
                self.take_group()?;
                continue;
            }
            let next_meta = self.ahead.first().map_or(u64::MAX, |a| a.0);
            let stop = target.min(next_meta);
            let n = (stop - self.pos).min(MAX_DATA_EXTENT as u64);
            let mut buf = vec![0u8; n as usize];
            let at = self.pos;
            self.read_stream(&mut buf, "data")?;
            if self.may_be_needed(at, n) {
                self.keep(at, &buf)?;
            }
        }
        Ok(())
    }

    /// Whether bytes at a host range could still be asked for: while the
    /// L1 or some L2 table is still ahead anything could, afterwards only
    /// what a known L2 entry points into.
    fn may_be_needed(&self, at: u64, len: u64) -> bool {
        // Table padding (the rest of the L1 table's cluster) is never data.
        if self.finished || self.meta.covers(at, len) {
            return false;
        }
        if self.l1.is_none() || self.l2_ahead > 0 {
            return true;
        }
        self.referenced(at, len, self.out, u64::MAX)
    }

    /// Whether a known L2 entry for a guest offset at or past `from_guest`
    /// points into `[at, at + len)`, not counting entries that start at or
    /// after `carried` (they only share the last sector, which is carried).
    fn referenced(&self, at: u64, len: u64, from_guest: u64, carried: u64) -> bool {
        let end = at + len;
        // Compressed data spans at most two clusters past its start.
        let lo = at.saturating_sub(max_compressed_input(self.cluster));
        let coverage = self.header.l2_coverage();
        self.rev.iter().any(|(t, v)| {
            // The last guest range this table maps (shared tables, Q65).
            let base = self.l2_last.get(t).map_or(0, |&i| i as u64 * coverage);
            let i = v.partition_point(|r| r.0 < lo);
            v[i..]
                .iter()
                .take_while(|r| r.0 < end)
                .any(|r| r.1 > at && base + r.2 >= from_guest && r.0 < carried)
        })
    }

    /// Indexes an L2 table's pointers by host offset; guest offsets are
    /// relative to the start of the range the table maps.
    fn index_l2(&mut self, off: u64, table: &[u8]) {
        let eb = self.header.l2_entry_bytes() as usize;
        let (v, bits) = (self.header.version, self.header.cluster_bits);
        let mut rev: Vec<(u64, u64, u64)> = table
            .chunks_exact(eb)
            .enumerate()
            .filter_map(|(k, e)| {
                let guest = k as u64 * self.cluster;
                let bitmap = (eb == 16).then(|| be64(&e[8..]));
                match decode_l2(be64(e), bitmap, v, bits) {
                    Ok(L2Entry::Data { host }) => Some((host, host + self.cluster, guest)),
                    Ok(L2Entry::Subclusters { host, alloc, .. }) if alloc != 0 => {
                        Some((host, host + self.cluster, guest))
                    }
                    Ok(L2Entry::Compressed { host, len }) => Some((host, host + len, guest)),
                    _ => None,
                }
            })
            .collect();
        rev.sort_unstable();
        self.rev.insert(off, rev);
    }

    fn read_stream(&mut self, buf: &mut [u8], what: &'static str) -> Result<(), Qcow2Error> {
        let at = self.pos;
        let got = self.read_stream_short(buf, what)?;
        if got < buf.len() {
            return Err(cut("Stream", at, buf.len() as u64, at + got as u64));
        }
        Ok(())
    }

    /// Reads up to `buf.len()` bytes; fewer only at the end of the stream.
    fn read_stream_short(
        &mut self,
        buf: &mut [u8],
        what: &'static str,
    ) -> Result<usize, Qcow2Error> {
        let at = self.pos;
        let got = read_full(&mut self.input, buf).map_err(|source| Qcow2Error::Reading {
            what,
            offset: at,
            source,
        })?;
        self.pos += got as u64;
        Ok(got)
    }

    /// Bytes at `[host, host + len)`: from the spill file for what already
    /// streamed past, from the stream for the rest.
    fn read_host(
        &mut self,
        what: &'static str,
        host: u64,
        len: u64,
        guest_end: u64,
    ) -> Result<BytesMut, Qcow2Error> {
        let (out, got) = self.read_host_short(what, host, len, guest_end)?;
        if got < len {
            return Err(cut("Stream", host, len, host + got));
        }
        Ok(out)
    }

    /// As [`Self::read_host`], but the stream may end early; returns the
    /// buffer and how many bytes are valid.
    /// `guest_end` ends the guest range being produced: bytes that a guest
    /// offset past it also maps are kept (shared clusters, Q65).
    fn read_host_short(
        &mut self,
        what: &'static str,
        host: u64,
        len: u64,
        guest_end: u64,
    ) -> Result<(BytesMut, u64), Qcow2Error> {
        if let Some(claims) = &mut self.claims {
            if claims.len() >= MAX_CLAIMS {
                *claims = merge(std::mem::take(claims));
                if claims.len() >= MAX_CLAIMS / 2 {
                    return Err(Qcow2Error::Limit {
                        what: "data ranges read before the refcount table",
                        limit: MAX_CLAIMS as u64,
                    });
                }
            }
            claims.push((host, host + len));
        }
        let mut out = BytesMut::zeroed(len as usize);
        let behind = self.pos.saturating_sub(host).min(len);
        if behind > 0 {
            let b = self.read_spilled(what, host, behind)?;
            out[..behind as usize].copy_from_slice(&b);
        }
        if behind < len {
            self.advance_to(host + behind)?;
            let at = self.pos;
            // Data on metadata still ahead (a refcount block, the snapshot
            // table) is refused as random access refuses it (D6).
            if let Some(&(off, _, role)) = self.ahead.first() {
                if off < host + len {
                    return Err(Qcow2Error::Overlap {
                        what,
                        offset: host,
                        other: match role {
                            Role::L1 => "the active L1 table",
                            Role::RefcountTable => "the refcount table",
                            Role::L2 => "an L2 table",
                            Role::Snapshot(_) => "the snapshot table",
                            Role::Skip => "metadata",
                        },
                    });
                }
            }
            let got = self.read_stream_short(&mut out[behind as usize..], what)?;
            // Shared clusters (Q65): keep what a later guest offset maps to.
            let fresh = &out[behind as usize..behind as usize + got];
            let after = guest_end.div_ceil(self.cluster) * self.cluster;
            let tail = got.min(512);
            let tail_start = at + (got - tail) as u64;
            self.last_tail = (tail_start, fresh[got - tail..].to_vec());
            if self.referenced(at, got as u64, after, tail_start) {
                let fresh = fresh.to_vec();
                self.keep(at, &fresh)?;
            } else if self.referenced(tail_start, tail as u64, after, u64::MAX) {
                // Only a shared last sector: carry it in memory.
                let t = fresh[got - tail..].to_vec();
                self.carry.insert(tail_start, t);
                if self.carry.len() > MAX_CARRIED {
                    if let Some((off, t)) = self.carry.pop_first() {
                        self.keep(off, &t)?;
                    }
                }
            }
            return Ok((out, behind + got as u64));
        }
        Ok((out, len))
    }

    /// The mapping at guest `g`: (length, entry), or `None` while the L2
    /// table is still ahead.
    fn entry_at(&mut self, g: u64) -> Result<Option<(u64, L2Entry)>, Qcow2Error> {
        let coverage = self.header.l2_coverage();
        let i = (g / coverage) as usize;
        let Some(l1) = &self.l1 else { return Ok(None) };
        let l2_off = l1.get(i).copied().unwrap_or(0);
        if l2_off == 0 {
            let end = ((i as u64 + 1) * coverage).min(self.header.size);
            return Ok(Some((end - g, L2Entry::Zero)));
        }
        let Some(table) = self.l2.get(&l2_off) else {
            return Ok(None);
        };
        let eb = self.header.l2_entry_bytes() as usize;
        let idx = ((g % coverage) / self.cluster) as usize;
        let e = &table[idx * eb..(idx + 1) * eb];
        let ext = self.header.extended_l2();
        let entry = decode_l2(
            be64(e),
            ext.then(|| be64(&e[8..])),
            self.header.version,
            self.header.cluster_bits,
        )?;
        let rest = (self.cluster - g % self.cluster).min(self.header.size - g);
        Ok(Some((rest, entry)))
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
        let (len, entry) = loop {
            match self.entry_at(g)? {
                Some(x) => break x,
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
        let in_cluster = g % self.cluster;
        let e = match entry {
            L2Entry::Zero => {
                let mut len = len;
                // Merge following zero entries whose tables are known.
                while g + len < size {
                    match self.entry_at(g + len)? {
                        Some((l, L2Entry::Zero)) => len += l,
                        _ => break,
                    }
                }
                Extent::Zero { offset: g, len }
            }
            L2Entry::Data { host } => {
                // Extend over host-contiguous data whose tables are known.
                let host = host + in_cluster;
                let mut len = len;
                while g + len < size && len < MAX_DATA_EXTENT as u64 {
                    match self.entry_at(g + len)? {
                        Some((l, L2Entry::Data { host: h }))
                            if h == host + len && len + l <= MAX_DATA_EXTENT as u64 =>
                        {
                            len += l;
                        }
                        _ => break,
                    }
                }
                self.check_data("Data cluster", host, len)?;
                let data = self.read_host("data cluster", host, len, g + len)?;
                Extent::Data {
                    offset: g,
                    data: data.freeze(),
                }
            }
            L2Entry::Compressed { host, len: clen } => {
                // Gather the compressed clusters that follow in guest order
                // (their tables known), read them in stream order, decode
                // them on two threads.
                let mut batch = vec![(g, len, host, clen)];
                let mut end = g + len;
                while end < size && end - g + self.cluster <= MAX_DATA_EXTENT as u64 {
                    match self.entry_at(end)? {
                        Some((l, L2Entry::Compressed { host, len })) => {
                            batch.push((end, l, host, len));
                            end += l;
                        }
                        _ => break,
                    }
                }
                let mut inputs = Vec::with_capacity(batch.len());
                for &(cg, clen_guest, host, clen) in &batch {
                    let take = clen.min(max_compressed_input(self.cluster));
                    self.check_data("Compressed cluster", host, take)?;
                    let (mut input, got) =
                        self.read_host_short("compressed cluster", host, take, cg + clen_guest)?;
                    // The final sector of the last cluster may be cut short.
                    if got < take && (got == 0 || take - got >= 512) {
                        return Err(cut("Compressed cluster", host, take, host + got));
                    }
                    input.truncate(got as usize);
                    inputs.push(input);
                }
                let refs: Vec<&[u8]> = inputs.iter().map(|b| &b[..]).collect();
                let mut out = decode_batch(&mut self.decompressors, &refs, self.cluster as usize)
                    .map_err(|(i, reason)| Qcow2Error::Decompression {
                    offset: batch[i].2,
                    reason,
                })?;
                // The last cluster may be clipped at the virtual size.
                out.truncate((end - g) as usize);
                Extent::Data {
                    offset: g,
                    data: out.freeze(),
                }
            }
            L2Entry::Subclusters { host, alloc, .. } => {
                let sub = self.cluster / 32;
                let i = (in_cluster / sub) as u32;
                let state = alloc >> i & 1 == 1;
                let mut j = i + 1;
                while j < 32 && (alloc >> j & 1 == 1) == state {
                    j += 1;
                }
                let len = (u64::from(j) * sub - in_cluster).min(size - g);
                if state {
                    let h = host + in_cluster;
                    self.check_data("Data cluster", h, len)?;
                    Extent::Data {
                        offset: g,
                        data: self.read_host("data cluster", h, len, g + len)?.freeze(),
                    }
                } else {
                    Extent::Zero { offset: g, len }
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

/// Sorts ranges and merges those that overlap or touch.
fn merge(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (s, e) in ranges {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}
