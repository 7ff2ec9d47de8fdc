//! Bench-only crate: see `benches/throughput.rs`.
