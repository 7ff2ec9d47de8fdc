//! The little HTTP/1.1 the importer needs: `GET`/`HEAD` of one file with
//! single byte ranges and `If-Range`, and `GET /info`. Request heads are
//! bounded (16 KiB, 10 s to arrive, as CDI's `ReadHeaderTimeout`).

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const MAX_HEAD: usize = 16 << 10;
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_REQUESTS: usize = 10_000;

struct Request {
    method: String,
    path: String,
    range: Option<String>,
    if_range: Option<String>,
    close: bool,
}

fn read_head(r: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = r
            .by_ref()
            .take((MAX_HEAD - head.len()) as u64 + 1)
            .read_until(b'\n', &mut line)
            .ok()?;
        if n == 0 || head.len() + n > MAX_HEAD {
            return None;
        }
        let empty = line == b"\r\n" || line == b"\n";
        head.extend_from_slice(&line);
        if empty {
            break;
        }
    }
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.lines();
    let mut first = lines.next()?.split_whitespace();
    let (method, path, version) = (
        first.next()?.to_owned(),
        first.next()?.to_owned(),
        first.next()?,
    );
    let mut req = Request {
        method,
        path,
        range: None,
        if_range: None,
        close: version == "HTTP/1.0",
    };
    for l in lines {
        let Some((n, v)) = l.split_once(':') else {
            continue;
        };
        let v = v.trim().to_owned();
        match n.trim().to_ascii_lowercase().as_str() {
            "range" => req.range = Some(v),
            "if-range" => req.if_range = Some(v),
            "connection" => req.close |= v.eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    Some(req)
}

/// Serves requests on one connection.
pub(crate) fn serve_conn(conn: TcpStream, file: &Path, name: &str) {
    let Ok(mut w) = conn.try_clone() else { return };
    let mut r = BufReader::new(conn);
    for _ in 0..MAX_REQUESTS {
        let _ = r.get_ref().set_read_timeout(Some(HEADER_TIMEOUT));
        let Some(req) = read_head(&mut r) else { return };
        if !answer(&mut w, &req, file, name) || req.close {
            return;
        }
    }
}

fn reply(w: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) -> bool {
    let mut h = format!("HTTP/1.1 {status}\r\n");
    for (n, v) in headers {
        h.push_str(&format!("{n}: {v}\r\n"));
    }
    h.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    w.write_all(h.as_bytes()).is_ok() && w.write_all(body).is_ok()
}

fn json_string(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn answer(w: &mut TcpStream, req: &Request, file: &Path, name: &str) -> bool {
    let path = req.path.split('?').next().unwrap_or("");
    let head = req.method == "HEAD";
    if req.method != "GET" && !head {
        return reply(
            w,
            "405 Method Not Allowed",
            &[("Allow", "GET, HEAD".into())],
            b"",
        );
    }
    if path == "/info" {
        let env: Vec<String> = std::env::vars_os()
            .map(|(k, v)| json_string(&format!("{}={}", k.to_string_lossy(), v.to_string_lossy())))
            .collect();
        let body = format!("{{\"env\":[{}]}}\n", env.join(","));
        let body = if head { Vec::new() } else { body.into_bytes() };
        return reply(
            w,
            "200 OK",
            &[("Content-Type", "application/json".into())],
            &body,
        );
    }
    if path.strip_prefix('/') != Some(name) {
        return reply(
            w,
            "404 Not Found",
            &[("Content-Type", "text/plain; charset=utf-8".into())],
            b"404 page not found\n",
        );
    }
    let Ok(mut f) = File::open(file) else {
        return reply(w, "500 Internal Server Error", &[], b"");
    };
    let Ok(meta) = f.metadata() else {
        return reply(w, "500 Internal Server Error", &[], b"");
    };
    let size = meta.len();
    let modified = meta.modified().ok().map(http_date);
    let mut headers = vec![
        ("Accept-Ranges", "bytes".to_owned()),
        ("Content-Type", "application/octet-stream".to_owned()),
    ];
    if let Some(m) = &modified {
        headers.push(("Last-Modified", m.clone()));
    }
    // A range is honoured unless If-Range names another version.
    let range = req
        .range
        .as_deref()
        .filter(|_| req.if_range.is_none() || req.if_range == modified);
    let (status, start, len) = match range.map(|r| parse_range(r, size)) {
        None | Some(Range::Ignore) => ("200 OK", 0, size),
        Some(Range::Unsatisfiable) => {
            headers.push(("Content-Range", format!("bytes */{size}")));
            return reply(w, "416 Requested Range Not Satisfiable", &headers, b"");
        }
        Some(Range::Bytes(a, b)) => {
            headers.push(("Content-Range", format!("bytes {a}-{b}/{size}")));
            ("206 Partial Content", a, b - a + 1)
        }
    };
    let mut h = format!("HTTP/1.1 {status}\r\n");
    for (n, v) in &headers {
        h.push_str(&format!("{n}: {v}\r\n"));
    }
    h.push_str(&format!("Content-Length: {len}\r\n\r\n"));
    if w.write_all(h.as_bytes()).is_err() {
        return false;
    }
    if head {
        return true;
    }
    if f.seek(SeekFrom::Start(start)).is_err() {
        return false;
    }
    let mut body = f.take(len);
    matches!(std::io::copy(&mut body, w), Ok(n) if n == len)
}

#[derive(Debug, PartialEq, Eq)]
enum Range {
    /// Not a single byte range we take: the whole file.
    Ignore,
    Unsatisfiable,
    /// Inclusive.
    Bytes(u64, u64),
}

fn parse_range(r: &str, size: u64) -> Range {
    let Some(spec) = r.trim().strip_prefix("bytes=") else {
        return Range::Ignore;
    };
    if spec.contains(',') {
        return Range::Ignore;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Range::Ignore;
    };
    let (a, b) = (a.trim(), b.trim());
    let parsed = match (a.is_empty(), b.is_empty()) {
        (true, false) => b
            .parse::<u64>()
            .ok()
            .map(|n| (size.saturating_sub(n), size.checked_sub(1), n == 0)),
        (false, _) => a.parse::<u64>().ok().and_then(|s| {
            let e = if b.is_empty() {
                Some(u64::MAX)
            } else {
                b.parse::<u64>().ok()
            }?;
            (e >= s).then_some((s, Some(e.min(size.saturating_sub(1))), s >= size))
        }),
        (true, true) => None,
    };
    match parsed {
        None => Range::Ignore,
        Some((_, None, _)) | Some((_, _, true)) => Range::Unsatisfiable,
        Some((s, Some(e), false)) => Range::Bytes(s, e),
    }
}

/// IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
fn http_date(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let wd = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days.rem_euclid(7)) as usize];
    let mon = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(month - 1) as usize];
    format!(
        "{wd}, {day:02} {mon} {year} {:02}:{:02}:{:02} GMT",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_like_go_for_single_ranges() {
        assert_eq!(parse_range("bytes=0-99", 1000), Range::Bytes(0, 99));
        assert_eq!(parse_range("bytes=900-", 1000), Range::Bytes(900, 999));
        assert_eq!(parse_range("bytes=900-5000", 1000), Range::Bytes(900, 999));
        assert_eq!(parse_range("bytes=-100", 1000), Range::Bytes(900, 999));
        assert_eq!(parse_range("bytes=-5000", 1000), Range::Bytes(0, 999));
        assert_eq!(parse_range("bytes=1000-", 1000), Range::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 1000), Range::Unsatisfiable);
        assert_eq!(parse_range("bytes=5-4", 1000), Range::Ignore);
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), Range::Ignore);
        assert_eq!(parse_range("items=0-1", 1000), Range::Ignore);
    }

    #[test]
    fn dates_are_imf_fixdate() {
        // Worked out by hand: 784111777 s is Sun, 06 Nov 1994 08:49:37 GMT
        // (RFC 9110's example).
        let t = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(http_date(leap), "Tue, 29 Feb 2000 00:00:00 GMT");
    }

    #[test]
    fn env_strings_are_json_escaped() {
        assert_eq!(json_string("A=\"b\"\\\n"), "\"A=\\\"b\\\"\\\\\\u000a\"");
    }
}
