//! qcow2: differential tests against `qemu-img convert` (the oracle) for
//! generated variants, through the random-access path (a file) and the
//! stream path (stdin and gzip), and the hostile rows of
//! hostile qcow2 cases (docs/ids.md, Q ids).

use std::path::Path;

use crate::common::*;
use crate::convert::qemu_img;

/// Creates `dir/name` with `qemu-img create -f qcow2 -o OPTS name SIZE`
/// and applies qemu-io commands.
fn make(dir: &Path, name: &str, opts: &str, size: &str, io: &[&str]) -> String {
    let p = path(dir, name);
    let mut args = vec!["create", "-q", "-f", "qcow2"];
    if !opts.is_empty() {
        args.extend(["-o", opts]);
    }
    args.extend([p.as_str(), size]);
    sh("qemu-img", &args);
    if !io.is_empty() {
        let mut a = vec!["-f", "qcow2"];
        for c in io {
            a.extend(["-c", c]);
        }
        a.push(&p);
        sh("qemu-io", &a);
    }
    p
}

/// `qemu-img convert -f qcow2 -O raw` of `img`.
fn reference(dir: &Path, img: &str) -> Vec<u8> {
    let r = path(dir, "reference.raw");
    let _ = std::fs::remove_file(&r);
    sh(
        "qemu-img",
        &["convert", "-f", "qcow2", "-O", "raw", img, &r],
    );
    std::fs::read(&r).unwrap()
}

/// Converts `img` by random access, from stdin, and as `.gz`, and checks
/// each output against qemu-img's, byte for byte and sparse.
fn differential(dir: &Path, img: &str) {
    let expected = reference(dir, img);
    assert_converts(dir, img, &expected);
    let bytes = std::fs::read(img).unwrap();
    let out = path(dir, "stdin.raw");
    ok(&run_stdin(
        &["convert", "--no-progress", "-", &out],
        bytes.clone(),
    ));
    assert!(
        std::fs::read(&out).unwrap() == expected,
        "stdin path differs for {img}"
    );
    let gzp = put(dir, "img.qcow2.gz", &gz(&bytes));
    assert_converts(dir, &gzp, &expected);
}

fn patterned_io(cluster: u64) -> Vec<String> {
    let c = cluster;
    vec![
        "write -P 0x5a 0 4k".into(),
        format!("write -P 0x11 {} {}", 3 * c, 2 * c),
        format!("write -z {} {}", 8 * c, c),
        format!("write -c -P 0x22 {} {}", 10 * c, c),
        format!("write -c -P 0x33 {} {}", 11 * c, c),
        format!("write -P 0x44 {} 512", 20 * c + 1024),
    ]
}

#[test]
fn cluster_sizes_512_4k_64k_2m_match_qemu() {
    if qemu_img().is_none() {
        return;
    }
    let d = tmp();
    for c in [512u64, 4096, 65536, 2 << 20] {
        let io = patterned_io(c);
        let io: Vec<&str> = io.iter().map(String::as_str).collect();
        let size = format!("{}", (24 * c).max(8 << 20));
        let img = make(
            d.path(),
            &format!("c{c}.qcow2"),
            &format!("cluster_size={c}"),
            &size,
            &io,
        );
        differential(d.path(), &img);
    }
}

#[test]
fn compat_010_and_11_match_qemu() {
    if qemu_img().is_none() {
        return;
    }
    let d = tmp();
    for compat in ["0.10", "1.1"] {
        let img = make(
            d.path(),
            &format!("v{compat}.qcow2"),
            &format!("compat={compat}"),
            "8M",
            &[
                "write -P 1 0 64k",
                "write -P 2 1M 4k",
                "write -c -P 3 2M 64k",
            ],
        );
        differential(d.path(), &img);
    }
}

#[test]
fn zlib_and_zstd_compressed_images_with_overwrites_match_qemu() {
    if qemu_img().is_none() {
        return;
    }
    let d = tmp();
    let src = put(d.path(), "src.raw", &sparse_image(6 << 20));
    for ty in ["zlib", "zstd"] {
        let img = path(d.path(), &format!("{ty}.qcow2"));
        sh(
            "qemu-img",
            &[
                "convert",
                "-c",
                "-f",
                "raw",
                "-O",
                "qcow2",
                "-o",
                &format!("compression_type={ty}"),
                &src,
                &img,
            ],
        );
        // Plain clusters overwrite some compressed ones later.
        sh(
            "qemu-io",
            &[
                "-f",
                "qcow2",
                "-c",
                "write -P 0x77 64k 128k",
                "-c",
                "write -P 0x78 3M 4k",
                &img,
            ],
        );
        differential(d.path(), &img);
    }
}

#[test]
fn extended_l2_with_partial_subcluster_writes_matches_qemu() {
    if qemu_img().is_none() {
        return;
    }
    let d = tmp();
    let img = make(
        d.path(),
        "ext.qcow2",
        "extended_l2=on,cluster_size=65536",
        "8M",
        &[
            "write -P 1 4k 2k",
            "write -P 2 9k 5k",
            "write -z 64k 8k",
            "write -P 3 130k 60k",
            "write -c -P 4 1M 64k",
        ],
    );
    differential(d.path(), &img);
}

#[test]
fn zero_clusters_unmap_and_discard_match_qemu() {
    if qemu_img().is_none() {
        return;
    }
    let d = tmp();
    let img = make(
        d.path(),
        "z.qcow2",
        "",
        "8M",
        &[
            "write -P 9 0 1M",
            "write -z 64k 64k",
            "write -z -u 128k 64k",
            "discard 256k 64k",
        ],
    );
    differential(d.path(), &img);
}

#[test]
fn internal_snapshots_are_ignored_and_active_layer_matches() {
    if qemu_img().is_none() {
        return;
    }
    let d = tmp();
    let img = make(d.path(), "s.qcow2", "", "8M", &["write -P 1 0 128k"]);
    sh("qemu-img", &["snapshot", "-c", "snap1", &img]);
    sh(
        "qemu-io",
        &[
            "-f",
            "qcow2",
            "-c",
            "write -P 2 64k 64k",
            "-c",
            "write -P 3 2M 4k",
            &img,
        ],
    );
    differential(d.path(), &img);
}

#[test]
fn preallocation_metadata_and_full_match_qemu() {
    if qemu_img().is_none() {
        return;
    }
    let d = tmp();
    for p in ["metadata", "full"] {
        let img = make(
            d.path(),
            &format!("{p}.qcow2"),
            &format!("preallocation={p}"),
            "4M",
            &["write -P 5 1M 64k"],
        );
        differential(d.path(), &img);
    }
}

#[test]
fn refcount_bits_1_and_64_match_qemu() {
    if qemu_img().is_none() {
        return;
    }
    let d = tmp();
    for bits in ["1", "64"] {
        let img = make(
            d.path(),
            &format!("r{bits}.qcow2"),
            &format!("refcount_bits={bits}"),
            "4M",
            &["write -P 6 0 64k"],
        );
        differential(d.path(), &img);
    }
}

#[test]
fn reverse_guest_order_writes_match_qemu() {
    if qemu_img().is_none() {
        return;
    }
    let d = tmp();
    let io: Vec<String> = (0..16)
        .rev()
        .map(|i| format!("write -P {} {}k 64k", i + 1, i * 64))
        .collect();
    let io: Vec<&str> = io.iter().map(String::as_str).collect();
    let img = make(d.path(), "rev.qcow2", "", "2M", &io);
    differential(d.path(), &img);
}

#[test]
fn sparse_2_tib_image_converts_in_seconds() {
    if qemu_img().is_none() {
        return;
    }
    let d = tmp();
    let img = make(
        d.path(),
        "big.qcow2",
        "",
        "2T",
        &[
            "write -P 7 0 64k",
            "write -P 8 1T 64k",
            "write -P 9 2047G 4k",
        ],
    );
    let out = path(d.path(), "out.raw");
    let t = std::time::Instant::now();
    ok(&run(&[
        "convert",
        "--no-progress",
        "--target-size",
        "2Ti",
        &img,
        &out,
    ]));
    // Not a benchmark: a guard that work scales with data, not size.
    assert!(t.elapsed().as_secs() < 60, "took {:?}", t.elapsed());
    assert_eq!(std::fs::metadata(&out).unwrap().len(), 2 << 40);
    assert!(allocated(&out) < 1 << 20);
    sh(
        "qemu-img",
        &["compare", "-f", "raw", "-F", "qcow2", &out, &img],
    );
}

#[test]
fn d1_odd_virtual_size_is_rounded_up() {
    if qemu_img().is_none() {
        return;
    }
    let d = tmp();
    let img = make(d.path(), "odd.qcow2", "", "1M", &["write -P 1 0 4k"]);
    let mut b = std::fs::read(&img).unwrap();
    b[24..32].copy_from_slice(&((1u64 << 20) - 100).to_be_bytes());
    let odd = put(d.path(), "odd2.qcow2", &b);
    let out = path(d.path(), "out.raw");
    ok(&run(&["convert", "--no-progress", &odd, &out]));
    let got = std::fs::read(&out).unwrap();
    assert_eq!(got.len(), 1 << 20);
    assert!(got[..4096].iter().all(|&x| x == 1));
    assert!(got[4096..].iter().all(|&x| x == 0));
}

#[test]
fn info_reports_qcow2_details() {
    if qemu_img().is_none() {
        return;
    }
    let d = tmp();
    let img = make(
        d.path(),
        "i.qcow2",
        "compression_type=zstd",
        "8M",
        &["write -P 1 0 64k", "write -c -P 2 1M 64k"],
    );
    let v: serde_json::Value =
        serde_json::from_str(&ok(&run(&["info", "--output", "json", &img]))).unwrap();
    assert_eq!(v["format"], "qcow2");
    assert_eq!(v["virtual_size"], 8 << 20);
    assert_eq!(v["qcow2"]["version"], 3);
    assert_eq!(v["qcow2"]["cluster_size"], 65536);
    assert_eq!(v["qcow2"]["compression_type"], "zstd");
    assert_eq!(v["qcow2"]["data_bytes"], 65536);
    assert_eq!(v["qcow2"]["compressed_bytes"], 65536);
    assert!(v["qcow2"]["features"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f == "compression-type"));
}

#[test]
fn peer_images_from_cdi_have_their_outcomes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/peer-images");
    let d = tmp();
    let p = |n: &str| dir.join(n).to_str().unwrap().to_owned();
    if qemu_img().is_some() {
        let expected = reference(d.path(), &p("fs-overhead.qcow2"));
        assert_converts(d.path(), &p("fs-overhead.qcow2"), &expected);
    }
    let out = path(d.path(), "o.raw");
    fails(
        &run(&[
            "convert",
            "--no-progress",
            &p("cirros-snapshot1.qcow2"),
            &out,
        ]),
        "unsafe",
        "backing file",
    );
    assert!(!Path::new(&out).exists());
    // A VMDK whose L1 table is too large: refused before any allocation.
    fails(
        &run(&[
            "convert",
            "--no-progress",
            &p("invalid-qcow-large-memory.img"),
            &out,
        ]),
        "unsupported",
        "vmdk",
    );
    assert!(!Path::new(&out).exists());
}

/// `info --output json -` of `bytes` fed on stdin.
fn stream_info(bytes: Vec<u8>) -> serde_json::Value {
    serde_json::from_str(&ok(&run_stdin(&["info", "--output", "json", "-"], bytes))).unwrap()
}

#[test]
fn qemu_img_converted_images_stream_with_nothing_spilled() {
    if qemu_img().is_none() {
        return;
    }
    let d = tmp();
    let src = put(d.path(), "src.raw", &sparse_image(6 << 20));
    for extra in [&[][..], &["-c"][..]] {
        let img = path(d.path(), "conv.qcow2");
        let _ = std::fs::remove_file(&img);
        let mut args = vec!["convert"];
        args.extend(extra);
        args.extend(["-f", "raw", "-O", "qcow2", &src, &img]);
        sh("qemu-img", &args);
        let v = stream_info(std::fs::read(&img).unwrap());
        assert_eq!(v["qcow2"]["path"], "stream");
        assert_eq!(v["qcow2"]["spilled_bytes"], 0, "{extra:?}");
        differential(d.path(), &img);
    }
}

#[test]
fn data_before_its_l2_table_is_spilled_and_still_exact() {
    if qemu_img().is_none() {
        return;
    }
    let d = tmp();
    // Data for the second L2 range is written first, so its clusters sit
    // before that range's L2 table... and the first range's data follows.
    let img = make(
        d.path(),
        "order.qcow2",
        "cluster_size=4096",
        "8M",
        &["write -P 1 4M 64k", "write -P 2 0 64k", "write -P 3 6M 8k"],
    );
    let v = stream_info(std::fs::read(&img).unwrap());
    assert!(v["qcow2"]["spilled_bytes"].as_u64().unwrap() > 0);
    differential(d.path(), &img);
}

#[test]
fn shared_clusters_stream_correctly() {
    // Q65 through the stream path: two guest clusters, one host cluster.
    if qemu_img().is_none() {
        return;
    }
    let d = tmp();
    let img = make(
        d.path(),
        "shared.qcow2",
        "cluster_size=65536",
        "4M",
        &["write -P 0xab 0 128k"],
    );
    let mut b = std::fs::read(&img).unwrap();
    let l1 = u64::from_be_bytes(b[40..48].try_into().unwrap()) as usize;
    let l2 =
        (u64::from_be_bytes(b[l1..l1 + 8].try_into().unwrap()) & 0x00ff_ffff_ffff_fe00) as usize;
    let e0: [u8; 8] = b[l2..l2 + 8].try_into().unwrap();
    b[l2 + 16 * 8..l2 + 17 * 8].copy_from_slice(&e0);
    let shared = put(d.path(), "shared2.qcow2", &b);
    differential(d.path(), &shared);
}

#[test]
fn truncated_qcow2_stream_is_truncated_never_zeroes() {
    if qemu_img().is_none() {
        return;
    }
    let d = tmp();
    let img = make(
        d.path(),
        "t.qcow2",
        "",
        "8M",
        &["write -P 1 0 1M", "write -P 2 4M 1M"],
    );
    let b = std::fs::read(&img).unwrap();
    let src = put(d.path(), "t.qcow2.gz", &gz(&b[..b.len() - 70_000]));
    let out = path(d.path(), "out.raw");
    fails(
        &run(&["convert", "--no-progress", &src, &out]),
        "truncated",
        "beyond end",
    );
    assert!(!Path::new(&out).exists());
}

#[test]
fn past_the_spill_limit_the_rest_is_spooled_and_finished_by_random_access() {
    if qemu_img().is_none() {
        return;
    }
    let d = tmp();
    let img = make(
        d.path(),
        "order.qcow2",
        "cluster_size=4096",
        "8M",
        &["write -P 1 4M 64k", "write -P 2 0 64k", "write -P 3 6M 8k"],
    );
    let bytes = std::fs::read(&img).unwrap();
    let expected = reference(d.path(), &img);
    let out = path(d.path(), "out.raw");
    let scratch = d.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let o = run_stdin(
        &[
            "convert",
            "--no-progress",
            "--spill-limit",
            "4096",
            "--scratch-dir",
            scratch.to_str().unwrap(),
            "-",
            &out,
        ],
        bytes,
    );
    ok(&o);
    assert!(String::from_utf8_lossy(&o.stderr).contains("spooled to scratch"));
    assert!(std::fs::read(&out).unwrap() == expected);
    // The spill file is unnamed: nothing is left in the scratch directory.
    assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0);
}

#[test]
fn compressed_clusters_packed_across_l2_ranges_stream_exactly() {
    // qemu-img -c starts a range's compressed data in the sector it shares
    // with the previous range's last cluster, before that range's L2 table:
    // the shared sector streams past while the table is still ahead.
    if qemu_img().is_none() {
        return;
    }
    let d = tmp();
    // Data on both sides of the first L2 range's end (512 MiB with 64 KiB
    // clusters) in a sparse 600 MiB source.
    let src = path(d.path(), "src.raw");
    let f = std::fs::File::create(&src).unwrap();
    f.set_len(600 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &pattern(2 << 20), 511 << 20).unwrap();
    drop(f);
    let img = path(d.path(), "packed.qcow2");
    sh(
        "qemu-img",
        &["convert", "-c", "-f", "raw", "-O", "qcow2", &src, &img],
    );
    let expected = path(d.path(), "expected.raw");
    sh(
        "qemu-img",
        &["convert", "-f", "qcow2", "-O", "raw", &img, &expected],
    );
    let out = path(d.path(), "out.raw");
    let bytes = std::fs::read(&img).unwrap();
    ok(&run_stdin(
        &[
            "convert",
            "--no-progress",
            "--target-size",
            "600Mi",
            "-",
            &out,
        ],
        bytes,
    ));
    sh(
        "qemu-img",
        &["compare", "-f", "raw", "-F", "raw", &out, &expected],
    );
}
