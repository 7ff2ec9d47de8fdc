//! A reader that watches a tar stream's structure as it passes through, so
//! the `tar` crate beneath it never reads an unbounded record into memory.
//!
//! The `tar` crate reads GNU long names (`L`, `K`) and PAX records (`x`,
//! `g`) whole into a `Vec` before handing out the entry they describe, and
//! silently drops PAX values it cannot parse. [`TarGuard`] sits under it,
//! parses each 512-byte header as it streams past and refuses, before the
//! record's bytes are read (docs/archives.md, "Bounds"):
//!
//! - a long name or long link record above [`MAX_NAME`] bytes, a PAX record
//!   block above [`MAX_PAX`] bytes (limit errors);
//! - PAX sparse entries (`GNU.sparse.*`, formats 0.0, 0.1 and 1.0) and old
//!   GNU sparse headers (`S`): sparse files are not extracted;
//! - a PAX `path` or `linkpath` holding a newline or NUL, and malformed
//!   PAX records (the crate would fall back to the truncated ustar name).
//!
//! It follows PAX `size` overrides, exactly as the crate does, so it stays
//! in step with the archive. After the first all-zero header block (the
//! end of the archive for the crate) it stops looking.

use std::io::{self, Read};

/// Largest GNU long name or long link record.
pub const MAX_NAME: u64 = 16 << 10;
/// Largest PAX extended header (all records of one entry).
pub const MAX_PAX: u64 = 1 << 20;
/// Most extension blocks of one old-GNU sparse entry (21 segments each)
/// when sparse entries are allowed: 86,000 segments, a few MiB of map.
pub const MAX_SPARSE_EXT: u32 = 4096;

const BLOCK: u64 = 512;

/// Why an archive was refused by the guard.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum TarGuardError {
    /// A long name or PAX record is larger than its bound.
    #[error("tar {what} of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Which record.
        what: &'static str,
        /// Its declared size.
        size: u64,
        /// The bound.
        limit: u64,
    },
    /// A sparse entry (GNU `S` or PAX `GNU.sparse.*`).
    #[error("sparse tar entries are not supported")]
    Sparse,
    /// A PAX path with a newline or NUL in it.
    #[error("PAX {key} holds a newline or NUL character")]
    BadPath {
        /// `path` or `linkpath`.
        key: &'static str,
    },
    /// A header or PAX record that does not parse.
    #[error("malformed tar {0}")]
    Malformed(&'static str),
}

impl TarGuardError {
    /// Whether the refusal is a resource bound (else a format problem).
    pub fn is_limit(&self) -> bool {
        matches!(self, TarGuardError::TooLarge { .. })
    }

    /// The guard's error inside an `io::Error` returned through the `tar`
    /// crate, if that is what it is.
    pub fn find(e: &io::Error) -> Option<&TarGuardError> {
        e.get_ref().and_then(|i| i.downcast_ref::<TarGuardError>())
    }
}

/// What the bytes at the current position are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Region {
    /// A 512-byte header block, `n` bytes of it seen.
    Header,
    /// The data of an `x` record, collected for parsing.
    Pax,
    /// An old-GNU sparse extension block (allowed sparse entries only).
    SparseExt,
    /// Data that is only passed through (file data, names, padding).
    Skip,
    /// Past the end of the archive.
    Done,
}

/// A `Read` adapter that checks a tar stream's headers as they pass.
#[derive(Debug)]
pub struct TarGuard<R> {
    inner: R,
    region: Region,
    /// Bytes left in the current region.
    left: u64,
    header: Vec<u8>,
    pax: Vec<u8>,
    /// Padding after the current record's data.
    pad: u64,
    /// A PAX `size` for the next entry.
    next_size: Option<u64>,
    /// The first refusal, returned again by every later read.
    failed: Option<TarGuardError>,
    /// Old GNU sparse entries (`S`) are read (host-assisted clones).
    sparse: bool,
    /// Extension blocks of the current sparse entry so far.
    ext_blocks: u32,
    /// The sparse entry's padded data, skipped after its extension blocks.
    ext_data: u64,
}

impl<R: Read> TarGuard<R> {
    /// Watches `inner`, which starts at a tar header.
    pub fn new(inner: R) -> Self {
        TarGuard {
            inner,
            region: Region::Header,
            left: BLOCK,
            header: Vec::with_capacity(BLOCK as usize),
            pax: Vec::new(),
            pad: 0,
            next_size: None,
            failed: None,
            sparse: false,
            ext_blocks: 0,
            ext_data: 0,
        }
    }

    /// Watches `inner` and lets old GNU sparse entries (`S`, what GNU tar
    /// `-S` writes, as CDI's cloner does) through, their extension blocks
    /// bounded by [`MAX_SPARSE_EXT`]; PAX sparse entries stay refused.
    pub fn allowing_sparse(inner: R) -> Self {
        TarGuard {
            sparse: true,
            ..TarGuard::new(inner)
        }
    }

    /// Walks `bytes` (just read) through the structure.
    fn observe(&mut self, mut bytes: &[u8]) -> Result<(), TarGuardError> {
        while !bytes.is_empty() && self.region != Region::Done {
            let n = (self.left.min(bytes.len() as u64)) as usize;
            let (now, rest) = bytes.split_at(n);
            bytes = rest;
            match self.region {
                Region::Header | Region::SparseExt => self.header.extend_from_slice(now),
                Region::Pax => self.pax.extend_from_slice(now),
                Region::Skip | Region::Done => {}
            }
            self.left -= n as u64;
            if self.left == 0 {
                self.region_done()?;
            }
        }
        Ok(())
    }

    fn region_done(&mut self) -> Result<(), TarGuardError> {
        match self.region {
            Region::Header => {
                let h = std::mem::take(&mut self.header);
                self.header_done(&h)?;
                self.header = h;
                self.header.clear();
            }
            Region::Pax => {
                let records = std::mem::take(&mut self.pax);
                self.next_size = parse_pax(&records)?;
                self.skip_then_header(self.pad);
            }
            Region::SparseExt => {
                // Byte 504 of an extension block: another one follows.
                let more = self.header[504] != 0;
                self.header.clear();
                if more {
                    self.ext_blocks += 1;
                    if self.ext_blocks > MAX_SPARSE_EXT {
                        return Err(TarGuardError::TooLarge {
                            what: "sparse map",
                            size: u64::from(self.ext_blocks),
                            limit: u64::from(MAX_SPARSE_EXT),
                        });
                    }
                    self.left = BLOCK;
                } else {
                    self.skip_then_header(self.ext_data);
                }
            }
            Region::Skip => self.expect_header(),
            Region::Done => {}
        }
        Ok(())
    }

    fn expect_header(&mut self) {
        self.region = Region::Header;
        self.left = BLOCK;
    }

    fn skip_then_header(&mut self, n: u64) {
        if n == 0 {
            self.expect_header();
        } else {
            self.region = Region::Skip;
            self.left = n;
        }
    }

    fn header_done(&mut self, h: &[u8]) -> Result<(), TarGuardError> {
        if h.iter().all(|&b| b == 0) {
            self.region = Region::Done;
            return Ok(());
        }
        let kind = h[156];
        let declared = parse_size(&h[124..136])?;
        let extension = matches!(kind, b'L' | b'K' | b'x' | b'g');
        let size = if extension {
            declared
        } else {
            self.next_size.take().unwrap_or(declared)
        };
        let padded = size
            .checked_next_multiple_of(BLOCK)
            .ok_or(TarGuardError::Malformed("size"))?;
        self.pad = padded - size;
        match kind {
            b'L' | b'K' if size > MAX_NAME => {
                return Err(TarGuardError::TooLarge {
                    what: "long name",
                    size,
                    limit: MAX_NAME,
                })
            }
            b'x' | b'g' if size > MAX_PAX => {
                return Err(TarGuardError::TooLarge {
                    what: "PAX header",
                    size,
                    limit: MAX_PAX,
                })
            }
            b'S' if !self.sparse => return Err(TarGuardError::Sparse),
            // Byte 482: the map continues in extension blocks, which come
            // before the data.
            b'S' if h[482] != 0 => {
                self.region = Region::SparseExt;
                self.left = BLOCK;
                self.ext_blocks = 1;
                self.ext_data = padded;
                return Ok(());
            }
            _ => {}
        }
        if kind == b'x' && size > 0 {
            self.region = Region::Pax;
            self.left = size;
            self.pax = Vec::with_capacity(size as usize);
        } else {
            // Global PAX records (`g`) are not applied by the crate; they
            // are bounded above and passed through like names and data.
            self.skip_then_header(padded);
        }
        Ok(())
    }
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(e) = &self.failed {
            return Err(io::Error::new(io::ErrorKind::InvalidData, e.clone()));
        }
        let n = self.inner.read(buf)?;
        if let Err(e) = self.observe(&buf[..n]) {
            self.failed = Some(e.clone());
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
        Ok(n)
    }
}

/// A tar numeric field: octal digits (NUL or space terminated) or GNU
/// base-256 (high bit of the first byte set).
fn parse_size(field: &[u8]) -> Result<u64, TarGuardError> {
    if field[0] & 0x80 != 0 {
        // Base-256, big-endian; more than 8 significant bytes cannot fit.
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            v = v
                .checked_mul(256)
                .and_then(|v| v.checked_add(u64::from(b)))
                .ok_or(TarGuardError::Malformed("size"))?;
        }
        return Ok(v);
    }
    let digits = field
        .iter()
        .skip_while(|&&b| b == b' ')
        .take_while(|&&b| b != 0 && b != b' ');
    let mut v: u64 = 0;
    for &d in digits {
        if !(b'0'..=b'7').contains(&d) {
            return Err(TarGuardError::Malformed("size"));
        }
        v = v
            .checked_mul(8)
            .and_then(|v| v.checked_add(u64::from(d - b'0')))
            .ok_or(TarGuardError::Malformed("size"))?;
    }
    Ok(v)
}

/// Parses PAX records (`"%d %s=%s\n"`): refuses sparse keys and bad paths;
/// returns the `size` override, if any.
fn parse_pax(mut records: &[u8]) -> Result<Option<u64>, TarGuardError> {
    let mut size = None;
    while !records.is_empty() {
        let sp = records
            .iter()
            .take(20)
            .position(|&b| b == b' ')
            .ok_or(TarGuardError::Malformed("PAX record length"))?;
        let len: usize = std::str::from_utf8(&records[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|&l| l > sp + 1 && l <= records.len())
            .ok_or(TarGuardError::Malformed("PAX record length"))?;
        let record = &records[sp + 1..len];
        records = &records[len..];
        let Some(body) = record.strip_suffix(b"\n") else {
            return Err(TarGuardError::Malformed("PAX record"));
        };
        let eq = body
            .iter()
            .position(|&b| b == b'=')
            .ok_or(TarGuardError::Malformed("PAX record"))?;
        let (key, value) = (&body[..eq], &body[eq + 1..]);
        match key {
            b"path" | b"linkpath" if value.iter().any(|&b| b == b'\n' || b == 0) => {
                return Err(TarGuardError::BadPath {
                    key: if key == b"path" { "path" } else { "linkpath" },
                });
            }
            b"size" => {
                size = Some(
                    std::str::from_utf8(value)
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok())
                        .filter(|&s| s <= i64::MAX as u64)
                        .ok_or(TarGuardError::Malformed("PAX size"))?,
                );
            }
            k if k.starts_with(b"GNU.sparse.") => return Err(TarGuardError::Sparse),
            _ => {}
        }
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, kind: u8, size: u64) -> Vec<u8> {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).unwrap();
        h.set_entry_type(tar::EntryType::new(kind));
        h.set_size(size);
        h.set_mode(0o644);
        h.set_cksum();
        h.as_bytes().to_vec()
    }

    fn record(key: &str, value: &[u8]) -> Vec<u8> {
        // The length counts itself: try lengths until it is consistent.
        let body = [b" ".as_slice(), key.as_bytes(), b"=", value, b"\n"].concat();
        let mut n = body.len() + 1;
        while n.to_string().len() + body.len() != n {
            n += 1;
        }
        [n.to_string().into_bytes(), body].concat()
    }

    fn with_pax(records: &[u8], name: &str, data: &[u8]) -> Vec<u8> {
        let mut v = header("pax", b'x', records.len() as u64);
        let mut r = records.to_vec();
        r.resize(r.len().next_multiple_of(512), 0);
        v.extend(r);
        v.extend(header(name, b'0', 0));
        let mut d = data.to_vec();
        d.resize(d.len().next_multiple_of(512), 0);
        v.extend(d);
        v.extend([0u8; 1024]);
        v
    }

    fn run(bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>, io::Error> {
        let mut a = tar::Archive::new(TarGuard::new(bytes));
        let mut out = Vec::new();
        for e in a.entries()? {
            let mut e = e?;
            let name = e.path()?.display().to_string();
            let mut d = Vec::new();
            e.read_to_end(&mut d)?;
            out.push((name, d));
        }
        Ok(out)
    }

    fn refusal(bytes: &[u8]) -> TarGuardError {
        let e = run(bytes).expect_err("must be refused");
        TarGuardError::find(&e).cloned().expect("a guard error")
    }

    #[test]
    fn pax_size_override_is_followed() {
        // The ustar size says 0; PAX says 700: the entry has 700 bytes and
        // the next header comes after them.
        let data = vec![7u8; 700];
        let mut t = with_pax(&record("size", b"700"), "f", &data);
        t.truncate(t.len() - 1024);
        t.extend(header("g", b'0', 3));
        t.extend(b"abc");
        t.resize(t.len().next_multiple_of(512) + 1024, 0);
        let got = run(&t).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].1.len(), 700);
        assert_eq!(got[1], ("g".to_string(), b"abc".to_vec()));
    }

    #[test]
    fn a_huge_long_name_is_refused_from_its_header() {
        // Only the header: the guard refuses before any name byte arrives.
        let mut t = header("././@LongLink", b'L', 512 << 20);
        t.extend([b'a'; 512]);
        assert_eq!(
            refusal(&t),
            TarGuardError::TooLarge {
                what: "long name",
                size: 512 << 20,
                limit: MAX_NAME
            }
        );
        let t = header("pax", b'x', MAX_PAX + 1);
        assert!(refusal(&t).is_limit());
        // At the bound it is fine.
        let mut t = header("././@LongLink", b'L', 300);
        t.extend({
            let mut n = vec![b'n'; 299];
            n.push(0);
            n.resize(512, 0);
            n
        });
        t.extend(header("short", b'0', 0));
        t.extend([0u8; 1024]);
        assert_eq!(run(&t).unwrap()[0].0, "n".repeat(299));
    }

    #[test]
    fn pax_sparse_and_bad_paths_are_refused() {
        for (k, v) in [
            ("GNU.sparse.major", "1"),
            ("GNU.sparse.map", "0,10"),
            ("GNU.sparse.offset", "0"),
        ] {
            assert_eq!(
                refusal(&with_pax(&record(k, v.as_bytes()), "f", b"")),
                TarGuardError::Sparse
            );
        }
        assert_eq!(
            refusal(&with_pax(&record("path", b"a\nb"), "f", b"")),
            TarGuardError::BadPath { key: "path" }
        );
        assert_eq!(
            refusal(&with_pax(&record("linkpath", b"a\0b"), "f", b"")),
            TarGuardError::BadPath { key: "linkpath" }
        );
        assert_eq!(
            refusal(&with_pax(b"99 path=x\n", "f", b"")),
            TarGuardError::Malformed("PAX record length")
        );
        assert_eq!(refusal(&header("s", b'S', 0)), TarGuardError::Sparse);
    }

    #[test]
    fn sizes_parse_in_octal_and_base_256() {
        assert_eq!(parse_size(b"00000001750\0").unwrap(), 0o1750);
        assert_eq!(parse_size(b"     12 \0\0\0\0").unwrap(), 10);
        let mut b = [0u8; 12];
        b[0] = 0x80;
        b[10] = 1;
        b[11] = 2;
        assert_eq!(parse_size(&b).unwrap(), 258);
        assert_eq!(
            parse_size(b"0000000009\0\0"),
            Err(TarGuardError::Malformed("size"))
        );
    }

    /// An old-GNU sparse entry of one 512-byte data segment at offset 4096
    /// of a 4608-byte file, its map continued in `ext` extension blocks
    /// (each naming nothing more), then the end of the archive.
    fn gnu_sparse(ext: usize) -> Vec<u8> {
        let mut h = tar::Header::new_gnu();
        h.set_path("disk.img").unwrap();
        h.set_entry_type(tar::EntryType::GNUSparse);
        h.set_size(512);
        h.set_mode(0o644);
        {
            let g = h.as_gnu_mut().unwrap();
            g.sparse[0].offset.copy_from_slice(b"00000010000\0");
            g.sparse[0].numbytes.copy_from_slice(b"00000001000\0");
            g.realsize.copy_from_slice(b"00000011000\0");
            g.isextended[0] = u8::from(ext > 0);
        }
        h.set_cksum();
        let mut out = h.as_bytes().to_vec();
        for i in 0..ext {
            let mut b = vec![0u8; 512];
            b[504] = u8::from(i + 1 < ext);
            out.extend(b);
        }
        out.extend(vec![0x5a; 512]);
        out.extend(vec![0; 1024]);
        out
    }

    #[test]
    fn gnu_sparse_entries_only_when_allowed_and_their_map_is_bounded() {
        assert_eq!(refusal(&gnu_sparse(0)), TarGuardError::Sparse);
        let read = |bytes: &[u8]| -> io::Result<Vec<u8>> {
            let mut a = tar::Archive::new(TarGuard::allowing_sparse(bytes));
            let mut e = a.entries()?.next().expect("one entry")?;
            assert_eq!(e.size(), 4608, "the expanded size");
            let mut d = Vec::new();
            e.read_to_end(&mut d)?;
            Ok(d)
        };
        for ext in [0, 1, 3] {
            let d = read(&gnu_sparse(ext)).unwrap();
            assert_eq!(d.len(), 4608);
            assert!(d[..4096].iter().all(|&b| b == 0) && d[4096..4608].iter().all(|&b| b == 0x5a));
        }
        let e = read(&gnu_sparse(MAX_SPARSE_EXT as usize + 1)).unwrap_err();
        assert!(
            TarGuardError::find(&e).is_some_and(TarGuardError::is_limit),
            "{e}"
        );
    }
}
