//! Command-line settings shared by the entrypoints: how http(s) sources
//! are fetched (`convert`, `info`), and durations given in seconds.

use std::path::PathBuf;

use crate::ImportError;

/// Who we are to a server and whom we trust: CA directories, TLS
/// verification, credentials (sources, registries, pushes).
#[derive(clap::Args, Debug, Clone)]
pub struct AuthArgs {
    /// Directory of extra CA certificates (PEM files; hidden files skipped). Repeatable.
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Vec<PathBuf>,
    /// Do not verify the server's TLS certificate (registries: also plain http when https fails).
    #[arg(long)]
    pub insecure: bool,
    /// Basic auth (or registry) user name.
    #[arg(long)]
    pub username: Option<String>,
    /// File holding the password.
    #[arg(long, value_name = "FILE", requires = "username")]
    pub password_file: Option<PathBuf>,
}

impl AuthArgs {
    /// The password file's first line.
    pub fn password(&self) -> Result<Option<String>, ImportError> {
        self.password_file
            .as_ref()
            .map(|f| {
                std::fs::read_to_string(f)
                    .map(|p| p.trim_end_matches(['\r', '\n']).to_owned())
                    .map_err(|e| {
                        ImportError::Usage(format!(
                            "Reading password file {:?}: {e}",
                            formats::text::escape(&f.display().to_string())
                        ))
                    })
            })
            .transpose()
    }
}

/// How http(s) sources are fetched.
#[derive(clap::Args, Debug, Clone)]
pub struct HttpArgs {
    /// CA directories, TLS verification, credentials.
    #[command(flatten)]
    auth: AuthArgs,
    /// Directory of the proxy's CA certificates.
    #[arg(long, value_name = "DIR")]
    proxy_cert_dir: Option<PathBuf>,
    /// Extra request header 'Name: value'. Repeatable; values are never logged.
    #[arg(long = "header", value_name = "HEADER")]
    headers: Vec<String>,
    /// Directory of header files, one 'Name: value' per file (CDI's /extraheaders).
    #[arg(long, value_name = "DIR")]
    header_dir: Vec<PathBuf>,
    /// Retries of transient failures (connect errors, 5xx, 408, 429, broken bodies).
    #[arg(long, default_value = "5")]
    retries: u32,
    /// First retry delay in seconds; doubled each time, at most 30 s.
    #[arg(long, value_name = "SECS", default_value = "1")]
    retry_delay: f64,
    /// Give up when no byte arrives for this many seconds.
    #[arg(long, value_name = "SECS", default_value = "600")]
    idle_timeout: f64,
    /// Give up when the whole download takes longer than this many seconds (import: 86400 when not given).
    #[arg(long, value_name = "SECS")]
    deadline: Option<f64>,
    /// Parallel connections for range reads of qcow2 images.
    #[arg(long, default_value_t = sources::http::DEFAULT_CONNECTIONS, value_parser = clap::value_parser!(u16).range(1..=64))]
    connections: u16,
    /// Allow connecting to this address or range even when denied. Repeatable.
    #[arg(long, value_name = "CIDR")]
    allow_destination: Vec<sources::http::Cidr>,
    /// Refuse connecting to this address or range (besides link-local and metadata). Repeatable. Through a proxy, host names are resolved by the proxy: only IP literals in URLs can be checked.
    #[arg(long, value_name = "CIDR")]
    deny_destination: Vec<sources::http::Cidr>,
    /// Image sources: the platform to pull from a multi-platform image, os/arch[/variant] or arch (default: linux and this machine's architecture).
    #[arg(long, value_name = "PLATFORM")]
    platform: Option<String>,
}

/// `v` seconds as a duration; a negative or non-finite value is a usage
/// error naming `what`.
pub fn seconds(what: &str, v: f64) -> Result<std::time::Duration, ImportError> {
    std::time::Duration::try_from_secs_f64(v)
        .map_err(|_| ImportError::Usage(format!("Invalid {what} {v}: expected seconds >= 0")))
}

impl HttpArgs {
    /// The platform asked for, or this machine's.
    pub fn wanted(&self) -> Result<sources::registry::Wanted, ImportError> {
        Ok(match &self.platform {
            Some(p) => sources::registry::Wanted {
                platform: sources::registry::Platform::parse(p)
                    .map_err(|e| ImportError::Usage(e.to_string()))?,
                explicit: true,
            },
            None => sources::registry::Wanted::default(),
        })
    }

    /// Everything a source needs to be opened.
    pub fn open_options(&self) -> Result<sources::source::OpenOptions, ImportError> {
        Ok(sources::source::OpenOptions {
            http: self.options()?,
            wanted: self.wanted()?,
        })
    }

    /// The client settings: headers parsed, header and password files read.
    pub fn options(&self) -> Result<sources::http::HttpOptions, ImportError> {
        use sources::http::{
            parse_header, read_header_dir, EgressPolicy, HttpOptions, RetryPolicy,
        };
        let mut headers = self
            .headers
            .iter()
            .map(|h| parse_header(h))
            .collect::<Result<Vec<_>, _>>()?;
        for dir in &self.header_dir {
            headers.extend(read_header_dir(dir)?);
        }
        let password = self.auth.password()?;
        let mut egress = EgressPolicy::default();
        egress.deny.extend(self.deny_destination.iter().copied());
        egress.allow.extend(self.allow_destination.iter().copied());
        let mut ca_dirs = self.auth.cert_dir.clone();
        ca_dirs.extend(self.proxy_cert_dir.clone());
        Ok(HttpOptions {
            ca_dirs,
            insecure: self.auth.insecure,
            username: self.auth.username.clone(),
            password,
            headers,
            retry: RetryPolicy {
                retries: self.retries,
                base_delay: seconds("retry delay", self.retry_delay)?,
                max_delay: std::time::Duration::from_secs(30),
            },
            idle_timeout: seconds("idle timeout", self.idle_timeout)?,
            deadline: self.deadline.map(|d| seconds("deadline", d)).transpose()?,
            connections: usize::from(self.connections),
            egress,
            client_cert: None,
        })
    }
}
