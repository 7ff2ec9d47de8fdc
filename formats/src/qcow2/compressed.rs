//! Compressed clusters: a complete raw-deflate or zstd buffer that must
//! produce exactly one cluster ("decompression stops when it has produced a
//! cluster of data"; the input may carry bytes of the next cluster).
//! libdeflate decodes whole buffers about twice as fast as zlib; the rare
//! stream that would run past one cluster is finished with flate2, which can
//! stop mid-stream.

use std::io::Read;

use super::header::Compression;

/// One decompressor per thread: holds the libraries' contexts.
pub struct Decompressor {
    kind: Compression,
    deflate: libdeflater::Decompressor,
    zstd: Option<zstd::stream::raw::Decoder<'static>>,
}

impl std::fmt::Debug for Decompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decompressor")
            .field("kind", &self.kind)
            .finish()
    }
}

impl Decompressor {
    /// A decompressor for clusters of `kind`.
    pub fn new(kind: Compression) -> Self {
        Decompressor {
            kind,
            deflate: libdeflater::Decompressor::new(),
            zstd: None,
        }
    }

    /// Fills `out` (exactly one cluster) from `input`.
    pub fn cluster(&mut self, input: &[u8], out: &mut [u8]) -> Result<(), String> {
        match self.kind {
            Compression::Zlib => self.inflate(input, out),
            Compression::Zstd => self.unzstd(input, out),
        }
    }

    fn inflate(&mut self, input: &[u8], out: &mut [u8]) -> Result<(), String> {
        match self.deflate.deflate_decompress(input, out) {
            Ok(n) if n == out.len() => Ok(()),
            Ok(n) => Err(format!("produced {n} bytes, expected {}", out.len())),
            Err(libdeflater::DecompressionError::InsufficientSpace) => {
                // More than a cluster: take the first cluster, as qemu does.
                let mut d = flate2::read::DeflateDecoder::new(input);
                d.read_exact(out).map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    fn unzstd(&mut self, input: &[u8], out: &mut [u8]) -> Result<(), String> {
        use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
        let d = match &mut self.zstd {
            Some(d) => {
                d.reinit().map_err(|e| e.to_string())?;
                d
            }
            None => self
                .zstd
                .insert(zstd::stream::raw::Decoder::new().map_err(|e| e.to_string())?),
        };
        let mut inb = InBuffer::around(input);
        let mut outb = OutBuffer::around(out);
        loop {
            let before = (inb.pos(), outb.pos());
            let hint = d.run(&mut inb, &mut outb).map_err(|e| e.to_string())?;
            if outb.pos() == outb.capacity() {
                return Ok(());
            }
            if hint == 0 || (inb.pos(), outb.pos()) == before {
                return Err(format!(
                    "produced {} bytes, expected {}",
                    outb.pos(),
                    outb.capacity()
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn deflate(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn deflate_cluster_with_trailing_bytes_decodes() {
        let data = vec![7u8; 4096];
        let mut c = deflate(&data);
        c.extend([0xffu8; 300]);
        let mut out = vec![0u8; 4096];
        Decompressor::new(Compression::Zlib)
            .cluster(&c, &mut out)
            .unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn short_stream_is_refused() {
        let c = deflate(&[1u8; 1000]);
        let mut out = vec![0u8; 4096];
        assert!(Decompressor::new(Compression::Zlib)
            .cluster(&c, &mut out)
            .is_err());
    }

    #[test]
    fn long_stream_stops_at_one_cluster() {
        let data: Vec<u8> = (0..8192u32).map(|i| (i % 13) as u8).collect();
        let c = deflate(&data);
        let mut out = vec![0u8; 4096];
        Decompressor::new(Compression::Zlib)
            .cluster(&c, &mut out)
            .unwrap();
        assert_eq!(out, &data[..4096]);
    }

    #[test]
    fn garbage_is_refused() {
        let mut out = vec![0u8; 4096];
        assert!(Decompressor::new(Compression::Zlib)
            .cluster(&[0xff; 64], &mut out)
            .is_err());
        assert!(Decompressor::new(Compression::Zstd)
            .cluster(&[0xff; 64], &mut out)
            .is_err());
    }

    #[test]
    fn zstd_cluster_with_trailing_bytes_decodes_and_decoder_is_reused() {
        let mut d = Decompressor::new(Compression::Zstd);
        for fill in [1u8, 2] {
            let data = vec![fill; 4096];
            let mut c = zstd::bulk::compress(&data, 1).unwrap();
            c.extend([0x55u8; 100]);
            let mut out = vec![0u8; 4096];
            d.cluster(&c, &mut out).unwrap();
            assert_eq!(out, data);
        }
    }
}
