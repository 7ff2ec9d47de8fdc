//! The layer walk over arbitrary bytes: the input is split into up to
//! three layer blobs (at 0xff 0x00 0xff markers), read top-down for the
//! one file under disk/; never panics, never hangs, output bounded.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut layers = Vec::new();
    let mut rest = data;
    while layers.len() < 2 {
        match rest.windows(3).position(|w| w == [0xff, 0x00, 0xff]) {
            Some(i) => {
                layers.push(rest[..i].to_vec());
                rest = &rest[i + 3..];
            }
            None => break,
        }
    }
    layers.push(rest.to_vec());
    let _ = sources::registry::read_layers(&layers, 64 << 20);
});
