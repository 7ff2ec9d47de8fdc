//! Positional reads: the capability random-access formats (qcow2) need.
//! A local file has it; a compressed stream does not.

use std::io;

/// Positional reads, cut down to what a format reader needs.
pub trait ReadAt: Send + Sync {
    /// Total size in bytes.
    fn size(&self) -> u64;

    /// Fills `buf` from `offset`; an end of input before `buf` is full is an
    /// `UnexpectedEof` error (never zeroes: G4).
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

impl ReadAt for [u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let end = start
            .checked_add(buf.len())
            .filter(|&e| e <= self.len())
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(&self[start..end]);
        Ok(())
    }
}

impl ReadAt for Vec<u8> {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.as_slice().read_exact_at(buf, offset)
    }
}

impl ReadAt for std::fs::File {
    fn size(&self) -> u64 {
        self.metadata().map_or(0, |m| m.len())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_past_end_is_unexpected_eof_not_zeroes() {
        let v = vec![1u8; 10];
        let mut buf = [0u8; 4];
        assert!(v.read_exact_at(&mut buf, 8).is_err());
        v.read_exact_at(&mut buf, 6).unwrap();
        assert_eq!(buf, [1; 4]);
        assert!(v.read_exact_at(&mut buf, u64::MAX).is_err());
    }
}
