//! The HTTP and HTTPS source.
//!
//! ```text
//! open(url) -- GET, redirects followed here (<= 10, http(s) only, no
//!              downgrade, credentials kept same-origin only), retries
//!   |          with back-off; the final URL is then reused for every request
//!   +--> HttpBody: std::io::Read over the body, resumed with Range +
//!   |    If-Range after a break (no byte fetched twice, no two versions mixed)
//!   +--> HttpRanges: ReadAt over range requests on several connections,
//!        for the qcow2 random-access reader (no scratch copy)
//! ```
//!
//! Network I/O runs on a small tokio runtime owned by the client; the
//! consumers are plain blocking readers on the pipeline's own threads, so
//! no CPU-heavy stage ever runs on an executor thread.

mod classify;
mod egress;
mod error;
mod options;
mod protocol;
mod ranges;
mod stats;
mod stream;
mod tls;
mod urls;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use formats::error::Classify;
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use reqwest::{StatusCode, Url};

pub(crate) use classify::{bad_range, status_failure};
use classify::{body_error, check_scheme, classify_reqwest};
pub use egress::{Cidr, EgressPolicy};
pub use error::HttpError;
pub use options::{parse_header, read_header_dir, HttpOptions, RetryPolicy, DEFAULT_CONNECTIONS};
pub use ranges::HttpRanges;
pub use stats::{HttpCounts, HttpStats};
pub use stream::HttpBody;
pub use urls::{is_url, parse_url, redact, redact_text, scheme_of, MAX_URL_LEN};

/// At most this many redirects are followed (H11).
pub const MAX_REDIRECTS: usize = 10;

/// A body that broke after at least this many new bytes is resumed at once
/// and the failure count starts again; a break after less counts as a
/// failure in a row, backs off and uses up a retry (docs/http.md,
/// "Retries"). A server that sends a byte and closes cannot make us spin.
pub const MIN_PROGRESS: u64 = 1 << 20;

/// Parses `source`, connects and sends the first GET: the client (for
/// later range requests and its counters), what the server said about the
/// resource, and the body.
pub fn open_url(
    source: &str,
    opts: HttpOptions,
) -> Result<(HttpClient, Resource, HttpBody), HttpError> {
    let url = parse_url(source)?;
    let client = HttpClient::new(&url, opts)?;
    let (res, body) = client.open(&url)?;
    Ok((client, res, body))
}

/// GETs a small document at `url` (a JSON answer, not an image): at most
/// `limit` bytes, else a protocol error.
pub fn fetch_small(url: &str, opts: HttpOptions, limit: u64) -> Result<Vec<u8>, HttpError> {
    use std::io::Read;
    let (_client, _res, body) = open_url(url, opts)?;
    let mut out = Vec::new();
    body.take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| HttpError::Interrupted(e.to_string()))?;
    if out.len() as u64 > limit {
        return Err(HttpError::Protocol(format!(
            "answer longer than {limit} bytes"
        )));
    }
    Ok(out)
}

/// What identifies one version of the resource (`If-Range`, H23).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Validator {
    ETag(HeaderValue),
    LastModified(HeaderValue),
}

impl Validator {
    fn of(h: &HeaderMap) -> Option<Self> {
        // Only a strong ETag may be used with If-Range.
        if let Some(e) = h.get(header::ETAG) {
            if !e.as_bytes().starts_with(b"W/") {
                return Some(Validator::ETag(e.clone()));
            }
        }
        h.get(header::LAST_MODIFIED)
            .map(|v| Validator::LastModified(v.clone()))
    }

    fn value(&self) -> &HeaderValue {
        match self {
            Validator::ETag(v) | Validator::LastModified(v) => v,
        }
    }

    fn describe(&self) -> String {
        let name = match self {
            Validator::ETag(_) => "ETag",
            Validator::LastModified(_) => "Last-Modified",
        };
        format!(
            "{name} {}",
            formats::text::escape(&String::from_utf8_lossy(self.value().as_bytes()))
        )
    }
}

/// What the first response told us about the resource.
#[derive(Debug, Clone)]
pub struct Resource {
    /// The URL after redirects, used for every later request.
    pub url: Url,
    /// `Content-Length`, when sent.
    pub length: Option<u64>,
    /// `Content-Type`, when sent.
    pub content_type: Option<String>,
    /// The server announced `Accept-Ranges: bytes`.
    pub ranges: bool,
    pub(crate) validator: Option<Validator>,
}

impl Resource {
    /// Whether random access by range requests is possible and safe: ranges
    /// announced, length known, and a validator to pin the version.
    pub fn random_access(&self) -> bool {
        self.ranges && self.length.is_some() && self.validator.is_some()
    }
}

/// What network tasks share: the client and the download's state. Tasks
/// never hold the runtime itself, so it is always dropped from a plain
/// thread.
pub(crate) struct Net {
    client: reqwest::Client,
    opts: HttpOptions,
    origin: url::Origin,
    started: Instant,
    stats: HttpStats,
    /// An `Authorization` value set by a protocol on top (a registry's
    /// Bearer token): sent to the client's origin only, in place of the
    /// configured credentials.
    auth: std::sync::Mutex<Option<HeaderValue>>,
}

/// A configured client for one source URL.
#[derive(Clone)]
pub struct HttpClient {
    net: Arc<Net>,
    rt: Arc<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient").finish_non_exhaustive()
    }
}

impl HttpClient {
    /// A client for `url` (whose origin is the one credentials go to).
    pub fn new(url: &Url, opts: HttpOptions) -> Result<Self, HttpError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(HttpError::Url {
                url: redact(url),
                reason: "only http and https are supported".into(),
            });
        }
        if url.host().is_none() {
            return Err(HttpError::Url {
                url: redact(url),
                reason: "no host".into(),
            });
        }
        let dirs: Vec<&std::path::Path> = opts.ca_dirs.iter().map(PathBuf::as_path).collect();
        let client = opts
            .client_cert
            .as_ref()
            .map(|(c, k)| (c.as_path(), k.as_path()));
        let tls = tls::client_config_with(&dirs, opts.insecure, client)?;
        let policy = Arc::new(opts.egress.clone());
        let mut defaults = HeaderMap::new();
        defaults.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(egress::PolicyResolver { policy }))
            .user_agent(concat!("diskimport/", env!("CARGO_PKG_VERSION")))
            .default_headers(defaults)
            .http1_only()
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(30).min(opts.idle_timeout))
            .pool_max_idle_per_host(opts.connections.max(1) + 1)
            .build()
            .map_err(|e| HttpError::Config(format!("HTTP client setup: {e}")))?;
        // One worker, as the upload server: the reads are a few
        // connections' tasks, and two workers moved them between threads
        // for nothing (warm os.qcow2 over HTTP, 2.07 GB: 1.01-1.26 s with
        // two, 0.92-1.12 s with one; benches/RESULTS.md, issue 13). The
        // pipeline's own threads do the rest; nothing here blocks.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("http")
            .enable_all()
            .build()
            .map_err(|e| HttpError::Config(format!("Starting the HTTP runtime: {e}")))?;
        Ok(HttpClient {
            net: Arc::new(Net {
                client,
                opts,
                origin: url.origin(),
                started: Instant::now(),
                stats: HttpStats::default(),
                auth: std::sync::Mutex::new(None),
            }),
            rt: Arc::new(rt),
        })
    }

    /// The download's counters.
    pub fn stats(&self) -> HttpCounts {
        self.net.stats.counts()
    }

    /// Opens the URL: the first GET, redirects resolved once. Returns what
    /// the server said about the resource and a reader over the body.
    pub fn open(&self, url: &Url) -> Result<(Resource, HttpBody), HttpError> {
        let net = self.net.clone();
        let (final_url, resp) = self.rt.block_on(net.retrying(|| async {
            let (u, resp) = net.follow(url, &[]).await?;
            if resp.status() != StatusCode::OK {
                return Err(status_failure(resp.status(), 200));
            }
            Ok((u, resp))
        }))?;
        if resp
            .headers()
            .get(header::CONTENT_ENCODING)
            .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
        {
            // H19: never decoded transparently; the bytes as served are the
            // source (and what a checksum covers).
            tracing::warn!("Server sent a Content-Encoding although identity was asked for.");
        }
        Ok(self.body(final_url, resp))
    }

    /// Random access to `resource` by range requests; bytes received are
    /// counted on `meter`.
    pub fn ranges(
        &self,
        resource: &Resource,
        meter: Option<Arc<crate::meter::Meter>>,
    ) -> HttpRanges {
        HttpRanges::new(self, resource.clone(), meter)
    }
}

impl Net {
    fn opts(&self) -> &HttpOptions {
        &self.opts
    }

    fn deadline_left(&self) -> Result<Option<Duration>, HttpError> {
        match self.opts.deadline {
            None => Ok(None),
            Some(d) => d
                .checked_sub(self.started.elapsed())
                .filter(|left| !left.is_zero())
                .map(Some)
                .ok_or(HttpError::Deadline(d.as_secs())),
        }
    }

    /// How long to wait for the next byte: the idle timeout, cut by the
    /// deadline. Returns the error to give when it passes.
    fn wait_limit(&self) -> Result<(Duration, HttpError), HttpError> {
        let idle = self.opts.idle_timeout;
        Ok(match self.deadline_left()? {
            Some(left) if left < idle => (
                left,
                HttpError::Deadline(self.opts.deadline.unwrap_or_default().as_secs()),
            ),
            _ => (idle, HttpError::Idle(idle.as_secs())),
        })
    }

    /// Refuses IP-literal hosts the policy denies (names are checked by the
    /// resolver at connect time).
    fn check_destination(&self, url: &Url) -> Result<(), HttpError> {
        let ip = match url.host() {
            Some(url::Host::Ipv4(a)) => std::net::IpAddr::V4(a),
            Some(url::Host::Ipv6(a)) => std::net::IpAddr::V6(a),
            _ => return Ok(()),
        };
        if self.opts.egress.permits(ip) {
            Ok(())
        } else {
            Err(HttpError::Destination(ip.to_string()))
        }
    }

    /// One GET, credentials and user headers only to the original origin.
    async fn send(
        &self,
        url: &Url,
        extra: &[(HeaderName, HeaderValue)],
    ) -> Result<reqwest::Response, HttpError> {
        self.send_method(reqwest::Method::GET, url, extra, None)
            .await
    }

    /// One request of any method, with an optional body; the same rules
    /// for credentials and headers as a GET.
    async fn send_method(
        &self,
        method: reqwest::Method,
        url: &Url,
        extra: &[(HeaderName, HeaderValue)],
        body: Option<Vec<u8>>,
    ) -> Result<reqwest::Response, HttpError> {
        self.check_destination(url)?;
        let (limit, on_timeout) = self.wait_limit()?;
        let opts = self.opts();
        // The HTTP stack would add a second Authorization header from the
        // URL's userinfo: the request goes without it, and the one
        // credential is chosen below (docs/http.md, "Credentials").
        let mut bare = url.clone();
        let _ = bare.set_username("");
        let _ = bare.set_password(None);
        let mut req = self.client.request(method, bare);
        if let Some(b) = body {
            req = req.body(b);
        }
        let token = self.auth.lock().unwrap_or_else(|p| p.into_inner()).clone();
        // Exactly one Authorization header: one passed with the request
        // wins, then a protocol token, then the configured credentials.
        let own = extra.iter().any(|(n, _)| n == header::AUTHORIZATION);
        if own || url.origin() != self.origin {
            // Nothing of ours goes to another origin.
        } else if let Some(token) = token {
            req = req.header(header::AUTHORIZATION, token);
        } else {
            let explicit = opts
                .headers
                .iter()
                .rposition(|(n, _)| n == header::AUTHORIZATION);
            for (i, (n, v)) in opts.headers.iter().enumerate() {
                if n != header::AUTHORIZATION || Some(i) == explicit {
                    req = req.header(n, v);
                }
            }
            if explicit.is_some() {
                // An Authorization header given as a header wins.
            } else if let Some(user) = &opts.username {
                req = req.basic_auth(user, opts.password.as_deref());
            } else if !url.username().is_empty() {
                req = req.basic_auth(url.username(), url.password());
            }
        }
        for (n, v) in extra {
            req = req.header(n, v);
        }
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(limit, req.send()).await {
            Err(_) => Err(on_timeout),
            Ok(Err(e)) => Err(classify_reqwest(&e)),
            Ok(Ok(r)) => Ok(r),
        }
    }

    /// GET `url`, following redirects by our rules, until a final answer;
    /// `extra` headers go to hops on `start`'s origin only.
    async fn follow(
        &self,
        start: &Url,
        extra: &[(HeaderName, HeaderValue)],
    ) -> Result<(Url, reqwest::Response), HttpError> {
        let mut url = start.clone();
        for hop in 0..=MAX_REDIRECTS {
            let extra = if url.origin() == start.origin() {
                extra
            } else {
                &[]
            };
            let resp = self.send(&url, extra).await?;
            let status = resp.status();
            if !status.is_redirection() || status == StatusCode::NOT_MODIFIED {
                return Ok((url, resp));
            }
            if hop == MAX_REDIRECTS {
                break;
            }
            let next = resp
                .headers()
                .get(header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| url.join(l).ok())
                .ok_or(HttpError::BadRedirect {
                    status: status.as_u16(),
                })?;
            check_scheme(&next)?;
            if next.as_str().len() > MAX_URL_LEN {
                return Err(HttpError::Url {
                    url: redact_text(next.as_str()),
                    reason: format!("redirect target longer than {MAX_URL_LEN} bytes"),
                });
            }
            if url.scheme() == "https" && next.scheme() == "http" {
                return Err(HttpError::Downgrade(redact(&next)));
            }
            tracing::debug!(to = %redact(&next), "following redirect");
            url = next;
        }
        Err(HttpError::TooManyRedirects(MAX_REDIRECTS))
    }

    /// The wait before retry `attempt` after `why`: the back-off delay,
    /// logged and counted, then slept. Returns false, without sleeping,
    /// when the deadline would pass first; `at` is where a body broke.
    async fn back_off(
        &self,
        attempt: u32,
        progressed: bool,
        why: &HttpError,
        at: Option<u64>,
    ) -> Result<bool, HttpError> {
        let delay = self.opts.retry.delay_after(attempt, progressed);
        if self.deadline_left()?.is_some_and(|left| left <= delay) {
            return Ok(false);
        }
        match at {
            Some(at) => tracing::warn!(at, "{why}; retrying in {delay:?}"),
            None => tracing::warn!(attempt = attempt + 1, "{why}; retrying in {delay:?}"),
        }
        self.stats.retries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(delay).await;
        Ok(true)
    }

    /// The error for a deadline that leaves no time for a retry.
    fn deadline_error(&self) -> HttpError {
        HttpError::Deadline(self.opts.deadline.unwrap_or_default().as_secs())
    }

    /// The next piece of a response body, within the idle timeout (and the
    /// deadline). A broken body is a transient failure; a timeout is not.
    async fn next_chunk(
        &self,
        resp: &mut reqwest::Response,
    ) -> Result<Option<bytes::Bytes>, HttpError> {
        let (limit, on_timeout) = self.wait_limit()?;
        match tokio::time::timeout(limit, resp.chunk()).await {
            Err(_) => Err(on_timeout),
            Ok(Ok(chunk)) => Ok(chunk),
            Ok(Err(e)) => Err(body_error(&e)),
        }
    }

    /// Runs `attempt` until it succeeds, fails for good, or the retries
    /// are used up.
    async fn retrying<T, F, Fut>(&self, attempt: F) -> Result<T, HttpError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, HttpError>>,
    {
        self.retrying_up_to(self.opts.retry.retries, attempt).await
    }

    /// [`Net::retrying`] with at most `retries` retries.
    async fn retrying_up_to<T, F, Fut>(&self, retries: u32, mut attempt: F) -> Result<T, HttpError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, HttpError>>,
    {
        let mut n = 0;
        loop {
            match attempt().await {
                Ok(v) => return Ok(v),
                Err(e) if e.kind().is_transient() && n < retries => {
                    if !self.back_off(n, false, &e, None).await? {
                        return Err(e);
                    }
                    n += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}
