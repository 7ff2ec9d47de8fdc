//! Requests for protocols on top of HTTP (a registry, an upload client):
//! a token set on the client, any status handed back, small answers read
//! bounded, streamed request bodies. The download paths (`open`, ranges)
//! are in the module above.

use reqwest::header::{self, HeaderName, HeaderValue};
use reqwest::{StatusCode, Url};

use super::classify::{classify_reqwest, status_failure};
use super::{HttpBody, HttpClient, HttpError, Resource, Validator};

/// A request body fed from a channel (a blocking reader on its own thread).
struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
    len: u64,
}

impl hyper::body::Body for ChannelBody {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|m| m.map(|r| r.map(hyper::body::Frame::data)))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.len)
    }
}

impl HttpClient {
    /// Sets the `Authorization` value sent to this client's origin (a
    /// registry token), replacing the configured credentials there.
    pub(crate) fn set_auth(&self, value: Option<HeaderValue>) {
        let mut value = value;
        if let Some(v) = value.as_mut() {
            v.set_sensitive(true);
        }
        *self.net.auth.lock().unwrap_or_else(|p| p.into_inner()) = value;
    }

    /// A GET of `url` for a protocol on top: redirects followed, transient
    /// failures (including 5xx, 408, 429) retried, any other status
    /// returned for the caller to judge. `extra` headers go to `url`'s
    /// origin only.
    pub(crate) fn request(
        &self,
        url: &Url,
        extra: &[(HeaderName, HeaderValue)],
    ) -> Result<(Url, reqwest::Response), HttpError> {
        self.request_with(url, extra, true)
    }

    /// [`HttpClient::request`], retried only when `retry` is set.
    pub(crate) fn request_with(
        &self,
        url: &Url,
        extra: &[(HeaderName, HeaderValue)],
        retry: bool,
    ) -> Result<(Url, reqwest::Response), HttpError> {
        let net = self.net.clone();
        let tries = if retry {
            self.net.opts.retry.retries
        } else {
            0
        };
        self.rt.block_on(net.retrying_up_to(tries, || async {
            let (u, resp) = net.follow(url, extra).await?;
            let status = resp.status();
            if status.is_server_error()
                || status == StatusCode::REQUEST_TIMEOUT
                || status == StatusCode::TOO_MANY_REQUESTS
            {
                return Err(status_failure(status, 200));
            }
            Ok((u, resp))
        }))
    }

    /// One request of `method` with `body` (a registry upload): no
    /// redirects followed, not retried (an upload step must not be sent
    /// twice); any status returned for the caller to judge.
    pub(crate) fn send_once(
        &self,
        method: reqwest::Method,
        url: &Url,
        extra: &[(HeaderName, HeaderValue)],
        body: Option<Vec<u8>>,
    ) -> Result<reqwest::Response, HttpError> {
        let net = self.net.clone();
        self.rt
            .block_on(async move { net.send_method(method, url, extra, body).await })
    }

    /// The status of a `HEAD` of `url` (a probe; not retried).
    pub fn head_status(&self, url: &Url) -> Result<u16, HttpError> {
        self.send_once(reqwest::Method::HEAD, url, &[], None)
            .map(|r| r.status().as_u16())
    }

    /// POSTs `len` bytes read from `body` (streamed from a blocking reader,
    /// never held whole) with `extra` headers: the status and the answer's
    /// first 64 KiB. Not retried.
    pub fn post_reader(
        &self,
        url: &Url,
        extra: &[(HeaderName, HeaderValue)],
        body: Box<dyn std::io::Read + Send>,
        len: u64,
    ) -> Result<(u16, String), HttpError> {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let reader = std::thread::spawn(move || {
            let mut body = body;
            loop {
                let mut buf = vec![0u8; 256 << 10];
                match body.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        buf.truncate(n);
                        if tx.blocking_send(Ok(bytes::Bytes::from(buf))).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
        });
        let net = self.net.clone();
        let url = url.clone();
        let mut headers = extra.to_vec();
        headers.push((header::CONTENT_LENGTH, HeaderValue::from(len)));
        let r = self.rt.block_on(async move {
            net.check_destination(&url)?;
            let mut req = net
                .client
                .post(url.clone())
                .body(reqwest::Body::wrap(ChannelBody { rx, len }));
            for (n, v) in &headers {
                req = req.header(n, v);
            }
            let mut resp = req.send().await.map_err(|e| classify_reqwest(&e))?;
            let status = resp.status().as_u16();
            let mut text = Vec::new();
            while let Some(c) = net.next_chunk(&mut resp).await? {
                if text.len() < 64 << 10 {
                    text.extend_from_slice(&c);
                }
            }
            Ok((
                status,
                formats::text::escape(&String::from_utf8_lossy(&text)),
            ))
        });
        let _ = reader.join();
        r
    }

    /// Reads a small answer body: at most `limit` bytes, else `None`
    /// without reading further.
    pub(crate) fn read_small(
        &self,
        mut resp: reqwest::Response,
        limit: u64,
    ) -> Result<Option<Vec<u8>>, HttpError> {
        if resp.content_length().is_some_and(|n| n > limit) {
            return Ok(None);
        }
        let net = self.net.clone();
        self.rt.block_on(async move {
            let mut out = Vec::new();
            while let Some(chunk) = net.next_chunk(&mut resp).await? {
                if (out.len() + chunk.len()) as u64 > limit {
                    return Ok(None);
                }
                out.extend_from_slice(&chunk);
            }
            Ok(Some(out))
        })
    }

    /// The body of a response from [`HttpClient::request`], as a reader
    /// resumed with ranges like [`HttpClient::open`]'s.
    pub(crate) fn body(&self, url: Url, resp: reqwest::Response) -> (Resource, HttpBody) {
        let h = resp.headers();
        let resource = Resource {
            url,
            length: resp.content_length(),
            content_type: h
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            ranges: h
                .get(header::ACCEPT_RANGES)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"bytes")),
            validator: Validator::of(h),
        };
        let body = HttpBody::start(self, resource.clone(), resp);
        (resource, body)
    }
}
