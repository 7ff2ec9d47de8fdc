//! criterion benches, one per pipeline stage, in bytes per second, so an
//! end-to-end figure in benches/RESULTS.md can be split into its stages
//! and a regression names its stage: the qcow2 readers (stream and random
//! access) on an image in memory, xz (ours against liblzma's threaded
//! decoder), the registry layer walk (tar parsing and digest), SHA-256,
//! TLS records (what the upload server decrypts), snappy frames (clones).
//! Inputs are generated, not checked in.

use std::io::{Read, Write};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use formats::ExtentReader;

const SIZE: usize = 64 << 20;
const CLUSTER: u64 = 65536;

/// Disk-like content (benches/src/lib.rs).
fn disk_like() -> Vec<u8> {
    benches::disk_like(SIZE)
}

/// A qcow2 (v3, 64 KiB clusters) holding `data` in order, laid out as
/// qemu-img writes it: header, refcount table and block, L1, L2, data.
/// The refcount block is left empty (the readers do not use refcounts).
fn qcow2_of(data: &[u8]) -> Vec<u8> {
    let clusters = data.len() as u64 / CLUSTER;
    assert!(clusters <= CLUSTER / 8, "one L2 table");
    let c = CLUSTER as usize;
    let data_base = 5 * CLUSTER;
    let mut img = vec![0u8; data_base as usize];
    let h = &mut img[..c];
    h[0..4].copy_from_slice(b"QFI\xfb");
    h[4..8].copy_from_slice(&3u32.to_be_bytes());
    h[20..24].copy_from_slice(&16u32.to_be_bytes());
    h[24..32].copy_from_slice(&(data.len() as u64).to_be_bytes());
    h[36..40].copy_from_slice(&1u32.to_be_bytes());
    h[40..48].copy_from_slice(&(3 * CLUSTER).to_be_bytes());
    h[48..56].copy_from_slice(&CLUSTER.to_be_bytes());
    h[56..60].copy_from_slice(&1u32.to_be_bytes());
    h[96..100].copy_from_slice(&4u32.to_be_bytes());
    h[100..104].copy_from_slice(&104u32.to_be_bytes());
    img[c..c + 8].copy_from_slice(&(2 * CLUSTER).to_be_bytes());
    img[3 * c..3 * c + 8].copy_from_slice(&((1u64 << 63) | (4 * CLUSTER)).to_be_bytes());
    for e in 0..clusters {
        let host = data_base + e * CLUSTER;
        let at = 4 * c + e as usize * 8;
        img[at..at + 8].copy_from_slice(&((1u64 << 63) | host).to_be_bytes());
    }
    img.extend_from_slice(data);
    img
}

/// An image in memory shared between iterations (no copy per run).
#[derive(Clone)]
struct Shared(Arc<Vec<u8>>);

impl formats::read_at::ReadAt for Shared {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }
}

fn drain(r: &mut impl ExtentReader) -> u64 {
    let mut n = 0;
    while let Some(e) = r.next_extent().unwrap() {
        n += e.len();
    }
    n
}

fn qcow2_readers(c: &mut Criterion) {
    use formats::qcow2::stream::{Qcow2Stream, SpillOptions};
    let img = qcow2_of(&disk_like());
    let mut g = c.benchmark_group("stage/qcow2");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(SIZE as u64));
    g.bench_function("stream_reader", |b| {
        b.iter(|| {
            let mut r = Qcow2Stream::open(&img[..], SpillOptions::default()).unwrap();
            assert_eq!(drain(&mut r), SIZE as u64);
        });
    });
    let shared = Shared(Arc::new(img.clone()));
    g.bench_function("random_reader", |b| {
        b.iter(|| {
            let mut r = formats::qcow2::Qcow2Reader::open(shared.clone()).unwrap();
            assert_eq!(drain(&mut r), SIZE as u64);
        });
    });
    g.finish();
}

fn xz_decoders(c: &mut Criterion) {
    let data = disk_like();
    // As `xz -T2 -3`, with smaller blocks so 64 MiB has sixteen of them.
    let stream = liblzma::stream::MtStreamBuilder::new()
        .threads(2)
        .block_size(4 << 20)
        .preset(3)
        .encoder()
        .unwrap();
    let mut e = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
    e.write_all(&data).unwrap();
    let xz = e.finish().unwrap();
    let mut g = c.benchmark_group("stage/xz");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(SIZE as u64));
    g.bench_function("ours_2_workers", |b| {
        b.iter(|| {
            let mut d = sources::decode::decoder(
                formats::Probe::Xz,
                sources::peek::PeekReader::new(std::io::Cursor::new(xz.clone())),
                2,
            )
            .unwrap();
            assert_eq!(
                std::io::copy(&mut d, &mut std::io::sink()).unwrap(),
                SIZE as u64
            );
        });
    });
    g.bench_function("liblzma_mt_2_threads", |b| {
        b.iter(|| {
            let s = liblzma::stream::MtStreamBuilder::new()
                .threads(2)
                .memlimit_threading(sources::decode::XZ_MEMLIMIT_THREADING)
                .memlimit_stop(sources::decode::XZ_MEMLIMIT_STOP)
                .decoder()
                .unwrap();
            let mut d = liblzma::read::XzDecoder::new_stream(&xz[..], s);
            assert_eq!(
                std::io::copy(&mut d, &mut std::io::sink()).unwrap(),
                SIZE as u64
            );
        });
    });
    g.finish();
}

fn registry_layer(c: &mut Criterion) {
    let data = disk_like();
    let mut t = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    t.append_data(&mut h, "disk/disk.img", &data[..]).unwrap();
    let layer = t.into_inner().unwrap();
    let mut g = c.benchmark_group("stage/registry");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(SIZE as u64));
    g.bench_function("layer_walk_tar_and_digest", |b| {
        b.iter(|| {
            let (_, out) =
                sources::registry::read_layers(std::slice::from_ref(&layer), u64::MAX).unwrap();
            assert_eq!(out.len(), SIZE);
        });
    });
    g.bench_function("sha256", |b| {
        use sha2::Digest;
        b.iter(|| sha2::Sha256::digest(&layer));
    });
    g.finish();
}

/// A server and client certificate pair made by openssl (benches only).
fn tls_configs() -> Option<(Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>)> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let dir = tempfile::tempdir().ok()?;
    // A CA and a leaf it signed (webpki refuses a CA as the end entity).
    let script = r#"set -e
q() { openssl "$@" >/dev/null 2>&1; }
q req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=bench-ca -keyout ca.key -out ca.pem
q req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout k.pem -out c.csr
printf 'subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n' > ext
q x509 -req -in c.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile ext -out c.pem
"#;
    let ok = std::process::Command::new("bash")
        .args(["-c", script])
        .current_dir(dir.path())
        .status()
        .ok()?
        .success();
    if !ok {
        return None;
    }
    let ca = CertificateDer::from_pem_file(dir.path().join("ca.pem")).ok()?;
    let cert = CertificateDer::from_pem_file(dir.path().join("c.pem")).ok()?;
    let key = PrivateKeyDer::from_pem_file(dir.path().join("k.pem")).ok()?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .ok()?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .ok()?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).ok()?;
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Some((Arc::new(server), Arc::new(client)))
}

fn tls_records(c: &mut Criterion) {
    let Some((server, client)) = tls_configs() else {
        eprintln!("stage/tls skipped: no openssl");
        return;
    };
    let payload = disk_like();
    let mut g = c.benchmark_group("stage/tls");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(SIZE as u64));
    g.bench_function("encrypt_and_decrypt_one_thread", |b| {
        b.iter(|| {
            let name = "localhost".try_into().unwrap();
            let mut cl = rustls::ClientConnection::new(client.clone(), name).unwrap();
            let mut sv = rustls::ServerConnection::new(server.clone()).unwrap();
            let mut wire = Vec::new();
            let mut got = 0usize;
            let mut buf = vec![0u8; 256 << 10];
            let mut pump = |from: &mut dyn rustls_io::Side, to: &mut dyn rustls_io::Side| {
                wire.clear();
                while from.wants_write() {
                    from.write_tls(&mut wire).unwrap();
                }
                let mut rd = &wire[..];
                while !rd.is_empty() {
                    to.read_tls(&mut rd).unwrap();
                    if let Err(e) = to.process() {
                        panic!("tls: {e:?}");
                    }
                }
            };
            // Handshake.
            for _ in 0..4 {
                pump(&mut cl, &mut sv);
                pump(&mut sv, &mut cl);
            }
            // One record at a time: rustls holds little received plaintext.
            for piece in payload.chunks(16 << 10) {
                cl.writer().write_all(piece).unwrap();
                pump(&mut cl, &mut sv);
                loop {
                    match sv.reader().read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => got += n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            assert_eq!(got, SIZE);
        });
    });
    g.finish();
}

/// One interface over both rustls connection types for the pump above.
mod rustls_io {
    pub trait Side {
        fn wants_write(&self) -> bool;
        fn write_tls(&mut self, w: &mut Vec<u8>) -> std::io::Result<usize>;
        fn read_tls(&mut self, r: &mut &[u8]) -> std::io::Result<usize>;
        fn process(&mut self) -> Result<(), rustls::Error>;
    }
    macro_rules! side {
        ($t:ty) => {
            impl Side for $t {
                fn wants_write(&self) -> bool {
                    std::ops::Deref::deref(self).wants_write()
                }
                fn write_tls(&mut self, w: &mut Vec<u8>) -> std::io::Result<usize> {
                    std::ops::DerefMut::deref_mut(self).write_tls(w)
                }
                fn read_tls(&mut self, r: &mut &[u8]) -> std::io::Result<usize> {
                    std::ops::DerefMut::deref_mut(self).read_tls(r)
                }
                fn process(&mut self) -> Result<(), rustls::Error> {
                    self.process_new_packets().map(|_| ())
                }
            }
        };
    }
    side!(rustls::ClientConnection);
    side!(rustls::ServerConnection);
}

fn snappy_frames(c: &mut Criterion) {
    let data = disk_like();
    let mut e = snap::write::FrameEncoder::new(Vec::new());
    e.write_all(&data).unwrap();
    let framed = e.into_inner().unwrap();
    let mut g = c.benchmark_group("stage/snappy");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(SIZE as u64));
    g.bench_function("frame_decode", |b| {
        b.iter(|| {
            let mut d = snap::read::FrameDecoder::new(&framed[..]);
            assert_eq!(
                std::io::copy(&mut d, &mut std::io::sink()).unwrap(),
                SIZE as u64
            );
        });
    });
    g.finish();
}

#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group!(
        benches,
        qcow2_readers,
        xz_decoders,
        registry_layer,
        tls_records,
        snappy_frames
    );
}
use group::benches;
criterion_main!(benches);
