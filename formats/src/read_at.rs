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

    /// Hints that `[offset, offset + len)` will be read soon, so the source
    /// can start fetching it while the current piece is processed. Returns
    /// how many bytes from `offset` were taken on (0: busy, ask later);
    /// sources that do not prefetch take everything.
    fn prefetch(&self, _offset: u64, len: u64) -> u64 {
        len
    }

    /// How many bytes from `offset` one [`ReadAt::read_bytes_at`] can
    /// return (a source holding its data in blocks ends there).
    fn span_at(&self, _offset: u64) -> u64 {
        u64::MAX
    }

    /// `len` bytes at `offset` without a copy, when the source holds them
    /// in memory (HTTP range blocks); None: use `read_exact_at`.
    fn read_bytes_at(&self, _offset: u64, _len: usize) -> Option<io::Result<bytes::Bytes>> {
        None
    }
}

/// How far ahead of the reading position [`Readahead`] asks for data.
pub const READAHEAD_WINDOW: u64 = 16 << 20;

/// Keeps prefetch requests a window ahead of a mostly sequential reader,
/// so a cold file is read with a deep queue instead of one synchronous
/// request at a time.
#[derive(Debug, Default, Clone, Copy)]
pub struct Readahead {
    done_to: u64,
}

impl Readahead {
    /// Called before reading at `pos`.
    pub fn ahead(&mut self, src: &(impl ReadAt + ?Sized), pos: u64) {
        if pos > self.done_to || pos + 2 * READAHEAD_WINDOW < self.done_to {
            // A jump: restart the window here.
            self.done_to = pos;
        }
        while self.done_to < pos + READAHEAD_WINDOW {
            let n = src.prefetch(self.done_to, PREFETCH_SEGMENT);
            if n == 0 {
                break;
            }
            self.done_to += n;
        }
    }
}

impl<T: ReadAt + ?Sized> ReadAt for Box<T> {
    fn size(&self) -> u64 {
        (**self).size()
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).read_exact_at(buf, offset)
    }

    fn prefetch(&self, offset: u64, len: u64) -> u64 {
        (**self).prefetch(offset, len)
    }

    fn span_at(&self, offset: u64) -> u64 {
        (**self).span_at(offset)
    }

    fn read_bytes_at(&self, offset: u64, len: usize) -> Option<io::Result<bytes::Bytes>> {
        (**self).read_bytes_at(offset, len)
    }
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

    fn prefetch(&self, offset: u64, len: u64) -> u64 {
        // Advice only: a failure changes nothing but speed.
        let _ = rustix::fs::fadvise(
            self,
            offset,
            std::num::NonZeroU64::new(len),
            rustix::fs::Advice::WillNeed,
        );
        len
    }
}

/// Size of one prefetch request of a [`PrefetchFile`].
pub const PREFETCH_SEGMENT: u64 = 1 << 20;
/// Threads reading ahead for a [`PrefetchFile`]: a VM disk delivers about
/// twice the throughput at queue depth 4 than at depth 1 (measured in
/// benches/RESULTS.md), and qemu-img keeps 8 requests in flight.
pub const PREFETCH_THREADS: usize = 4;

/// A local file whose [`ReadAt::prefetch`] hints are served by a few
/// threads reading ahead into the page cache, so a cold image is read with
/// a deep queue while the reader itself reads sequentially.
#[derive(Debug)]
pub struct PrefetchFile {
    file: std::sync::Arc<std::fs::File>,
    size: u64,
    tx: Option<std::sync::mpsc::SyncSender<(u64, u64)>>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl PrefetchFile {
    /// Wraps `file`.
    pub fn new(file: std::fs::File) -> io::Result<Self> {
        let size = file.metadata()?.len();
        let file = std::sync::Arc::new(file);
        let (tx, rx) = std::sync::mpsc::sync_channel::<(u64, u64)>(2 * PREFETCH_THREADS);
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        let workers = (0..PREFETCH_THREADS)
            .map(|_| {
                let (file, rx) = (file.clone(), rx.clone());
                std::thread::spawn(move || {
                    loop {
                        let job = match rx.lock() {
                            Ok(r) => r.recv(),
                            Err(_) => return,
                        };
                        let Ok((off, len)) = job else { return };
                        // WILLNEED starts the reads without copying the
                        // data out (reading it into a scratch buffer cost
                        // a second copy of every byte: benches/RESULTS.md);
                        // several threads keep several requests in flight.
                        let _ = rustix::fs::fadvise(
                            &*file,
                            off,
                            std::num::NonZeroU64::new(len),
                            rustix::fs::Advice::WillNeed,
                        );
                    }
                })
            })
            .collect();
        Ok(PrefetchFile {
            file,
            size,
            tx: Some(tx),
            workers,
        })
    }
}

impl PrefetchFile {
    /// The file, for calls other than reads (`SEEK_DATA`).
    pub fn file(&self) -> &std::fs::File {
        &self.file
    }
}

impl ReadAt for PrefetchFile {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(&*self.file, buf, offset)
    }

    fn prefetch(&self, offset: u64, len: u64) -> u64 {
        if offset >= self.size {
            // Nothing to fetch: report it taken so the window moves on.
            return len;
        }
        let n = len.min(PREFETCH_SEGMENT).min(self.size - offset);
        match &self.tx {
            Some(tx) if tx.try_send((offset, n)).is_ok() => n,
            _ => 0,
        }
    }
}

impl Drop for PrefetchFile {
    fn drop(&mut self) {
        self.tx = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_past_end_is_unexpected_eof_not_zeroes() {
        let v = vec![1u8; 10];
        let mut buf = [9u8; 4];
        let e = v.read_exact_at(&mut buf, 8).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        // Nothing was made up: the buffer is untouched, not zero-filled.
        assert_eq!(buf, [9; 4]);
        v.read_exact_at(&mut buf, 6).unwrap();
        assert_eq!(buf, [1; 4]);
        let e = v.read_exact_at(&mut buf, u64::MAX).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        // A file behaves the same.
        let mut f = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut f, &[1u8; 10]).unwrap();
        let e = ReadAt::read_exact_at(&f, &mut buf, 8).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }
}
