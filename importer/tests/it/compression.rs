//! Hostile compressed inputs: the C cases of docs/ids.md (C01-C17).

use std::path::Path;

use crate::common::*;

/// Converts `bytes` and asserts failure of `kind` with `needle`, and that
/// the target does not exist afterwards.
fn refused(bytes: &[u8], kind: &str, needle: &str) {
    let d = tmp();
    let src = put(d.path(), "in", bytes);
    let out_path = path(d.path(), "out.raw");
    let out = run(&["convert", "--no-progress", &src, &out_path]);
    fails(&out, kind, needle);
    assert!(!Path::new(&out_path).exists(), "target left behind");
}

fn img() -> Vec<u8> {
    sparse_image(2 << 20)
}

#[test]
fn c01_gzip_truncated_in_deflate_data_is_truncated() {
    let v = gz(&pattern(2 << 20));
    refused(&v[..v.len() / 2], "truncated", "truncated");
}

#[test]
fn c02_gzip_missing_trailer_is_truncated() {
    let v = gz(&img());
    refused(&v[..v.len() - 4], "truncated", "truncated");
    refused(&v[..v.len() - 8], "truncated", "truncated");
}

#[test]
fn c03_gzip_crc_mismatch_is_integrity() {
    let mut v = gz(&img());
    let n = v.len();
    v[n - 8] ^= 0xff;
    refused(&v, "integrity", "gzip");
}

#[test]
fn c05_trailing_garbage_after_gzip_is_format() {
    let mut v = gz(&img());
    v.extend(b"GARBAGE");
    refused(&v, "format", "trailing data after gzip stream");
}

#[test]
fn c06_trailing_zeros_after_gzip_are_accepted() {
    let d = tmp();
    let i = img();
    let mut v = gz(&i);
    v.extend([0u8; 1024]);
    let src = put(d.path(), "z.gz", &v);
    assert_converts(d.path(), &src, &i);
}

/// A file target of `cap` bytes receiving a bomb fails as soon as the
/// output passes the capacity, and the target is removed.
fn bomb(compressed: Vec<u8>) {
    let d = tmp();
    let src = put(d.path(), "bomb", &compressed);
    let out_path = path(d.path(), "out.raw");
    let out = run(&[
        "convert",
        "--no-progress",
        "--target-size",
        "16Mi",
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
fn c07_gzip_bomb_stops_at_target_capacity() {
    bomb(gz(&vec![0u8; 256 << 20]));
}

#[test]
fn c12_xz_and_zstd_bombs_stop_at_target_capacity() {
    bomb(xz(&vec![0u8; 128 << 20]));
    bomb(zst(&vec![0u8; 256 << 20]));
}

#[test]
fn c08_xz_truncated_is_truncated() {
    let v = xz(&pattern(1 << 20));
    refused(&v[..v.len() / 2], "truncated", "truncated");
    refused(&v[..v.len() - 12], "truncated", "truncated");
}

#[test]
fn c10_trailing_garbage_after_xz_is_format() {
    let mut v = xz(&img());
    v.extend(b"GARBAGE");
    refused(&v, "format", "trailing data after xz stream");
}

#[test]
fn xz_padding_not_multiple_of_four_is_format() {
    let mut v = xz(&img());
    v.extend([0u8; 3]);
    refused(&v, "format", "trailing data");
}

#[test]
fn c11_xz_with_huge_dictionary_hits_memory_limit() {
    // Single-block xz (no size fields): the block header is
    // [size][flags=0][filter id 0x21][props size 1][dict][pad x3][crc32].
    let mut v = xz(&pattern(64 << 10));
    assert_eq!(
        &v[13..16],
        &[0x00, 0x21, 0x01],
        "unexpected block header layout"
    );
    // Dictionary byte 37 = 1.5 GiB (xz --lzma2=dict=1536MiB).
    v[16] = 37;
    let mut crc = flate2::Crc::new();
    crc.update(&v[12..20]);
    v[20..24].copy_from_slice(&crc.sum().to_le_bytes());
    refused(&v, "limit", "memory limit");
}

#[test]
fn c13_zstd_truncated_is_truncated() {
    let v = zst(&pattern(1 << 20));
    refused(&v[..v.len() / 2], "truncated", "truncated");
}

#[test]
fn c13_zstd_window_above_limit_is_limit() {
    // A streamed frame has a window descriptor at byte 5; exponent 31
    // (zstd --long=31) is above the 2^27 limit.
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 1).unwrap();
    enc.include_contentsize(false).unwrap();
    std::io::Write::write_all(&mut enc, &pattern(64 << 10)).unwrap();
    let mut v = enc.finish().unwrap();
    assert_eq!(
        v[4] & 0x20,
        0,
        "single-segment frame has no window descriptor"
    );
    v[5] = (31 - 10) << 3;
    refused(&v, "limit", "window");
}

#[test]
fn c14_nested_compression_is_refused() {
    refused(&gz(&gz(&img())), "unsupported", "nested compression");
    refused(&xz(&gz(&img())), "unsupported", "nested compression");
    refused(&zst(&xz(&img())), "unsupported", "nested compression");
}

#[test]
fn c16_gzip_isize_lie_is_integrity() {
    let mut v = gz(&img());
    let n = v.len();
    // ISIZE is not covered by the CRC: the CRC still matches.
    v[n - 4] ^= 0x01;
    refused(&v, "integrity", "gzip");
}

#[test]
fn c17_gzip_unterminated_name_is_refused_with_bounded_memory() {
    let mut v = vec![0x1f, 0x8b, 8, 8, 0, 0, 0, 0, 0, 3];
    v.extend(std::iter::repeat_n(b'n', 4 << 20));
    refused(&v, "format", "gzip header");
}

#[test]
fn c17_gzip_huge_fextra_is_handled() {
    // FEXTRA of 65535 bytes then a valid member body: bounded, and OK.
    let body = gz(&img());
    let mut v = body[..10].to_vec();
    v[3] |= 4;
    v.extend(0xffffu16.to_le_bytes());
    v.extend(vec![b'x'; 0xffff]);
    v.extend(&body[10..]);
    let d = tmp();
    let src = put(d.path(), "fextra.gz", &v);
    assert_converts(d.path(), &src, &img());
}

#[test]
fn f02_recognised_formats_are_refused_not_imported_as_raw() {
    let magics: &[(usize, &[u8], &str)] = &[
        (0, b"KDMV", "vmdk"),
        (0, b"conectix", "vhd"),
        (0, b"vhdxfile", "vhdx"),
        (0x40, b"\x7f\x10\xda\xbe", "vdi"),
        (0, b"QED\x00", "qed"),
        (0, b"LUKS\xba\xbe", "luks"),
    ];
    for (off, magic, name) in magics {
        let mut v = pattern(1 << 20);
        v[*off..off + magic.len()].copy_from_slice(magic);
        refused(&v, "unsupported", &format!("{name} is not supported"));
        // Inside a compression layer too.
        refused(&gz(&v), "unsupported", &format!("{name} is not supported"));
    }
}

#[test]
fn f02_qemu_made_vmdk_vhd_vhdx_vdi_are_refused() {
    let Some(qemu) = crate::convert::qemu_img() else {
        return;
    };
    let d = tmp();
    let src = put(d.path(), "src.raw", &pattern(1 << 20));
    for (fmt, name) in [
        ("vmdk", "vmdk"),
        ("vpc", "vhd"),
        ("vhdx", "vhdx"),
        ("vdi", "vdi"),
        ("qed", "qed"),
    ] {
        let img = path(d.path(), &format!("img.{fmt}"));
        let mut args = vec!["convert", "-f", "raw", "-O", fmt];
        if fmt == "vpc" {
            args.extend(["-o", "subformat=dynamic"]);
        }
        args.extend([src.as_str(), img.as_str()]);
        let st = std::process::Command::new(qemu)
            .args(&args)
            .status()
            .unwrap();
        assert!(st.success(), "qemu-img convert -O {fmt}");
        refused(
            &std::fs::read(&img).unwrap(),
            "unsupported",
            &format!("{name} is not supported"),
        );
    }
}

#[test]
fn f02_vmdk_descriptor_without_its_banner_is_refused_and_its_extent_never_opened() {
    // qemu-img reads this as a VMDK whose flat extent is /etc/passwd.
    let mut v = b"# made by hand\n  \nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\n# Extent description\nRW 8 FLAT \"/etc/passwd\" 0\n".to_vec();
    refused(&v, "unsupported", "vmdk is not supported");
    refused(&gz(&v), "unsupported", "vmdk is not supported");
    // A long comment block before the version line (still within 2 KiB).
    let mut long = vec![b'#'; 1500];
    long.push(b'\n');
    long.append(&mut v);
    refused(&long, "unsupported", "vmdk is not supported");
    let d = tmp();
    let out = path(d.path(), "o.raw");
    fails(
        &run_stdin(&["convert", "--no-progress", "-", &out], long),
        "unsupported",
        "vmdk is not supported",
    );
    assert!(!Path::new(&out).exists());
}

#[test]
fn f03_qcow_v1_is_refused() {
    let mut v = vec![0u8; 4096];
    v[..8].copy_from_slice(b"QFI\xfb\x00\x00\x00\x01");
    refused(&v, "unsupported", "qcow2 version 1");
}

#[test]
fn bzip2_is_refused() {
    let mut v = b"BZh91AY&SY".to_vec();
    v.resize(4096, 1);
    refused(&v, "unsupported", "bzip2 is not supported");
}
