//! Counting and hashing the source bytes as they are read, before any
//! decompression: the progress figure and `--checksum` both refer to the
//! bytes as served.

use formats::read_at::ReadAt;
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use md5::Digest;

use crate::SourceError;

/// A hash algorithm accepted by `--checksum`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// MD5 (for compatibility with published checksums only).
    Md5,
    /// SHA-1.
    Sha1,
    /// SHA-256.
    Sha256,
    /// SHA-512.
    Sha512,
}

impl Algorithm {
    /// The name used in `ALGO:HEX`.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "md5",
            Algorithm::Sha1 => "sha1",
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn digest_len(self) -> usize {
        match self {
            Algorithm::Md5 => 16,
            Algorithm::Sha1 => 20,
            Algorithm::Sha256 => 32,
            Algorithm::Sha512 => 64,
        }
    }
}

/// An expected checksum, `ALGO:HEX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// The expected digest.
    pub digest: Vec<u8>,
}

impl std::str::FromStr for Checksum {
    type Err = SourceError;

    fn from_str(spec: &str) -> Result<Self, SourceError> {
        let invalid = |reason| SourceError::InvalidChecksum {
            spec: formats::text::escape(spec),
            reason,
        };
        let (algo, hex_digest) = spec
            .split_once(':')
            .ok_or_else(|| invalid("expected ALGO:HEX"))?;
        // As CDI: spaces around either part are ignored, case too.
        let (algo, hex_digest) = (algo.trim(), hex_digest.trim());
        let algorithm = match algo.to_ascii_lowercase().as_str() {
            "md5" => Algorithm::Md5,
            "sha1" => Algorithm::Sha1,
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            _ => return Err(invalid("algorithm must be md5, sha1, sha256 or sha512")),
        };
        let digest = hex::decode(hex_digest).map_err(|_| invalid("digest is not hexadecimal"))?;
        if digest.len() != algorithm.digest_len() {
            return Err(invalid("digest has the wrong length for the algorithm"));
        }
        Ok(Checksum { algorithm, digest })
    }
}

enum Hasher {
    Md5(md5::Md5),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    fn new(a: Algorithm) -> Self {
        match a {
            Algorithm::Md5 => Hasher::Md5(md5::Md5::new()),
            Algorithm::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    fn update(&mut self, b: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(b),
            Hasher::Sha1(h) => h.update(b),
            Hasher::Sha256(h) => h.update(b),
            Hasher::Sha512(h) => h.update(b),
        }
    }

    fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Md5(h) => h.finalize().to_vec(),
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
        }
    }
}

/// Shared between the reading thread and whoever reports progress.
#[derive(Default)]
pub struct Meter {
    bytes: AtomicU64,
    hasher: Mutex<Option<(Algorithm, Vec<u8>, Hasher)>>,
}

impl std::fmt::Debug for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meter")
            .field("bytes", &self.bytes())
            .finish()
    }
}

impl Meter {
    /// A meter that also hashes for `checksum`, when given.
    pub fn new(checksum: Option<&Checksum>) -> Arc<Self> {
        Arc::new(Meter {
            bytes: AtomicU64::new(0),
            hasher: Mutex::new(
                checksum.map(|c| (c.algorithm, c.digest.clone(), Hasher::new(c.algorithm))),
            ),
        })
    }

    /// Source bytes read so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Whether a checksum is being computed.
    pub fn is_hashing(&self) -> bool {
        self.hasher.lock().is_ok_and(|h| h.is_some())
    }

    /// Counts `n` bytes read without hashing them (hole-aware reads,
    /// which are only used when no checksum is asked).
    pub fn advance(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    fn record(&self, b: &[u8]) {
        self.bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
        if let Ok(mut g) = self.hasher.lock() {
            if let Some((_, _, h)) = g.as_mut() {
                h.update(b);
            }
        }
    }

    /// Compares the digest of everything read with the expected one. Call
    /// once, after the source was read to its end.
    pub fn verify(&self) -> Result<(), SourceError> {
        let taken = self.hasher.lock().ok().and_then(|mut g| g.take());
        let Some((algorithm, expected, hasher)) = taken else {
            return Ok(());
        };
        let actual = hasher.finish();
        if actual == expected {
            Ok(())
        } else {
            Err(SourceError::ChecksumMismatch {
                algorithm: algorithm.name(),
                expected: hex::encode(expected),
                actual: hex::encode(actual),
            })
        }
    }
}

/// A reader that feeds a [`Meter`].
#[derive(Debug)]
pub struct MeteredReader<R> {
    inner: R,
    meter: Arc<Meter>,
}

impl<R> MeteredReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R, meter: Arc<Meter>) -> Self {
        MeteredReader { inner, meter }
    }
}

impl<R: Read> Read for MeteredReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.meter.record(&buf[..n]);
        Ok(n)
    }
}

/// Random access that feeds a [`Meter`] with the bytes it reads (counts
/// only: random access is never used when a checksum is asked, which
/// needs every byte once, in order). The count stops at the source size.
#[derive(Debug)]
pub struct MeteredReadAt<R> {
    inner: R,
    meter: Arc<Meter>,
}

impl<R> MeteredReadAt<R> {
    /// Wraps `inner`.
    pub fn new(inner: R, meter: Arc<Meter>) -> Self {
        MeteredReadAt { inner, meter }
    }
}

impl<R: ReadAt> MeteredReadAt<R> {
    fn count(&self, n: u64) {
        let size = self.inner.size();
        let _ = self
            .meter
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_add(n).min(size))
            });
    }
}

impl<R: ReadAt> ReadAt for MeteredReadAt<R> {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_exact_at(buf, offset)?;
        self.count(buf.len() as u64);
        Ok(())
    }

    fn prefetch(&self, offset: u64, len: u64) -> u64 {
        self.inner.prefetch(offset, len)
    }

    fn span_at(&self, offset: u64) -> u64 {
        self.inner.span_at(offset)
    }

    fn read_bytes_at(&self, offset: u64, len: usize) -> Option<io::Result<bytes::Bytes>> {
        let r = self.inner.read_bytes_at(offset, len)?;
        if r.is_ok() {
            self.count(len as u64);
        }
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_parses_and_validates_length() {
        let c: Checksum = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            .parse()
            .unwrap();
        assert_eq!(c.algorithm, Algorithm::Sha256);
        assert!("sha256:abcd".parse::<Checksum>().is_err());
        assert!("crc32:abcd".parse::<Checksum>().is_err());
        assert!("sha1".parse::<Checksum>().is_err());
        assert!("md5:zz".parse::<Checksum>().is_err());
    }

    #[test]
    fn meter_counts_and_verifies() {
        let c: Checksum = "md5:900150983cd24fb0d6963f7d28e17f72".parse().unwrap();
        let m = Meter::new(Some(&c));
        let mut r = MeteredReader::new(&b"abc"[..], m.clone());
        io::copy(&mut r, &mut io::sink()).unwrap();
        assert_eq!(m.bytes(), 3);
        m.verify().unwrap();
    }

    #[test]
    fn meter_reports_mismatch() {
        let c: Checksum = "md5:00000000000000000000000000000000".parse().unwrap();
        let m = Meter::new(Some(&c));
        io::copy(
            &mut MeteredReader::new(&b"abc"[..], m.clone()),
            &mut io::sink(),
        )
        .unwrap();
        let e = m.verify().unwrap_err();
        assert!(e.to_string().contains("checksum mismatch"));
    }
}
