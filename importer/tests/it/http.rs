//! The HTTP(S) source against a real nginx, a fault-injecting server and a
//! CONNECT proxy: differential conversions, resume, redirects, auth, TLS,
//! egress, and the hostile HTTP cases H01-H23 (docs/ids.md).

use std::process::Output;

use crate::common::{fails, gz, ok, path, pattern, run, tmp};
use crate::net::{nginx, with_cuts, Body, FaultServer, Proxy, Reply, Static};

/// Short back-off so retry tests take milliseconds.
const FAST: [&str; 2] = ["--retry-delay", "0.01"];

fn convert(src: &str, dst: &str, extra: &[&str]) -> Output {
    let mut args = vec!["convert", "--no-progress", "--output", "json"];
    args.extend_from_slice(&FAST);
    args.extend_from_slice(extra);
    args.push(src);
    args.push(dst);
    run(&args)
}

/// Converts `src` into a fresh directory; asserts a failure of `kind`
/// naming `needle` and that no target was left behind. Returns the output.
fn refused(src: &str, extra: &[&str], kind: &str, needle: &str) -> Output {
    let dir = tmp();
    let o = convert(src, &path(dir.path(), "o.raw"), extra);
    fails(&o, kind, needle);
    assert!(!dir.path().join("o.raw").exists(), "target left behind");
    o
}

fn report(out: &Output) -> serde_json::Value {
    serde_json::from_str(&ok(out)).expect("JSON report")
}

fn read(p: &str) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

/// Converts `local` (a file) the ordinary way: the reference output.
fn local_reference(dir: &std::path::Path, local: &std::path::Path) -> Vec<u8> {
    let out = path(dir, "reference.raw");
    ok(&run(&[
        "convert",
        "--no-progress",
        local.to_str().unwrap(),
        &out,
    ]));
    read(&out)
}

#[test]
fn every_image_over_http_equals_its_local_conversion() {
    let Some(n) = nginx() else { return };
    let dir = tmp();
    for (name, layers, read_path) in [
        ("disk.raw", "raw", "stream"),
        ("disk.qcow2", "qcow2", "random access"),
        ("disk.z.qcow2", "qcow2", "random access"),
        ("disk.qcow2.gz", "gzip -> qcow2", "stream"),
        ("disk.raw.xz", "xz -> raw", "stream"),
        ("disk.raw.gz", "gzip -> raw", "stream"),
    ] {
        let reference = local_reference(dir.path(), &n.file(name));
        assert_eq!(reference, n.images.raw, "{name}: local conversion");
        let out = path(dir.path(), "out.raw");
        let r = report(&convert(&n.url(name), &out, &[]));
        assert_eq!(read(&out), reference, "{name} over HTTP");
        assert_eq!(r["layers"], layers, "{name}");
        assert_eq!(r["read_path"], read_path, "{name}");
        assert_eq!(r["http"]["refetched_bytes"], 0, "{name}");
        assert_eq!(r["http"]["retries"], 0, "{name}");
    }
}

#[test]
fn info_over_http_reads_the_qcow2_mapping_by_ranges() {
    let Some(n) = nginx() else { return };
    let out = ok(&run(&["info", "--output", "json", &n.url("disk.qcow2")]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["format"], "qcow2");
    assert_eq!(v["virtual_size"], n.images.raw.len() as u64);
    assert_eq!(v["qcow2"]["path"], "random access");
    let data = n
        .images
        .raw
        .chunks(65536)
        .filter(|c| c.iter().any(|&b| b != 0))
        .count();
    assert_eq!(v["qcow2"]["data_bytes"], data as u64 * 65536);
}

#[test]
fn redirect_chain_is_followed_and_the_final_url_reused() {
    let Some(n) = nginx() else { return };
    let dir = tmp();
    let out = path(dir.path(), "out.raw");
    let r = report(&convert(&n.url("c3/disk.qcow2"), &out, &[]));
    assert_eq!(read(&out), n.images.raw);
    assert_eq!(r["read_path"], "random access");
    // Range requests go to the final URL: only the first GET walks the chain.
    let log = n.access_log();
    let hops = log
        .lines()
        .filter(|l| l.contains("GET /c3/disk.qcow2"))
        .count();
    assert_eq!(hops, 1, "the chain was walked more than once: {log}");
}

#[test]
fn h11_redirect_loop_stops_at_ten() {
    let Some(n) = nginx() else { return };
    let dir = tmp();
    let out = convert(&n.url("loop"), &path(dir.path(), "o.raw"), &[]);
    fails(&out, "source", "too many redirects");
    assert!(!dir.path().join("o.raw").exists());
}

#[test]
fn basic_auth_is_sent_and_required() {
    let Some(n) = nginx() else { return };
    let dir = tmp();
    let out = path(dir.path(), "out.raw");
    // H01: 401 at once, not retried.
    let o = convert(&n.url("auth/disk.raw.xz"), &out, &[]);
    fails(&o, "auth", "expected status code 200, got 401");
    assert_eq!(o.status.code(), Some(9), "auth has its own exit code");
    assert!(!String::from_utf8_lossy(&o.stderr).contains("retrying"));
    let pw = path(dir.path(), "pw");
    std::fs::write(&pw, "s3cret\n").unwrap();
    let r = report(&convert(
        &n.url("auth/disk.raw.xz"),
        &out,
        &["--username", "alice", "--password-file", &pw],
    ));
    assert_eq!(read(&out), n.images.raw);
    assert_eq!(r["layers"], "xz -> raw");
    std::fs::write(&pw, "wrong").unwrap();
    fails(
        &convert(
            &n.url("auth/disk.raw.xz"),
            &out,
            &["--username", "alice", "--password-file", &pw],
        ),
        "auth",
        "got 401",
    );
}

#[test]
fn h20_https_needs_the_ca_or_insecure() {
    let Some(n) = nginx() else { return };
    let dir = tmp();
    let out = path(dir.path(), "out.raw");
    let url = n.https_url("disk.qcow2");
    let o = convert(&url, &out, &[]);
    fails(&o, "source", "TLS error");
    assert!(!dir.path().join("out.raw").exists());
    let ca = n.pki.ca_dir.to_str().unwrap();
    let r = report(&convert(&url, &out, &["--cert-dir", ca]));
    assert_eq!(read(&out), n.images.raw);
    assert_eq!(r["read_path"], "random access");
    std::fs::remove_file(&out).unwrap();
    report(&convert(&n.https_url("disk.raw.gz"), &out, &["--insecure"]));
    assert_eq!(read(&out), n.images.raw);
    // A CA directory with a file that is not a certificate is a usage error.
    let bad = dir.path().join("bad-ca");
    std::fs::create_dir(&bad).unwrap();
    std::fs::write(bad.join("ca.crt"), "junk").unwrap();
    fails(
        &convert(&url, &out, &["--cert-dir", bad.to_str().unwrap()]),
        "usage",
        "no PEM certificate",
    );
}

#[test]
fn h20_tls_below_1_2_is_refused_even_when_insecure() {
    let Some(n) = nginx() else { return };
    let url = format!("https://127.0.0.1:{}/disk.raw.xz", n.old_tls);
    // The server does speak TLS 1.0/1.1 (curl gets the file), so the
    // refusal below is ours.
    let curl = std::process::Command::new("curl")
        .args([
            "-sk",
            "--tlsv1.0",
            "--tls-max",
            "1.1",
            "--ciphers",
            "ALL:@SECLEVEL=0",
        ])
        .args(["-o", "/dev/null", "-w", "%{http_code}", &url])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&curl.stdout),
        "200",
        "old-TLS server not usable"
    );
    refused(
        &url,
        &["--insecure", "--retries", "0"],
        "source",
        "TLS error",
    );
}

#[test]
fn h13_https_to_http_redirect_is_refused() {
    let Some(n) = nginx() else { return };
    let dir = tmp();
    let ca = n.pki.ca_dir.to_str().unwrap();
    let o = convert(
        &n.https_url("downgrade/x"),
        &path(dir.path(), "o.raw"),
        &["--cert-dir", ca],
    );
    fails(&o, "source", "from https to http");
}

#[test]
fn h18_d13_html_page_is_refused_unless_raw_is_asked() {
    let Some(n) = nginx() else { return };
    let dir = tmp();
    let out = path(dir.path(), "o.raw");
    fails(
        &convert(&n.url("login.html"), &out, &[]),
        "format",
        "HTML page, not a disk image",
    );
    assert!(!dir.path().join("o.raw").exists());
    ok(&convert(
        &n.url("login.html"),
        &out,
        &["--source-format", "raw"],
    ));
    let got = read(&out);
    assert!(got.starts_with(b"<!DOCTYPE html>"));
    assert_eq!(got.len() % 512, 0);
}

#[test]
fn h01_404_fails_at_once() {
    let Some(n) = nginx() else { return };
    let dir = tmp();
    let o = convert(&n.url("missing.qcow2"), &path(dir.path(), "o.raw"), &[]);
    fails(
        &o,
        "source",
        "Unable to connect to http data source: expected status code 200, got 404",
    );
    assert!(!dir.path().join("o.raw").exists());
}

#[test]
fn h22_checksum_over_http_covers_the_bytes_as_served() {
    let Some(n) = nginx() else { return };
    let dir = tmp();
    let out = path(dir.path(), "o.raw");
    let served = read(n.file("disk.qcow2").to_str().unwrap());
    let good = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&served))
    );
    // With a checksum a qcow2 takes the one-pass stream path.
    let r = report(&convert(&n.url("disk.qcow2"), &out, &["--checksum", &good]));
    assert_eq!(r["read_path"], "stream");
    assert_eq!(read(&out), n.images.raw);
    let bad = format!("sha256:{}", "0".repeat(64));
    std::fs::remove_file(&out).unwrap();
    let o = convert(&n.url("disk.qcow2"), &out, &["--checksum", &bad]);
    fails(&o, "integrity", "checksum validation failed");
    fails(&o, "integrity", "checksum mismatch");
    assert!(!dir.path().join("o.raw").exists(), "target left behind");
}

#[test]
fn proxy_from_the_environment_is_used_for_http_and_https() {
    let Some(n) = nginx() else { return };
    let dir = tmp();
    let out = path(dir.path(), "o.raw");
    let proxy = Proxy::start();
    let ca = n.pki.ca_dir.to_str().unwrap();
    let o = assert_cmd::Command::cargo_bin("diskimport")
        .unwrap()
        .env("https_proxy", proxy.url())
        .env("http_proxy", proxy.url())
        .env_remove("no_proxy")
        .env_remove("NO_PROXY")
        .args(["convert", "--no-progress", "--proxy-cert-dir", ca])
        .args([n.https_url("disk.qcow2"), out.clone()])
        .timeout(std::time::Duration::from_secs(120))
        .output()
        .unwrap();
    ok(&o);
    assert_eq!(read(&out), n.images.raw);
    let t = proxy.targets.lock().unwrap().clone();
    assert!(
        t.iter()
            .any(|t| t == &format!("CONNECT 127.0.0.1:{}", n.https)),
        "no CONNECT through the proxy: {t:?}"
    );
    std::fs::remove_file(&out).unwrap();
    let o = assert_cmd::Command::cargo_bin("diskimport")
        .unwrap()
        .env("http_proxy", proxy.url())
        .env_remove("no_proxy")
        .env_remove("NO_PROXY")
        .args(["convert", "--no-progress"])
        .args([n.url("disk.raw.xz"), out.clone()])
        .timeout(std::time::Duration::from_secs(120))
        .output()
        .unwrap();
    ok(&o);
    assert_eq!(read(&out), n.images.raw);
    let t = proxy.targets.lock().unwrap().clone();
    assert!(
        t.iter()
            .any(|t| t.starts_with("GET http://127.0.0.1:") && t.ends_with("/disk.raw.xz")),
        "no absolute-form GET through the proxy: {t:?}"
    );
    // no_proxy bypasses it.
    let before = proxy.targets.lock().unwrap().len();
    let o = assert_cmd::Command::cargo_bin("diskimport")
        .unwrap()
        .env("http_proxy", proxy.url())
        .env("no_proxy", "127.0.0.1")
        .args(["convert", "--no-progress"])
        .args([n.url("disk.raw.xz"), out.clone()])
        .timeout(std::time::Duration::from_secs(120))
        .output()
        .unwrap();
    ok(&o);
    assert_eq!(proxy.targets.lock().unwrap().len(), before);
}

// ---------------------------------------------------------------------
// Fault injection.

fn image(len: usize) -> Vec<u8> {
    let mut v = pattern(len);
    // Some zero runs, so the sink's hole handling is exercised too.
    for c in v.chunks_mut(1 << 20).skip(1).step_by(3) {
        c.fill(0);
    }
    v
}

#[test]
fn h02_connection_refused_fails_after_bounded_retries() {
    let dir = tmp();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let o = convert(
        &format!("http://127.0.0.1:{port}/x.img"),
        &path(dir.path(), "o.raw"),
        &["--retries", "3"],
    );
    // Still unavailable after the retries: a transient kind, exit 6.
    fails(&o, "unavailable", "Unable to connect to http data source");
    assert_eq!(o.status.code(), Some(6));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(stderr.matches("retrying").count(), 3, "{stderr}");
    assert!(!dir.path().join("o.raw").exists());
}

#[test]
fn h03_5xx_408_429_are_retried_then_succeed() {
    let data = image(3 << 20);
    let res = Static::new(data.clone());
    let s = FaultServer::start(move |req, n| match n {
        0 | 1 => Reply::new(503),
        2 => Reply::new(429),
        3 => Reply::new(408),
        _ => res.reply(req),
    });
    let dir = tmp();
    let out = path(dir.path(), "o.raw");
    let r = report(&convert(&s.url("d.img"), &out, &[]));
    assert_eq!(read(&out), data);
    assert_eq!(r["http"]["retries"], 4);
    // The budget is bounded: five failures with two retries fail.
    let s = FaultServer::start(|_, _| Reply::new(503));
    let o = convert(&s.url("d.img"), &out, &["--retries", "2"]);
    fails(&o, "unavailable", "got 503");
    assert_eq!(s.requests().len(), 3);
}

#[test]
fn h01_4xx_are_not_retried() {
    // 401 and 403 are authentication failures (exit 9), 404 a source
    // failure (exit 6).
    for (status, kind, code) in [(401u16, "auth", 9), (403, "auth", 9), (404, "source", 6)] {
        let s = FaultServer::start(move |_, _| Reply::new(status));
        let dir = tmp();
        let o = convert(&s.url("d.img"), &path(dir.path(), "o.raw"), &[]);
        fails(&o, kind, &format!("expected status code 200, got {status}"));
        assert_eq!(o.status.code(), Some(code));
        assert_eq!(s.requests().len(), 1, "{status} was retried");
    }
}

#[test]
fn h04_head_is_never_needed() {
    let data = image(1 << 20);
    let res = Static::new(data.clone());
    let s = FaultServer::start(move |req, _| {
        if req.method == "HEAD" {
            Reply::new(403)
        } else {
            res.reply(req)
        }
    });
    let dir = tmp();
    let out = path(dir.path(), "o.raw");
    report(&convert(&s.url("d.img"), &out, &[]));
    assert_eq!(read(&out), data);
    assert!(s.requests().iter().all(|r| r.method == "GET"));
}

#[test]
fn h05_reset_mid_body_resumes_with_range_and_if_range() {
    let data = image(6 << 20);
    let res = Static::new(data.clone());
    let s = FaultServer::start(with_cuts(res, vec![1_000_001, 4_500_000]));
    let dir = tmp();
    let out = path(dir.path(), "o.raw");
    let r = report(&convert(&s.url("d.img"), &out, &[]));
    assert_eq!(read(&out), data);
    assert_eq!(r["http"]["resumes"], 2);
    assert_eq!(r["http"]["refetched_bytes"], 0);
    assert_eq!(r["http"]["fetched_bytes"], data.len() as u64);
    let reqs = s.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[1].header("Range"), Some("bytes=1000001-"));
    assert_eq!(reqs[1].header("If-Range"), Some("\"v1\""));
    assert!(reqs
        .iter()
        .all(|r| r.header("Accept-Encoding") == Some("identity")));
}

#[test]
fn h05_random_resets_still_give_identical_output() {
    let data = image(8 << 20);
    let xzd = crate::common::xz(&data);
    let gzd = gz(&data);
    let dir = tmp();
    let out = path(dir.path(), "o.raw");
    for seed in 1..=4u64 {
        for (name, body) in [("d.img", &data), ("d.img.xz", &xzd), ("d.img.gz", &gzd)] {
            // A small xorshift: cut points spread over the body.
            let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mut cuts = Vec::new();
            for _ in 0..3 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                cuts.push(1 + (x % (body.len() as u64 - 1)) as usize);
            }
            let s = FaultServer::start(with_cuts(Static::new(body.clone()), cuts.clone()));
            let r = report(&convert(&s.url(name), &out, &[]));
            assert_eq!(read(&out), data, "seed {seed} {name} cuts {cuts:?}");
            assert_eq!(r["http"]["refetched_bytes"], 0, "seed {seed} {name}");
            assert!(
                r["http"]["resumes"].as_u64().unwrap() >= 1,
                "seed {seed} {name}"
            );
        }
    }
}

#[test]
fn qcow2_random_access_survives_resets_in_range_responses() {
    let Some(n) = nginx() else { return };
    let qcow = std::fs::read(n.file("disk.qcow2")).unwrap();
    let dir = tmp();
    let out = path(dir.path(), "o.raw");
    for seed in 1..=3usize {
        let cuts = (1..=4)
            .map(|i| (qcow.len() / 5) * i + seed * 7919)
            .collect();
        let s = FaultServer::start(with_cuts(Static::new(qcow.clone()), cuts));
        let r = report(&convert(&s.url("d.qcow2"), &out, &["--connections", "3"]));
        assert_eq!(r["read_path"], "random access");
        assert_eq!(read(&out), n.images.raw, "seed {seed}");
        assert_eq!(r["http"]["refetched_bytes"], 0);
        let ranged = s
            .requests()
            .iter()
            .filter(|r| r.header("Range").is_some())
            .count();
        assert!(ranged >= 2, "no range requests");
        assert!(s
            .requests()
            .iter()
            .filter(|r| r.header("Range").is_some())
            .all(|r| r.header("If-Range") == Some("\"v1\"")));
    }
}

#[test]
fn h06_no_range_support_restarts_from_zero_and_skips() {
    let data = image(4 << 20);
    let mut res = Static::new(data.clone());
    res.ranges = false;
    let s = FaultServer::start(with_cuts(res, vec![1_500_000]));
    let dir = tmp();
    let out = path(dir.path(), "o.raw");
    let r = report(&convert(&s.url("d.img"), &out, &[]));
    assert_eq!(read(&out), data);
    assert_eq!(r["http"]["refetched_bytes"], 1_500_000);
    assert!(s.requests().iter().all(|r| r.header("Range").is_none()));
}

#[test]
fn h06_range_ignored_with_200_is_never_appended() {
    let data = image(4 << 20);
    let res = Static::new(data.clone());
    let cut = std::sync::atomic::AtomicBool::new(true);
    // Accept-Ranges announced, but every request answered 200 in full.
    let s = FaultServer::start(move |req, _| {
        let mut plain = req.clone();
        plain
            .headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case("range"));
        let mut r = res.reply(&plain);
        if cut.swap(false, std::sync::atomic::Ordering::SeqCst) {
            r.mode = Body::CloseAfter(2_000_000);
        }
        r
    });
    let dir = tmp();
    let out = path(dir.path(), "o.raw");
    let r = report(&convert(&s.url("d.img"), &out, &[]));
    assert_eq!(read(&out), data);
    assert_eq!(r["http"]["refetched_bytes"], 2_000_000);
}

#[test]
fn h06_no_validator_cannot_resume_safely() {
    let data = image(2 << 20);
    let mut res = Static::new(data);
    res.ranges = false;
    res.etag = None;
    res.last_modified = None;
    let s = FaultServer::start(with_cuts(res, vec![700_000]));
    refused(&s.url("d.img"), &[], "truncated", "no way to resume safely");
}

#[test]
fn h07_wrong_content_range_fails() {
    let data = image(2 << 20);
    let res = Static::new(data);
    let s = FaultServer::start(move |req, n| {
        let mut r = res.reply(req);
        if n == 0 {
            r.mode = Body::CloseAfter(100_000);
        } else {
            // Claims to start elsewhere than asked.
            for h in r.headers.iter_mut().filter(|h| h.0 == "Content-Range") {
                h.1 = h.1.replace("bytes 100000-", "bytes 0-");
            }
        }
        r
    });
    refused(
        &s.url("d.img"),
        &[],
        "source",
        "answered the range request bytes=100000-",
    );
}

#[test]
fn h08_body_shorter_than_content_length_is_truncated() {
    let data = image(1 << 20);
    let len = data.len();
    let s = FaultServer::start(move |_, _| {
        Reply::new(200)
            .body(data.clone())
            .mode(Body::CloseAfter(len - 1))
    });
    refused(&s.url("d.img"), &[], "truncated", &format!("of {len}"));
}

#[test]
fn h09_no_length_and_early_close_warns_for_raw() {
    let data = image(1 << 20);
    let d2 = data.clone();
    let s = FaultServer::start(move |_, _| Reply::new(200).body(d2.clone()).mode(Body::UntilClose));
    let dir = tmp();
    let out = path(dir.path(), "o.raw");
    let r = report(&convert(&s.url("d.img"), &out, &[]));
    assert_eq!(read(&out), data);
    let w = r["warnings"].to_string();
    assert!(
        w.contains("truncated raw download cannot be detected"),
        "{w}"
    );
    // A compressed body cut short is caught by the format's own checks.
    let z = gz(&data);
    let s = FaultServer::start(move |_, _| {
        Reply::new(200)
            .body(z[..z.len() / 2].to_vec())
            .mode(Body::UntilClose)
    });
    fails(&convert(&s.url("d.gz"), &out, &[]), "truncated", "");
}

#[test]
fn h10_chunked_body_without_final_chunk_is_truncated() {
    let data = image(1 << 20);
    let s =
        FaultServer::start(move |_, _| Reply::new(200).body(data.clone()).mode(Body::ChunkedNoEnd));
    refused(
        &s.url("d.img"),
        &["--retries", "1"],
        "truncated",
        "no way to resume safely",
    );
}

#[test]
fn h12_redirect_to_other_schemes_is_refused() {
    for to in [
        "file:///etc/passwd",
        "ftp://127.0.0.1/x",
        "gopher://127.0.0.1/x",
        "data:text/plain,hello",
    ] {
        let target = to.to_owned();
        let s = FaultServer::start(move |_, _| Reply::redirect(&target));
        let dir = tmp();
        let o = convert(&s.url("d.img"), &path(dir.path(), "o.raw"), &[]);
        fails(&o, "source", "redirect to unsupported scheme");
    }
    let dir = tmp();
    fails(
        &convert("ftp://127.0.0.1/x", &path(dir.path(), "o.raw"), &[]),
        "usage",
        "unsupported source scheme",
    );
}

#[test]
fn h14_credentials_and_headers_stay_with_their_origin() {
    let data = image(1 << 20);
    let other = {
        let res = Static::new(data.clone());
        FaultServer::start(move |req, _| res.reply(req))
    };
    let other_url = other.url("d.img");
    let first = FaultServer::start(move |req, _| {
        if req.path == "/start" {
            Reply::redirect("/same")
        } else {
            Reply::redirect(&other_url)
        }
    });
    let dir = tmp();
    let pw = path(dir.path(), "pw");
    std::fs::write(&pw, "hunter2").unwrap();
    let out = path(dir.path(), "o.raw");
    report(&convert(
        &first.url("start"),
        &out,
        &[
            "--username",
            "bob",
            "--password-file",
            &pw,
            "--header",
            "X-Secret: token-1",
        ],
    ));
    assert_eq!(read(&out), data);
    let a = first.requests();
    assert_eq!(a.len(), 2);
    for r in &a {
        assert!(r
            .header("Authorization")
            .is_some_and(|v| v.starts_with("Basic ")));
        assert_eq!(r.header("X-Secret"), Some("token-1"));
    }
    let b = other.requests();
    assert!(!b.is_empty());
    for r in &b {
        assert!(
            r.header("Authorization").is_none(),
            "credentials leaked: {r:?}"
        );
        assert!(
            r.header("X-Secret").is_none(),
            "secret header leaked: {r:?}"
        );
    }
}

#[test]
fn header_files_are_read_and_never_logged() {
    let data = image(1 << 20);
    let res = Static::new(data.clone());
    let s = FaultServer::start(move |req, _| {
        if req.header("X-Token") == Some("very-secret") && req.header("X-Other") == Some("2") {
            res.reply(req)
        } else {
            Reply::new(403)
        }
    });
    let dir = tmp();
    let hd = dir.path().join("extraheaders");
    std::fs::create_dir_all(hd.join("0")).unwrap();
    std::fs::write(hd.join("0").join("token"), "X-Token: very-secret\n").unwrap();
    std::fs::write(hd.join("other"), "X-Other: 2").unwrap();
    std::fs::write(hd.join(".hidden"), "X-Bad: 1").unwrap();
    let out = path(dir.path(), "o.raw");
    let o = convert(
        &s.url("d.img"),
        &out,
        &["-v", "--header-dir", hd.to_str().unwrap()],
    );
    report(&o);
    assert_eq!(read(&out), data);
    assert!(s.requests()[0].header("X-Bad").is_none());
    assert!(!String::from_utf8_lossy(&o.stderr).contains("very-secret"));
    // A bad header line names the header, never its value.
    let o = convert(
        &s.url("d.img"),
        &out,
        &["--header", "Bad Name: very-secret"],
    );
    fails(&o, "usage", "invalid header");
    assert!(!String::from_utf8_lossy(&o.stderr).contains("very-secret"));
}

#[test]
fn h15_h16_metadata_and_link_local_destinations_are_refused() {
    let dir = tmp();
    let out = path(dir.path(), "o.raw");
    for url in [
        "http://169.254.169.254/latest/meta-data",
        "http://[fe80::1]/x",
        "http://[fd00:ec2::254]/x",
        "http://a@169.254.169.254/x",
        "http://[::ffff:169.254.169.254]/x",
        "http://0xa9fea9fe/x",
    ] {
        fails(
            &convert(url, &out, &[]),
            "source",
            "destination not allowed",
        );
    }
    // Percent-encoded tricks do not parse to a metadata host.
    let o = convert("http://x%2F169.254.169.254/x", &out, &["--retries", "0"]);
    assert!(!o.status.success());
    assert!(!dir.path().join("o.raw").exists());
    // A redirect to the metadata address is refused the same way.
    let s = FaultServer::start(|_, _| Reply::redirect("http://169.254.169.254/latest"));
    fails(
        &convert(&s.url("d"), &out, &[]),
        "source",
        "destination not allowed",
    );
    // Names are checked on the resolved address (the connect-time check).
    let data = image(1 << 20);
    let res = Static::new(data.clone());
    let s = FaultServer::start(move |req, _| res.reply(req));
    let by_name = format!("http://localhost:{}/d.img", s.port);
    fails(
        &convert(
            &by_name,
            &out,
            &[
                "--deny-destination",
                "127.0.0.0/8",
                "--deny-destination",
                "::1",
            ],
        ),
        "source",
        "destination not allowed: localhost resolves to",
    );
    assert!(s.requests().is_empty());
    // An allow-list entry lets it through.
    report(&convert(
        &by_name,
        &out,
        &[
            "--deny-destination",
            "127.0.0.0/8",
            "--deny-destination",
            "::1",
            "--allow-destination",
            "127.0.0.1",
            "--allow-destination",
            "::1",
        ],
    ));
    assert_eq!(read(&out), data);
}

#[test]
fn h17_slow_server_hits_the_idle_timeout_and_the_deadline() {
    let s = FaultServer::start(|_, _| Reply::new(200).body(vec![1u8; 64]).mode(Body::Slow(1500)));
    let dir = tmp();
    let out = path(dir.path(), "o.raw");
    let t = std::time::Instant::now();
    let o = convert(
        &s.url("d.img"),
        &out,
        &["--idle-timeout", "0.5", "--retries", "0"],
    );
    fails(&o, "source", "no progress for");
    assert!(t.elapsed() < std::time::Duration::from_secs(20));
    let s = FaultServer::start(|_, _| Reply::new(200).body(vec![1u8; 64]).mode(Body::Slow(200)));
    let o = convert(&s.url("d.img"), &out, &["--deadline", "1"]);
    fails(&o, "source", "deadline of 1 s passed");
    assert!(!dir.path().join("o.raw").exists());
}

#[test]
fn h19_content_encoding_is_never_decoded_transparently() {
    let data = image(1 << 20);
    let z = gz(&data);
    let sum = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&z))
    );
    let s = FaultServer::start(move |_, _| {
        Reply::new(200)
            .header("Content-Encoding", "gzip")
            .body(z.clone())
    });
    let dir = tmp();
    let out = path(dir.path(), "o.raw");
    // The gzip bytes as served are the source: detected by magic, decoded
    // once by our decoder, and the checksum is over them.
    let r = report(&convert(&s.url("d.img"), &out, &["--checksum", &sum]));
    assert_eq!(r["layers"], "gzip -> raw");
    assert_eq!(read(&out), data);
    assert_eq!(s.requests()[0].header("Accept-Encoding"), Some("identity"));
}

#[test]
fn h21_huge_headers_fail_with_bounded_memory() {
    let s = FaultServer::start(|_, _| {
        let mut r = Reply::new(200).body(vec![0u8; 512]);
        for i in 0..5000 {
            r = r.header(&format!("X-Junk-{i}"), &"y".repeat(100));
        }
        r
    });
    let dir = tmp();
    let o = convert(
        &s.url("d.img"),
        &path(dir.path(), "o.raw"),
        &["--retries", "1"],
    );
    fails(&o, "source", "");
    let s = FaultServer::start(|_, _| {
        Reply::new(200)
            .header("X-Big", &"z".repeat(2 << 20))
            .body(vec![0u8; 512])
    });
    let o = convert(
        &s.url("d.img"),
        &path(dir.path(), "o.raw"),
        &["--retries", "1"],
    );
    fails(&o, "source", "");
    assert!(!dir.path().join("o.raw").exists());
}

#[test]
fn h23_changed_resource_is_never_mixed() {
    let v1 = image(3 << 20);
    let mut v2 = v1.clone();
    v2[2 << 20] ^= 0xff;
    let first = Static::new(v1);
    let mut second = Static::new(v2);
    second.etag = Some("\"v2\"".into());
    second.last_modified = Some("Wed, 25 Nov 2026 10:00:00 GMT".into());
    let s = FaultServer::start(move |req, n| {
        if n == 0 {
            first.reply(req).mode(Body::CloseAfter(1 << 20))
        } else {
            // If-Range "v1" does not match: the full new version, 200.
            second.reply(req)
        }
    });
    refused(
        &s.url("d.img"),
        &[],
        "source",
        "resource changed during the download",
    );
    assert_eq!(s.requests()[1].header("If-Range"), Some("\"v1\""));
}

#[test]
fn raw_over_http_with_a_length_is_size_checked_before_writing() {
    let data = image(4 << 20);
    let res = Static::new(data);
    let s = FaultServer::start(move |req, _| res.reply(req));
    refused(
        &s.url("d.img"),
        &["--target-size", "1Mi"],
        "size",
        "is larger than the reported available storage",
    );
}
