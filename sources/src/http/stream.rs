//! A response body as a blocking `Read`, resumed after breaks.
//!
//! A network task reads the body and hands batches to the reader through a
//! bounded channel. When the body breaks (reset, short body, missing final
//! chunk) the task asks for the rest with `Range: bytes=POS-` and
//! `If-Range: <validator>`: a `206` starting exactly at POS continues the
//! stream; a `200` is either a server without ranges (same version: the
//! first POS bytes are dropped, counted as re-fetched) or a new version of
//! the resource (refused: two versions are never mixed, H23).

use std::io::{self, Read};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use formats::error::Classify;
use reqwest::header::{self, HeaderValue};
use reqwest::StatusCode;
use tokio::sync::mpsc;

use super::{
    bad_range, status_failure, HttpClient, HttpError, Net, Resource, Validator, MIN_PROGRESS,
};

/// Bytes handed to the reader at a time.
const BATCH: usize = 128 << 10;
/// Batches in flight: bounds memory whatever the link speed.
const DEPTH: usize = 4;

enum Msg {
    Data(Bytes),
    End,
    Failed(HttpError),
}

/// The body of an HTTP source, as a blocking reader.
pub struct HttpBody {
    rx: mpsc::Receiver<Msg>,
    cur: Bytes,
    done: bool,
    task: tokio::task::JoinHandle<()>,
    _rt: Arc<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for HttpBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpBody").finish_non_exhaustive()
    }
}

impl HttpBody {
    pub(crate) fn start(client: &HttpClient, res: Resource, resp: reqwest::Response) -> Self {
        let (tx, rx) = mpsc::channel(DEPTH);
        let net = client.net.clone();
        let task = client.rt.spawn(async move {
            let msg = match pump(&net, &res, resp, &tx).await {
                Ok(()) => Msg::End,
                Err(e) => Msg::Failed(e),
            };
            let _ = tx.send(msg).await;
        });
        HttpBody {
            rx,
            cur: Bytes::new(),
            done: false,
            task,
            _rt: client.rt.clone(),
        }
    }
}

impl Read for HttpBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            if self.done {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Msg::Data(b)) => self.cur = b,
                Some(Msg::End) => self.done = true,
                Some(Msg::Failed(e)) => {
                    self.done = true;
                    return Err(e.into_io());
                }
                None => {
                    // The task ended without a verdict: never a clean end.
                    self.done = true;
                    return Err(io::Error::other("HTTP download task ended unexpectedly"));
                }
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur.advance(n);
        Ok(n)
    }
}

impl Drop for HttpBody {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether `h` describes the same version as `res`.
fn same_version(res: &Resource, h: &reqwest::header::HeaderMap, length: Option<u64>) -> bool {
    res.validator.is_some() && Validator::of(h) == res.validator && length == res.length
}

/// Parses `bytes FIRST-LAST/TOTAL`.
pub(super) fn content_range(v: Option<&HeaderValue>) -> Option<(u64, u64, Option<u64>)> {
    let s = v?.to_str().ok()?.strip_prefix("bytes ")?;
    let (range, total) = s.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    let (a, b) = (a.parse::<u64>().ok()?, b.parse::<u64>().ok()?);
    let total = match total {
        "*" => None,
        t => Some(t.parse::<u64>().ok()?),
    };
    (a <= b).then_some((a, b, total))
}

/// Asks for the rest of the body from `pos`. Returns the response and how
/// many of its first bytes to drop.
async fn resume(
    net: &Net,
    res: &Resource,
    pos: u64,
) -> Result<(reqwest::Response, u64), HttpError> {
    if let (true, Some(v)) = (res.ranges && pos > 0, &res.validator) {
        let range = HeaderValue::from_str(&format!("bytes={pos}-")).expect("ASCII");
        let resp = net
            .send(
                &res.url,
                &[
                    (header::RANGE, range),
                    (header::IF_RANGE, v.value().clone()),
                ],
            )
            .await?;
        return match resp.status() {
            StatusCode::PARTIAL_CONTENT => {
                let cr = resp.headers().get(header::CONTENT_RANGE);
                match content_range(cr) {
                    Some((a, b, total))
                        if a == pos
                            && (res.length.is_none() || total == res.length)
                            && res.length.is_none_or(|l| b + 1 == l) =>
                    {
                        Ok((resp, 0))
                    }
                    _ => Err(bad_range(format!("bytes={pos}-"), cr)),
                }
            }
            StatusCode::OK => {
                let len = resp.content_length();
                if same_version(res, resp.headers(), len) {
                    // The range was ignored: the whole body again.
                    Ok((resp, pos))
                } else {
                    Err(HttpError::Changed(describe_change(res, resp.headers())))
                }
            }
            s => Err(status_failure(s, 206)),
        };
    }
    if pos > 0 && res.validator.is_none() {
        return Err(HttpError::Truncated {
            got: pos,
            expected: res.length.map_or("unknown".into(), |l| l.to_string()),
            detail: "the server offers no way to resume safely (no Accept-Ranges, or no ETag or Last-Modified to pin the version)".into(),
        });
    }
    let resp = net.send(&res.url, &[]).await?;
    if resp.status() != StatusCode::OK {
        return Err(status_failure(resp.status(), 200));
    }
    let len = resp.content_length();
    if pos > 0 && !same_version(res, resp.headers(), len) {
        return Err(HttpError::Changed(describe_change(res, resp.headers())));
    }
    if pos == 0 && len != res.length {
        return Err(HttpError::Changed("Content-Length differs".into()));
    }
    Ok((resp, pos))
}

fn describe_change(res: &Resource, h: &reqwest::header::HeaderMap) -> String {
    let was = res
        .validator
        .as_ref()
        .map_or("no validator".into(), Validator::describe);
    let now = Validator::of(h).map_or("no validator".into(), |v| v.describe());
    format!("{was}, now {now}")
}

async fn pump(
    net: &Net,
    res: &Resource,
    mut resp: reqwest::Response,
    tx: &mpsc::Sender<Msg>,
) -> Result<(), HttpError> {
    let closed = || HttpError::Config("reader gone".into());
    let mut pos = 0u64;
    let mut skip = 0u64;
    let mut failures = 0u32;
    let mut progressed = false;
    // New bytes since the body last broke.
    let mut fresh = 0u64;
    let mut batch = BytesMut::with_capacity(BATCH);
    loop {
        let mut broken = match net.next_chunk(&mut resp).await {
            // The idle timeout or the deadline: not worth a retry.
            Err(e) if !e.kind().is_transient() => return Err(e),
            Err(e) => e,
            Ok(Some(mut chunk)) => {
                let n = chunk.len() as u64;
                net.stats.fetched.fetch_add(n, Ordering::Relaxed);
                let drop = skip.min(n);
                skip -= drop;
                net.stats.refetched.fetch_add(drop, Ordering::Relaxed);
                chunk.advance(drop as usize);
                fresh += chunk.len() as u64;
                if fresh >= MIN_PROGRESS {
                    failures = 0;
                    progressed = true;
                }
                pos += chunk.len() as u64;
                batch.extend_from_slice(&chunk);
                if batch.len() >= BATCH {
                    tx.send(Msg::Data(batch.split().freeze()))
                        .await
                        .map_err(|_| closed())?;
                }
                continue;
            }
            Ok(None) => match res.length {
                // Resumed like any broken body; a truncation when it
                // cannot be.
                Some(len) if pos < len => {
                    HttpError::Interrupted(format!("the connection closed early at {pos} of {len}"))
                }
                _ => {
                    if !batch.is_empty() {
                        tx.send(Msg::Data(batch.split().freeze()))
                            .await
                            .map_err(|_| closed())?;
                    }
                    return Ok(());
                }
            },
        };
        // The body broke at `pos`: hand on what arrived, then resume.
        if !batch.is_empty() {
            tx.send(Msg::Data(batch.split().freeze()))
                .await
                .map_err(|_| closed())?;
        }
        loop {
            if !broken.kind().is_transient() || failures >= net.opts.retry.retries {
                return Err(match broken {
                    e @ (HttpError::Truncated { .. }
                    | HttpError::Changed(_)
                    | HttpError::BadRange { .. }
                    | HttpError::Status { .. }
                    | HttpError::Deadline(_)
                    | HttpError::Destination(_)) => e,
                    e => HttpError::Truncated {
                        got: pos,
                        expected: res.length.map_or("unknown".into(), |l| l.to_string()),
                        detail: e.to_string(),
                    },
                });
            }
            if !net
                .back_off(failures, progressed, &broken, Some(pos))
                .await?
            {
                return Err(net.deadline_error());
            }
            progressed = false;
            fresh = 0;
            failures += 1;
            match resume(net, res, pos).await {
                Ok((r, s)) => {
                    if s == 0 {
                        net.stats.resumes.fetch_add(1, Ordering::Relaxed);
                    }
                    resp = r;
                    skip = s;
                    break;
                }
                Err(e) => broken = e,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parses_strictly() {
        let v = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(
            content_range(Some(&v("bytes 10-19/100"))),
            Some((10, 19, Some(100)))
        );
        assert_eq!(
            content_range(Some(&v("bytes 10-19/*"))),
            Some((10, 19, None))
        );
        assert_eq!(content_range(Some(&v("bytes 19-10/100"))), None);
        assert_eq!(content_range(Some(&v("items 1-2/3"))), None);
        assert_eq!(content_range(Some(&v("bytes -1/3"))), None);
        assert_eq!(content_range(None), None);
    }
}
