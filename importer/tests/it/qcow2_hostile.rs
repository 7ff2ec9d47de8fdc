//! Hostile qcow2 inputs (the Q cases of docs/ids.md), built from
//! the spec's BASE and COMP recipes with byte pokes.

use std::path::Path;
use std::process::Command;

use crate::common::*;
use crate::convert::qemu_img;

/// BASE: 64 MiB, 64 KiB clusters, 0xab at 0 (128k), 0xcd at 1M (64k).
/// Layout (qemu-img 10): header 0, refcount table 0x10000, refcount block
/// 0x20000, L1 0x30000, L2 0x40000, data from 0x50000.
pub(crate) fn base(dir: &Path, opts: &str) -> Vec<u8> {
    base_sized(dir, opts, "64M")
}

/// BASE with another virtual size (the same layout up to 4 GiB).
pub(crate) fn base_sized(dir: &Path, opts: &str, size: &str) -> Vec<u8> {
    let p = path(dir, "base.qcow2");
    let _ = std::fs::remove_file(&p);
    let mut o = String::from("cluster_size=65536");
    if !opts.is_empty() {
        o = format!("{o},{opts}");
    }
    assert!(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-o", &o, &p, size])
        .status()
        .unwrap()
        .success());
    assert!(Command::new("qemu-io")
        .args([
            "-f",
            "qcow2",
            "-c",
            "write -P 0xab 0 128k",
            "-c",
            "write -P 0xcd 1M 64k",
            &p
        ])
        .output()
        .unwrap()
        .status
        .success());
    let b = std::fs::read(&p).unwrap();
    assert_eq!(
        be64(&b, 0x30000),
        0x8000_0000_0004_0000,
        "unexpected BASE layout"
    );
    b
}

/// COMP: 128 KiB of 0xab + 1 MiB of zeros, compressed.
fn comp(dir: &Path) -> Vec<u8> {
    let raw = path(dir, "comp.raw");
    let mut v = vec![0xabu8; 128 << 10];
    v.resize((128 << 10) + (1 << 20), 0);
    std::fs::write(&raw, v).unwrap();
    let p = path(dir, "comp.qcow2");
    let _ = std::fs::remove_file(&p);
    assert!(Command::new("qemu-img")
        .args(["convert", "-c", "-f", "raw", "-O", "qcow2", &raw, &p])
        .status()
        .unwrap()
        .success());
    std::fs::read(&p).unwrap()
}

pub(crate) fn be64(b: &[u8], off: usize) -> u64 {
    u64::from_be_bytes(b[off..off + 8].try_into().unwrap())
}

pub(crate) fn poke32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_be_bytes());
}

pub(crate) fn poke64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_be_bytes());
}

/// Converts `img` by random access (a file) and by the one-pass stream
/// reader (stdin, and inside gzip), and asserts the refusal on every path: kind, message,
/// no target. The stream cannot know the file size until it ends, so a
/// pointer past the end is "truncated" there where random access may call
/// it a format error, and an image too large for the target is refused
/// for its size before the stream reaches the table at fault; every other
/// refusal is the same on both paths.
pub(crate) fn refused(dir: &Path, img: &[u8], kind: &str, needle: &str) {
    let src = put(dir, "hostile.qcow2", img);
    let out = path(dir, "out.raw");
    let _ = std::fs::remove_file(&out);
    let o = run(&["convert", "--no-progress", &src, &out]);
    fails(&o, kind, needle);
    assert!(!Path::new(&out).exists(), "target left behind for {needle}");
    let gz_src = put(dir, "hostile.qcow2.gz", &gz(img));
    for o in [
        run_stdin(&["convert", "--no-progress", "-", &out], img.to_vec()),
        run(&["convert", "--no-progress", &gz_src, &out]),
    ] {
        let stderr = String::from_utf8_lossy(&o.stderr);
        let past_end = needle == "beyond end of file" || stderr.contains("beyond end of file");
        match kind {
            "format" if past_end && stderr.contains("error[truncated]") => {}
            "format" if stderr.contains("error[size]") => {}
            _ => fails(&o, kind, ""),
        }
        assert!(
            !o.status.success(),
            "stream path accepted {needle}: {stderr}"
        );
        assert!(
            !Path::new(&out).exists(),
            "stream path left a target for {needle}"
        );
    }
}

/// Converts `img` by random access and from stdin, and asserts both
/// outputs equal to qemu-img's.
pub(crate) fn accepted(dir: &Path, img: &[u8]) {
    let src = put(dir, "ok.qcow2", img);
    let r = path(dir, "ref.raw");
    let _ = std::fs::remove_file(&r);
    assert!(Command::new("qemu-img")
        .args(["convert", "-f", "qcow2", "-O", "raw", &src, &r])
        .status()
        .unwrap()
        .success());
    let want = std::fs::read(&r).unwrap();
    assert_converts(dir, &src, &want);
    let out = path(dir, "stdin.raw");
    ok(&run_stdin(
        &["convert", "--no-progress", "-", &out],
        img.to_vec(),
    ));
    assert!(std::fs::read(&out).unwrap() == want, "stream path differs");
    let gz_src = put(dir, "ok.qcow2.gz", &gz(img));
    ok(&run(&["convert", "--no-progress", &gz_src, &out]));
    assert!(
        std::fs::read(&out).unwrap() == want,
        "gzip stream path differs"
    );
}

macro_rules! hostile {
    ($name:ident, $dir:ident, $body:block) => {
        #[test]
        fn $name() {
            if qemu_img().is_none() {
                return;
            }
            let t = tmp();
            let $dir = t.path();
            $body
        }
    };
}

hostile!(q02_q03_versions_1_and_4_are_unsupported, d, {
    let mut b = base(d, "");
    poke32(&mut b, 4, 1);
    refused(d, &b, "unsupported", "qcow2 version 1");
    poke32(&mut b, 4, 4);
    refused(d, &b, "unsupported", "version 4");
});

hostile!(q04_q05_q06_cluster_bits, d, {
    let mut b = base(d, "");
    poke32(&mut b, 20, 8);
    refused(d, &b, "format", "cluster_bits");
    poke32(&mut b, 20, 22);
    refused(d, &b, "unsupported", "cluster_bits");
    poke32(&mut b, 20, 0xffff_ffff);
    refused(d, &b, "format", "cluster_bits");
});

hostile!(q07_q08_q09_header_length, d, {
    let mut b = base(d, "");
    poke32(&mut b, 100, 72);
    refused(d, &b, "format", "header too short");
    poke32(&mut b, 100, 0xffff_ffff);
    refused(d, &b, "format", "header exceeds cluster");
    poke32(&mut b, 100, 108);
    refused(d, &b, "format", "header_length");
});

hostile!(q10_q11_huge_sizes_are_refused, d, {
    let mut b = base(d, "");
    poke64(&mut b, 24, 1 << 63);
    refused(d, &b, "format", "too big");
    let mut b = base(d, "");
    poke64(&mut b, 24, 1 << 50);
    poke32(&mut b, 36, 1 << 21);
    refused(d, &b, "format", "L1 table");
});

hostile!(q13_size_zero_is_an_empty_image, d, {
    let mut b = base(d, "");
    poke64(&mut b, 24, 0);
    let src = put(d, "zero.qcow2", &b);
    let out = path(d, "out.raw");
    ok(&run(&["convert", "--no-progress", &src, &out]));
    assert_eq!(std::fs::metadata(&out).unwrap().len(), 0);
});

hostile!(q14_image_larger_than_target_is_refused, d, {
    let b = base(d, "");
    let src = put(d, "b.qcow2", &b);
    let out = path(d, "out.raw");
    fails(
        &run(&[
            "convert",
            "--no-progress",
            "--target-size",
            "32Mi",
            &src,
            &out,
        ]),
        "size",
        "is larger than the reported available storage",
    );
    assert!(!Path::new(&out).exists());
});

hostile!(q15_q17_q18_incompatible_bits, d, {
    let mut b = base(d, "");
    poke64(&mut b, 72, 1 << 63);
    refused(d, &b, "unsupported", "unknown incompatible feature bit 63");
    poke64(&mut b, 72, 2);
    refused(d, &b, "format", "image is marked corrupt");
    poke64(&mut b, 72, 1);
    accepted(d, &b);
});

hostile!(q16_feature_name_with_escape_sequences_is_escaped, d, {
    let mut b = base(d, "");
    // Replace the extension area at 112 with a feature table naming bit 62.
    let name = b"\x1b[31mEVIL\x1b[0m\nInjected";
    b[112..0x200].fill(0);
    poke32(&mut b, 112, 0x6803_f857);
    poke32(&mut b, 116, 48);
    b[120] = 0;
    b[121] = 62;
    b[122..122 + name.len()].copy_from_slice(name);
    poke64(&mut b, 72, 1 << 62);
    let src = put(d, "evil.qcow2", &b);
    let o = run(&["convert", "--no-progress", &src, &path(d, "out.raw")]);
    fails(&o, "unsupported", "EVIL");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!stderr.contains('\x1b'));
    assert_eq!(stderr.trim_end().lines().count(), 1);
});

hostile!(q19_q23_data_file_bits, d, {
    let mut b = base(d, "");
    poke64(&mut b, 72, 4);
    refused(d, &b, "unsafe", "external data file");
    let mut b = base(d, "");
    poke64(&mut b, 88, 2);
    refused(d, &b, "format", "data-file-raw");
});

hostile!(q20_external_data_file_is_never_opened, d, {
    let secret = path(d, "secret");
    std::fs::write(&secret, vec![0x5e; 65536]).unwrap();
    let img = path(d, "df.qcow2");
    assert!(Command::new("qemu-img")
        .args([
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            &format!("data_file={secret},data_file_raw=on,preallocation=metadata"),
            &img,
            "64k"
        ])
        .status()
        .unwrap()
        .success());
    // Swap the data file for a FIFO: opening it would block the import.
    std::fs::remove_file(&secret).unwrap();
    assert!(Command::new("mkfifo")
        .arg(&secret)
        .status()
        .unwrap()
        .success());
    let out = path(d, "out.raw");
    let o = run(&["convert", "--no-progress", &img, &out]);
    fails(&o, "unsafe", "external data file");
    assert!(!Path::new(&out).exists());
});

/// Writes a backing file name at 0x1000 of BASE (cluster 0 stays in the
/// header cluster) and points the header at it.
pub(crate) fn with_backing(d: &Path, name: &[u8]) -> Vec<u8> {
    let mut b = base(d, "");
    b[0x1000..0x1000 + name.len()].copy_from_slice(name);
    poke64(&mut b, 8, 0x1000);
    poke32(&mut b, 16, name.len() as u32);
    b
}

hostile!(q24_to_q29_backing_files_are_never_opened, d, {
    // The "backing file" is a FIFO: opening it would hang the import.
    let fifo = path(d, "backing");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let me = path(d, "hostile.qcow2");
    let names = [
        fifo.clone(),
        "../w/x".to_owned(),
        format!(
            "json:{{\"driver\":\"raw\",\"file\":{{\"driver\":\"file\",\"filename\":\"{fifo}\"}}}}"
        ),
        format!("file:{fifo}"),
        "nbd://127.0.0.1:1/x".to_owned(),
        me,
    ];
    for n in &names {
        refused(d, &with_backing(d, n.as_bytes()), "unsafe", "backing file");
    }
});

hostile!(q30_backing_offsets_and_lengths_are_format_errors, d, {
    let mut b = base(d, "");
    poke64(&mut b, 8, 0x1000);
    poke32(&mut b, 16, 1024);
    refused(d, &b, "format", "too long");
    poke64(&mut b, 8, 0x20000);
    poke32(&mut b, 16, 4);
    refused(d, &b, "format", "backing_file_offset");
    poke64(&mut b, 8, 16);
    refused(d, &b, "format", "backing_file_offset");
});

hostile!(q32_q33_q34_encryption_is_unsupported, d, {
    for m in [1, 2, 3] {
        let mut b = base(d, "");
        poke32(&mut b, 32, m);
        refused(d, &b, "unsupported", "encrypted");
    }
});

hostile!(q36_q37_compression_type_fields, d, {
    let mut b = base(d, "");
    poke64(&mut b, 72, 8);
    refused(d, &b, "format", "compression");
    b[104] = 2;
    refused(d, &b, "unsupported", "compression type 2");
});

hostile!(q39_extended_l2_with_512_byte_clusters, d, {
    let mut b = base(d, "");
    poke64(&mut b, 72, 16);
    poke32(&mut b, 20, 9);
    refused(d, &b, "unsupported", "subcluster");
});

hostile!(q40_to_q45_refcount_structures, d, {
    let mut b = base(d, "");
    poke32(&mut b, 96, 7);
    refused(d, &b, "format", "refcount");
    let mut b = base(d, "");
    poke32(&mut b, 56, 0);
    refused(d, &b, "format", "refcount table");
    poke32(&mut b, 56, 0xffff_ffff);
    refused(d, &b, "format", "refcount table too large");
    let mut b = base(d, "");
    poke64(&mut b, 48, 0x10001);
    refused(d, &b, "format", "not cluster aligned");
    poke64(&mut b, 48, 0x7fff_0000);
    refused(d, &b, "format", "beyond end of file");
    poke64(&mut b, 48, 0x30000);
    refused(d, &b, "format", "overlap");
});

hostile!(q46_snapshot_table_bounds, d, {
    let mut b = base(d, "");
    poke32(&mut b, 60, 0xffff_ffff);
    refused(d, &b, "format", "snapshot table too large");
    poke32(&mut b, 60, 1);
    poke64(&mut b, 64, 0x12345);
    refused(d, &b, "format", "not cluster aligned");
});

hostile!(q47_q48_q50_extensions_and_ignored_bits, d, {
    let mut b = base(d, "");
    // Whatever extension qemu wrote first gets a huge length.
    poke32(&mut b, 112 + 4, 0x7fff_ffff);
    refused(d, &b, "format", "header extension too large");
    let mut b = base(d, "");
    poke64(&mut b, 80, 1 << 63);
    poke64(&mut b, 88, 1 << 63);
    accepted(d, &b);
});

hostile!(q51_to_q56_l1_table, d, {
    let mut b = base(d, "");
    poke32(&mut b, 36, 0xffff_ffff);
    refused(d, &b, "format", "L1 table too large");
    poke32(&mut b, 36, 4 << 20);
    refused(d, &b, "format", "L1 table");
    let mut b = base(d, "");
    poke64(&mut b, 40, 0x30008);
    refused(d, &b, "format", "not cluster aligned");
    poke64(&mut b, 40, 0x7fff_0000);
    refused(d, &b, "format", "beyond end of file");
    poke64(&mut b, 40, 0);
    refused(d, &b, "format", "overlaps the header");
    let mut b = base(d, "");
    poke64(&mut b, 24, 1 << 40);
    refused(d, &b, "format", "too small");
});

hostile!(q57_to_q60_l1_entries, d, {
    let mut b = base(d, "");
    poke64(&mut b, 0x30000, 0x8000_0000_0004_0200);
    refused(d, &b, "format", "L2 table");
    poke64(&mut b, 0x30000, 0x8000_0000_7fff_0000);
    refused(d, &b, "format", "beyond end of file");
    poke64(&mut b, 0x30000, 0x8000_0000_0003_0000);
    refused(d, &b, "format", "overlap");
    poke64(&mut b, 0x30000, 0x8100_0000_0004_0000);
    refused(d, &b, "format", "reserved bits");
});

hostile!(q61_to_q64_l2_entries, d, {
    let mut b = base(d, "");
    poke64(&mut b, 0x40000, 0x8000_0000_0005_0200);
    refused(d, &b, "format", "not cluster aligned");
    poke64(&mut b, 0x40000, 0x8000_0000_7fff_0000);
    refused(d, &b, "format", "beyond end of file");
    // Q63: offset 0 with bit 63 is host cluster 0, the header.
    poke64(&mut b, 0x40000, 0x8000_0000_0000_0000);
    refused(d, &b, "format", "overlaps the header");
    // Offset 0 without bit 63 is simply unallocated: reads as zero.
    poke64(&mut b, 0x40000, 0);
    accepted(d, &b);
    let mut b = base(d, "");
    poke64(&mut b, 0x40008, 0x8000_0000_0000_0000 | 0x00_0000_0001_0000);
    refused(d, &b, "format", "overlap");
    let mut b = base(d, "");
    poke64(&mut b, 0x40000, 0x8000_0000_0005_0002);
    refused(d, &b, "format", "reserved bits");
    poke64(&mut b, 0x40000, 0x8100_0000_0005_0000);
    refused(d, &b, "format", "reserved bits");
});

hostile!(q65_shared_clusters_are_fine, d, {
    let mut b = base(d, "");
    let l2_0 = be64(&b, 0x40000);
    poke64(&mut b, 0x40000 + 16 * 8, l2_0);
    accepted(d, &b);
});

hostile!(q66_v2_zero_flag_is_refused, d, {
    let mut b = base(d, "compat=0.10");
    let l2 = be64(&b, 0x40000);
    poke64(&mut b, 0x40000, l2 | 1);
    refused(d, &b, "format", "pre-v3");
});

hostile!(q67_q68_q71_compressed_clusters, d, {
    let c = comp(d);
    accepted(d, &c);
    // Find the compressed L2 entry (bit 62) in the L2 table.
    let l1 = be64(&c, 40) as usize;
    let l2 = (be64(&c, l1) & 0x00ff_ffff_ffff_fe00) as usize;
    let e = be64(&c, l2);
    assert_ne!(e & (1 << 62), 0, "COMP L2[0] is not compressed");
    let host_mask = (1u64 << 54) - 1;
    let host = (e & host_mask) as usize;
    let mut b = c.clone();
    poke64(&mut b, l2, (e & !host_mask) | 0x7fff_0000);
    refused(d, &b, "format", "beyond end of file");
    let mut b = c.clone();
    b[host..host + 64].fill(0xff);
    refused(d, &b, "format", "decompression failed");
});

hostile!(q72_data_cluster_over_metadata_is_refused, d, {
    let mut b = base(d, "");
    poke64(&mut b, 0x40008, 0x8000_0000_0003_0000);
    refused(d, &b, "format", "overlap");
    poke64(&mut b, 0x40008, 0x8000_0000_0004_0000);
    refused(d, &b, "format", "overlap");
    poke64(&mut b, 0x40008, 0x8000_0000_0002_0000);
    refused(d, &b, "format", "overlap");
});

hostile!(q73_q74_q75_truncated_files_are_errors_never_zeroes, d, {
    let b = base(d, "");
    refused(d, &b[..50], "truncated", "");
    refused(d, &b[..0x30000], "truncated", "beyond end of file");
    refused(d, &b[..b.len() - 65636], "truncated", "beyond end of file");
});

hostile!(q76_q77_snapshots_and_clean_images_convert, d, {
    let b = base(d, "");
    accepted(d, &b);
    let p = put(d, "snap.qcow2", &b);
    assert!(Command::new("qemu-img")
        .args(["snapshot", "-c", "s", &p])
        .status()
        .unwrap()
        .success());
    accepted(d, &std::fs::read(&p).unwrap());
});
