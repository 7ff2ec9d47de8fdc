//! A TLS upload sink for benchmarks: answers every POST/PUT by reading
//! its `Content-Length` body and either dropping it or writing it to a
//! file (CDI's upload server writing to scratch), then `200`. Answers
//! `Expect: 100-continue`. Binds 127.0.0.1 only.
//!
//! Usage: `sinkserve PORT CERT.pem KEY.pem [OUTFILE]`

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: sinkserve PORT CERT.pem KEY.pem [OUTFILE]");
        std::process::exit(2);
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&args[1])
        .expect("cert")
        .collect::<Result<_, _>>()
        .expect("cert");
    let key = PrivateKeyDer::from_pem_file(&args[2]).expect("key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("config"),
    );
    let out = args.get(3).cloned();
    let listener =
        TcpListener::bind(("127.0.0.1", args[0].parse::<u16>().expect("port"))).expect("bind");
    for conn in listener.incoming() {
        let Ok(tcp) = conn else { continue };
        let (config, out) = (config.clone(), out.clone());
        std::thread::spawn(move || {
            let tls = rustls::ServerConnection::new(config).expect("tls");
            let mut s = rustls::StreamOwned::new(tls, tcp);
            let _ = serve(&mut s, out.as_deref());
        });
    }
}

fn serve(s: &mut impl ReadWrite, out: Option<&str>) -> std::io::Result<()> {
    let mut r = BufReader::with_capacity(1 << 20, s);
    let mut len = 0u64;
    let mut expect = false;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let l = line.trim_end().to_ascii_lowercase();
        if l.is_empty() {
            break;
        }
        if let Some(v) = l.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        expect |= l.starts_with("expect:") && l.contains("100-continue");
    }
    if expect {
        r.get_mut().write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        r.get_mut().flush()?;
    }
    let mut body = (&mut r).take(len);
    match out {
        Some(path) => {
            let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
            std::io::copy(&mut body, &mut f)?;
            f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        }
        None => {
            std::io::copy(&mut body, &mut std::io::sink())?;
        }
    }
    let s = r.get_mut();
    s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    s.flush()
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}
