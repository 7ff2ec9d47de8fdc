//! File targets: the target cases TD01-TD12 (docs/ids.md) and the failure
//! semantics of G5.

use std::path::Path;

use crate::common::*;

#[test]
fn d01_disk_full_mid_write_fails_and_removes_the_file() {
    if !privileged() {
        return;
    }
    let fs = Tmpfs::new("8m");
    let d = tmp();
    let src = put(d.path(), "big.gz", &gz(&pattern(20 << 20)));
    fails_full_and_cleans(&src, &fs.path("out.raw"));
}

/// Converts `src` (random-looking data that cannot be sparse, streamed so
/// its size is unknown up front) to `out_path` with a declared capacity
/// above the real free space: a capacity error, and no target left.
fn fails_full_and_cleans(src: &str, out_path: &Path) {
    let out = run(&[
        "convert",
        "--no-progress",
        "--target-size",
        "64Mi",
        src,
        out_path.to_str().unwrap(),
    ]);
    fails(
        &out,
        "target",
        "is larger than the reported available storage",
    );
    assert!(!out_path.exists(), "partial target left behind");
}

#[test]
fn d01_disk_full_in_an_o_direct_writer_thread_fails_and_removes_the_file() {
    if !privileged() {
        return;
    }
    // ext4 takes O_DIRECT, so the failing writes happen on the writer
    // threads and must still surface as the import's error.
    let fs = Ext4::new(16);
    let d = tmp();
    let src = put(d.path(), "big.gz", &gz(&pattern(40 << 20)));
    fails_full_and_cleans(&src, &fs.path("out.raw"));
    // The same image fits a roomier filesystem, written the same way.
    let fs = Ext4::new(96);
    let out_path = fs.path("out.raw");
    ok(&run(&[
        "convert",
        "--no-progress",
        &src,
        out_path.to_str().unwrap(),
    ]));
    assert!(std::fs::read(&out_path).unwrap() == pattern(40 << 20));
}

#[test]
fn d03_falloc_without_space_fails_before_writing_data() {
    if !privileged() {
        return;
    }
    let fs = Tmpfs::new("8m");
    let d = tmp();
    let src = put(d.path(), "disk.img", &sparse_image(32 << 20));
    let out_path = fs.path("out.raw");
    let out = run(&[
        "convert",
        "--no-progress",
        "--preallocation",
        "falloc",
        "--target-size",
        "32Mi",
        &src,
        out_path.to_str().unwrap(),
    ]);
    fails(&out, "target", "storage");
    assert!(!out_path.exists());
}

#[test]
fn image_whose_data_exceeds_free_space_fails_and_leaves_no_target() {
    if !privileged() {
        return;
    }
    let fs = Tmpfs::new("4m");
    let d = tmp();
    let src = put(d.path(), "disk.img", &pattern(8 << 20));
    let out_path = fs.path("out.raw");
    let out = run(&["convert", "--no-progress", &src, out_path.to_str().unwrap()]);
    fails(
        &out,
        "size",
        "is larger than the reported available storage",
    );
    assert!(!out_path.exists());
}

#[test]
fn d09_symlink_target_is_refused_and_its_destination_untouched() {
    let d = tmp();
    let victim = put(d.path(), "victim", b"precious");
    let link = path(d.path(), "disk.img");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let src = put(d.path(), "src.img", &pattern(4096));
    let out = run(&["convert", "--no-progress", &src, &link]);
    fails(&out, "target", "symbolic link");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
}

#[test]
fn directory_target_is_refused() {
    let d = tmp();
    let src = put(d.path(), "src.img", &pattern(4096));
    let out = run(&["convert", "--no-progress", &src, d.path().to_str().unwrap()]);
    fails(&out, "target", "not a regular file");
}

#[test]
fn d10_existing_target_is_overwritten_completely() {
    let d = tmp();
    let out_path = put(d.path(), "out.raw", &vec![0x5a; 8 << 20]);
    let img = sparse_image(4 << 20);
    let src = put(d.path(), "src.img", &img);
    ok(&run(&["convert", "--no-progress", &src, &out_path]));
    // No byte of the old content survives, in the holes or past the end.
    assert_eq!(std::fs::read(&out_path).unwrap(), img);
}

#[test]
fn failed_import_over_existing_file_truncates_it() {
    let d = tmp();
    let out_path = put(d.path(), "out.raw", &vec![0x5a; 1 << 20]);
    let v = gz(&pattern(2 << 20));
    let src = put(d.path(), "trunc.gz", &v[..v.len() / 2]);
    let out = run(&["convert", "--no-progress", &src, &out_path]);
    fails(&out, "truncated", "truncated");
    assert_eq!(std::fs::metadata(&out_path).unwrap().len(), 0);
}

#[test]
fn refused_import_leaves_existing_target_untouched() {
    // REJECT: nothing is written, not even the truncation.
    let d = tmp();
    let out_path = put(d.path(), "out.raw", b"old");
    let src = put(d.path(), "nested.gz", &gz(&gz(b"x")));
    let out = run(&["convert", "--no-progress", &src, &out_path]);
    fails(&out, "unsupported", "nested compression");
    assert_eq!(std::fs::read(&out_path).unwrap(), b"old");
}

#[test]
fn missing_source_fails_without_creating_target() {
    let d = tmp();
    let out_path = path(d.path(), "out.raw");
    let out = run(&[
        "convert",
        "--no-progress",
        &path(d.path(), "nope"),
        &out_path,
    ]);
    fails(&out, "source", "nope");
    assert!(!Path::new(&out_path).exists());
}

#[test]
fn new_target_file_is_sparse_and_mode_0644() {
    use std::os::unix::fs::PermissionsExt;
    let d = tmp();
    let mut img = vec![0u8; 32 << 20];
    img[..4096].fill(1);
    let src = put(d.path(), "src.img", &img);
    let out_path = path(d.path(), "out.raw");
    ok(&run(&["convert", "--no-progress", &src, &out_path]));
    assert!(allocated(&out_path) <= 64 << 10);
    let mode = std::fs::metadata(&out_path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o644);
}

#[test]
fn d11_killed_import_leaves_no_success_and_the_next_run_starts_clean() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let d = tmp();
    let out_path = path(d.path(), "out.raw");
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("diskimport"))
        .args(["convert", "--no-progress", "-", &out_path])
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&vec![0x5a; 4 << 20]).unwrap();
    stdin.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "a killed import must not report success");
    drop(stdin);
    // The next run over the same target starts from an empty file.
    let img = sparse_image(2 << 20);
    let src = put(d.path(), "src.img", &img);
    ok(&run(&["convert", "--no-progress", &src, &out_path]));
    assert_eq!(std::fs::read(&out_path).unwrap(), img);
}

/// Asserts that converting `src` into `dst` is refused before anything is
/// written, and that the source is left byte for byte as it was.
fn refuses_itself(src: &str, dst: &str, original: &[u8], stdin: Option<&str>) {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("diskimport"));
    cmd.args(["convert", "--no-progress", src, dst]);
    if let Some(f) = stdin {
        // A shell's `< file`: the file itself is standard input.
        cmd.stdin(std::fs::File::open(f).unwrap());
    }
    let out = cmd.output().unwrap();
    fails(&out, "target", "is the source itself");
    let now = std::fs::read(stdin.unwrap_or(src)).unwrap();
    assert!(now == original, "source changed: {src} -> {dst}");
}

#[test]
fn source_equal_to_target_is_refused_before_writing() {
    let t = tmp();
    let d = t.path();
    let data = pattern(1 << 20);
    let raw = put(d, "a.raw", &data);
    // The same path, a hard link, a symlinked source, a relative spelling.
    refuses_itself(&raw, &raw, &data, None);
    let link = path(d, "hard.raw");
    std::fs::hard_link(&raw, &link).unwrap();
    refuses_itself(&raw, &link, &data, None);
    let sym = path(d, "sym.raw");
    std::os::unix::fs::symlink(&raw, &sym).unwrap();
    refuses_itself(&sym, &raw, &data, None);
    let dotted = format!("{}/./a.raw", d.display());
    refuses_itself(&dotted, &raw, &data, None);
    // Standard input redirected from the target.
    refuses_itself("-", &raw, &data, Some(&raw));
    // A qcow2 source (it used to be truncated, then the run failed).
    if crate::convert::qemu_img().is_some() {
        let q = path(d, "a.qcow2");
        sh(
            "qemu-img",
            &["convert", "-f", "raw", "-O", "qcow2", &raw, &q],
        );
        let qdata = std::fs::read(&q).unwrap();
        refuses_itself(&q, &q, &qdata, None);
    }
    // A different file with the same content is a fine target.
    let other = put(d, "b.raw", &data);
    ok(&run(&["convert", "--no-progress", &raw, &other]));
}

#[test]
fn block_device_as_its_own_source_or_over_its_backing_file_is_refused() {
    if !privileged() {
        return;
    }
    let lo = Loop::new(1 << 20, 0x5a);
    let before = lo.read();
    refuses_itself(&lo.dev, &lo.dev, &before, None);
    // The loop device's backing file as the source of the device.
    let backing = lo.backing().to_str().unwrap().to_owned();
    refuses_itself(&backing, &lo.dev, &before, None);
    assert!(lo.read() == before);
}

#[test]
fn falloc_on_a_filesystem_without_fallocate_falls_back_to_writing_zeroes() {
    if !privileged() {
        return;
    }
    // ext2 files have no extents: fallocate fails with EOPNOTSUPP.
    let fs = Ext4::of_type("ext2", 64);
    let probe = fs.path("probe");
    let f = std::fs::File::create(&probe).unwrap();
    // SAFETY: fallocate on a live descriptor with plain integer arguments.
    let rc = unsafe { libc::fallocate(std::os::fd::AsRawFd::as_raw_fd(&f), 0, 0, 4096) };
    assert_eq!(rc, -1, "ext2 unexpectedly supports fallocate");
    drop(f);
    let d = tmp();
    let data = sparse_image(8 << 20);
    let src = put(d.path(), "disk.img", &data);
    let out_path = fs.path("out.raw");
    ok(&run(&[
        "convert",
        "--no-progress",
        "--preallocation",
        "falloc",
        &src,
        out_path.to_str().unwrap(),
    ]));
    assert!(std::fs::read(&out_path).unwrap() == padded(&data));
    // Every block allocated, as full preallocation writes them.
    assert!(allocated(out_path.to_str().unwrap()) >= 8 << 20);
}

#[test]
fn a_sparse_image_needs_room_for_its_data_not_its_virtual_size() {
    if !privileged() || crate::convert::qemu_img().is_none() {
        return;
    }
    let fs = Tmpfs::new("64m");
    let d = tmp();
    // 2 TiB virtual, 4 MiB of data: fits a 64 MiB filesystem, as with
    // qemu-img convert.
    let img = path(d.path(), "big.qcow2");
    sh("qemu-img", &["create", "-q", "-f", "qcow2", &img, "2T"]);
    sh(
        "qemu-io",
        &["-f", "qcow2", "-c", "write -P 0x61 1G 4M", &img],
    );
    let out_path = fs.path("out.raw");
    let out = out_path.to_str().unwrap();
    ok(&run(&["convert", "--no-progress", &img, out]));
    let meta = std::fs::metadata(&out_path).unwrap();
    assert_eq!(meta.len(), 2 << 40);
    assert!(std::os::unix::fs::MetadataExt::blocks(&meta) * 512 <= 8 << 20);
    let f = std::fs::File::open(&out_path).unwrap();
    let mut buf = vec![0u8; 4 << 20];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf, 1 << 30).unwrap();
    assert!(buf.iter().all(|&b| b == 0x61));
    std::fs::remove_file(&out_path).unwrap();
    // The same image with 80 MiB of data does not fit: the capacity error,
    // and no target.
    sh(
        "qemu-io",
        &["-f", "qcow2", "-c", "write -P 0x62 0 80M", &img],
    );
    let o = run(&["convert", "--no-progress", &img, out]);
    fails(&o, "size", "larger than the reported available storage");
    assert!(!out_path.exists(), "target left behind");
    // Asking for the whole size (--target-size, preallocation) checks the
    // virtual size up front.
    let o = run(&[
        "convert",
        "--no-progress",
        "--preallocation",
        "falloc",
        &img,
        out,
    ]);
    fails(&o, "size", "Virtual image size 2199023255552 is larger");
    assert!(!out_path.exists());
}
