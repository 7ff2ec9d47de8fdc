//! Differential tests: every supported input converts to exactly the
//! decompressed bytes padded to 512, and the output is sparse.

use crate::common::*;

const SIZE: usize = 6 << 20;

#[test]
fn raw_sparse_image_converts_exactly_and_sparse() {
    let d = tmp();
    let img = sparse_image(SIZE);
    let src = put(d.path(), "disk.img", &img);
    assert_converts(d.path(), &src, &img);
}

#[test]
fn raw_file_with_holes_is_read_hole_aware_and_exact() {
    // A truly sparse source file (holes in the filesystem, not just zero
    // bytes): the hole-aware reader must produce the same output.
    let d = tmp();
    let p = path(d.path(), "holey.img");
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(64 << 20).unwrap();
    let data = pattern(100_000);
    std::os::unix::fs::FileExt::write_all_at(&f, &data, 10 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &data, (64 << 20) - 100_000).unwrap();
    drop(f);
    let expected = std::fs::read(&p).unwrap();
    assert_converts(d.path(), &p, &expected);
}

#[test]
fn iso_like_image_is_copied_as_raw() {
    // F01: ISO 9660 has no magic at offset 0: raw.
    let d = tmp();
    let mut iso = pattern(2 << 20);
    iso[..32768].fill(0);
    iso[0x8001..0x8006].copy_from_slice(b"CD001");
    let src = put(d.path(), "cd.iso", &iso);
    assert_converts(d.path(), &src, &iso);
    let out = run(&["info", "--output", "json", &src]);
    let v: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(v["format"], "raw");
}

#[test]
fn mbr_disk_is_copied_as_raw() {
    let d = tmp();
    let mut disk = sparse_image(1 << 20);
    disk[510] = 0x55;
    disk[511] = 0xaa;
    let src = put(d.path(), "mbr.img", &disk);
    assert_converts(d.path(), &src, &disk);
}

#[test]
fn odd_length_raw_is_padded_to_512() {
    // D12
    let d = tmp();
    let img = pattern(1000);
    let src = put(d.path(), "small.img", &img);
    assert_converts(d.path(), &src, &padded(&img));
    assert_eq!(
        std::fs::metadata(path(d.path(), "out.raw")).unwrap().len(),
        1024
    );
}

#[test]
fn gzip_single_member_converts() {
    let d = tmp();
    let img = sparse_image(SIZE + 333);
    let src = put(d.path(), "disk.gz", &gz(&img));
    assert_converts(d.path(), &src, &padded(&img));
}

#[test]
fn gzip_multi_member_converts_all_members() {
    // C04: GzDecoder alone would stop after the first member.
    let d = tmp();
    let img = sparse_image(SIZE);
    let (a, b) = img.split_at(1_500_000);
    let mut both = gz(a);
    both.extend(gz(b));
    let src = put(d.path(), "multi.gz", &both);
    assert_converts(d.path(), &src, &img);
}

#[test]
fn xz_single_block_converts() {
    let d = tmp();
    let img = sparse_image(SIZE);
    let src = put(d.path(), "disk.xz", &xz(&img));
    assert_converts(d.path(), &src, &img);
}

#[test]
fn xz_multi_block_converts_with_threaded_decoder() {
    let d = tmp();
    let img = sparse_image(SIZE + 777);
    let src = put(d.path(), "blocks.xz", &xz_blocks(&img, 512 << 10));
    assert_converts(d.path(), &src, &padded(&img));
}

#[test]
fn xz_multi_stream_converts_all_streams() {
    // C09
    let d = tmp();
    let img = sparse_image(SIZE);
    let (a, b) = img.split_at(2_000_000);
    let mut both = xz_blocks(a, 256 << 10);
    both.extend(xz(b));
    let src = put(d.path(), "multi.xz", &both);
    assert_converts(d.path(), &src, &img);
}

#[test]
fn xz_stream_padding_is_accepted() {
    let d = tmp();
    let img = sparse_image(1 << 20);
    let mut v = xz(&img);
    v.extend([0u8; 8]);
    let src = put(d.path(), "padded.xz", &v);
    assert_converts(d.path(), &src, &img);
}

#[test]
fn zstd_multi_frame_converts() {
    let d = tmp();
    let img = sparse_image(SIZE);
    let (a, b) = img.split_at(3_000_000);
    let mut both = zst(a);
    both.extend(zst(b));
    let src = put(d.path(), "disk.zst", &both);
    assert_converts(d.path(), &src, &img);
}

#[test]
fn output_matches_qemu_img_convert_for_raw() {
    // The oracle: qemu-img convert -f raw -O raw of the same bytes.
    let Some(qemu) = qemu_img() else { return };
    let d = tmp();
    let img = sparse_image(3 << 20);
    let src = put(d.path(), "disk.img", &img);
    let reference = path(d.path(), "ref.raw");
    let st = std::process::Command::new(qemu)
        .args(["convert", "-f", "raw", "-O", "raw", &src, &reference])
        .status()
        .unwrap();
    assert!(st.success());
    assert_converts(d.path(), &src, &std::fs::read(&reference).unwrap());
}

/// qemu-img, or `None` to skip locally; in CI its absence fails the test.
pub fn qemu_img() -> Option<&'static str> {
    let found = std::process::Command::new("qemu-img")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found && std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true but qemu-img is missing");
    }
    found.then_some("qemu-img")
}
