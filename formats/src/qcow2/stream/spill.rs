//! The stream reader's spill area: bytes that streamed past before
//! anything said what they are, kept in an unnamed file (bounded; past the
//! bound the rest of the stream is spooled there and read back by random
//! access), and what decides whether a byte may still be needed.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;

use super::Qcow2Stream;
use crate::qcow2::error::Qcow2Error;
use crate::qcow2::max_compressed_input;

impl<R: Read> Qcow2Stream<R> {
    pub(super) fn spill_file(&mut self) -> Result<&File, Qcow2Error> {
        if self.spill.file.is_none() {
            let f = tempfile::tempfile_in(&self.spill_opts.dir).map_err(|source| {
                Qcow2Error::Reading {
                    what: "spill file",
                    offset: 0,
                    source,
                }
            })?;
            self.spill.file = Some(f);
        }
        Ok(self.spill.file.as_ref().expect("just created"))
    }

    pub(super) fn keep(&mut self, off: u64, bytes: &[u8]) -> Result<(), Qcow2Error> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.write_spill(off, bytes)?;
        if self.spill.bytes > self.spill_opts.limit && !self.spooled {
            self.spool_rest()?;
        }
        Ok(())
    }

    /// Writes `bytes` of host offset `off` to the spill file and records
    /// the range.
    fn write_spill(&mut self, off: u64, bytes: &[u8]) -> Result<(), Qcow2Error> {
        self.spill.bytes += bytes.len() as u64;
        let f = self.spill_file()?;
        f.write_all_at(bytes, off)
            .map_err(|source| Qcow2Error::Reading {
                what: "spill file",
                offset: off,
                source,
            })?;
        match self.spill.ranges.last_mut() {
            Some(last) if last.1 == off => last.1 += bytes.len() as u64,
            _ => self.spill.ranges.push((off, off + bytes.len() as u64)),
        }
        Ok(())
    }

    /// The spill area is full: copy the rest of the stream to scratch and
    /// finish by random access over it (every later read is then served
    /// from the spill file).
    pub(super) fn spool_rest(&mut self) -> Result<(), Qcow2Error> {
        self.spooled = true;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let at = self.pos;
            let got = self.read_stream_short(&mut buf, "stream")?;
            if got == 0 {
                break;
            }
            self.write_spill(at, &buf[..got])?;
        }
        self.parse_passed_ahead()
    }

    /// Bytes that already streamed past, from the carried sectors and the
    /// spill file.
    pub(super) fn read_spilled(
        &mut self,
        what: &'static str,
        off: u64,
        len: u64,
    ) -> Result<Vec<u8>, Qcow2Error> {
        let end = off + len;
        let mut buf = vec![0u8; len as usize];
        let mut pos = off;
        while pos < end {
            let dst = (pos - off) as usize;
            let mut kept = None;
            for (ts, t) in [&self.last_tail, &self.last_meta] {
                if *ts <= pos && pos < ts + t.len() as u64 {
                    let n = ((ts + t.len() as u64).min(end) - pos) as usize;
                    let from = (pos - ts) as usize;
                    buf[dst..dst + n].copy_from_slice(&t[from..from + n]);
                    kept = Some(n);
                    break;
                }
            }
            if let Some(n) = kept {
                pos += n as u64;
                continue;
            }
            if let Some((&cs, c)) = self.carry.range(..=pos).next_back() {
                let ce = cs + c.len() as u64;
                if pos < ce {
                    let n = (ce.min(end) - pos) as usize;
                    let from = (pos - cs) as usize;
                    buf[dst..dst + n].copy_from_slice(&c[from..from + n]);
                    pos += n as u64;
                    continue;
                }
            }
            let Some(&(_, se)) = self
                .spill
                .ranges
                .iter()
                .find(|&&(s, e)| s <= pos && pos < e)
            else {
                return Err(Qcow2Error::InvalidField {
                    field: what,
                    value: off,
                    reason: "needed after it streamed past and was not kept (data before its L2 table that was discarded, or a backwards pointer)",
                });
            };
            let n = (se.min(end) - pos) as usize;
            let f = self.spill.file.as_ref().expect("ranges imply a file");
            f.read_exact_at(&mut buf[dst..dst + n], pos)
                .map_err(|source| Qcow2Error::Reading {
                    what: "spill file",
                    offset: pos,
                    source,
                })?;
            pos += n as u64;
        }
        Ok(buf)
    }

    /// Whether bytes at a host range could still be asked for: while the
    /// L1 or some L2 table is still ahead anything could, afterwards only
    /// what a known L2 entry points into.
    pub(super) fn may_be_needed(&self, at: u64, len: u64) -> bool {
        // Table padding (the rest of the L1 table's cluster) is never data.
        if self.finished || self.meta.covers(at, len) {
            return false;
        }
        if self.l1.is_none() || self.l2_ahead > 0 {
            return true;
        }
        self.referenced(at, len, self.out, u64::MAX)
    }

    /// Whether a known L2 entry for a guest offset at or past `from_guest`
    /// points into `[at, at + len)`, not counting entries that start at or
    /// after `carried` (they only share the last sector, which is carried).
    pub(super) fn referenced(&self, at: u64, len: u64, from_guest: u64, carried: u64) -> bool {
        let end = at + len;
        // Compressed data spans at most two clusters past its start.
        let lo = at.saturating_sub(max_compressed_input(self.cluster));
        let coverage = self.header.l2_coverage();
        self.rev.iter().any(|(t, v)| {
            // The last guest range this table maps (shared tables, Q65).
            let base = self.l2_last.get(t).map_or(0, |&i| i as u64 * coverage);
            let i = v.partition_point(|r| r.0 < lo);
            v[i..]
                .iter()
                .take_while(|r| r.0 < end)
                .any(|r| r.1 > at && base + r.2 >= from_guest && r.0 < carried)
        })
    }
}
