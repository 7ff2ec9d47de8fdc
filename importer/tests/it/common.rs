//! Helpers shared by the integration tests.

#![allow(dead_code)]

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;

/// Runs `diskimport` with `args`.
pub fn run(args: &[&str]) -> Output {
    assert_cmd::Command::cargo_bin("diskimport")
        .unwrap()
        .args(args)
        .timeout(std::time::Duration::from_secs(300))
        .output()
        .unwrap()
}

/// Runs `diskimport` with `args` and `stdin`.
pub fn run_stdin(args: &[&str], stdin: Vec<u8>) -> Output {
    assert_cmd::Command::cargo_bin("diskimport")
        .unwrap()
        .args(args)
        .write_stdin(stdin)
        .timeout(std::time::Duration::from_secs(300))
        .output()
        .unwrap()
}

/// Runs a helper tool (qemu-img, qemu-io) and asserts it succeeded.
pub fn sh(cmd: &str, args: &[&str]) {
    let out = std::process::Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Asserts success and returns stdout.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "expected success, got {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts a failure of `kind` whose message contains `needle`
/// (case-insensitive) and that the message is one line.
pub fn fails(out: &Output, kind: &str, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success: {stderr}"
    );
    let line = stderr
        .lines()
        .find(|l| l.starts_with("diskimport: error["))
        .unwrap_or_else(|| panic!("no error line in {stderr:?}"));
    assert!(
        line.starts_with(&format!("diskimport: error[{kind}]")),
        "wrong kind, wanted {kind}: {line}"
    );
    assert!(
        line.to_lowercase().contains(&needle.to_lowercase()),
        "message lacks {needle:?}: {line}"
    );
}

/// A self-describing pattern: every 512-byte sector holds its own offset
/// as repeated u64s, so a misplaced block names where it came from.
pub fn pattern(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    for (i, sector) in v.chunks_mut(512).enumerate() {
        let tag = ((i as u64) * 512) | 0x8000_0000_0000_0000;
        for w in sector.chunks_mut(8) {
            let b = tag.to_le_bytes();
            w.copy_from_slice(&b[..w.len()]);
        }
    }
    v
}

/// A disk-like image: data runs separated by zero runs of varied,
/// unaligned lengths, ending with data.
pub fn sparse_image(len: usize) -> Vec<u8> {
    let mut v = pattern(len);
    let mut pos = 70_000;
    let mut gap = 300_000;
    while pos + gap < len.saturating_sub(10_000) {
        v[pos..pos + gap].fill(0);
        pos += gap + 50_001;
        gap = gap * 3 / 2 % 2_000_000 + 4096;
    }
    v
}

/// `data` padded with zeroes to a multiple of 512.
pub fn padded(data: &[u8]) -> Vec<u8> {
    let mut v = data.to_vec();
    v.resize(data.len().div_ceil(512) * 512, 0);
    v
}

/// gzip of `data`.
pub fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// xz of `data`, single-threaded (one block).
pub fn xz(data: &[u8]) -> Vec<u8> {
    let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// xz of `data` in blocks of `block` bytes (what `xz -T2` writes), so the
/// threaded decoder has work to split.
pub fn xz_blocks(data: &[u8], block: u64) -> Vec<u8> {
    let stream = liblzma::stream::MtStreamBuilder::new()
        .threads(2)
        .block_size(block)
        .preset(1)
        .encoder()
        .unwrap();
    let mut e = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// zstd of `data`.
pub fn zst(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 1).unwrap()
}

/// A scratch directory.
pub fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Writes `data` to `dir/name` and returns the path as a string.
pub fn put(dir: &Path, name: &str, data: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p.to_str().unwrap().to_owned()
}

/// `dir/name` as a string.
pub fn path(dir: &Path, name: &str) -> String {
    dir.join(name).to_str().unwrap().to_owned()
}

/// Bytes the filesystem allocated for `p`.
pub fn allocated(p: &str) -> u64 {
    std::fs::metadata(p).unwrap().blocks() * 512
}

/// Bytes of `data` in 4 KiB blocks that are not all zero.
pub fn nonzero_block_bytes(data: &[u8]) -> u64 {
    data.chunks(4096)
        .filter(|c| c.iter().any(|&b| b != 0))
        .count() as u64
        * 4096
}

/// Converts `src` to a fresh target in `dir`; asserts the output equals
/// `expected` and is sparse.
pub fn assert_converts(dir: &Path, src: &str, expected: &[u8]) {
    let out = path(dir, "out.raw");
    let _ = std::fs::remove_file(&out);
    ok(&run(&["convert", "--no-progress", src, &out]));
    let got = std::fs::read(&out).unwrap();
    assert_eq!(got.len(), expected.len(), "length of {src}");
    assert!(
        got == expected,
        "content of {src} differs from the reference"
    );
    let alloc = allocated(&out);
    let budget = nonzero_block_bytes(expected) + (256 << 10);
    assert!(
        alloc <= budget,
        "{src}: output not sparse: {alloc} allocated, budget {budget}"
    );
}

/// Whether privileged tests (loop devices, mounts) can run. In CI they
/// must: a green CI cannot hide skipped tests.
pub fn privileged() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let ok = root && Path::new("/dev/loop-control").exists();
    if !ok && std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true but loop devices / mounts are not available");
    }
    ok
}

/// A loop device over a backing file, detached on drop.
pub struct Loop {
    pub dev: String,
    _backing: tempfile::NamedTempFile,
}

impl Loop {
    /// Makes `root/dev/cdi-block-volume` a device node for this loop
    /// device: a pod root (import or upload) whose volume is a CDI Block
    /// volume.
    pub fn node_in(&self, root: &Path) {
        let rdev = std::fs::metadata(&self.dev).unwrap().rdev();
        let node = root.join("dev/cdi-block-volume");
        let c = std::ffi::CString::new(node.to_str().unwrap()).unwrap();
        // SAFETY: mknod reads a valid NUL-terminated path; plain integers.
        let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFBLK | 0o600, rdev) };
        assert_eq!(rc, 0, "mknod: {}", std::io::Error::last_os_error());
    }

    /// A loop device of `size` bytes whose content is `fill` everywhere.
    pub fn new(size: usize, fill: u8) -> Loop {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&vec![fill; size]).unwrap();
        f.flush().unwrap();
        let out = std::process::Command::new("losetup")
            .args(["-f", "--show", f.path().to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Loop {
            dev: String::from_utf8(out.stdout).unwrap().trim().to_owned(),
            _backing: f,
        }
    }

    /// The backing file's path.
    pub fn backing(&self) -> &Path {
        self._backing.path()
    }

    /// The device's whole content.
    pub fn read(&self) -> Vec<u8> {
        std::fs::read(&self.dev).unwrap()
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .args(["-d", &self.dev])
            .status();
    }
}

/// A small tmpfs, unmounted on drop.
pub struct Tmpfs {
    pub dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (mount syntax, e.g. `8m`).
    pub fn new(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs");
        Tmpfs { dir }
    }

    /// A path inside the tmpfs.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

/// A small ext4 filesystem on a loop device (O_DIRECT works there, unlike
/// tmpfs), unmounted on drop.
pub struct Ext4 {
    pub dir: tempfile::TempDir,
    _backing: tempfile::NamedTempFile,
}

impl Ext4 {
    /// Makes and mounts an ext4 of `mib` MiB.
    pub fn new(mib: u64) -> Ext4 {
        Ext4::of_type("ext4", mib)
    }

    /// Makes and mounts a filesystem of the ext family (`ext2`: no
    /// extents, so no `fallocate`) of `mib` MiB.
    pub fn of_type(fs: &str, mib: u64) -> Ext4 {
        Ext4::make(fs, mib << 20, &[])
    }

    /// An ext4 of exactly `bytes` made as kubelet makes volumes
    /// (`mkfs.ext4 -m0`: no reserved blocks).
    pub fn kubelet(bytes: u64) -> Ext4 {
        Ext4::make("ext4", bytes, &["-m0"])
    }

    fn make(fs: &str, bytes: u64, opts: &[&str]) -> Ext4 {
        let backing = tempfile::NamedTempFile::new().unwrap();
        backing.as_file().set_len(bytes).unwrap();
        let st = std::process::Command::new(format!("mkfs.{fs}"))
            .args(["-q", "-F"])
            .args(opts)
            .arg(backing.path())
            .status()
            .unwrap();
        assert!(st.success(), "mkfs.ext4");
        let dir = tempfile::tempdir().unwrap();
        let st = std::process::Command::new("mount")
            .args(["-o", "loop"])
            .arg(backing.path())
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(st.success(), "mount ext4");
        Ext4 {
            dir,
            _backing: backing,
        }
    }

    /// A path inside the filesystem.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

/// A free loopback port (bound, then released for a server to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
