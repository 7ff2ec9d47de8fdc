//! The random-access and the stream reader over the same bytes: they
//! accept and refuse the same images and, when both accept, give the same
//! guest bytes (docs/formats.md, "Two readers, one outcome").
#![no_main]
use formats::qcow2::stream::{Qcow2Stream, SpillOptions};
use formats::qcow2::Qcow2Reader;
use formats::sink::{drain, MemSink};
use formats::ExtentReader;

/// Images declaring more than this are skipped (the property is about
/// bytes, and the in-memory sink would hold them all).
const CAP: u64 = 4 << 20;

fn outcome(r: Result<impl ExtentReader, formats::qcow2::Qcow2Error>) -> Option<Result<Vec<u8>, ()>> {
    let Ok(mut r) = r else { return Some(Err(())) };
    if r.virtual_size().unwrap_or(0) > CAP {
        return None;
    }
    let mut sink = MemSink::default();
    Some(drain(&mut r, &mut sink).map(|_| sink.contents().to_vec()).map_err(|_| ()))
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let spill = SpillOptions { limit: 16 << 20, ..Default::default() };
    let a = outcome(Qcow2Reader::open(data.to_vec()));
    let s = outcome(Qcow2Stream::open(data, spill));
    match (a, s) {
        (Some(Ok(a)), Some(Ok(s))) => assert!(a == s, "readers disagree on bytes"),
        (Some(Err(())), Some(Err(()))) | (None, _) | (_, None) => {}
        (a, s) => panic!(
            "readers disagree: random access {:?}, stream {:?}",
            a.map(|r| r.map(|v| v.len())),
            s.map(|r| r.map(|v| v.len()))
        ),
    }
});
