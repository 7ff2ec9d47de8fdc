//! One way in for every source (docs/sources.md).
//!
//! ```text
//! "-" | path | http(s)://... | docker:// | oci: | oci-archive:
//!   --SourceSpec::parse-->  SourceSpec
//!   --Source::open-->  Source: peek (detection, not metered)
//!                        then exactly one of:
//!                          take_stream  -> forward bytes       --+
//!                          take_random  -> ReadAt (file, HTTP)  --+--> one Meter
//!                          take_sparse  -> hole-aware chunks    --+    (count + hash)
//! ```
//!
//! Detection looks at the first bytes without consuming them; the reader
//! then picks one way to read ([`Source::take_stream`],
//! [`Source::take_random`], [`Source::take_sparse`]), and every byte read
//! that way passes the meter exactly once. Random access over a local file
//! and over HTTP range requests are two implementations of
//! [`formats::read_at::ReadAt`].
//!
//! Adding a source: a [`SourceSpec`] variant, its case in
//! [`SourceSpec::parse`], and its opener in [`Source::open`] giving the
//! forward stream and, when it has them, the length and random access.

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use formats::read_at::{PrefetchFile, ReadAt};

use crate::file::{LocalSource, SparseFileChunks};
use crate::http::{HttpClient, HttpOptions, Resource};
use crate::meter::{Checksum, Meter, MeteredReadAt, MeteredReader};
use crate::peek::PeekReader;
use crate::registry::{ImageFacts, ImageRef, RegistryOptions, Wanted};
use crate::SourceError;

/// Where the bytes come from, as the user named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// Standard input (`-`).
    Stdin,
    /// A local file or block device.
    File(PathBuf),
    /// An `http://` or `https://` URL.
    Http(String),
    /// A container disk: the one file under `disk/` of an OCI image.
    Image(ImageRef),
    /// A request body handed over by a server (an upload), named for logs.
    Body(String),
}

/// How to reach and choose what a spec names.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// TLS, credentials, retries (HTTP sources and registries).
    pub http: HttpOptions,
    /// The platform of a multi-platform image.
    pub wanted: Wanted,
}

impl SourceSpec {
    /// Parses a source argument: `-`, an http(s) URL, or a path. Other
    /// URL schemes are refused.
    pub fn parse(s: &str) -> Result<Self, SourceError> {
        if s == "-" {
            return Ok(SourceSpec::Stdin);
        }
        if ImageRef::is_image_ref(s) {
            return Ok(SourceSpec::Image(ImageRef::parse(s)?));
        }
        if crate::http::is_url(s) {
            return Ok(SourceSpec::Http(s.to_owned()));
        }
        if let Some(scheme) = crate::http::scheme_of(s) {
            return Err(SourceError::UnsupportedScheme {
                scheme: formats::text::escape(scheme),
            });
        }
        Ok(SourceSpec::File(PathBuf::from(s)))
    }

    /// The source as it may be shown (URLs without credentials or query).
    pub fn shown(&self) -> String {
        match self {
            SourceSpec::Stdin => "-".into(),
            SourceSpec::File(p) => formats::text::escape(&p.display().to_string()),
            SourceSpec::Http(u) => crate::http::redact_text(u),
            SourceSpec::Image(i) => i.shown(),
            SourceSpec::Body(name) => formats::text::escape(name),
        }
    }
}

/// What a source offers besides its forward stream.
enum Extra {
    None,
    /// A local regular file: random access and hole-aware reads.
    File(File),
    /// An HTTP resource served with ranges, a length and a validator.
    Http(Resource),
}

/// An opened source: look at its start, then read it one way.
pub struct Source {
    spec: SourceSpec,
    head: Option<PeekReader<Box<dyn Read + Send>>>,
    extra: Extra,
    length: Option<u64>,
    content_type: Option<String>,
    http: Option<HttpClient>,
    image: Option<ImageFacts>,
    meter: Arc<Meter>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("spec", &self.spec)
            .field("length", &self.length)
            .finish_non_exhaustive()
    }
}

impl Source {
    /// Opens `spec`; `checksum` is verified over every byte read.
    pub fn open(
        spec: SourceSpec,
        opts: &OpenOptions,
        checksum: Option<&Checksum>,
    ) -> Result<Source, SourceError> {
        let http = &opts.http;
        let meter = Meter::new(checksum);
        let mut image = None;
        let (stream, extra, length, content_type, client): (Box<dyn Read + Send>, _, _, _, _) =
            match &spec {
                SourceSpec::Stdin => (Box::new(std::io::stdin()), Extra::None, None, None, None),
                SourceSpec::File(p) => {
                    let local = LocalSource::open(&p.to_string_lossy())?;
                    let stream = local.reader().map_err(SourceError::Reading)?;
                    let extra = match (&local.file, local.is_regular) {
                        (Some(f), true) => {
                            Extra::File(f.try_clone().map_err(SourceError::Reading)?)
                        }
                        _ => Extra::None,
                    };
                    (stream, extra, local.size, None, None)
                }
                SourceSpec::Http(url) => {
                    let (client, res, body) = crate::http::open_url(url, http.clone())?;
                    let extra = if res.random_access() {
                        Extra::Http(res.clone())
                    } else {
                        Extra::None
                    };
                    let (len, ct) = (res.length, res.content_type.clone());
                    (Box::new(body), extra, len, ct, Some(client))
                }
                SourceSpec::Body(_) => {
                    return Err(SourceError::AlreadyRead);
                }
                SourceSpec::Image(r) => {
                    let ropts = RegistryOptions {
                        http: http.clone(),
                        wanted: opts.wanted.clone(),
                    };
                    let (facts, reader) = crate::registry::pull(r, &ropts)?;
                    let len = Some(facts.file_size);
                    image = Some(facts);
                    (Box::new(reader), Extra::None, len, None, None)
                }
            };
        Ok(Source {
            spec,
            head: Some(PeekReader::new(stream)),
            extra,
            length,
            content_type,
            http: client,
            image,
            meter,
        })
    }

    /// A body a server receives (an upload) as a source: a forward stream
    /// of `length` bytes when known, metered like any other.
    pub fn from_body(
        name: &str,
        body: Box<dyn Read + Send>,
        length: Option<u64>,
        checksum: Option<&Checksum>,
    ) -> Source {
        Source {
            spec: SourceSpec::Body(name.to_owned()),
            head: Some(PeekReader::new(body)),
            extra: Extra::None,
            length,
            content_type: None,
            http: None,
            image: None,
            meter: Meter::new(checksum),
        }
    }

    /// What was opened.
    pub fn spec(&self) -> &SourceSpec {
        &self.spec
    }

    /// The first `n` bytes (fewer only when the source is shorter), for
    /// detection: nothing is consumed and nothing metered.
    pub fn peek(&mut self, n: usize) -> Result<&[u8], SourceError> {
        let head = self.head.as_mut().ok_or(SourceError::AlreadyRead)?;
        head.peek(n).map_err(SourceError::Reading)
    }

    /// The source's length, when known up front.
    pub fn length(&self) -> Option<u64> {
        self.length
    }

    /// The server's `Content-Type` (HTTP sources).
    pub fn content_type(&self) -> Option<&str> {
        self.content_type.as_deref()
    }

    /// The HTTP client, for its counters (HTTP sources).
    pub fn http(&self) -> Option<&HttpClient> {
        self.http.as_ref()
    }

    /// What was pulled (image sources).
    pub fn image(&self) -> Option<&ImageFacts> {
        self.image.as_ref()
    }

    /// Whether this is a network source.
    pub fn is_remote(&self) -> bool {
        self.http.is_some()
    }

    /// The meter every byte read passes.
    pub fn meter(&self) -> &Arc<Meter> {
        &self.meter
    }

    /// Whether [`Source::take_random`] would give random access.
    pub fn has_random_access(&self) -> bool {
        !matches!(self.extra, Extra::None)
    }

    /// Whether [`Source::take_sparse`] would give hole-aware reads.
    pub fn has_sparse_reads(&self) -> bool {
        matches!(self.extra, Extra::File(_))
    }

    /// The whole source as a forward stream, metered.
    pub fn take_stream(&mut self) -> Result<MeteredReader<Box<dyn Read + Send>>, SourceError> {
        let head = self.head.take().ok_or(SourceError::AlreadyRead)?;
        self.extra = Extra::None;
        Ok(MeteredReader::new(Box::new(head), self.meter.clone()))
    }

    /// Random access, metered by the bytes it reads; the stream opened for
    /// detection is closed. `None` when the source has none.
    pub fn take_random(&mut self) -> Result<Option<Box<dyn ReadAt>>, SourceError> {
        if self.head.take().is_none() {
            return Err(SourceError::AlreadyRead);
        }
        Ok(match std::mem::replace(&mut self.extra, Extra::None) {
            Extra::None => None,
            Extra::File(f) => {
                let f = PrefetchFile::new(f).map_err(SourceError::Reading)?;
                Some(Box::new(MeteredReadAt::new(f, self.meter.clone())))
            }
            Extra::Http(res) => {
                let client = self.http.as_ref().expect("HTTP extra implies a client");
                Some(Box::new(client.ranges(&res, Some(self.meter.clone()))))
            }
        })
    }

    /// A local regular file read hole-aware (`SEEK_DATA`), metered; `None`
    /// for other sources.
    pub fn take_sparse(&mut self) -> Result<Option<SparseFileChunks>, SourceError> {
        if self.head.take().is_none() {
            return Err(SourceError::AlreadyRead);
        }
        Ok(
            match (std::mem::replace(&mut self.extra, Extra::None), self.length) {
                (Extra::File(f), Some(size)) => Some(
                    SparseFileChunks::new(f, size)
                        .map_err(SourceError::Reading)?
                        .metered(self.meter.clone()),
                ),
                _ => None,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn specs_parse_by_shape_and_refuse_other_schemes() {
        assert_eq!(SourceSpec::parse("-").unwrap(), SourceSpec::Stdin);
        assert_eq!(
            SourceSpec::parse("disk.img").unwrap(),
            SourceSpec::File("disk.img".into())
        );
        assert!(matches!(
            SourceSpec::parse("https://h/x").unwrap(),
            SourceSpec::Http(_)
        ));
        assert!(matches!(
            SourceSpec::parse("ftp://h/x"),
            Err(SourceError::UnsupportedScheme { .. })
        ));
        assert_eq!(
            SourceSpec::parse("http://u:pw@h/x?t=1").unwrap().shown(),
            "http://h/x"
        );
    }

    #[test]
    fn peek_is_not_metered_and_each_way_meters_every_byte_once() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&[7u8; 10_000]).unwrap();
        let spec = SourceSpec::File(f.path().to_owned());
        let opts = OpenOptions::default();

        let mut s = Source::open(spec.clone(), &opts, None).unwrap();
        assert!(s.peek(512).unwrap().len() >= 512);
        assert_eq!(s.meter().bytes(), 0);
        let mut r = s.take_stream().unwrap();
        let mut all = Vec::new();
        r.read_to_end(&mut all).unwrap();
        assert_eq!(all.len(), 10_000);
        assert_eq!(s.meter().bytes(), 10_000);
        assert!(matches!(s.take_random(), Err(SourceError::AlreadyRead)));

        let mut s = Source::open(spec.clone(), &opts, None).unwrap();
        s.peek(512).unwrap();
        let r = s.take_random().unwrap().expect("a file has random access");
        let mut buf = [0u8; 100];
        r.read_exact_at(&mut buf, 9_000).unwrap();
        assert_eq!(s.meter().bytes(), 100);

        let mut s = Source::open(spec, &opts, None).unwrap();
        let mut chunks = s.take_sparse().unwrap().expect("a file reads hole-aware");
        let mut n = 0;
        while let Some(e) = chunks.next_chunk().unwrap() {
            n += e.len();
        }
        assert_eq!(n, 10_000);
        assert_eq!(s.meter().bytes(), 10_000);
    }
}
