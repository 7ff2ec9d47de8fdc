//! Reader tests on a hand-built image, and the structure-aware fuzz
//! property (Q78): any mutation of a valid image either converts or fails
//! cleanly, the random-access and stream readers accept and refuse the
//! same images, and when they accept one they agree byte for byte.

use super::stream::{Qcow2Stream, SpillOptions};
use super::*;
use crate::sink::{drain, MemSink};
use crate::ExtentReader;
use proptest::prelude::*;

const C: usize = 512;

/// A v3 image with 512-byte clusters and an 8 KiB disk:
/// header 0, refcount table 512, refcount block 1024, L1 1536, L2 2048,
/// data clusters 2560 (guest 0), 3072 (guest 3), a compressed cluster at
/// 3584 (guest 5), a zero-flag entry (guest 6).
pub(crate) fn tiny_image() -> Vec<u8> {
    let mut b = vec![0u8; 3584];
    let p32 = |b: &mut Vec<u8>, o: usize, v: u32| b[o..o + 4].copy_from_slice(&v.to_be_bytes());
    let p64 = |b: &mut Vec<u8>, o: usize, v: u64| b[o..o + 8].copy_from_slice(&v.to_be_bytes());
    b[0..4].copy_from_slice(b"QFI\xfb");
    p32(&mut b, 4, 3); // version
    p32(&mut b, 20, 9); // cluster_bits
    p64(&mut b, 24, 8192); // size
    p32(&mut b, 36, 1); // l1_size
    p64(&mut b, 40, 1536); // l1_table_offset
    p64(&mut b, 48, 512); // refcount_table_offset
    p32(&mut b, 56, 1); // refcount_table_clusters
    p32(&mut b, 96, 4); // refcount_order
    p32(&mut b, 100, 104); // header_length
    p64(&mut b, 512, 1024); // refcount table -> block
    p64(&mut b, 1536, 0x8000_0000_0000_0000 | 2048); // L1[0]
    p64(&mut b, 2048, 0x8000_0000_0000_0000 | 2560); // L2[0]
    p64(&mut b, 2048 + 3 * 8, 0x8000_0000_0000_0000 | 3072); // L2[3]
    b[2560..3072].fill(0x11);
    b[3072..3584].fill(0x22);
    // Compressed cluster: raw deflate of 512 bytes of 0x33.
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut enc, &[0x33u8; C]).unwrap();
    let z = enc.finish().unwrap();
    let host = 3584u64;
    let sectors = (z.len() as u64).div_ceil(512) - 1;
    // 512-byte clusters: x = 62 - (9 - 8) = 61.
    p64(
        &mut b,
        2048 + 5 * 8,
        table::L2_COMPRESSED | (sectors << 61) | host,
    );
    b.extend_from_slice(&z);
    b.resize(b.len().div_ceil(512) * 512, 0);
    p64(&mut b, 2048 + 6 * 8, 1); // zero flag
    b
}

pub(crate) fn expected() -> Vec<u8> {
    let mut v = vec![0u8; 8192];
    v[0..C].fill(0x11);
    v[3 * C..4 * C].fill(0x22);
    v[5 * C..6 * C].fill(0x33);
    v
}

/// Drains into memory, refusing images past 1 MiB (mutations can declare
/// huge sparse disks; the property is about bytes, not size).
fn capped(r: &mut impl ExtentReader) -> Result<Vec<u8>, String> {
    if r.virtual_size().unwrap_or(0) > 1 << 20 {
        return Err("too large for the test".into());
    }
    let mut sink = MemSink::default();
    drain(r, &mut sink).map_err(|e| e.to_string())?;
    Ok(sink.contents().to_vec())
}

fn random_access(img: &[u8]) -> Result<Vec<u8>, String> {
    capped(&mut Qcow2Reader::open(img.to_vec()).map_err(|e| e.to_string())?)
}

fn streamed(img: &[u8]) -> Result<Vec<u8>, String> {
    let opts = SpillOptions {
        limit: 1 << 20,
        ..SpillOptions::default()
    };
    capped(&mut Qcow2Stream::open(img, opts).map_err(|e| e.to_string())?)
}

#[test]
fn tiny_image_reads_the_same_both_ways() {
    let img = tiny_image();
    assert_eq!(random_access(&img).unwrap(), expected());
    assert_eq!(streamed(&img).unwrap(), expected());
}

#[test]
fn truncated_tiny_image_is_an_error_both_ways() {
    let img = tiny_image();
    for cut in [50, 600, 1600, 2100, 2700, 3300, img.len() - 600] {
        assert!(
            random_access(&img[..cut]).is_err(),
            "random access at {cut}"
        );
        assert!(streamed(&img[..cut]).is_err(), "stream at {cut}");
    }
}

#[test]
fn map_summary_counts_without_reading_data() {
    let mut r = Qcow2Reader::open(tiny_image()).unwrap();
    let s = r.map_summary().unwrap();
    assert_eq!(s.data_bytes, 2 * C as u64);
    assert_eq!(s.compressed_bytes, C as u64);
    assert_eq!(s.zero_bytes, 8192 - 3 * C as u64);
}

/// `tiny_image` with one internal snapshot whose table entry (with a
/// 2-byte id and a 4-byte name) follows the compressed cluster.
pub(crate) fn tiny_with_snapshot() -> Vec<u8> {
    let mut b = tiny_image();
    let at = b.len() as u64;
    let mut e = vec![0u8; 40];
    e[12..14].copy_from_slice(&2u16.to_be_bytes()); // id_str_size
    e[14..16].copy_from_slice(&4u16.to_be_bytes()); // name_size
    e.extend_from_slice(b"1\0snap");
    b.extend_from_slice(&e);
    b.resize(b.len().div_ceil(512) * 512, 0);
    b[60..64].copy_from_slice(&1u32.to_be_bytes()); // nb_snapshots
    b[64..72].copy_from_slice(&at.to_be_bytes()); // snapshots_offset
    b
}

/// `tiny_image` laid out as a running guest may leave it: the refcount
/// table and the L2 table moved past the data, so the stream reader meets
/// data before the tables that describe it.
pub(crate) fn tiny_guest_layout() -> Vec<u8> {
    let mut b = tiny_image();
    let end = b.len() as u64;
    let rt = b[512..1024].to_vec();
    let l2 = b[2048..2560].to_vec();
    b.extend_from_slice(&l2);
    b.extend_from_slice(&rt);
    b[512..1024].fill(0);
    b[2048..2560].fill(0);
    b[48..56].copy_from_slice(&(end + 512).to_be_bytes()); // refcount table
    b[1536..1544].copy_from_slice(&(0x8000_0000_0000_0000 | end).to_be_bytes()); // L1[0]
    b
}

/// One of the base images, by number.
fn base_image(which: u8) -> Vec<u8> {
    match which % 3 {
        0 => tiny_image(),
        1 => tiny_with_snapshot(),
        _ => tiny_guest_layout(),
    }
}

/// Both readers' outcome on `img`: the bytes, or the error kind.
fn outcomes(img: &[u8]) -> (Result<Vec<u8>, String>, Result<Vec<u8>, String>) {
    (random_access(img), streamed(img))
}

/// The readers accept and refuse the same images, and agree on the bytes.
fn same_outcome(img: &[u8]) -> Result<(), TestCaseError> {
    let (a, s) = outcomes(img);
    match (&a, &s) {
        (Ok(a), Ok(s)) => prop_assert_eq!(a, s),
        (Err(_), Err(_)) => {}
        _ => prop_assert!(
            false,
            "random access {:?} but stream {:?}",
            a.as_ref().map(|v| v.len()),
            s.as_ref().map(|v| v.len())
        ),
    }
    if let Ok(a) = &a {
        prop_assert!(a.len() as u64 <= header::MAX_VIRTUAL_SIZE);
    }
    Ok(())
}

/// Values worth writing into a pointer field of the tiny images: each
/// structure's offset, zero, the file end, and near misses.
fn interesting(len: usize) -> Vec<u64> {
    let mut v = vec![0, 1, 512, 1024, 1536, 2048, 2560, 3072, 3584, 4096];
    // 15 values in all: the strategy below picks an index. The last is the
    // highest cluster-aligned offset, where `offset + cluster` overflows.
    v.extend([len as u64, len as u64 - 512, len as u64 + 512, 1 << 40]);
    v.push(!0x1ff_u64);
    v
}

#[test]
fn snapshot_and_guest_layouts_read_the_same_both_ways() {
    for img in [tiny_with_snapshot(), tiny_guest_layout()] {
        assert!(random_access(&img).unwrap() == expected(), "random access");
        assert!(streamed(&img).unwrap() == expected(), "stream");
    }
}

#[test]
fn shared_l2_table_reads_the_same_both_ways() {
    // Two L1 entries naming one L2 table (each covers 64 clusters of 512
    // bytes, 32 KiB): guest 32..64 KiB of a 64 KiB disk maps like 0..32
    // KiB (qemu reads it so too).
    let mut img = tiny_image();
    img[24..32].copy_from_slice(&65536u64.to_be_bytes()); // size
    img[36..40].copy_from_slice(&2u32.to_be_bytes()); // l1_size
    img[1544..1552].copy_from_slice(&(0x8000_0000_0000_0000u64 | 2048).to_be_bytes());
    let mut half = expected();
    half.resize(32768, 0);
    let want = [half.clone(), half].concat();
    assert!(random_access(&img).unwrap() == want, "random access");
    assert!(streamed(&img).unwrap() == want, "stream");
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("QCOW2_MUTATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(3000),
        ..ProptestConfig::default()
    })]

    #[test]
    fn mutated_bytes_give_the_same_outcome_both_ways(
        which in any::<u8>(),
        muts in proptest::collection::vec((0usize..5120, any::<u8>()), 1..6),
        cut in proptest::option::of(0usize..5120),
    ) {
        let mut img = base_image(which);
        for (off, byte) in muts {
            let i = off % img.len();
            img[i] = byte;
        }
        // Sometimes the file is cut short as well.
        if let Some(c) = cut {
            img.truncate(c % (img.len() + 1));
        }
        same_outcome(&img)?;
    }

    #[test]
    fn mutated_pointers_give_the_same_outcome_both_ways(
        which in any::<u8>(),
        muts in proptest::collection::vec((0usize..640, 0usize..15, any::<bool>()), 1..4)
    ) {
        let mut img = base_image(which);
        let values = interesting(img.len());
        for (slot, v, flag) in muts {
            // An 8-byte field anywhere in the image, or a header field.
            let at = (slot * 8) % (img.len() - 8);
            let mut value = values[v];
            if flag && at >= 512 {
                value |= 0x8000_0000_0000_0000;
            }
            img[at..at + 8].copy_from_slice(&value.to_be_bytes());
        }
        same_outcome(&img)?;
    }
}

/// Found by the qcow2_compare fuzz target: an L1 table of one entry whose
/// cluster is cut by the end of the file. Random access needs only the
/// entries inside the file; the stream reader wanted the whole cluster.
#[test]
fn fuzz_compare_1_short_l1_cluster_at_the_end_reads_the_same_both_ways() {
    let img = include_bytes!("../../tests/fuzz/compare-1.qcow2");
    let a = random_access(img).expect("random access accepts it");
    let s = streamed(img).expect("so must the stream");
    assert!(a == s);
}

/// Found by the qcow2_stream fuzz target in CI: a refcount table entry at
/// the highest cluster-aligned offset. The stream reader computed where the
/// block ends (`offset + cluster`) and overflowed; random access refuses it
/// as beyond the end of the file, and so must the stream, without a panic.
#[test]
fn fuzz_stream_1_refcount_block_at_the_top_of_the_offset_range_is_refused_both_ways() {
    for cluster_aligned in [!0x1ff_u64, !0xffff_u64] {
        let mut img = tiny_image();
        img[512..520].copy_from_slice(&cluster_aligned.to_be_bytes());
        let a = random_access(&img).expect_err("random access refuses it");
        assert!(a.contains("beyond end of file"), "{a}");
        let s = streamed(&img).expect_err("so must the stream");
        assert!(s.contains("beyond end of file"), "{s}");
    }
}

/// Found by the qcow2_compare fuzz target: an image with no L1 entries
/// (`l1_size` 0, a disk of size 0) whose L1 offset lies past the end of
/// the file. qemu never reads an empty L1 table and opens it; random access
/// tried to read zero bytes there and failed, the stream accepted it.
#[test]
fn fuzz_compare_2_empty_l1_table_far_past_the_end_reads_the_same_both_ways() {
    let img = include_bytes!("../../tests/fuzz/compare-2.qcow2");
    assert_eq!(
        random_access(img).expect("random access accepts it"),
        Vec::<u8>::new()
    );
    assert_eq!(streamed(img).expect("so does the stream"), Vec::<u8>::new());
}
