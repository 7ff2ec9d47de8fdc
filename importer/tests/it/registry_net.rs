//! The registry source against Debian's docker-registry (plain, TLS with
//! Basic auth, Bearer tokens) and against mock registries for the hostile
//! cases a real one will not serve (R03, R05, R06, R08, R09, R10).

use crate::common::{ok, run, tmp};
use crate::net::{FaultServer, Reply};
use crate::oci::{disk_tar, push, registries, write_image, Image, Layer, OCI_MANIFEST};
use crate::registry::{blob_of, convert, converts_to, disk, mock, multi_arch, one_image, refused};

#[test]
fn registry_pulls_gzip_zstd_docker_v2s2_and_multi_arch_images() {
    let Some(reg) = registries() else { return };
    let d = tmp();
    let lay = d.path().join("lay");
    let (a, b) = multi_arch(&lay);
    let l = d.path().join("one");
    let c = disk(12);
    write_image(
        &l,
        Some("gz"),
        &Image::new(vec![Layer::gz(&disk_tar("c.qcow2", &c.qcow2))]),
    );
    write_image(
        &l,
        Some("zst"),
        &Image::new(vec![Layer::zst(&disk_tar("c.qcow2", &c.qcow2))]),
    );
    let ins = ["--insecure"];
    for (tag, repo, extra) in [
        ("gz", "one:gz", &[][..]),
        ("zst", "one:zst", &[][..]),
        ("gz", "one:v2s2", &["--format", "v2s2"][..]),
    ] {
        let dest = push(&l, tag, repo, extra);
        converts_to(&dest, d.path(), &ins, &c.raw);
    }
    let multi = push(&lay, "multi", "multi:latest", &["--all"]);
    converts_to(
        &multi,
        d.path(),
        &["--insecure", "--platform", "amd64"],
        &a.raw,
    );
    converts_to(
        &multi,
        d.path(),
        &["--insecure", "--platform", "linux/arm64"],
        &b.raw,
    );
    refused(
        &multi,
        d.path(),
        &["--insecure", "--platform", "absent"],
        "source",
        "no image found in image index for architecture \"absent\"",
    );
    let list = push(&lay, "multi", "multi:v2s2", &["--all", "--format", "v2s2"]);
    converts_to(
        &list,
        d.path(),
        &["--insecure", "--platform", "arm64"],
        &b.raw,
    );
    refused(
        &list,
        d.path(),
        &["--insecure", "--platform", "absent"],
        "source",
        "no image found in manifest list for architecture \"absent\"",
    );
    // R07: a tag the registry does not have.
    let missing = format!("docker://127.0.0.1:{}/one:wrongtag", reg.plain);
    refused(
        &missing,
        d.path(),
        &ins,
        "source",
        "failed to pull image: reading manifest wrongtag in 127.0.0.1:",
    );
    // By digest (R05 checked on the way).
    let info = ok(&run(&[
        "info",
        "--output",
        "json",
        "--insecure",
        &format!("docker://127.0.0.1:{}/one:gz", reg.plain),
    ]));
    let v: serde_json::Value = serde_json::from_str(&info).unwrap();
    let digest = v["image"]["manifest_digest"].as_str().unwrap().to_owned();
    converts_to(
        &format!("docker://127.0.0.1:{}/one@{digest}", reg.plain),
        d.path(),
        &ins,
        &c.raw,
    );
    // R14: plain http only when marked insecure.
    refused(
        &format!("docker://127.0.0.1:{}/one:gz", reg.plain),
        d.path(),
        &[],
        "source",
        "failed to pull image",
    );
}

#[test]
fn registry_tls_basic_auth_and_bearer_tokens() {
    let Some(reg) = registries() else { return };
    let d = tmp();
    let l = d.path().join("one");
    let c = disk(13);
    write_image(
        &l,
        Some("gz"),
        &Image::new(vec![Layer::gz(&disk_tar("c.qcow2", &c.qcow2))]),
    );
    // The three registries share one store.
    push(&l, "gz", "auth:gz", &[]);
    let pw = d.path().join("pw");
    std::fs::write(&pw, "password\n").unwrap();
    let bad = d.path().join("bad");
    std::fs::write(&bad, "wrong\n").unwrap();
    let ca = reg.pki.ca_dir.display().to_string();
    let (pw, bad) = (pw.display().to_string(), bad.display().to_string());
    let tls = format!("docker://127.0.0.1:{}/auth:gz", reg.tls);
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
    refused(
        &tls,
        d.path(),
        &[
            "--cert-dir",
            &ca,
            "--username",
            "admin",
            "--password-file",
            &bad,
        ],
        "auth",
        "failed to pull image",
    );
    refused(
        &tls,
        d.path(),
        &["--cert-dir", &ca],
        "auth",
        "failed to pull image",
    );
    // R14: without the CA the certificate is refused; --insecure skips it.
    refused(
        &tls,
        d.path(),
        &["--username", "admin", "--password-file", &pw],
        "source",
        "failed to pull image",
    );
    converts_to(
        &tls,
        d.path(),
        &["--insecure", "--username", "admin", "--password-file", &pw],
        &c.raw,
    );
    // R01/R02: Bearer realm; credentials only to the realm.
    let tok = format!("docker://127.0.0.1:{}/auth:gz", reg.token);
    converts_to(
        &tok,
        d.path(),
        &["--insecure", "--username", "admin", "--password-file", &pw],
        &c.raw,
    );
    assert!(
        reg.token_log().contains("scope=repository%3Aauth%3Apull"),
        "{}",
        reg.token_log()
    );
    refused(
        &tok,
        d.path(),
        &["--insecure", "--username", "admin", "--password-file", &bad],
        "auth",
        "token",
    );
    refused(
        &tok,
        d.path(),
        &["--insecure"],
        "auth",
        "failed to pull image",
    );
}

#[test]
fn hostile_registries_get_the_required_outcome() {
    let (d, lay, c, desc) = one_image(14);
    let md = desc["digest"].as_str().unwrap().to_owned();
    let manifest = blob_of(&lay, &md);
    let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let layer_digest = m["layers"][0]["digest"].as_str().unwrap().to_owned();
    let lay2 = lay.clone();
    let serve = move |tamper: bool, extra_manifest: Option<Vec<u8>>| {
        let (lay, md, manifest, ld) = (
            lay2.clone(),
            md.clone(),
            manifest.clone(),
            layer_digest.clone(),
        );
        mock(move |p| {
            if p.ends_with("/manifests/latest") || p.ends_with(&format!("/manifests/{md}")) {
                let body = extra_manifest.clone().unwrap_or_else(|| manifest.clone());
                return Reply::new(200)
                    .header("Content-Type", OCI_MANIFEST)
                    .body(body);
            }
            if let Some(dg) = p.rsplit('/').next().filter(|_| p.contains("/blobs/")) {
                let mut b = blob_of(&lay, dg);
                if tamper && dg == ld {
                    let n = b.len();
                    b[n - 10] ^= 0xff;
                }
                return Reply::new(200).body(b);
            }
            Reply::new(404)
        })
    };
    // R06: the layer does not hash to its digest: failure, no target.
    let s = serve(true, None);
    let src = format!("docker://127.0.0.1:{}/x:latest", s.port);
    refused(
        &src,
        d.path(),
        &["--insecure"],
        "integrity",
        "Digest mismatch",
    );
    // The same server, untampered, converts.
    let s = serve(false, None);
    converts_to(
        &format!("docker://127.0.0.1:{}/x:latest", s.port),
        d.path(),
        &["--insecure"],
        &c.raw,
    );
    // R05: pulled by digest, the manifest served is another one.
    let mut other = serde_json::from_slice::<serde_json::Value>(&blob_of(
        &lay,
        desc["digest"].as_str().unwrap(),
    ))
    .unwrap();
    other["annotations"] = serde_json::json!({"x": "y"});
    let s = serve(false, Some(serde_json::to_vec(&other).unwrap()));
    let md = desc["digest"].as_str().unwrap();
    refused(
        &format!("docker://127.0.0.1:{}/x@{md}", s.port),
        d.path(),
        &["--insecure"],
        "integrity",
        "Digest mismatch for manifest",
    );
    // R08: a manifest over 4 MiB.
    let s = serve(false, Some(vec![b' '; 5 << 20]));
    refused(
        &format!("docker://127.0.0.1:{}/x:latest", s.port),
        d.path(),
        &["--insecure"],
        "limit",
        "manifest larger than",
    );
}

#[test]
fn registry_token_stays_on_the_registry_and_foreign_urls_are_never_fetched() {
    let (d, lay, c, desc) = one_image(15);
    let manifest = blob_of(&lay, desc["digest"].as_str().unwrap());
    let mut m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    // R09: a foreign URL on the layer: never contacted.
    let foreign = FaultServer::start(|_, _| Reply::new(500));
    m["layers"][0]["urls"] = serde_json::json!([foreign.url("layer")]);
    let manifest = serde_json::to_vec(&m).unwrap();
    let layer = m["layers"][0]["digest"].as_str().unwrap().to_owned();
    // R10: blobs redirect to a CDN on another port; the token must not go there.
    let lay2 = lay.clone();
    let cdn = FaultServer::start(move |req, _| {
        let dg = req.path.rsplit('/').next().unwrap_or_default();
        Reply::new(200).body(blob_of(&lay2, dg))
    });
    let cdn_url = cdn.url("");
    let realm_port = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(0));
    let rp = realm_port.clone();
    let reg = FaultServer::start(move |req, _| {
        let authed = req.header("Authorization") == Some("Bearer T0KEN");
        let port = rp.load(std::sync::atomic::Ordering::SeqCst);
        if req.path.starts_with("/token") {
            return Reply::new(200).body(br#"{"token":"T0KEN"}"#.to_vec());
        }
        if !authed {
            return Reply::new(401).header(
                "WWW-Authenticate",
                &format!("Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"svc\""),
            );
        }
        if req.path.contains("/manifests/") {
            return Reply::new(200)
                .header("Content-Type", OCI_MANIFEST)
                .body(manifest.clone());
        }
        if let Some(dg) = req.path.split("/blobs/").nth(1) {
            return Reply::redirect(&format!("{cdn_url}blobs/{dg}"));
        }
        Reply::new(404)
    });
    realm_port.store(reg.port, std::sync::atomic::Ordering::SeqCst);
    let src = format!("docker://127.0.0.1:{}/x:latest", reg.port);
    converts_to(&src, d.path(), &["--insecure"], &c.raw);
    let cdn_reqs = cdn.requests();
    assert!(
        cdn_reqs.iter().any(|r| r.path.ends_with(&layer[7..])),
        "layer not fetched from the CDN"
    );
    assert!(
        cdn_reqs.iter().all(|r| r.header("Authorization").is_none()),
        "token sent to the CDN"
    );
    assert!(foreign.requests().is_empty(), "a foreign URL was fetched");
    // The token request carried the scope; the registry got the token.
    let regs = reg.requests();
    assert!(regs
        .iter()
        .any(|r| r.path.starts_with("/token?") && r.path.contains("scope=repository%3Ax%3Apull")));
    // R03: an http realm for an https registry, and a realm at a
    // link-local (metadata) address, are refused.
    let evil = mock(|_| {
        Reply::new(401).header(
            "WWW-Authenticate",
            "Bearer realm=\"http://169.254.169.254/token\"",
        )
    });
    let evil_src = format!("docker://127.0.0.1:{}/x:latest", evil.port);
    let (o, _) = convert(&evil_src, d.path(), &["--insecure"]);
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("error[source]")
            && stderr.contains("Destination not allowed: 169.254.169.254"),
        "{stderr}"
    );
}

#[test]
fn a_broken_blob_download_resumes_with_range_and_the_digest_still_holds() {
    // A raw disk large enough that the layer is several MiB.
    let raw = crate::common::pattern(8 << 20);
    let d = tmp();
    let lay = d.path().join("lay");
    let desc = write_image(
        &lay,
        None,
        &Image::new(vec![Layer::plain(&crate::oci::disk_tar("d.img", &raw))]),
    );
    let manifest = blob_of(&lay, desc["digest"].as_str().unwrap());
    let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let layer = m["layers"][0]["digest"].as_str().unwrap().to_owned();
    let layer_blob = crate::net::Static::new(blob_of(&lay, &layer));
    let (lay2, layer2) = (lay.clone(), layer.clone());
    let broken = std::sync::atomic::AtomicBool::new(false);
    let s = FaultServer::start(move |req, _| {
        if req.path == "/v2/" {
            return Reply::new(200);
        }
        if req.path.contains("/manifests/") {
            return Reply::new(200)
                .header("Content-Type", OCI_MANIFEST)
                .body(manifest.clone());
        }
        let dg = req.path.rsplit('/').next().unwrap_or_default();
        if dg == layer2 {
            let r = layer_blob.reply(req);
            // The first answer breaks off after 3 MiB.
            if !broken.swap(true, std::sync::atomic::Ordering::SeqCst) {
                return r.mode(crate::net::Body::CloseAfter(3 << 20));
            }
            return r;
        }
        Reply::new(200).body(blob_of(&lay2, dg))
    });
    let src = format!("docker://127.0.0.1:{}/x:latest", s.port);
    converts_to(&src, d.path(), &["--insecure"], &raw);
    let ranges: Vec<_> = s
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with(&layer[7..]))
        .filter_map(|r| r.header("Range").map(str::to_owned))
        .collect();
    assert_eq!(
        ranges,
        vec![format!("bytes={}-", 3 << 20)],
        "resumed where it broke"
    );
}
