//! The registry source: container disks read from an OCI image while the
//! layer streams (docs/registry.md).
//!
//! ```text
//! ImageRef --Store (registry over HTTP | OCI layout dir | OCI archive)-->
//!   manifest (digest checked) -> index? choose platform -> config (checked:
//!   architecture, bootc) -> layers, top first, on a walker thread:
//!   blob -> digest check -> decompress (by magic) -> TarGuard -> tar entries
//!     whiteouts and names of upper layers hide lower entries;
//!     the one visible regular file under disk/ is sent on as the source's
//!     bytes; the layers below are read through to prove it is the only one;
//!     the reader ends only after every blob's digest matched.
//! ```
//!
//! Nothing here writes a file: the disk file's bytes go to the pipeline,
//! never to scratch.

mod build;
mod layout;
pub mod manifest;
mod push;
pub mod reference;
mod remote;
mod verified;
mod walk;

use std::io::Read;

use formats::error::{Classify, ErrorKind};

use crate::http::{HttpError, HttpOptions};
pub use build::{build, push, BuildOptions, LayerCompression};
use manifest::{Config, Descriptor, Manifest};
pub use manifest::{Platform, Wanted};
pub use push::{BlobUpload, Pusher};
pub use reference::{DockerRef, ImageRef};
pub use walk::DiskReader;

/// Errors of the registry source. The words CDI's controller and tests
/// match are kept (docs/registry.md, "Messages").
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// A reference that cannot be parsed.
    #[error("Invalid image name {reference:?}: {reason}")]
    Reference {
        /// The reference, escaped.
        reference: String,
        /// Why.
        reason: String,
    },
    /// A bad option (platform).
    #[error("{0}")]
    Usage(String),
    /// Reaching the registry or reading the manifest failed (CDI's reason
    /// `ImagePullFailed` is set on these words).
    #[error("failed to pull image: {detail}")]
    Pull {
        /// What failed, escaped.
        detail: String,
        /// Its kind (auth, source, unavailable, ...).
        kind: ErrorKind,
    },
    /// A malformed manifest, index or config.
    #[error("Invalid image: {0}")]
    Manifest(String),
    /// Something recognised and refused (schema 1, encrypted layers).
    #[error("Unsupported image: {0}")]
    Unsupported(String),
    /// A bound was exceeded (R08, R12).
    #[error("Image too large to handle: {0}")]
    Limit(String),
    /// Content did not hash to its digest (R05, R06).
    #[error("Digest mismatch for {what}: expected {expected}, got {actual}")]
    Digest {
        /// The manifest, config or layer.
        what: String,
        /// The digest it should have.
        expected: String,
        /// The digest it has.
        actual: String,
    },
    /// No index entry for the wanted platform (CDI's words, R04).
    #[error("choosing image instance: no image found in {list} for architecture {architecture:?}, variant {variant:?}, OS {os:?} (available: {available})")]
    NoInstance {
        /// "image index" or "manifest list".
        list: &'static str,
        /// Wanted architecture.
        architecture: String,
        /// Wanted variant.
        variant: String,
        /// Wanted OS.
        os: String,
        /// What the index has.
        available: String,
    },
    /// A single-arch image of another architecture than asked (CDI's words).
    #[error("Error validating architecture: manifest image architecture: {image:?} doesn't match requested architecture: {wanted:?}")]
    ArchMismatch {
        /// The image's.
        image: String,
        /// The one asked for.
        wanted: String,
    },
    /// A bootc / ostree image (CDI's words, R13).
    #[error("bootc image detected: this image contains an ostree-based bootable OS (containers.bootc=1 or ostree.bootable=1) and cannot be imported as a regular container disk; bootc-to-disk conversion is not yet implemented")]
    Bootc,
    /// No disk file under `disk/` (CDI's words, T10).
    #[error(
        "Failed to find VM disk image file in the container image: no regular file under disk/"
    )]
    NoDisk,
    /// More than one file under `disk/` in the image's view (T11, D10).
    #[error("Cannot locate image file: multiple disk files under disk/: {0}")]
    MultipleDisks(String),
    /// A directory under `disk/` (CDI's words).
    #[error("Cannot locate image file: image directory contains another directory: {0}")]
    Nested(String),
    /// The same path twice in one layer (T12).
    #[error("Layer {layer} has {path:?} twice")]
    Duplicate {
        /// Layer digest.
        layer: String,
        /// The path, escaped.
        path: String,
    },
    /// An entry that must not be imported (T03, T05-T07).
    #[error("Refusing layer entry {path:?}: {why}")]
    UnsafeEntry {
        /// The path, escaped.
        path: String,
        /// Why.
        why: &'static str,
    },
    /// A layer could not be read (never skipped).
    #[error("Error reading layer {digest}: {detail}")]
    Layer {
        /// The layer digest.
        digest: String,
        /// What failed, escaped.
        detail: String,
        /// Its kind.
        kind: ErrorKind,
    },
    /// A local layout could not be read.
    #[error("Reading image layout {path:?}: {detail}")]
    Local {
        /// The path, escaped.
        path: String,
        /// What failed.
        detail: String,
        /// Its kind.
        kind: ErrorKind,
    },
    /// Reaching the registry failed below the protocol.
    #[error(transparent)]
    Http(#[from] HttpError),
}

impl Classify for RegistryError {
    fn kind(&self) -> ErrorKind {
        match self {
            RegistryError::Reference { .. } | RegistryError::Usage(_) => ErrorKind::Usage,
            RegistryError::Pull { kind, .. }
            | RegistryError::Layer { kind, .. }
            | RegistryError::Local { kind, .. } => *kind,
            RegistryError::Manifest(_)
            | RegistryError::NoDisk
            | RegistryError::MultipleDisks(_)
            | RegistryError::Nested(_)
            | RegistryError::Duplicate { .. } => ErrorKind::Format,
            RegistryError::Unsupported(_) | RegistryError::Bootc => ErrorKind::Unsupported,
            RegistryError::Limit(_) => ErrorKind::Limit,
            RegistryError::Digest { .. } => ErrorKind::Integrity,
            RegistryError::NoInstance { .. } | RegistryError::ArchMismatch { .. } => {
                ErrorKind::Source
            }
            RegistryError::UnsafeEntry { .. } => ErrorKind::Unsafe,
            RegistryError::Http(e) => e.kind(),
        }
    }
}

impl RegistryError {
    /// Whether CDI reports this as a pull failure (`failed to pull image`,
    /// reason `ImagePullFailed`).
    pub fn is_pull_failure(&self) -> bool {
        matches!(self, RegistryError::Pull { .. } | RegistryError::Http(_))
    }

    /// Whether this happened choosing the image (CDI: "Error retrieving
    /// image: ...").
    pub fn is_choice_failure(&self) -> bool {
        matches!(self, RegistryError::NoInstance { .. })
    }

    /// The error as an `io::Error` that keeps its kind (for `Read` paths).
    pub fn into_io(self) -> std::io::Error {
        formats::error::kinded_io(self.kind(), self.to_string())
    }
}

/// Bytes fetched by a store, with what the store said of their type.
pub(crate) struct Fetched {
    pub bytes: Vec<u8>,
    pub content_type: Option<String>,
    /// The digest the bytes must have, when the store knows it.
    pub digest: Option<String>,
}

/// Where manifests and blobs come from.
pub(crate) trait Store: Send {
    /// The manifest the reference names.
    fn top(&mut self) -> Result<Fetched, RegistryError>;
    /// A manifest by digest (an index entry).
    fn manifest(&mut self, desc: &Descriptor) -> Result<Fetched, RegistryError>;
    /// A blob's bytes as stored, not yet checked against its digest.
    fn blob(&mut self, desc: &Descriptor) -> Result<Box<dyn Read + Send>, RegistryError>;
}

/// How to reach and choose the image.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// TLS, credentials, proxies, retries (as for HTTP sources).
    pub http: HttpOptions,
    /// The platform to pull.
    pub wanted: Wanted,
}

/// What was pulled, for `info`, logs and CDI's labels.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImageFacts {
    /// The reference, as shown.
    pub reference: String,
    /// The digest of the manifest first fetched (the index, if any).
    pub manifest_digest: String,
    /// The platform of the image used.
    pub platform: Platform,
    /// The layer holding the disk file.
    pub layer: String,
    /// The disk file's path in the image.
    pub file: String,
    /// Its size as stored.
    pub file_size: u64,
    /// The config's `Env`.
    pub env: Vec<String>,
}

/// The image resolved to one platform: its config and layers.
struct Resolved {
    manifest_digest: String,
    config: Config,
    layers: Vec<Descriptor>,
}

/// Reads a small blob (a config) whole, bounded and verified.
fn small_blob(
    store: &mut dyn Store,
    desc: &Descriptor,
    what: &str,
) -> Result<Vec<u8>, RegistryError> {
    if desc.size > manifest::MAX_MANIFEST {
        return Err(RegistryError::Limit(format!(
            "{what} of {} bytes (at most {})",
            desc.size,
            manifest::MAX_MANIFEST
        )));
    }
    let mut out = Vec::new();
    store
        .blob(desc)?
        .take(manifest::MAX_MANIFEST + 1)
        .read_to_end(&mut out)
        .map_err(|e| RegistryError::Pull {
            detail: format!("reading {what}: {}", formats::text::escape(&e.to_string())),
            kind: formats::error::classify_io(&e),
        })?;
    manifest::verify(what, &desc.digest, &out)?;
    Ok(out)
}

fn checked(f: Fetched, what: &str) -> Result<Fetched, RegistryError> {
    if f.bytes.len() as u64 > manifest::MAX_MANIFEST {
        return Err(RegistryError::Limit(format!(
            "{what} larger than {} bytes",
            manifest::MAX_MANIFEST
        )));
    }
    if let Some(d) = &f.digest {
        manifest::verify(what, d, &f.bytes)?;
    }
    Ok(f)
}

fn resolve(store: &mut dyn Store, wanted: &Wanted) -> Result<Resolved, RegistryError> {
    let top = checked(store.top()?, "manifest")?;
    let alg = top
        .digest
        .as_deref()
        .and_then(|d| d.split(':').next())
        .unwrap_or("sha256");
    let manifest_digest = manifest::digest_of(alg, &top.bytes);
    let (config, layers) = match manifest::parse_manifest(&top.bytes, top.content_type.as_deref())?
    {
        Manifest::Image { config, layers } => (config, layers),
        Manifest::Index { manifests, docker } => {
            let entry = manifest::choose(&manifests, docker, wanted)?.clone();
            let child = checked(store.manifest(&entry)?, "manifest")?;
            manifest::verify("manifest", &entry.digest, &child.bytes)?;
            match manifest::parse_manifest(&child.bytes, child.content_type.as_deref())? {
                Manifest::Image { config, layers } => (config, layers),
                Manifest::Index { .. } => {
                    return Err(RegistryError::Unsupported(
                        "an index inside an index".into(),
                    ))
                }
            }
        }
    };
    let config = manifest::parse_config(&small_blob(store, &config, "config")?)?;
    manifest::check_config(&config, wanted)?;
    Ok(Resolved {
        manifest_digest,
        config,
        layers,
    })
}

/// Opens the image, finds its disk file and starts reading it.
pub fn pull(
    image: &ImageRef,
    opts: &RegistryOptions,
) -> Result<(ImageFacts, DiskReader), RegistryError> {
    let mut store: Box<dyn Store> = match image {
        ImageRef::Docker(r) => Box::new(remote::Remote::connect(r, &opts.http)?),
        ImageRef::OciDir { path, name } => Box::new(layout::Layout::dir(path, name.as_deref())?),
        ImageRef::OciArchive { path, name } => {
            Box::new(layout::Layout::archive(path, name.as_deref())?)
        }
    };
    let resolved = resolve(store.as_mut(), &opts.wanted)?;
    let (found, reader) = walk::start(store, resolved.layers)?;
    let facts = ImageFacts {
        reference: image.shown(),
        manifest_digest: resolved.manifest_digest,
        platform: resolved.config.platform,
        layer: found.layer,
        file: found.path,
        file_size: found.size,
        env: resolved.config.env,
    };
    Ok((facts, reader))
}

/// A store over blobs in memory, for the fuzz target and tests.
struct MemStore(std::collections::HashMap<String, Vec<u8>>);

impl Store for MemStore {
    fn top(&mut self) -> Result<Fetched, RegistryError> {
        Err(RegistryError::Usage(
            "a memory store has no manifest".into(),
        ))
    }

    fn manifest(&mut self, _: &Descriptor) -> Result<Fetched, RegistryError> {
        self.top()
    }

    fn blob(&mut self, desc: &Descriptor) -> Result<Box<dyn Read + Send>, RegistryError> {
        let b = self.0.get(&desc.digest).cloned().unwrap_or_default();
        Ok(Box::new(std::io::Cursor::new(b)))
    }
}

/// Walks `layers` (blobs as stored, base first, with correct digests) as
/// an image's layers and reads the disk file, at most `budget` bytes: its
/// path and bytes. For the `registry_layers` fuzz target.
#[doc(hidden)]
pub fn read_layers(layers: &[Vec<u8>], budget: u64) -> Result<(String, Vec<u8>), RegistryError> {
    let mut blobs = std::collections::HashMap::new();
    let descs = layers
        .iter()
        .map(|b| {
            let digest = manifest::digest_of("sha256", b);
            blobs.insert(digest.clone(), b.clone());
            Descriptor {
                media_type: String::new(),
                digest,
                size: b.len() as u64,
                urls: Vec::new(),
                platform: None,
                annotations: Default::default(),
            }
        })
        .collect();
    let (found, reader) = walk::start(Box::new(MemStore(blobs)), descs)?;
    let mut out = Vec::new();
    reader
        .take(budget)
        .read_to_end(&mut out)
        .map_err(|e| RegistryError::Layer {
            digest: found.layer.clone(),
            detail: e.to_string(),
            kind: formats::error::classify_io(&e),
        })?;
    Ok((found.path, out))
}
