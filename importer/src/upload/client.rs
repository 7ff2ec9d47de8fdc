//! `diskimport upload FILE URL`: the upload server's client, as `virtctl
//! image-upload` talks to it (a `HEAD` probe of the async route, then a
//! POST with `Content-Length`), with client certificates for talking to a
//! server directly and a progress bar (docs/upload.md, "Client").

use std::path::PathBuf;
use std::time::Duration;

use crate::cli::AuthArgs;
use crate::ImportError;

/// `diskimport upload`.
#[derive(clap::Args, Debug)]
pub struct UploadClientArgs {
    /// CA directories, TLS verification.
    #[command(flatten)]
    auth: AuthArgs,
    /// Client certificate to present (PEM).
    #[arg(long, value_name = "FILE", requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, value_name = "FILE")]
    client_key: Option<PathBuf>,
    /// File holding a Bearer token (CDI's upload proxy).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Send an archive to upload-archive (extracted into the volume).
    #[arg(long)]
    archive: bool,
    /// Send `X-Checksum: ALGO:HEX`, verified by the server.
    #[arg(long)]
    checksum: Option<String>,
    /// Attempts after the first, as virtctl's --retry.
    #[arg(long, default_value = "5")]
    retries: u32,
    /// Never show a progress bar.
    #[arg(long)]
    no_progress: bool,
    /// The disk image or archive.
    file: PathBuf,
    /// The server: https://HOST[:PORT] (its routes are added).
    url: String,
}

/// Uploads; what to print on success.
pub fn run(a: UploadClientArgs) -> Result<String, ImportError> {
    use sources::http::{parse_header, HttpClient, HttpOptions};
    let base = sources::http::parse_url(a.url.trim_end_matches('/'))?;
    let mut headers = Vec::new();
    if let Some(f) = &a.token_file {
        let t = std::fs::read_to_string(f)
            .map_err(|e| ImportError::Usage(format!("Reading token file: {e}")))?;
        headers.push(parse_header(&format!(
            "Authorization: Bearer {}",
            t.trim()
        ))?);
    }
    if let Some(c) = &a.checksum {
        c.parse::<sources::meter::Checksum>()?;
        headers.push(parse_header(&format!("X-Checksum: {c}"))?);
    }
    headers.push(parse_header("Content-Type: application/octet-stream")?);
    let opts = HttpOptions {
        ca_dirs: a.auth.cert_dir.clone(),
        insecure: a.auth.insecure,
        client_cert: a.client_cert.clone().zip(a.client_key.clone()),
        ..Default::default()
    };
    let client = HttpClient::new(&base, opts)?;
    let route = |p: &str| {
        base.join(&format!(
            "{}/v1beta1/{p}",
            base.path().trim_end_matches('/')
        ))
        .map_err(|e| ImportError::Usage(format!("bad URL: {e}")))
    };
    let path = if a.archive {
        "upload-archive"
    } else if client.head_status(&route("upload-async")?).ok() == Some(200) {
        "upload-async"
    } else {
        "upload"
    };
    let url = route(path)?;
    let len = std::fs::metadata(&a.file)
        .map_err(|e| ImportError::Usage(format!("{}: {e}", a.file.display())))?
        .len();
    let mut attempt = 0;
    loop {
        let file = std::fs::File::open(&a.file)
            .map_err(|e| ImportError::Usage(format!("{}: {e}", a.file.display())))?;
        let meter = sources::meter::Meter::new(None);
        let _bar = (!a.no_progress && std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .then(|| crate::progress::ProgressBar::start(meter.clone(), Some(len)));
        let body = sources::meter::MeteredReader::new(file, meter);
        let (status, text) = client.post_reader(&url, &headers, Box::new(body), len)?;
        if status == 200 {
            return Ok(format!("Uploaded {len} bytes to {path}"));
        }
        // virtctl: a 401 on the first attempt fails at once.
        if attempt >= a.retries || (status == 401 && attempt == 0) {
            return Err(ImportError::Usage(format!(
                "unexpected return value {status}, {text}"
            )));
        }
        attempt += 1;
        tracing::warn!(status, "Upload refused ({text}); retrying");
        std::thread::sleep(Duration::from_millis(500 * u64::from(attempt)));
    }
}
