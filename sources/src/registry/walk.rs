//! The layer walk: layers top-down on a thread of their own, the image's
//! view of `disk/` built as they pass, the one disk file streamed on
//! (docs/registry.md, "The disk file").

use std::collections::BTreeSet;
use std::io::{self, Read};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use formats::error::{classify_io, ErrorKind};
use formats::probe::{detect, PROBE_LEN};
use formats::Probe;

use super::manifest::Descriptor;
use super::verified::{ReadAhead, Verified};
use super::{RegistryError, Store};
use crate::decode::decoder;
use crate::peek::PeekReader;
use crate::targuard::TarGuard;

/// Chunks of the disk file in flight: 4 x 256 KiB bounds what waits
/// between the walker and the pipeline at 1 MiB.
const DEPTH: usize = 4;
const CHUNK: usize = 256 << 10;
/// OCI's empty descriptor: a config-only "layer" that is not a tar.
const EMPTY_MEDIA: &str = "application/vnd.oci.empty.v1+json";

/// The disk file found.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub path: String,
    pub size: u64,
    pub layer: String,
}

enum Msg {
    Found(Found),
    Data(Vec<u8>),
    /// Every layer read, every digest matched, nothing else under disk/.
    Done,
    Failed(RegistryError),
}

/// The disk file's bytes as stored in the image. The last read returns
/// end of file only after the walk proved the image sound (every layer
/// digest matched, no second disk file): a failure there is an error, so
/// an import is never reported successful before it (R06).
pub struct DiskReader {
    rx: Receiver<Msg>,
    cur: Vec<u8>,
    at: usize,
    done: bool,
}

impl std::fmt::Debug for DiskReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskReader").finish_non_exhaustive()
    }
}

impl Read for DiskReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.cur.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Msg::Data(d)) => {
                    self.cur = d;
                    self.at = 0;
                }
                Ok(Msg::Done) => self.done = true,
                Ok(Msg::Failed(e)) => return Err(e.into_io()),
                Ok(Msg::Found(_)) | Err(_) => {
                    return Err(formats::error::kinded_io(
                        ErrorKind::Internal,
                        "the layer walker stopped unexpectedly",
                    ))
                }
            }
        }
        let n = buf.len().min(self.cur.len() - self.at);
        buf[..n].copy_from_slice(&self.cur[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Starts the walk; returns when the disk file is found (or the walk
/// failed before it).
pub(crate) fn start(
    store: Box<dyn Store>,
    layers: Vec<Descriptor>,
) -> Result<(Found, DiskReader), RegistryError> {
    let (tx, rx) = sync_channel(DEPTH);
    std::thread::Builder::new()
        .name("layers".into())
        .spawn(move || {
            let mut w = Walker {
                store,
                tx: tx.clone(),
                view: View::default(),
                chosen: None,
            };
            let end = match w.run(&layers) {
                Ok(()) => Msg::Done,
                Err(e) => Msg::Failed(e),
            };
            let _ = tx.send(end);
        })
        .map_err(|e| RegistryError::Usage(format!("starting the layer thread: {e}")))?;
    match rx.recv() {
        Ok(Msg::Found(f)) => Ok((
            f,
            DiskReader {
                rx,
                cur: Vec::new(),
                at: 0,
                done: false,
            },
        )),
        Ok(Msg::Failed(e)) => Err(e),
        Ok(Msg::Done) | Err(_) => Err(RegistryError::NoDisk),
        Ok(Msg::Data(_)) => unreachable!("data is sent only after Found"),
    }
}

/// What the layers above the current one say about `disk/`.
#[derive(Default)]
struct View {
    /// Everything below is hidden (`.wh..wh..opq` in disk/ or at the root,
    /// or `.wh.disk` at the root).
    opaque: bool,
    /// Names under disk/ deleted by a whiteout above.
    whiteouts: BTreeSet<String>,
    /// Names under disk/ present above (they hide the same name below).
    names: BTreeSet<String>,
}

/// What one entry is, for the view.
#[derive(Debug)]
enum Class {
    /// Not under disk/: ignored (T04).
    Outside,
    /// `disk` itself.
    DiskDir,
    /// A whiteout of `disk/<name>`.
    Whiteout(String),
    /// Opaque: hides everything below.
    Opaque,
    /// `disk/<name>`, or something deeper under `disk/<name>/`.
    Entry { name: String, deep: bool },
}

/// Classifies a tar path by components: `./` and empty components are
/// dropped; absolute paths and paths not starting with `disk` are outside;
/// `..` anywhere under disk/ is refused (T03).
fn classify(path: &str) -> Result<Class, RegistryError> {
    if path.starts_with('/') {
        return Ok(Class::Outside);
    }
    let comps: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    match comps.as_slice() {
        [".wh..wh..opq"] | [".wh.disk"] => return Ok(Class::Opaque),
        ["disk", ..] => {}
        _ => return Ok(Class::Outside),
    }
    if comps.contains(&"..") {
        return Err(RegistryError::UnsafeEntry {
            path: formats::text::escape(path),
            why: "unsafe path (..)",
        });
    }
    Ok(match comps.as_slice() {
        ["disk"] => Class::DiskDir,
        ["disk", ".wh..wh..opq"] => Class::Opaque,
        ["disk", name] if name.starts_with(".wh.") => Class::Whiteout(name[4..].to_owned()),
        ["disk", name] => Class::Entry {
            name: (*name).to_owned(),
            deep: false,
        },
        [_, name, ..] => Class::Entry {
            name: (*name).to_owned(),
            deep: true,
        },
        _ => Class::Outside,
    })
}

struct Walker {
    store: Box<dyn Store>,
    tx: SyncSender<Msg>,
    view: View,
    chosen: Option<Found>,
}

/// The consumer went away (the import failed elsewhere): stop quietly.
struct Gone;

impl Walker {
    fn run(&mut self, layers: &[Descriptor]) -> Result<(), RegistryError> {
        for desc in layers.iter().rev() {
            if self.view.opaque {
                // Nothing below can be seen: not even fetched.
                break;
            }
            if desc.media_type == EMPTY_MEDIA {
                continue;
            }
            match self.layer(desc) {
                Ok(()) => {}
                Err(Ok(e)) => return Err(e),
                Err(Err(Gone)) => return Ok(()),
            }
        }
        if self.chosen.is_none() {
            return Err(RegistryError::NoDisk);
        }
        Ok(())
    }

    fn layer(&mut self, desc: &Descriptor) -> Result<(), Result<RegistryError, Gone>> {
        let layer_err = |e: &io::Error| {
            // The tar reader's own errors are plain: a layer it cannot
            // parse is malformed input (T18).
            let kinded = e
                .get_ref()
                .is_some_and(|i| i.is::<formats::error::KindedIoError>());
            let kind = match e.kind() {
                io::ErrorKind::InvalidData | io::ErrorKind::Other if !kinded => ErrorKind::Format,
                _ => classify_io(e),
            };
            Ok(RegistryError::Layer {
                digest: desc.digest.clone(),
                detail: formats::text::escape(&e.to_string()),
                kind,
            })
        };
        // A kinded error from below (digest, truncation) keeps its kind.
        let pass = |e: io::Error| -> Result<RegistryError, Gone> { layer_err(&e) };
        let blob = self.store.blob(desc).map_err(Ok)?;
        let ahead = ReadAhead::spawn(Verified::new(blob, desc)).map_err(pass)?;
        let mut raw = PeekReader::new(Box::new(ahead) as Box<dyn Read + Send>);
        let probe = detect(raw.peek(PROBE_LEN).map_err(pass)?);
        // Compression by magic, never by media type (T19).
        let plain: Box<dyn Read + Send> = match probe {
            Probe::Gzip | Probe::Zstd | Probe::Xz => {
                Box::new(decoder(probe, raw, 1).map_err(|e| layer_err(&e))?)
            }
            _ => Box::new(raw),
        };
        let mut archive = tar::Archive::new(TarGuard::new(plain));
        let mut here = View::default();
        let mut seen = BTreeSet::new();
        let entries = archive.entries().map_err(pass)?;
        for entry in entries {
            let mut entry = entry.map_err(pass)?;
            let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let class = classify(&path).map_err(Ok)?;
            let kind = entry.header().entry_type();
            let (name, deep) = match class {
                Class::Outside | Class::DiskDir => continue,
                Class::Opaque => {
                    here.opaque = true;
                    continue;
                }
                Class::Whiteout(n) => {
                    here.whiteouts.insert(n);
                    continue;
                }
                Class::Entry { name, deep } => (name, deep),
            };
            let norm = path
                .trim_start_matches("./")
                .trim_end_matches('/')
                .to_owned();
            if !kind.is_dir() && !seen.insert(norm) {
                return Err(Ok(RegistryError::Duplicate {
                    layer: desc.digest.clone(),
                    path: formats::text::escape(&path),
                }));
            }
            here.names.insert(name.clone());
            if self.view.whiteouts.contains(&name) || self.view.names.contains(&name) {
                // Deleted or replaced by a layer above.
                continue;
            }
            if deep || kind.is_dir() {
                return Err(Ok(RegistryError::Nested(formats::text::escape(&format!(
                    "disk/{name}"
                )))));
            }
            let why = match kind {
                tar::EntryType::Regular | tar::EntryType::Continuous => None,
                tar::EntryType::Symlink => Some("the disk entry is a symlink"),
                tar::EntryType::Link => Some("the disk entry is a hard link"),
                tar::EntryType::Char | tar::EntryType::Block => Some("the disk entry is a device"),
                tar::EntryType::Fifo => Some("the disk entry is a FIFO"),
                _ => Some("the disk entry is not a regular file"),
            };
            if let Some(why) = why {
                return Err(Ok(RegistryError::UnsafeEntry {
                    path: formats::text::escape(&path),
                    why,
                }));
            }
            if let Some(first) = &self.chosen {
                return Err(Ok(RegistryError::MultipleDisks(formats::text::escape(
                    &format!("{}, disk/{name}", first.path),
                ))));
            }
            let found = Found {
                path: format!("disk/{name}"),
                size: entry.size(),
                layer: desc.digest.clone(),
            };
            self.chosen = Some(found.clone());
            self.tx.send(Msg::Found(found)).map_err(|_| Err(Gone))?;
            self.stream(&mut entry).map_err(|e| match e {
                Ok(io) => pass(io),
                Err(Gone) => Err(Gone),
            })?;
        }
        // The rest of the layer (tar padding, compression trailer) is read
        // so the blob's digest is checked.
        let mut rest = archive.into_inner();
        io::copy(&mut rest, &mut io::sink()).map_err(pass)?;
        for n in here.whiteouts {
            self.view.whiteouts.insert(n);
        }
        self.view.names.extend(here.names);
        self.view.opaque |= here.opaque;
        Ok(())
    }

    fn stream(&mut self, entry: &mut impl Read) -> Result<(), Result<io::Error, Gone>> {
        loop {
            let mut buf = vec![0u8; CHUNK];
            let mut n = 0;
            while n < CHUNK {
                match entry.read(&mut buf[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(Ok(e)),
                }
            }
            if n == 0 {
                return Ok(());
            }
            buf.truncate(n);
            self.tx.send(Msg::Data(buf)).map_err(|_| Err(Gone))?;
            if n < CHUNK {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_classified_by_components() {
        let entry = |p: &str| match classify(p).unwrap() {
            Class::Entry { name, deep } => Some((name, deep)),
            _ => None,
        };
        assert_eq!(entry("disk/a.img"), Some(("a.img".into(), false)));
        assert_eq!(entry("./disk/a.img"), Some(("a.img".into(), false)));
        assert_eq!(entry("disk//a.img"), Some(("a.img".into(), false)));
        assert_eq!(entry("disk/sub/x"), Some(("sub".into(), true)));
        for outside in [
            "disk.img",
            "disks/x",
            "diskfoo/x",
            "/disk/a",
            "x/../disk/a",
            "../x",
            "/etc/x",
            "etc/hosts",
        ] {
            assert!(
                matches!(classify(outside).unwrap(), Class::Outside),
                "{outside}"
            );
        }
        assert!(matches!(classify("disk/").unwrap(), Class::DiskDir));
        assert!(matches!(
            classify("disk/.wh..wh..opq").unwrap(),
            Class::Opaque
        ));
        assert!(matches!(classify(".wh.disk").unwrap(), Class::Opaque));
        assert!(matches!(classify("disk/.wh.a.img").unwrap(), Class::Whiteout(n) if n == "a.img"));
        let e = classify("disk/../../x").unwrap_err();
        assert!(e.to_string().contains("unsafe path"), "{e}");
    }
}
