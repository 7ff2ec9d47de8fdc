//! The sink contract on every sink the importer writes through: a sparse
//! file, a block device (a loop device), and the in-memory reference. Given
//! the same extents, each must read back as the same bytes: data where data
//! was written, zeroes where zeroes were asked for (over old content on a
//! device), nothing past the image on a file.

use bytes::Bytes;
use formats::sink::{MemSink, Sink};
use formats::Extent;
use importer::sink::{self, Preallocation, SinkOptions};

use crate::common::*;

/// Extents in guest order: data, zeroes over what a device held before,
/// more data, zeroes, and an end that is not 4 KiB aligned.
fn extents() -> (Vec<Extent>, Vec<u8>) {
    let mut reference = Vec::new();
    let mut out = Vec::new();
    let mut push = |e: Extent, reference: &mut Vec<u8>| {
        match &e {
            Extent::Data { data, .. } => reference.extend_from_slice(data),
            Extent::Zero { len, .. } => reference.resize(reference.len() + *len as usize, 0),
        }
        out.push(e);
    };
    let data = |offset: u64, len: usize, seed: u8| Extent::Data {
        offset,
        data: Bytes::from(
            (0..len)
                .map(|i| (i as u8).wrapping_mul(31) ^ seed)
                .collect::<Vec<_>>(),
        ),
    };
    push(data(0, 1 << 20, 1), &mut reference);
    push(
        Extent::Zero {
            offset: 1 << 20,
            len: 3 << 20,
        },
        &mut reference,
    );
    push(data(4 << 20, 12345, 2), &mut reference);
    push(
        Extent::Zero {
            offset: (4 << 20) + 12345,
            len: (1 << 20) - 12345,
        },
        &mut reference,
    );
    push(data(5 << 20, 512 * 3, 3), &mut reference);
    (out, reference)
}

/// Writes the extents through the importer's sink for `path` of `size`.
fn write_through(path: &std::path::Path, size: u64, extents: &[Extent]) {
    let info = sink::inspect(path, None).unwrap();
    let opts = SinkOptions {
        preallocation: Preallocation::Off,
        target_size: None,
        zero_tail: false,
    };
    let (mut s, guard) = sink::open(&info, opts).unwrap();
    s.begin(size).unwrap();
    for e in extents {
        s.write_extent(e).unwrap();
    }
    s.finish(size).unwrap();
    guard.disarm();
}

#[test]
fn every_sink_holds_what_it_was_given() {
    let (extents, reference) = extents();
    let size = reference.len() as u64;

    let mut mem = MemSink::default();
    for e in &extents {
        mem.write_extent(e).unwrap();
    }
    assert!(mem.contents() == reference, "memory sink");

    let t = tmp();
    let file = t.path().join("out.raw");
    // An old, longer file with other content is replaced.
    std::fs::write(&file, vec![0x77u8; 8 << 20]).unwrap();
    write_through(&file, size, &extents);
    let got = std::fs::read(&file).unwrap();
    assert_eq!(got.len() as u64, size, "file length");
    assert!(got == reference, "file sink");
    assert!(
        allocated(file.to_str().unwrap()) < 4 << 20,
        "zeroes were written into a file"
    );

    if privileged() {
        // A device full of 0x5a: zero extents must really zero it, and
        // what lies past the image stays (no --zero-tail).
        let lo = Loop::new(8 << 20, 0x5a);
        write_through(std::path::Path::new(&lo.dev), size, &extents);
        let dev = lo.read();
        assert!(dev[..reference.len()] == reference[..], "block sink");
        assert!(
            dev[reference.len()..].iter().all(|&b| b == 0x5a),
            "past the image"
        );
    }
}
