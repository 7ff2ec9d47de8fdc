//! Zero detection: splits data into data and zero runs at 4 KiB granularity,
//! which makes raw and decompressed raw input sparse (qemu-img convert does
//! the same by default, `-S 4k`).

use bytes::Bytes;

use crate::Extent;

/// Granularity of zero detection, aligned to guest offsets.
pub const ZERO_BLOCK: u64 = 4096;

/// Whether every byte of `buf` is zero.
#[inline]
pub fn is_zero(buf: &[u8]) -> bool {
    // Most data blocks are non-zero in their first bytes: check them first so
    // data is rejected after one load, then OR wide words so the compiler
    // vectorises the full scan of real zero blocks.
    let (head, rest) = buf.split_at(buf.len().min(16));
    if head.iter().any(|&b| b != 0) {
        return false;
    }
    let mut chunks = rest.chunks_exact(64);
    for c in &mut chunks {
        let mut acc = 0u64;
        for w in c.chunks_exact(8) {
            acc |= u64::from_ne_bytes(w.try_into().expect("8-byte chunk"));
        }
        if acc != 0 {
            return false;
        }
    }
    chunks.remainder().iter().all(|&b| b == 0)
}

/// Splits `data` at guest `offset` into maximal runs of data and zero
/// blocks, calling `emit` for each run in order. Blocks are aligned to
/// [`ZERO_BLOCK`] in guest space; a partial block at either end is judged on
/// the bytes it has.
pub fn split_zeroes<E>(
    offset: u64,
    data: &Bytes,
    emit: &mut impl FnMut(Extent) -> Result<(), E>,
) -> Result<(), E> {
    let len = data.len();
    let mut pos = 0usize;
    let mut run_start = 0usize;
    let mut run_zero: Option<bool> = None;
    while pos < len {
        let guest = offset + pos as u64;
        let block_end = ((guest / ZERO_BLOCK + 1) * ZERO_BLOCK - offset) as usize;
        let end = block_end.min(len);
        let zero = is_zero(&data[pos..end]);
        match run_zero {
            Some(z) if z == zero => {}
            Some(z) => {
                emit(run(offset, data, run_start, pos, z))?;
                run_start = pos;
                run_zero = Some(zero);
            }
            None => run_zero = Some(zero),
        }
        pos = end;
    }
    if let Some(z) = run_zero {
        emit(run(offset, data, run_start, len, z))?;
    }
    Ok(())
}

fn run(offset: u64, data: &Bytes, start: usize, end: usize, zero: bool) -> Extent {
    if zero {
        Extent::Zero {
            offset: offset + start as u64,
            len: (end - start) as u64,
        }
    } else {
        Extent::Data {
            offset: offset + start as u64,
            data: data.slice(start..end),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn split(offset: u64, data: Vec<u8>) -> Vec<Extent> {
        let mut out = Vec::new();
        split_zeroes(offset, &Bytes::from(data), &mut |e| {
            out.push(e);
            Ok::<_, ()>(())
        })
        .unwrap();
        out
    }

    #[test]
    fn is_zero_finds_a_late_non_zero_byte() {
        let mut b = vec![0u8; 4096];
        assert!(is_zero(&b));
        b[4095] = 1;
        assert!(!is_zero(&b));
        b[4095] = 0;
        b[70] = 1;
        assert!(!is_zero(&b));
    }

    #[test]
    fn zero_block_between_data_blocks_becomes_a_zero_extent() {
        let mut d = vec![1u8; 3 * 4096];
        d[4096..8192].fill(0);
        let out = split(0, d);
        assert_eq!(out.len(), 3);
        assert_eq!(
            out[1],
            Extent::Zero {
                offset: 4096,
                len: 4096
            }
        );
    }

    #[test]
    fn blocks_align_to_guest_offsets_not_buffer_start() {
        // Buffer starts 100 bytes before a 4 KiB boundary: the first
        // 100 bytes form their own (partial) block.
        let mut d = vec![0u8; 100 + 4096];
        d[100] = 9;
        let out = split(4096 - 100, d);
        assert_eq!(
            out[0],
            Extent::Zero {
                offset: 3996,
                len: 100
            }
        );
        assert_eq!(out[1].offset(), 4096);
    }

    proptest! {
        #[test]
        fn split_covers_input_exactly(
            offset in 0u64..20000,
            blocks in proptest::collection::vec((any::<bool>(), 1usize..5000), 0..20)
        ) {
            let mut data = Vec::new();
            for (zero, n) in blocks {
                data.extend(std::iter::repeat_n(if zero { 0 } else { 0xa5 }, n));
            }
            let out = split(offset, data.clone());
            let mut pos = offset;
            let mut rebuilt = Vec::new();
            let mut last_zero = None;
            for e in &out {
                prop_assert_eq!(e.offset(), pos);
                prop_assert!(!e.is_empty());
                let z = matches!(e, Extent::Zero { .. });
                prop_assert_ne!(Some(z), last_zero, "runs alternate");
                last_zero = Some(z);
                match e {
                    Extent::Data { data, .. } => rebuilt.extend_from_slice(data),
                    Extent::Zero { len, .. } => rebuilt.extend(std::iter::repeat_n(0, *len as usize)),
                }
                pos = e.end();
            }
            prop_assert_eq!(rebuilt, data);
        }
    }
}
