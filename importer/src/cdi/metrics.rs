//! CDI's progress metric: `kubevirt_cdi_import_progress_total{ownerUID="…"}`
//! served over HTTPS with a self-signed certificate made at start, as the
//! controller scrapes it (any path; it asks for `/metrics` with a 2 s
//! timeout). The value is a plain decimal (the controller's regex takes no
//! exponent) and never goes down.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::progress::ProgressState;

/// Scrapes served at once; more wait.
const CONCURRENT: usize = 8;
/// Limit on a request head.
const MAX_REQUEST: usize = 8 << 10;
/// Time a client gets for its handshake and request.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// The metric text for `owner` at `percent`.
pub fn render(owner: &str, percent: f64) -> String {
    let owner: String = owner
        .chars()
        .flat_map(|c| match c {
            '"' => vec!['\\', '"'],
            '\\' => vec!['\\', '\\'],
            '\n' => vec!['\\', 'n'],
            c if c.is_control() => vec![],
            c => vec![c],
        })
        .collect();
    format!(
        "# HELP kubevirt_cdi_import_progress_total The import progress in percentage\n\
         # TYPE kubevirt_cdi_import_progress_total counter\n\
         kubevirt_cdi_import_progress_total{{ownerUID=\"{owner}\"}} {percent:.2}\n"
    )
}

fn tls_config() -> Result<rustls::ServerConfig, String> {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .map_err(|e| format!("generating the metrics certificate: {e}"))?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        cert.signing_key.serialize_der(),
    ));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .map_err(|e| format!("metrics TLS setup: {e}"))
}

/// A running metrics endpoint; stops when dropped.
pub struct MetricsServer {
    /// The address it listens on.
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for MetricsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl MetricsServer {
    /// Starts serving `state` for `owner` on `addr`.
    pub fn start(
        addr: SocketAddr,
        owner: String,
        state: Arc<ProgressState>,
    ) -> Result<Self, String> {
        let config = Arc::new(tls_config()?);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(addr))
            .map_err(|e| format!("metrics endpoint {addr}: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                let acceptor = tokio_rustls::TlsAcceptor::from(config);
                let permits = Arc::new(tokio::sync::Semaphore::new(CONCURRENT));
                rt.block_on(async move {
                    loop {
                        let conn = tokio::select! {
                            _ = &mut stop_rx => return,
                            c = listener.accept() => c,
                        };
                        let Ok((tcp, _)) = conn else { continue };
                        let Ok(permit) = permits.clone().acquire_owned().await else {
                            return;
                        };
                        let (acceptor, owner, state) =
                            (acceptor.clone(), owner.clone(), state.clone());
                        tokio::spawn(async move {
                            let _permit = permit;
                            let _ = tokio::time::timeout(
                                CLIENT_TIMEOUT,
                                serve(acceptor, tcp, &owner, &state),
                            )
                            .await;
                        });
                    }
                });
            })
            .map_err(|e| e.to_string())?;
        Ok(MetricsServer {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

/// One connection: HTTP/1.1 on the same stack as the upload server
/// (hyper), any path and method answered with the metric.
async fn serve(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    owner: &str,
    state: &ProgressState,
) -> std::io::Result<()> {
    let tls = acceptor.accept(tcp).await?;
    let svc = hyper::service::service_fn(|_req: hyper::Request<hyper::body::Incoming>| {
        let body = render(owner, state.percent());
        async move {
            let mut r = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            Ok::<_, std::convert::Infallible>(r)
        }
    });
    hyper::server::conn::http1::Builder::new()
        .max_buf_size(MAX_REQUEST)
        .keep_alive(false)
        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
        .await
        .map_err(std::io::Error::other)
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_line_matches_the_controller_regex_shape() {
        let text = render("uid-1\"\n\u{1b}x", 42.126);
        let line = text
            .lines()
            .find(|l| l.starts_with("kubevirt_cdi_import_progress_total{"))
            .unwrap();
        assert_eq!(
            line,
            "kubevirt_cdi_import_progress_total{ownerUID=\"uid-1\\\"\\nx\"} 42.13"
        );
        assert!(render("u", 100.0).contains("{ownerUID=\"u\"} 100.00\n"));
    }
}
