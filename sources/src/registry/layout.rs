//! OCI image layouts on the local disk: a directory (`oci:`) or a tar of
//! one (`oci-archive:`), read in place (the archive is indexed once and
//! its blobs read by offset; nothing is extracted).

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use formats::error::ErrorKind;
use serde::Deserialize;

use super::manifest::{check_digest, Descriptor, MAX_INDEX, MAX_MANIFEST};
use super::{Fetched, RegistryError, Store};

/// Most entries indexed in an archive.
const MAX_ARCHIVE_ENTRIES: usize = 1 << 16;
/// The annotation naming an image in a layout's `index.json`.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Where a layout's files are.
enum Files {
    Dir(PathBuf),
    /// The archive, and each file's data offset and size.
    Archive(PathBuf, HashMap<String, (u64, u64)>),
}

/// An OCI layout.
pub(crate) struct Layout {
    files: Files,
    shown: String,
    name: Option<String>,
}

fn local(path: &Path, detail: impl std::fmt::Display, kind: ErrorKind) -> RegistryError {
    RegistryError::Local {
        path: formats::text::escape(&path.display().to_string()),
        detail: formats::text::escape(&detail.to_string()),
        kind,
    }
}

fn io_kind(e: &std::io::Error) -> ErrorKind {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => ErrorKind::Truncated,
        _ => ErrorKind::Source,
    }
}

impl Layout {
    /// A layout directory.
    pub(crate) fn dir(path: &Path, name: Option<&str>) -> Result<Self, RegistryError> {
        if !path.is_dir() {
            return Err(local(path, "not a directory", ErrorKind::Source));
        }
        Ok(Layout {
            files: Files::Dir(path.to_owned()),
            shown: path.display().to_string(),
            name: name.map(str::to_owned),
        })
    }

    /// A tar of a layout: its headers are read once for an index.
    pub(crate) fn archive(path: &Path, name: Option<&str>) -> Result<Self, RegistryError> {
        let f = File::open(path).map_err(|e| local(path, e, ErrorKind::Source))?;
        let mut a = tar::Archive::new(crate::targuard::TarGuard::new(f));
        let mut index = HashMap::new();
        let bad =
            |e: std::io::Error| local(path, format!("not a tar archive: {e}"), ErrorKind::Format);
        for entry in a.entries().map_err(bad)? {
            let entry = entry.map_err(bad)?;
            if index.len() >= MAX_ARCHIVE_ENTRIES {
                return Err(RegistryError::Limit(format!(
                    "an archive of more than {MAX_ARCHIVE_ENTRIES} entries"
                )));
            }
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let name = name.trim_start_matches("./").to_owned();
            let size = entry.size();
            index.insert(name, (entry.raw_file_position(), size));
        }
        Ok(Layout {
            files: Files::Archive(path.to_owned(), index),
            shown: path.display().to_string(),
            name: name.map(str::to_owned),
        })
    }

    /// Opens `rel` (`index.json`, `blobs/<alg>/<hex>` with a validated
    /// digest): its reader and size.
    fn open(&self, rel: &str) -> Result<(Box<dyn Read + Send>, u64), RegistryError> {
        match &self.files {
            Files::Dir(dir) => {
                let p = dir.join(rel);
                let f = File::open(&p).map_err(|e| {
                    let kind = if e.kind() == std::io::ErrorKind::NotFound {
                        ErrorKind::Format
                    } else {
                        ErrorKind::Source
                    };
                    local(dir, format!("{rel}: {e}"), kind)
                })?;
                let len = f
                    .metadata()
                    .map_err(|e| local(dir, e, ErrorKind::Source))?
                    .len();
                Ok((Box::new(f), len))
            }
            Files::Archive(path, index) => {
                let &(off, len) = index.get(rel).ok_or_else(|| {
                    local(
                        path,
                        format!("{rel}: not in the archive"),
                        ErrorKind::Format,
                    )
                })?;
                let mut f = File::open(path).map_err(|e| local(path, e, ErrorKind::Source))?;
                f.seek(SeekFrom::Start(off))
                    .map_err(|e| local(path, e, ErrorKind::Source))?;
                Ok((Box::new(f.take(len)), len))
            }
        }
    }

    fn read_small(&self, rel: &str, what: &str) -> Result<Vec<u8>, RegistryError> {
        let (r, len) = self.open(rel)?;
        if len > MAX_MANIFEST {
            return Err(RegistryError::Limit(format!(
                "{what} of {len} bytes (at most {MAX_MANIFEST})"
            )));
        }
        let mut out = Vec::new();
        r.take(MAX_MANIFEST)
            .read_to_end(&mut out)
            .map_err(|e| local(Path::new(&self.shown), e.to_string(), io_kind(&e)))?;
        Ok(out)
    }

    fn blob_path(desc: &Descriptor) -> Result<String, RegistryError> {
        check_digest(&desc.digest)?;
        let (alg, hex) = desc.digest.split_once(':').expect("checked");
        Ok(format!("blobs/{alg}/{hex}"))
    }
}

#[derive(Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

impl Store for Layout {
    /// The image `index.json` names: by `ref.name` when a name was given,
    /// else its only entry.
    fn top(&mut self) -> Result<Fetched, RegistryError> {
        let bytes = self.read_small("index.json", "index.json")?;
        let index: Index = serde_json::from_slice(&bytes)
            .map_err(|e| RegistryError::Manifest(format!("index.json: {e}")))?;
        if index.manifests.len() > MAX_INDEX {
            return Err(RegistryError::Limit(format!(
                "an index of {} entries (at most {MAX_INDEX})",
                index.manifests.len()
            )));
        }
        let entry = match &self.name {
            Some(n) => index
                .manifests
                .iter()
                .find(|m| m.annotations.get(REF_NAME) == Some(n))
                .ok_or_else(|| RegistryError::Pull {
                    detail: format!(
                        "no image named {:?} in {}",
                        formats::text::escape(n),
                        formats::text::escape(&self.shown)
                    ),
                    kind: ErrorKind::Source,
                })?,
            None => match index.manifests.as_slice() {
                [one] => one,
                [] => return Err(RegistryError::Manifest("index.json lists no image".into())),
                _ => {
                    return Err(RegistryError::Usage(format!(
                        "{} holds {} images: name one with :NAME",
                        formats::text::escape(&self.shown),
                        index.manifests.len()
                    )))
                }
            },
        }
        .clone();
        self.manifest(&entry)
    }

    fn manifest(&mut self, desc: &Descriptor) -> Result<Fetched, RegistryError> {
        let bytes = self.read_small(&Self::blob_path(desc)?, "manifest")?;
        Ok(Fetched {
            bytes,
            content_type: Some(desc.media_type.clone()).filter(|m| !m.is_empty()),
            digest: Some(desc.digest.clone()),
        })
    }

    fn blob(&mut self, desc: &Descriptor) -> Result<Box<dyn Read + Send>, RegistryError> {
        let (r, _) = self.open(&Self::blob_path(desc)?)?;
        Ok(r)
    }
}
