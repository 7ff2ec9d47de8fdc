//! Manifests, indexes and configs: parsed with bounds, digests validated
//! before any use, the platform chosen as CDI chooses it
//! (docs/registry.md, "Manifests and platforms").

use std::collections::BTreeMap;

use serde::Deserialize;
use sha2::Digest as _;

use super::RegistryError;

/// The largest manifest, index or config read (R08, as containers/image's
/// `iolimits`).
pub const MAX_MANIFEST: u64 = 4 << 20;
/// The most layers an image may have (R12): overlay stacks stop near 128,
/// and container disks have one or two.
pub const MAX_LAYERS: usize = 256;
/// The most entries an index may list.
pub const MAX_INDEX: usize = 1024;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker v2 schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Every manifest type asked for, best first; schema 1 is not asked for.
pub const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// A content descriptor.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// The media type (may be empty in old OCI documents).
    #[serde(default)]
    pub media_type: String,
    /// `algorithm:hex`, validated by [`check_digest`] before use.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Foreign locations: never fetched (R09).
    #[serde(default)]
    pub urls: Vec<String>,
    /// For index entries.
    #[serde(default)]
    pub platform: Option<Platform>,
    /// Annotations (the OCI layout's `ref.name`).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// An OS and architecture.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq, serde::Serialize)]
pub struct Platform {
    /// e.g. `amd64`.
    #[serde(default)]
    pub architecture: String,
    /// e.g. `linux`.
    #[serde(default)]
    pub os: String,
    /// e.g. `v8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// This machine: linux and the Go name of our architecture.
    pub fn host() -> Self {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "powerpc64" => "ppc64le",
            "x86" => "386",
            other => other,
        };
        Platform {
            architecture: arch.into(),
            os: "linux".into(),
            variant: None,
        }
    }

    /// Parses `os/arch[/variant]`, or a bare `arch` (CDI's
    /// `platform.architecture`) meaning linux.
    pub fn parse(s: &str) -> Result<Self, RegistryError> {
        let bad = || {
            RegistryError::Usage(format!(
                "Invalid platform {:?}: expected os/arch[/variant] or an architecture",
                formats::text::escape(s)
            ))
        };
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &str| {
            !p.is_empty()
                && p.len() <= 64
                && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        if !parts.iter().all(|p| ok(p)) {
            return Err(bad());
        }
        Ok(match parts.as_slice() {
            [arch] => Platform {
                architecture: (*arch).into(),
                os: "linux".into(),
                variant: None,
            },
            [os, arch] => Platform {
                architecture: (*arch).into(),
                os: (*os).into(),
                variant: None,
            },
            [os, arch, v] => Platform {
                architecture: (*arch).into(),
                os: (*os).into(),
                variant: Some((*v).into()),
            },
            _ => return Err(bad()),
        })
    }

    /// `os/arch[/variant]`.
    pub fn shown(&self) -> String {
        match &self.variant {
            Some(v) => format!("{}/{}/{v}", self.os, self.architecture),
            None => format!("{}/{}", self.os, self.architecture),
        }
    }
}

/// Which platform to pull, and whether the user asked for it (CDI checks a
/// single-arch image's architecture only when one was asked for).
#[derive(Debug, Clone)]
pub struct Wanted {
    /// The platform.
    pub platform: Platform,
    /// Asked for (`--platform`, `IMPORTER_REGISTRY_IMAGE_ARCHITECTURE`).
    pub explicit: bool,
}

impl Default for Wanted {
    fn default() -> Self {
        Wanted {
            platform: Platform::host(),
            explicit: false,
        }
    }
}

/// A parsed manifest.
#[derive(Debug, Clone)]
pub enum Manifest {
    /// One image.
    Image {
        /// The config blob.
        config: Descriptor,
        /// Layers, base first.
        layers: Vec<Descriptor>,
    },
    /// An index / manifest list.
    Index {
        /// The entries.
        manifests: Vec<Descriptor>,
        /// A Docker manifest list (CDI's message says so).
        docker: bool,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<u32>,
    #[serde(default)]
    media_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
}

/// Validates `algorithm:hex` (R15): sha256 or sha512, lower-case hex of
/// the right length. Nothing else reaches a path or a URL.
pub fn check_digest(d: &str) -> Result<(), RegistryError> {
    let bad = || RegistryError::Manifest(format!("invalid digest {:?}", formats::text::escape(d)));
    let (alg, hex) = d.split_once(':').ok_or_else(bad)?;
    let len = match alg {
        "sha256" => 64,
        "sha512" => 128,
        _ => return Err(bad()),
    };
    if hex.len() != len
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(bad());
    }
    Ok(())
}

/// The digest of `bytes` with `digest`'s algorithm, as `algorithm:hex`.
pub fn digest_of(algorithm: &str, bytes: &[u8]) -> String {
    if algorithm == "sha512" {
        format!("sha512:{}", hex::encode(sha2::Sha512::digest(bytes)))
    } else {
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
    }
}

/// Checks that `bytes` hash to `digest` (R05).
pub fn verify(what: &str, digest: &str, bytes: &[u8]) -> Result<(), RegistryError> {
    check_digest(digest)?;
    let alg = digest.split(':').next().unwrap_or("sha256");
    let actual = digest_of(alg, bytes);
    if actual != digest {
        return Err(RegistryError::Digest {
            what: what.to_owned(),
            expected: digest.to_owned(),
            actual,
        });
    }
    Ok(())
}

/// Parses a manifest or index; `content_type` is the registry's header.
pub fn parse_manifest(bytes: &[u8], content_type: Option<&str>) -> Result<Manifest, RegistryError> {
    let raw: RawManifest = serde_json::from_slice(bytes)
        .map_err(|e| RegistryError::Manifest(format!("not a manifest: {e}")))?;
    if raw.schema_version == Some(1) {
        return Err(RegistryError::Unsupported(
            "Docker schema 1 manifests are not supported".into(),
        ));
    }
    let header = content_type
        .map(|c| c.split(';').next().unwrap_or("").trim())
        .filter(|c| !c.is_empty() && *c != "application/json" && *c != "application/octet-stream");
    let media = raw.media_type.as_deref().or(header).unwrap_or("");
    if media.starts_with("application/vnd.docker.distribution.manifest.v1+") {
        return Err(RegistryError::Unsupported(
            "Docker schema 1 manifests are not supported".into(),
        ));
    }
    let kind = match media {
        OCI_INDEX | DOCKER_LIST => "index",
        OCI_MANIFEST | DOCKER_MANIFEST => "image",
        "" if raw.manifests.is_some() => "index",
        "" if raw.layers.is_some() => "image",
        other => {
            return Err(RegistryError::Unsupported(format!(
                "manifest media type {:?}",
                formats::text::escape(other)
            )))
        }
    };
    if raw.schema_version != Some(2) {
        return Err(RegistryError::Manifest("schemaVersion must be 2".into()));
    }
    if kind == "index" {
        let manifests = raw
            .manifests
            .ok_or_else(|| RegistryError::Manifest("an index without manifests".into()))?;
        if manifests.len() > MAX_INDEX {
            return Err(RegistryError::Limit(format!(
                "an index of {} entries (at most {MAX_INDEX})",
                manifests.len()
            )));
        }
        for m in &manifests {
            check_digest(&m.digest)?;
        }
        return Ok(Manifest::Index {
            manifests,
            docker: media == DOCKER_LIST,
        });
    }
    let config = raw
        .config
        .ok_or_else(|| RegistryError::Manifest("a manifest without config".into()))?;
    let layers = raw
        .layers
        .ok_or_else(|| RegistryError::Manifest("a manifest without layers".into()))?;
    if layers.len() > MAX_LAYERS {
        return Err(RegistryError::Limit(format!(
            "an image of {} layers (at most {MAX_LAYERS})",
            layers.len()
        )));
    }
    check_digest(&config.digest)?;
    for l in &layers {
        check_digest(&l.digest)?;
        if l.media_type.contains("+encrypted") {
            return Err(RegistryError::Unsupported(format!(
                "encrypted layer {}",
                l.digest
            )));
        }
    }
    Ok(Manifest::Image { config, layers })
}

/// Chooses the index entry for `wanted`, as containers/image does for CDI:
/// the OS and architecture must match, a variant only when one is asked
/// for; among matches, manifest order; an entry without a platform matches
/// anything, last.
pub fn choose<'a>(
    manifests: &'a [Descriptor],
    docker: bool,
    wanted: &Wanted,
) -> Result<&'a Descriptor, RegistryError> {
    let w = &wanted.platform;
    let matches = |p: &Platform| {
        p.os == w.os
            && p.architecture == w.architecture
            && w.variant
                .as_ref()
                .is_none_or(|v| p.variant.as_ref() == Some(v))
    };
    manifests
        .iter()
        .find(|m| m.platform.as_ref().is_some_and(matches))
        .or_else(|| manifests.iter().find(|m| m.platform.is_none()))
        .ok_or_else(|| RegistryError::NoInstance {
            list: if docker {
                "manifest list"
            } else {
                "image index"
            },
            architecture: w.architecture.clone(),
            variant: w.variant.clone().unwrap_or_default(),
            os: w.os.clone(),
            available: manifests
                .iter()
                .filter_map(|m| m.platform.as_ref().map(Platform::shown))
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// What the config says that matters here.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// The image's platform.
    pub platform: Platform,
    /// `Env` entries (`K=V`), for CDI's labels.
    pub env: Vec<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
struct RawConfig {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    variant: Option<String>,
    #[serde(default)]
    config: Option<RawInner>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RawInner {
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
}

/// Parses an image config.
pub fn parse_config(bytes: &[u8]) -> Result<Config, RegistryError> {
    let raw: RawConfig = serde_json::from_slice(bytes)
        .map_err(|e| RegistryError::Manifest(format!("not an image config: {e}")))?;
    let inner = raw.config.unwrap_or_default();
    Ok(Config {
        platform: Platform {
            architecture: raw.architecture,
            os: raw.os,
            variant: raw.variant,
        },
        env: inner.env.unwrap_or_default(),
        labels: inner.labels.unwrap_or_default(),
    })
}

/// CDI's checks on the config, in its order: the architecture when one was
/// asked for, then bootc / ostree images (R13).
pub fn check_config(config: &Config, wanted: &Wanted) -> Result<(), RegistryError> {
    if wanted.explicit && config.platform.architecture != wanted.platform.architecture {
        return Err(RegistryError::ArchMismatch {
            image: config.platform.architecture.clone(),
            wanted: wanted.platform.architecture.clone(),
        });
    }
    let is = |k: &str| config.labels.get(k).is_some_and(|v| v == "1");
    if is("containers.bootc") || is("ostree.bootable") {
        return Err(RegistryError::Bootc);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
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
        let e =
            parse_manifest(br#"{"schemaVersion":2,"mediaType":"text/x-what"}"#, None).unwrap_err();
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
}
