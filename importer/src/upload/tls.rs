//! The upload server's TLS: its certificate and key, client certificates
//! verified against `CLIENT_CERT_FILE` when presented (so `/healthz` and
//! the async `HEAD` probe work without one), `TLS_MIN_VERSION` and
//! `TLS_CIPHERS` mapped onto rustls, and the client's common name
//! (docs/upload.md, "TLS").

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// TLS 1.2 suites by their OpenSSL and IANA names (CDI takes both). rustls
/// has only ECDHE + AEAD suites for TLS 1.2; other names (CBC, RSA key
/// exchange, 3DES) cannot be honoured and are ignored with a log line, as
/// CDI ignores names it does not know. TLS 1.3 suites are always on.
const SUITES: &[(&str, &str)] = &[
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    ),
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    ),
    (
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
    (
        "ECDHE-RSA-AES128-GCM-SHA256",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    ),
    (
        "ECDHE-RSA-AES256-GCM-SHA384",
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    ),
    (
        "ECDHE-RSA-CHACHA20-POLY1305",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
];

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| {
        format!(
            "Error getting TLS config: reading {what} {:?}: {e}",
            formats::text::escape(&path.display().to_string())
        )
    })
}

/// Builds the server configuration. Any missing or unusable piece is an
/// error (the server never falls back to plain HTTP).
pub(crate) fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: &Path,
    min_version: Option<&str>,
    ciphers: Option<&str>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&read(cert, "TLS_CERT_FILE")?)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("Error getting TLS config: TLS_CERT_FILE: {e}"))?;
    if chain.is_empty() {
        return Err("Error getting TLS config: TLS_CERT_FILE holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(&read(key, "TLS_KEY_FILE")?)
        .map_err(|e| format!("Error getting TLS config: TLS_KEY_FILE: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    let cas: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&read(client_ca, "CLIENT_CERT_FILE")?)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("Error getting TLS config: CLIENT_CERT_FILE: {e}"))?;
    for ca in cas {
        roots
            .add(ca)
            .map_err(|e| format!("Error getting TLS config: CLIENT_CERT_FILE: {e}"))?;
    }
    if roots.is_empty() {
        // CDI serves plain HTTP here (a bug); we refuse to start.
        return Err("Error getting TLS config: CLIENT_CERT_FILE holds no certificate".into());
    }
    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(list) = ciphers.filter(|c| !c.trim().is_empty()) {
        let wanted: Vec<&str> = list.split(',').map(str::trim).collect();
        let mut kept = Vec::new();
        for s in &provider.cipher_suites {
            let name = format!("{:?}", s.suite());
            let is13 = s.version() == &rustls::version::TLS13;
            let named = SUITES
                .iter()
                .any(|(ossl, iana)| *iana == name && wanted.iter().any(|w| w == ossl || w == iana));
            if is13 || named {
                kept.push(*s);
            }
        }
        for w in &wanted {
            if !SUITES.iter().any(|(o, i)| o == w || i == w) {
                tracing::warn!(cipher = %formats::text::escape(w), "TLS cipher not available: ignored");
            }
        }
        provider.cipher_suites = kept;
    }
    let versions: &[&'static rustls::SupportedProtocolVersion] = match min_version.unwrap_or("") {
        "VersionTLS13" => &[&rustls::version::TLS13],
        // TLS 1.0 and 1.1 do not exist in rustls: 1.2 is the floor, as an
        // empty or invalid value also means in CDI.
        _ => &[&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let provider = Arc::new(provider);
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| format!("Error getting TLS config: client verifier: {e}"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| format!("Error getting TLS config: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| format!("Error getting TLS config: {e}"))?;
    // HTTP/1.1 only: what CDI's upload proxy speaks; no HTTP/2 attack
    // surface (U13).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The common name of a verified leaf certificate.
pub(crate) fn common_name(leaf: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_owned();
    Some(cn)
}
