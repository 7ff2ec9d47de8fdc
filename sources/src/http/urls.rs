//! Source URLs: which strings are http(s) URLs, parsing with our bounds,
//! and how a URL may be shown (never its userinfo, query or fragment).

use reqwest::Url;

use super::HttpError;

/// Longest URL accepted: the HTTP stack refuses longer request targets,
/// so a longer one is a usage error at once, never a retried failure.
pub const MAX_URL_LEN: usize = 65534;
/// Whether `s` names an HTTP(S) source.
pub fn is_url(s: &str) -> bool {
    scheme_of(s).is_some_and(|p| p.eq_ignore_ascii_case("http") || p.eq_ignore_ascii_case("https"))
}

/// The URL scheme of `s` when it looks like `scheme://...` (a local path
/// with `://` in it is unusual enough to be taken as a URL).
pub fn scheme_of(s: &str) -> Option<&str> {
    let (scheme, _) = s.split_once("://")?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
    .then_some(scheme)
}
/// Parses a source URL; the error shows it as [`redact_text`] does.
pub fn parse_url(source: &str) -> Result<Url, HttpError> {
    let invalid = |reason: String| HttpError::Url {
        url: redact_text(source),
        reason,
    };
    if source.len() > MAX_URL_LEN {
        return Err(invalid(format!("longer than {MAX_URL_LEN} bytes")));
    }
    Url::parse(source).map_err(|e| invalid(e.to_string()))
}

/// A URL that may not parse, as it may be shown: no userinfo (whatever
/// precedes the last `@` of the authority), no query or fragment (signed
/// URLs carry tokens there), control characters escaped, at most 256
/// characters.
pub fn redact_text(source: &str) -> String {
    let bare = source.split(['?', '#']).next().unwrap_or_default();
    let shown = match bare.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(end);
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{host}{path}")
        }
        None => bare.to_owned(),
    };
    let mut shown = formats::text::escape(&shown);
    if shown.len() > 256 {
        let mut cut = 256;
        while !shown.is_char_boundary(cut) {
            cut -= 1;
        }
        shown.truncate(cut);
        shown.push_str("...");
    }
    shown
}

/// A URL as it may be shown: no credentials, no query (signed URLs carry
/// tokens there), control characters escaped.
pub fn redact(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    if u.query().is_some() {
        u.set_query(Some("..."));
    }
    u.set_fragment(None);
    formats::text::escape(u.as_str())
}
