//! The random-access qcow2 reader, over any [`ReadAt`] (a local file,
//! HTTP range requests): every table validated when the image is opened,
//! then the guest disk walked in order (the mapping itself is map.rs).

use bytes::BytesMut;

use super::compressed::Decompressor;
use super::error::{check_in_file, Qcow2Error};
use super::header::{self, Header};
use super::map::{be64, Geometry, MetaMap, Piece, Source};
use super::table::{decode_l1, decode_refcount_entry};
use super::{
    check_snapshot_table_len, decode_batch, header_meta, past_end, snapshot_entry_len, MapStats,
    References, SNAPSHOT_FIXED,
};
use crate::extent::MAX_DATA_EXTENT;
use crate::pool::{BufferPool, BufferReturn};
use crate::raw::round_up_sector;
use crate::read_at::{ReadAt, Readahead};
use crate::{Extent, ExtentReader, FormatError};

/// A qcow2 image read by random access.
pub struct Qcow2Reader<R> {
    src: R,
    header: Header,
    geo: Geometry,
    file_size: u64,
    cluster: u64,
    l1: Vec<u64>,
    meta: MetaMap,
    pos: u64,
    padded_end: u64,
    l2: Option<(usize, Vec<u8>)>,
    peeked: Option<Piece>,
    decompressors: [Decompressor; 2],
    stats: MapStats,
    readahead: Readahead,
    pool: Option<BufferPool>,
    /// Packed compressed input, reused between batches.
    compressed_input: Vec<u8>,
}

impl<R> std::fmt::Debug for Qcow2Reader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qcow2Reader")
            .field("header", &self.header)
            .field("pos", &self.pos)
            .finish_non_exhaustive()
    }
}

fn read_at<R: ReadAt>(
    src: &R,
    what: &'static str,
    offset: u64,
    buf: &mut [u8],
) -> Result<(), Qcow2Error> {
    src.read_exact_at(buf, offset)
        .map_err(|source| Qcow2Error::Reading {
            what,
            offset,
            source,
        })
}

impl<R: ReadAt> Qcow2Reader<R> {
    /// Opens and validates an image: header, tables, every L1 entry.
    pub fn open(src: R) -> Result<Self, Qcow2Error> {
        Self::open_with(src, References::Refuse)
    }

    /// [`Self::open`], with images that name another file refused or
    /// described.
    pub fn open_with(src: R, refs: References) -> Result<Self, Qcow2Error> {
        let file_size = src.size();
        let mut prefix = vec![0u8; file_size.min(512) as usize];
        read_at(&src, "header", 0, &mut prefix)?;
        let cluster = header::cluster_size_of(&prefix)?;
        let mut first = vec![0u8; file_size.min(cluster) as usize];
        read_at(&src, "header", 0, &mut first)?;
        let header = header::parse(&first)?;
        if refs == References::Refuse {
            header.check_references()?;
        }
        let mut meta = header_meta(&header)?;
        let l1_bytes = u64::from(header.l1_size) * 8;
        if header.l1_size > 0 {
            check_in_file(
                "L1 table",
                header.l1_table_offset,
                l1_bytes,
                file_size,
                cluster,
            )?;
        }
        // Refcount table and blocks: never used for reading, but bounded,
        // inside the file, and kept out of the data (D6).
        let rt_off = header.refcount_table_offset;
        let rt_len = u64::from(header.refcount_table_clusters) * cluster;
        check_in_file("Refcount table", rt_off, rt_len, file_size, cluster)?;
        let mut rt = vec![0u8; rt_len as usize];
        read_at(&src, "refcount table", rt_off, &mut rt)?;
        for e in rt.chunks_exact(8).map(be64) {
            let Some(e) = decode_refcount_entry(e, cluster)? else {
                continue;
            };
            check_in_file("Refcount block", e, cluster, file_size, cluster)?;
            meta.add(e, cluster, "a refcount block");
        }
        drop(rt);

        // Snapshot table: only its extent matters; snapshot L1 tables are
        // never read.
        if header.nb_snapshots > 0 {
            let len = snapshot_table_len(&src, &header, file_size)?;
            meta.add(header.snapshots_offset, len, "the snapshot table");
        }
        meta.seal();

        // Every L1 entry, eagerly: aligned, inside the file, clear of the
        // header and other metadata (Q57-Q60).
        let mut raw_l1 = vec![0u8; l1_bytes as usize];
        if !raw_l1.is_empty() {
            // An empty L1 table is never read: its offset may point
            // anywhere, as qemu allows (fuzz regression compare-2).
            read_at(&src, "L1 table", header.l1_table_offset, &mut raw_l1)?;
        }
        let mut l1 = Vec::with_capacity(header.l1_size as usize);
        let mut l2_tables = Vec::new();
        for e in raw_l1.chunks_exact(8).map(be64) {
            let off = decode_l1(e, cluster)?.unwrap_or(0);
            if off != 0 {
                if let Some(other) = meta.overlap(off, cluster) {
                    return Err(Qcow2Error::Overlap {
                        what: "L2 table",
                        offset: off,
                        other,
                    });
                }
                check_in_file("L2 table", off, cluster, file_size, cluster)?;
                l2_tables.push(off);
            }
            l1.push(off);
        }
        drop(raw_l1);
        l2_tables.sort_unstable();
        l2_tables.dedup();
        for off in l2_tables {
            meta.add(off, cluster, "an L2 table");
        }
        meta.seal();
        let compression = header.compression;
        Ok(Qcow2Reader {
            geo: Geometry::of(&header),
            src,
            file_size,
            cluster,
            l1,
            meta,
            pos: 0,
            padded_end: round_up_sector(header.size),
            header,
            l2: None,
            peeked: None,
            decompressors: [
                Decompressor::new(compression),
                Decompressor::new(compression),
            ],
            stats: MapStats::default(),
            readahead: Readahead::default(),
            pool: None,
            compressed_input: Vec::new(),
        })
    }

    /// Returns a handle through which consumers give data buffers back;
    /// at most `depth` idle buffers are kept.
    pub fn recycle(&mut self, depth: usize) -> BufferReturn {
        BufferPool::install(&mut self.pool, depth)
    }

    /// The parsed header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Byte counts of what was mapped so far.
    pub fn stats(&self) -> MapStats {
        self.stats
    }

    /// Walks the whole mapping without reading data (pointers are still
    /// validated), for `info`.
    pub fn map_summary(&mut self) -> Result<MapStats, Qcow2Error> {
        while self.pos < self.header.size {
            let p = self.next_piece()?;
            self.pos = p.guest + p.len;
        }
        Ok(self.stats)
    }

    fn load_l2(&mut self, index: usize) -> Result<&[u8], Qcow2Error> {
        if self.l2.as_ref().map(|l| l.0) != Some(index) {
            let mut buf = match self.l2.take() {
                Some((_, b)) => b,
                None => vec![0u8; self.cluster as usize],
            };
            read_at(&self.src, "L2 table", self.l1[index], &mut buf)?;
            self.l2 = Some((index, buf));
        }
        Ok(&self.l2.as_ref().expect("just loaded").1)
    }

    /// The mapping of the piece starting at `self.pos`, consuming a peeked
    /// one first.
    fn next_piece(&mut self) -> Result<Piece, Qcow2Error> {
        if let Some(p) = self.peeked.take() {
            return Ok(p);
        }
        self.map_at_after(self.pos)
    }

    fn map_at(&mut self, guest: u64) -> Result<Piece, Qcow2Error> {
        let geo = self.geo;
        let l1_index = geo.l1_index(guest);
        if self.l1.get(l1_index).copied().unwrap_or(0) == 0 {
            return Ok(geo.unallocated(guest));
        }
        let table = self.load_l2(l1_index)?;
        let piece = geo.piece(table, guest)?;
        if let Source::Data(host) = piece.source {
            self.check_data("Data cluster", host, piece.len)?;
        }
        Ok(piece)
    }

    fn check_data(&self, what: &'static str, host: u64, len: u64) -> Result<(), Qcow2Error> {
        self.meta.check_clear(what, host, len, self.cluster)?;
        check_in_file(what, host, len, self.file_size, self.cluster)
    }

    /// The compressed input range actually read (map.rs,
    /// `compressed_take`), checked against metadata.
    fn compressed_range(&self, host: u64, len: u64) -> Result<(u64, u64), Qcow2Error> {
        let take = self.geo.compressed_take(host, len, self.file_size);
        self.check_data("Compressed cluster", host, take)?;
        Ok((host, take))
    }

    fn emit_data(&mut self, first: Piece) -> Result<Extent, FormatError> {
        let Source::Data(host0) = first.source else {
            unreachable!("emit_data takes data pieces")
        };
        let mut len = first.len;
        // A source that holds its data in blocks hands out whole runs
        // within one block without a copy.
        let span = self.src.span_at(host0).max(first.len);
        let limit = (MAX_DATA_EXTENT as u64).min(span);
        while first.guest + len < self.header.size && len < limit {
            let next = self.map_at_after(first.guest + len)?;
            if self.geo.joins(&first, len, &next, limit) {
                len += next.len;
            } else {
                self.peeked = Some(next);
                break;
            }
        }
        self.readahead.ahead(&self.src, host0);
        if let Some(bytes) = self.src.read_bytes_at(host0, len as usize) {
            let data = bytes.map_err(|source| Qcow2Error::Reading {
                what: "data cluster",
                offset: host0,
                source,
            })?;
            self.pos = first.guest + len;
            return Ok(Extent::Data {
                offset: first.guest,
                data,
            });
        }
        let mut buf = match &self.pool {
            Some(p) => p.take(len as usize, MAX_DATA_EXTENT),
            None => BytesMut::zeroed(len as usize),
        };
        read_at(&self.src, "data cluster", host0, &mut buf)?;
        self.pos = first.guest + len;
        Ok(Extent::Data {
            offset: first.guest,
            data: buf.freeze(),
        })
    }

    /// Maps the piece at `guest` (past the current one) and accounts it.
    fn map_at_after(&mut self, guest: u64) -> Result<Piece, Qcow2Error> {
        let p = self.map_at(guest)?;
        let stat = match p.source {
            Source::Zero => &mut self.stats.zero_bytes,
            Source::Data(_) => &mut self.stats.data_bytes,
            Source::Compressed { .. } => &mut self.stats.compressed_bytes,
        };
        *stat += p.len;
        Ok(p)
    }

    fn emit_zero(&mut self, first: Piece) -> Result<Extent, FormatError> {
        let mut len = first.len;
        while first.guest + len < self.header.size {
            let next = self.map_at_after(first.guest + len)?;
            if self.geo.joins(&first, len, &next, u64::MAX) {
                len += next.len;
            } else {
                self.peeked = Some(next);
                break;
            }
        }
        self.pos = first.guest + len;
        Ok(Extent::Zero {
            offset: first.guest,
            len,
        })
    }

    fn emit_compressed(&mut self, first: Piece) -> Result<Extent, FormatError> {
        let mut pieces = vec![first];
        let mut total = first.len;
        let max = MAX_DATA_EXTENT as u64;
        while first.guest + total < self.header.size && total + self.cluster <= max {
            let next = self.map_at_after(first.guest + total)?;
            if self.geo.joins(&first, total, &next, max) {
                total += next.len;
                pieces.push(next);
            } else {
                self.peeked = Some(next);
                break;
            }
        }
        // Inputs: one read when the compressed data is packed in order, as
        // qemu-img writes it.
        let mut ranges = Vec::with_capacity(pieces.len());
        for p in &pieces {
            let Source::Compressed { host, len } = p.source else {
                unreachable!("only compressed pieces are batched")
            };
            ranges.push(self.compressed_range(host, len)?);
        }
        let span_start = ranges.iter().map(|r| r.0).min().unwrap_or(0);
        let span_end = ranges.iter().map(|r| r.0 + r.1).max().unwrap_or(0);
        let packed = span_end - span_start <= 2 * max + 2 * self.cluster;
        // The packed input buffer is kept between batches: at a few MiB it
        // would be a fresh mapping, faulted in, every time (crate::pool).
        let mut input = std::mem::take(&mut self.compressed_input);
        self.readahead.ahead(&self.src, span_start);
        if packed {
            input.resize((span_end - span_start) as usize, 0);
            read_at(&self.src, "compressed cluster", span_start, &mut input)?;
        }
        let mut separate = Vec::new();
        if !packed {
            for &(h, l) in &ranges {
                let mut b = vec![0u8; l as usize];
                read_at(&self.src, "compressed cluster", h, &mut b)?;
                separate.push(b);
            }
        }
        let inputs: Vec<&[u8]> = ranges
            .iter()
            .enumerate()
            .map(|(i, &(h, l))| {
                if packed {
                    &input[(h - span_start) as usize..(h - span_start + l) as usize]
                } else {
                    &separate[i][..]
                }
            })
            .collect();
        let mut out = decode_batch(
            &mut self.decompressors,
            &inputs,
            self.cluster as usize,
            self.pool.as_ref(),
        )
        .map_err(|(i, reason)| Qcow2Error::Decompression {
            offset: ranges[i].0,
            reason,
        })?;
        self.compressed_input = input;
        // The last piece may be clipped at the virtual size.
        out.truncate(total as usize);
        self.pos = first.guest + total;
        Ok(Extent::Data {
            offset: first.guest,
            data: out.freeze(),
        })
    }
}

impl<R: ReadAt> ExtentReader for Qcow2Reader<R> {
    fn virtual_size(&self) -> Option<u64> {
        Some(self.padded_end)
    }

    fn next_extent(&mut self) -> Result<Option<Extent>, FormatError> {
        if let Some(tail) = past_end(&mut self.pos, self.header.size, self.padded_end) {
            return Ok(tail);
        }
        let first = self.next_piece()?;
        let e = match first.source {
            Source::Zero => self.emit_zero(first)?,
            Source::Data(_) => self.emit_data(first)?,
            Source::Compressed { .. } => self.emit_compressed(first)?,
        };
        Ok(Some(e))
    }
}

/// Length of the snapshot table, walking its variable-length entries
/// (qcow2.rst "Snapshots"), bounded in count and bytes.
fn snapshot_table_len<R: ReadAt>(src: &R, h: &Header, file_size: u64) -> Result<u64, Qcow2Error> {
    let start = h.snapshots_offset;
    let cluster = h.cluster_size();
    let mut pos = start;
    // The last entry's padding may be missing at the end of the file.
    let mut used_end = start;
    for _ in 0..h.nb_snapshots {
        let mut fixed = [0u8; SNAPSHOT_FIXED as usize];
        check_in_file("Snapshot table", pos, SNAPSHOT_FIXED, file_size, cluster)?;
        read_at(src, "snapshot table", pos, &mut fixed)?;
        let unpadded = snapshot_entry_len(&fixed);
        used_end = pos + unpadded;
        pos += unpadded.div_ceil(8) * 8;
        check_snapshot_table_len(pos - start)?;
    }
    check_in_file(
        "Snapshot table",
        start,
        used_end - start,
        file_size,
        cluster,
    )?;
    Ok(used_end - start)
}
