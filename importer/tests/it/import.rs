//! `diskimport import` with CDI environments in a temporary root: the
//! termination message, exit codes, space rules, blank images, block
//! volumes, the archive content type (T21) and the progress metric.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::{privileged, Loop, Tmpfs};
use crate::net::{nginx, Body, FaultServer, Static};

/// A pod-like root: /data, /dev; termination log at /dev/termination-log.
pub(crate) struct Pod {
    dir: tempfile::TempDir,
}

impl Pod {
    pub(crate) fn new() -> Pod {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        std::fs::create_dir_all(dir.path().join("dev")).unwrap();
        Pod { dir }
    }

    pub(crate) fn root(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn disk(&self) -> PathBuf {
        self.root().join("data/disk.img")
    }

    pub(crate) fn run(&self, env: &[(&str, &str)]) -> Output {
        self.run_args(env, &["-alsologtostderr", "-v=1"])
    }

    /// Runs `import` with `args` (CDI's flags, or ours) instead of
    /// `-alsologtostderr -v=1`.
    pub(crate) fn run_args(&self, env: &[(&str, &str)], args: &[&str]) -> Output {
        let mut cmd = assert_cmd::Command::cargo_bin("diskimport").unwrap();
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DISKIMPORT_METRICS_ADDRESS", "off")
            .arg("import")
            .args(args)
            .args(["--retry-delay", "0.01"])
            .arg("--root")
            .arg(self.root())
            .timeout(std::time::Duration::from_secs(120));
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    pub(crate) fn termination(&self) -> Option<String> {
        std::fs::read_to_string(self.root().join("dev/termination-log")).ok()
    }

    /// Asserts exit `code` and returns the termination message.
    pub(crate) fn outcome(&self, out: &Output, code: i32) -> String {
        assert_eq!(
            out.status.code(),
            Some(code),
            "stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let t = self.termination().expect("termination message");
        assert!(!t.contains('\n') && t.len() <= 4096, "{t:?}");
        let mode = std::fs::metadata(self.root().join("dev/termination-log"))
            .unwrap()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        t
    }

    pub(crate) fn json(&self, out: &Output) -> serde_json::Value {
        let t = self.outcome(out, 0);
        serde_json::from_str(&t).unwrap_or_else(|e| panic!("not JSON: {t:?}: {e}"))
    }

    /// No scratch space was ever needed or made.
    pub(crate) fn assert_no_scratch(&self) {
        assert!(!self.root().join("scratch").exists());
    }
}

/// The top-level keys of a flat JSON object, in order of appearance.
fn keys(t: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(t).unwrap();
    let mut found: Vec<(usize, String)> = v
        .as_object()
        .unwrap()
        .keys()
        .map(|k| (t.find(&format!("\"{k}\":")).unwrap(), k.clone()))
        .collect();
    found.sort();
    found.into_iter().map(|(_, k)| k).collect()
}

#[test]
fn http_qcow2_imports_to_a_filesystem_volume_and_grows_to_the_requested_size() {
    let Some(n) = nginx() else { return };
    let pod = Pod::new();
    let url = n.url("disk.qcow2");
    let out = pod.run(&[
        ("IMPORTER_SOURCE", "http"),
        ("IMPORTER_ENDPOINT", &url),
        ("IMPORTER_CONTENTTYPE", "kubevirt"),
        ("IMPORTER_IMAGE_SIZE", "64Mi"),
        ("OWNER_UID", "uid-1"),
        ("FILESYSTEM_OVERHEAD", "0.06"),
        ("PREALLOCATION", "false"),
    ]);
    let t = pod.outcome(&out, 0);
    assert_eq!(
        t,
        r#"{"scratchSpaceRequired":false,"preallocationApplied":false,"message":"Import Complete"}"#
    );
    assert_eq!(
        keys(&t),
        ["scratchSpaceRequired", "preallocationApplied", "message"]
    );
    let got = std::fs::read(pod.disk()).unwrap();
    // Grown to usable(min(free, 64 MiB)) on a roomy disk:
    // RoundDown(ceil(67108864 / 1.06), 1 MiB) = 60 MiB.
    assert_eq!(
        got.len(),
        62_914_560,
        "grown to the usable part of the request"
    );
    assert!(got[..n.images.raw.len()] == n.images.raw[..]);
    assert!(got[n.images.raw.len()..].iter().all(|&b| b == 0));
    let meta = std::fs::metadata(pod.disk()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert!(meta.blocks() * 512 < 16 << 20, "not sparse");
    pod.assert_no_scratch();
}

#[test]
fn http_404_and_unreachable_exit_1_with_cdi_messages() {
    let Some(n) = nginx() else { return };
    let pod = Pod::new();
    let url = n.url("nope.img");
    let out = pod.run(&[("IMPORTER_SOURCE", "http"), ("IMPORTER_ENDPOINT", &url)]);
    let t = pod.outcome(&out, 1);
    assert!(
        t.starts_with("Unable to connect to http data source: expected status code 200, got 404"),
        "{t}"
    );
    assert!(!pod.disk().exists());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/x.img");
    let out = pod.run(&[("IMPORTER_SOURCE", "http"), ("IMPORTER_ENDPOINT", &url)]);
    let t = pod.outcome(&out, 1);
    assert!(
        t.starts_with("Unable to connect to http data source: "),
        "{t}"
    );
    assert!(!pod.disk().exists());
}

#[test]
fn checksum_ok_and_mismatch_follow_cdi() {
    let Some(n) = nginx() else { return };
    let pod = Pod::new();
    let url = n.url("disk.raw.xz");
    let served = std::fs::read(n.file("disk.raw.xz")).unwrap();
    let good = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&served))
    );
    let out = pod.run(&[
        ("IMPORTER_ENDPOINT", &url),
        ("IMPORTER_CHECKSUM", &good),
        ("IMPORTER_IMAGE_SIZE", "12Mi"),
    ]);
    assert_eq!(pod.json(&out)["message"], "Import Complete");
    assert!(std::fs::read(pod.disk()).unwrap() == n.images.raw);
    std::fs::remove_file(pod.disk()).unwrap();
    let bad = format!("md5:{}", "0".repeat(32));
    let out = pod.run(&[("IMPORTER_ENDPOINT", &url), ("IMPORTER_CHECKSUM", &bad)]);
    // Exit 0 so the pod is not restarted in a loop; the controller reads
    // "checksum mismatch" from the message.
    let v = pod.json(&out);
    assert!(
        v["message"].as_str().unwrap().contains("checksum mismatch"),
        "{v}"
    );
    assert!(
        !pod.disk().exists(),
        "target left after a checksum mismatch"
    );
}

#[test]
fn image_larger_than_the_volume_is_refused_with_cdi_words() {
    let Some(n) = nginx() else { return };
    let pod = Pod::new();
    for name in ["disk.qcow2", "disk.raw"] {
        let url = n.url(name);
        let out = pod.run(&[("IMPORTER_ENDPOINT", &url), ("IMPORTER_IMAGE_SIZE", "4Mi")]);
        let t = pod.outcome(&out, 1);
        assert_eq!(
            t,
            format!(
                "Unable to process data: virtual image size {} is larger than the reported available storage {}. A larger PVC is required",
                n.images.raw.len(),
                4 << 20
            )
        );
        assert!(!pod.disk().exists());
    }
}

#[test]
fn blank_filesystem_image_size_follows_the_overhead_formula_and_the_resize_rule() {
    if !privileged() {
        return;
    }
    // tmpfs reports exactly its size as free. Each size worked out by hand:
    // RoundDown(ceil(min(free, request) / (1 + overhead)), 1 MiB).
    let mib = 1u64 << 20;
    for (size, overhead, no_request, five_mib) in [
        // 20971520 / 1.06 = 19784452.8 -> 18 MiB; 5242880 / 1.06 -> 4 MiB.
        ("20m", "0.06", 18 * mib, 4 * mib),
        // 67108864 / 1.06 = 63310249.1 -> 60 MiB.
        ("64m", "0.06", 60 * mib, 4 * mib),
        // 104857600 / 1.1 = 95325090.9 -> 90 MiB; 5242880 / 1.1 -> 4 MiB.
        ("100m", "0.1", 90 * mib, 4 * mib),
        ("64m", "0", 64 * mib, 5 * mib),
    ] {
        let pod = Pod::new();
        let fs = Tmpfs::new(size);
        std::fs::remove_dir(pod.root().join("data")).unwrap();
        std::os::unix::fs::symlink(fs.dir.path(), pod.root().join("data")).unwrap();
        let out = pod.run(&[
            ("IMPORTER_SOURCE", "none"),
            ("FILESYSTEM_OVERHEAD", overhead),
        ]);
        assert_eq!(pod.json(&out)["message"], "Import Complete");
        let meta = std::fs::metadata(pod.disk()).unwrap();
        assert_eq!(meta.len(), no_request, "{size} {overhead}");
        assert_eq!(meta.blocks(), 0, "blank image not sparse");
        // The overhead comes off the smaller of the free space and the
        // request.
        let out = pod.run(&[
            ("IMPORTER_SOURCE", "none"),
            ("FILESYSTEM_OVERHEAD", overhead),
            ("IMPORTER_IMAGE_SIZE", "5Mi"),
        ]);
        pod.outcome(&out, 0);
        assert_eq!(std::fs::metadata(pod.disk()).unwrap().len(), five_mib);
        let out = pod.run(&[
            ("IMPORTER_SOURCE", "none"),
            ("FILESYSTEM_OVERHEAD", overhead),
            ("IMPORTER_IMAGE_SIZE", "10Gi"),
        ]);
        pod.outcome(&out, 0);
        assert_eq!(std::fs::metadata(pod.disk()).unwrap().len(), no_request);
    }
}

#[test]
fn preallocation_is_applied_and_reported() {
    if !privileged() {
        return;
    }
    let Some(n) = nginx() else { return };
    let pod = Pod::new();
    let fs = Tmpfs::new("64m");
    std::fs::remove_dir(pod.root().join("data")).unwrap();
    std::os::unix::fs::symlink(fs.dir.path(), pod.root().join("data")).unwrap();
    let url = n.url("disk.qcow2");
    let out = pod.run(&[
        ("IMPORTER_ENDPOINT", &url),
        ("PREALLOCATION", "true"),
        ("IMPORTER_IMAGE_SIZE", "32Mi"),
    ]);
    let v = pod.json(&out);
    assert_eq!(v["preallocationApplied"], true);
    let meta = std::fs::metadata(pod.disk()).unwrap();
    // RoundDown(ceil(33554432 / 1.06), 1 MiB) = 30 MiB.
    assert_eq!(meta.len(), 30 << 20);
    assert!(meta.blocks() * 512 >= 30 << 20, "not preallocated");
    let got = std::fs::read(pod.disk()).unwrap();
    assert!(got[..n.images.raw.len()] == n.images.raw[..]);
    let out = pod.run(&[
        ("IMPORTER_ENDPOINT", &url),
        ("PREALLOCATION", "false"),
        ("IMPORTER_IMAGE_SIZE", "32Mi"),
    ]);
    assert_eq!(pod.json(&out)["preallocationApplied"], false);
    assert!(std::fs::metadata(pod.disk()).unwrap().blocks() * 512 < 8 << 20);
}

#[test]
fn malformed_preallocation_exits_1_without_a_message() {
    let pod = Pod::new();
    let out = pod.run(&[("IMPORTER_SOURCE", "none"), ("PREALLOCATION", "maybe")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(pod.termination().is_none());
    assert!(!pod.disk().exists());
}

#[test]
fn unknown_source_and_blank_archive_use_cdi_messages() {
    let pod = Pod::new();
    let out = pod.run(&[("IMPORTER_SOURCE", "s3"), ("IMPORTER_ENDPOINT", "s3://x/y")]);
    assert_eq!(pod.outcome(&out, 1), "Unknown data source: s3");
    let out = pod.run(&[
        ("IMPORTER_SOURCE", "none"),
        ("IMPORTER_CONTENTTYPE", "archive"),
    ]);
    assert_eq!(
        pod.outcome(&out, 1),
        "Cannot create empty disk with content type archive"
    );
}

#[test]
fn p04_termination_message_stays_one_bounded_line() {
    let pod = Pod::new();
    let hostile = format!("{}\n\u{1b}[2Jsecond", "x".repeat(10_000));
    let out = pod.run(&[("IMPORTER_SOURCE", &hostile)]);
    let t = pod.outcome(&out, 1);
    assert!(t.starts_with("Unknown data source: xxx"));
    assert!(!t.contains('\u{1b}') && !t.contains("second"));
}

#[test]
fn ready_file_is_waited_for_and_done_file_written() {
    let pod = Pod::new();
    std::fs::create_dir_all(pod.root().join("shared")).unwrap();
    let ready = pod.root().join("shared/ready");
    let r2 = ready.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(700));
        std::fs::write(r2, "disk.img").unwrap();
    });
    let start = std::time::Instant::now();
    let out = pod.run(&[
        ("IMPORTER_SOURCE", "none"),
        ("IMPORTER_IMAGE_SIZE", "1Mi"),
        ("IMPORTER_READY_FILE", "/shared/ready"),
        ("IMPORTER_DONE_FILE", "/shared/done"),
    ]);
    t.join().unwrap();
    assert_eq!(pod.json(&out)["message"], "Import Complete");
    assert!(
        start.elapsed() >= std::time::Duration::from_millis(700),
        "did not wait"
    );
    assert!(pod.root().join("shared/done").exists(), "done file missing");
    // Without the ready file: CDI's timeout message, exit 1, no done file.
    let pod = Pod::new();
    let mut cmd = assert_cmd::Command::cargo_bin("diskimport").unwrap();
    let out = cmd
        .env_clear()
        .env("IMPORTER_SOURCE", "none")
        .env("IMPORTER_READY_FILE", "/shared/ready")
        .env("IMPORTER_DONE_FILE", "/shared/done")
        .env("DISKIMPORT_METRICS_ADDRESS", "off")
        .args(["import", "--ready-timeout", "0.3", "--root"])
        .arg(pod.root())
        .output()
        .unwrap();
    let t = pod.outcome(&out, 1);
    assert!(t.starts_with("Timeout waiting for file "), "{t}");
    assert!(!pod.root().join("shared/done").exists());
    assert!(!pod.disk().exists());
}

#[test]
fn block_volume_import_and_blank() {
    if !privileged() {
        return;
    }
    let Some(n) = nginx() else { return };
    let lo = Loop::new(16 << 20, 0x5a);
    let pod = Pod::new();
    lo.node_in(pod.root());
    let url = n.url("disk.qcow2");
    let out = pod.run(&[("IMPORTER_ENDPOINT", &url), ("IMPORTER_IMAGE_SIZE", "16Mi")]);
    assert_eq!(pod.json(&out)["message"], "Import Complete");
    let dev = lo.read();
    assert!(
        dev[..n.images.raw.len()] == n.images.raw[..],
        "device content"
    );
    assert!(!pod.disk().exists(), "a file was written on a block volume");
    // Blank without preallocation leaves the device alone; with it, the
    // whole device is zeroed.
    let lo = Loop::new(8 << 20, 0x5a);
    let pod = Pod::new();
    lo.node_in(pod.root());
    let out = pod.run(&[("IMPORTER_SOURCE", "none")]);
    assert_eq!(pod.json(&out)["preallocationApplied"], false);
    assert!(lo.read().iter().all(|&b| b == 0x5a));
    let out = pod.run(&[("IMPORTER_SOURCE", "none"), ("PREALLOCATION", "true")]);
    assert_eq!(pod.json(&out)["preallocationApplied"], true);
    assert!(lo.read().iter().all(|&b| b == 0));
}

#[test]
fn progress_metric_is_served_monotonic_and_below_100_until_done() {
    let data = {
        let mut v = crate::common::pattern(4 << 20);
        v.truncate(4 << 20);
        v
    };
    let res = Static::new(data);
    let s = FaultServer::start(move |req, _| res.reply(req).mode(Body::Paced(256 << 10, 150)));
    let pod = Pod::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let url = s.url("d.img");
    let root = pod.root().to_owned();
    let child = std::thread::spawn(move || {
        assert_cmd::Command::cargo_bin("diskimport")
            .unwrap()
            .env_clear()
            .env("IMPORTER_ENDPOINT", &url)
            .env("OWNER_UID", "owner-7")
            .env("DISKIMPORT_METRICS_ADDRESS", &addr)
            .args(["import", "--root"])
            .arg(&root)
            .timeout(std::time::Duration::from_secs(60))
            .output()
            .unwrap()
    });
    let re = regex_lite(r#"kubevirt_cdi_import_progress_total{ownerUID="owner-7"} "#);
    let mut seen = Vec::new();
    let start = std::time::Instant::now();
    while !child.is_finished() && start.elapsed() < std::time::Duration::from_secs(50) {
        let o = std::process::Command::new("curl")
            .args([
                "-sk",
                "--max-time",
                "2",
                &format!("https://127.0.0.1:{port}/metrics"),
            ])
            .output();
        if let Ok(o) = o {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            if let Some(v) = re(&text) {
                seen.push(v);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = child.join().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(seen.len() >= 3, "too few scrapes: {seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "not monotonic: {seen:?}"
    );
    assert!(
        seen.iter().all(|&v| v < 100.0),
        "100 before the end: {seen:?}"
    );
    assert!(seen.iter().any(|&v| v > 0.0), "no progress seen: {seen:?}");
}

/// The controller's regex: `NAME\{ownerUID="UID"\} (\d{1,3}\.?\d*)`.
fn regex_lite(prefix: &'static str) -> impl Fn(&str) -> Option<f64> {
    move |text: &str| {
        let line = text.lines().find(|l| l.starts_with(prefix))?;
        let v = &line[prefix.len()..];
        let int = v.chars().take_while(char::is_ascii_digit).count();
        assert!(
            (1..=3).contains(&int),
            "value {v:?} does not match the regex"
        );
        let rest = &v[int..];
        let rest = rest.strip_prefix('.').unwrap_or(rest);
        assert!(
            rest.chars().all(|c| c.is_ascii_digit()),
            "value {v:?} does not match the regex"
        );
        v.parse().ok()
    }
}

// ---------------------------------------------------------------------
// The archive content type.

/// A ustar header block for `name` of `kind` with `size` bytes.
pub(crate) fn tar_header(name: &str, kind: u8, size: usize, mode: u32, link: &str) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..107].copy_from_slice(format!("{mode:07o}").as_bytes());
    h[108..115].copy_from_slice(b"0000000");
    h[116..123].copy_from_slice(b"0000000");
    h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
    h[136..147].copy_from_slice(b"00000000000");
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    h
}

/// A tar of `(name, kind, data, mode, link)` entries.
pub(crate) fn tar(entries: &[(&str, u8, &[u8], u32, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, kind, data, mode, link) in entries {
        out.extend(tar_header(name, *kind, data.len(), *mode, link));
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend(vec![0u8; 1024]);
    out
}

pub(crate) fn serve(body: Vec<u8>) -> FaultServer {
    let res = Static::new(body);
    FaultServer::start(move |req, _| res.reply(req))
}

#[test]
fn archive_is_extracted_beneath_data_with_setuid_dropped() {
    let t = tar(&[
        ("dir/", b'5', b"", 0o755, ""),
        ("dir/file.txt", b'0', b"hello", 0o4755, ""),
        ("./top.txt", b'0', b"top", 0o644, ""),
        ("dir/link", b'2', b"", 0o777, "file.txt"),
        ("dir/hard", b'1', b"", 0o644, "dir/file.txt"),
    ]);
    let s = serve(crate::common::gz(&t));
    let pod = Pod::new();
    let url = s.url("a.tar.gz");
    let out = pod.run(&[
        ("IMPORTER_ENDPOINT", &url),
        ("IMPORTER_CONTENTTYPE", "archive"),
    ]);
    assert_eq!(pod.json(&out)["message"], "Import Complete");
    let data = pod.root().join("data");
    assert_eq!(std::fs::read(data.join("dir/file.txt")).unwrap(), b"hello");
    assert_eq!(std::fs::read(data.join("top.txt")).unwrap(), b"top");
    let mode = std::fs::metadata(data.join("dir/file.txt")).unwrap().mode();
    assert_eq!(mode & 0o7777, 0o755, "setuid kept");
    assert_eq!(
        std::fs::read_link(data.join("dir/link")).unwrap(),
        Path::new("file.txt")
    );
    assert_eq!(std::fs::metadata(data.join("dir/hard")).unwrap().nlink(), 2);
    pod.assert_no_scratch();
}

#[test]
fn t21_hostile_archive_entries_are_refused_and_nothing_escapes() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "dotdot",
            tar(&[
                ("ok.txt", b'0', b"x", 0o644, ""),
                ("../escape.txt", b'0', b"x", 0o644, ""),
            ]),
        ),
        (
            "nested dotdot",
            tar(&[("a/../../escape.txt", b'0', b"x", 0o644, "")]),
        ),
        ("symlink to /", tar(&[("root", b'2', b"", 0o777, "/")])),
        ("symlink out", tar(&[("up", b'2', b"", 0o777, "../..")])),
        (
            "write through an inner symlink",
            tar(&[
                ("sub/", b'5', b"", 0o755, ""),
                ("l", b'2', b"", 0o777, "sub"),
                ("l/f", b'0', b"x", 0o644, ""),
            ]),
        ),
        (
            "hardlink out",
            tar(&[("h", b'1', b"", 0o644, "../../etc/passwd")]),
        ),
        ("char device", tar(&[("null", b'3', b"", 0o666, "")])),
        ("fifo", tar(&[("pipe", b'6', b"", 0o666, "")])),
    ];
    for (what, body) in cases {
        let s = serve(body);
        let pod = Pod::new();
        let url = s.url("evil.tar");
        let out = pod.run(&[
            ("IMPORTER_ENDPOINT", &url),
            ("IMPORTER_CONTENTTYPE", "archive"),
        ]);
        let t = pod.outcome(&out, 1);
        assert!(
            t.starts_with("Unable to process data: Unsafe archive entry"),
            "{what}: {t}"
        );
        assert!(!pod.root().join("escape.txt").exists(), "{what}: escaped");
        assert!(
            !pod.root().parent().unwrap().join("escape.txt").exists(),
            "{what}: escaped"
        );
        let left: Vec<_> = std::fs::read_dir(pod.root().join("data"))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "{what}: data not cleaned: {left:?}");
    }
}
