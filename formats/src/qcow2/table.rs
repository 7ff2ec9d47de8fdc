//! L1 and L2 entries, decoded as pure functions (qcow2.rst "Cluster
//! mapping", "Extended L2 Entries"). Reserved bits are refused (D5).

use super::error::Qcow2Error;

/// A big-endian u64 at the start of `b` (table entries, header fields).
pub(crate) fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().expect("8 bytes"))
}

/// L1 entry bits 9-55: the L2 table offset.
pub const L1_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// L1 entry bits 0-8 and 56-62 are reserved.
pub const L1_RESERVED_MASK: u64 = 0x7f00_0000_0000_01ff;
/// L2 entry bit 62: compressed cluster.
pub const L2_COMPRESSED: u64 = 1 << 62;
/// L2 entry bit 63: refcount is exactly one (ignored for reading).
pub const L2_COPIED: u64 = 1 << 63;
/// Standard descriptor bits 9-55: host cluster offset.
pub const L2_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Standard descriptor bits 1-8 and 56-61 are reserved.
pub const L2_RESERVED_MASK: u64 = 0x3f00_0000_0000_01fe;
/// Standard descriptor bit 0: reads as zeroes (v3 without extended L2).
pub const L2_ZERO: u64 = 1;

/// Decodes an L1 entry: the L2 table offset, or `None` when unallocated.
pub fn decode_l1(entry: u64, cluster: u64) -> Result<Option<u64>, Qcow2Error> {
    if entry & L1_RESERVED_MASK != 0 {
        return Err(Qcow2Error::ReservedBits {
            what: "L1 entry",
            entry,
        });
    }
    let offset = entry & L1_OFFSET_MASK;
    if offset == 0 {
        return Ok(None);
    }
    if offset % cluster != 0 {
        return Err(Qcow2Error::Unaligned {
            what: "L2 table",
            offset,
        });
    }
    Ok(Some(offset))
}

/// Decodes a refcount table entry: the refcount block offset, or `None`
/// when unallocated (qcow2.rst "Refcount table entry": bits 0-8 reserved,
/// offset cluster aligned).
pub fn decode_refcount_entry(entry: u64, cluster: u64) -> Result<Option<u64>, Qcow2Error> {
    if entry == 0 {
        return Ok(None);
    }
    if entry & 0x1ff != 0 {
        return Err(Qcow2Error::ReservedBits {
            what: "Refcount table entry",
            entry,
        });
    }
    if entry % cluster != 0 {
        return Err(Qcow2Error::Unaligned {
            what: "Refcount block",
            offset: entry,
        });
    }
    Ok(Some(entry))
}

/// What one L2 entry says about its guest cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L2Entry {
    /// Reads as zeroes (unallocated without a backing file, or zero flag).
    Zero,
    /// Data at a cluster-aligned host offset.
    Data {
        /// Host offset.
        host: u64,
    },
    /// Compressed data.
    Compressed {
        /// Host offset of the compressed bytes (not aligned).
        host: u64,
        /// Bytes the descriptor covers (whole sectors, from `host`).
        len: u64,
    },
    /// Extended L2: per-subcluster status.
    Subclusters {
        /// Host offset of the cluster (0 when nothing is allocated).
        host: u64,
        /// Bit i: subcluster i is allocated.
        alloc: u32,
        /// Bit i: subcluster i reads as zeroes.
        zero: u32,
    },
}

/// Decodes an L2 entry; `bitmap` is the second word of an extended entry.
pub fn decode_l2(
    entry: u64,
    bitmap: Option<u64>,
    version: u32,
    cluster_bits: u32,
) -> Result<L2Entry, Qcow2Error> {
    // The compressed flag is tested before the zero flag: bit 0 of a
    // compressed descriptor is part of its offset (Q71).
    if entry & L2_COMPRESSED != 0 {
        if bitmap.is_some_and(|b| b != 0) {
            return Err(Qcow2Error::ReservedBits {
                what: "Compressed cluster subcluster bitmap",
                entry: bitmap.unwrap_or(0),
            });
        }
        let x = 62 - (cluster_bits - 8);
        let desc = entry & !(L2_COMPRESSED | L2_COPIED);
        let host = desc & ((1u64 << x) - 1);
        if host >> 56 != 0 {
            return Err(Qcow2Error::ReservedBits {
                what: "Compressed L2 entry",
                entry,
            });
        }
        let sectors = (desc >> x) + 1;
        let len = sectors * 512 - (host & 511);
        return Ok(L2Entry::Compressed { host, len });
    }
    if entry & L2_RESERVED_MASK != 0 {
        return Err(Qcow2Error::ReservedBits {
            what: "L2 entry",
            entry,
        });
    }
    let host = entry & L2_OFFSET_MASK;
    let cluster = 1u64 << cluster_bits;
    if host % cluster != 0 {
        return Err(Qcow2Error::Unaligned {
            what: "Data cluster",
            offset: host,
        });
    }
    if let Some(b) = bitmap {
        if entry & L2_ZERO != 0 {
            return Err(Qcow2Error::ReservedBits {
                what: "Extended L2 entry",
                entry,
            });
        }
        let alloc = b as u32;
        let zero = (b >> 32) as u32;
        if alloc & zero != 0 {
            return Err(Qcow2Error::InvalidField {
                field: "subcluster bitmap",
                value: b,
                reason: "subcluster both allocated and zero",
            });
        }
        if alloc != 0 && host == 0 {
            return Err(Qcow2Error::InvalidField {
                field: "extended L2 entry",
                value: entry,
                reason: "allocated subclusters without a host cluster",
            });
        }
        return Ok(L2Entry::Subclusters { host, alloc, zero });
    }
    if entry & L2_ZERO != 0 {
        if version < 3 {
            return Err(Qcow2Error::InvalidField {
                field: "L2 entry",
                value: entry,
                reason: "zero cluster entry found in pre-v3 image",
            });
        }
        return Ok(L2Entry::Zero);
    }
    if host == 0 {
        // Offset 0 with bit 63 set means host cluster 0, which only an
        // external data file may use; here it would be the header (Q63).
        if entry & L2_COPIED != 0 {
            return Err(Qcow2Error::Overlap {
                what: "Data cluster",
                offset: 0,
                other: "the header",
            });
        }
        return Ok(L2Entry::Zero);
    }
    Ok(L2Entry::Data { host })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind::{Classify, ErrorKind};
    use proptest::prelude::*;

    #[test]
    fn l1_entries() {
        assert_eq!(decode_l1(0, 65536).unwrap(), None);
        assert_eq!(
            decode_l1(0x8000_0000_0004_0000, 65536).unwrap(),
            Some(0x40000)
        );
        assert_eq!(
            decode_l1(0x8000_0000_0004_0200, 65536).unwrap_err().kind(),
            ErrorKind::Format
        );
        assert!(decode_l1(0x8100_0000_0004_0000, 65536).is_err(), "bit 56");
        assert!(decode_l1(0x8000_0000_0004_0001, 65536).is_err(), "bit 0");
    }

    #[test]
    fn l2_standard_entries() {
        assert_eq!(decode_l2(0, None, 3, 16).unwrap(), L2Entry::Zero);
        assert_eq!(
            decode_l2(0x8000_0000_0005_0000, None, 3, 16).unwrap(),
            L2Entry::Data { host: 0x50000 }
        );
        assert_eq!(
            decode_l2(0x8000_0000_0005_0001, None, 3, 16).unwrap(),
            L2Entry::Zero
        );
        // v2 with the zero flag (Q66).
        assert!(decode_l2(1, None, 2, 16).is_err());
        // Reserved bit 1 and bit 56 (Q64).
        assert!(decode_l2(0x8000_0000_0005_0002, None, 3, 16).is_err());
        assert!(decode_l2(0x8100_0000_0005_0000, None, 3, 16).is_err());
        // Unaligned data offset (Q61).
        assert!(decode_l2(0x8000_0000_0005_0200, None, 3, 16).is_err());
    }

    #[test]
    fn compressed_flag_wins_over_zero_flag() {
        // COMP's L2[0] = 0x4000000000050000; with bit 0 set it is still
        // compressed (offset 0x50001).
        let e = decode_l2(0x4000_0000_0005_0001, None, 3, 16).unwrap();
        assert!(matches!(e, L2Entry::Compressed { host: 0x50001, .. }));
    }

    #[test]
    fn compressed_descriptor_sizes() {
        // 64 KiB clusters: x = 54; 3 additional sectors.
        let e = decode_l2(L2_COMPRESSED | (3u64 << 54) | 0x50010, None, 3, 16).unwrap();
        assert_eq!(
            e,
            L2Entry::Compressed {
                host: 0x50010,
                len: 4 * 512 - 0x10
            }
        );
    }

    #[test]
    fn extended_entries() {
        let e = decode_l2(0x8000_0000_0005_0000, Some(0x0000_0002_0000_0001), 3, 16).unwrap();
        assert_eq!(
            e,
            L2Entry::Subclusters {
                host: 0x50000,
                alloc: 1,
                zero: 2
            }
        );
        assert!(decode_l2(0x8000_0000_0005_0000, Some(0x0000_0001_0000_0001), 3, 16).is_err());
        assert!(decode_l2(0, Some(1), 3, 16).is_err());
    }

    proptest! {
        #[test]
        fn decoding_never_panics(entry: u64, bitmap: Option<u64>, bits in 9u32..=21, v in 2u32..=3) {
            let _ = decode_l2(entry, bitmap, v, bits);
            let _ = decode_l1(entry, 1 << bits);
        }

        #[test]
        fn data_entries_round_trip(cluster in 1u64..(1 << 30)) {
            let host = cluster << 16;
            prop_assert_eq!(decode_l2(host | L2_COPIED, None, 3, 16).unwrap(), L2Entry::Data { host });
        }
    }
}
