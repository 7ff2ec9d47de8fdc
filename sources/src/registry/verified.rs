//! A blob reader that hashes what passes and checks size and digest at
//! the end (R06): a blob that is short, long or altered is an error, never
//! a clean end of file. [`ReadAhead`] runs it on a thread of its own, so
//! receiving and hashing a layer overlap the inflate on the walk thread.

use std::io::{self, Read};

use formats::error::ErrorKind;
use sha2::Digest as _;

use super::manifest::Descriptor;
use super::RegistryError;

/// Hashes a blob as it is read and checks digest and size at its end.
pub(crate) struct Verified<R> {
    inner: R,
    sha256: Option<sha2::Sha256>,
    sha512: Option<sha2::Sha512>,
    desc: Descriptor,
    got: u64,
    checked: bool,
}

impl<R> Verified<R> {
    pub(crate) fn new(inner: R, desc: &Descriptor) -> Self {
        let sha512 = desc.digest.starts_with("sha512:");
        Verified {
            inner,
            sha256: (!sha512).then(sha2::Sha256::new),
            sha512: sha512.then(sha2::Sha512::new),
            desc: desc.clone(),
            got: 0,
            checked: false,
        }
    }

    fn error(&self, e: RegistryError) -> io::Error {
        e.into_io()
    }
}

impl<R: Read> Read for Verified<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Never more than the descriptor's size is taken (a server that
        // sends more cannot make us read on).
        let room = (self.desc.size - self.got).min(buf.len() as u64) as usize;
        let want = if room == 0 { buf.len().min(1) } else { room };
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            if !self.checked {
                if self.got != self.desc.size {
                    return Err(self.error(RegistryError::Layer {
                        digest: self.desc.digest.clone(),
                        detail: format!("blob ended at byte {} of {}", self.got, self.desc.size),
                        kind: ErrorKind::Truncated,
                    }));
                }
                let actual = match (self.sha256.take(), self.sha512.take()) {
                    (Some(h), _) => format!("sha256:{}", hex::encode(h.finalize())),
                    (_, Some(h)) => format!("sha512:{}", hex::encode(h.finalize())),
                    _ => unreachable!("one hasher is set"),
                };
                if actual != self.desc.digest {
                    return Err(self.error(RegistryError::Digest {
                        what: format!("layer {}", self.desc.digest),
                        expected: self.desc.digest.clone(),
                        actual,
                    }));
                }
                self.checked = true;
            }
            return Ok(0);
        }
        if room == 0 {
            return Err(self.error(RegistryError::Layer {
                digest: self.desc.digest.clone(),
                detail: format!("blob longer than its {} bytes", self.desc.size),
                kind: ErrorKind::Integrity,
            }));
        }
        self.got += n as u64;
        if let Some(h) = &mut self.sha256 {
            h.update(&buf[..n]);
        }
        if let Some(h) = &mut self.sha512 {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// Bytes handed over at a time by [`ReadAhead`], and how many may wait.
const AHEAD_CHUNK: usize = 256 << 10;
const AHEAD_DEPTH: usize = 4;

/// Reads `inner` on a thread of its own, at most a megabyte ahead: for a
/// compressed layer the walk thread inflates while this one receives and
/// hashes (SHA-256 of a 0.67 GB layer is about 0.35 s of CPU,
/// benches/RESULTS.md). Errors, including the digest check at the end,
/// arrive in order, as the inner reader returned them.
pub(crate) struct ReadAhead {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    at: usize,
    done: bool,
    failed: bool,
}

impl ReadAhead {
    pub(crate) fn spawn<R: Read + Send + 'static>(mut inner: R) -> io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel(AHEAD_DEPTH);
        std::thread::Builder::new()
            .name("blob".into())
            .spawn(move || loop {
                let mut buf = vec![0u8; AHEAD_CHUNK];
                let msg = match inner.read(&mut buf) {
                    Ok(n) => {
                        buf.truncate(n);
                        Ok(buf)
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => Err(e),
                };
                let last = !matches!(&msg, Ok(b) if !b.is_empty());
                // The reader went away: nothing more to do.
                if tx.send(msg).is_err() || last {
                    return;
                }
            })?;
        Ok(ReadAhead {
            rx,
            cur: Vec::new(),
            at: 0,
            done: false,
            failed: false,
        })
    }
}

impl Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.cur.len() {
            // After an error never a clean end of file.
            if self.failed {
                return Err(io::Error::other("the blob failed earlier"));
            }
            if self.done || buf.is_empty() {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(b)) if b.is_empty() => self.done = true,
                Ok(Ok(b)) => {
                    self.cur = b;
                    self.at = 0;
                }
                Ok(Err(e)) => {
                    self.failed = true;
                    return Err(e);
                }
                Err(_) => return Err(io::Error::other("the blob reader thread stopped")),
            }
        }
        let n = buf.len().min(self.cur.len() - self.at);
        buf[..n].copy_from_slice(&self.cur[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use formats::error::classify_io;

    #[test]
    fn a_blob_is_checked_for_size_and_digest_at_its_end() {
        let data = b"hello".to_vec();
        let desc = |digest: &str, size| Descriptor {
            media_type: String::new(),
            digest: digest.into(),
            size,
            urls: vec![],
            platform: None,
            annotations: Default::default(),
        };
        let good = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        let mut out = Vec::new();
        Verified::new(&data[..], &desc(good, 5))
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
        let wrong = format!("sha256:{}", "00".repeat(32));
        let e = Verified::new(&data[..], &desc(&wrong, 5))
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert_eq!(classify_io(&e), ErrorKind::Integrity);
        let e = Verified::new(&data[..], &desc(good, 6))
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert_eq!(classify_io(&e), ErrorKind::Truncated);
        let e = Verified::new(&data[..], &desc(good, 4))
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert_eq!(classify_io(&e), ErrorKind::Integrity);
    }
}
