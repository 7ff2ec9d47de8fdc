//! The qcow2 header and its extensions, parsed as pure functions over the
//! first cluster of the file (sans-IO). Field offsets and rules follow
//! qemu's `docs/interop/qcow2.rst`, "Header" and "Header extensions"; the
//! checks are a superset of qemu's `qcow2_do_open` (docs/formats.md, docs/ids.md).
//!
//! Longer than our usual 500 lines on purpose: `parse` walks the header
//! field by field in the order of qcow2.rst, each bound checked where the
//! field is read; split, the order of the checks would be lost.

use super::error::Qcow2Error;
use crate::text::escape_bytes;

/// Smallest cluster: 512 B (`cluster_bits` 9).
pub const MIN_CLUSTER_BITS: u32 = 9;
/// Largest cluster: 2 MiB (`cluster_bits` 21), as in qemu.
pub const MAX_CLUSTER_BITS: u32 = 21;
/// Length of a version 2 header.
pub const V2_HEADER_LEN: u32 = 72;
/// Smallest version 3 header.
pub const V3_MIN_HEADER_LEN: u32 = 104;
/// Largest active L1 table, as in qemu (`QCOW_MAX_L1_SIZE`).
pub const MAX_L1_BYTES: u64 = 32 << 20;
/// Largest refcount table, as in qemu (`QCOW_MAX_REFTABLE_SIZE`).
pub const MAX_REFCOUNT_TABLE_BYTES: u64 = 8 << 20;
/// Most internal snapshots, as in qemu (`QCOW_MAX_SNAPSHOTS`).
pub const MAX_SNAPSHOTS: u32 = 65536;
/// Widest refcount entry: 2^6 = 64 bits.
pub const MAX_REFCOUNT_ORDER: u32 = 6;
/// Longest backing file name qemu accepts.
pub const MAX_BACKING_NAME: u64 = 1023;
/// Largest virtual size accepted: 2^56 bytes (64 PiB, the reach of a
/// 56-bit host offset field).
pub const MAX_VIRTUAL_SIZE: u64 = 1 << 56;

/// Incompatible feature bits ("Bit 0: Dirty bit" ... "Bit 4: Extended L2").
pub mod incompat {
    /// Refcounts may be inconsistent; harmless for reading.
    pub const DIRTY: u64 = 1 << 0;
    /// The image is corrupt (D2: refused).
    pub const CORRUPT: u64 = 1 << 1;
    /// Data lives in an external file (G1: refused).
    pub const DATA_FILE: u64 = 1 << 2;
    /// The compression_type field is valid.
    pub const COMPRESSION: u64 = 1 << 3;
    /// L2 entries are 128 bits with subcluster bitmaps.
    pub const EXTENDED_L2: u64 = 1 << 4;
    /// Every bit this reader knows.
    pub const KNOWN: u64 = DIRTY | CORRUPT | DATA_FILE | COMPRESSION | EXTENDED_L2;
}

/// Autoclear bit 1: the external data file is raw (needs a data file).
pub const AUTOCLEAR_DATA_FILE_RAW: u64 = 1 << 1;

/// Header extension types.
pub mod ext {
    /// End of the extension area.
    pub const END: u32 = 0;
    /// Backing file format name.
    pub const BACKING_FORMAT: u32 = 0xe279_2aca;
    /// Feature name table.
    pub const FEATURE_TABLE: u32 = 0x6803_f857;
    /// Bitmaps (D4: ignored).
    pub const BITMAPS: u32 = 0x2385_2875;
    /// Full disk encryption header.
    pub const CRYPTO: u32 = 0x0537_be77;
    /// External data file name.
    pub const DATA_FILE: u32 = 0x4441_5441;
}

/// How compressed clusters are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Raw deflate (the default).
    Zlib,
    /// zstd frames.
    Zstd,
}

impl Compression {
    /// The name used by qemu.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Zlib => "zlib",
            Compression::Zstd => "zstd",
        }
    }
}

/// A parsed, validated header. Table locations are checked against the
/// file by the reader, which knows the file size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// 2 or 3.
    pub version: u32,
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// Virtual size in bytes.
    pub size: u64,
    /// Entries in the active L1 table.
    pub l1_size: u32,
    /// Host offset of the active L1 table.
    pub l1_table_offset: u64,
    /// Host offset of the refcount table.
    pub refcount_table_offset: u64,
    /// Clusters of the refcount table.
    pub refcount_table_clusters: u32,
    /// Internal snapshots.
    pub nb_snapshots: u32,
    /// Host offset of the snapshot table.
    pub snapshots_offset: u64,
    /// Incompatible feature bits.
    pub incompatible: u64,
    /// Compatible feature bits.
    pub compatible: u64,
    /// Autoclear feature bits.
    pub autoclear: u64,
    /// log2 of the refcount width in bits.
    pub refcount_order: u32,
    /// Header length in bytes.
    pub header_length: u32,
    /// Compression type of compressed clusters.
    pub compression: Compression,
    /// Header extensions found: (type, length).
    pub extensions: Vec<(u32, u32)>,
    /// The backing file the image names, escaped (never opened, G1).
    pub backing_file: Option<String>,
    /// The external data file the image needs, escaped, empty when the
    /// image does not name it (never opened, G1).
    pub data_file: Option<String>,
}

impl Header {
    /// Refuses an image that reads through another file: a backing file
    /// or an external data file. Every reader calls this; `info` does not,
    /// so that it can describe such an image.
    pub fn check_references(&self) -> Result<(), Qcow2Error> {
        if let Some(name) = &self.backing_file {
            return Err(Qcow2Error::BackingFile { name: name.clone() });
        }
        if let Some(name) = &self.data_file {
            return Err(Qcow2Error::ExternalDataFile { name: name.clone() });
        }
        Ok(())
    }

    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Whether L2 entries are extended (subclusters).
    pub fn extended_l2(&self) -> bool {
        self.incompatible & incompat::EXTENDED_L2 != 0
    }

    /// Whether the dirty bit is set.
    pub fn dirty(&self) -> bool {
        self.incompatible & incompat::DIRTY != 0
    }

    /// Bytes per L2 entry.
    pub fn l2_entry_bytes(&self) -> u64 {
        if self.extended_l2() {
            16
        } else {
            8
        }
    }

    /// Entries per L2 table.
    pub fn l2_entries(&self) -> u64 {
        self.cluster_size() / self.l2_entry_bytes()
    }

    /// Guest bytes covered by one L2 table.
    pub fn l2_coverage(&self) -> u64 {
        self.l2_entries() * self.cluster_size()
    }

    /// Names of the features present, for `info`.
    pub fn feature_names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.dirty() {
            v.push("dirty");
        }
        if self.incompatible & incompat::COMPRESSION != 0 {
            v.push("compression-type");
        }
        if self.extended_l2() {
            v.push("extended-l2");
        }
        if self.compatible & 1 != 0 {
            v.push("lazy-refcounts");
        }
        if self.autoclear & 1 != 0 {
            v.push("bitmaps");
        }
        if self.nb_snapshots > 0 {
            v.push("internal-snapshots");
        }
        v
    }
}

fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

fn be64(b: &[u8], off: usize) -> u64 {
    super::table::be64(&b[off..])
}

fn invalid(field: &'static str, value: u64, reason: &'static str) -> Qcow2Error {
    Qcow2Error::InvalidField {
        field,
        value,
        reason,
    }
}

fn truncated_header(len: usize) -> Qcow2Error {
    Qcow2Error::BeyondEnd {
        what: "qcow2 header",
        offset: 0,
        len: V2_HEADER_LEN as u64,
        file_size: len as u64,
        kind: crate::ErrorKind::Truncated,
    }
}

/// The cluster size announced by a header prefix (at least 24 bytes),
/// validated, so the caller knows how much to read for [`parse`].
pub fn cluster_size_of(prefix: &[u8]) -> Result<u64, Qcow2Error> {
    if prefix.len() < 24 {
        return Err(truncated_header(prefix.len()));
    }
    let bits = be32(prefix, 20);
    check_cluster_bits(bits)?;
    Ok(1 << bits)
}

fn check_cluster_bits(bits: u32) -> Result<(), Qcow2Error> {
    if bits < MIN_CLUSTER_BITS {
        return Err(invalid("cluster_bits", bits.into(), "must be at least 9"));
    }
    if bits > MAX_CLUSTER_BITS {
        if bits > 63 {
            return Err(invalid("cluster_bits", bits.into(), "must be 9 to 21"));
        }
        return Err(Qcow2Error::Unsupported {
            what: "cluster_bits",
            value: format!("{bits} (at most 21: 2 MiB clusters)"),
        });
    }
    Ok(())
}

/// Parses and validates the header in `first` (the first cluster of the
/// file, or the whole file when it is shorter).
pub fn parse(first: &[u8]) -> Result<Header, Qcow2Error> {
    if first.len() < V2_HEADER_LEN as usize {
        return Err(truncated_header(first.len()));
    }
    if &first[..4] != b"QFI\xfb" {
        return Err(invalid("magic", be32(first, 0).into(), "not a qcow2 image"));
    }
    let version = be32(first, 4);
    if version != 2 && version != 3 {
        return Err(Qcow2Error::Unsupported {
            what: "version",
            value: version.to_string(),
        });
    }
    let cluster_bits = be32(first, 20);
    check_cluster_bits(cluster_bits)?;
    let cluster = 1u64 << cluster_bits;
    let (incompatible, compatible, autoclear, refcount_order, header_length) = if version == 3 {
        if first.len() < V3_MIN_HEADER_LEN as usize {
            return Err(truncated_header(first.len()));
        }
        let hl = be32(first, 100);
        if hl < V3_MIN_HEADER_LEN {
            return Err(invalid(
                "header_length",
                hl.into(),
                "qcow2 header too short",
            ));
        }
        if u64::from(hl) > cluster {
            return Err(invalid(
                "header_length",
                hl.into(),
                "qcow2 header exceeds cluster size",
            ));
        }
        if hl % 8 != 0 {
            return Err(invalid("header_length", hl.into(), "not a multiple of 8"));
        }
        (
            be64(first, 72),
            be64(first, 80),
            be64(first, 88),
            be32(first, 96),
            hl,
        )
    } else {
        (0, 0, 0, 4, V2_HEADER_LEN)
    };
    if (header_length as usize) > first.len() {
        return Err(truncated_header(first.len()));
    }
    let size = be64(first, 24);
    if size > MAX_VIRTUAL_SIZE {
        return Err(invalid("size", size, "virtual size is too big"));
    }
    let crypt_method = be32(first, 32);
    if crypt_method != 0 {
        return Err(Qcow2Error::Encrypted {
            method: crypt_method,
        });
    }

    // Backing file name (never opened: G1). Validate where it lies, like
    // qemu; the readers refuse the image ([`Header::check_references`]),
    // `info` describes it.
    let backing_offset = be64(first, 8);
    let backing_size = u64::from(be32(first, 16));
    let mut backing_file = None;
    let ext_end = if backing_offset != 0 {
        if backing_offset < u64::from(header_length) || backing_offset >= cluster {
            return Err(invalid(
                "backing_file_offset",
                backing_offset,
                "outside the header cluster",
            ));
        }
        if backing_size > MAX_BACKING_NAME || backing_offset + backing_size > cluster {
            return Err(invalid(
                "backing_file_size",
                backing_size,
                "backing file name too long",
            ));
        }
        let end = (backing_offset + backing_size) as usize;
        if end > first.len() {
            return Err(truncated_header(first.len()));
        }
        backing_file = Some(escape_bytes(&first[backing_offset as usize..end]));
        backing_offset as usize
    } else {
        (cluster as usize).min(first.len())
    };

    // Header extensions: bounded by the first cluster.
    let mut extensions = Vec::new();
    let mut feature_table: &[u8] = &[];
    let mut data_file_name: Option<String> = None;
    let mut pos = header_length as usize;
    loop {
        if pos + 8 > ext_end {
            // No end marker before the area's end: the area simply ends.
            break;
        }
        let ty = be32(first, pos);
        let len = be32(first, pos + 4) as usize;
        if ty == ext::END {
            break;
        }
        let data_start = pos + 8;
        if len > ext_end - data_start {
            return Err(invalid(
                "header extension length",
                len as u64,
                "header extension too large",
            ));
        }
        let data = &first[data_start..data_start + len];
        extensions.push((ty, len as u32));
        match ty {
            ext::FEATURE_TABLE => feature_table = data,
            ext::DATA_FILE => data_file_name = Some(escape_bytes(data)),
            ext::CRYPTO => {
                // crypt_method is 0 here: qemu's "CRYPTO header extension only
                // expected with LUKS encryption method".
                return Err(invalid(
                    "header extension",
                    ty.into(),
                    "crypto header without encryption",
                ));
            }
            _ => {}
        }
        pos = data_start + len.div_ceil(8) * 8;
    }
    // compression_type (byte 104) exists when the header reaches it.
    let compression_byte = if header_length > V3_MIN_HEADER_LEN {
        first[104]
    } else {
        0
    };

    // Incompatible features.
    let unknown = incompatible & !incompat::KNOWN;
    if unknown != 0 {
        let bit = unknown.trailing_zeros();
        return Err(Qcow2Error::UnknownIncompatible {
            bit,
            name: feature_name(feature_table, 0, bit).unwrap_or_else(|| "unnamed".into()),
        });
    }
    if incompatible & incompat::CORRUPT != 0 {
        return Err(Qcow2Error::Corrupt);
    }
    let data_file =
        (incompatible & incompat::DATA_FILE != 0).then(|| data_file_name.unwrap_or_default());
    if autoclear & AUTOCLEAR_DATA_FILE_RAW != 0 && data_file.is_none() {
        return Err(invalid(
            "autoclear features",
            autoclear,
            "data-file-raw requires a data file",
        ));
    }
    let compression = match (incompatible & incompat::COMPRESSION != 0, compression_byte) {
        (false, 0) => Compression::Zlib,
        (true, 0) => {
            return Err(invalid(
                "compression_type",
                0,
                "compression type bit must not be set for zlib",
            ))
        }
        (true, 1) => Compression::Zstd,
        (false, t) => {
            return Err(invalid(
                "compression_type",
                t.into(),
                "set without the compression type bit",
            ))
        }
        (true, t) => {
            return Err(Qcow2Error::Unsupported {
                what: "compression type",
                value: t.to_string(),
            })
        }
    };
    if incompatible & incompat::EXTENDED_L2 != 0 && cluster / 32 < 512 {
        return Err(Qcow2Error::Unsupported {
            what: "subcluster size",
            value: (cluster / 32).to_string(),
        });
    }
    if refcount_order > MAX_REFCOUNT_ORDER {
        return Err(invalid(
            "refcount_order",
            refcount_order.into(),
            "refcount width may not exceed 64 bits",
        ));
    }
    let refcount_table_clusters = be32(first, 56);
    if refcount_table_clusters == 0 {
        return Err(invalid(
            "refcount_table_clusters",
            0,
            "image has no refcount table",
        ));
    }
    if u64::from(refcount_table_clusters) * cluster > MAX_REFCOUNT_TABLE_BYTES {
        return Err(invalid(
            "refcount_table_clusters",
            refcount_table_clusters.into(),
            "refcount table too large",
        ));
    }
    let refcount_table_offset = be64(first, 48);
    if refcount_table_offset % cluster != 0 {
        return Err(Qcow2Error::Unaligned {
            what: "Refcount table",
            offset: refcount_table_offset,
        });
    }
    let nb_snapshots = be32(first, 60);
    let snapshots_offset = be64(first, 64);
    if nb_snapshots > MAX_SNAPSHOTS {
        return Err(invalid(
            "nb_snapshots",
            nb_snapshots.into(),
            "snapshot table too large",
        ));
    }
    if nb_snapshots > 0 && snapshots_offset % cluster != 0 {
        return Err(Qcow2Error::Unaligned {
            what: "Snapshot table",
            offset: snapshots_offset,
        });
    }
    let l1_size = be32(first, 36);
    if u64::from(l1_size) * 8 > MAX_L1_BYTES {
        return Err(invalid(
            "l1_size",
            l1_size.into(),
            "active L1 table too large",
        ));
    }
    let l1_table_offset = be64(first, 40);
    if l1_size > 0 && l1_table_offset % cluster != 0 {
        return Err(Qcow2Error::Unaligned {
            what: "Active L1 table",
            offset: l1_table_offset,
        });
    }
    let h = Header {
        version,
        cluster_bits,
        size,
        l1_size,
        l1_table_offset,
        refcount_table_offset,
        refcount_table_clusters,
        nb_snapshots,
        snapshots_offset,
        incompatible,
        compatible,
        autoclear,
        refcount_order,
        header_length,
        compression,
        extensions,
        backing_file,
        data_file,
    };
    let needed = size.div_ceil(h.l2_coverage());
    if u64::from(l1_size) < needed {
        return Err(invalid(
            "l1_size",
            l1_size.into(),
            "L1 table is too small for the virtual size",
        ));
    }
    Ok(h)
}

/// The name of feature `bit` of `kind` (0 incompatible) from the feature
/// name table extension: entries of 48 bytes (type, bit, 46-byte name).
fn feature_name(table: &[u8], kind: u8, bit: u32) -> Option<String> {
    table.chunks_exact(48).find_map(|e| {
        (e[0] == kind && u32::from(e[1]) == bit).then(|| {
            let name = &e[2..];
            let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
            escape_bytes(&name[..end])
        })
    })
}

#[cfg(test)]
mod tests;
