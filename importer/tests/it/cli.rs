//! Command-line behaviour: every flag of `convert` and `info`.

use std::path::Path;

use crate::common::*;

#[test]
fn stdin_source_converts() {
    let d = tmp();
    let img = sparse_image(3 << 20);
    let out_path = path(d.path(), "out.raw");
    ok(&run_stdin(
        &["convert", "--no-progress", "-", &out_path],
        xz(&img),
    ));
    assert_eq!(std::fs::read(&out_path).unwrap(), img);
}

#[test]
fn target_size_grows_the_file_sparsely() {
    let d = tmp();
    let img = pattern(1 << 20);
    let src = put(d.path(), "in.img", &img);
    let out_path = path(d.path(), "out.raw");
    ok(&run(&[
        "convert",
        "--no-progress",
        "--target-size",
        "10Mi",
        &src,
        &out_path,
    ]));
    let got = std::fs::read(&out_path).unwrap();
    assert_eq!(got.len(), 10 << 20);
    assert_eq!(&got[..img.len()], &img[..]);
    assert!(got[img.len()..].iter().all(|&b| b == 0));
    assert!(allocated(&out_path) < 2 << 20);
}

#[test]
fn target_size_smaller_than_image_is_refused() {
    let d = tmp();
    let src = put(d.path(), "in.img", &pattern(2 << 20));
    let out_path = path(d.path(), "out.raw");
    let out = run(&[
        "convert",
        "--no-progress",
        "--target-size",
        "1Mi",
        &src,
        &out_path,
    ]);
    fails(
        &out,
        "size",
        "is larger than the reported available storage",
    );
    assert!(!Path::new(&out_path).exists());
}

#[test]
fn invalid_target_size_is_a_usage_error() {
    let out = run(&["convert", "--target-size", "12Qi", "a", "b"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn checksum_ok_and_mismatch() {
    use sha2::Digest;
    let d = tmp();
    let img = sparse_image(2 << 20);
    let compressed = gz(&img);
    let src = put(d.path(), "in.gz", &compressed);
    let out_path = path(d.path(), "out.raw");
    // Over the source bytes as read, before decompression.
    let good = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&compressed)));
    ok(&run(&[
        "convert",
        "--no-progress",
        "--checksum",
        &good,
        &src,
        &out_path,
    ]));
    assert_eq!(std::fs::read(&out_path).unwrap(), img);
    std::fs::remove_file(&out_path).unwrap();
    let bad = format!("md5:{}", "0".repeat(32));
    let out = run(&[
        "convert",
        "--no-progress",
        "--checksum",
        &bad,
        &src,
        &out_path,
    ]);
    fails(&out, "integrity", "checksum mismatch");
    assert!(!Path::new(&out_path).exists(), "target kept after mismatch");
}

#[test]
fn checksum_on_plain_raw_file_covers_every_byte() {
    use sha2::Digest;
    let d = tmp();
    let img = sparse_image(2 << 20);
    let src = put(d.path(), "in.img", &img);
    let out_path = path(d.path(), "out.raw");
    let good = format!("sha512:{}", hex::encode(sha2::Sha512::digest(&img)));
    ok(&run(&[
        "convert",
        "--no-progress",
        "--checksum",
        &good,
        &src,
        &out_path,
    ]));
    let sha1 = format!("sha1:{}", hex::encode(sha1::Sha1::digest(b"other")));
    std::fs::remove_file(&out_path).unwrap();
    fails(
        &run(&[
            "convert",
            "--no-progress",
            "--checksum",
            &sha1,
            &src,
            &out_path,
        ]),
        "integrity",
        "checksum mismatch",
    );
}

#[test]
fn malformed_checksum_is_a_usage_error() {
    let d = tmp();
    let src = put(d.path(), "in.img", b"x");
    let out_path = path(d.path(), "out.raw");
    for bad in ["sha256:abc", "crc32:00000000", "nocolon"] {
        let out = run(&["convert", "--checksum", bad, &src, &out_path]);
        fails(&out, "usage", "invalid checksum");
        assert!(!Path::new(&out_path).exists());
    }
}

#[test]
fn preallocation_falloc_and_full_allocate_the_whole_file() {
    let d = tmp();
    let mut img = vec![0u8; 8 << 20];
    img[..4096].fill(3);
    let src = put(d.path(), "in.img", &img);
    for mode in ["falloc", "full"] {
        let out_path = path(d.path(), &format!("out-{mode}.raw"));
        ok(&run(&[
            "convert",
            "--no-progress",
            "--preallocation",
            mode,
            "--target-size",
            "12Mi",
            &src,
            &out_path,
        ]));
        assert!(
            allocated(&out_path) >= 12 << 20,
            "{mode}: {}",
            allocated(&out_path)
        );
        let got = std::fs::read(&out_path).unwrap();
        assert_eq!(&got[..img.len()], &img[..]);
        assert!(got[img.len()..].iter().all(|&b| b == 0));
    }
    // Streamed source (size unknown up front) is preallocated at the end.
    let gz_src = put(d.path(), "in.gz", &gz(&img));
    let out_path = path(d.path(), "out-gz.raw");
    ok(&run(&[
        "convert",
        "--no-progress",
        "--preallocation",
        "falloc",
        &gz_src,
        &out_path,
    ]));
    assert!(allocated(&out_path) >= 8 << 20);
}

#[test]
fn explicit_raw_copies_compressed_bytes_with_a_warning() {
    // D7
    let d = tmp();
    let v = gz(&pattern(1 << 20));
    let src = put(d.path(), "in.gz", &v);
    let out_path = path(d.path(), "out.raw");
    let out = run(&[
        "convert",
        "--no-progress",
        "--source-format",
        "raw",
        &src,
        &out_path,
    ]);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("gzip signature"));
    assert_eq!(std::fs::read(&out_path).unwrap(), padded(&v));
}

#[test]
fn q01_expecting_qcow2_on_other_content_is_format_error() {
    let d = tmp();
    let mut v = pattern(4096);
    v[..4].copy_from_slice(b"QFI\xfa");
    let src = put(d.path(), "in.img", &v);
    let out = run(&[
        "convert",
        "--source-format",
        "qcow2",
        &src,
        &path(d.path(), "o"),
    ]);
    fails(&out, "format", "not a qcow2 image");
}

#[test]
fn info_reports_layers_size_and_allocation() {
    let d = tmp();
    let mut img = vec![0u8; 4 << 20];
    img[..8192].fill(9);
    img[(3 << 20)..(3 << 20) + 4096].fill(9);
    let src = put(d.path(), "in.xz", &xz(&img));
    let v: serde_json::Value =
        serde_json::from_str(&ok(&run(&["info", "--output", "json", &src]))).unwrap();
    assert_eq!(v["layers"], serde_json::json!(["xz", "raw"]));
    assert_eq!(v["virtual_size"], 4 << 20);
    assert_eq!(v["allocated_bytes"], 12288);
    assert_eq!(v["zero_bytes"], (4 << 20) - 12288);
    let human = ok(&run(&["info", &src]));
    assert!(human.contains("layers: xz -> raw"), "{human}");
}

#[test]
fn error_line_is_one_line_and_verbose_adds_the_chain() {
    let d = tmp();
    let mut v = gz(&pattern(1 << 20));
    v.extend(b"GARBAGE");
    let src = put(d.path(), "in.gz", &v);
    let out = run(&["convert", "--no-progress", &src, &path(d.path(), "o")]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let verbose = run(&["-v", "convert", "--no-progress", &src, &path(d.path(), "o")]);
    assert!(String::from_utf8_lossy(&verbose.stderr).contains("Reading the image at offset"));
}

#[test]
fn hostile_file_names_are_escaped_in_messages() {
    let d = tmp();
    let out = run(&[
        "convert",
        "--no-progress",
        "/nonexistent/\x1b[31mevil\nname",
        &path(d.path(), "o"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains('\x1b'), "{stderr:?}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr:?}");
}
