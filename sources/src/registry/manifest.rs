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
#[path = "manifest_tests.rs"]
mod tests;
