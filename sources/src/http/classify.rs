//! From what the HTTP stack reports to our errors: TLS and
//! client-certificate failures recognised by type, egress refusals,
//! statuses in CDI's words. Whether an attempt is worth retrying is the
//! error's kind (`ErrorKind::is_transient`).

use reqwest::header::HeaderValue;
use reqwest::{StatusCode, Url};

use super::{egress, HttpError};

/// Whether `e` is a rustls error, bare or inside (nested) io::Errors, as
/// handshake alerts such as a refused protocol version arrive; io::Error's
/// `source()` skips the error it wraps, so the chain alone does not show it.
pub(crate) fn tls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(t) = e.downcast_ref::<rustls::Error>() {
        return Some(t);
    }
    e.downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
        .and_then(|inner| tls_error(inner))
}

/// Whether a TLS error says the server wanted, or refused, our client
/// certificate (mTLS): an authentication failure, not a transport one.
pub(crate) fn is_client_auth(e: &rustls::Error) -> bool {
    use rustls::AlertDescription as A;
    matches!(
        e,
        rustls::Error::AlertReceived(
            A::CertificateRequired | A::BadCertificate | A::CertificateUnknown | A::AccessDenied
        )
    )
}

/// Turns a reqwest error into ours: the root cause without the URL (which
/// may carry tokens), TLS and egress refusals recognised.
pub(crate) fn classify_reqwest(e: &reqwest::Error) -> HttpError {
    let mut chain = Vec::new();
    let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let (mut tls, mut client_auth, mut protocol) = (false, false, false);
    while let Some(c) = cur {
        if let Some(d) = c.downcast_ref::<egress::DestinationRefused>() {
            return HttpError::Destination(d.0.clone());
        }
        if let Some(t) = tls_error(c) {
            tls = true;
            client_auth |= is_client_auth(t);
        }
        if c.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_parse)
        {
            protocol = true;
        }
        chain.push(c.to_string());
        cur = c.source();
    }
    chain.dedup();
    let detail = formats::text::escape(&if chain.is_empty() {
        e.to_string()
    } else {
        chain.join(": ")
    });
    if client_auth {
        return HttpError::ClientAuth(detail);
    }
    if tls {
        return HttpError::Tls(detail);
    }
    if protocol {
        // A response we cannot parse (huge headers, garbage): asking again
        // gets the same answer.
        return HttpError::Protocol(detail);
    }
    if e.is_body() || e.is_decode() {
        return HttpError::Interrupted(detail);
    }
    HttpError::Connect { detail }
}

/// A body that broke while being read: always worth resuming, whatever
/// the stack says broke it (an egress refusal aside).
pub(crate) fn body_error(e: &reqwest::Error) -> HttpError {
    match classify_reqwest(e) {
        d @ HttpError::Destination(_) => d,
        HttpError::Connect { detail }
        | HttpError::Tls(detail)
        | HttpError::ClientAuth(detail)
        | HttpError::Interrupted(detail) => HttpError::Interrupted(detail),
        other => HttpError::Interrupted(other.to_string()),
    }
}

/// A status we do not take; its kind says whether to retry (5xx, 408, 429).
pub(crate) fn status_failure(status: StatusCode, expected: u16) -> HttpError {
    HttpError::Status {
        expected,
        status: status.as_u16(),
        reason: status.canonical_reason().unwrap_or("").to_owned(),
    }
}

pub(crate) fn check_scheme(url: &Url) -> Result<(), HttpError> {
    match url.scheme() {
        "http" | "https" => Ok(()),
        other => Err(HttpError::RedirectScheme(formats::text::escape(other))),
    }
}
/// The error for a `206` whose `Content-Range` is not the range asked for.
pub(crate) fn bad_range(asked: String, got: Option<&HeaderValue>) -> HttpError {
    HttpError::BadRange {
        asked,
        got: formats::text::escape(
            &got.map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default(),
        ),
    }
}

#[cfg(test)]
mod client_auth_tests {
    use super::*;
    use formats::error::{Classify, ErrorKind};

    #[test]
    fn alerts_about_our_certificate_are_authentication_failures() {
        use rustls::AlertDescription as A;
        for a in [A::CertificateRequired, A::BadCertificate, A::AccessDenied] {
            assert!(is_client_auth(&rustls::Error::AlertReceived(a)));
        }
        assert!(!is_client_auth(&rustls::Error::AlertReceived(
            A::ProtocolVersion
        )));
        assert_eq!(HttpError::ClientAuth("x".into()).kind(), ErrorKind::Auth);
        let s = HttpError::Status {
            expected: 200,
            status: 401,
            reason: "Unauthorized".into(),
        };
        assert_eq!(s.kind(), ErrorKind::Auth);
    }
}

#[cfg(test)]
mod kind_tests {
    use formats::error::{Classify, ErrorKind};

    use super::*;

    #[test]
    fn the_kind_decides_what_is_retried() {
        let transient = [
            HttpError::Connect {
                detail: "refused".into(),
            },
            HttpError::Interrupted("reset".into()),
            status_failure(StatusCode::SERVICE_UNAVAILABLE, 200),
            status_failure(StatusCode::REQUEST_TIMEOUT, 200),
            status_failure(StatusCode::TOO_MANY_REQUESTS, 200),
        ];
        for e in transient {
            assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
            assert!(e.kind().is_transient(), "{e}");
        }
        let permanent = [
            status_failure(StatusCode::NOT_FOUND, 200),
            status_failure(StatusCode::UNAUTHORIZED, 200),
            HttpError::Idle(600),
            HttpError::Deadline(60),
            HttpError::Protocol("message head is too large".into()),
            HttpError::Tls("bad certificate".into()),
        ];
        for e in permanent {
            assert!(!e.kind().is_transient(), "{e}");
        }
    }
}
