//! The qcow2 mapping, one pure module for both readers: from an L2 table
//! and a guest offset to a piece of the guest disk (zero, data at a host
//! offset, or a compressed cluster), subclusters included; which pieces
//! join one extent; and where metadata lies (D6). The random-access and
//! stream readers differ only in how they fetch tables and data.

use super::error::Qcow2Error;
use super::header::Header;
use super::max_compressed_input;
pub(crate) use super::table::be64;
use super::table::{decode_l2, L2Entry};

/// Where a piece of the guest disk comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Zero,
    Data(u64),
    Compressed { host: u64, len: u64 },
}

/// A uniform piece of the guest disk, inside one cluster (or one whole
/// unallocated L2 range).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Piece {
    pub guest: u64,
    pub len: u64,
    pub source: Source,
}

/// What both readers need of the header to map guest offsets.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geometry {
    pub cluster: u64,
    pub coverage: u64,
    pub size: u64,
    entry_bytes: usize,
    extended: bool,
    version: u32,
    bits: u32,
}

impl Geometry {
    pub fn of(h: &Header) -> Self {
        Geometry {
            cluster: h.cluster_size(),
            coverage: h.l2_coverage(),
            size: h.size,
            entry_bytes: h.l2_entry_bytes() as usize,
            extended: h.extended_l2(),
            version: h.version,
            bits: h.cluster_bits,
        }
    }

    /// The L1 index whose L2 table maps `guest`.
    pub fn l1_index(&self, guest: u64) -> usize {
        (guest / self.coverage) as usize
    }

    /// From `guest` to the end of its L2 range (or of the disk), when that
    /// range has no L2 table: zeroes.
    pub fn unallocated(&self, guest: u64) -> Piece {
        let end = ((guest / self.coverage + 1) * self.coverage).min(self.size);
        Piece {
            guest,
            len: end - guest,
            source: Source::Zero,
        }
    }

    /// The piece at `guest` from `table`, the L2 table of its range: to the
    /// end of its cluster, or of its run of like subclusters, clipped at
    /// the virtual size.
    pub fn piece(&self, table: &[u8], guest: u64) -> Result<Piece, Qcow2Error> {
        let (cluster, eb) = (self.cluster, self.entry_bytes);
        let idx = ((guest % self.coverage) / cluster) as usize;
        let e = &table[idx * eb..(idx + 1) * eb];
        let entry = decode_l2(
            be64(e),
            self.extended.then(|| be64(&e[8..])),
            self.version,
            self.bits,
        )?;
        let in_cluster = guest % cluster;
        let rest = cluster - in_cluster;
        let (len, source) = match entry {
            L2Entry::Zero => (rest, Source::Zero),
            L2Entry::Data { host } => (rest, Source::Data(host + in_cluster)),
            L2Entry::Compressed { host, len } => (rest, Source::Compressed { host, len }),
            L2Entry::Subclusters { host, alloc, .. } => {
                let sub = cluster / 32;
                let i = (in_cluster / sub) as u32;
                let allocated = |j: u32| alloc >> j & 1 == 1;
                let state = allocated(i);
                let mut j = i + 1;
                while j < 32 && allocated(j) == state {
                    j += 1;
                }
                let len = u64::from(j) * sub - in_cluster;
                if state {
                    (len, Source::Data(host + in_cluster))
                } else {
                    (len, Source::Zero)
                }
            }
        };
        Ok(Piece {
            guest,
            len: len.min(self.size - guest),
            source,
        })
    }

    /// Whether `next` joins the extent that starts with `first` and holds
    /// `len` bytes so far, at most `limit`: zero after zero; data right
    /// after the previous data on the host; whole compressed clusters after
    /// compressed ones.
    pub fn joins(&self, first: &Piece, len: u64, next: &Piece, limit: u64) -> bool {
        match (first.source, next.source) {
            (Source::Zero, Source::Zero) => true,
            (Source::Data(h0), Source::Data(h)) => h == h0 + len && len + next.len <= limit,
            (Source::Compressed { .. }, Source::Compressed { .. }) => {
                next.guest % self.cluster == 0 && len + self.cluster <= limit
            }
            _ => false,
        }
    }

    /// The compressed input read for one cluster: its descriptor's length,
    /// at most two clusters (Q69), and only to the end of the file when
    /// just the last sector is cut (qemu may not pad it).
    pub fn compressed_take(&self, host: u64, len: u64, file_size: u64) -> u64 {
        let want = len.min(max_compressed_input(self.cluster));
        let avail = file_size.saturating_sub(host);
        if want > avail && want - avail < 512 && avail > 0 {
            avail
        } else {
            want
        }
    }
}

/// Sorted, merged host ranges of metadata (D6).
#[derive(Debug, Default)]
pub(crate) struct MetaMap {
    ranges: Vec<(u64, u64, &'static str)>,
    /// `max_end[i]`: the largest end among `ranges[..=i]`, so a query knows
    /// in O(log n) whether anything before it reaches its start.
    max_end: Vec<u64>,
}

impl MetaMap {
    pub fn add(&mut self, start: u64, len: u64, what: &'static str) {
        self.ranges.push((start, start.saturating_add(len), what));
    }

    pub fn seal(&mut self) {
        self.ranges.sort_unstable_by_key(|r| r.0);
        let mut m = 0;
        self.max_end = self
            .ranges
            .iter()
            .map(|r| {
                m = m.max(r.1);
                m
            })
            .collect();
    }

    /// Refuses data `what` at `[host, host + len)` that lies in the header
    /// cluster or on metadata (D6).
    pub fn check_clear(
        &self,
        what: &'static str,
        host: u64,
        len: u64,
        cluster: u64,
    ) -> Result<(), Qcow2Error> {
        let other = if host < cluster {
            Some("the header")
        } else {
            self.overlap(host, len)
        };
        match other {
            Some(other) => Err(Qcow2Error::Overlap {
                what,
                offset: host,
                other,
            }),
            None => Ok(()),
        }
    }

    /// Whether one metadata range holds all of `[start, start + len)`.
    pub fn covers(&self, start: u64, len: u64) -> bool {
        let i = self.ranges.partition_point(|r| r.0 <= start);
        i > 0 && self.max_end[i - 1] >= start.saturating_add(len)
    }

    /// The metadata that `[start, start + len)` overlaps, if any.
    pub fn overlap(&self, start: u64, len: u64) -> Option<&'static str> {
        let end = start.saturating_add(len);
        let i = self.ranges.partition_point(|r| r.0 < end);
        if i == 0 || self.max_end[i - 1] <= start {
            return None;
        }
        self.ranges[..i]
            .iter()
            .rev()
            .find(|r| r.1 > start)
            .map(|r| r.2)
    }
}
