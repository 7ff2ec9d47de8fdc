//! The forward-only reader over in-memory bytes: never panics.
#![no_main]
use formats::ExtentReader;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let opts = formats::qcow2::stream::SpillOptions { limit: 16 << 20, ..Default::default() };
    let Ok(mut r) = formats::qcow2::stream::Qcow2Stream::open(data, opts) else { return };
    for _ in 0..100_000 {
        match r.next_extent() {
            Ok(Some(_)) => {}
            _ => break,
        }
    }
});
