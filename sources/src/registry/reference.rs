//! Image references: `docker://`, `oci-archive:` and `oci:`, parsed and
//! normalised as containers/image does (docs/registry.md, "References").

use std::path::PathBuf;

use super::RegistryError;

/// Docker Hub's name in references, and the host that serves it.
pub const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_HOST: &str = "registry-1.docker.io";
/// The longest reference accepted (a repository path is at most 255
/// characters in the distribution spec; a digest and tag add little).
const MAX_REFERENCE: usize = 4096;

/// Where an image is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// `docker://[host[:port]/]repo[:tag|@digest]`.
    Docker(DockerRef),
    /// `oci-archive:/path/image.tar[:name]`: an OCI layout in a tar file.
    OciArchive {
        /// The tar file.
        path: PathBuf,
        /// The `org.opencontainers.image.ref.name` to pick, if given.
        name: Option<String>,
    },
    /// `oci:/path/layout-dir[:name]`: an OCI layout directory.
    OciDir {
        /// The layout directory.
        path: PathBuf,
        /// The `org.opencontainers.image.ref.name` to pick, if given.
        name: Option<String>,
    },
}

/// A normalised registry reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerRef {
    /// `host[:port]` as written (`docker.io` when none was).
    pub domain: String,
    /// The repository path, e.g. `library/alpine`.
    pub repository: String,
    /// The tag (`latest` when neither tag nor digest was given).
    pub tag: Option<String>,
    /// The digest, `algorithm:hex`.
    pub digest: Option<String>,
}

impl DockerRef {
    /// The host (and port) requests go to.
    pub fn host(&self) -> &str {
        if self.domain == DOCKER_HUB {
            DOCKER_HUB_HOST
        } else {
            &self.domain
        }
    }

    /// What the manifest is fetched by: the digest, else the tag.
    pub fn manifest_reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }
}

impl std::fmt::Display for DockerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.domain, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl ImageRef {
    /// Whether `s` names an image (and not a path or URL).
    pub fn is_image_ref(s: &str) -> bool {
        s.starts_with("docker://") || s.starts_with("oci-archive:") || s.starts_with("oci:")
    }

    /// Parses `transport:reference`. The transport is split at the first
    /// `:`, as CDI does; `oci` paths are split at their first `:` too, as
    /// containers/image does.
    pub fn parse(s: &str) -> Result<Self, RegistryError> {
        let bad = |reason: &str| RegistryError::Reference {
            reference: formats::text::escape(&s.chars().take(200).collect::<String>()),
            reason: reason.to_owned(),
        };
        if s.len() > MAX_REFERENCE {
            return Err(bad("longer than 4096 bytes"));
        }
        if s.chars().any(char::is_control) {
            return Err(bad("contains control characters"));
        }
        let (transport, rest) = s
            .split_once(':')
            .ok_or_else(|| bad("expected colon-separated transport:reference"))?;
        match transport {
            "docker" => {
                let rest = rest
                    .strip_prefix("//")
                    .ok_or_else(|| bad("expected docker://"))?;
                parse_docker(rest)
                    .map(ImageRef::Docker)
                    .map_err(|r| bad(&r))
            }
            "oci-archive" | "oci" => {
                let (path, name) = match rest.split_once(':') {
                    Some((p, n)) => (p, Some(n)),
                    None => (rest, None),
                };
                if path.is_empty() {
                    return Err(bad("no path"));
                }
                if let Some(n) = name {
                    if n.is_empty() || n.len() > 255 {
                        return Err(bad("image name must be 1 to 255 characters"));
                    }
                }
                let (path, name) = (PathBuf::from(path), name.map(str::to_owned));
                Ok(if transport == "oci" {
                    ImageRef::OciDir { path, name }
                } else {
                    ImageRef::OciArchive { path, name }
                })
            }
            _ => Err(bad("unknown transport")),
        }
    }

    /// The reference as it may be shown.
    pub fn shown(&self) -> String {
        match self {
            ImageRef::Docker(d) => format!("docker://{d}"),
            ImageRef::OciArchive { path, name } | ImageRef::OciDir { path, name } => {
                let t = if matches!(self, ImageRef::OciDir { .. }) {
                    "oci"
                } else {
                    "oci-archive"
                };
                let p = formats::text::escape(&path.display().to_string());
                match name {
                    Some(n) => format!("{t}:{p}:{}", formats::text::escape(n)),
                    None => format!("{t}:{p}"),
                }
            }
        }
    }
}

/// containers/image's normalisation: the first component is a registry if
/// it has a `.` or `:` or is `localhost`; else Docker Hub, where a single
/// name gets `library/`; no tag and no digest means `latest`; a tag with a
/// digest is refused, as containers/image's docker transport does.
fn parse_docker(s: &str) -> Result<DockerRef, String> {
    let (name, digest) = match s.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (s, None),
    };
    if let Some(d) = digest {
        super::manifest::check_digest(d).map_err(|e| e.to_string())?;
    }
    // A tag follows the last ':' after the last '/'.
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name[slash..].rfind(':') {
        Some(i) => (&name[..slash + i], Some(&name[slash + i + 1..])),
        None => (name, None),
    };
    if tag.is_some() && digest.is_some() {
        return Err(
            "Docker references with both a tag and digest are currently not supported".into(),
        );
    }
    if let Some(t) = tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && t.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !ok {
            return Err(format!("invalid tag {:?}", formats::text::escape(t)));
        }
    }
    let (domain, path) = match name.split_once('/') {
        Some((d, p)) if d.contains(['.', ':']) || d == "localhost" => (d.to_owned(), p.to_owned()),
        _ => (DOCKER_HUB.to_owned(), name.to_owned()),
    };
    let path = if domain == DOCKER_HUB && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    if domain.is_empty() || domain.contains(['/', '@', '?', '#', ' ']) {
        return Err("invalid registry host".into());
    }
    if path.is_empty() || path.len() > 255 {
        return Err("repository must be 1 to 255 characters".into());
    }
    for comp in path.split('/') {
        let ok = !comp.is_empty()
            && comp.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && comp.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && comp
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
        if !ok {
            return Err(format!(
                "invalid repository name {:?} (lower-case letters, digits and . _ - only)",
                formats::text::escape(&path)
            ));
        }
    }
    let tag = match (tag, digest) {
        (None, None) => Some("latest".to_owned()),
        (t, _) => t.map(str::to_owned),
    };
    Ok(DockerRef {
        domain,
        repository: path,
        tag,
        digest: digest.map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docker(s: &str) -> DockerRef {
        match ImageRef::parse(s).unwrap() {
            ImageRef::Docker(d) => d,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn docker_hub_names_are_normalised_as_containers_image_does() {
        let d = docker("docker://alpine");
        assert_eq!(
            (d.domain.as_str(), d.repository.as_str(), d.tag.as_deref()),
            ("docker.io", "library/alpine", Some("latest"))
        );
        assert_eq!(d.host(), "registry-1.docker.io");
        let d = docker("docker://kubevirt/fedora-cloud-container-disk-demo:v1");
        assert_eq!(d.repository, "kubevirt/fedora-cloud-container-disk-demo");
        assert_eq!(d.tag.as_deref(), Some("v1"));
        let d = docker("docker://quay.io/containerdisks/fedora:40");
        assert_eq!((d.domain.as_str(), d.host()), ("quay.io", "quay.io"));
        let d = docker("docker://127.0.0.1:5000/cdisk");
        assert_eq!(
            (d.domain.as_str(), d.repository.as_str(), d.tag.as_deref()),
            ("127.0.0.1:5000", "cdisk", Some("latest"))
        );
        let d = docker("docker://localhost/a/b/c:t");
        assert_eq!(
            (d.domain.as_str(), d.repository.as_str()),
            ("localhost", "a/b/c")
        );
        let digest = format!("sha256:{}", "ab".repeat(32));
        let d = docker(&format!("docker://h.io:443/r@{digest}"));
        assert_eq!(
            (d.tag.as_deref(), d.digest.as_deref()),
            (None, Some(digest.as_str()))
        );
        assert_eq!(d.manifest_reference(), digest);
    }

    #[test]
    fn bad_references_are_refused() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        for bad in [
            "alpine",
            "http://h/x",
            "docker:alpine",
            "docker://",
            "docker://Alpine",
            "docker://h.io/r:bad/tag",
            "docker://h.io/r:",
            &format!("docker://h.io/r:t@{digest}"),
            "docker://h.io/r@sha256:../../x",
            "docker://h.io/r@md5:00",
            "docker://h.io/a//b",
            "oci:",
            "oci-archive::name",
            "docker://h.io/r\n",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn oci_references_split_at_the_first_colon() {
        assert_eq!(
            ImageRef::parse("oci-archive:/tmp/i.tar:v1").unwrap(),
            ImageRef::OciArchive {
                path: "/tmp/i.tar".into(),
                name: Some("v1".into())
            }
        );
        assert_eq!(
            ImageRef::parse("oci:layout").unwrap(),
            ImageRef::OciDir {
                path: "layout".into(),
                name: None
            }
        );
        assert_eq!(
            ImageRef::parse("oci:/x/l:a:b").unwrap().shown(),
            "oci:/x/l:a:b"
        );
    }
}
