//! `diskimport upload-server` (issue 12): real mTLS with certificates made
//! by openssl, curl as the client sending what virtctl and CDI's upload
//! proxy send, every route and status of CDI's check order, U01-U12, and
//! outputs compared with `qemu-img convert`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::{free_port, gz, sh, tmp, xz};
use crate::registry::{disk, Disk};

pub(crate) const CN: &str = "client.upload-server.cdi.kubevirt.io";

/// Server and client certificates (docs/upload.md, "TLS").
pub(crate) struct Pki {
    dir: PathBuf,
}

impl Pki {
    pub(crate) fn p(&self, f: &str) -> String {
        self.dir.join(f).display().to_string()
    }
}

pub(crate) fn pki() -> &'static Pki {
    static P: OnceLock<Pki> = OnceLock::new();
    P.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("diskimport-upload-pki-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let script = format!(
            r#"set -e
cd {d}
q() {{ openssl "$@" >/dev/null 2>&1; }}
q req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=server-ca -keyout server-ca.key -out server-ca.crt
q req -newkey rsa:2048 -nodes -subj /CN=cdi-upload-test.default.svc -keyout tls.key -out tls.csr
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' > srv.ext
q x509 -req -in tls.csr -CA server-ca.crt -CAkey server-ca.key -CAcreateserial -days 2 -extfile srv.ext -out tls.crt
q req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=client-signer -keyout ca.key -out ca.crt
q req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=other-signer -keyout other.key -out other.crt
printf 'extendedKeyUsage=clientAuth\n' > cli.ext
for cn in {cn} wrong.example; do
  q req -newkey rsa:2048 -nodes -subj /CN=$cn -keyout $cn.key -out $cn.csr
  q x509 -req -in $cn.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile cli.ext -out $cn.crt
done
q req -newkey rsa:2048 -nodes -subj /CN={cn} -keyout foreign.key -out foreign.csr
q x509 -req -in foreign.csr -CA other.crt -CAkey other.key -CAcreateserial -days 2 -extfile cli.ext -out foreign.crt
"#,
            d = dir.display(),
            cn = CN
        );
        sh("bash", &["-c", &script]);
        Pki { dir }
    })
}

/// An upload pod: a root with /data and /dev, the server on a free port.
pub(crate) struct Server {
    dir: tempfile::TempDir,
    port: u16,
    pub(crate) child: Option<Child>,
}

impl Server {
    pub(crate) fn start(env: &[(&str, &str)]) -> Server {
        let s = Server::spawn(env);
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", s.port)).is_ok() {
                return s;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("the upload server did not listen");
    }

    pub(crate) fn spawn(env: &[(&str, &str)]) -> Server {
        let p = pki();
        let dir = tmp();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        std::fs::create_dir_all(dir.path().join("dev")).unwrap();
        let port = free_port();
        let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("diskimport"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("TLS_KEY_FILE", p.p("tls.key"))
            .env("TLS_CERT_FILE", p.p("tls.crt"))
            .env("CLIENT_CERT_FILE", p.p("ca.crt"))
            .env("CLIENT_NAME", CN)
            .env("LISTEN_ADDRESS", "127.0.0.1")
            .env("LISTEN_PORT", port.to_string())
            .env("UPLOAD_IMAGE_SIZE", "64Mi")
            .env("FILESYSTEM_OVERHEAD", "0")
            .arg("upload-server")
            .arg("--root")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        Server {
            dir,
            port,
            child: Some(child),
        }
    }

    /// A server whose volume is the loop device `lo`, as CDI mounts a
    /// Block volume: `DESTINATION` is `/dev/cdi-block-volume` in its root.
    pub(crate) fn on_block_volume(lo: &crate::common::Loop) -> Server {
        let s = Server::spawn(&[("DESTINATION", "/dev/cdi-block-volume")]);
        lo.node_in(s.root());
        std::thread::sleep(Duration::from_millis(500));
        s
    }

    pub(crate) fn root(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// curl with the server CA, `cert` (a client certificate base name or
    /// none), and `args`: the HTTP status and the body.
    pub(crate) fn curl(&self, cert: Option<&str>, args: &[&str]) -> (u16, String) {
        let p = pki();
        let mut c = Command::new("curl");
        c.args([
            "-sS",
            "--max-time",
            "60",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "--cacert",
            &p.p("server-ca.crt"),
        ]);
        if let Some(n) = cert {
            c.args([
                "--cert",
                &p.p(&format!("{n}.crt")),
                "--key",
                &p.p(&format!("{n}.key")),
            ]);
        }
        let out = c.args(args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "000"));
        (code.trim().parse().unwrap_or(0), body.to_owned())
    }

    /// A curl upload to `/v1beta1/upload` sent at `rate` bytes per second,
    /// with our client certificate and `args` (the body), left running.
    pub(crate) fn slow_upload(&self, rate: &str, args: &[&str]) -> Child {
        let p = pki();
        Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "--limit-rate", rate])
            .args(["--cacert", &p.p("server-ca.crt")])
            .args([
                "--cert",
                &p.p(&format!("{CN}.crt")),
                "--key",
                &p.p(&format!("{CN}.key")),
            ])
            .args(args)
            .arg(self.url("/v1beta1/upload"))
            .spawn()
            .unwrap()
    }

    pub(crate) fn post(&self, path: &str, file: &Path) -> (u16, String) {
        let f = format!("@{}", file.display());
        self.curl(
            Some(CN),
            &[
                "-H",
                "Content-Type: application/octet-stream",
                "--data-binary",
                &f,
                &self.url(path),
            ],
        )
    }

    pub(crate) fn post_chunked(&self, path: &str, file: &Path) -> (u16, String) {
        let f = file.display().to_string();
        self.curl(
            Some(CN),
            &[
                "-X",
                "POST",
                "-H",
                "Transfer-Encoding: chunked",
                "-T",
                &f,
                &self.url(path),
            ],
        )
    }

    /// Waits for the server to exit: its status, termination message and log.
    pub(crate) fn wait(&mut self) -> (Option<i32>, Option<String>, String) {
        let mut child = self.child.take().expect("running");
        let start = Instant::now();
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if start.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                panic!("the upload server did not exit");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out: Output = child.wait_with_output().unwrap();
        (
            out.status.code(),
            std::fs::read_to_string(self.root().join("dev/termination-log")).ok(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub(crate) fn disk(&self) -> Vec<u8> {
        std::fs::read(self.root().join("data/disk.img")).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The raw disk grown to the 64 MiB volume (UPLOAD_IMAGE_SIZE with no
/// overhead), as CDI's resize does.
pub(crate) fn grown(raw: &[u8]) -> Vec<u8> {
    let mut v = raw.to_vec();
    v.resize(64 << 20, 0);
    v
}

pub(crate) fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

const DONE: &str = r#"{"preallocationApplied":false,"message":"Upload Complete"}"#;

#[test]
fn routes_and_cdis_check_order_then_a_sync_upload_completes() {
    let c = disk(50);
    let t = tmp();
    let q = write(t.path(), "d.qcow2", &c.qcow2);
    let mut s = Server::start(&[]);
    // /healthz and the async HEAD probe need no client certificate.
    assert_eq!(s.curl(None, &[&s.url("/healthz")]), (200, "OK".into()));
    assert_eq!(s.curl(None, &["-X", "POST", &s.url("/healthz?x=1")]).0, 200);
    assert_eq!(
        s.curl(None, &["-I", &s.url("/v1beta1/upload-async")]).0,
        200
    );
    assert_eq!(
        s.curl(None, &["-I", &s.url("/v1alpha1/upload-form-async")])
            .0,
        200
    );
    // Unknown paths: Go's 404 page.
    assert_eq!(
        s.curl(Some(CN), &[&s.url("/v1beta1/nope")]),
        (404, "404 page not found\n".into())
    );
    // U02: methods other than POST (HEAD on a sync route too).
    assert_eq!(s.curl(Some(CN), &[&s.url("/v1beta1/upload")]).0, 404);
    assert_eq!(
        s.curl(
            Some(CN),
            &["-X", "PUT", "--data", "x", &s.url("/v1alpha1/upload")]
        )
        .0,
        404
    );
    assert_eq!(s.curl(Some(CN), &["-I", &s.url("/v1beta1/upload")]).0, 404);
    // U01: no certificate, or another name: 401 before the body is read.
    assert_eq!(
        s.curl(
            None,
            &["-X", "POST", "--data", "x", &s.url("/v1beta1/upload")]
        )
        .0,
        401
    );
    assert_eq!(
        s.curl(
            Some("wrong.example"),
            &["-X", "POST", "--data", "x", &s.url("/v1beta1/upload")]
        )
        .0,
        401
    );
    // A certificate from another CA fails the handshake.
    assert_eq!(
        s.curl(
            Some("foreign"),
            &["-X", "POST", "--data", "x", &s.url("/v1beta1/upload")]
        )
        .0,
        0
    );
    assert!(
        !s.root().join("data/disk.img").exists(),
        "the target was touched"
    );
    // The server is still ready: a sync upload as virtctl sends it.
    let (code, body) = s.post("/v1beta1/upload", &q);
    assert_eq!((code, body.as_str()), (200, ""));
    let (status, term, _) = s.wait();
    assert_eq!(status, Some(0));
    assert_eq!(term.as_deref(), Some(DONE));
    assert!(s.disk() == grown(&c.raw), "content differs from qemu-img's");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(s.root().join("data/disk.img"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660);
    assert!(!s.root().join("scratch").exists());
}

#[test]
fn compressed_chunked_form_and_async_uploads_convert_like_qemu_img() {
    let c = disk(51);
    let t = tmp();
    let cases: Vec<(&str, &str, Vec<u8>, &[u8])> = vec![
        ("/v1beta1/upload", "chunked", gz(&c.qcow2), &c.raw),
        ("/v1alpha1/upload", "length", xz(&c.raw), &c.raw),
        ("/v1beta1/upload-async", "length", c.qcow2.clone(), &c.raw),
        ("/v1alpha1/upload-async", "chunked", gz(&c.raw), &c.raw),
        ("/v1beta1/upload-form", "form", c.qcow2.clone(), &c.raw),
        ("/v1beta1/upload-form-async", "form", xz(&c.qcow2), &c.raw),
    ];
    for (path, how, body, expected) in cases {
        let f = write(t.path(), "up", &body);
        let mut s = Server::start(&[]);
        let (code, text) = match how {
            "chunked" => s.post_chunked(path, &f),
            "form" => {
                // Another field first: the `file` part is found anywhere.
                let file = format!("file=@{}", f.display());
                s.curl(Some(CN), &["-F", "other=x", "-F", &file, &s.url(path)])
            }
            _ => s.post(path, &f),
        };
        assert_eq!(code, 200, "{path} {how}: {text}");
        let (status, term, log) = s.wait();
        assert_eq!(
            (status, term.as_deref()),
            (Some(0), Some(DONE)),
            "{path}: {log}"
        );
        assert!(s.disk() == grown(expected), "{path} {how}: content differs");
    }
}

#[test]
fn too_large_uploads_answer_400_early_and_the_server_stays_ready() {
    let t = tmp();
    // U06: a qcow2 of 1 GiB virtual into 64 MiB: refused from its header.
    let big = t.path().join("big.qcow2");
    sh(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            &big.display().to_string(),
            "1G",
        ],
    );
    let mut s = Server::start(&[]);
    let (code, body) = s.post("/v1beta1/upload", &big);
    assert_eq!(code, 400, "{body}");
    assert!(body.starts_with("Saving stream failed: effective image size is larger than the reported available storage"), "{body}");
    // A raw.xz that grows past the volume while it streams.
    let bomb = write(t.path(), "bomb.raw.xz", &xz(&vec![1u8; 80 << 20]));
    let (code, body) = s.post("/v1beta1/upload-async", &bomb);
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("effective image size is larger than the reported available storage"),
        "{body}"
    );
    // U07: exactly the volume's size is fine; the server was ready again.
    let raw = crate::common::pattern(64 << 20);
    let exact = write(t.path(), "exact.raw", &raw);
    assert_eq!(s.post("/v1beta1/upload", &exact).0, 200);
    assert_eq!(s.wait().0, Some(0));
    assert!(s.disk() == raw);
}

#[test]
fn busy_aborted_and_retried_uploads_follow_cdi() {
    let c = disk(52);
    let t = tmp();
    let raw = write(t.path(), "big.raw", &crate::common::pattern(32 << 20));
    let q = write(t.path(), "d.qcow2", &c.qcow2);
    let mut s = Server::start(&[]);
    // U05: a client sending slowly, killed after about 2 MiB.
    let body = format!("@{}", raw.display());
    let mut slow = s.slow_upload("1M", &["--data-binary", &body]);
    // Wait until the slow upload is being written (its target exists).
    let start = Instant::now();
    while !s.root().join("data/disk.img").exists() && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        s.root().join("data/disk.img").exists(),
        "the slow upload never started"
    );
    // U03: a second upload meanwhile is told the server is busy.
    assert_eq!(s.post("/v1beta1/upload", &q).0, 503);
    assert_eq!(s.post("/v1beta1/upload-form-async", &q).0, 503);
    slow.kill().unwrap();
    slow.wait().unwrap();
    // The aborted upload is forgotten: the next one succeeds from offset 0.
    let start = Instant::now();
    let code = loop {
        let (code, _) = s.post("/v1beta1/upload", &q);
        if code != 503 || start.elapsed() > Duration::from_secs(20) {
            break code;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(code, 200);
    assert_eq!(s.wait().1.as_deref(), Some(DONE));
    assert!(s.disk() == grown(&c.raw));
}

#[test]
fn async_failure_after_the_body_exits_1_without_a_success_message() {
    // U11: a qcow2 cut at the end: every byte arrives (200), the image is
    // found broken only then.
    let c = disk(53);
    let t = tmp();
    let cut = write(t.path(), "cut.qcow2", &c.qcow2[..c.qcow2.len() - 4096]);
    let mut s = Server::start(&[]);
    let (code, _) = s.post("/v1beta1/upload-async", &cut);
    let (status, term, log) = s.wait();
    assert_eq!(code, 200, "{log}");
    assert_eq!(status, Some(1), "{log}");
    assert_eq!(term, None);
    assert!(log.contains("UploadServer failed"), "{log}");
}

#[test]
fn bad_forms_checksums_and_clone_headers_are_refused_and_the_server_stays_ready() {
    let c = disk(54);
    let t = tmp();
    let q = write(t.path(), "d.qcow2", &c.qcow2);
    let mut s = Server::start(&[]);
    // U10: a form without a `file` part, and a body that is not a form.
    let (code, body) = s.curl(Some(CN), &["-F", "other=x", &s.url("/v1beta1/upload-form")]);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("no 'file' part"), "{body}");
    let f = format!("@{}", q.display());
    assert_eq!(
        s.curl(
            Some(CN),
            &["--data-binary", &f, &s.url("/v1beta1/upload-form")]
        )
        .0,
        400
    );
    // X-Checksum (beyond CDI): a mismatch is 400 and nothing is left.
    let wrong = format!("X-Checksum: sha256:{}", "0".repeat(64));
    let (code, body) = s.curl(
        Some(CN),
        &["-H", &wrong, "--data-binary", &f, &s.url("/v1beta1/upload")],
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("checksum mismatch"), "{body}");
    assert!(!s.root().join("data/disk.img").exists());
    assert_eq!(
        s.curl(
            Some(CN),
            &[
                "-H",
                "X-Checksum: nope",
                "--data-binary",
                &f,
                &s.url("/v1beta1/upload")
            ]
        )
        .0,
        400
    );
    // Async clone: CDI's 500.
    let (code, body) = s.curl(
        Some(CN),
        &[
            "-H",
            "x-cdi-content-type: blockdevice-clone",
            "--data-binary",
            &f,
            &s.url("/v1beta1/upload-async"),
        ],
    );
    assert_eq!(
        (code, body.as_str()),
        (500, "Saving stream failed: async clone not supported")
    );
    // Still ready, and a right checksum passes.
    let right = format!("X-Checksum: sha256:{}", &crate::oci::sha256(&c.qcow2)[7..]);
    assert_eq!(
        s.curl(
            Some(CN),
            &["-H", &right, "--data-binary", &f, &s.url("/v1beta1/upload")]
        )
        .0,
        200
    );
    assert_eq!(s.wait().1.as_deref(), Some(DONE));
    assert!(s.disk() == grown(&c.raw));
}

#[test]
fn archive_uploads_extract_and_block_volumes_take_images() {
    let t = tmp();
    let tarball = crate::import::tar(&[
        ("dir/", b'5', b"", 0o755, ""),
        ("dir/f.txt", b'0', b"hello", 0o644, ""),
    ]);
    let a = write(t.path(), "a.tar.gz", &gz(&tarball));
    let mut s = Server::start(&[]);
    assert_eq!(s.post("/v1beta1/upload-archive", &a).0, 200);
    assert_eq!(s.wait().0, Some(0));
    assert_eq!(
        std::fs::read(s.root().join("data/dir/f.txt")).unwrap(),
        b"hello"
    );
    if !crate::common::privileged() {
        return;
    }
    let c: Disk = disk(55);
    let q = write(t.path(), "d.qcow2", &c.qcow2);
    let lo = crate::common::Loop::new(16 << 20, 0x5a);
    let mut s = Server::on_block_volume(&lo);
    assert_eq!(s.post("/v1beta1/upload", &q).0, 200);
    assert_eq!(s.wait().0, Some(0));
    let dev = lo.read();
    assert!(
        dev[..c.raw.len()] == c.raw[..],
        "device content (holes zeroed)"
    );
}

#[test]
fn start_up_errors_and_the_deadline() {
    let t = tmp();
    let empty = write(t.path(), "empty.crt", b"");
    for env in [
        vec![("CLIENT_CERT_FILE", empty.to_str().unwrap())],
        vec![("TLS_KEY_FILE", "/nonexistent/tls.key")],
        vec![("TLS_CERT_FILE", "")],
    ] {
        let mut s = Server::spawn(&env);
        let (status, term, log) = s.wait();
        assert_eq!(status, Some(1), "{env:?}: {log}");
        assert_eq!(term, None);
        assert!(
            log.contains("UploadServer failed: Error getting TLS config"),
            "{log}"
        );
    }
    let mut s = Server::spawn(&[("DEADLINE", "not a time")]);
    assert_eq!(s.wait().0, Some(255));
    let mut s = Server::spawn(&[("DEADLINE", "2020-01-01T00:00:00Z")]);
    let (status, term, _) = s.wait();
    assert_eq!(status, Some(0));
    assert_eq!(
        term.as_deref(),
        Some(r#"{"deadlinePassed":true,"message":"Deadline Passed"}"#)
    );
}

#[test]
fn upload_progress_is_served_as_a_metric_while_the_body_arrives() {
    // Beyond CDI: percent of Content-Length, CDI's import metric format.
    let t = tmp();
    let raw = crate::common::pattern(8 << 20);
    let f = write(t.path(), "d.raw", &raw);
    let mport = free_port();
    let maddr = format!("127.0.0.1:{mport}");
    let mut s = Server::start(&[
        ("DISKIMPORT_METRICS_ADDRESS", &maddr),
        ("OWNER_UID", "up-1"),
    ]);
    let file = f.display().to_string();
    let mut slow = s.slow_upload("2M", &["-X", "POST", "-T", &file]);
    let mut seen = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) && slow.try_wait().unwrap().is_none() {
        let out = Command::new("curl")
            .args(["-sk", &format!("https://{maddr}/metrics")])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if let Some(v) = text
            .lines()
            .find_map(|l| l.strip_prefix(r#"kubevirt_cdi_import_progress_total{ownerUID="up-1"} "#))
        {
            seen.push(v.parse::<f64>().unwrap());
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(slow.wait().unwrap().success());
    assert_eq!(s.wait().0, Some(0));
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "not monotonic: {seen:?}"
    );
    assert!(
        seen.iter().any(|&v| v > 0.0 && v < 100.0),
        "no progress between 0 and 100: {seen:?}"
    );
    assert!(s.disk()[..raw.len()] == raw[..]);
}

#[test]
fn block_device_clone_targets_take_a_snappy_stream() {
    // Host-assisted clone (x-cdi-content-type: blockdevice-clone): CDI's
    // cloner sends the source device through golang/snappy's framed
    // writer; the bytes are written as they are ("Clone Complete").
    let t = tmp();
    let mut raw = crate::common::sparse_image(8 << 20);
    // A qcow2 header inside must not be interpreted: a clone is raw.
    raw[..4].copy_from_slice(b"QFI\xfb");
    let mut enc = snap::write::FrameEncoder::new(Vec::new());
    std::io::Write::write_all(&mut enc, &raw).unwrap();
    let framed = enc.into_inner().unwrap();
    let f = write(t.path(), "clone.sz", &framed);
    let fs = format!("@{}", f.display());
    let mut s = Server::start(&[]);
    let (code, body) = s.curl(
        Some(CN),
        &[
            "-H",
            "x-cdi-content-type: blockdevice-clone",
            "--data-binary",
            &fs,
            &s.url("/v1beta1/upload"),
        ],
    );
    assert_eq!(code, 200, "{body}");
    let (status, term, _) = s.wait();
    assert_eq!(status, Some(0));
    assert_eq!(
        term.as_deref(),
        Some(r#"{"preallocationApplied":false,"message":"Clone Complete"}"#)
    );
    assert!(s.disk()[..raw.len()] == raw[..], "clone content");
    // A broken snappy stream (its checksum fails) is 500 and leaves nothing.
    let mut bad = framed.clone();
    let n = bad.len();
    bad[n - 1] ^= 0xff;
    let mut check = Vec::new();
    assert!(
        std::io::Read::read_to_end(&mut snap::read::FrameDecoder::new(&bad[..]), &mut check)
            .is_err(),
        "the damaged stream must not decode"
    );
    let f = write(t.path(), "bad.sz", &bad);
    let mut s = Server::start(&[]);
    let (code, _) = s.curl(
        Some(CN),
        &[
            "-H",
            "x-cdi-content-type: blockdevice-clone",
            "--data-binary",
            &format!("@{}", f.display()),
            &s.url("/v1beta1/upload"),
        ],
    );
    assert_eq!(code, 500);
    assert!(!s.root().join("data/disk.img").exists());
    drop(s.child.take().map(|mut c| c.kill()));
}

#[test]
fn our_upload_client_probes_async_and_presents_its_certificate() {
    let c = disk(56);
    let t = tmp();
    let q = write(t.path(), "d.qcow2", &c.qcow2);
    let p = pki();
    let ca = t.path().join("ca");
    std::fs::create_dir_all(&ca).unwrap();
    std::fs::copy(p.dir.join("server-ca.crt"), ca.join("server-ca.crt")).unwrap();
    let ca = ca.display().to_string();
    let qs = q.display().to_string();
    let mut s = Server::start(&[]);
    let base = s.url("");
    let with = |cert: &str| {
        crate::common::run(&[
            "upload",
            "--no-progress",
            "--retries",
            "0",
            "--cert-dir",
            &ca,
            "--client-cert",
            &p.p(&format!("{cert}.crt")),
            "--client-key",
            &p.p(&format!("{cert}.key")),
            &qs,
            &base,
        ])
    };
    // The wrong name: 401 on the first attempt fails at once.
    let o = with("wrong.example");
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("unexpected return value 401"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = with(CN);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("to upload-async"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(s.wait().1.as_deref(), Some(DONE));
    assert!(s.disk() == grown(&c.raw));
}

#[test]
fn hostile_and_odd_uploads_get_the_import_paths_outcomes() {
    let t = tmp();
    // U14: a qcow2 naming a backing file is refused as on import (G1);
    // the server answers 500 and stays ready.
    let base = t.path().join("base.raw");
    std::fs::write(&base, vec![7u8; 1 << 20]).unwrap();
    let over = t.path().join("over.qcow2");
    sh(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            &base.display().to_string(),
            "-F",
            "raw",
            &over.display().to_string(),
        ],
    );
    let mut s = Server::start(&[]);
    let (code, body) = s.post("/v1beta1/upload", &over);
    assert_eq!(code, 500, "{body}");
    assert!(
        body.contains("Backing file") && body.contains("not allowed"),
        "{body}"
    );
    // U13: HTTP/2 is not offered; a client asking for it gets HTTP/1.1.
    let p = pki();
    let out = Command::new("curl")
        .args([
            "-s",
            "--http2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version}",
            "--cacert",
            &p.p("server-ca.crt"),
            &s.url("/healthz"),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1.1");
    // An ISO 9660 image is raw: copied as it is.
    let mut iso = crate::common::pattern(2 << 20);
    iso[32769..32774].copy_from_slice(b"CD001");
    let f = write(t.path(), "x.iso", &iso);
    assert_eq!(s.post("/v1beta1/upload", &f).0, 200);
    assert_eq!(s.wait().0, Some(0));
    assert!(s.disk()[..iso.len()] == iso[..]);
}

#[test]
fn filesystem_clone_targets_extract_gnu_sparse_tars_sparsely() {
    // CDI's cloner: `tar cv -S` of the source volume, through snappy.
    let t = tmp();
    let src = t.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut disk = vec![0u8; 16 << 20];
    disk[1 << 20..(1 << 20) + 65536].copy_from_slice(&crate::common::pattern(65536));
    disk[9 << 20..(9 << 20) + 4096].fill(0x5a);
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::File::create(src.join("disk.img")).unwrap();
        f.set_len(disk.len() as u64).unwrap();
        for (off, len) in [(1usize << 20, 65536usize), (9 << 20, 4096)] {
            f.seek(SeekFrom::Start(off as u64)).unwrap();
            f.write_all(&disk[off..off + len]).unwrap();
        }
    }
    std::fs::write(src.join("other.txt"), b"kept").unwrap();
    let tarball = t.path().join("clone.tar");
    sh(
        "tar",
        &[
            "--format=gnu",
            "-S",
            "-cf",
            &tarball.display().to_string(),
            "-C",
            &src.display().to_string(),
            "disk.img",
            "other.txt",
        ],
    );
    let raw_tar = std::fs::read(&tarball).unwrap();
    assert_eq!(raw_tar[156], b'S', "GNU tar wrote a sparse entry");
    let mut enc = snap::write::FrameEncoder::new(Vec::new());
    std::io::Write::write_all(&mut enc, &raw_tar).unwrap();
    let f = write(t.path(), "clone.sz", &enc.into_inner().unwrap());
    let mut s = Server::start(&[]);
    let (code, body) = s.curl(
        Some(CN),
        &[
            "-H",
            "x-cdi-content-type: filesystem-clone",
            "--data-binary",
            &format!("@{}", f.display()),
            &s.url("/v1beta1/upload"),
        ],
    );
    assert_eq!(code, 200, "{body}");
    let (status, term, _) = s.wait();
    assert_eq!(status, Some(0));
    assert_eq!(
        term.as_deref(),
        Some(r#"{"preallocationApplied":true,"message":"Clone Complete"}"#)
    );
    assert!(s.disk() == disk, "cloned disk content");
    assert_eq!(
        std::fs::read(s.root().join("data/other.txt")).unwrap(),
        b"kept"
    );
    let alloc = crate::common::allocated(&s.root().join("data/disk.img").display().to_string());
    assert!(
        alloc < 1 << 20,
        "holes were written: {alloc} bytes allocated"
    );
}

#[test]
fn a_connection_that_sends_nothing_is_closed_after_the_header_timeout() {
    // U08: CDI's ReadHeaderTimeout is 10 s; the TLS handshake is bounded
    // the same way, so a silent connection cannot hold a slot.
    use std::io::Read;
    let s = Server::start(&[]);
    let mut c = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 64];
    let n = c.read(&mut buf).unwrap_or(0);
    let waited = start.elapsed();
    assert_eq!(n, 0, "the server answered a silent connection");
    assert!(
        waited >= Duration::from_secs(8) && waited < Duration::from_secs(20),
        "{waited:?}"
    );
}
