//! Pushing to a registry (`containerdisk push`): blobs uploaded in chunks
//! of bounded size (POST, PATCH..., PUT with the digest), manifests and
//! indexes by digest and tag (docs/registry.md, "Building container
//! disks").

use std::io::{self, Write};

use formats::error::ErrorKind;
use reqwest::header::{self, HeaderValue};
use reqwest::{Method, StatusCode, Url};

use super::remote::Remote;
use super::{DockerRef, RegistryError};
use crate::http::HttpOptions;

/// Bytes sent per PATCH: memory stays bounded whatever the disk's size.
const CHUNK: usize = 8 << 20;

/// A repository being pushed to.
pub struct Pusher {
    remote: Remote,
}

impl std::fmt::Debug for Pusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pusher").finish_non_exhaustive()
    }
}

fn push_error(what: String, kind: ErrorKind) -> RegistryError {
    RegistryError::Pull {
        detail: formats::text::escape(&format!("pushing: {what}")),
        kind,
    }
}

fn location(base: &Url, resp: &reqwest::Response) -> Result<Url, RegistryError> {
    resp.headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|l| base.join(l).ok())
        .ok_or_else(|| push_error("upload answer without a Location".into(), ErrorKind::Source))
}

impl Pusher {
    /// Connects with push scope (credentials and TLS as for pulling).
    pub fn connect(reference: &DockerRef, opts: &HttpOptions) -> Result<Self, RegistryError> {
        Ok(Pusher {
            remote: Remote::connect_for(reference, opts, "pull,push")?,
        })
    }

    /// Whether the repository has the blob already.
    pub fn has_blob(&mut self, digest: &str) -> Result<bool, RegistryError> {
        super::manifest::check_digest(digest)?;
        let url = self.remote.url(&format!("blobs/{digest}"))?;
        let resp = self.remote.call(Method::HEAD, &url, &[], None)?;
        Ok(resp.status() == StatusCode::OK)
    }

    /// Starts a blob upload: write the blob, then [`BlobUpload::finish`].
    pub fn upload(&mut self) -> Result<BlobUpload<'_>, RegistryError> {
        let url = self.remote.url("blobs/uploads/")?;
        let resp = self
            .remote
            .call(Method::POST, &url, &[], Some(Vec::new()))?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(self.remote.failure("starting a blob upload".into(), resp));
        }
        let at = location(&url, &resp)?;
        Ok(BlobUpload {
            pusher: self,
            at,
            buf: Vec::with_capacity(CHUNK),
        })
    }

    /// Uploads a small blob (a config) unless the repository has it.
    pub fn put_blob(&mut self, digest: &str, bytes: &[u8]) -> Result<(), RegistryError> {
        if self.has_blob(digest)? {
            return Ok(());
        }
        let mut up = self.upload()?;
        up.write_all(bytes)
            .map_err(|e| push_error(e.to_string(), ErrorKind::Source))?;
        up.finish(digest)
    }

    /// Puts a manifest or index under `reference` (a tag or its digest).
    pub fn put_manifest(
        &mut self,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<(), RegistryError> {
        let url = self.remote.url(&format!("manifests/{reference}"))?;
        let ct = HeaderValue::from_str(media_type)
            .map_err(|_| RegistryError::Usage("bad media type".into()))?;
        let resp = self.remote.call(
            Method::PUT,
            &url,
            &[(header::CONTENT_TYPE, ct)],
            Some(bytes.to_vec()),
        )?;
        if resp.status() != StatusCode::CREATED {
            return Err(self
                .remote
                .failure(format!("putting manifest {reference}"), resp));
        }
        Ok(())
    }
}

/// A blob upload in progress: bytes are sent in PATCH chunks as they are
/// written.
pub struct BlobUpload<'a> {
    pusher: &'a mut Pusher,
    at: Url,
    buf: Vec<u8>,
}

impl std::fmt::Debug for BlobUpload<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobUpload").finish_non_exhaustive()
    }
}

impl BlobUpload<'_> {
    fn send_chunk(&mut self) -> Result<(), RegistryError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let body = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        let ct = HeaderValue::from_static("application/octet-stream");
        let resp = self.pusher.remote.call(
            Method::PATCH,
            &self.at.clone(),
            &[(header::CONTENT_TYPE, ct)],
            Some(body),
        )?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(self
                .pusher
                .remote
                .failure("uploading a blob chunk".into(), resp));
        }
        self.at = location(&self.at, &resp)?;
        Ok(())
    }

    /// Sends what is left and closes the upload as `digest`.
    pub fn finish(mut self, digest: &str) -> Result<(), RegistryError> {
        super::manifest::check_digest(digest)?;
        self.send_chunk()?;
        let mut url = self.at.clone();
        url.query_pairs_mut().append_pair("digest", digest);
        let resp = self
            .pusher
            .remote
            .call(Method::PUT, &url, &[], Some(Vec::new()))?;
        if resp.status() != StatusCode::CREATED {
            return Err(self
                .pusher
                .remote
                .failure(format!("closing upload of {digest}"), resp));
        }
        Ok(())
    }
}

impl Write for BlobUpload<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send_chunk().map_err(RegistryError::into_io)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
