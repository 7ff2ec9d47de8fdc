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
