//! TLS for the HTTP client: rustls with the ring provider, TLS 1.2 and
//! 1.3 only (H20), the system roots plus every CA file in the configured
//! directories (CDI's `IMPORTER_CERT_DIR` and `/proxycerts/`), or no
//! verification at all when the user asks for it.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::HttpError;

/// Every non-hidden regular file of `dir` (symlinks followed, as Kubernetes
/// mounts ConfigMap keys as symlinks into a hidden `..data` directory).
pub(crate) fn visible_files(dir: &Path) -> Result<Vec<std::path::PathBuf>, HttpError> {
    let shown = formats::text::escape(&dir.display().to_string());
    let entries = std::fs::read_dir(dir)
        .map_err(|e| HttpError::Config(format!("Reading directory {shown:?}: {e}")))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|e| HttpError::Config(format!("Reading directory {shown:?}: {e}")))?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        if std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn add_ca_dir(roots: &mut RootCertStore, dir: &Path) -> Result<usize, HttpError> {
    let mut added = 0;
    for path in visible_files(dir)? {
        let shown = formats::text::escape(&path.display().to_string());
        let certs = CertificateDer::pem_file_iter(&path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| HttpError::Config(format!("Reading CA file {shown:?}: {e}")))?;
        if certs.is_empty() {
            return Err(HttpError::Config(format!(
                "CA file {shown:?} holds no PEM certificate"
            )));
        }
        for c in certs {
            roots
                .add(c)
                .map_err(|e| HttpError::Config(format!("CA file {shown:?}: {e}")))?;
            added += 1;
        }
    }
    Ok(added)
}

/// A client certificate chain and its key, both PEM files.
fn identity(
    cert: &Path,
    key: &Path,
) -> Result<
    (
        Vec<CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ),
    HttpError,
> {
    use rustls::pki_types::pem::PemObject;
    let bad = |what: &str, p: &Path, e: &dyn std::fmt::Display| {
        HttpError::Config(format!(
            "Client {what} {:?}: {e}",
            formats::text::escape(&p.display().to_string())
        ))
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad("certificate", cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad("certificate", cert, &e))?;
    if chain.is_empty() {
        return Err(bad("certificate", cert, &"no certificate in it"));
    }
    let key =
        rustls::pki_types::PrivateKeyDer::from_pem_file(key).map_err(|e| bad("key", key, &e))?;
    Ok((chain, key))
}

/// The rustls configuration for `ca_dirs` and `insecure`, presenting a
/// client certificate (`cert`, `key`) when given.
pub(crate) fn client_config_with(
    ca_dirs: &[&Path],
    insecure: bool,
    client: Option<(&Path, &Path)>,
) -> Result<ClientConfig, HttpError> {
    let id = client.map(|(c, k)| identity(c, k)).transpose()?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| HttpError::Config(format!("TLS setup: {e}")))?;
    let finish = |b: rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>| match id
    {
        Some((chain, key)) => b
            .with_client_auth_cert(chain, key)
            .map_err(|e| HttpError::Config(format!("Client certificate: {e}"))),
        None => Ok(b.with_no_client_auth()),
    };
    let mut config = if insecure {
        finish(
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider))),
        )?
    } else {
        let mut roots = RootCertStore::empty();
        // The system store is best effort: a minimal container may have
        // none, and the configured CA directories may be all it needs.
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        for dir in ca_dirs {
            add_ca_dir(&mut roots, dir)?;
        }
        finish(builder.with_root_certificates(roots))?
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// `--insecure`: any certificate is accepted, but handshake signatures are
/// still checked so the session itself is well-formed.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_directory_skips_hidden_files_and_refuses_junk() {
        let d = std::env::temp_dir().join(format!("di-ca-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(".junk"), "not a certificate").unwrap();
        assert!(client_config_with(&[d.as_path()], false, None).is_ok());
        std::fs::write(d.join("bad.crt"), "not a certificate").unwrap();
        let e = client_config_with(&[d.as_path()], false, None).unwrap_err();
        assert!(e.to_string().contains("holds no PEM certificate"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
