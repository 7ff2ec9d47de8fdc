//! `diskimport import` with IMPORTER_SOURCE=registry: CDI's contract
//! (content type, endpoint forms, credentials, CA directory, messages the
//! controller and CDI's tests match, labels from the image's Env).

use crate::common::{sh, tmp};
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
