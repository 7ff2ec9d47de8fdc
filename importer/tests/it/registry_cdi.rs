//! `diskimport import` with IMPORTER_SOURCE=registry: CDI's contract
//! (content type, endpoint forms, credentials, CA directory, messages the
//! controller and CDI's tests match, labels from the image's Env).

use crate::common::{free_port, sh, tmp};
use crate::import::Pod;
use crate::oci::{disk_tar, push, registries, tar, write_image, Image, Layer};
use crate::registry::{disk, multi_arch};

const PREFIX: &str =
    "Unable to process data: Unable to transfer source data to scratch space: Failed to read registry image: ";

#[test]
fn cdi_registry_import_converts_labels_and_keeps_cdi_messages() {
    let Some(reg) = registries() else { return };
    let d = tmp();
    let lay = d.path().join("lay");
    let (a, b) = multi_arch(&lay);
    let multi = push(&lay, "multi", "cdi-multi:latest", &["--all"]);
    let base = [
        ("IMPORTER_SOURCE", "registry"),
        ("IMPORTER_CONTENTTYPE", "kubevirt"),
        ("INSECURE_TLS", "true"),
    ];
    let with = |extra: &[(&'static str, &str)]| {
        let mut e: Vec<(&str, String)> = base.iter().map(|(k, v)| (*k, v.to_string())).collect();
        e.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        e
    };
    let run = |pod: &Pod, env: Vec<(&str, String)>| {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        pod.run(&env)
    };
    // Pod pull, no scratch, labels from the chosen platform's Env.
    let pod = Pod::new();
    let out = run(
        &pod,
        with(&[
            ("IMPORTER_ENDPOINT", &multi),
            ("IMPORTER_REGISTRY_IMAGE_ARCHITECTURE", "arm64"),
        ]),
    );
    let v = pod.json(&out);
    assert_eq!(v["message"], "Import Complete");
    assert_eq!(v["scratchSpaceRequired"], false);
    assert_eq!(v["labels"]["test.kubevirt.io/test"], "testvalue");
    assert!(std::fs::read(pod.disk()).unwrap() == b.raw);
    pod.assert_no_scratch();
    let pod = Pod::new();
    let out = run(
        &pod,
        with(&[
            ("IMPORTER_ENDPOINT", &multi),
            ("IMPORTER_REGISTRY_IMAGE_ARCHITECTURE", "amd64"),
        ]),
    );
    assert_eq!(pod.json(&out)["message"], "Import Complete");
    assert!(std::fs::read(pod.disk()).unwrap() == a.raw);
    // The multi-arch e2e message, exactly.
    let pod = Pod::new();
    let out = run(
        &pod,
        with(&[
            ("IMPORTER_ENDPOINT", &multi),
            ("IMPORTER_REGISTRY_IMAGE_ARCHITECTURE", "absent"),
        ]),
    );
    let t = pod.outcome(&out, 1);
    let want = format!("{PREFIX}Error retrieving image: choosing image instance: no image found in image index for architecture \"absent\", variant \"\", OS \"linux\"");
    assert!(t.starts_with(&want), "{t}");
    assert!(!pod.disk().exists());
    // ImagePullFailed: the controller matches "failed to pull image".
    let pod = Pod::new();
    let wrong = format!("docker://127.0.0.1:{}/cdi-multi:wrongtag", reg.plain);
    let out = run(&pod, with(&[("IMPORTER_ENDPOINT", &wrong)]));
    let t = pod.outcome(&out, 1);
    assert!(
        t.starts_with(PREFIX) && t.contains("failed to pull image: reading manifest wrongtag in"),
        "{t}"
    );
    assert!(t.contains("manifest unknown"), "{t}");
    // Only kubevirt content: anything else exits 1 without a message.
    let pod = Pod::new();
    let mut env = with(&[("IMPORTER_ENDPOINT", &multi)]);
    env[1].1 = "archive".into();
    let out = run(&pod, env);
    assert_eq!(out.status.code(), Some(1));
    assert!(pod.termination().is_none());
    // A bad endpoint.
    let pod = Pod::new();
    let out = run(&pod, with(&[("IMPORTER_ENDPOINT", "invalid")]));
    let t = pod.outcome(&out, 1);
    assert!(
        t.contains("Invalid image name \"invalid\"")
            && t.contains("colon-separated transport:reference"),
        "{t}"
    );
}

#[test]
fn cdi_registry_import_with_ca_pem_credentials_and_cdi_failure_texts() {
    let Some(reg) = registries() else { return };
    let d = tmp();
    let l = d.path().join("one");
    let c = disk(20);
    write_image(
        &l,
        Some("gz"),
        &Image::new(vec![Layer::gz(&disk_tar("c.qcow2", &c.qcow2))]),
    );
    let mut boot = Image::new(vec![Layer::gz(&disk_tar("c.qcow2", &c.qcow2))]);
    boot.labels = serde_json::json!({"ostree.bootable": "1"});
    write_image(&l, Some("bootc"), &boot);
    write_image(
        &l,
        Some("empty"),
        &Image::new(vec![Layer::gz(&tar(&[("etc/hosts", b'0', b"x", "")]))]),
    );
    push(&l, "gz", "cdi-tls:gz", &[]);
    let pod = Pod::new();
    // /certs holds a .pem (CDI e2e: "should succeed to import from
    // registry with .pem certificate").
    let certs = pod.root().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(reg.pki.ca_dir.join("ca.pem"), certs.join("ca.pem")).unwrap();
    let ep = format!("docker://127.0.0.1:{}/cdi-tls:gz", reg.tls);
    let env = |user: &'static str, pw: &'static str| {
        vec![
            ("IMPORTER_SOURCE", "registry"),
            ("IMPORTER_CONTENTTYPE", "kubevirt"),
            ("IMPORTER_CERT_DIR", "/certs"),
            ("IMPORTER_ACCESS_KEY_ID", user),
            ("IMPORTER_SECRET_KEY", pw),
        ]
    };
    let mut e = env("admin", "password");
    e.push(("IMPORTER_ENDPOINT", &ep));
    let out = pod.run(&e);
    assert_eq!(pod.json(&out)["message"], "Import Complete");
    assert!(std::fs::read(pod.disk()).unwrap() == c.raw);
    let pod2 = Pod::new();
    std::fs::create_dir_all(pod2.root().join("certs")).unwrap();
    std::fs::copy(certs.join("ca.pem"), pod2.root().join("certs/ca.pem")).unwrap();
    let mut e = env("admin", "wrong");
    e.push(("IMPORTER_ENDPOINT", &ep));
    let out = pod2.run(&e);
    let t = pod2.outcome(&out, 1);
    assert!(
        t.starts_with(PREFIX) && t.contains("failed to pull image"),
        "{t}"
    );
    // No CA: fails without INSECURE_TLS (e2e "should fail no certs").
    let pod3 = Pod::new();
    let mut e = env("admin", "password");
    e.retain(|(k, _)| *k != "IMPORTER_CERT_DIR");
    e.push(("IMPORTER_ENDPOINT", &ep));
    let out = pod3.run(&e);
    assert!(pod3.outcome(&out, 1).contains("failed to pull image"));
    // bootc and no-disk images, from an oci-archive (CDI's unit tests).
    let a = d.path().join("one.tar");
    sh(
        "tar",
        &[
            "-C",
            &l.display().to_string(),
            "-cf",
            &a.display().to_string(),
            ".",
        ],
    );
    for (tag, want) in [
        ("bootc", "bootc image detected: this image contains an ostree-based bootable OS (containers.bootc=1 or ostree.bootable=1) and cannot be imported as a regular container disk; bootc-to-disk conversion is not yet implemented"),
        ("empty", "Failed to find VM disk image file in the container image"),
    ] {
        let pod = Pod::new();
        let ep = format!("oci-archive:{}:{tag}", a.display());
        let out = pod.run(&[("IMPORTER_SOURCE", "registry"), ("IMPORTER_CONTENTTYPE", "kubevirt"), ("IMPORTER_ENDPOINT", &ep)]);
        let t = pod.outcome(&out, 1);
        assert!(t.starts_with(PREFIX) && t.contains(want), "{tag}: {t}");
        assert!(!pod.disk().exists());
    }
}

// ---------------------------------------------------------------------
// Node pull: the static server inside an otherwise empty root.

/// Builds `diskimport-serve-image` statically (glibc's static libc; the
/// crate uses the standard library only), once per test run.
fn static_server() -> std::path::PathBuf {
    static BIN: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let ws = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let host = String::from_utf8(
            std::process::Command::new("rustc")
                .arg("-vV")
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .unwrap();
        let target_dir = ws.join("target/static");
        let out = std::process::Command::new(env!("CARGO"))
            .current_dir(&ws)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .args([
                "build",
                "--release",
                "-p",
                "serveimage",
                "--bin",
                "diskimport-serve-image",
                "--target",
                &host,
            ])
            .arg("--target-dir")
            .arg(&target_dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        target_dir
            .join(&host)
            .join("release/diskimport-serve-image")
    })
    .clone()
}

#[test]
fn node_pull_serves_the_disk_from_an_otherwise_empty_root() {
    if !crate::common::privileged() {
        return;
    }
    let c = disk(30);
    let pod = Pod::new();
    let root = pod.root();
    // The image's file system: /disk/<file> and the shared volume; the
    // server is copied in as CDI's init container does. No libc, no shell.
    std::fs::create_dir_all(root.join("disk")).unwrap();
    std::fs::create_dir_all(root.join("shared")).unwrap();
    std::fs::write(root.join("disk/cirros.qcow2"), &c.qcow2).unwrap();
    std::fs::copy(static_server(), root.join("server")).unwrap();
    let port = free_port();
    // Found on our PATH: the server's environment is cleared below.
    let chroot = ["/usr/sbin/chroot", "/usr/bin/chroot", "/sbin/chroot"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("chroot");
    let mut server = std::process::Command::new(chroot)
        .arg(root)
        .args(["/server", "-p", &port.to_string(), "-image-dir", "/disk"])
        .args(["-ready-file", "/shared/ready", "-done-file", "/shared/done"])
        .env_clear()
        .env("TEST_KUBEVIRT_IO_TEST", "nodevalue")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let ready = root.join("shared/ready");
    for _ in 0..100 {
        if ready.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(std::fs::read_to_string(&ready).unwrap(), "cirros.qcow2");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&ready).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Ranges as nbdkit-curl and our range reader use them.
    let url = format!("http://127.0.0.1:{port}/cirros.qcow2");
    let part = std::process::Command::new("curl")
        .args(["-sf", "-r", "100-199", &url])
        .output()
        .unwrap();
    assert_eq!(part.stdout, c.qcow2[100..200]);
    let headers = std::process::Command::new("curl")
        .args(["-sfI", &url])
        .output()
        .unwrap();
    let h = String::from_utf8_lossy(&headers.stdout).to_lowercase();
    assert!(
        h.contains("accept-ranges: bytes") && h.contains("last-modified:"),
        "{h}"
    );
    assert!(
        h.contains(&format!("content-length: {}", c.qcow2.len())),
        "{h}"
    );
    // The importer, as CDI's node-pull pod runs it.
    let ep = format!("http://localhost:{port}/disk.img");
    let out = pod.run(&[
        ("IMPORTER_SOURCE", "http"),
        ("IMPORTER_CONTENTTYPE", "kubevirt"),
        ("IMPORTER_ENDPOINT", &ep),
        ("IMPORTER_PULL_METHOD", "node"),
        ("IMPORTER_READY_FILE", "/shared/ready"),
        ("IMPORTER_DONE_FILE", "/shared/done"),
    ]);
    let v = pod.json(&out);
    assert_eq!(v["message"], "Import Complete");
    assert_eq!(v["labels"]["test.kubevirt.io/test"], "nodevalue");
    assert!(std::fs::read(pod.disk()).unwrap() == c.raw);
    // The done file stops the server: exit 0, done and ready files gone.
    let mut status = None;
    for _ in 0..60 {
        if let Some(s) = server.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let status = status.unwrap_or_else(|| {
        let _ = server.kill();
        panic!("the server did not stop after the done file")
    });
    assert!(status.success());
    assert!(!root.join("shared/done").exists() && !ready.exists());
    let mut listing = String::new();
    std::io::Read::read_to_string(server.stdout.as_mut().unwrap(), &mut listing).unwrap();
    assert_eq!(listing, "/disk\n/disk/cirros.qcow2\n");
}

#[test]
fn node_pull_server_refuses_images_it_cannot_serve() {
    let d = tmp();
    let bin = static_server();
    let run = |dir: &std::path::Path, root: &std::path::Path| {
        std::process::Command::new(&bin)
            .args(["-p", &free_port().to_string(), "-image-dir"])
            .arg(dir)
            .args(["-root"])
            .arg(root)
            .arg("-ready-file")
            .arg(d.path().join("ready"))
            .output()
            .unwrap()
    };
    let two = d.path().join("two");
    std::fs::create_dir_all(&two).unwrap();
    std::fs::write(two.join("a"), b"a").unwrap();
    std::fs::write(two.join("b"), b"b").unwrap();
    let out = run(&two, d.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Invalid container image"));
    assert!(!d.path().join("ready").exists());
    let boot = d.path().join("boot");
    std::fs::create_dir_all(boot.join("ostree")).unwrap();
    std::fs::remove_file(two.join("b")).unwrap();
    let out = run(&two, &boot);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bootc image detected"));
}
