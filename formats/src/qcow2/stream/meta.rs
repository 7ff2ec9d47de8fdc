//! The stream reader's metadata: what is still ahead in the stream, read
//! as a group when the stream gets there, and parsed (refcount table and
//! blocks, L1, L2 tables, snapshot table), with the checks random access
//! makes up front (docs/formats.md, "Two readers, one outcome").

use std::io::Read;

use super::{cut, Qcow2Stream, Role};
use crate::qcow2::error::Qcow2Error;
use crate::qcow2::map::be64;
use crate::qcow2::table::{decode_l1, decode_l2, decode_refcount_entry, L2Entry};
use crate::qcow2::{check_snapshot_table_len, snapshot_entry_len, SNAPSHOT_FIXED};

impl<R: Read> Qcow2Stream<R> {
    /// Notes metadata at `[off, off + len)`: parsed when the stream gets
    /// there, or now from what was kept if it already streamed past.
    pub(super) fn add_meta(&mut self, off: u64, len: u64, role: Role) -> Result<(), Qcow2Error> {
        // Anything not wholly behind is read (the part still ahead must be
        // in the file, as random access requires). Offsets come from the
        // image: an end past u64 saturates and is then beyond any file.
        if off.saturating_add(len) > self.pos || self.spooled {
            if role == Role::L2 && self.ahead.insert((off, len, role)) {
                self.l2_ahead += 1;
            } else {
                self.ahead.insert((off, len, role));
            }
            return Ok(());
        }
        if role == Role::Skip || (role == Role::L2 && self.finished) {
            // Streamed past: it is inside the file, and nothing reads it.
            return Ok(());
        }
        let bytes = self.read_spilled("metadata", off, len)?;
        self.parse_meta(role, off, &bytes)
    }

    pub(super) fn parse_meta(
        &mut self,
        role: Role,
        off: u64,
        bytes: &[u8],
    ) -> Result<(), Qcow2Error> {
        let cluster = self.cluster;
        match role {
            Role::RefcountTable => {
                let claims = self.claims.take().unwrap_or_default();
                let claims = merge(claims);
                for e in bytes.chunks_exact(8).map(be64) {
                    let Some(e) = decode_refcount_entry(e, cluster)? else {
                        continue;
                    };
                    // What random access refuses because it reads this
                    // table first: L2 tables and data on a refcount block.
                    if self.l2_last.contains_key(&e) {
                        return Err(Qcow2Error::Overlap {
                            what: "L2 table",
                            offset: e,
                            other: "a refcount block",
                        });
                    }
                    if let Some(&(h, _)) = claims
                        .get(claims.partition_point(|c| c.1 <= e))
                        .filter(|c| c.0 < e.saturating_add(cluster))
                    {
                        return Err(Qcow2Error::Overlap {
                            what: "Data cluster",
                            offset: h.max(e),
                            other: "a refcount block",
                        });
                    }
                    self.meta.add(e, cluster, "a refcount block");
                    self.add_meta(e, cluster, Role::Skip)?;
                }
                self.meta.seal();
            }
            Role::L1 => {
                let entries = self.header.l1_size as usize;
                let mut l1 = Vec::with_capacity(entries);
                for e in bytes.chunks_exact(8).take(entries).map(be64) {
                    let l2 = decode_l1(e, cluster)?.unwrap_or(0);
                    if l2 != 0 {
                        if let Some(other) = self.meta.overlap(l2, cluster) {
                            return Err(Qcow2Error::Overlap {
                                what: "L2 table",
                                offset: l2,
                                other,
                            });
                        }
                        self.l2_last.insert(l2, l1.len());
                    }
                    l1.push(l2);
                }
                let mut tables: Vec<u64> = self.l2_last.keys().copied().collect();
                tables.sort_unstable();
                self.l1 = Some(l1);
                for l2 in tables {
                    self.meta.add(l2, cluster, "an L2 table");
                    // Streamed past before the L1 said what it was: read
                    // from the spill file.
                    self.add_meta(l2, cluster, Role::L2)?;
                }
                self.meta.seal();
            }
            Role::L2 => {
                if !self.finished {
                    self.index_l2(off, bytes);
                    self.l2.insert(off, bytes.to_vec());
                }
            }
            Role::Snapshot(left) => {
                let unpadded = snapshot_entry_len(bytes);
                let start = self.snapshots.0;
                self.snapshots.1 = off + unpadded;
                let next = off + unpadded.div_ceil(8) * 8;
                check_snapshot_table_len(next - start)?;
                if unpadded > SNAPSHOT_FIXED {
                    self.add_meta(off + SNAPSHOT_FIXED, unpadded - SNAPSHOT_FIXED, Role::Skip)?;
                }
                if left > 1 {
                    self.add_meta(next, SNAPSHOT_FIXED, Role::Snapshot(left - 1))?;
                } else {
                    // The whole table is known: what random access refuses
                    // because it walks it first.
                    let end = self.snapshots.1;
                    let lo = start.saturating_sub(cluster - 1);
                    if let Some(&l2) = self.l2_last.keys().find(|&&t| t >= lo && t < end) {
                        return Err(Qcow2Error::Overlap {
                            what: "L2 table",
                            offset: l2,
                            other: "the snapshot table",
                        });
                    }
                    self.meta.add(start, end - start, "the snapshot table");
                    self.meta.seal();
                }
            }
            Role::Skip => {}
        }
        Ok(())
    }

    /// Parses metadata that the stream already passed (after spooling).
    pub(super) fn parse_passed_ahead(&mut self) -> Result<(), Qcow2Error> {
        while let Some(&(off, len, role)) = self.ahead.first() {
            if off >= self.pos {
                break;
            }
            self.pop_ahead();
            if off.saturating_add(len) > self.pos {
                return Err(cut("Metadata", off, len, self.pos));
            }
            if role == Role::Skip {
                continue;
            }
            let bytes = self.read_spilled("metadata", off, len)?;
            self.parse_meta(role, off, &bytes)?;
        }
        Ok(())
    }

    pub(super) fn pop_ahead(&mut self) -> Option<(u64, u64, Role)> {
        let a = self.ahead.pop_first()?;
        if a.2 == Role::L2 {
            self.l2_ahead -= 1;
        }
        Some(a)
    }

    /// Reads the first metadata ahead (the stream is at or past its start)
    /// together with every entry overlapping it, and parses them. Tables
    /// may overlap where the format allows it (a refcount block on the L1
    /// table): each is parsed from the same bytes.
    pub(super) fn take_group(&mut self) -> Result<(), Qcow2Error> {
        let Some(first) = self.pop_ahead() else {
            return Ok(());
        };
        let start = first.0;
        let mut end = first.0.saturating_add(first.1);
        let mut group = vec![first];
        while let Some(&(off, len, _)) = self.ahead.first() {
            if off >= end.max(self.pos) {
                break;
            }
            end = end.max(off.saturating_add(len));
            group.extend(self.pop_ahead());
        }
        let behind_end = self.pos.min(end);
        let mut bytes = if start < behind_end {
            match self.read_spilled("metadata", start, behind_end - start) {
                Ok(b) => b,
                // Only skipped ranges start behind: their bytes are unused.
                Err(_) if group.iter().all(|g| g.2 == Role::Skip || g.0 >= behind_end) => {
                    vec![0; (behind_end - start) as usize]
                }
                Err(e) => return Err(e),
            }
        } else {
            Vec::new()
        };
        if end > self.pos {
            let have = bytes.len();
            bytes.resize((end - start) as usize, 0);
            self.read_stream(&mut bytes[have..], "metadata")?;
        }
        // Kept where `read_spilled` finds it: a table parsed here may point
        // back into the group (an L2 table right after its L1).
        self.last_meta = (start, bytes);
        for &(off, len, role) in &group {
            if role != Role::Skip {
                let from = (off - start) as usize;
                let slice = self.last_meta.1[from..from + len as usize].to_vec();
                self.parse_meta(role, off, &slice)?;
            }
        }
        Ok(())
    }

    /// Indexes an L2 table's pointers by host offset; guest offsets are
    /// relative to the start of the range the table maps.
    pub(super) fn index_l2(&mut self, off: u64, table: &[u8]) {
        let eb = self.header.l2_entry_bytes() as usize;
        let (v, bits) = (self.header.version, self.header.cluster_bits);
        let mut rev: Vec<(u64, u64, u64)> = table
            .chunks_exact(eb)
            .enumerate()
            .filter_map(|(k, e)| {
                let guest = k as u64 * self.cluster;
                let bitmap = (eb == 16).then(|| be64(&e[8..]));
                match decode_l2(be64(e), bitmap, v, bits) {
                    Ok(L2Entry::Data { host }) => Some((host, host + self.cluster, guest)),
                    Ok(L2Entry::Subclusters { host, alloc, .. }) if alloc != 0 => {
                        Some((host, host + self.cluster, guest))
                    }
                    Ok(L2Entry::Compressed { host, len }) => Some((host, host + len, guest)),
                    _ => None,
                }
            })
            .collect();
        rev.sort_unstable();
        self.rev.insert(off, rev);
    }
}

/// Sorts ranges and merges those that overlap or touch.
pub(super) fn merge(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (s, e) in ranges {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}
