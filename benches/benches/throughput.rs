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

/// Disk-like content (benches/src/lib.rs).
fn disk_like() -> Vec<u8> {
    benches::disk_like(SIZE)
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

/// An image whose metadata lives in memory and whose data reads as zero:
/// big enough to exercise the mapping without gigabytes of RAM.
struct FakeImage {
    size: u64,
    meta: Vec<(u64, Vec<u8>)>,
}

impl formats::read_at::ReadAt for FakeImage {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        buf.fill(0);
        let end = offset + buf.len() as u64;
        for (start, bytes) in &self.meta {
            let mend = start + bytes.len() as u64;
            if *start < end && offset < mend {
                let s = (*start).max(offset);
                let e = mend.min(end);
                buf[(s - offset) as usize..(e - offset) as usize]
                    .copy_from_slice(&bytes[(s - start) as usize..(e - start) as usize]);
            }
        }
        Ok(())
    }
}

/// 64 GiB virtual, 64 KiB clusters, every cluster allocated: 1 Mi L2
/// entries in 128 tables.
fn fake_qcow2() -> FakeImage {
    const C: u64 = 65536;
    let tables = 128u64;
    let entries = C / 8;
    let mut header = vec![0u8; C as usize];
    header[0..4].copy_from_slice(b"QFI\xfb");
    header[4..8].copy_from_slice(&3u32.to_be_bytes());
    header[20..24].copy_from_slice(&16u32.to_be_bytes());
    header[24..32].copy_from_slice(&(tables * entries * C).to_be_bytes());
    header[36..40].copy_from_slice(&(tables as u32).to_be_bytes());
    header[40..48].copy_from_slice(&(3 * C).to_be_bytes());
    header[48..56].copy_from_slice(&C.to_be_bytes());
    header[56..60].copy_from_slice(&1u32.to_be_bytes());
    header[96..100].copy_from_slice(&4u32.to_be_bytes());
    header[100..104].copy_from_slice(&104u32.to_be_bytes());
    let mut rt = vec![0u8; C as usize];
    rt[..8].copy_from_slice(&(2 * C).to_be_bytes());
    let l2_base = 4 * C;
    let data_base = l2_base + tables * C;
    let mut l1 = vec![0u8; C as usize];
    let mut meta = vec![(0, header), (C, rt)];
    for t in 0..tables {
        l1[t as usize * 8..t as usize * 8 + 8]
            .copy_from_slice(&((1 << 63) | (l2_base + t * C)).to_be_bytes());
        let mut l2 = vec![0u8; C as usize];
        for e in 0..entries {
            let host = data_base + (t * entries + e) * C;
            l2[e as usize * 8..e as usize * 8 + 8]
                .copy_from_slice(&((1u64 << 63) | host).to_be_bytes());
        }
        meta.push((l2_base + t * C, l2));
    }
    meta.push((3 * C, l1));
    FakeImage {
        size: data_base + tables * entries * C,
        meta,
    }
}

fn qcow2_mapping(c: &mut Criterion) {
    let mut g = c.benchmark_group("qcow2");
    g.sample_size(10);
    g.throughput(Throughput::Elements(128 * 8192));
    g.bench_function("l2-map+coalesce-1Mi-entries", |b| {
        b.iter(|| {
            let mut r = formats::qcow2::Qcow2Reader::open(fake_qcow2()).unwrap();
            let s = r.map_summary().unwrap();
            assert_eq!(s.data_bytes, 64 << 30);
        });
    });
    g.finish();
}

fn compressed_clusters(c: &mut Criterion) {
    let data = disk_like();
    let clusters: Vec<Vec<u8>> = data
        .chunks(65536)
        .take(256)
        .map(|chunk| {
            let mut e =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(chunk).unwrap();
            e.finish().unwrap()
        })
        .collect();
    let mut g = c.benchmark_group("compressed_cluster");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(256 * 65536));
    g.bench_function("libdeflate", |b| {
        let mut d =
            formats::qcow2::compressed::Decompressor::new(formats::qcow2::Compression::Zlib);
        let mut out = vec![0u8; 65536];
        b.iter(|| {
            for z in &clusters {
                d.cluster(z, &mut out).unwrap();
            }
        });
    });
    g.bench_function("zlib-rs", |b| {
        let mut out = vec![0u8; 65536];
        b.iter(|| {
            for z in &clusters {
                flate2::read::DeflateDecoder::new(&z[..])
                    .read_exact(&mut out)
                    .unwrap();
            }
        });
    });
    g.finish();
}

/// A qcow2 image (512-byte clusters) whose refcount table names `blocks`
/// refcount blocks, laid out after it: header, table, blocks, L1, L2, one
/// data cluster. Streaming it parses every table entry and steps over
/// every block.
fn many_refcount_blocks(blocks: u64) -> Vec<u8> {
    const C: u64 = 512;
    let table_clusters = (blocks * 8).div_ceil(C);
    let first_block = C + table_clusters * C;
    let l1 = first_block + blocks * C;
    let (l2, data) = (l1 + C, l1 + 2 * C);
    let mut b = vec![0u8; (data + C) as usize];
    let p32 = |b: &mut Vec<u8>, o: u64, v: u32| {
        b[o as usize..o as usize + 4].copy_from_slice(&v.to_be_bytes());
    };
    let p64 = |b: &mut Vec<u8>, o: u64, v: u64| {
        b[o as usize..o as usize + 8].copy_from_slice(&v.to_be_bytes());
    };
    b[0..4].copy_from_slice(b"QFI\xfb");
    p32(&mut b, 4, 3);
    p32(&mut b, 20, 9);
    p64(&mut b, 24, 32768);
    p32(&mut b, 36, 1);
    p64(&mut b, 40, l1);
    p64(&mut b, 48, C);
    p32(&mut b, 56, table_clusters as u32);
    p32(&mut b, 96, 4);
    p32(&mut b, 100, 104);
    for i in 0..blocks {
        p64(&mut b, C + i * 8, first_block + i * C);
    }
    p64(&mut b, l1, 0x8000_0000_0000_0000 | l2);
    p64(&mut b, l2, 0x8000_0000_0000_0000 | data);
    b[data as usize..].fill(0x5a);
    b
}

/// The stream reader keeps metadata still ahead in an ordered set: a
/// refcount table four times larger must take about four times as long
/// (linear), not sixteen (quadratic).
fn qcow2_stream_metadata(c: &mut Criterion) {
    use formats::qcow2::stream::{Qcow2Stream, SpillOptions};
    let mut g = c.benchmark_group("qcow2_stream_refcount_blocks_gz");
    g.sample_size(10);
    for blocks in [16_384u64, 65_536] {
        let img = many_refcount_blocks(blocks);
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&img).unwrap();
        let gz = e.finish().unwrap();
        g.bench_with_input(BenchmarkId::from_parameter(blocks), &gz, |bch, gz| {
            bch.iter(|| {
                let d = flate2::read::MultiGzDecoder::new(&gz[..]);
                let mut r = Qcow2Stream::open(d, SpillOptions::default()).unwrap();
                while r.next_extent().unwrap().is_some() {}
            });
        });
    }
    g.finish();
}

#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group!(
        benches,
        decoders,
        raw_reader,
        file_sink,
        qcow2_mapping,
        compressed_clusters,
        qcow2_stream_metadata
    );
}
use group::benches;
criterion_main!(benches);
