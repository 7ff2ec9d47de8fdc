//! The HTTPS server, the routes and CDI's check order (docs/upload.md,
//! "Routes and checks"), and the processing of one upload.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, watch};

use super::body::{drain, feed, find_file_part, BodyReader, Feed, DRAIN_BYTES};
use super::process::{process, process_clone, process_fs_clone};
use super::{tls, Ending, UploadSettings};
use crate::cdi::write_termination;
use crate::pipeline::Milestones;
use crate::ImportError;
use formats::error::Classify;

/// How long a connection may take to send its request head (CDI's
/// `ReadHeaderTimeout`).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the server waits for answers in flight after it is done.
const DRAIN: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Ready,
    Busy,
    Done,
}

struct Shared {
    s: UploadSettings,
    /// Upload progress (the metric, when served).
    progress: Arc<crate::progress::ProgressState>,
    phase: Mutex<Phase>,
    finish: mpsc::Sender<Ending>,
}

impl Shared {
    fn phase(&self) -> Phase {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn set(&self, p: Phase) {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner()) = p;
    }
}

/// What the client certificate says.
#[derive(Debug, Clone, Default)]
struct Peer {
    /// The verified leaf's common name, when a certificate was presented.
    cn: Option<String>,
    cert: bool,
}

/// A host-assisted clone target (`x-cdi-content-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Clone {
    /// A snappy-framed raw device stream.
    Block,
    /// A snappy-framed tar of a Filesystem volume.
    Filesystem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    Raw,
    Form,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Route {
    asynchronous: bool,
    archive: bool,
    body: Body,
}

fn route(path: &str) -> Option<Route> {
    let rest = path
        .strip_prefix("/v1beta1/")
        .or_else(|| path.strip_prefix("/v1alpha1/"))?;
    let r = |asynchronous, archive, body| Route {
        asynchronous,
        archive,
        body,
    };
    Some(match rest {
        "upload" => r(false, false, Body::Raw),
        "upload-async" => r(true, false, Body::Raw),
        "upload-archive" => r(false, true, Body::Raw),
        "upload-form" => r(false, false, Body::Form),
        "upload-form-async" => r(true, false, Body::Form),
        _ => return None,
    })
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// CDI's body for a failed upload: 400 for "does not fit", else 500.
fn failure(e: &ImportError) -> Response<Full<Bytes>> {
    // The answer may go nowhere (a client that was cut off): the log keeps
    // why the upload failed.
    tracing::warn!(kind = ?e.kind(), "Saving stream failed: {}", crate::error::describe(e, false));
    let text = html_escape(&crate::error::describe(e, false));
    if matches!(
        e,
        ImportError::Source(sources::SourceError::ChecksumMismatch { .. })
    ) {
        // The X-Checksum header (beyond CDI): the client sent other bytes.
        return reply(
            StatusCode::BAD_REQUEST,
            format!("Saving stream failed: {text}"),
        );
    }
    if e.is_capacity() {
        reply(
            StatusCode::BAD_REQUEST,
            format!("Saving stream failed: effective image size is larger than the reported available storage: {text}"),
        )
    } else {
        reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Saving stream failed: {text}"),
        )
    }
}

/// The last check of CDI's order: an upload in progress is 503 (U03), a
/// finished one 409 (U04); otherwise this upload takes the server.
fn admit(phase: &mut Phase) -> Option<StatusCode> {
    match *phase {
        Phase::Busy => Some(StatusCode::SERVICE_UNAVAILABLE),
        Phase::Done => Some(StatusCode::CONFLICT),
        Phase::Ready => {
            *phase = Phase::Busy;
            None
        }
    }
}

/// Markup in echoed strings escaped (U12), as CDI's upload proxy does with
/// Go's `html.EscapeString`: an error body never carries markup from the
/// request or the image (a tar member's name, a form's boundary). Quotes
/// are kept: the body is text/plain, never an attribute, and our own
/// messages quote names.
fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            c => out.push(c),
        }
    }
    out
}

async fn handle(req: Request<Incoming>, peer: Peer, sh: Arc<Shared>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    if path == "/healthz" {
        return reply(StatusCode::OK, "OK");
    }
    let Some(route) = route(&path) else {
        return reply(StatusCode::NOT_FOUND, "404 page not found\n");
    };
    // CDI's order (docs/upload.md): the async HEAD probe first, before any
    // authentication; then method, client certificate and name, busy, done.
    if route.asynchronous && req.method() == Method::HEAD {
        return reply(StatusCode::OK, "");
    }
    // An early answer still reads a little of the body (dropped), so a
    // client that is sending reads the answer, not a reset connection;
    // at most 1 MiB from a client not yet known, 64 MiB from ours.
    if req.method() != Method::POST {
        tokio::spawn(drain(req.into_body(), 1 << 20));
        return reply(StatusCode::NOT_FOUND, "");
    }
    if !peer.cert || peer.cn.as_deref() != Some(sh.s.client_name.as_str()) {
        tracing::warn!(cn = ?peer.cn.as_deref().map(formats::text::escape), "Upload refused: client certificate missing or of another name.");
        tokio::spawn(drain(req.into_body(), 1 << 20));
        return reply(StatusCode::UNAUTHORIZED, "");
    }
    let refused = admit(&mut sh.phase.lock().unwrap_or_else(|p| p.into_inner()));
    if let Some(status) = refused {
        tokio::spawn(drain(req.into_body(), DRAIN_BYTES));
        return reply(status, "");
    }
    let resp = upload(req, route, &sh).await;
    if resp.status() != StatusCode::OK {
        // A failed upload leaves the server ready for the next one (U05).
        if sh.phase() == Phase::Busy {
            sh.set(Phase::Ready);
        }
    }
    resp
}

async fn upload(req: Request<Incoming>, route: Route, sh: &Arc<Shared>) -> Response<Full<Bytes>> {
    let clone = match req
        .headers()
        .get("x-cdi-content-type")
        .and_then(|v| v.to_str().ok())
    {
        Some("blockdevice-clone") => Some(Clone::Block),
        Some("filesystem-clone") => Some(Clone::Filesystem),
        _ => None,
    };
    let refusal = match clone {
        Some(_) if route.asynchronous => Some("async clone not supported"),
        _ => None,
    };
    if let Some(why) = refusal {
        tokio::spawn(drain(req.into_body(), DRAIN_BYTES));
        return reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Saving stream failed: {why}"),
        );
    }
    let checksum = match req
        .headers()
        .get("x-checksum")
        .map(|v| v.to_str().map(str::parse::<sources::meter::Checksum>))
    {
        None => None,
        Some(Ok(Ok(c))) => Some(c),
        Some(_) => {
            tokio::spawn(drain(req.into_body(), DRAIN_BYTES));
            return reply(
                StatusCode::BAD_REQUEST,
                "Invalid X-Checksum: expected ALGO:HEX",
            );
        }
    };
    let length = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let content_type = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (reader, tx, received) = BodyReader::new();
    let length = match route.body {
        Body::Raw => {
            tokio::spawn(feed(Feed::Raw(req.into_body()), tx));
            length
        }
        Body::Form => match find_file_part(req.into_body(), content_type.as_deref()).await {
            Ok(part) => {
                tokio::spawn(feed(Feed::Part(Box::new(part)), tx));
                None
            }
            Err(e) => {
                return reply(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "Saving stream failed: {}",
                        html_escape(&formats::text::escape(&e))
                    ),
                )
            }
        },
    };
    let s = sh.s.clone();
    let archive = route.archive;
    let ms = Arc::new(Milestones::default());
    let ms2 = ms.clone();
    let progress = sh.progress.clone();
    let job = tokio::task::spawn_blocking(move || {
        // Clones arrive in snappy's framing format (golang/snappy's
        // writer), decoded as they arrive.
        match clone {
            Some(Clone::Block) => {
                let raw = snap::read::FrameDecoder::new(reader);
                return process_clone(&s, Box::new(raw), checksum, &progress);
            }
            Some(Clone::Filesystem) => {
                let tar = snap::read::FrameDecoder::new(reader);
                return process_fs_clone(&s, Box::new(tar));
            }
            None => {}
        }
        process(
            &s,
            archive,
            Box::new(reader),
            length,
            checksum,
            ms2,
            &progress,
        )
    });
    if !route.asynchronous {
        return finished(sh, job.await, clone.is_some()).await;
    }
    // Async (docs/upload.md, "Async"): answer once every byte was taken
    // and the image's size was checked: from its header or length, or by
    // producing all of its output; the rest finishes in the background and
    // a failure there ends the server with exit 1 (U11). A failure before
    // that point is answered like a sync one.
    let mut job = job;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    loop {
        if received.load(Ordering::SeqCst) && (ms.sized() || ms.produced()) {
            let sh = sh.clone();
            tokio::spawn(async move {
                let ending = match job.await {
                    Ok(Ok(applied)) => completed(&sh, applied, false),
                    Ok(Err(e)) => Ending {
                        exit_code: 1,
                        termination: None,
                        log: format!("UploadServer failed: {}", crate::error::describe(&e, false)),
                    },
                    Err(e) => Ending {
                        exit_code: 1,
                        termination: None,
                        log: format!("UploadServer failed: {e}"),
                    },
                };
                let _ = sh.finish.send(ending).await;
            });
            return reply(StatusCode::OK, "");
        }
        if job.is_finished() {
            return finished(sh, (&mut job).await, false).await;
        }
        tick.tick().await;
    }
}

/// The answer for a finished job.
async fn finished(
    sh: &Arc<Shared>,
    r: Result<Result<bool, ImportError>, tokio::task::JoinError>,
    clone: bool,
) -> Response<Full<Bytes>> {
    match r {
        Ok(Ok(applied)) => {
            let _ = sh.finish.send(completed(sh, applied, clone)).await;
            reply(StatusCode::OK, "")
        }
        Ok(Err(e)) => failure(&e),
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Saving stream failed: {e}"),
        ),
    }
}

/// The upload is complete: the server is done; how it ends (CDI's
/// message: "Clone Complete" for clone targets, else "Upload Complete").
fn completed(sh: &Shared, preallocation_applied: bool, clone: bool) -> Ending {
    sh.set(Phase::Done);
    let message = if clone {
        "Clone Complete"
    } else {
        "Upload Complete"
    };
    Ending {
        exit_code: 0,
        termination: Some(format!(
            "{{\"preallocationApplied\":{preallocation_applied},\"message\":\"{message}\"}}"
        )),
        log: message.into(),
    }
}

/// Binds, serves, and returns how the server ends.
pub(super) fn serve(s: UploadSettings) -> Result<Ending, String> {
    let config = tls::server_config(
        &s.cert,
        &s.key,
        &s.client_ca,
        s.min_version.as_deref(),
        s.ciphers.as_deref(),
    )?;
    // One worker: the server takes one upload at a time, and its
    // connection (TLS, HTTP) is one task. With two workers that task
    // moved between them, and the wake-ups and cold caches made a 2 GB
    // upload 1.85-1.99 s instead of 1.60-1.66 s (benches/RESULTS.md,
    // issue 13). The pipeline has its own threads; nothing here blocks.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("upload")
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    // The metric has its own small runtime: started outside ours.
    let progress = Arc::new(crate::progress::ProgressState::default());
    let _metrics = match s.metrics {
        Some(addr) => match crate::cdi::metrics::MetricsServer::start(
            addr,
            s.owner_uid.clone(),
            progress.clone(),
        ) {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!("Progress metric not served: {e}");
                None
            }
        },
        None => None,
    };
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&s.listen)
            .await
            .map_err(|e| format!("listening on {}: {e}", s.listen))?;
        tracing::info!(address = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "Upload server listening");
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let (finish_tx, mut finish_rx) = mpsc::channel(4);
        let deadline = s.deadline;
        let sh = Arc::new(Shared {
            s,
            progress,
            phase: Mutex::new(Phase::Ready),
            finish: finish_tx,
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let active = Arc::new(AtomicUsize::new(0));
        if let Some(d) = deadline {
            tokio::spawn(deadline_watch(d, sh.clone()));
        }
        let ending = loop {
            tokio::select! {
                e = finish_rx.recv() => break e.expect("the server holds a sender"),
                conn = listener.accept() => {
                    let Ok((tcp, _)) = conn else { continue };
                    let (acceptor, sh, active, mut stop) = (acceptor.clone(), sh.clone(), active.clone(), stop_rx.clone());
                    active.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(async move {
                        connection(tcp, acceptor, sh, &mut stop).await;
                        active.fetch_sub(1, Ordering::SeqCst);
                    });
                }
            }
        };
        // Answers in flight are finished, then connections closed.
        let _ = stop_tx.send(true);
        let start = std::time::Instant::now();
        while active.load(Ordering::SeqCst) > 0 && start.elapsed() < DRAIN {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(t) = &ending.termination {
            if let Err(e) = write_termination(&sh.s.root, t) {
                tracing::error!("Writing the termination message: {e}");
            }
        }
        Ok(ending)
    })
}

async fn connection(
    tcp: tokio::net::TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    sh: Arc<Shared>,
    stop: &mut watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    // Socket reads of up to 256 KiB instead of one TLS record (16 KiB) each:
    // a sixteenth of the system calls for an upload.
    let tcp = tokio::io::BufReader::with_capacity(256 << 10, tcp);
    let Ok(Ok(tls)) = tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(tcp)).await else {
        return;
    };
    let peer = {
        let (_, conn) = tls.get_ref();
        match conn.peer_certificates().and_then(|c| c.first()) {
            Some(leaf) => Peer {
                cn: tls::common_name(leaf),
                cert: true,
            },
            None => Peer::default(),
        }
    };
    let svc = hyper::service::service_fn(move |req| {
        let (peer, sh) = (peer.clone(), sh.clone());
        async move { Ok::<_, std::convert::Infallible>(handle(req, peer, sh).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(tls), svc);
    tokio::pin!(conn);
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            r = stop.changed() => {
                conn.as_mut().graceful_shutdown();
                if r.is_err() { let _ = conn.as_mut().await; return; }
            }
        }
    }
}

/// CDI's deadline: when it passes, wait while an upload is in progress
/// (2 s polls); if not done then, end with "Deadline Passed".
async fn deadline_watch(deadline: SystemTime, sh: Arc<Shared>) {
    if let Ok(left) = deadline.duration_since(SystemTime::now()) {
        tokio::time::sleep(left).await;
    }
    while sh.phase() == Phase::Busy {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    if sh.phase() != Phase::Done {
        let _ = sh
            .finish
            .send(Ending {
                exit_code: 0,
                termination: Some(r#"{"deadlinePassed":true,"message":"Deadline Passed"}"#.into()),
                log: "Deadline Passed".into(),
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_follows_cdis_order_busy_then_done() {
        let mut p = Phase::Ready;
        assert_eq!(admit(&mut p), None);
        assert_eq!(p, Phase::Busy, "the upload takes the server");
        assert_eq!(admit(&mut p), Some(StatusCode::SERVICE_UNAVAILABLE));
        let mut p = Phase::Done;
        assert_eq!(admit(&mut p), Some(StatusCode::CONFLICT));
        assert_eq!(p, Phase::Done, "a refused upload changes nothing");
    }

    #[test]
    fn echoed_markup_is_html_escaped() {
        assert_eq!(
            html_escape(r#"<script>Bad stuff here...</script> & 'a' "b""#),
            r#"&lt;script&gt;Bad stuff here...&lt;/script&gt; &amp; 'a' "b""#
        );
        assert_eq!(html_escape("disk-é.img"), "disk-é.img");
    }
}
