//! `diskimport upload-server`: CDI's upload pod (docs/upload.md). The
//! client's request body is a source like any other and goes through the
//! same pipeline as a download, straight to the volume: no scratch.
//!
//! ```text
//! TLS accept (client cert verified if presented) -> hyper HTTP/1.1
//!   -> route + CDI's check order (HEAD probe, method, client CN, busy, done)
//!   -> body (raw, or the `file` part of a multipart form) as a blocking
//!      reader -> pipeline::convert_source (or the archive extractor)
//!   -> 200 and exit 0 with "Upload Complete"; 400/500 and ready again
//! ```

mod body;
mod client;
mod process;
mod server;
mod tls;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use body::fuzz_form;
pub use client::{run as run_client, UploadClientArgs};

use crate::cdi::settings::setting;
use crate::cdi::under;

/// `diskimport upload-server`: each setting is a flag or CDI's variable.
#[derive(clap::Args, Debug)]
pub struct UploadArgs {
    /// Root under which the volume's paths are taken (/data, /dev/cdi-block-volume, /dev/termination-log, DESTINATION); the TLS files are taken as given. Env DISKIMPORT_ROOT.
    #[arg(long)]
    root: Option<PathBuf>,
    /// TLS_KEY_FILE: the server's private key (PEM).
    #[arg(long)]
    tls_key_file: Option<PathBuf>,
    /// TLS_CERT_FILE: the server's certificate chain (PEM).
    #[arg(long)]
    tls_cert_file: Option<PathBuf>,
    /// CLIENT_CERT_FILE: CA bundle client certificates must chain to (PEM).
    #[arg(long)]
    client_cert_file: Option<PathBuf>,
    /// CLIENT_NAME: the common name the client certificate must have.
    #[arg(long)]
    client_name: Option<String>,
    /// UPLOAD_IMAGE_SIZE: the requested size (Kubernetes quantity).
    #[arg(long)]
    upload_image_size: Option<String>,
    /// FILESYSTEM_OVERHEAD: fraction kept free (a bad value counts as 0, as CDI).
    #[arg(long)]
    filesystem_overhead: Option<String>,
    /// PREALLOCATION: true or false (a bad value counts as false, as CDI).
    #[arg(long)]
    preallocation: Option<String>,
    /// DEADLINE: RFC 3339 time after which the server gives up.
    #[arg(long)]
    deadline: Option<String>,
    /// DESTINATION: the image file or block device (default /data/disk.img, or /dev/cdi-block-volume when present).
    #[arg(long)]
    destination: Option<PathBuf>,
    /// LISTEN_ADDRESS (default 0.0.0.0).
    #[arg(long)]
    listen_address: Option<String>,
    /// LISTEN_PORT (default 8443).
    #[arg(long)]
    listen_port: Option<String>,
    /// TLS_MIN_VERSION: VersionTLS12 or VersionTLS13 (older ones mean 1.2).
    #[arg(long)]
    tls_min_version: Option<String>,
    /// TLS_CIPHERS: comma-separated OpenSSL or IANA names of TLS 1.2 suites.
    #[arg(long)]
    tls_ciphers: Option<String>,
    /// Serve the upload's progress metric (percent of Content-Length) over HTTPS here (beyond CDI; default: off). Env DISKIMPORT_METRICS_ADDRESS.
    #[arg(long)]
    metrics_address: Option<String>,
    /// OWNER_UID: the progress metric's label.
    #[arg(long)]
    owner_uid: Option<String>,
}

/// A path setting: the flag, else CDI's variable (empty counts as unset).
fn path_setting(flag: Option<PathBuf>, var: &str) -> Option<PathBuf> {
    flag.or_else(|| setting(None, var).map(PathBuf::from))
}

/// The server's settings.
#[derive(Debug, Clone)]
pub struct UploadSettings {
    pub(crate) root: PathBuf,
    pub(crate) key: PathBuf,
    pub(crate) cert: PathBuf,
    pub(crate) client_ca: PathBuf,
    pub(crate) client_name: String,
    pub(crate) image_size: Option<u64>,
    pub(crate) overhead: f64,
    pub(crate) preallocate: bool,
    pub(crate) deadline: Option<SystemTime>,
    pub(crate) destination: Option<PathBuf>,
    pub(crate) listen: String,
    pub(crate) min_version: Option<String>,
    pub(crate) ciphers: Option<String>,
    pub(crate) metrics: Option<std::net::SocketAddr>,
    pub(crate) owner_uid: String,
}

/// Why the server could not start (exit 1; DEADLINE unparsable: 255, as
/// CDI's `klog.Fatalf`).
#[derive(Debug)]
pub struct StartError {
    /// Process exit code.
    pub exit_code: u8,
    /// What to log.
    pub message: String,
}

impl UploadArgs {
    /// The settings: flags first, then CDI's variables.
    pub fn settings(self) -> Result<UploadSettings, StartError> {
        let fail = |m: String| StartError {
            exit_code: 1,
            message: m,
        };
        let root = self
            .root
            .or_else(|| std::env::var_os("DISKIMPORT_ROOT").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/"));
        let (Some(key), Some(cert)) = (
            path_setting(self.tls_key_file, "TLS_KEY_FILE"),
            path_setting(self.tls_cert_file, "TLS_CERT_FILE"),
        ) else {
            return Err(fail("Error getting TLS config: invalid TLS config (TLS_KEY_FILE and TLS_CERT_FILE are required)".into()));
        };
        let client_ca = path_setting(self.client_cert_file, "CLIENT_CERT_FILE").ok_or_else(|| {
            fail("Error getting TLS config: CLIENT_CERT_FILE is required (client certificates are always verified)".into())
        })?;
        let image_size = match setting(self.upload_image_size, "UPLOAD_IMAGE_SIZE") {
            Some(v) => Some(
                crate::size::parse_size(&v).map_err(|e| fail(format!("UPLOAD_IMAGE_SIZE: {e}")))?,
            ),
            None => None,
        };
        let overhead = setting(self.filesystem_overhead, "FILESYSTEM_OVERHEAD")
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|f| (0.0..=1.0).contains(f))
            .unwrap_or(0.0);
        let preallocate = setting(self.preallocation, "PREALLOCATION")
            .and_then(|v| crate::cdi::parse_go_bool(&v))
            .unwrap_or(false);
        let deadline = match setting(self.deadline, "DEADLINE") {
            Some(d) => Some(parse_rfc3339(&d).ok_or_else(|| StartError {
                exit_code: 255,
                message: format!(
                    "Invalid DEADLINE {:?}: expected RFC 3339",
                    formats::text::escape(&d)
                ),
            })?),
            None => None,
        };
        // LISTEN_ADDRESS may be set empty (meaning all addresses); a bad
        // LISTEN_PORT is ignored, as CDI ignores it.
        let addr = self
            .listen_address
            .or_else(|| std::env::var("LISTEN_ADDRESS").ok())
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| "0.0.0.0".into());
        let port = setting(self.listen_port, "LISTEN_PORT")
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or(8443);
        let listen = if addr.contains(':') && !addr.starts_with('[') {
            format!("[{addr}]:{port}")
        } else {
            format!("{addr}:{port}")
        };
        Ok(UploadSettings {
            // Files named by the pod spec, taken as given (not under the
            // root: they are the server's own, not the volume's).
            key,
            cert,
            client_ca,
            root,
            client_name: setting(self.client_name, "CLIENT_NAME")
                .unwrap_or_else(|| "client.upload-server.cdi.kubevirt.io".into()),
            image_size,
            overhead,
            preallocate,
            deadline,
            destination: path_setting(self.destination, "DESTINATION"),
            listen,
            min_version: setting(self.tls_min_version, "TLS_MIN_VERSION"),
            ciphers: setting(self.tls_ciphers, "TLS_CIPHERS"),
            metrics: match setting(self.metrics_address, "DISKIMPORT_METRICS_ADDRESS").as_deref() {
                None | Some("off") => None,
                Some(a) => Some(a.parse().map_err(|_| {
                    fail(format!(
                        "Invalid metrics address {:?}",
                        formats::text::escape(a)
                    ))
                })?),
            },
            owner_uid: setting(self.owner_uid, "OWNER_UID").unwrap_or_default(),
        })
    }
}

/// RFC 3339 (`2026-11-30T13:00:00Z`, fractions and offsets allowed).
fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, se) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(r) = rest.strip_prefix('.') {
        let n = r.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        rest = &r[n..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (oh, om) = rest[1..].split_once(':')?;
            if oh.len() != 2 || om.len() != 2 {
                return None;
            }
            sign * (oh.parse::<i64>().ok()? * 3600 + om.parse::<i64>().ok()? * 60)
        }
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let (yy, mm) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * mm + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + se - offset;
    if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(secs as u64))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
    }
}

/// What the server ends with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    /// Process exit code.
    pub exit_code: u8,
    /// The termination message, if one is written.
    pub termination: Option<String>,
    /// For the log.
    pub log: String,
}

/// The target and its space rules for one upload.
pub(crate) fn volume(s: &UploadSettings) -> crate::cdi::Target {
    let mut t = crate::cdi::Target::find(&s.root);
    if let Some(d) = &s.destination {
        let p = under(&s.root, d);
        t.block = p.starts_with(under(&s.root, Path::new("/dev")));
        t.path = p;
    }
    t
}

/// Runs the server until an upload completes, the deadline passes, or an
/// async upload fails.
pub fn run(s: UploadSettings) -> Ending {
    match server::serve(s) {
        Ok(e) => e,
        Err(message) => Ending {
            exit_code: 1,
            termination: None,
            log: format!("UploadServer failed: {message}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times_parse_to_unix_seconds_worked_out_by_hand() {
        let secs =
            |s: &str| parse_rfc3339(s).map(|t| t.duration_since(UNIX_EPOCH).unwrap().as_secs());
        assert_eq!(secs("1970-01-01T00:00:00Z"), Some(0));
        // RFC 9110's example date, Sun, 06 Nov 1994 08:49:37 GMT.
        assert_eq!(secs("1994-11-06T08:49:37Z"), Some(784_111_777));
        assert_eq!(secs("1994-11-06T10:49:37.123+02:00"), Some(784_111_777));
        assert_eq!(secs("2000-02-29T00:00:00Z"), Some(951_782_400));
        for bad in [
            "",
            "2026-13-01T00:00:00Z",
            "2026-11-30 13:00",
            "2026-11-30T13:00:00",
            "2026-11-30T13:00:00+0200",
        ] {
            assert_eq!(secs(bad), None, "{bad}");
        }
    }
}
