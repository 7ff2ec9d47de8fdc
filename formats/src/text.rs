//! Making attacker-controlled strings safe to show in one line of a log or
//! termination message (Q16, P04 in docs/ids.md).

/// Escapes control characters (including newlines and ESC) and backslashes
/// so that the result is one printable line.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Escapes arbitrary bytes (for names read from an image) the same way.
pub fn escape_bytes(b: &[u8]) -> String {
    escape(&String::from_utf8_lossy(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_removes_newlines_and_escape_sequences() {
        let s = escape("\x1b[31mEVIL\x1b[0m\nInjected");
        assert!(!s.contains('\n'));
        assert!(!s.contains('\x1b'));
        assert_eq!(s, "\\u{1b}[31mEVIL\\u{1b}[0m\\nInjected");
    }

    #[test]
    fn escape_keeps_printable_unicode() {
        assert_eq!(escape("disk-é.img"), "disk-é.img");
    }
}
