//! The upload server's multipart parsing over arbitrary bodies (boundary
//! `B`): finding the `file` part and reading it never panics, hangs or
//! grows without bound.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = importer::upload::fuzz_form(data);
});
