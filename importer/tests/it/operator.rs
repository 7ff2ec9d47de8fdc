//! What an operator sees (issue 14, items 6-9): `info` on images that name
//! other files, target errors naming the target given, the summary line of
//! `convert`, and the import's log lines.

use std::path::Path;
use std::process::Command;

use crate::common::*;
use crate::convert::qemu_img;
use crate::qcow2_hostile::with_backing;

fn mkfifo(p: &str) {
    assert!(Command::new("mkfifo").arg(p).status().unwrap().success());
}

#[test]
fn info_describes_images_with_a_backing_or_data_file_and_exits_0() {
    if qemu_img().is_none() {
        return;
    }
    let t = tmp();
    let d = t.path();
    // The backing file is a FIFO: opening it would hang. Its name carries
    // an escape sequence, shown escaped.
    let fifo = path(d, "back\x1b[31m");
    mkfifo(&fifo);
    let img = put(d, "overlay.qcow2", &with_backing(d, fifo.as_bytes()));
    let o = run(&["info", &img]);
    let out = ok(&o);
    assert!(out.contains("format: qcow2"), "{out}");
    assert!(out.contains("virtual size: 67108864 bytes"), "{out}");
    assert!(
        out.contains("backing file: \"") && out.contains("(never opened; refused on import)"),
        "{out}"
    );
    assert!(
        !out.contains('\x1b'),
        "escape sequence printed raw: {out:?}"
    );
    let j: serde_json::Value =
        serde_json::from_str(&ok(&run(&["info", "--output", "json", &img]))).unwrap();
    assert!(
        j["qcow2"]["backing_file"]
            .as_str()
            .unwrap()
            .ends_with("back\\u{1b}[31m"),
        "{j}"
    );
    assert!(j["qcow2"]["refused_on_import"]
        .as_str()
        .unwrap()
        .contains("Backing file"));
    // BASE's data: 128 KiB + 64 KiB allocated in the overlay itself.
    assert_eq!(j["allocated_bytes"], 196608);
    // From stdin too (the stream reader).
    let o = run_stdin(&["info", "-"], std::fs::read(&img).unwrap());
    assert!(ok(&o).contains("backing file:"));
    // convert still refuses.
    fails(
        &run(&["convert", "--no-progress", &img, &path(d, "o.raw")]),
        "unsafe",
        "backing file",
    );

    // An external data file, swapped for a FIFO.
    let secret = path(d, "secret");
    std::fs::write(&secret, vec![0x5e; 65536]).unwrap();
    let df = path(d, "df.qcow2");
    sh(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            &format!("data_file={secret},data_file_raw=on"),
            &df,
            "64k",
        ],
    );
    std::fs::remove_file(&secret).unwrap();
    mkfifo(&secret);
    let out = ok(&run(&["info", &df]));
    assert!(
        out.contains(&format!(
            "data file: {secret:?} (never opened; refused on import)"
        )),
        "{out}"
    );
    assert!(out.contains("virtual size: 65536 bytes"), "{out}");
}

#[test]
fn target_errors_name_the_target_given() {
    let t = tmp();
    let src = put(t.path(), "s.raw", &pattern(4096));
    let o = run(&["convert", "--no-progress", &src, "/nonexistent-dir/x.raw"]);
    fails(&o, "target", "\"/nonexistent-dir/x.raw\"");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("No such file or directory"), "{stderr}");
    assert!(!Path::new("/nonexistent-dir").exists());
}

/// The JSON log lines of an import (stderr is not a terminal).
fn log_lines(o: &std::process::Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn with_message<'a>(lines: &'a [serde_json::Value], m: &str) -> Vec<&'a serde_json::Value> {
    lines
        .iter()
        .filter(|l| l["fields"]["message"] == m)
        .map(|l| &l["fields"])
        .collect()
}

#[test]
fn import_logs_start_source_progress_and_outcome_with_or_without_v() {
    use crate::import::Pod;
    use crate::net::{Body, FaultServer, Static};
    let data = pattern(6 << 20);
    let res = Static::new(data.clone());
    // About 3 s: 256 KiB every 120 ms.
    let s = FaultServer::start(move |req, _| res.reply(req).mode(Body::Paced(256 << 10, 120)));
    let url = s
        .url("d.img?token=SIGNED")
        .replace("http://", "http://u:PASSWORD@");
    let shown = s.url("d.img");
    for args in [
        &["-alsologtostderr", "-v=1", "--log-interval", "0.5"][..],
        &["--log-interval", "0.5"][..],
    ] {
        let pod = Pod::new();
        let o = pod.run_args(
            &[("IMPORTER_SOURCE", "http"), ("IMPORTER_ENDPOINT", &url)],
            args,
        );
        pod.json(&o);
        let all = String::from_utf8_lossy(&o.stderr);
        assert!(
            !all.contains("PASSWORD") && !all.contains("SIGNED"),
            "{all}"
        );
        let lines = log_lines(&o);
        let start = with_message(&lines, "Import starting");
        assert_eq!(start.len(), 1, "{all}");
        assert_eq!(start[0]["source"], shown.as_str());
        assert_eq!(start[0]["mode"], "Filesystem");
        let opened = with_message(&lines, "Source opened");
        assert_eq!(opened[0]["layers"], "raw", "{all}");
        assert_eq!(opened[0]["read_path"], "stream");
        let progress = with_message(&lines, "Progress");
        assert!(!progress.is_empty(), "no progress lines: {all}");
        // Bytes read against the source size: all of it at most, never
        // going back.
        let percents: Vec<f64> = progress
            .iter()
            .map(|p| {
                assert_eq!(p["total"], 6 << 20);
                p["percent"].as_f64().unwrap()
            })
            .collect();
        assert!(percents.windows(2).all(|w| w[0] <= w[1]), "{percents:?}");
        assert!(percents.iter().all(|&p| p <= 100.0), "{percents:?}");
        let done = with_message(&lines, "Import complete");
        assert_eq!(done.len(), 1, "{all}");
        assert_eq!(done[0]["source_bytes"], 6 << 20);
        assert_eq!(done[0]["written_bytes"], 6 << 20);
        assert!(done[0]["seconds"].as_f64().unwrap() >= 1.0, "{all}");
        assert!(done[0]["mib_per_s"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn convert_on_a_terminal_ends_with_one_summary_line() {
    if Command::new("script").arg("--version").output().is_err() {
        return;
    }
    let t = tmp();
    let src = put(t.path(), "s.raw.gz", &gz(&pattern(4 << 20)));
    let out = path(t.path(), "o.raw");
    let bin = assert_cmd::cargo::cargo_bin("diskimport");
    // `script` gives the command a terminal, as a person has.
    let o = Command::new("script")
        .args([
            "-qec",
            &format!("{} convert {src} {out}", bin.display()),
            "/dev/null",
        ])
        .output()
        .unwrap();
    let screen = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{screen}");
    let last = screen
        .lines()
        .map(|l| {
            let l = l.trim_end_matches(['\r', '\n']);
            // What stays on screen: after the last carriage return and the
            // bar's clear-line sequence.
            let l = l.rsplit('\r').next().unwrap_or(l);
            l.trim_start_matches("\u{1b}[2K").trim()
        })
        .rfind(|l| !l.is_empty())
        .unwrap_or_default();
    assert!(
        last.starts_with("Converted gzip -> raw (") && last.ends_with("MiB/s)."),
        "{screen:?}"
    );
    assert!(
        last.contains("4194304 bytes, 4194304 data, 0 zero, in "),
        "{last}"
    );
}
