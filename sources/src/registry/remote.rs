//! The distribution protocol over our HTTP client: `/v2/` ping, anonymous,
//! Basic and Bearer token auth, manifests by tag or digest, blobs by
//! digest with redirects (docs/registry.md, "Registry protocol").
//!
//! A thin client rather than oci-client: it reuses the HTTP source's TLS
//! (CA directories), egress policy, retries and range resume of a broken
//! body, and the credential rule (one Authorization header, to its origin
//! only), none of which oci-client exposes.

use std::io::Read;

use formats::error::{Classify, ErrorKind};
use reqwest::header::{self, HeaderName, HeaderValue};
use reqwest::{StatusCode, Url};

use super::manifest::{Descriptor, ACCEPT, MAX_MANIFEST};
use super::{DockerRef, Fetched, RegistryError, Store};
use crate::http::{HttpClient, HttpError, HttpOptions};

/// The largest token answer or error body read.
const MAX_SMALL: u64 = 1 << 20;

/// An authentication challenge (`WWW-Authenticate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Challenge {
    scheme: String,
    params: Vec<(String, String)>,
}

impl Challenge {
    fn param(&self, k: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    }
}

/// Parses `Scheme k="v", k2=v2` (quoted strings with `\` escapes).
pub(crate) fn parse_challenge(h: &str) -> Option<Challenge> {
    let h = h.trim();
    let (scheme, mut rest) = match h.split_once(char::is_whitespace) {
        Some((s, r)) => (s, r.trim_start()),
        None => (h, ""),
    };
    let mut params = Vec::new();
    while !rest.is_empty() {
        let (k, r) = rest.split_once('=')?;
        let k = k.trim().trim_start_matches(',').trim();
        let r = r.trim_start();
        let (v, r) = if let Some(r) = r.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = r.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => v.extend(chars.next().map(|(_, c)| c)),
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => v.push(c),
                }
            }
            (v, &r[end?..])
        } else {
            let end = r.find(',').unwrap_or(r.len());
            (r[..end].trim().to_owned(), &r[end..])
        };
        params.push((k.to_owned(), v));
        rest = r.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge {
        scheme: scheme.to_owned(),
        params,
    })
}

/// The token realm of a Bearer challenge, refused unless it is https, or
/// http for a registry reached over plain http or marked insecure (R03).
fn realm_url(realm: &str, insecure: bool) -> Result<Url, RegistryError> {
    let url = Url::parse(realm)
        .map_err(|_| pull_error(format!("unusable token realm {realm:?}"), ErrorKind::Auth))?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if insecure => Ok(url),
        _ => Err(pull_error(
            format!(
                "token realm {} must be https (the registry is not marked insecure)",
                crate::http::redact(&url)
            ),
            ErrorKind::Auth,
        )),
    }
}

/// A repository on a registry.
pub(crate) struct Remote {
    client: HttpClient,
    base: Url,
    reference: DockerRef,
    opts: HttpOptions,
    /// The registry answered over plain http (marked insecure).
    plain: bool,
    /// A Bearer challenge, once seen.
    bearer: Option<Challenge>,
    /// The token scope's actions: `pull`, or `pull,push` for uploads.
    actions: &'static str,
}

fn pull_error(detail: String, kind: ErrorKind) -> RegistryError {
    RegistryError::Pull {
        detail: formats::text::escape(&detail),
        kind,
    }
}

fn from_http(what: &str, e: HttpError) -> RegistryError {
    let kind = e.kind();
    pull_error(format!("{what}: {e}"), kind)
}

impl Remote {
    /// Pings the registry (`GET /v2/`): https, or plain http when the
    /// registry is marked insecure and https cannot be reached (CDI's
    /// fallback); learns how it wants to be authenticated.
    pub(crate) fn connect(
        reference: &DockerRef,
        opts: &HttpOptions,
    ) -> Result<Self, RegistryError> {
        Self::connect_for(reference, opts, "pull")
    }

    /// [`Remote::connect`] with the token scope's `actions`.
    pub(crate) fn connect_for(
        reference: &DockerRef,
        opts: &HttpOptions,
        actions: &'static str,
    ) -> Result<Self, RegistryError> {
        let try_scheme = |scheme: &str| -> Result<Remote, RegistryError> {
            let base =
                Url::parse(&format!("{scheme}://{}/v2/", reference.host())).map_err(|e| {
                    RegistryError::Reference {
                        reference: formats::text::escape(&reference.to_string()),
                        reason: format!("bad registry host: {e}"),
                    }
                })?;
            let client = HttpClient::new(&base, opts.clone())?;
            let mut r = Remote {
                client,
                base,
                reference: reference.clone(),
                opts: opts.clone(),
                plain: scheme == "http",
                bearer: None,
                actions,
            };
            // The https probe before CDI's plain-http fallback is asked
            // once (as containers/image does), not retried with back-off.
            r.ping(!(scheme == "https" && opts.insecure))?;
            Ok(r)
        };
        match try_scheme("https") {
            Err(RegistryError::Pull { kind, detail })
                if opts.insecure && matches!(kind, ErrorKind::Unavailable | ErrorKind::Source) =>
            {
                tracing::info!(
                    registry = %formats::text::escape(reference.host()),
                    "https failed ({detail}); the registry is marked insecure: trying plain http"
                );
                try_scheme("http")
            }
            other => other,
        }
    }

    fn ping(&mut self, retry: bool) -> Result<(), RegistryError> {
        let url = self.base.clone();
        let (_, resp) = self
            .client
            .request_with(&url, &[], retry)
            .map_err(|e| from_http("pinging the registry", e))?;
        match resp.status() {
            StatusCode::OK => Ok(()),
            StatusCode::UNAUTHORIZED => {
                let ch = self.challenge(&resp);
                self.login(ch)
            }
            s => Err(pull_error(
                format!("pinging the registry: status {s}"),
                status_kind(s),
            )),
        }
    }

    fn challenge(&self, resp: &reqwest::Response) -> Option<Challenge> {
        resp.headers()
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(parse_challenge)
            .find(|c| c.scheme.eq_ignore_ascii_case("bearer"))
            .or_else(|| {
                resp.headers()
                    .get(header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_challenge)
            })
    }

    /// Answers a challenge: Basic uses the configured credentials (the
    /// client sends them to the registry's origin); Bearer fetches a token
    /// from the realm, with the credentials sent only there (R01, R03).
    fn login(&mut self, ch: Option<Challenge>) -> Result<(), RegistryError> {
        let Some(ch) = ch else {
            return Err(pull_error(
                "the registry wants authentication but sent no challenge".into(),
                ErrorKind::Auth,
            ));
        };
        if ch.scheme.eq_ignore_ascii_case("basic") {
            if self.opts.username.is_none() {
                return Err(pull_error(
                    "unauthorized: authentication required (no credentials given)".into(),
                    ErrorKind::Auth,
                ));
            }
            return Ok(());
        }
        if !ch.scheme.eq_ignore_ascii_case("bearer") {
            return Err(RegistryError::Unsupported(format!(
                "authentication scheme {:?}",
                formats::text::escape(&ch.scheme)
            )));
        }
        let realm = ch
            .param("realm")
            .ok_or_else(|| pull_error("Bearer challenge without realm".into(), ErrorKind::Auth))?;
        let mut url = realm_url(realm, self.plain || self.opts.insecure)?;
        let scope = format!("repository:{}:{}", self.reference.repository, self.actions);
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = ch.param("service") {
                q.append_pair("service", s);
            }
            q.append_pair("scope", &scope);
        }
        let mut extra: Vec<(HeaderName, HeaderValue)> = Vec::new();
        if let Some(user) = &self.opts.username {
            use base64::Engine as _;
            let cred = base64::engine::general_purpose::STANDARD.encode(format!(
                "{user}:{}",
                self.opts.password.as_deref().unwrap_or("")
            ));
            let mut v = HeaderValue::from_str(&format!("Basic {cred}")).map_err(|_| {
                RegistryError::Usage("credentials are not valid header text".into())
            })?;
            v.set_sensitive(true);
            extra.push((header::AUTHORIZATION, v));
        }
        // The token answer is read from the realm's own request, through
        // the same egress policy and TLS settings.
        let (_, resp) = self
            .client
            .request(&url, &extra)
            .map_err(|e| from_http("fetching a registry token", e))?;
        let status = resp.status();
        if status != StatusCode::OK {
            return Err(pull_error(
                format!("fetching a registry token: status {status}"),
                if status.is_client_error() {
                    ErrorKind::Auth
                } else {
                    status_kind(status)
                },
            ));
        }
        let body = self
            .client
            .read_small(resp, MAX_SMALL)
            .map_err(|e| from_http("fetching a registry token", e))?
            .ok_or_else(|| RegistryError::Limit("token answer larger than 1 MiB".into()))?;
        #[derive(serde::Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let t: Token = serde_json::from_slice(&body)
            .map_err(|_| pull_error("token answer is not JSON".into(), ErrorKind::Auth))?;
        let token = t
            .token
            .or(t.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| pull_error("token answer without a token".into(), ErrorKind::Auth))?;
        let v = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| pull_error("token is not valid header text".into(), ErrorKind::Auth))?;
        self.client.set_auth(Some(v));
        self.bearer = Some(ch);
        Ok(())
    }

    /// A GET under the repository; on a first 401 with a challenge, log in
    /// and ask once more (R01, R02: no loop).
    fn get(
        &mut self,
        path: &str,
        extra: &[(HeaderName, HeaderValue)],
    ) -> Result<(Url, reqwest::Response), RegistryError> {
        let url = self.url(path)?;
        self.with_login(
            |c| {
                c.request(&url, extra)
                    .map_err(|e| from_http(&format!("reading {path}"), e))
            },
            |(_, r)| r,
        )
    }

    /// Sends with `send`; on a first 401 with a challenge, logs in and sends
    /// once more (R01, R02: no loop). `response` finds the answer in what
    /// `send` returns.
    fn with_login<T>(
        &mut self,
        send: impl Fn(&HttpClient) -> Result<T, RegistryError>,
        response: impl Fn(&T) -> &reqwest::Response,
    ) -> Result<T, RegistryError> {
        let first = send(&self.client)?;
        if response(&first).status() != StatusCode::UNAUTHORIZED {
            return Ok(first);
        }
        let ch = self.challenge(response(&first));
        self.login(ch)?;
        send(&self.client)
    }

    /// The repository's URL for `path` (`blobs/uploads/`, `manifests/x`).
    pub(crate) fn url(&self, path: &str) -> Result<Url, RegistryError> {
        self.base
            .join(&format!("{}/{path}", self.reference.repository))
            .map_err(|e| RegistryError::Usage(format!("bad repository path: {e}")))
    }

    /// One request of any method (uploads); on a first 401 log in and
    /// send it once more.
    pub(crate) fn call(
        &mut self,
        method: reqwest::Method,
        url: &Url,
        extra: &[(HeaderName, HeaderValue)],
        body: Option<Vec<u8>>,
    ) -> Result<reqwest::Response, RegistryError> {
        self.with_login(
            |c| {
                c.send_once(method.clone(), url, extra, body.clone())
                    .map_err(|e| from_http(&format!("{method} {}", crate::http::redact(url)), e))
            },
            |r| r,
        )
    }

    /// The registry's error text for a failed request (`manifest unknown`).
    pub(crate) fn failure(&self, what: String, resp: reqwest::Response) -> RegistryError {
        let status = resp.status();
        let body = self.client.read_small(resp, MAX_SMALL).ok().flatten();
        #[derive(serde::Deserialize)]
        struct Errors {
            errors: Vec<Item>,
        }
        #[derive(serde::Deserialize)]
        struct Item {
            #[serde(default)]
            message: String,
        }
        let msg = body
            .and_then(|b| serde_json::from_slice::<Errors>(&b).ok())
            .and_then(|e| {
                e.errors
                    .into_iter()
                    .map(|i| i.message)
                    .find(|m| !m.is_empty())
            })
            .unwrap_or_else(|| format!("status {status}"));
        pull_error(format!("{what}: {msg}"), status_kind(status))
    }

    fn fetch_manifest(
        &mut self,
        reference: &str,
        digest: Option<String>,
    ) -> Result<Fetched, RegistryError> {
        let accept = [(header::ACCEPT, HeaderValue::from_static(ACCEPT))];
        let (_, resp) = self.get(&format!("manifests/{reference}"), &accept)?;
        let what = format!(
            "reading manifest {reference} in {}/{}",
            self.reference.domain, self.reference.repository
        );
        if resp.status() != StatusCode::OK {
            return Err(self.failure(what, resp));
        }
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = self
            .client
            .read_small(resp, MAX_MANIFEST)
            .map_err(|e| from_http(&what, e))?
            .ok_or_else(|| {
                RegistryError::Limit(format!("manifest larger than {MAX_MANIFEST} bytes"))
            })?;
        Ok(Fetched {
            bytes,
            content_type,
            digest,
        })
    }
}

fn status_kind(s: StatusCode) -> ErrorKind {
    match s.as_u16() {
        401 | 403 => ErrorKind::Auth,
        408 | 429 | 500..=599 => ErrorKind::Unavailable,
        _ => ErrorKind::Source,
    }
}

impl Store for Remote {
    fn top(&mut self) -> Result<Fetched, RegistryError> {
        let r = self.reference.manifest_reference().to_owned();
        let digest = self.reference.digest.clone();
        self.fetch_manifest(&r, digest)
    }

    fn manifest(&mut self, desc: &Descriptor) -> Result<Fetched, RegistryError> {
        self.fetch_manifest(&desc.digest, Some(desc.digest.clone()))
    }

    /// Blobs only from the registry by digest: foreign `urls` are never
    /// fetched (R09); a redirect (to a CDN) is followed without the token,
    /// which goes to the registry's origin only (R10).
    fn blob(&mut self, desc: &Descriptor) -> Result<Box<dyn Read + Send>, RegistryError> {
        super::manifest::check_digest(&desc.digest)?;
        let (url, resp) = self.get(&format!("blobs/{}", desc.digest), &[])?;
        if resp.status() != StatusCode::OK {
            return Err(self.failure(format!("reading blob {}", desc.digest), resp));
        }
        let (_, body) = self.client.body(url, resp);
        Ok(Box::new(body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_realms_must_be_https_unless_the_registry_is_insecure() {
        // R03: an https registry cannot send its credentials to an http realm.
        let e = realm_url("http://auth.example/token", false).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Auth);
        assert!(e.to_string().contains("must be https"), "{e}");
        for bad in [
            "ftp://auth.example/token",
            "file:///etc/passwd",
            "not a url",
        ] {
            assert!(realm_url(bad, true).is_err(), "{bad}");
        }
        assert_eq!(
            realm_url("https://auth.example/t", false).unwrap().as_str(),
            "https://auth.example/t"
        );
        assert_eq!(
            realm_url("http://127.0.0.1:5/t", true).unwrap().as_str(),
            "http://127.0.0.1:5/t"
        );
    }

    #[test]
    fn challenges_parse_with_quotes_escapes_and_commas() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "Bearer");
        assert_eq!(c.param("realm"), Some("https://auth.example/token"));
        assert_eq!(c.param("service"), Some("registry.example"));
        assert_eq!(c.param("scope"), Some("repository:a/b:pull,push"));
        let c = parse_challenge(r#"Basic realm="basic-realm""#).unwrap();
        assert_eq!(
            (c.scheme.as_str(), c.param("realm")),
            ("Basic", Some("basic-realm"))
        );
        let c = parse_challenge(r#"Bearer realm="a\"b", service=svc"#).unwrap();
        assert_eq!(
            (c.param("realm"), c.param("service")),
            (Some("a\"b"), Some("svc"))
        );
        assert_eq!(parse_challenge(r#"Bearer realm="unterminated"#), None);
    }
}
