//! Contract suites: what every extent reader and every sink of this crate
//! promises, checked on each of them with the same code (the importer's
//! file and block sinks are checked by the same rules in its tests).
//!
//! An extent reader gives non-empty extents in guest order, each starting
//! where the last ended, data extents of at most [`MAX_DATA_EXTENT`] bytes,
//! ending exactly at its virtual size when it declares one, and reading
//! as the reference. A sink given those extents holds the reference.

use crate::extent::MAX_DATA_EXTENT;
use crate::qcow2::stream::{Qcow2Stream, SpillOptions};
use crate::qcow2::tests::{expected, tiny_guest_layout, tiny_image, tiny_with_snapshot};
use crate::qcow2::Qcow2Reader;
use crate::raw::RawReader;
use crate::sink::{MemSink, Sink};
use crate::{Extent, ExtentReader};

/// Drains `r`, checking the reader contract; returns the extents.
fn reader_contract(name: &str, r: &mut dyn ExtentReader, reference: &[u8]) -> Vec<Extent> {
    let declared = r.virtual_size();
    let mut pos = 0u64;
    let mut out = Vec::new();
    while let Some(e) = r
        .next_extent()
        .unwrap_or_else(|err| panic!("{name}: {err}"))
    {
        assert_eq!(
            e.offset(),
            pos,
            "{name}: extents out of order or with a gap"
        );
        assert!(!e.is_empty(), "{name}: empty extent at {pos}");
        if let Extent::Data { data, .. } = &e {
            assert!(
                data.len() <= MAX_DATA_EXTENT,
                "{name}: data extent too long"
            );
        }
        pos = e.end();
        out.push(e);
    }
    if let Some(size) = declared {
        assert_eq!(pos, size, "{name}: does not end at its virtual size");
    }
    let mut sink = MemSink::default();
    for e in &out {
        sink.write_extent(e).unwrap();
    }
    assert!(
        sink.contents() == reference,
        "{name}: differs from the reference"
    );
    out
}

/// A raw reference with data, zero blocks and an odd tail.
fn raw_reference() -> Vec<u8> {
    let mut v: Vec<u8> = (0..(9 << 20) + 1000).map(|i| (i * 7 % 251) as u8).collect();
    v[(1 << 20)..(3 << 20)].fill(0);
    v
}

#[test]
fn every_extent_reader_keeps_the_contract() {
    let raw = raw_reference();
    // The raw reader pads an odd length with zeroes to 512 (D1).
    let mut padded = raw.clone();
    padded.resize(raw.len().div_ceil(512) * 512, 0);
    reader_contract("raw", &mut RawReader::new(&raw[..]), &padded);
    for (name, img) in [
        ("qcow2", tiny_image()),
        ("qcow2 with a snapshot", tiny_with_snapshot()),
        ("qcow2 tables after data", tiny_guest_layout()),
    ] {
        reader_contract(
            &format!("{name}, random access"),
            &mut Qcow2Reader::open(img.clone()).unwrap(),
            &expected(),
        );
        reader_contract(
            &format!("{name}, stream"),
            &mut Qcow2Stream::open(&img[..], SpillOptions::default()).unwrap(),
            &expected(),
        );
    }
}

#[test]
fn the_memory_sink_keeps_the_sink_contract() {
    // Zero over data, data over zero, out-of-order offsets never come (the
    // pipeline orders them), an unaligned end.
    let extents = [
        Extent::Data {
            offset: 0,
            data: bytes::Bytes::from(vec![5u8; 1000]),
        },
        Extent::Zero {
            offset: 1000,
            len: 3000,
        },
        Extent::Data {
            offset: 4000,
            data: bytes::Bytes::from(vec![6u8; 97]),
        },
    ];
    let mut reference = vec![5u8; 1000];
    reference.resize(4000, 0);
    reference.extend([6u8; 97]);
    let mut sink = MemSink::default();
    for e in &extents {
        sink.write_extent(e).unwrap();
    }
    assert!(sink.contents() == reference);
    assert_eq!(sink.data_bytes, 1097);
    assert_eq!(sink.zero_bytes, 3000);
}
