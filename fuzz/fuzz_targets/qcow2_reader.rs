//! The whole random-access reader over in-memory bytes, drained into a
//! bounded count: never panics, never allocates from unchecked sizes.
#![no_main]
use formats::ExtentReader;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(mut r) = formats::qcow2::Qcow2Reader::open(data.to_vec()) else { return };
    let mut budget = 64u32 << 20;
    while let Ok(Some(e)) = r.next_extent() {
        let n = u32::try_from(e.len()).unwrap_or(u32::MAX);
        if matches!(e, formats::Extent::Data { .. }) {
            budget = budget.saturating_sub(n);
        }
        if budget == 0 {
            break;
        }
    }
});
