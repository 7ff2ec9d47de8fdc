//! The registry source (issue 11): container disks from OCI layouts
//! (`oci:`, `oci-archive:`) and from Debian's docker-registry
//! (`docker://`), plain, TLS with Basic auth, and Bearer tokens; output
//! compared with `qemu-img convert` of the disk file; the hostile cases
//! T01-T20 and R01-R15 of docs/registry.md through layouts (here), a real
//! registry and mock ones (registry_net.rs), and `import` (registry_cdi.rs).

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::{fails, ok, path, run, sh, tmp, xz};
use crate::net::{FaultServer, Reply};
use crate::oci::{
    disk_tar, sha256, tar, write_image, write_index, write_manifest, Image, Layer, OCI_MANIFEST,
};

/// A qcow2 disk and what `qemu-img convert -O raw` makes of it.
pub(crate) struct Disk {
    pub(crate) qcow2: Vec<u8>,
    pub(crate) raw: Vec<u8>,
}

/// A 4 MiB disk whose content depends on `seed` (so which one was chosen
/// is visible), as qcow2, with the oracle's raw conversion.
pub(crate) fn disk(seed: u8) -> Disk {
    let d = tmp();
    let mut raw = vec![0u8; 4 << 20];
    for (i, b) in raw[(1 << 20)..(1 << 20) + 65536].iter_mut().enumerate() {
        *b = seed.wrapping_add((i % 251) as u8);
    }
    raw[3 << 20..(3 << 20) + 23].copy_from_slice(b"DISKIMPORT-TEST-PATTERN");
    let r = path(d.path(), "in.raw");
    std::fs::write(&r, &raw).unwrap();
    let q = path(d.path(), "d.qcow2");
    sh("qemu-img", &["convert", "-f", "raw", "-O", "qcow2", &r, &q]);
    let o = path(d.path(), "oracle.raw");
    sh("qemu-img", &["convert", "-f", "qcow2", "-O", "raw", &q, &o]);
    Disk {
        qcow2: std::fs::read(&q).unwrap(),
        raw: std::fs::read(&o).unwrap(),
    }
}

pub(crate) fn convert(src: &str, dir: &Path, extra: &[&str]) -> (Output, PathBuf) {
    let out = dir.join("out.raw");
    let _ = std::fs::remove_file(&out);
    let mut args = vec!["convert", "--no-progress"];
    args.extend_from_slice(extra);
    let target = out.display().to_string();
    args.push(src);
    args.push(&target);
    (run(&args), out)
}

pub(crate) fn converts_to(src: &str, dir: &Path, extra: &[&str], expected: &[u8]) {
    let (o, out) = convert(src, dir, extra);
    ok(&o);
    assert!(
        std::fs::read(&out).unwrap() == expected,
        "{src}: content differs from qemu-img's"
    );
}

pub(crate) fn refused(src: &str, dir: &Path, extra: &[&str], kind: &str, needle: &str) {
    let (o, out) = convert(src, dir, extra);
    fails(&o, kind, needle);
    assert!(!out.exists(), "{src}: a failed import left a target");
}

pub(crate) fn layout_with(layers: Vec<Layer>) -> (tempfile::TempDir, String) {
    let d = tmp();
    let lay = d.path().join("lay");
    write_image(&lay, Some("t"), &Image::new(layers));
    let src = format!("oci:{}:t", lay.display());
    (d, src)
}

#[test]
fn oci_layout_made_by_umoci_converts_like_qemu_img() {
    let disk = disk(1);
    let d = tmp();
    let f = d.path().join("d.qcow2");
    std::fs::write(&f, &disk.qcow2).unwrap();
    let lay = d.path().join("U");
    let l = lay.display().to_string();
    sh("umoci", &["init", "--layout", &l]);
    sh("umoci", &["new", "--image", &format!("{l}:latest")]);
    sh(
        "umoci",
        &[
            "insert",
            "--image",
            &format!("{l}:latest"),
            &f.display().to_string(),
            "/disk/disk.qcow2",
        ],
    );
    sh(
        "umoci",
        &[
            "config",
            "--image",
            &format!("{l}:latest"),
            "--architecture",
            "amd64",
            "--os",
            "linux",
        ],
    );
    converts_to(&format!("oci:{l}:latest"), d.path(), &[], &disk.raw);
    // One image in the layout: the name may be left out.
    converts_to(&format!("oci:{l}"), d.path(), &[], &disk.raw);
    // The same layout as a tar (oci-archive:), read in place.
    let a = d.path().join("u.tar");
    sh("tar", &["-C", &l, "-cf", &a.display().to_string(), "."]);
    converts_to(
        &format!("oci-archive:{}:latest", a.display()),
        d.path(),
        &[],
        &disk.raw,
    );
    // A checksum covers the disk file as stored in the image.
    let sum = format!("sha256:{}", &sha256(&disk.qcow2)[7..]);
    converts_to(
        &format!("oci:{l}"),
        d.path(),
        &["--checksum", &sum],
        &disk.raw,
    );
    let wrong = format!("sha256:{}", "0".repeat(64));
    refused(
        &format!("oci:{l}"),
        d.path(),
        &["--checksum", &wrong],
        "integrity",
        "Checksum validation failed",
    );
}

#[test]
fn layer_compression_is_found_by_magic_for_gzip_zstd_xz_and_none() {
    let disk = disk(2);
    let t = disk_tar("disk.qcow2", &disk.qcow2);
    let mut mislabelled = Layer::plain(&t);
    mislabelled.media = crate::oci::TAR_GZ.into(); // T19: says gzip, is plain
    let mut xz_layer = Layer::plain(&xz(&t));
    xz_layer.media = "application/vnd.oci.image.layer.v1.tar+xz".into();
    for layer in [
        Layer::gz(&t),
        Layer::zst(&t),
        Layer::plain(&t),
        mislabelled,
        xz_layer,
    ] {
        let (d, src) = layout_with(vec![layer]);
        converts_to(&src, d.path(), &[], &disk.raw);
    }
    // The disk file may itself be compressed: peeled by the pipeline.
    let raw = disk.raw.clone();
    let (d, src) = layout_with(vec![Layer::gz(&disk_tar("disk.img.xz", &xz(&raw)))]);
    converts_to(&src, d.path(), &[], &raw);
}

#[test]
fn info_names_the_image_platform_layer_and_disk_file() {
    let disk = disk(3);
    let (d, src) = layout_with(vec![Layer::gz(&disk_tar("fedora.qcow2", &disk.qcow2))]);
    let out = ok(&run(&["info", "--output", "json", &src]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["format"], "qcow2");
    assert_eq!(v["virtual_size"], 4 << 20);
    assert_eq!(v["image"]["file"], "disk/fedora.qcow2");
    assert_eq!(v["image"]["file_size"], disk.qcow2.len());
    assert_eq!(v["image"]["platform"]["architecture"], "amd64");
    let idx: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.path().join("lay/index.json")).unwrap()).unwrap();
    assert_eq!(v["image"]["manifest_digest"], idx["manifests"][0]["digest"]);
    assert_eq!(v["image"]["env"][0], "TEST_KUBEVIRT_IO_TEST=testvalue");
}

/// T01-T20 through an OCI layout, each with its required outcome.
#[test]
fn hostile_layers_get_the_required_outcome() {
    let disk = disk(4);
    let q = &disk.qcow2[..];
    let dir = |n: &'static str| (n, b'5', &b""[..], "");
    let file = |n: &'static str| (n, b'0', q, "");
    let ok_cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("T01 one file", vec![disk_tar("disk.img", q)]),
        (
            "T02 ./disk/",
            vec![tar(&[dir("./disk/"), ("./disk/disk.img", b'0', q, "")])],
        ),
        (
            "T04 outside names ignored",
            vec![tar(&[
                file("disk.img"),
                file("disks/x"),
                file("x/../disk/a"),
                dir("disk/"),
                file("disk/disk.img"),
            ])],
        ),
        // Layers are listed base first: the upper one deletes the lower file.
        (
            "T08 whiteout hides the lower file",
            vec![
                tar(&[dir("disk/"), file("disk/old.img")]),
                tar(&[
                    dir("disk/"),
                    ("disk/.wh.old.img", b'0', b"", ""),
                    file("disk/new.img"),
                ]),
            ],
        ),
        (
            "T09 opaque whiteout hides the lower directory",
            vec![
                tar(&[dir("disk/"), file("disk/a.img"), file("disk/b.img")]),
                tar(&[
                    dir("disk/"),
                    ("disk/.wh..wh..opq", b'0', b"", ""),
                    file("disk/c.img"),
                ]),
            ],
        ),
        (
            "upper file replaces the lower one of the same name",
            vec![
                tar(&[dir("disk/"), ("disk/disk.img", b'0', b"old bytes", "")]),
                disk_tar("disk.img", q),
            ],
        ),
        (
            "disk in the lower layer, other files above",
            vec![
                disk_tar("disk.img", q),
                tar(&[dir("etc/"), ("etc/hosts", b'0', b"127.0.0.1 x\n", "")]),
            ],
        ),
    ];
    for (name, layers) in ok_cases {
        let (d, src) = layout_with(layers.iter().map(|t| Layer::gz(t)).collect());
        let (o, out) = convert(&src, d.path(), &[]);
        assert!(
            o.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            std::fs::read(out).unwrap() == disk.raw,
            "{name}: wrong content"
        );
    }
    let long = format!("disk/{}.img", "n".repeat(300));
    let t14 = {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(q.len() as u64);
        h.set_mode(0o440);
        b.append_data(&mut h, &long, q).unwrap();
        b.into_inner().unwrap()
    };
    let (d, src) = layout_with(vec![Layer::gz(&t14)]);
    converts_to(&src, d.path(), &[], &disk.raw);

    let bad: Vec<(&str, Vec<Vec<u8>>, &str, &str)> = vec![
        (
            "T03",
            vec![tar(&[("disk/../../x", b'0', q, "")])],
            "unsafe",
            "unsafe path",
        ),
        (
            "T05",
            vec![tar(&[
                dir("disk/"),
                ("disk/disk.img", b'2', b"", "/etc/passwd"),
            ])],
            "unsafe",
            "symlink",
        ),
        (
            "T06",
            vec![tar(&[file("x"), ("disk/disk.img", b'1', b"", "x")])],
            "unsafe",
            "hard link",
        ),
        (
            "T07 char",
            vec![tar(&[("disk/d", b'3', b"", "")])],
            "unsafe",
            "device",
        ),
        (
            "T07 fifo",
            vec![tar(&[("disk/d", b'6', b"", "")])],
            "unsafe",
            "FIFO",
        ),
        (
            "T08 nothing left",
            vec![
                disk_tar("disk.img", q),
                tar(&[("disk/.wh.disk.img", b'0', b"", "")]),
            ],
            "format",
            "Failed to find VM disk image file in the container image",
        ),
        (
            "T10",
            vec![tar(&[dir("disk/"), ("etc/hosts", b'0', b"x", "")])],
            "format",
            "Failed to find VM disk image file",
        ),
        (
            "T10 only outside",
            vec![tar(&[file("disk.img")])],
            "format",
            "Failed to find VM disk image file",
        ),
        (
            "T11 one layer",
            vec![tar(&[file("disk/a.img"), file("disk/b.img")])],
            "format",
            "multiple disk files under disk/: disk/a.img, disk/b.img",
        ),
        (
            "T11 two layers",
            vec![disk_tar("a.img", q), disk_tar("b.img", q)],
            "format",
            "multiple disk files",
        ),
        (
            "T12",
            vec![tar(&[file("disk/a.img"), file("disk/a.img")])],
            "format",
            "twice",
        ),
        (
            "nested directory",
            vec![tar(&[file("disk/sub/x.img")])],
            "format",
            "contains another directory",
        ),
        (
            "T18 not a tar",
            vec![vec![0x5a; 4096]],
            "format",
            "Error reading layer",
        ),
    ];
    for (name, layers, kind, needle) in bad {
        let (d, src) = layout_with(layers.iter().map(|t| Layer::gz(t)).collect());
        let (o, out) = convert(&src, d.path(), &[]);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{name}: accepted");
        assert!(
            stderr.contains(&format!("error[{kind}]")) && stderr.contains(needle),
            "{name}: {stderr}"
        );
        assert!(!out.exists(), "{name}: left a target");
    }
    // T15: a sparse entry is refused by the tar guard.
    let mut sparse = disk_tar("disk.img", q);
    sparse[156] = b'S';
    let h = &mut sparse[..512];
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    let (d, src) = layout_with(vec![Layer::gz(&sparse)]);
    let (o, _) = convert(&src, d.path(), &[]);
    assert!(!o.status.success(), "T15 sparse accepted");
    // T16: a layer cut short: its size and digest no longer match.
    let (d, src) = layout_with(vec![Layer::gz(&disk_tar("disk.img", q))]);
    let lay = d.path().join("lay");
    let m: serde_json::Value = {
        let idx: serde_json::Value =
            serde_json::from_slice(&std::fs::read(lay.join("index.json")).unwrap()).unwrap();
        let md = idx["manifests"][0]["digest"].as_str().unwrap().to_owned();
        serde_json::from_slice(&std::fs::read(lay.join("blobs/sha256").join(&md[7..])).unwrap())
            .unwrap()
    };
    let ld = m["layers"][0]["digest"].as_str().unwrap();
    let blob = lay.join("blobs/sha256").join(&ld[7..]);
    let b = std::fs::read(&blob).unwrap();
    std::fs::write(&blob, &b[..b.len() / 2]).unwrap();
    refused(&src, d.path(), &[], "truncated", "Error reading layer");
    // R06 locally: one byte changed, same length.
    let mut b2 = b.clone();
    let n = b2.len();
    b2[n - 10] ^= 0xff;
    std::fs::write(&blob, &b2).unwrap();
    let (o, out) = convert(&src, d.path(), &[]);
    assert!(
        !o.status.success() && !out.exists(),
        "R06: tampered layer accepted"
    );
}

#[test]
fn disk_larger_than_the_target_is_refused_before_streaming() {
    // T17: a raw disk file whose tar size says 64 MiB into 1 MiB.
    let raw = vec![7u8; 64 << 20];
    let (d, src) = layout_with(vec![Layer::gz(&disk_tar("disk.img", &raw))]);
    refused(&src, d.path(), &["--target-size", "1Mi"], "size", "");
}

#[test]
fn manifests_are_refused_when_hostile() {
    let disk = disk(5);
    let d = tmp();
    let lay = d.path().join("lay");
    // R15: a digest with path characters.
    let m = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "x", "digest": "sha256:../../../etc/passwd", "size": 10}, "layers": []});
    write_manifest(&lay, Some("r15"), &m, "amd64");
    refused(
        &format!("oci:{}:r15", lay.display()),
        d.path(),
        &[],
        "format",
        "invalid digest",
    );
    // R11: schema 1.
    let m = serde_json::json!({"schemaVersion": 1, "name": "x", "tag": "y", "fsLayers": []});
    write_manifest(&lay, Some("r11"), &m, "amd64");
    refused(
        &format!("oci:{}:r11", lay.display()),
        d.path(),
        &[],
        "unsupported",
        "schema 1",
    );
    // R12: more layers than the bound.
    let t = disk_tar("d.img", &disk.qcow2);
    let layers = vec![Layer::gz(&t); 257];
    write_image(&lay, Some("r12"), &Image::new(layers));
    refused(
        &format!("oci:{}:r12", lay.display()),
        d.path(),
        &[],
        "limit",
        "257 layers",
    );
    // R13: bootc.
    let mut img = Image::new(vec![Layer::gz(&t)]);
    img.labels = serde_json::json!({"containers.bootc": "1"});
    write_image(&lay, Some("r13"), &img);
    refused(
        &format!("oci:{}:r13", lay.display()),
        d.path(),
        &[],
        "unsupported",
        "bootc image detected: this image contains an ostree-based bootable OS",
    );
    // T20: an encrypted layer.
    let mut l = Layer::gz(&t);
    l.media = "application/vnd.oci.image.layer.v1.tar+gzip+encrypted".into();
    write_image(&lay, Some("t20"), &Image::new(vec![l]));
    refused(
        &format!("oci:{}:t20", lay.display()),
        d.path(),
        &[],
        "unsupported",
        "encrypted",
    );
    // A name the layout does not have.
    refused(
        &format!("oci:{}:nope", lay.display()),
        d.path(),
        &[],
        "source",
        "no image named",
    );
}

/// A layout holding one image per architecture (different disks) under
/// an index tagged `multi`, and a single-arch amd64 image tagged `single`.
pub(crate) fn multi_arch(lay: &Path) -> (Disk, Disk) {
    let (a, b) = (disk(10), disk(11));
    let ma = write_image(
        lay,
        None,
        &Image::new(vec![Layer::gz(&disk_tar("d.qcow2", &a.qcow2))]),
    );
    let mb = write_image(
        lay,
        None,
        &Image::new(vec![Layer::gz(&disk_tar("d.qcow2", &b.qcow2))]).arch("arm64"),
    );
    write_index(lay, "multi", &[ma, mb]);
    write_image(
        lay,
        Some("single"),
        &Image::new(vec![Layer::gz(&disk_tar("d.qcow2", &a.qcow2))]),
    );
    (a, b)
}

#[test]
fn platform_is_chosen_from_an_index_with_cdi_messages() {
    let d = tmp();
    let lay = d.path().join("lay");
    let (a, b) = multi_arch(&lay);
    let l = lay.display();
    converts_to(
        &format!("oci:{l}:multi"),
        d.path(),
        &["--platform", "linux/amd64"],
        &a.raw,
    );
    converts_to(
        &format!("oci:{l}:multi"),
        d.path(),
        &["--platform", "arm64"],
        &b.raw,
    );
    refused(
        &format!("oci:{l}:multi"),
        d.path(),
        &["--platform", "absent"],
        "source",
        "choosing image instance: no image found in image index for architecture \"absent\", variant \"\", OS \"linux\"",
    );
    refused(
        &format!("oci:{l}:single"),
        d.path(),
        &["--platform", "arm64"],
        "source",
        "Error validating architecture: manifest image architecture: \"amd64\" doesn't match requested architecture: \"arm64\"",
    );
}

/// A registry answering with a handler: `/v2/` and whatever `f` serves.
pub(crate) fn mock(f: impl Fn(&str) -> Reply + Send + Sync + 'static) -> FaultServer {
    FaultServer::start(move |req, _| {
        if req.path == "/v2/" {
            return Reply::new(200).body(b"{}".to_vec());
        }
        f(&req.path)
    })
}

pub(crate) fn blob_of(lay: &Path, digest: &str) -> Vec<u8> {
    std::fs::read(lay.join("blobs/sha256").join(&digest[7..])).unwrap()
}

/// A layout with one untagged single-layer image of `disk(seed)`: the
/// directory, the layout, the disk and the manifest descriptor.
pub(crate) fn one_image(seed: u8) -> (tempfile::TempDir, PathBuf, Disk, serde_json::Value) {
    let d = tmp();
    let lay = d.path().join("lay");
    let c = disk(seed);
    let desc = write_image(
        &lay,
        None,
        &Image::new(vec![Layer::gz(&disk_tar("c.qcow2", &c.qcow2))]),
    );
    (d, lay, c, desc)
}

#[test]
fn cdi_peer_bootc_image_is_refused_with_cdis_message() {
    // CDI's own test image (fixtures/peer-images/README.md).
    let d = tmp();
    let img = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/peer-images/bootc-registry-image.tar");
    refused(
        &format!("oci-archive:{}", img.display()),
        d.path(),
        &[],
        "unsupported",
        "bootc image detected: this image contains an ostree-based bootable OS (containers.bootc=1 or ostree.bootable=1)",
    );
}

#[test]
fn t13_pax_size_wins_over_the_ustar_size_and_entries_stay_in_step() {
    // A PAX `size` record for the disk entry whose ustar size field says 0:
    // the PAX size is the entry's size (as Go's archive/tar reads it), and
    // the entry after it is found where it really starts.
    let c = disk(60);
    let record = format!("{} size={}\n", 0, c.qcow2.len());
    // A PAX record's length counts itself: "NN size=...\n".
    let body_len = record.len() - 1;
    let mut len = body_len + body_len.to_string().len();
    if (len.to_string().len()) != body_len.to_string().len() {
        len += 1;
    }
    let record = format!("{len} size={}\n", c.qcow2.len());
    assert_eq!(record.len(), len);
    let mut t = crate::import::tar_header("./PaxHeaders/disk.img", b'x', record.len(), 0o644, "");
    t.extend_from_slice(record.as_bytes());
    t.resize(t.len().div_ceil(512) * 512, 0);
    t.extend(crate::import::tar_header(
        "disk/disk.img",
        b'0',
        0,
        0o440,
        "",
    ));
    t.extend_from_slice(&c.qcow2);
    t.resize(t.len().div_ceil(512) * 512, 0);
    // An entry after it: found only if the boundaries were kept.
    t.extend(crate::import::tar_header("etc/hosts", b'0', 2, 0o644, ""));
    t.extend_from_slice(b"x\n");
    t.resize(t.len().div_ceil(512) * 512, 0);
    t.extend(vec![0u8; 1024]);
    let (d, src) = layout_with(vec![Layer::gz(&t)]);
    converts_to(&src, d.path(), &[], &c.raw);
}
