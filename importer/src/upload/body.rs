//! A request body as a blocking reader for the pipeline: an async task
//! feeds its chunks through a bounded channel (a few chunks in flight, so
//! memory is bounded whatever the upload's size); the reader tells when it
//! has given the pipeline the last byte (the async route answers then).

use std::io::{self, Read};

use bytes::Bytes;
use formats::error::{kinded_io, ErrorKind};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

/// Chunks in flight between the connection and the pipeline (of up to
/// [`GATHER`] bytes each: 1 MiB).
const DEPTH: usize = 4;

pub(crate) enum Chunk {
    Data(Bytes),
    End,
    Failed(String),
}

/// The pipeline's end of a body.
pub(crate) struct BodyReader {
    rx: mpsc::Receiver<Chunk>,
    cur: Bytes,
    done: bool,
    received: Arc<AtomicBool>,
}

impl BodyReader {
    /// A reader and the channel to feed it; `received` is set when the
    /// reader has returned end of file (every byte taken).
    pub(crate) fn new() -> (Self, mpsc::Sender<Chunk>, Arc<AtomicBool>) {
        let (tx, rx) = mpsc::channel(DEPTH);
        let received = Arc::new(AtomicBool::new(false));
        (
            BodyReader {
                rx,
                cur: Bytes::new(),
                done: false,
                received: received.clone(),
            },
            tx,
            received,
        )
    }
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            if self.done {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Chunk::Data(b)) => self.cur = b,
                Some(Chunk::End) => {
                    self.done = true;
                    self.received.store(true, Ordering::SeqCst);
                }
                Some(Chunk::Failed(why)) => {
                    return Err(kinded_io(
                        ErrorKind::Truncated,
                        format!("upload body: {why}"),
                    ))
                }
                None => {
                    return Err(kinded_io(
                        ErrorKind::Truncated,
                        "upload body: the client went away",
                    ))
                }
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        let _ = self.cur.split_to(n);
        Ok(n)
    }
}

/// After an early answer (a refusal, or the pipeline failed), the rest of
/// a body is read and dropped for a while, so the client, still sending,
/// reads the answer instead of a reset connection. Bounded: at most this
/// many bytes, for at most [`DRAIN_TIME`].
pub(crate) const DRAIN_BYTES: u64 = 64 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads and drops what is left of `body`: at most `limit` bytes (the
/// full [`DRAIN_BYTES`] for our client, less for one not yet known), for at
/// most [`DRAIN_TIME`].
pub(crate) async fn drain(body: Incoming, limit: u64) {
    Feed::Raw(body).drain(limit).await;
}

/// A body that sends nothing for this long fails (U08; CDI has no body
/// timeout): the same idle limit as downloads.
const BODY_IDLE: std::time::Duration = std::time::Duration::from_secs(600);

/// Body frames are gathered into chunks of this size before they cross to
/// the pipeline: TLS records make frames of at most 16 KiB, and one channel
/// hand-over (a thread wake-up) per frame cost more than the copy.
const GATHER: usize = 256 << 10;

/// Where an upload's bytes come from: the request body, or the `file`
/// part of a form.
pub(crate) enum Feed {
    /// The request body as sent.
    Raw(Incoming),
    /// The `file` part of a multipart body (boxed: a field is large).
    Part(Box<FilePart>),
}

impl Feed {
    /// The next non-empty piece of data; `None` at the end.
    async fn next(&mut self) -> Option<Result<Bytes, String>> {
        loop {
            match self {
                Feed::Raw(body) => match body.frame().await? {
                    // Trailers carry no data.
                    Ok(f) => match f.into_data() {
                        Ok(d) if !d.is_empty() => return Some(Ok(d)),
                        _ => {}
                    },
                    Err(e) => return Some(Err(e.to_string())),
                },
                Feed::Part(part) => match part.field.chunk().await {
                    Ok(Some(d)) if d.is_empty() => {}
                    Ok(Some(d)) => return Some(Ok(d)),
                    Ok(None) => return None,
                    Err(e) => return Some(Err(e.to_string())),
                },
            }
        }
    }

    /// Reads and drops the rest: at most `limit` bytes, for at most
    /// [`DRAIN_TIME`].
    async fn drain(mut self, limit: u64) {
        let mut left = limit;
        let _ = tokio::time::timeout(DRAIN_TIME, async {
            while let Some(Ok(d)) = self.next().await {
                if d.len() as u64 >= left {
                    return;
                }
                left -= d.len() as u64;
            }
        })
        .await;
    }
}

/// Feeds the pipeline from `src`, gathering pieces into chunks of
/// [`GATHER`]; when the pipeline stops taking them, drains the rest.
pub(crate) async fn feed(mut src: Feed, tx: mpsc::Sender<Chunk>) {
    let mut gathered = bytes::BytesMut::new();
    loop {
        let Ok(next) = tokio::time::timeout(BODY_IDLE, src.next()).await else {
            let _ = tx
                .send(Chunk::Failed(format!(
                    "no data for {} s",
                    BODY_IDLE.as_secs()
                )))
                .await;
            return;
        };
        let msg = match next {
            Some(Ok(d)) if gathered.is_empty() && d.len() >= GATHER => Chunk::Data(d),
            Some(Ok(d)) => {
                gathered.extend_from_slice(&d);
                if gathered.len() < GATHER {
                    continue;
                }
                Chunk::Data(gathered.split().freeze())
            }
            Some(Err(e)) => Chunk::Failed(e),
            None => Chunk::End,
        };
        let last = !matches!(msg, Chunk::Data(_));
        if last && !gathered.is_empty() {
            let rest = Chunk::Data(gathered.split().freeze());
            if tx.send(rest).await.is_err() {
                return;
            }
        }
        if tx.send(msg).await.is_err() {
            src.drain(DRAIN_BYTES).await;
            return;
        }
        if last {
            return;
        }
    }
}

/// A multipart body positioned at its `file` part.
pub(crate) struct FilePart {
    field: multer::Field<'static>,
}

/// Finds the first part named `file` (other fields are skipped, as CDI
/// does); an error when the body is not multipart or has none (U10).
pub(crate) async fn find_file_part(
    body: Incoming,
    content_type: Option<&str>,
) -> Result<FilePart, String> {
    let boundary = match content_type.map(multer::parse_boundary) {
        Some(Ok(b)) => b,
        Some(Err(e)) => {
            drain(body, DRAIN_BYTES).await;
            return Err(format!("not a multipart form: {e}"));
        }
        None => {
            drain(body, DRAIN_BYTES).await;
            return Err("not a multipart form: no Content-Type".into());
        }
    };
    file_part_in(body, boundary).await
}

/// [`find_file_part`] over any body (the fuzz target feeds bytes).
pub(crate) async fn file_part_in<B>(body: B, boundary: String) -> Result<FilePart, String>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut mp = multer::Multipart::new(body.into_data_stream(), boundary);
    loop {
        match mp.next_field().await {
            Ok(Some(field)) if field.name() == Some("file") => return Ok(FilePart { field }),
            Ok(Some(field)) => {
                tracing::info!(
                    name = %formats::text::escape(field.name().unwrap_or("")),
                    "Skipping a form field that is not 'file'."
                );
            }
            Ok(None) => return Err("no 'file' part in the form".into()),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Runs the form parser over `data` (boundary `B`) and reads the `file`
/// part, at most 64 MiB: its length. For the `upload_form` fuzz target.
#[doc(hidden)]
pub fn fuzz_form(data: &[u8]) -> Option<usize> {
    let rt = tokio::runtime::Builder::new_current_thread().build().ok()?;
    rt.block_on(async {
        let body = http_body_util::Full::new(Bytes::copy_from_slice(data));
        let mut part = file_part_in(body, "B".into()).await.ok()?;
        let mut n = 0;
        while let Ok(Some(c)) = part.field.chunk().await {
            n += c.len();
            if n > 64 << 20 {
                break;
            }
        }
        Some(n)
    })
}
