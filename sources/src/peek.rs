//! A buffered reader that can look ahead without consuming, for detection
//! (tar's magic sits at offset 257) and for checks between gzip members.

use std::io::{self, BufRead, Read};

/// Default buffer size: large enough that the layers above read in big
/// pieces, small enough to keep memory flat.
pub const PEEK_BUFFER: usize = 256 * 1024;

/// A `BufRead` over any `Read` whose buffer can be topped up to a wanted
/// length with [`PeekReader::peek`].
#[derive(Debug)]
pub struct PeekReader<R> {
    inner: R,
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    eof: bool,
}

impl<R: Read> PeekReader<R> {
    /// Wraps `inner` with the default buffer size.
    pub fn new(inner: R) -> Self {
        Self::with_capacity(PEEK_BUFFER, inner)
    }

    /// Wraps `inner` with a buffer of `cap` bytes.
    pub fn with_capacity(cap: usize, inner: R) -> Self {
        PeekReader {
            inner,
            buf: vec![0; cap.max(1)],
            pos: 0,
            end: 0,
            eof: false,
        }
    }

    /// Returns at least `n` buffered bytes, or fewer only when the stream
    /// ends first; consumes nothing. `n` is capped at the buffer size.
    pub fn peek(&mut self, n: usize) -> io::Result<&[u8]> {
        let n = n.min(self.buf.len());
        if self.end - self.pos < n && self.pos > 0 {
            self.buf.copy_within(self.pos..self.end, 0);
            self.end -= self.pos;
            self.pos = 0;
        }
        while self.end - self.pos < n && !self.eof {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(k) => self.end += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(&self.buf[self.pos..self.end])
    }

    /// The wrapped reader.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }
}

impl<R: Read> Read for PeekReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        // Large reads bypass the buffer once it is empty.
        if self.pos == self.end && out.len() >= self.buf.len() {
            if self.eof {
                return Ok(0);
            }
            return self.inner.read(out);
        }
        let avail = self.fill_buf()?;
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: Read> BufRead for PeekReader<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos == self.end && !self.eof {
            self.pos = 0;
            self.end = 0;
            loop {
                match self.inner.read(&mut self.buf) {
                    Ok(0) => {
                        self.eof = true;
                        break;
                    }
                    Ok(k) => {
                        self.end = k;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(&self.buf[self.pos..self.end])
    }

    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that returns one byte per call, to exercise refills.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() || buf.is_empty() {
                return Ok(0);
            }
            buf[0] = self.0[0];
            self.0 = &self.0[1..];
            Ok(1)
        }
    }

    #[test]
    fn peek_does_not_consume_and_tops_up_short_reads() {
        let data: Vec<u8> = (0..=255).collect();
        let mut r = PeekReader::with_capacity(64, Trickle(&data));
        assert_eq!(r.peek(10).unwrap(), &data[..10]);
        let mut first = [0u8; 5];
        r.read_exact(&mut first).unwrap();
        assert_eq!(first, [0, 1, 2, 3, 4]);
        assert_eq!(&r.peek(60).unwrap()[..60], &data[5..65]);
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, &data[5..]);
    }

    #[test]
    fn peek_past_end_returns_what_there_is() {
        let mut r = PeekReader::new(&b"abc"[..]);
        assert_eq!(r.peek(512).unwrap(), b"abc");
    }
}
