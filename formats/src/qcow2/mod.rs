//! qcow2 (v2 and v3) read by our own safe reader: the random-access path
//! over any [`ReadAt`].
//!
//! ```text
//! open:  header (first cluster) -> refcount table + blocks -> snapshot
//!        table extent -> active L1 (every entry validated) -> metadata map
//! walk:  guest order; each L2 entry -> Piece { Zero | Data | Compressed }
//!        neighbours coalesced: zero runs, host-contiguous data reads of up
//!        to MAX_DATA_EXTENT, batches of compressed clusters decoded on two
//!        threads
//! ```
//!
//! Nothing named in the image is ever opened (G1); every pointer is checked
//! against the real file size and the metadata map before it is used (G4,
//! D6); a truncated image is an error, never zeroes.

pub mod compressed;
pub mod error;
pub mod header;
mod map;
mod random;
pub mod stream;
pub mod table;

#[cfg(test)]
pub(crate) mod tests;

use bytes::BytesMut;

use crate::Extent;

pub use error::Qcow2Error;
pub use header::{Compression, Header};
pub use random::Qcow2Reader;

use compressed::Decompressor;
use map::MetaMap;

/// Most bytes of input read for one compressed cluster (Q69).
pub fn max_compressed_input(cluster: u64) -> u64 {
    2 * cluster
}

/// What a reader does with an image that names another file (a backing
/// file, an external data file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum References {
    /// Refuse it (every import).
    #[default]
    Refuse,
    /// Open it to describe it (`info`); the named file is never opened,
    /// and data clusters of an image with an external data file are not
    /// mapped.
    Describe,
}

/// Largest snapshot table walked (entries are variable length).
pub const MAX_SNAPSHOT_TABLE_BYTES: u64 = 64 << 20;

/// Byte counts of the mapping, for `info` and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MapStats {
    /// Guest bytes stored as plain data clusters.
    pub data_bytes: u64,
    /// Guest bytes stored as compressed clusters.
    pub compressed_bytes: u64,
    /// Guest bytes that read as zero (unallocated or zero flag).
    pub zero_bytes: u64,
}

/// The metadata every reader knows from the header alone: the header
/// cluster, the refcount table and the active L1 table, placed clear of the
/// header and of each other (Q45, Q55). The map is not sealed.
fn header_meta(h: &Header) -> Result<MetaMap, Qcow2Error> {
    let cluster = h.cluster_size();
    let l1_bytes = u64::from(h.l1_size) * 8;
    let rt_len = u64::from(h.refcount_table_clusters) * cluster;
    if h.l1_size > 0 && h.l1_table_offset < cluster {
        return Err(Qcow2Error::Overlap {
            what: "Active L1 table",
            offset: h.l1_table_offset,
            other: "the header",
        });
    }
    if h.refcount_table_offset < cluster {
        return Err(Qcow2Error::Overlap {
            what: "Refcount table",
            offset: h.refcount_table_offset,
            other: "the header",
        });
    }
    if h.l1_size > 0 && ranges_overlap(h.refcount_table_offset, rt_len, h.l1_table_offset, l1_bytes)
    {
        return Err(Qcow2Error::Overlap {
            what: "Refcount table",
            offset: h.refcount_table_offset,
            other: "the active L1 table",
        });
    }
    let mut meta = MetaMap::default();
    meta.add(0, cluster, "the header");
    meta.add(h.refcount_table_offset, rt_len, "the refcount table");
    meta.add(
        h.l1_table_offset,
        l1_bytes.div_ceil(cluster) * cluster,
        "the active L1 table",
    );
    Ok(meta)
}

/// Decompresses one cluster from each input, on two threads when there is
/// enough work; the error names the failing input's index. The output
/// buffer comes from `pool` when the consumer gives buffers back
/// (crate::pool: no page faults per batch); every byte of it is written.
fn decode_batch(
    decompressors: &mut [Decompressor; 2],
    inputs: &[&[u8]],
    cluster: usize,
    pool: Option<&crate::pool::BufferPool>,
) -> Result<BytesMut, (usize, String)> {
    let len = inputs.len() * cluster;
    let mut out = match pool {
        Some(p) => p.take(len, crate::extent::MAX_DATA_EXTENT.max(len)),
        None => BytesMut::zeroed(len),
    };
    let [d0, d1] = decompressors;
    let half = inputs.len().div_ceil(2);
    let (out0, out1) = out.split_at_mut(half * cluster);
    let (in0, in1) = inputs.split_at(half);
    let run = |d: &mut Decompressor, ins: &[&[u8]], outs: &mut [u8], base: usize| {
        for (i, (inp, o)) in ins.iter().zip(outs.chunks_mut(cluster)).enumerate() {
            d.cluster(inp, o).map_err(|reason| (base + i, reason))?;
        }
        Ok::<(), (usize, String)>(())
    };
    // Two clusters' worth of work per thread at least, or the thread costs
    // more than it saves.
    let (r0, r1) = if in1.len() >= 2 {
        std::thread::scope(|s| {
            let h = s.spawn(|| run(d1, in1, out1, half));
            let r0 = run(d0, in0, out0, 0);
            let r1 = h
                .join()
                .unwrap_or(Err((half, "decompression thread panicked".into())));
            (r0, r1)
        })
    } else {
        (run(d0, in0, out0, 0), run(d1, in1, out1, half))
    };
    r0.and(r1)?;
    Ok(out)
}

/// At or past the virtual size: `Some` of the zero tail that rounds an odd
/// size up to 512 (D1), then `Some(None)`; `None` while inside the image.
fn past_end(pos: &mut u64, size: u64, padded_end: u64) -> Option<Option<Extent>> {
    if *pos < size {
        return None;
    }
    if *pos < padded_end {
        let e = Extent::Zero {
            offset: *pos,
            len: padded_end - *pos,
        };
        *pos = padded_end;
        return Some(Some(e));
    }
    Some(None)
}

fn ranges_overlap(a: u64, alen: u64, b: u64, blen: u64) -> bool {
    a < b.saturating_add(blen) && b < a.saturating_add(alen)
}

/// Size of the fixed part of a snapshot table entry.
const SNAPSHOT_FIXED: u64 = 40;

/// Length of one snapshot table entry without its padding to 8 bytes, from
/// its fixed part: 40 bytes, extra data, unique id, name.
fn snapshot_entry_len(fixed: &[u8]) -> u64 {
    let id_len = u64::from(u16::from_be_bytes([fixed[12], fixed[13]]));
    let name_len = u64::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    let extra = u64::from(u32::from_be_bytes(
        fixed[36..40].try_into().expect("4 bytes"),
    ));
    SNAPSHOT_FIXED + extra + id_len + name_len
}

/// Refuses a snapshot table walked past [`MAX_SNAPSHOT_TABLE_BYTES`].
fn check_snapshot_table_len(len: u64) -> Result<(), Qcow2Error> {
    if len > MAX_SNAPSHOT_TABLE_BYTES {
        return Err(Qcow2Error::InvalidField {
            field: "snapshot table",
            value: len,
            reason: "snapshot table too large",
        });
    }
    Ok(())
}

#[cfg(test)]
mod meta_tests {
    use super::MetaMap;

    #[test]
    fn a_long_range_far_back_is_still_found() {
        let mut m = MetaMap::default();
        m.add(0x10000, 32 << 20, "the active L1 table");
        for i in 0..1000u64 {
            m.add(0x20000 + i * 0x1000, 0x1000, "an L2 table");
        }
        m.seal();
        // Past a thousand small ranges, still inside the L1 table.
        assert_eq!(m.overlap(0x50_0000, 0x10000), Some("the active L1 table"));
        assert_eq!(m.overlap(0x20000 + 5 * 0x1000, 16), Some("an L2 table"));
        assert_eq!(m.overlap((32 << 20) + 0x10000, 512), None);
    }
}
