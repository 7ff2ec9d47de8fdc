//! criterion benches: decoder throughput (gzip, xz, zstd), the raw reader
//! (chunking + zero detection) and the file sink, dense versus sparse.
//! Inputs are generated, not checked in.

use std::io::{Read, Write};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use formats::extent::ZeroCoalescer;
use formats::raw::RawReader;
use formats::sink::Sink;
use formats::zero::split_zeroes;
use formats::{Extent, ExtentReader, Probe};
use sources::decode::decoder;
use sources::peek::PeekReader;

const SIZE: usize = 64 << 20;

/// Disk-like content: compressible "binary" data runs and zero runs.
fn disk_like() -> Vec<u8> {
    let mut v = vec![0u8; SIZE];
    let mut x: u32 = 0x1234_5678;
    for (i, chunk) in v.chunks_mut(1 << 20).enumerate() {
        if i % 4 == 3 {
            continue; // a zero MiB
        }
        for (j, b) in chunk.iter_mut().enumerate() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            // Mostly small values: compresses about 3:1 like binaries.
            *b = if j % 7 == 0 {
                (x >> 24) as u8
            } else {
                (x & 0x0f) as u8
            };
        }
    }
    v
}

fn decode_all(kind: Probe, input: &[u8]) -> u64 {
    let mut d = decoder(
        kind,
        PeekReader::new(std::io::Cursor::new(input.to_vec())),
        2,
    )
    .unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = d.read(&mut buf).unwrap();
        if n == 0 {
            return total;
        }
        total += n as u64;
    }
}

fn decoders(c: &mut Criterion) {
    let data = disk_like();
    let gz = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&data).unwrap();
        e.finish().unwrap()
    };
    let xz = {
        let s = liblzma::stream::MtStreamBuilder::new()
            .threads(2)
            .block_size(8 << 20)
            .preset(3)
            .encoder()
            .unwrap();
        let mut e = liblzma::write::XzEncoder::new_stream(Vec::new(), s);
        e.write_all(&data).unwrap();
        e.finish().unwrap()
    };
    let zst = zstd::stream::encode_all(&data[..], 3).unwrap();
    let mut g = c.benchmark_group("decode");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(SIZE as u64));
    for (name, kind, input) in [
        ("gzip", Probe::Gzip, &gz),
        ("xz-mt", Probe::Xz, &xz),
        ("zstd", Probe::Zstd, &zst),
    ] {
        g.bench_with_input(BenchmarkId::from_parameter(name), input, |b, i| {
            b.iter(|| assert_eq!(decode_all(kind, i), SIZE as u64));
        });
    }
    g.finish();
}

fn raw_reader(c: &mut Criterion) {
    let data = disk_like();
    let mut g = c.benchmark_group("raw_reader");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(SIZE as u64));
    g.bench_function("chunk+zero-detect", |b| {
        b.iter(|| {
            let mut r = RawReader::new(&data[..]);
            let mut n = 0u64;
            while let Some(e) = r.next_extent().unwrap() {
                n += e.len();
            }
            assert_eq!(n, SIZE as u64);
        });
    });
    g.finish();
}

fn file_sink(c: &mut Criterion) {
    let data = Bytes::from(disk_like());
    let all_zero = Bytes::from(vec![0u8; SIZE]);
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("file_sink");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(SIZE as u64));
    for (name, input) in [("disk-like", &data), ("all-zero", &all_zero)] {
        g.bench_with_input(BenchmarkId::from_parameter(name), input, |b, input| {
            b.iter(|| {
                let p = dir.path().join("out.raw");
                let _ = std::fs::remove_file(&p);
                let info = importer::sink::inspect(&p, Some(SIZE as u64)).unwrap();
                let (mut sink, guard) = importer::sink::open(&info, Default::default()).unwrap();
                let mut co = ZeroCoalescer::default();
                let mut emit = |e: Extent| sink.write_extent(&e);
                for (i, chunk) in input.chunks(1 << 20).enumerate() {
                    let off = (i << 20) as u64;
                    let piece = input.slice_ref(chunk);
                    split_zeroes(off, &piece, &mut |e| co.push(e, &mut emit)).unwrap();
                }
                co.flush(&mut emit).unwrap();
                sink.finish(SIZE as u64).unwrap();
                guard.disarm();
            });
        });
    }
    g.finish();
}

#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group!(benches, decoders, raw_reader, file_sink);
}
use group::benches;
criterion_main!(benches);
