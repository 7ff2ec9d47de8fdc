//! The upload server's remaining hostile and edge cases (issue 12): U04
//! (after success), U09 (a chunked body cut before its last chunk), U12
//! (attacker strings in error bodies), and a filesystem clone onto a block
//! volume. The servers, certificates and curl helpers are upload.rs's.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{pattern, tmp};
use crate::registry::disk;
use crate::upload::{grown, pki, write, Server, CN};

const DONE: &str = r#"{"preallocationApplied":false,"message":"Upload Complete"}"#;

/// Posts `file` until the server stops answering 503 (an aborted upload
/// is being cleaned up), at most 20 s; the last status.
fn post_when_ready(s: &Server, file: &std::path::Path) -> u16 {
    let start = Instant::now();
    loop {
        let (code, _) = s.post("/v1beta1/upload", file);
        if code != 503 || start.elapsed() > Duration::from_secs(20) {
            return code;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn u09_a_chunked_upload_cut_before_its_last_chunk_fails_and_the_next_one_succeeds() {
    let c = disk(57);
    let t = tmp();
    let q = write(t.path(), "d.qcow2", &c.qcow2);
    let mut s = Server::start(&[]);
    let p = pki();
    // curl sends stdin chunked; it is killed after 2 MiB, before the
    // terminating zero-length chunk.
    let mut curl = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "--cacert", &p.p("server-ca.crt")])
        .args([
            "--cert",
            &p.p(&format!("{CN}.crt")),
            "--key",
            &p.p(&format!("{CN}.key")),
        ])
        .args(["-X", "POST", "-H", "Transfer-Encoding: chunked", "-T", "-"])
        .arg(s.url("/v1beta1/upload"))
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = curl.stdin.take().unwrap();
    stdin.write_all(&pattern(2 << 20)).unwrap();
    stdin.flush().unwrap();
    let start = Instant::now();
    while !s.root().join("data/disk.img").exists() && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        s.root().join("data/disk.img").exists(),
        "the upload never started"
    );
    curl.kill().unwrap();
    curl.wait().unwrap();
    drop(stdin);
    // The cut upload is a failure: the server is ready again and the next
    // upload is written from offset 0.
    assert_eq!(post_when_ready(&s, &q), 200);
    let (status, term, log) = s.wait();
    assert_eq!(status, Some(0), "{log}");
    assert_eq!(term.as_deref(), Some(DONE));
    assert!(s.disk() == grown(&c.raw), "the retried upload's content");
    assert!(
        log.contains("Saving stream failed") && log.contains("Truncated"),
        "the cut upload is logged as a failure: {log}"
    );
}

#[test]
fn u04_after_success_the_server_is_gone_and_a_repeat_upload_reaches_nothing() {
    // The server answers 409 to an upload that reaches it after success
    // (the admission rule, unit-tested in upload/server.rs) and exits right
    // after its termination message: CDI's proxy then answers 503, and a
    // direct client finds no server.
    let c = disk(58);
    let t = tmp();
    let q = write(t.path(), "d.qcow2", &c.qcow2);
    let mut s = Server::start(&[]);
    assert_eq!(s.post("/v1beta1/upload", &q).0, 200);
    let (status, term, _) = s.wait();
    assert_eq!((status, term.as_deref()), (Some(0), Some(DONE)));
    let (code, _) = s.post("/v1beta1/upload", &q);
    assert_eq!(code, 0, "no server answers after success");
    assert!(s.disk() == grown(&c.raw), "the first upload stays");
}

#[test]
fn u12_attacker_strings_in_error_bodies_are_html_escaped() {
    // CDI's XSS test: the string must not come back as markup. Here it is
    // a tar member's name, refused for its `..`, echoed in the error.
    const XSS: &str = "<script>Bad stuff here...</script>";
    let t = tmp();
    let name = format!("{XSS}/../../x");
    let tarball = crate::import::tar(&[(name.as_str(), b'0', b"x", 0o644, "")]);
    let a = write(t.path(), "evil.tar", &tarball);
    let mut s = Server::start(&[]);
    let (code, body) = s.post("/v1beta1/upload-archive", &a);
    assert_eq!(code, 500, "{body}");
    assert!(body.contains("Unsafe archive entry"), "{body}");
    assert!(!body.contains(XSS), "raw markup echoed: {body}");
    assert!(
        body.contains("&lt;script&gt;Bad stuff here...&lt;/script&gt;"),
        "{body}"
    );
    // The same for a form whose boundary is markup.
    let f = write(t.path(), "f.bin", b"data");
    let (code, body) = s.curl(
        Some(CN),
        &[
            "-H",
            &format!("Content-Type: multipart/form-data; boundary=\"{XSS}\""),
            "--data-binary",
            &format!("@{}", f.display()),
            &s.url("/v1beta1/upload-form"),
        ],
    );
    assert_eq!(code, 400, "{body}");
    assert!(!body.contains("<script>"), "raw markup echoed: {body}");
    // Still ready: a failed upload resets the server.
    let c = disk(59);
    let q = write(t.path(), "d.qcow2", &c.qcow2);
    assert_eq!(post_when_ready(&s, &q), 200);
    assert_eq!(s.wait().0, Some(0));
}

#[test]
fn a_filesystem_clone_onto_a_block_volume_writes_the_disk_image_entry() {
    if !crate::common::privileged() {
        return;
    }
    // The cloner's tar of a Filesystem source; the target is a Block
    // volume, which takes the disk.img entry (docs/upload.md, "Clones").
    let mut img = vec![0u8; 8 << 20];
    img[1 << 20..(1 << 20) + 65536].copy_from_slice(&pattern(65536));
    img[6 << 20..(6 << 20) + 4096].fill(0x33);
    let tarball = crate::import::tar(&[
        ("disk.img", b'0', &img, 0o644, ""),
        ("other.txt", b'0', b"not for a device", 0o644, ""),
    ]);
    let mut enc = snap::write::FrameEncoder::new(Vec::new());
    enc.write_all(&tarball).unwrap();
    let t = tmp();
    let f = write(t.path(), "clone.sz", &enc.into_inner().unwrap());
    let lo = crate::common::Loop::new(16 << 20, 0x5a);
    let mut s = Server::on_block_volume(&lo);
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
    let (status, term, log) = s.wait();
    assert_eq!(status, Some(0), "{log}");
    assert!(
        term.as_deref()
            .is_some_and(|t| t.contains("Clone Complete")),
        "{term:?}"
    );
    let dev = lo.read();
    assert!(dev[..img.len()] == img[..], "device content");
}
