//! `diskimport containerdisk build|push` (issue 11, item 9): images read
//! back by independent tools (skopeo, umoci, GNU tar) and by our own
//! import, for every layer compression, several platforms in one index,
//! and pushes to plain, TLS+Basic and Bearer registries.

use std::path::Path;
use std::process::Command;

use crate::common::{ok, run, tmp};
use crate::oci::registries;
use crate::registry::{converts_to, disk};

fn tool(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The layer of a `dir:` copy made by skopeo, listed by GNU tar.
fn layer_listing(dir: &Path) -> String {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "one layer");
    let blob = dir.join(&layers[0]["digest"].as_str().unwrap()[7..]);
    tool(
        "tar",
        &["--numeric-owner", "-tvf", &blob.display().to_string()],
    )
}

#[test]
fn build_writes_archives_and_layouts_that_skopeo_umoci_and_import_read() {
    let d = tmp();
    let c = disk(40);
    let f = d.path().join("fedora.qcow2");
    std::fs::write(&f, &c.qcow2).unwrap();
    let fs = f.display().to_string();
    for (comp, out) in [("gzip", "a.tar"), ("zstd", "b.tar"), ("none", "c.tar")] {
        let out = d.path().join(out).display().to_string();
        let target = format!("oci-archive:{out}:v1");
        ok(&run(&[
            "containerdisk",
            "build",
            &fs,
            "--output",
            &target,
            "--compression",
            comp,
            "--env",
            "TEST_KUBEVIRT_IO_TEST=built",
            "--label",
            "org.example=1",
        ]));
        // skopeo reads it, with our config.
        let inspect: serde_json::Value =
            serde_json::from_str(&tool("skopeo", &["inspect", &target])).unwrap();
        assert_eq!(inspect["Labels"]["org.example"], "1");
        assert_eq!(inspect["Env"][0], "TEST_KUBEVIRT_IO_TEST=built");
        assert_eq!(inspect["Architecture"], "amd64");
        let copy = d.path().join(format!("copy-{comp}"));
        tool(
            "skopeo",
            &[
                "copy",
                "--quiet",
                &target,
                &format!("dir:{}", copy.display()),
            ],
        );
        // The layer: disk/ and the file, 107:107, mode 0440.
        let listing = layer_listing(&copy);
        let lines: Vec<&str> = listing.lines().collect();
        assert_eq!(lines.len(), 2, "{listing}");
        assert!(
            lines[0].starts_with("dr-xr-xr-x 107/107") && lines[0].ends_with(" disk/"),
            "{listing}"
        );
        assert!(
            lines[1].starts_with("-r--r----- 107/107") && lines[1].ends_with(" disk/fedora.qcow2"),
            "{listing}"
        );
        assert!(
            lines[1].contains(&format!(" {} ", c.qcow2.len())),
            "{listing}"
        );
        converts_to(&target, d.path(), &[], &c.raw);
    }
    // An oci: directory that umoci unpacks (as root: owners kept).
    let lay = d.path().join("lay");
    let target = format!("oci:{}:disk", lay.display());
    ok(&run(&["containerdisk", "build", &fs, "--output", &target]));
    converts_to(&target, d.path(), &[], &c.raw);
    if crate::common::privileged() {
        let bundle = d.path().join("bundle");
        let umoci_ref = format!("{}:disk", lay.display());
        tool(
            "umoci",
            &[
                "unpack",
                "--image",
                &umoci_ref,
                &bundle.display().to_string(),
            ],
        );
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(bundle.join("rootfs/disk/fedora.qcow2")).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (107, 107, 0o440));
        assert!(std::fs::read(bundle.join("rootfs/disk/fedora.qcow2")).unwrap() == c.qcow2);
    }
}

#[test]
fn multi_platform_images_choose_by_platform_everywhere() {
    let Some(reg) = registries() else { return };
    let d = tmp();
    let (a, b) = (disk(41), disk(42));
    let fa = d.path().join("a.qcow2");
    let fb = d.path().join("b.qcow2");
    std::fs::write(&fa, &a.qcow2).unwrap();
    std::fs::write(&fb, &b.qcow2).unwrap();
    let pa = format!("linux/amd64={}", fa.display());
    let pb = format!("linux/arm64={}", fb.display());
    let arch = d.path().join("multi.tar").display().to_string();
    let local = format!("oci-archive:{arch}");
    ok(&run(&[
        "containerdisk",
        "build",
        "--platform",
        &pa,
        "--platform",
        &pb,
        "--output",
        &local,
    ]));
    converts_to(&local, d.path(), &["--platform", "arm64"], &b.raw);
    converts_to(&local, d.path(), &["--platform", "amd64"], &a.raw);
    // Pushed: skopeo sees an index and picks as we do.
    let dest = format!("docker://127.0.0.1:{}/built-multi:v1", reg.plain);
    let out = ok(&run(&[
        "containerdisk",
        "push",
        "--insecure",
        "--platform",
        &pa,
        "--platform",
        &pb,
        &dest,
    ]));
    let _ = out;
    let raw: serde_json::Value = serde_json::from_str(&tool(
        "skopeo",
        &["inspect", "--raw", "--tls-verify=false", &dest],
    ))
    .unwrap();
    assert_eq!(raw["mediaType"], "application/vnd.oci.image.index.v1+json");
    let arm: serde_json::Value = serde_json::from_str(&tool(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            "--override-arch",
            "arm64",
            &dest,
        ],
    ))
    .unwrap();
    assert_eq!(arm["Architecture"], "arm64");
    converts_to(
        &dest,
        d.path(),
        &["--insecure", "--platform", "arm64"],
        &b.raw,
    );
    converts_to(
        &dest,
        d.path(),
        &["--insecure", "--platform", "amd64"],
        &a.raw,
    );
}

#[test]
fn push_authenticates_with_basic_and_bearer_registries() {
    let Some(reg) = registries() else { return };
    let d = tmp();
    let c = disk(43);
    let f = d.path().join("d.img.qcow2");
    std::fs::write(&f, &c.qcow2).unwrap();
    let fs = f.display().to_string();
    let pw = d.path().join("pw");
    std::fs::write(&pw, "password").unwrap();
    let pw = pw.display().to_string();
    let ca = reg.pki.ca_dir.display().to_string();
    let tls = format!("docker://127.0.0.1:{}/pushed:tls", reg.tls);
    ok(&run(&[
        "containerdisk",
        "push",
        "--cert-dir",
        &ca,
        "--username",
        "admin",
        "--password-file",
        &pw,
        &fs,
        &tls,
    ]));
    converts_to(
        &tls,
        d.path(),
        &[
            "--cert-dir",
            &ca,
            "--username",
            "admin",
            "--password-file",
            &pw,
        ],
        &c.raw,
    );
    let o = run(&["containerdisk", "push", "--cert-dir", &ca, &fs, &tls]);
    assert!(!o.status.success(), "pushed without credentials");
    let tok = format!("docker://127.0.0.1:{}/pushed:token", reg.token);
    ok(&run(&[
        "containerdisk",
        "push",
        "--insecure",
        "--username",
        "admin",
        "--password-file",
        &pw,
        &fs,
        &tok,
    ]));
    converts_to(
        &tok,
        d.path(),
        &["--insecure", "--username", "admin", "--password-file", &pw],
        &c.raw,
    );
    assert!(
        reg.token_log()
            .contains("scope=repository%3Apushed%3Apull%2Cpush"),
        "{}",
        reg.token_log()
    );
}
