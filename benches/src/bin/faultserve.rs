//! A static file server for benchmarks that resets connections: every
//! `--cut-every` body bytes (counted across all connections) the connection
//! in progress is closed mid-body. Ranges, `ETag` and `If-Range` are
//! honoured so a client can resume. Binds 127.0.0.1 only.
//!
//! Usage: `faultserve DIR PORT CUT_EVERY_BYTES` (0: never cut).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

struct Shared {
    dir: PathBuf,
    cut_every: u64,
    sent: AtomicU64,
    cuts: AtomicU64,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(port), Some(cut)) = (args.next(), args.next(), args.next()) else {
        eprintln!("usage: faultserve DIR PORT CUT_EVERY_BYTES");
        std::process::exit(2);
    };
    let shared = Arc::new(Shared {
        dir: PathBuf::from(dir),
        cut_every: cut.parse().expect("CUT_EVERY_BYTES"),
        sent: AtomicU64::new(0),
        cuts: AtomicU64::new(0),
    });
    let listener = TcpListener::bind(("127.0.0.1", port.parse::<u16>().expect("PORT"))).unwrap();
    for conn in listener.incoming().flatten() {
        let s = shared.clone();
        std::thread::spawn(move || serve(conn, &s));
    }
}

fn serve(conn: TcpStream, s: &Shared) {
    conn.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .ok();
    let _ = conn.set_nodelay(true);
    let mut w = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let mut range = None;
        let mut if_range = None;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((n, v)) = h.split_once(':') {
                match n.trim().to_ascii_lowercase().as_str() {
                    "range" => range = Some(v.trim().to_owned()),
                    "if-range" => if_range = Some(v.trim().to_owned()),
                    _ => {}
                }
            }
        }
        let name = path.trim_start_matches('/');
        if name.contains("..") || name.contains('/') {
            let _ = w.write_all(b"HTTP/1.1 404 X\r\nContent-Length: 0\r\n\r\n");
            continue;
        }
        let Ok(file) = std::fs::File::open(s.dir.join(name)) else {
            let _ = w.write_all(b"HTTP/1.1 404 X\r\nContent-Length: 0\r\n\r\n");
            continue;
        };
        let len = file.metadata().unwrap().len();
        let etag = format!("\"{len:x}\"");
        let fresh = if_range.as_deref().is_none_or(|v| v == etag);
        let (status, start, end) = match range
            .as_deref()
            .filter(|_| fresh)
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.split_once('-'))
        {
            Some((a, b)) => {
                let a: u64 = a.parse().unwrap_or(0);
                let b: u64 = if b.is_empty() {
                    len - 1
                } else {
                    b.parse::<u64>().unwrap_or(len - 1).min(len - 1)
                };
                (206, a, b + 1)
            }
            None => (200, 0, len),
        };
        let mut head = format!(
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\nETag: {etag}\r\nContent-Type: application/octet-stream\r\n",
            end - start
        );
        if status == 206 {
            head.push_str(&format!(
                "Content-Range: bytes {start}-{}/{len}\r\n",
                end - 1
            ));
        }
        head.push_str("\r\n");
        if w.write_all(head.as_bytes()).is_err() {
            return;
        }
        let mut buf = vec![0u8; 1 << 20];
        let mut pos = start;
        while pos < end {
            let n = ((end - pos) as usize).min(buf.len());
            let mut n = file.read_at(&mut buf[..n], pos).unwrap_or(0);
            if n == 0 {
                return;
            }
            if let Some(done) = s.sent.load(Ordering::Relaxed).checked_div(s.cut_every) {
                let before = s.sent.load(Ordering::Relaxed);
                let next_cut = (done + 1) * s.cut_every;
                if before + n as u64 >= next_cut {
                    n = (next_cut - before) as usize;
                    let _ = w.write_all(&buf[..n]);
                    s.sent.fetch_add(n as u64, Ordering::Relaxed);
                    let c = s.cuts.fetch_add(1, Ordering::Relaxed) + 1;
                    eprintln!("faultserve: cut {c} at byte {} of {name}", pos + n as u64);
                    let _ = w.shutdown(std::net::Shutdown::Both);
                    return;
                }
            }
            if w.write_all(&buf[..n]).is_err() {
                return;
            }
            s.sent.fetch_add(n as u64, Ordering::Relaxed);
            pos += n as u64;
        }
    }
}
