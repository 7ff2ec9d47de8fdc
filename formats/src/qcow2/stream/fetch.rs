//! How the stream reader gets bytes: forward to a host offset (parsing
//! the metadata met on the way, keeping what may still be needed), and the
//! bytes of a host range from what already passed or from the stream.

use std::io::Read;

use bytes::BytesMut;

use super::meta::merge;
use super::{cut, read_full, Qcow2Stream, Role, MAX_CARRIED, MAX_CLAIMS};
use crate::extent::MAX_DATA_EXTENT;
use crate::qcow2::error::Qcow2Error;

impl<R: Read> Qcow2Stream<R> {
    /// Streams forward to `target`, parsing metadata on the way and
    /// spilling bytes whose meaning is not known yet.
    pub(super) fn advance_to(&mut self, target: u64) -> Result<(), Qcow2Error> {
        if self.spooled {
            self.parse_passed_ahead()?;
            if target > self.pos {
                return Err(cut("Image", target, 0, self.pos));
            }
            return Ok(());
        }
        while self.pos < target {
            if self.ahead.first().is_some_and(|a| a.0 <= self.pos) {
                self.take_group()?;
                continue;
            }
            let next_meta = self.ahead.first().map_or(u64::MAX, |a| a.0);
            let stop = target.min(next_meta);
            let n = (stop - self.pos).min(MAX_DATA_EXTENT as u64);
            let mut buf = vec![0u8; n as usize];
            let at = self.pos;
            self.read_stream(&mut buf, "data")?;
            if self.may_be_needed(at, n) {
                self.keep(at, &buf)?;
            }
        }
        Ok(())
    }

    pub(super) fn read_stream(
        &mut self,
        buf: &mut [u8],
        what: &'static str,
    ) -> Result<(), Qcow2Error> {
        let at = self.pos;
        let got = self.read_stream_short(buf, what)?;
        if got < buf.len() {
            return Err(cut("Stream", at, buf.len() as u64, at + got as u64));
        }
        Ok(())
    }

    /// Reads up to `buf.len()` bytes; fewer only at the end of the stream.
    pub(super) fn read_stream_short(
        &mut self,
        buf: &mut [u8],
        what: &'static str,
    ) -> Result<usize, Qcow2Error> {
        let at = self.pos;
        let got = read_full(&mut self.input, buf).map_err(|source| Qcow2Error::Reading {
            what,
            offset: at,
            source,
        })?;
        self.pos += got as u64;
        Ok(got)
    }

    /// Bytes at `[host, host + len)`: from the spill file for what already
    /// streamed past, from the stream for the rest.
    pub(super) fn read_host(
        &mut self,
        what: &'static str,
        host: u64,
        len: u64,
        guest_end: u64,
    ) -> Result<BytesMut, Qcow2Error> {
        let (out, got) = self.read_host_short(what, host, len, guest_end)?;
        if got < len {
            return Err(cut("Stream", host, len, host + got));
        }
        Ok(out)
    }

    /// As [`Self::read_host`], but the stream may end early; returns the
    /// buffer and how many bytes are valid.
    /// `guest_end` ends the guest range being produced: bytes that a guest
    /// offset past it also maps are kept (shared clusters, Q65).
    pub(super) fn read_host_short(
        &mut self,
        what: &'static str,
        host: u64,
        len: u64,
        guest_end: u64,
    ) -> Result<(BytesMut, u64), Qcow2Error> {
        if let Some(claims) = &mut self.claims {
            if claims.len() >= MAX_CLAIMS {
                *claims = merge(std::mem::take(claims));
                if claims.len() >= MAX_CLAIMS / 2 {
                    return Err(Qcow2Error::Limit {
                        what: "data ranges read before the refcount table",
                        limit: MAX_CLAIMS as u64,
                    });
                }
            }
            claims.push((host, host + len));
        }
        // A pooled buffer when the consumer gives them back (no page faults
        // per extent, crate::pool); every byte is written below, and a
        // short read's tail is zeroed.
        let mut out = match &self.pool {
            Some(p) => p.take(len as usize, len as usize),
            None => BytesMut::zeroed(len as usize),
        };
        let behind = self.pos.saturating_sub(host).min(len);
        if behind > 0 {
            let b = self.read_spilled(what, host, behind)?;
            out[..behind as usize].copy_from_slice(&b);
        }
        if behind < len {
            self.advance_to(host + behind)?;
            let at = self.pos;
            // Data on metadata still ahead (a refcount block, the snapshot
            // table) is refused as random access refuses it (D6).
            if let Some(&(off, _, role)) = self.ahead.first() {
                if off < host + len {
                    return Err(Qcow2Error::Overlap {
                        what,
                        offset: host,
                        other: match role {
                            Role::L1 => "the active L1 table",
                            Role::RefcountTable => "the refcount table",
                            Role::L2 => "an L2 table",
                            Role::Snapshot(_) => "the snapshot table",
                            Role::Skip => "metadata",
                        },
                    });
                }
            }
            let got = self.read_stream_short(&mut out[behind as usize..], what)?;
            out[behind as usize + got..].fill(0);
            // Shared clusters (Q65): keep what a later guest offset maps to.
            let fresh = &out[behind as usize..behind as usize + got];
            let after = guest_end.div_ceil(self.cluster) * self.cluster;
            let tail = got.min(512);
            let tail_start = at + (got - tail) as u64;
            self.last_tail = (tail_start, fresh[got - tail..].to_vec());
            if self.referenced(at, got as u64, after, tail_start) {
                let fresh = fresh.to_vec();
                self.keep(at, &fresh)?;
            } else if self.referenced(tail_start, tail as u64, after, u64::MAX) {
                // Only a shared last sector: carry it in memory.
                let t = fresh[got - tail..].to_vec();
                self.carry.insert(tail_start, t);
                if self.carry.len() > MAX_CARRIED {
                    if let Some((off, t)) = self.carry.pop_first() {
                        self.keep(off, &t)?;
                    }
                }
            }
            return Ok((out, behind + got as u64));
        }
        Ok((out, len))
    }
}
