//! The decoder chain (probe, gzip / xz / zstd, nested-compression refusal)
//! over arbitrary bytes: never panics, output bounded by a budget.
#![no_main]
use std::io::Read;

use sources::layers::{open_layers, LayerOptions};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let opts = LayerOptions { xz_threads: 1, ..LayerOptions::default() };
    let Ok(opened) = open_layers(Box::new(std::io::Cursor::new(data.to_vec())), &opts) else {
        return;
    };
    let mut reader = opened.reader;
    let mut buf = vec![0u8; 64 << 10];
    let mut budget: usize = 64 << 20;
    while budget > 0 {
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => budget = budget.saturating_sub(n),
        }
    }
});
