//! Header parsing over arbitrary bytes: never panics.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = formats::qcow2::header::cluster_size_of(data);
    let _ = formats::qcow2::header::parse(data);
});
