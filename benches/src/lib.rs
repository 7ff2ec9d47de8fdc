//! Bench-only crate: see `benches/throughput.rs` and `benches/stages.rs`;
//! what both benches generate lives here.

/// `size` bytes of disk-like content: compressible "binary" runs (mostly
/// small values, about 3:1 like binaries) and one zero MiB in four.
pub fn disk_like(size: usize) -> Vec<u8> {
    let mut v = vec![0u8; size];
    let mut x: u32 = 0x1234_5678;
    for (i, chunk) in v.chunks_mut(1 << 20).enumerate() {
        if i % 4 == 3 {
            continue; // a zero MiB
        }
        for (j, b) in chunk.iter_mut().enumerate() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = if j % 7 == 0 {
                (x >> 24) as u8
            } else {
                (x & 0x0f) as u8
            };
        }
    }
    v
}
