//! Network test fixtures: a real nginx (HTTP, HTTPS with a CA made at test
//! time, basic auth, redirects), a small fault-injecting HTTP/1.1 server,
//! and a CONNECT proxy. Everything binds 127.0.0.1 only; the fault server
//! and the proxy serve a bounded number of connections and requests, each
//! with socket timeouts.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::common::{free_port, gz, pattern, sh, xz};

/// Connections a fault server or proxy accepts before it stops.
const MAX_CONNECTIONS: usize = 200;
/// Requests served on one connection.
const MAX_REQUESTS_PER_CONNECTION: usize = 100;
/// Socket read/write timeout.
const IO_TIMEOUT: Duration = Duration::from_secs(20);

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn wait_for_port(port: u16) -> bool {
    for _ in 0..100 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// The images nginx serves, and their raw reference.
pub struct Images {
    /// The guest content every image holds.
    pub raw: Vec<u8>,
}

/// A test CA and a server certificate for 127.0.0.1 and localhost.
pub struct Pki {
    /// Directory holding only `ca.pem` (for `--cert-dir`).
    pub ca_dir: PathBuf,
    /// Server certificate and key files.
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn make_pki(dir: &Path) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "diskimport test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let mut leaf = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
    let ca_dir = dir.join("ca");
    std::fs::create_dir_all(&ca_dir).unwrap();
    std::fs::write(ca_dir.join("ca.pem"), ca_cert.pem()).unwrap();
    // A hidden file is never read (CDI's rule for mounted ConfigMaps).
    std::fs::write(ca_dir.join(".hidden"), "not a certificate").unwrap();
    let cert = dir.join("server.pem");
    let key = dir.join("server.key");
    std::fs::write(&cert, leaf_cert.pem()).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
    Pki { ca_dir, cert, key }
}

/// A real nginx on 127.0.0.1, shared by every test of this binary.
pub struct Nginx {
    pub root: PathBuf,
    pub http: u16,
    pub https: u16,
    /// HTTPS offering only TLS 1.0 and 1.1.
    pub old_tls: u16,
    pub pki: Pki,
    pub images: Images,
}

impl Nginx {
    /// `http://127.0.0.1:PORT/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.http)
    }

    /// `https://127.0.0.1:PORT/path`.
    pub fn https_url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}/{path}", self.https)
    }

    /// The access log lines so far.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.root.join("access.log")).unwrap_or_default()
    }

    /// A file in the served directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.root.join("www").join(name)
    }
}

/// The nginx binary: on PATH, or where Debian puts it (`/usr/sbin` is not
/// on every user's PATH).
fn nginx_bin() -> Option<&'static str> {
    ["nginx", "/usr/sbin/nginx"].into_iter().find(|b| {
        Command::new(b)
            .arg("-v")
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

fn start_nginx() -> Option<Nginx> {
    let Some(bin) = nginx_bin() else {
        if ci() {
            panic!("CI=true but nginx is missing");
        }
        eprintln!("nginx not installed: skipping nginx tests");
        return None;
    };
    crate::convert::qemu_img()?;
    // One directory per test process under the target directory; those of
    // processes that are gone are removed first.
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    for e in std::fs::read_dir(&base).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("nginx-") {
            if !Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let root = base.join(format!("nginx-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let www = root.join("www");
    std::fs::create_dir_all(&www).unwrap();
    // An image with data, holes and a non-aligned tail of data.
    let mut raw = vec![0u8; 12 << 20];
    raw[..3 << 20].copy_from_slice(&pattern(3 << 20));
    raw[7 << 20..(7 << 20) + (1 << 20)].copy_from_slice(&pattern(1 << 20));
    raw[(12 << 20) - 4096..].fill(0x5a);
    std::fs::write(www.join("disk.raw"), &raw).unwrap();
    let raw_path = www.join("disk.raw");
    let qcow = www.join("disk.qcow2");
    sh(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            raw_path.to_str().unwrap(),
            qcow.to_str().unwrap(),
        ],
    );
    let zq = www.join("disk.z.qcow2");
    sh(
        "qemu-img",
        &[
            "convert",
            "-c",
            "-f",
            "raw",
            "-O",
            "qcow2",
            raw_path.to_str().unwrap(),
            zq.to_str().unwrap(),
        ],
    );
    let qcow_bytes = std::fs::read(&qcow).unwrap();
    std::fs::write(www.join("disk.qcow2.gz"), gz(&qcow_bytes)).unwrap();
    std::fs::write(www.join("disk.raw.xz"), xz(&raw)).unwrap();
    std::fs::write(www.join("disk.raw.gz"), gz(&raw)).unwrap();
    std::fs::write(
        www.join("login.html"),
        "<!DOCTYPE html>\n<html><body>Please log in</body></html>\n",
    )
    .unwrap();
    std::fs::write(root.join("htpasswd"), "alice:{PLAIN}s3cret\n").unwrap();
    let pki = make_pki(&root);
    let (http, https, old_tls) = (free_port(), free_port(), free_port());
    let r = root.display();
    // SAFETY: geteuid has no preconditions.
    let user = if unsafe { libc::geteuid() } == 0 {
        // Workers read the test's files; as root, keep root.
        "user root;"
    } else {
        ""
    };
    let conf = format!(
        r#"{user}
daemon off;
master_process on;
worker_processes 1;
pid {r}/nginx.pid;
error_log {r}/error.log;
events {{ worker_connections 256; }}
http {{
  default_type application/octet-stream;
  types {{ text/html html; }}
  access_log {r}/access.log;
  sendfile on;
  server {{
    listen 127.0.0.1:{http};
    root {r}/www;
    location /auth/ {{
      auth_basic "images";
      auth_basic_user_file {r}/htpasswd;
      alias {r}/www/;
    }}
    location /c3/ {{ rewrite ^/c3/(.*)$ /c2/$1 redirect; }}
    location /c2/ {{ rewrite ^/c2/(.*)$ /c1/$1 redirect; }}
    location /c1/ {{ rewrite ^/c1/(.*)$ /$1 redirect; }}
    location = /loop {{ return 302 /loop; }}
  }}
  server {{
    listen 127.0.0.1:{https} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    root {r}/www;
    location /downgrade/ {{ return 302 http://127.0.0.1:{http}/disk.raw; }}
  }}
  server {{
    listen 127.0.0.1:{old_tls} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1 TLSv1.1;
    ssl_ciphers "ALL:@SECLEVEL=0";
    root {r}/www;
  }}
}}
"#,
        cert = pki.cert.display(),
        key = pki.key.display(),
    );
    let conf_path = root.join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    // nginx runs as a child of a thread that never ends; PDEATHSIG stops
    // it when the test process exits, however it exits.
    let (tx, rx) = std::sync::mpsc::channel();
    let root2 = root.clone();
    std::thread::spawn(move || {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(bin);
        cmd.arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(&root2)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: prctl is async-signal-safe and touches no shared state.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd.spawn();
        match child {
            Ok(mut c) => {
                tx.send(true).unwrap();
                let _ = c.wait();
            }
            Err(e) => {
                eprintln!("starting nginx: {e}");
                tx.send(false).unwrap();
            }
        }
        // Keep the thread (the PDEATHSIG parent) alive.
        loop {
            std::thread::park();
        }
    });
    assert!(rx.recv().unwrap(), "nginx did not start");
    assert!(
        wait_for_port(http) && wait_for_port(https) && wait_for_port(old_tls),
        "nginx is not listening: {}",
        std::fs::read_to_string(root.join("error.log")).unwrap_or_default()
    );
    Some(Nginx {
        root,
        http,
        https,
        old_tls,
        pki,
        images: Images { raw },
    })
}

/// The shared nginx, started on first use; None (skip) when nginx is not
/// installed outside CI.
pub fn nginx() -> Option<&'static Nginx> {
    static NGINX: OnceLock<Option<Nginx>> = OnceLock::new();
    NGINX.get_or_init(start_nginx).as_ref()
}

// ---------------------------------------------------------------------
// The fault-injecting server.

/// A parsed request.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl Req {
    /// A header value (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// How the body is delivered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Body {
    /// Exactly as declared.
    Full,
    /// Only the first `n` bytes, then the connection is closed.
    CloseAfter(usize),
    /// Chunked encoding; the final zero chunk is left out and the
    /// connection closed.
    ChunkedNoEnd,
    /// No Content-Length: the body, then close.
    UntilClose,
    /// One byte every `ms` milliseconds.
    Slow(u64),
    /// `n` bytes every `ms` milliseconds.
    Paced(usize, u64),
}

/// A response.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub mode: Body,
}

impl Reply {
    pub fn new(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            mode: Body::Full,
        }
    }

    pub fn header(mut self, n: &str, v: &str) -> Reply {
        self.headers.push((n.into(), v.into()));
        self
    }

    pub fn body(mut self, b: Vec<u8>) -> Reply {
        self.body = b;
        self
    }

    pub fn mode(mut self, m: Body) -> Reply {
        self.mode = m;
        self
    }

    pub fn redirect(to: &str) -> Reply {
        Reply::new(302).header("Location", to)
    }
}

type Handler = dyn Fn(&Req, usize) -> Reply + Send + Sync;

/// A loopback HTTP/1.1 server answering with a handler; it records every
/// request.
pub struct FaultServer {
    pub port: u16,
    pub log: Arc<Mutex<Vec<Req>>>,
}

impl FaultServer {
    pub fn start(handler: impl Fn(&Req, usize) -> Reply + Send + Sync + 'static) -> FaultServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let count = Arc::new(AtomicUsize::new(0));
        let log2 = log.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().take(MAX_CONNECTIONS) {
                let Ok(conn) = conn else { continue };
                let (h, log, count) = (handler.clone(), log2.clone(), count.clone());
                std::thread::spawn(move || serve_conn(conn, &*h, &log, &count));
            }
        });
        FaultServer { port, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }

    pub fn requests(&self) -> Vec<Req> {
        self.log.lock().unwrap().clone()
    }
}

fn read_request(r: &mut BufReader<TcpStream>) -> Option<Req> {
    // A TLS ClientHello (a client trying https first) gets the connection
    // closed at once, as a plain-HTTP server's 400 would end it.
    if r.fill_buf().ok()?.first() == Some(&0x16) {
        return None;
    }
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if headers.len() > 200 {
            return None;
        }
        if let Some((n, v)) = h.split_once(':') {
            headers.push((n.trim().to_owned(), v.trim().to_owned()));
        }
    }
    Some(Req {
        method,
        path,
        headers,
    })
}

fn serve_conn(conn: TcpStream, handler: &Handler, log: &Mutex<Vec<Req>>, count: &AtomicUsize) {
    conn.set_read_timeout(Some(IO_TIMEOUT)).ok();
    conn.set_write_timeout(Some(IO_TIMEOUT)).ok();
    let mut w = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    for _ in 0..MAX_REQUESTS_PER_CONNECTION {
        let Some(req) = read_request(&mut r) else {
            return;
        };
        let n = count.fetch_add(1, Ordering::SeqCst);
        log.lock().unwrap().push(req.clone());
        let reply = handler(&req, n);
        if !write_reply(&mut w, &req, &reply) {
            let _ = w.shutdown(Shutdown::Both);
            return;
        }
    }
}

/// Writes `reply`; false when the connection must close.
fn write_reply(w: &mut TcpStream, req: &Req, reply: &Reply) -> bool {
    let mut head = format!("HTTP/1.1 {} X\r\n", reply.status);
    for (n, v) in &reply.headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    let head_only = req.method == "HEAD";
    match reply.mode {
        Body::ChunkedNoEnd => head.push_str("Transfer-Encoding: chunked\r\n"),
        Body::UntilClose => head.push_str("Connection: close\r\n"),
        _ => head.push_str(&format!("Content-Length: {}\r\n", reply.body.len())),
    }
    head.push_str("\r\n");
    if w.write_all(head.as_bytes()).is_err() {
        return false;
    }
    if head_only {
        return true;
    }
    match reply.mode {
        Body::Full => w.write_all(&reply.body).is_ok(),
        Body::CloseAfter(n) => {
            let _ = w.write_all(&reply.body[..n.min(reply.body.len())]);
            let _ = w.flush();
            false
        }
        Body::ChunkedNoEnd => {
            for c in reply.body.chunks(64 << 10) {
                let _ = write!(w, "{:x}\r\n", c.len());
                let _ = w.write_all(c);
                let _ = w.write_all(b"\r\n");
            }
            false
        }
        Body::UntilClose => {
            let _ = w.write_all(&reply.body);
            false
        }
        Body::Paced(n, ms) => {
            for c in reply.body.chunks(n.max(1)) {
                if w.write_all(c).is_err() {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(ms));
            }
            true
        }
        Body::Slow(ms) => {
            for b in &reply.body {
                if w.write_all(std::slice::from_ref(b)).is_err() {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(ms));
            }
            true
        }
    }
}

/// A static resource served with correct range semantics.
#[derive(Clone)]
pub struct Static {
    pub data: Arc<Vec<u8>>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// Announce and honour ranges.
    pub ranges: bool,
    pub content_type: &'static str,
}

impl Static {
    pub fn new(data: Vec<u8>) -> Static {
        Static {
            data: Arc::new(data),
            etag: Some("\"v1\"".into()),
            last_modified: Some("Tue, 24 Nov 2026 10:00:00 GMT".into()),
            ranges: true,
            content_type: "application/octet-stream",
        }
    }

    /// The reply to `req`, honouring `Range` and `If-Range`.
    pub fn reply(&self, req: &Req) -> Reply {
        let len = self.data.len();
        let mut r = Reply::new(200).header("Content-Type", self.content_type);
        if let Some(e) = &self.etag {
            r = r.header("ETag", e);
        }
        if let Some(lm) = &self.last_modified {
            r = r.header("Last-Modified", lm);
        }
        if self.ranges {
            r = r.header("Accept-Ranges", "bytes");
        }
        let fresh = match req.header("If-Range") {
            None => true,
            Some(v) => Some(v) == self.etag.as_deref() || Some(v) == self.last_modified.as_deref(),
        };
        if let (true, true, Some(range)) = (self.ranges, fresh, req.header("Range")) {
            if let Some((a, b)) = parse_range(range, len) {
                r.status = 206;
                r = r.header("Content-Range", &format!("bytes {a}-{b}/{len}"));
                r.body = self.data[a..=b].to_vec();
                return r;
            }
            return Reply::new(416).header("Content-Range", &format!("bytes */{len}"));
        }
        r.body = self.data.to_vec();
        r
    }

    /// Where the reply's body starts in the resource.
    pub fn start_of(&self, reply: &Reply) -> usize {
        reply
            .headers
            .iter()
            .find(|(n, _)| n == "Content-Range")
            .and_then(|(_, v)| v.strip_prefix("bytes ")?.split('-').next()?.parse().ok())
            .unwrap_or(0)
    }
}

fn parse_range(v: &str, len: usize) -> Option<(usize, usize)> {
    let (a, b) = v.strip_prefix("bytes=")?.split_once('-')?;
    let a: usize = a.parse().ok()?;
    let b: usize = if b.is_empty() {
        len - 1
    } else {
        b.parse::<usize>().ok()?.min(len - 1)
    };
    (a <= b && a < len).then_some((a, b))
}

/// Serves `res`, cutting the connection at each absolute offset in `cuts`
/// (each used once): the reset-mid-body fault (H05).
pub fn with_cuts(res: Static, cuts: Vec<usize>) -> impl Fn(&Req, usize) -> Reply + Send + Sync {
    let cuts = Mutex::new(cuts);
    move |req, _| {
        let mut reply = res.reply(req);
        if reply.status == 200 || reply.status == 206 {
            let start = res.start_of(&reply);
            let end = start + reply.body.len();
            let mut cuts = cuts.lock().unwrap();
            if let Some(i) = cuts.iter().position(|&c| c > start && c < end) {
                let c = cuts.remove(i);
                reply.mode = Body::CloseAfter(c - start);
            }
        }
        reply
    }
}

// ---------------------------------------------------------------------
// A CONNECT (and absolute-form) proxy.

/// A loopback forward proxy that records the targets it was asked for.
pub struct Proxy {
    pub port: u16,
    pub targets: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    pub fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let targets = Arc::new(Mutex::new(Vec::new()));
        let t2 = targets.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().take(MAX_CONNECTIONS) {
                let Ok(conn) = conn else { continue };
                let t = t2.clone();
                std::thread::spawn(move || proxy_conn(conn, &t));
            }
        });
        Proxy { port, targets }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn proxy_conn(conn: TcpStream, targets: &Mutex<Vec<String>>) {
    conn.set_read_timeout(Some(IO_TIMEOUT)).ok();
    let mut r = BufReader::new(conn.try_clone().unwrap());
    let Some(req) = read_request(&mut r) else {
        return;
    };
    let mut client = conn;
    if req.method == "CONNECT" {
        targets
            .lock()
            .unwrap()
            .push(format!("CONNECT {}", req.path));
        let Ok(upstream) = TcpStream::connect(&req.path) else {
            let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
            return;
        };
        let _ = client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
        let (c2, u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
        let t = std::thread::spawn(move || pipe(c2, u2));
        pipe(upstream, client);
        let _ = t.join();
        return;
    }
    // Absolute-form: GET http://host:port/path HTTP/1.1; one request per
    // connection, forwarded as-is with Connection: close.
    targets
        .lock()
        .unwrap()
        .push(format!("{} {}", req.method, req.path));
    let rest = req.path.strip_prefix("http://").unwrap_or(&req.path);
    let (hostport, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let Ok(mut upstream) = TcpStream::connect(hostport) else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
        return;
    };
    let mut head = format!(
        "{} {} HTTP/1.1\r\n",
        req.method,
        if path.is_empty() { "/" } else { path }
    );
    for (n, v) in &req.headers {
        if !n.eq_ignore_ascii_case("connection") && !n.eq_ignore_ascii_case("proxy-connection") {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
    }
    head.push_str("Connection: close\r\n\r\n");
    if upstream.write_all(head.as_bytes()).is_err() {
        return;
    }
    pipe(upstream, client);
}

/// Counts of request paths, for assertions on retries.
pub fn count_by_method(reqs: &[Req]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for r in reqs {
        *m.entry(r.method.clone()).or_default() += 1;
    }
    m
}
