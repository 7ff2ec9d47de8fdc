//! What an import reports: the exit code, the termination message CDI's
//! controller reads (one line, at most 4096 bytes, JSON on exit 0), and the
//! failure wording CDI uses.

use std::collections::BTreeMap;
use std::path::Path;

use sources::http::HttpError;

use super::under;
use crate::error::describe;
use crate::ImportError;

/// Kubernetes truncates termination messages here; CDI refuses longer JSON.
pub const MAX_TERMINATION: usize = 4096;

/// What the process reports: its exit code, the termination message, and
/// a line for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Process exit code.
    pub exit_code: u8,
    /// The termination message; None: none is written (CDI's behaviour for
    /// an unparsable `PREALLOCATION`).
    pub termination: Option<String>,
    /// For the log.
    pub log: String,
}

impl Outcome {
    pub(super) fn failed(message: String) -> Self {
        let message = one_line(&message);
        Outcome {
            exit_code: 1,
            termination: Some(message.clone()),
            log: message,
        }
    }

    /// CDI's answer to a checksum mismatch: the target is cleaned (by the
    /// caller), the message says "checksum mismatch", and the exit is 0 so
    /// the pod is not restarted in a loop.
    pub(super) fn checksum_mismatch(message: String) -> Self {
        Outcome {
            exit_code: 0,
            termination: Some(json_message(false, &BTreeMap::new(), &message)),
            log: message,
        }
    }

    pub(super) fn complete(preallocation_applied: bool, message: &str) -> Self {
        Self::complete_with_labels(preallocation_applied, &BTreeMap::new(), message)
    }

    pub(super) fn complete_with_labels(
        preallocation_applied: bool,
        labels: &BTreeMap<String, String>,
        message: &str,
    ) -> Self {
        Outcome {
            exit_code: 0,
            termination: Some(json_message(preallocation_applied, labels, message)),
            log: message.to_owned(),
        }
    }
}

/// First line only, control characters escaped, at most
/// [`MAX_TERMINATION`] bytes (cut on a character boundary).
pub fn one_line(s: &str) -> String {
    let first = s.lines().next().unwrap_or_default();
    let mut out = formats::text::escape(first);
    if out.len() > MAX_TERMINATION {
        let mut cut = MAX_TERMINATION;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

/// CDI's JSON termination message, fields in CDI's order; the message is
/// shortened so the whole stays within [`MAX_TERMINATION`] bytes.
pub fn json_message(
    preallocation_applied: bool,
    labels: &BTreeMap<String, String>,
    message: &str,
) -> String {
    let render = |m: &str| {
        let mut s = format!(
            "{{\"scratchSpaceRequired\":false,\"preallocationApplied\":{preallocation_applied}"
        );
        if !labels.is_empty() {
            s.push_str(",\"labels\":");
            s.push_str(&serde_json::to_string(labels).unwrap_or_else(|_| "{}".into()));
        }
        s.push_str(",\"message\":");
        s.push_str(&serde_json::to_string(m).unwrap_or_else(|_| "\"\"".into()));
        s.push('}');
        s
    };
    let mut m = one_line(message);
    loop {
        let s = render(&m);
        if s.len() <= MAX_TERMINATION || m.is_empty() {
            return s;
        }
        let mut cut = m
            .len()
            .saturating_sub(s.len() - MAX_TERMINATION)
            .min(m.len() - 1);
        while !m.is_char_boundary(cut) {
            cut -= 1;
        }
        m.truncate(cut);
    }
}

/// Writes the termination message: mode 0600, one line.
pub fn write_termination(root: &Path, message: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = under(root, Path::new("/dev/termination-log"));
    let mut f = std::fs::File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(message.as_bytes())
}

pub(super) fn failure_message(e: &ImportError) -> String {
    match e {
        ImportError::TooLarge {
            virtual_size,
            available,
        } => format!(
            "Unable to process data: virtual image size {virtual_size} is larger than the reported available storage {available}. A larger PVC is required"
        ),
        _ => processing_failed(e, e.http()),
    }
}

/// CDI's failure text: errors reaching the HTTP server keep their own
/// words ("Unable to connect to http data source: ..."), everything else
/// is "Unable to process data: ...". Decided on the error's type.
pub(super) fn processing_failed(
    e: &(dyn std::error::Error + 'static),
    http: Option<&HttpError>,
) -> String {
    let text = describe(e, false);
    if http.is_some_and(HttpError::is_connect_failure) {
        text
    } else {
        format!("Unable to process data: {text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn termination_messages_are_one_bounded_line() {
        let long = format!("a\u{1b}[31m{}\nsecond line", "x".repeat(10_000));
        let plain = one_line(&long);
        assert!(plain.len() <= MAX_TERMINATION);
        assert!(!plain.contains('\n') && !plain.contains('\u{1b}'));
        let json = json_message(false, &BTreeMap::new(), &format!("é{}", "\"".repeat(5000)));
        assert!(json.len() <= MAX_TERMINATION, "{}", json.len());
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["scratchSpaceRequired"], false);
        let ok = json_message(true, &BTreeMap::new(), "Import Complete");
        assert_eq!(
            ok,
            r#"{"scratchSpaceRequired":false,"preallocationApplied":true,"message":"Import Complete"}"#
        );
    }
}
