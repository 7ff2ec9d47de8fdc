//! Manifest, digest, platform and config tests (values worked out by hand).
use super::*;
use formats::error::Classify;
use formats::ErrorKind;

fn d(n: u8) -> String {
    format!("sha256:{}", hex::encode([n; 32]))
}

fn index(entries: &[(&str, &str, Option<&str>)]) -> Vec<Descriptor> {
    entries
        .iter()
        .enumerate()
        .map(|(i, (os, arch, v))| Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: d(i as u8),
            size: 1,
            urls: vec![],
            platform: Some(Platform {
                architecture: (*arch).into(),
                os: (*os).into(),
                variant: v.map(str::to_owned),
            }),
            annotations: BTreeMap::new(),
        })
        .collect()
}

fn wanted(arch: &str, variant: Option<&str>) -> Wanted {
    Wanted {
        platform: Platform {
            architecture: arch.into(),
            os: "linux".into(),
            variant: variant.map(str::to_owned),
        },
        explicit: true,
    }
}

#[test]
fn digests_are_validated_before_use() {
    check_digest(&d(1)).unwrap();
    for bad in [
        "sha256:../../x".to_owned(),
        format!("sha256:{}", "AB".repeat(32)),
        format!("sha256:{}", "ab".repeat(31)),
        format!("md5:{}", "ab".repeat(16)),
        "sha256".to_owned(),
        format!("sha256:{}/", "ab".repeat(32)),
    ] {
        let e = check_digest(&bad).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Format, "{bad}");
    }
    let e = verify("manifest", &d(1), b"other").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity);
    verify(
        "x",
        "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
        b"hello",
    )
    .unwrap();
}

#[test]
fn platform_is_chosen_by_os_and_arch_in_manifest_order() {
    let idx = index(&[
        ("linux", "amd64", None),
        ("linux", "arm64", Some("v8")),
        ("linux", "arm64", None),
        ("windows", "s390x", None),
    ]);
    assert_eq!(
        choose(&idx, false, &wanted("amd64", None)).unwrap().digest,
        d(0)
    );
    assert_eq!(
        choose(&idx, false, &wanted("arm64", None)).unwrap().digest,
        d(1)
    );
    assert_eq!(
        choose(&idx, false, &wanted("arm64", Some("v8")))
            .unwrap()
            .digest,
        d(1)
    );
    let e = choose(&idx, false, &wanted("s390x", None)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "choosing image instance: no image found in image index for architecture \"s390x\", \
         variant \"\", OS \"linux\" (available: linux/amd64, linux/arm64/v8, linux/arm64, windows/s390x)"
    );
    let e = choose(&idx, true, &wanted("absent", None)).unwrap_err();
    assert!(
        e.to_string()
            .contains("no image found in manifest list for architecture \"absent\""),
        "{e}"
    );
    // An entry without a platform matches anything, after the others.
    let mut idx2 = index(&[("linux", "arm64", None)]);
    idx2[0].platform = None;
    idx2.extend(index(&[("linux", "s390x", None)]));
    assert_eq!(
        choose(&idx2, false, &wanted("s390x", None)).unwrap().digest,
        d(0)
    );
    assert_eq!(
        choose(&idx2, false, &wanted("amd64", None)).unwrap().digest,
        d(0)
    );
}

#[test]
fn platforms_parse_with_and_without_os() {
    assert_eq!(Platform::parse("arm64").unwrap().shown(), "linux/arm64");
    assert_eq!(
        Platform::parse("linux/arm/v7").unwrap().shown(),
        "linux/arm/v7"
    );
    for bad in ["", "a/b/c/d", "linux/", "../x", "a b"] {
        assert!(Platform::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn schema_1_unknown_types_and_oversized_lists_are_refused() {
    let e = parse_manifest(br#"{"schemaVersion":1,"fsLayers":[]}"#, None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    let e = parse_manifest(
        br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v1+prettyjws"}"#,
        None,
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    let e = parse_manifest(br#"{"schemaVersion":2,"mediaType":"text/x-what"}"#, None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    let layer = format!(r#"{{"mediaType":"x","digest":"{}","size":1}}"#, d(2));
    let many = vec![layer.as_str(); MAX_LAYERS + 1].join(",");
    let m = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"digest":"{}","size":2}},"layers":[{many}]}}"#,
        d(1)
    );
    assert_eq!(
        parse_manifest(m.as_bytes(), None).unwrap_err().kind(),
        ErrorKind::Limit
    );
    let bad = format!(
        r#"{{"schemaVersion":2,"config":{{"digest":"{}","size":2}},"layers":[{{"digest":"sha256:../../x","size":1}}]}}"#,
        d(1)
    );
    assert_eq!(
        parse_manifest(bad.as_bytes(), None).unwrap_err().kind(),
        ErrorKind::Format
    );
    let enc = format!(
        r#"{{"schemaVersion":2,"config":{{"digest":"{}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip+encrypted","digest":"{}","size":1}}]}}"#,
        d(1),
        d(2)
    );
    assert_eq!(
        parse_manifest(enc.as_bytes(), None).unwrap_err().kind(),
        ErrorKind::Unsupported
    );
}

#[test]
fn config_checks_follow_cdi() {
    let c = parse_config(
        br#"{"architecture":"amd64","os":"linux","config":{"Env":["A=1"],"Labels":{"containers.bootc":"1"}}}"#,
    )
    .unwrap();
    assert_eq!(c.env, vec!["A=1"]);
    let e = check_config(&c, &wanted("arm64", None)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Error validating architecture: manifest image architecture: \"amd64\" doesn't match requested architecture: \"arm64\""
    );
    let e = check_config(&c, &wanted("amd64", None)).unwrap_err();
    assert!(e.to_string().starts_with("bootc image detected: "), "{e}");
    let plain = parse_config(br#"{"architecture":"amd64"}"#).unwrap();
    let host = Wanted {
        platform: Platform::parse("s390x").unwrap(),
        explicit: false,
    };
    check_config(&plain, &host).unwrap();
}
