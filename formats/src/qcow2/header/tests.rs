//! Header parsing on hand-built headers: one test per limit, each just past
//! the limit (P5, P6 in docs/ids.md).

use super::*;
use crate::kind::{Classify, ErrorKind};

/// A valid v3 header for a 64 MiB disk with 64 KiB clusters, laid out as
/// qemu-img 10 does (the BASE layout of the hostile qcow2 tests).
fn valid_v3() -> Vec<u8> {
    let mut h = vec![0u8; 65536];
    h[0..4].copy_from_slice(b"QFI\xfb"); // magic
    h[4..8].copy_from_slice(&3u32.to_be_bytes()); // version
    h[20..24].copy_from_slice(&16u32.to_be_bytes()); // cluster_bits
    h[24..32].copy_from_slice(&(64u64 << 20).to_be_bytes()); // size
    h[36..40].copy_from_slice(&1u32.to_be_bytes()); // l1_size
    h[40..48].copy_from_slice(&0x30000u64.to_be_bytes()); // l1_table_offset
    h[48..56].copy_from_slice(&0x10000u64.to_be_bytes()); // refcount_table_offset
    h[56..60].copy_from_slice(&1u32.to_be_bytes()); // refcount_table_clusters
    h[96..100].copy_from_slice(&4u32.to_be_bytes()); // refcount_order
    h[100..104].copy_from_slice(&112u32.to_be_bytes()); // header_length
    h
}

fn poke32(h: &mut [u8], off: usize, v: u32) {
    h[off..off + 4].copy_from_slice(&v.to_be_bytes());
}

fn poke64(h: &mut [u8], off: usize, v: u64) {
    h[off..off + 8].copy_from_slice(&v.to_be_bytes());
}

/// The refusal a reader makes: parsing, then the references check.
fn err(h: &[u8]) -> Qcow2Error {
    parse(h)
        .and_then(|h| h.check_references().map(|()| h))
        .unwrap_err()
}

fn assert_err(h: &[u8], kind: ErrorKind, needle: &str) {
    let e = err(h);
    assert_eq!(e.kind(), kind, "{e}");
    assert!(
        e.to_string()
            .to_lowercase()
            .contains(&needle.to_lowercase()),
        "{e}"
    );
}

#[test]
fn valid_header_parses() {
    let h = parse(&valid_v3()).unwrap();
    assert_eq!(h.cluster_size(), 65536);
    assert_eq!(h.size, 64 << 20);
    assert_eq!(h.compression, Compression::Zlib);
    assert_eq!(h.l2_entries(), 8192);
}

#[test]
fn cluster_bits_limits() {
    let mut h = valid_v3();
    poke32(&mut h, 20, MIN_CLUSTER_BITS - 1);
    assert_err(&h, ErrorKind::Format, "cluster_bits");
    poke32(&mut h, 20, MAX_CLUSTER_BITS + 1);
    assert_err(&h, ErrorKind::Unsupported, "cluster_bits");
    poke32(&mut h, 20, u32::MAX);
    assert_err(&h, ErrorKind::Format, "cluster_bits");
}

#[test]
fn header_length_limits() {
    let mut h = valid_v3();
    poke32(&mut h, 100, 72);
    assert_err(&h, ErrorKind::Format, "header too short");
    poke32(&mut h, 100, u32::MAX);
    assert_err(&h, ErrorKind::Format, "header exceeds cluster");
    poke32(&mut h, 100, 108);
    assert_err(&h, ErrorKind::Format, "multiple of 8");
}

#[test]
fn versions_other_than_2_and_3_are_unsupported() {
    let mut h = valid_v3();
    poke32(&mut h, 4, 4);
    assert_err(&h, ErrorKind::Unsupported, "version 4");
}

#[test]
fn virtual_size_limit() {
    let mut h = valid_v3();
    poke64(&mut h, 24, MAX_VIRTUAL_SIZE + 1);
    assert_err(&h, ErrorKind::Format, "too big");
}

#[test]
fn l1_too_small_for_size() {
    let mut h = valid_v3();
    poke64(&mut h, 24, 1 << 40);
    assert_err(&h, ErrorKind::Format, "too small");
}

#[test]
fn l1_size_limit() {
    let mut h = valid_v3();
    poke32(&mut h, 36, (MAX_L1_BYTES / 8) as u32 + 1);
    assert_err(&h, ErrorKind::Format, "L1 table too large");
}

#[test]
fn refcount_limits() {
    let mut h = valid_v3();
    poke32(&mut h, 96, MAX_REFCOUNT_ORDER + 1);
    assert_err(&h, ErrorKind::Format, "refcount");
    let mut h = valid_v3();
    poke32(&mut h, 56, 0);
    assert_err(&h, ErrorKind::Format, "no refcount table");
    poke32(&mut h, 56, (MAX_REFCOUNT_TABLE_BYTES / 65536) as u32 + 1);
    assert_err(&h, ErrorKind::Format, "refcount table too large");
    let mut h = valid_v3();
    poke64(&mut h, 48, 0x10001);
    assert_err(&h, ErrorKind::Format, "not cluster aligned");
}

#[test]
fn snapshot_limits() {
    let mut h = valid_v3();
    poke32(&mut h, 60, MAX_SNAPSHOTS + 1);
    assert_err(&h, ErrorKind::Format, "snapshot table too large");
    poke32(&mut h, 60, 1);
    poke64(&mut h, 64, 0x12345);
    assert_err(&h, ErrorKind::Format, "not cluster aligned");
}

#[test]
fn backing_file_is_unsafe_and_name_escaped() {
    let mut h = valid_v3();
    let name = b"/etc/\x1b[31mpasswd\n";
    h[0x1000..0x1000 + name.len()].copy_from_slice(name);
    poke64(&mut h, 8, 0x1000);
    poke32(&mut h, 16, name.len() as u32);
    let e = err(&h);
    assert_eq!(e.kind(), ErrorKind::Unsafe);
    let msg = e.to_string();
    assert!(msg.contains("Backing file"), "{msg}");
    assert!(!msg.contains('\x1b') && !msg.contains('\n'), "{msg}");
    // Parsing alone records the name, escaped, for `info`.
    let parsed = parse(&h).unwrap();
    assert_eq!(
        parsed.backing_file.as_deref(),
        Some("/etc/\\u{1b}[31mpasswd\\n")
    );
    assert_eq!(parsed.data_file, None);
}

#[test]
fn backing_name_limits_are_format_errors() {
    let mut h = valid_v3();
    poke64(&mut h, 8, 0x1000);
    poke32(&mut h, 16, (MAX_BACKING_NAME + 1) as u32);
    assert_err(&h, ErrorKind::Format, "too long");
    let mut h = valid_v3();
    poke64(&mut h, 8, 0x20000);
    poke32(&mut h, 16, 4);
    assert_err(&h, ErrorKind::Format, "backing_file_offset");
    let mut h = valid_v3();
    poke64(&mut h, 8, 16);
    poke32(&mut h, 16, 4);
    assert_err(&h, ErrorKind::Format, "backing_file_offset");
}

#[test]
fn encryption_is_unsupported() {
    for m in [1, 2, 3] {
        let mut h = valid_v3();
        poke32(&mut h, 32, m);
        assert_err(&h, ErrorKind::Unsupported, "encrypted");
    }
}

#[test]
fn incompatible_features() {
    let mut h = valid_v3();
    poke64(&mut h, 72, 1 << 63);
    assert_err(
        &h,
        ErrorKind::Unsupported,
        "unknown incompatible feature bit 63",
    );
    poke64(&mut h, 72, incompat::CORRUPT);
    assert_err(&h, ErrorKind::Format, "image is marked corrupt");
    poke64(&mut h, 72, incompat::DATA_FILE);
    assert_err(&h, ErrorKind::Unsafe, "external data file");
    poke64(&mut h, 72, incompat::DIRTY);
    assert!(parse(&h).unwrap().dirty());
    poke64(&mut h, 72, 0);
    poke64(&mut h, 88, AUTOCLEAR_DATA_FILE_RAW);
    assert_err(&h, ErrorKind::Format, "data-file-raw");
}

#[test]
fn unknown_feature_name_is_escaped() {
    let mut h = valid_v3();
    // Feature table extension at 112 with one entry: incompatible bit 62.
    poke32(&mut h, 112, ext::FEATURE_TABLE);
    poke32(&mut h, 116, 48);
    h[120] = 0;
    h[121] = 62;
    let name = b"\x1b[31mEVIL\x1b[0m\nInjected";
    h[122..122 + name.len()].copy_from_slice(name);
    poke64(&mut h, 72, 1 << 62);
    let e = err(&h);
    let msg = e.to_string();
    assert!(
        msg.contains("EVIL") && !msg.contains('\x1b') && !msg.contains('\n'),
        "{msg}"
    );
}

#[test]
fn compression_type_rules() {
    let mut h = valid_v3();
    poke64(&mut h, 72, incompat::COMPRESSION);
    assert_err(&h, ErrorKind::Format, "compression");
    h[104] = 2;
    assert_err(&h, ErrorKind::Unsupported, "compression type 2");
    h[104] = 1;
    assert_eq!(parse(&h).unwrap().compression, Compression::Zstd);
}

#[test]
fn extended_l2_needs_512_byte_subclusters() {
    let mut h = valid_v3();
    poke64(&mut h, 72, incompat::EXTENDED_L2);
    poke32(&mut h, 20, 9);
    poke64(&mut h, 24, 1 << 20);
    poke32(&mut h, 36, 1 << 10);
    poke64(&mut h, 40, 0x30000);
    poke64(&mut h, 48, 0x10000);
    assert_err(&h, ErrorKind::Unsupported, "subcluster");
}

#[test]
fn extension_length_is_bounded_by_the_cluster() {
    let mut h = valid_v3();
    poke32(&mut h, 112, 0x1234_5678);
    poke32(&mut h, 116, 0x7fff_ffff);
    assert_err(&h, ErrorKind::Format, "header extension too large");
    // A sane unknown extension is skipped.
    poke32(&mut h, 116, 8);
    assert_eq!(parse(&h).unwrap().extensions, vec![(0x1234_5678, 8)]);
}

#[test]
fn crypto_extension_without_encryption_is_format() {
    let mut h = valid_v3();
    poke32(&mut h, 112, ext::CRYPTO);
    poke32(&mut h, 116, 16);
    assert_err(&h, ErrorKind::Format, "crypto");
}

#[test]
fn short_input_is_truncated() {
    let h = valid_v3();
    assert_eq!(err(&h[..50]).kind(), ErrorKind::Truncated);
}

#[test]
fn v2_header_parses_with_defaults() {
    let mut h = valid_v3();
    poke32(&mut h, 4, 2);
    let p = parse(&h).unwrap();
    assert_eq!(p.header_length, V2_HEADER_LEN);
    assert_eq!(p.refcount_order, 4);
}
