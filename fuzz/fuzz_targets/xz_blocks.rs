//! Our xz block decoder (sources' xzblocks, two workers) against liblzma's
//! own single-threaded decoder on arbitrary bytes that start like an xz
//! stream: the same success or failure, the same bytes on success
//! (docs/formats.md, "xz decoding"). Our decoder's memory stop (C11) is
//! the one allowed difference.
#![no_main]
use std::io::{Cursor, Read};

use formats::error::{ErrorKind, KindedIoError};
use formats::Probe;
use sources::decode::decoder;
use sources::peek::PeekReader;

/// Output read at most from each decoder: bombs stop here, unjudged.
const BUDGET: usize = 16 << 20;

fn drain(r: &mut dyn Read) -> (Result<(), std::io::Error>, Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return (Ok(()), out, false),
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if out.len() > BUDGET {
                    return (Ok(()), out, true);
                }
            }
            Err(e) => return (Err(e), out, false),
        }
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if !data.starts_with(b"\xfd7zXZ\x00") {
        return;
    }
    let Ok(mut ours) = decoder(Probe::Xz, PeekReader::new(Cursor::new(data.to_vec())), 2) else {
        return;
    };
    let (got, got_bytes, got_cut) = drain(&mut ours);
    let mut reference = liblzma::read::XzDecoder::new_multi_decoder(data);
    let (want, want_bytes, want_cut) = drain(&mut reference);
    if got_cut || want_cut {
        return;
    }
    if let Err(e) = &got {
        let kind = e.get_ref().and_then(|i| i.downcast_ref::<KindedIoError>()).map(|k| k.kind);
        if kind == Some(ErrorKind::Limit) {
            return;
        }
    }
    match (&got, &want) {
        (Ok(()), Ok(())) => assert!(got_bytes == want_bytes, "decoded bytes differ"),
        (Err(_), Err(_)) => {}
        _ => panic!("ours {got:?}, liblzma {want:?}"),
    }
});
