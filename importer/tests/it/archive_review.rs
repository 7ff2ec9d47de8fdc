//! Archive defects found by the outside review (issue 9, items 3-6 and the
//! PAX newline): each archive is served over HTTP and imported with the
//! `archive` content type, as CDI runs it.

use std::io::Write;
use std::path::Path;

use crate::import::{serve, tar, tar_header, Pod};

/// Imports `body` as an archive; returns the pod and its termination
/// message after asserting the exit code.
fn import(body: Vec<u8>, code: i32, extra: &[(&str, &str)]) -> (Pod, String) {
    let s = serve(body);
    let pod = Pod::new();
    let url = s.url("a.tar");
    let mut env = vec![
        ("IMPORTER_ENDPOINT", url.as_str()),
        ("IMPORTER_CONTENTTYPE", "archive"),
    ];
    env.extend_from_slice(extra);
    let out = pod.run(&env);
    let t = pod.outcome(&out, code);
    (pod, t)
}

/// Asserts a refusal whose message contains `needle` and an empty /data.
fn refused(what: &str, body: Vec<u8>, needle: &str) {
    let (pod, t) = import(body, 1, &[]);
    assert!(
        t.starts_with("Unable to process data: ") && t.contains(needle),
        "{what}: {t}"
    );
    let left: Vec<_> = std::fs::read_dir(pod.root().join("data"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{what}: data not cleaned: {left:?}");
}

/// A PAX extended header (`x`) holding `records`, as one tar member.
fn pax(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in records {
        let rest = [b" ".as_slice(), k.as_bytes(), b"=", v, b"\n"].concat();
        let mut n = rest.len() + 1;
        while n.to_string().len() + rest.len() != n {
            n += 1;
        }
        body.extend(n.to_string().into_bytes());
        body.extend(rest);
    }
    let mut out = tar_header("PaxHeaders/x", b'x', body.len(), 0o644, "");
    out.extend(body);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

#[test]
fn symlink_chains_cannot_lead_out_of_the_volume() {
    let s = |name: &'static str, to: &'static str| (name, b'2', b"".as_slice(), 0o777, to);
    // The review's chain: each text alone stays inside.
    refused(
        "b -> ., c -> b/..",
        tar(&[
            s("b", "."),
            s("c", "b/.."),
            s("esc", "c/outside/secret.txt"),
        ]),
        "symbolic link points outside the volume",
    );
    // Several hops: a/q -> p/a/p/.. where a/p -> .. (the root).
    refused(
        "three hops",
        tar(&[
            ("a/", b'5', b"", 0o755, ""),
            s("a/p", ".."),
            s("a/q", "p/a/p/.."),
        ]),
        "symbolic link points outside the volume",
    );
    // A later link changes what an earlier one means.
    refused(
        "c -> x/.. then x -> .",
        tar(&[s("c", "x/.."), s("x", ".")]),
        "symbolic link points outside the volume",
    );
    // A hard link copies a symlink's text into another directory.
    refused(
        "hard link to a symlink",
        tar(&[
            ("d/", b'5', b"", 0o755, ""),
            s("d/up", ".."),
            ("h", b'1', b"", 0o644, "d/up"),
        ]),
        "hard link to a symbolic link",
    );
    // Links to what comes later, and chains that stay inside, are fine.
    let (pod, t) = import(
        tar(&[
            s("lib", "usr/lib"),
            ("usr/lib/x.so", b'0', b"elf", 0o755, ""),
            ("a/", b'5', b"", 0o755, ""),
            s("a/p", ".."),
            s("a/q", "p/lib/x.so"),
        ]),
        0,
        &[],
    );
    assert!(t.contains("Import Complete"), "{t}");
    let data = pod.root().join("data");
    assert_eq!(std::fs::read(data.join("lib/x.so")).unwrap(), b"elf");
    assert_eq!(std::fs::read(data.join("a/q")).unwrap(), b"elf");
}

#[test]
fn pax_size_is_what_the_capacity_check_counts() {
    // 200 MiB whose size only the PAX header gives (the ustar field says
    // 0), into a 64 MiB volume: refused, not extracted.
    let big = 200usize << 20;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(&pax(&[("size", big.to_string().as_bytes())]))
        .unwrap();
    e.write_all(&tar_header("big.bin", b'0', 0, 0o644, ""))
        .unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..200 {
        e.write_all(&zeros).unwrap();
    }
    e.write_all(&[0u8; 1024]).unwrap();
    let body = e.finish().unwrap();
    let (pod, t) = import(body, 1, &[("IMPORTER_IMAGE_SIZE", "64Mi")]);
    assert!(
        t.contains("Archive content is larger than the reported available storage"),
        "{t}"
    );
    assert!(!pod.root().join("data/big.bin").exists());
}

#[test]
fn long_names_and_pax_records_are_bounded_before_they_are_read() {
    // A 512 MiB GNU long name (about 0.5 MB gzipped).
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(&tar_header("././@LongLink", b'L', 512 << 20, 0o644, ""))
        .unwrap();
    let chunk = vec![b'a'; 1 << 20];
    for _ in 0..512 {
        e.write_all(&chunk).unwrap();
    }
    e.write_all(&tar_header("f", b'0', 0, 0o644, "")).unwrap();
    e.write_all(&[0u8; 1024]).unwrap();
    refused(
        "512 MiB long name",
        e.finish().unwrap(),
        "tar long name of 536870912 bytes exceeds the limit",
    );
    // A 512 MiB PAX header (only its start is sent: the header alone is
    // refused).
    let mut t = tar_header("PaxHeaders/x", b'x', 512 << 20, 0o644, "");
    t.extend(b"30 comment=");
    t.resize(2 << 20, b'a');
    refused(
        "512 MiB PAX header",
        t,
        "tar PAX header of 536870912 bytes exceeds the limit",
    );
}

#[test]
fn pax_sparse_entries_are_refused_in_every_version() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("sparse.img");
    let file = std::fs::File::create(&f).unwrap();
    file.set_len(8 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, b"data", 4 << 20).unwrap();
    drop(file);
    for version in ["0.0", "0.1", "1.0"] {
        let out = dir.path().join(format!("s{version}.tar"));
        let st = std::process::Command::new("tar")
            .arg("--sparse")
            .arg(format!("--sparse-version={version}"))
            .args(["--format=pax", "-C"])
            .arg(dir.path())
            .arg("-cf")
            .arg(&out)
            .arg("sparse.img")
            .status()
            .unwrap();
        assert!(st.success());
        refused(
            &format!("PAX sparse {version}"),
            std::fs::read(&out).unwrap(),
            "sparse tar entries are not supported",
        );
    }
}

#[test]
fn pax_path_with_a_newline_is_refused_not_truncated() {
    let mut t = pax(&[("path", b"evil\nname.txt")]);
    t.extend(tar(&[("evil", b'0', b"x", 0o644, "")]));
    refused(
        "newline in PAX path",
        t,
        "PAX path holds a newline or NUL character",
    );
    assert!(!Path::new("evil").exists());
}
