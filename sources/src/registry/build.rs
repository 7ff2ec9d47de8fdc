//! Building container disks (`diskimport containerdisk build|push`): a
//! `FROM scratch` image whose one layer holds `disk/` and the disk file,
//! owned 107:107, mode 0440, as KubeVirt's convention asks; several
//! platforms in one index. Written as an OCI layout (directory or tar) or
//! pushed to a registry, the layer streamed once through tar, compression
//! and two digests (docs/registry.md, "Building container disks").

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use formats::error::ErrorKind;
use sha2::Digest as _;

use super::manifest::{Platform, OCI_INDEX, OCI_MANIFEST};
use super::push::Pusher;
use super::{ImageRef, RegistryError};
use crate::http::HttpOptions;

/// The owner KubeVirt's virt-launcher reads the disk as.
const QEMU_UID: u64 = 107;
const CONFIG_MEDIA: &str = "application/vnd.oci.image.config.v1+json";
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Layer compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LayerCompression {
    /// `tar+gzip` (the default; what every runtime reads).
    #[default]
    Gzip,
    /// `tar+zstd`.
    Zstd,
    /// Plain `tar`.
    None,
}

impl LayerCompression {
    fn media_type(self) -> &'static str {
        match self {
            LayerCompression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            LayerCompression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            LayerCompression::None => "application/vnd.oci.image.layer.v1.tar",
        }
    }
}

/// What to build.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// One disk per platform.
    pub disks: Vec<(Platform, PathBuf)>,
    /// Layer compression.
    pub compression: LayerCompression,
    /// Config labels.
    pub labels: BTreeMap<String, String>,
    /// Config `Env` entries (`K=V`; CDI turns `*KUBEVIRT_IO_*` into labels).
    pub env: Vec<String>,
}

/// Counts and hashes what passes.
struct Hashing<W> {
    inner: W,
    hash: sha2::Sha256,
    len: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(b)?;
        self.hash.update(&b[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W> Hashing<W> {
    fn new(inner: W) -> Self {
        Hashing {
            inner,
            hash: sha2::Sha256::new(),
            len: 0,
        }
    }
    fn done(self) -> (W, String, u64) {
        let d = format!("sha256:{}", hex::encode(self.hash.finalize()));
        (self.inner, d, self.len)
    }
}

fn local(path: &Path, e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Local {
        path: formats::text::escape(&path.display().to_string()),
        detail: formats::text::escape(&e.to_string()),
        kind: ErrorKind::Target,
    }
}

/// A written layer: its blob digest and size, and its `diff_id`.
struct LayerFacts {
    digest: String,
    size: u64,
    diff_id: String,
}

/// Writes the layer's tar (`disk/`, then the file) into `w`; returns its
/// digest (the image config's `diff_id`).
fn write_tar(w: &mut dyn Write, f: &mut File, name: &str, size: u64) -> io::Result<String> {
    let mut tar = tar::Builder::new(Hashing::new(w));
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o555);
    dir.set_uid(QEMU_UID);
    dir.set_gid(QEMU_UID);
    dir.set_mtime(0);
    dir.set_size(0);
    tar.append_data(&mut dir, "disk/", io::empty())?;
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o440);
    h.set_uid(QEMU_UID);
    h.set_gid(QEMU_UID);
    h.set_mtime(0);
    h.set_size(size);
    tar.append_data(&mut h, format!("disk/{name}"), f.take(size))?;
    let (_, diff_id, _) = tar.into_inner()?.done();
    Ok(diff_id)
}

/// Streams the layer of `disk` into `out`: tar, compressed, hashed twice
/// (the blob, and the tar for `diff_id`).
fn write_layer<W: Write>(disk: &Path, c: LayerCompression, out: W) -> io::Result<(W, LayerFacts)> {
    let mut f = File::open(disk)?;
    let size = f.metadata()?.len();
    let name = disk
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "the disk path has no file name",
            )
        })?;
    let blob = Hashing::new(out);
    let (blob, diff_id) = match c {
        LayerCompression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(blob, flate2::Compression::new(6));
            let d = write_tar(&mut e, &mut f, &name, size)?;
            (e.finish()?, d)
        }
        LayerCompression::Zstd => {
            let mut e = zstd::stream::write::Encoder::new(blob, 3)?;
            let d = write_tar(&mut e, &mut f, &name, size)?;
            (e.finish()?, d)
        }
        LayerCompression::None => {
            let mut b = blob;
            let d = write_tar(&mut b, &mut f, &name, size)?;
            (b, d)
        }
    };
    let (out, digest, size) = blob.done();
    Ok((
        out,
        LayerFacts {
            digest,
            size,
            diff_id,
        },
    ))
}

/// Where the blobs go.
enum Dest {
    Layout(PathBuf),
    Registry(Box<Pusher>),
}

impl Dest {
    fn put(&mut self, bytes: &[u8]) -> Result<(String, u64), RegistryError> {
        let d = format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)));
        match self {
            Dest::Layout(dir) => {
                let p = dir.join("blobs/sha256").join(&d[7..]);
                std::fs::write(&p, bytes).map_err(|e| local(&p, e))?;
            }
            Dest::Registry(p) => p.put_blob(&d, bytes)?,
        }
        Ok((d, bytes.len() as u64))
    }

    fn layer(&mut self, disk: &Path, c: LayerCompression) -> Result<LayerFacts, RegistryError> {
        let read_err = |e: io::Error| RegistryError::Local {
            path: formats::text::escape(&disk.display().to_string()),
            detail: formats::text::escape(&e.to_string()),
            kind: formats::error::classify_io(&e),
        };
        match self {
            Dest::Layout(dir) => {
                let tmp = dir.join(format!("blobs/sha256/.layer-{}", std::process::id()));
                let f = File::create(&tmp).map_err(|e| local(&tmp, e))?;
                let (f, facts) = write_layer(disk, c, io::BufWriter::with_capacity(1 << 20, f))
                    .map_err(read_err)?;
                let f = f.into_inner().map_err(|e| local(&tmp, e.error()))?;
                f.sync_all().map_err(|e| local(&tmp, e))?;
                let to = dir.join("blobs/sha256").join(&facts.digest[7..]);
                std::fs::rename(&tmp, &to).map_err(|e| local(&to, e))?;
                Ok(facts)
            }
            Dest::Registry(p) => {
                let up = p.upload()?;
                let (up, facts) = write_layer(disk, c, up).map_err(read_err)?;
                up.finish(&facts.digest)?;
                Ok(facts)
            }
        }
    }
}

/// Builds every platform's image into `dest`; returns the top
/// descriptor's media type, the top document (manifest or index) and the
/// per-platform manifest descriptors.
fn build_into(dest: &mut Dest, o: &BuildOptions) -> Result<(String, Vec<u8>), RegistryError> {
    if o.disks.is_empty() {
        return Err(RegistryError::Usage("no disk given".into()));
    }
    let mut manifests = Vec::new();
    for (platform, disk) in &o.disks {
        let layer = dest.layer(disk, o.compression)?;
        let mut config = serde_json::json!({
            "created": "1970-01-01T00:00:00Z",
            "architecture": platform.architecture,
            "os": platform.os,
            "config": {"Env": o.env, "Labels": o.labels},
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
            "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "diskimport containerdisk"}],
        });
        if let Some(v) = &platform.variant {
            config["variant"] = serde_json::json!(v);
        }
        let (cd, cs) = dest.put(&serde_json::to_vec(&config).expect("JSON"))?;
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": CONFIG_MEDIA, "digest": cd, "size": cs},
            "layers": [{"mediaType": o.compression.media_type(), "digest": layer.digest, "size": layer.size}],
        });
        let bytes = serde_json::to_vec(&manifest).expect("JSON");
        manifests.push((platform.clone(), bytes));
    }
    if manifests.len() == 1 {
        let (_, bytes) = manifests.pop().expect("one");
        return Ok((OCI_MANIFEST.into(), bytes));
    }
    let mut entries = Vec::new();
    for (platform, bytes) in &manifests {
        let (d, s) = match dest {
            Dest::Registry(p) => {
                let d = format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)));
                p.put_manifest(&d, OCI_MANIFEST, bytes)?;
                (d, bytes.len() as u64)
            }
            Dest::Layout(_) => dest.put(bytes)?,
        };
        entries.push(serde_json::json!({
            "mediaType": OCI_MANIFEST, "digest": d, "size": s, "platform": platform,
        }));
    }
    let index =
        serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
    Ok((OCI_INDEX.into(), serde_json::to_vec(&index).expect("JSON")))
}

fn write_layout(dir: &Path, tag: &str, o: &BuildOptions) -> Result<(), RegistryError> {
    std::fs::create_dir_all(dir.join("blobs/sha256")).map_err(|e| local(dir, e))?;
    let mut dest = Dest::Layout(dir.to_owned());
    let (media, top) = build_into(&mut dest, o)?;
    let (d, s) = dest.put(&top)?;
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .map_err(|e| local(dir, e))?;
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": media, "digest": d, "size": s, "annotations": {REF_NAME: tag}}]});
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&index).expect("JSON"),
    )
    .map_err(|e| local(dir, e))
}

/// `containerdisk build`: writes an `oci:` directory or an `oci-archive:`
/// tar (built as a directory beside it, then archived and removed).
pub fn build(output: &ImageRef, o: &BuildOptions) -> Result<(), RegistryError> {
    match output {
        ImageRef::OciDir { path, name } => {
            write_layout(path, name.as_deref().unwrap_or("latest"), o)
        }
        ImageRef::OciArchive { path, name } => {
            let file = path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            let tmp = path.with_file_name(format!(".{file}.layout-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&tmp);
            let r = write_layout(&tmp, name.as_deref().unwrap_or("latest"), o).and_then(|()| {
                let f = File::create(path).map_err(|e| local(path, e))?;
                let mut t = tar::Builder::new(io::BufWriter::new(f));
                t.mode(tar::HeaderMode::Deterministic);
                t.append_dir_all(".", &tmp).map_err(|e| local(path, e))?;
                let w = t.into_inner().map_err(|e| local(path, e))?;
                w.into_inner()
                    .map_err(|e| local(path, e.error()))?
                    .sync_all()
                    .map_err(|e| local(path, e))
            });
            let _ = std::fs::remove_dir_all(&tmp);
            if r.is_err() {
                let _ = std::fs::remove_file(path);
            }
            r
        }
        ImageRef::Docker(_) => Err(RegistryError::Usage(
            "build writes oci: or oci-archive:; use push for docker://".into(),
        )),
    }
}

/// `containerdisk push`: uploads the layers, configs and manifests, then
/// tags the top manifest (or index).
pub fn push(
    dest: &ImageRef,
    o: &BuildOptions,
    http: &HttpOptions,
) -> Result<String, RegistryError> {
    let ImageRef::Docker(r) = dest else {
        return Err(RegistryError::Usage(
            "push takes a docker:// reference".into(),
        ));
    };
    let tag = r
        .tag
        .clone()
        .ok_or_else(|| RegistryError::Usage("push needs a tag, not a digest".into()))?;
    let mut d = Dest::Registry(Box::new(Pusher::connect(r, http)?));
    let (media, top) = build_into(&mut d, o)?;
    let Dest::Registry(p) = &mut d else {
        unreachable!("a registry destination")
    };
    p.put_manifest(&tag, &media, &top)?;
    Ok(format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(&top))
    ))
}
