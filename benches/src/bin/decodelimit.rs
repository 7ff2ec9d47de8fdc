//! The single-core decode limit of a benchmark row: decodes an input on
//! this one thread and drops the output, so the time is the decoder's
//! alone (no writes, no second thread, no pipeline).
//!
//! Usage: `decodelimit gz FILE` (flate2 on zlib-rs, every gzip member),
//! `decodelimit qcow2 FILE` (our qcow2 reader's extents, compressed
//! clusters inflated by libdeflate on the format's two decode threads, into
//! nothing) or `decodelimit read FILE` (one sequential read of the file's
//! data regions in 4 MiB reads, holes skipped: the cold read limit).
//! Prints the decoded (or read) data bytes to stdout.

use std::io::Read;

use formats::ExtentReader;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(mode), Some(path)) = (args.first(), args.get(1)) else {
        eprintln!("usage: decodelimit gz|qcow2 FILE");
        std::process::exit(2);
    };
    let file = std::fs::File::open(path).expect("open input");
    let bytes = match mode.as_str() {
        "gz" => {
            let mut dec =
                flate2::read::MultiGzDecoder::new(std::io::BufReader::with_capacity(1 << 20, file));
            let mut buf = vec![0u8; 1 << 20];
            let mut total = 0u64;
            loop {
                let n = dec.read(&mut buf).expect("inflate");
                if n == 0 {
                    break total;
                }
                total += n as u64;
            }
        }
        "qcow2" => {
            let mut reader = formats::qcow2::Qcow2Reader::open(file).expect("qcow2");
            let mut total = 0u64;
            while let Some(e) = reader.next_extent().expect("extent") {
                if let formats::Extent::Data { data, .. } = &e {
                    total += data.len() as u64;
                }
            }
            total
        }
        "read" => read_data(&file),
        other => {
            eprintln!("decodelimit: unknown mode {other}");
            std::process::exit(2);
        }
    };
    println!("{bytes}");
}

/// Reads every data region of `file` once, front to back, skipping holes
/// (SEEK_DATA / SEEK_HOLE), and returns the bytes read.
fn read_data(file: &std::fs::File) -> u64 {
    use rustix::fs::{seek, SeekFrom};
    use std::os::unix::fs::FileExt;
    let size = file.metadata().expect("stat").len();
    let mut buf = vec![0u8; 4 << 20];
    let (mut pos, mut total) = (0u64, 0u64);
    while pos < size {
        let Ok(start) = seek(file, SeekFrom::Data(pos)) else {
            break; // no data past pos
        };
        let end = seek(file, SeekFrom::Hole(start)).unwrap_or(size);
        let mut at = start;
        while at < end {
            let want = ((end - at) as usize).min(buf.len());
            let n = file.read_at(&mut buf[..want], at).expect("read");
            if n == 0 {
                break;
            }
            at += n as u64;
            total += n as u64;
        }
        pos = end;
    }
    total
}
