//! HTTP defects found by the second outside review (issue 14, items 1-4):
//! credentials in messages, one Authorization header, reconnect storms,
//! URLs too long for the HTTP stack.

use std::process::Output;

use crate::common::{fails, path, pattern, run, tmp};
use crate::import::Pod;
use crate::net::{Body, FaultServer, Reply, Static};

const SECRET: &str = "S3cr3tPassw0rd";

fn convert(src: &str, extra: &[&str]) -> (Output, tempfile::TempDir) {
    let d = tmp();
    let mut args = vec!["convert", "--no-progress", "--retry-delay", "0.01"];
    args.extend_from_slice(extra);
    let out = path(d.path(), "o.raw");
    args.push(src);
    args.push(&out);
    (run(&args), d)
}

fn no_secret(o: &Output, what: &str) {
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!all.contains(SECRET), "{what}: password shown: {all}");
}

#[test]
fn userinfo_is_never_printed_whatever_the_error() {
    let bad_port = format!("http://u:{SECRET}@127.0.0.1:99999/x");
    let (o, _d) = convert(&bad_port, &[]);
    fails(&o, "usage", "Invalid URL \"http://127.0.0.1:99999/x\"");
    no_secret(&o, "unparsable URL");
    let (o, _d) = convert(&bad_port, &["-v"]);
    no_secret(&o, "unparsable URL, -v");

    // Parsed URLs: a 404 and a refused connection, plain and with -v.
    let s = FaultServer::start(|_, _| Reply::new(404));
    let url404 = s
        .url("x")
        .replace("http://", &format!("http://u:{SECRET}@"));
    for extra in [&[][..], &["-v"][..]] {
        let (o, _d) = convert(&url404, extra);
        fails(&o, "source", "404");
        no_secret(&o, "404");
    }
    let refused = format!("http://u:{SECRET}@127.0.0.1:9/x");
    let (o, _d) = convert(&refused, &["--retries", "0", "-v"]);
    fails(&o, "unavailable", "");
    no_secret(&o, "connection refused");

    // Through `import`: the termination message and the logs.
    for endpoint in [bad_port.as_str(), url404.as_str()] {
        let pod = Pod::new();
        let out = pod.run(&[("IMPORTER_SOURCE", "http"), ("IMPORTER_ENDPOINT", endpoint)]);
        let t = pod.outcome(&out, 1);
        assert!(!t.contains(SECRET), "termination message: {t}");
        no_secret(&out, "import logs");
    }
}

/// The Authorization headers of every request `s` received.
fn auth_headers(s: &FaultServer) -> Vec<Vec<String>> {
    s.requests()
        .iter()
        .map(|r| {
            r.headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("authorization"))
                .map(|(_, v)| v.clone())
                .collect()
        })
        .collect()
}

#[test]
fn exactly_one_authorization_header_flag_over_url() {
    let data = pattern(64 << 10);
    let res = Static::new(data);
    let s = FaultServer::start(move |req, _| res.reply(req));
    let d = tmp();
    let pw = path(d.path(), "pw");
    std::fs::write(&pw, "flagpass").unwrap();
    let url = s.url("d.img").replace("http://", "http://urluser:urlpass@");
    // base64("urluser:urlpass"), base64("flaguser:flagpass").
    let from_url = "Basic dXJsdXNlcjp1cmxwYXNz";
    let from_flag = "Basic ZmxhZ3VzZXI6ZmxhZ3Bhc3M=";
    let cases: [(&[&str], &str); 4] = [
        (&[], from_url),
        (
            &["--username", "flaguser", "--password-file", &pw],
            from_flag,
        ),
        (&["--header", "Authorization: Bearer tok"], "Bearer tok"),
        (
            &[
                "--username",
                "flaguser",
                "--password-file",
                &pw,
                "--header",
                "Authorization: Bearer one",
                "--header",
                "Authorization: Bearer two",
            ],
            "Bearer two",
        ),
    ];
    for (extra, want) in cases {
        let before = s.requests().len();
        let (o, _d) = convert(&url, extra);
        crate::common::ok(&o);
        for headers in &auth_headers(&s)[before..] {
            assert_eq!(headers, &vec![want.to_string()], "{extra:?}");
        }
    }
}

#[test]
fn a_server_that_sends_a_byte_and_closes_cannot_make_us_spin() {
    let res = Static::new(pattern(8 << 20));
    let s = FaultServer::start(move |req, _| res.reply(req).mode(Body::CloseAfter(1)));
    let started = std::time::Instant::now();
    let (o, _d) = convert(&s.url("d.img"), &["--retries", "5"]);
    fails(&o, "truncated", "");
    // The first request and five retries, each after a back-off: not
    // thousands of connections.
    let n = s.requests().len();
    assert!(n <= 6, "{n} requests");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

#[test]
fn a_url_too_long_for_the_http_stack_is_a_usage_error_at_once() {
    let s = FaultServer::start(|_, _| Reply::new(200));
    let long = s.url(&"a".repeat(70_000));
    let (o, _d) = convert(&long, &[]);
    fails(&o, "usage", "longer than 65534 bytes");
    assert!(s.requests().is_empty(), "the URL was sent");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.len() < 2000, "the URL was printed whole");
}
