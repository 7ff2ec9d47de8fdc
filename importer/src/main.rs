//! The `diskimport` binary: `convert` and `info` for people on a node.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use formats::error::Classify;
use formats::ErrorKind;
use importer::error::{describe, exit_code};
use importer::pipeline::{self, ConvertOptions};
use importer::sink::Preallocation;
use importer::ImportError;
use sources::layers::SourceFormat;

#[derive(Parser, Debug)]
#[command(
    name = "diskimport",
    version,
    about = "Import virtual-machine disk images as raw, in one streaming pass"
)]
struct Cli {
    /// Show more: the full error chain, and a summary after success.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum FormatArg {
    Auto,
    Raw,
    Qcow2,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum PreallocArg {
    Off,
    Falloc,
    Full,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum OutputArg {
    Human,
    Json,
}

/// How http(s) sources are fetched.
#[derive(clap::Args, Debug, Clone)]
struct HttpArgs {
    /// Directory of extra CA certificates (PEM files; hidden files skipped). Repeatable.
    #[arg(long, value_name = "DIR")]
    cert_dir: Vec<PathBuf>,
    /// Directory of the proxy's CA certificates.
    #[arg(long, value_name = "DIR")]
    proxy_cert_dir: Option<PathBuf>,
    /// Do not verify the server's TLS certificate.
    #[arg(long)]
    insecure: bool,
    /// Basic auth user name.
    #[arg(long)]
    username: Option<String>,
    /// File holding the basic auth password.
    #[arg(long, value_name = "FILE", requires = "username")]
    password_file: Option<PathBuf>,
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
    #[arg(long, default_value = "4", value_parser = clap::value_parser!(u16).range(1..=64))]
    connections: u16,
    /// Allow connecting to this address or range even when denied. Repeatable.
    #[arg(long, value_name = "CIDR")]
    allow_destination: Vec<sources::http::Cidr>,
    /// Refuse connecting to this address or range (besides link-local and metadata). Repeatable. Through a proxy, host names are resolved by the proxy: only IP literals in URLs can be checked.
    #[arg(long, value_name = "CIDR")]
    deny_destination: Vec<sources::http::Cidr>,
}

fn seconds(what: &str, v: f64) -> Result<std::time::Duration, ImportError> {
    std::time::Duration::try_from_secs_f64(v)
        .map_err(|_| ImportError::Usage(format!("Invalid {what} {v}: expected seconds >= 0")))
}

impl HttpArgs {
    fn options(&self) -> Result<sources::http::HttpOptions, ImportError> {
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
        let password = match &self.password_file {
            Some(f) => Some(
                std::fs::read_to_string(f)
                    .map_err(|e| {
                        ImportError::Usage(format!(
                            "Reading password file {:?}: {e}",
                            formats::text::escape(&f.display().to_string())
                        ))
                    })?
                    .trim_end_matches(['\r', '\n'])
                    .to_owned(),
            ),
            None => None,
        };
        let mut egress = EgressPolicy::default();
        egress.deny.extend(self.deny_destination.iter().copied());
        egress.allow.extend(self.allow_destination.iter().copied());
        let mut ca_dirs = self.cert_dir.clone();
        ca_dirs.extend(self.proxy_cert_dir.clone());
        Ok(HttpOptions {
            ca_dirs,
            insecure: self.insecure,
            username: self.username.clone(),
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
        })
    }
}

/// `diskimport import`: each setting is a flag or CDI's environment variable.
#[derive(clap::Args, Debug)]
struct ImportArgs {
    /// Root under which every CDI path is taken (/data, /dev/cdi-block-volume, /dev/termination-log, /certs, /extraheaders). Env DISKIMPORT_ROOT.
    #[arg(long)]
    root: Option<PathBuf>,
    /// IMPORTER_SOURCE: http or none.
    #[arg(long)]
    source: Option<String>,
    /// IMPORTER_ENDPOINT: the URL.
    #[arg(long)]
    endpoint: Option<String>,
    /// IMPORTER_CONTENTTYPE: kubevirt or archive.
    #[arg(long)]
    content_type: Option<String>,
    /// IMPORTER_IMAGE_SIZE: requested size (Kubernetes quantity).
    #[arg(long)]
    image_size: Option<String>,
    /// OWNER_UID: the progress metric's label.
    #[arg(long)]
    owner_uid: Option<String>,
    /// FILESYSTEM_OVERHEAD: fraction of the volume kept free (default 0.06).
    #[arg(long)]
    filesystem_overhead: Option<String>,
    /// INSECURE_TLS: true to skip certificate verification.
    #[arg(long)]
    insecure_tls: Option<String>,
    /// PREALLOCATION: true or false.
    #[arg(long)]
    preallocation: Option<String>,
    /// CACHE_MODE (accepted; O_DIRECT is always tried).
    #[arg(long)]
    cache_mode: Option<String>,
    /// IMPORTER_CERT_DIR: CA certificates for the endpoint.
    #[arg(long)]
    cert_dir: Option<PathBuf>,
    /// IMPORTER_PROXY_CERT_DIR: CA certificates for the proxy.
    #[arg(long)]
    proxy_cert_dir: Option<PathBuf>,
    /// IMPORTER_CHECKSUM: ALGO:HEX of the source as served.
    #[arg(long)]
    checksum: Option<String>,
    /// IMPORTER_READY_FILE: wait (at most 60 s) for this file first.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// IMPORTER_DONE_FILE: created after success.
    #[arg(long)]
    done_file: Option<PathBuf>,
    /// How long to wait for the ready file.
    #[arg(long, value_name = "SECS", default_value = "60")]
    ready_timeout: f64,
    /// How often progress is logged, in seconds.
    #[arg(long, value_name = "SECS", default_value = "5")]
    log_interval: f64,
    /// Where the progress metric is served over HTTPS ("off" for nowhere). Env DISKIMPORT_METRICS_ADDRESS.
    #[arg(long)]
    metrics_address: Option<String>,
    /// Retries of transient HTTP failures.
    #[arg(long, default_value = "5")]
    retries: u32,
    /// First retry delay in seconds.
    #[arg(long, value_name = "SECS", default_value = "1")]
    retry_delay: f64,
}

/// A CDI variable or its flag; empty counts as unset.
fn setting(flag: Option<String>, var: &str) -> Option<String> {
    flag.or_else(|| std::env::var(var).ok())
        .filter(|v| !v.is_empty())
}

impl ImportArgs {
    fn settings(self) -> Result<importer::cdi::Settings, ImportError> {
        let mut extra: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with("IMPORTER_EXTRA_HEADER_"))
            .collect();
        extra.sort();
        let metrics = match setting(self.metrics_address, "DISKIMPORT_METRICS_ADDRESS").as_deref() {
            Some("off") => None,
            Some(a) => Some(a.parse().map_err(|_| {
                ImportError::Usage(format!(
                    "Invalid metrics address {:?}",
                    formats::text::escape(a)
                ))
            })?),
            None => Some(std::net::SocketAddr::from(([0, 0, 0, 0], 8443))),
        };
        let mut http = sources::http::HttpOptions::default();
        http.retry.retries = self.retries;
        http.retry.base_delay = seconds("retry delay", self.retry_delay)?;
        Ok(importer::cdi::Settings {
            root: self
                .root
                .or_else(|| std::env::var_os("DISKIMPORT_ROOT").map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from("/")),
            source: setting(self.source, "IMPORTER_SOURCE").unwrap_or_else(|| "http".into()),
            endpoint: setting(self.endpoint, "IMPORTER_ENDPOINT").unwrap_or_default(),
            content_type: setting(self.content_type, "IMPORTER_CONTENTTYPE").unwrap_or_default(),
            image_size: setting(self.image_size, "IMPORTER_IMAGE_SIZE"),
            owner_uid: setting(self.owner_uid, "OWNER_UID").unwrap_or_default(),
            filesystem_overhead: setting(self.filesystem_overhead, "FILESYSTEM_OVERHEAD"),
            insecure_tls: setting(self.insecure_tls, "INSECURE_TLS"),
            preallocation: setting(self.preallocation, "PREALLOCATION"),
            cache_mode: setting(self.cache_mode, "CACHE_MODE"),
            access_key_id: setting(None, "IMPORTER_ACCESS_KEY_ID"),
            secret_key: setting(None, "IMPORTER_SECRET_KEY"),
            cert_dir: self
                .cert_dir
                .or_else(|| setting(None, "IMPORTER_CERT_DIR").map(PathBuf::from)),
            proxy_cert_dir: self
                .proxy_cert_dir
                .or_else(|| setting(None, "IMPORTER_PROXY_CERT_DIR").map(PathBuf::from)),
            extra_headers: extra.into_iter().map(|(_, v)| v).collect(),
            checksum: setting(self.checksum, "IMPORTER_CHECKSUM"),
            ready_file: self
                .ready_file
                .or_else(|| setting(None, "IMPORTER_READY_FILE").map(PathBuf::from)),
            done_file: self
                .done_file
                .or_else(|| setting(None, "IMPORTER_DONE_FILE").map(PathBuf::from)),
            metrics,
            pull_method: setting(None, "IMPORTER_PULL_METHOD"),
            ready_timeout: Some(seconds("ready timeout", self.ready_timeout)?),
            log_interval: Some(seconds("log interval", self.log_interval)?),
            http,
        })
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run as CDI's importer: settings from CDI's environment (or flags), the result as a termination message.
    Import(ImportArgs),
    /// Convert SOURCE (a path, or - for standard input) to a raw TARGET file or block device.
    Convert {
        /// What the source is: auto (by content), raw (copy as is), qcow2.
        #[arg(long, value_enum, default_value = "auto")]
        source_format: FormatArg,
        /// Space allocation of the target.
        #[arg(long, value_enum, default_value = "off")]
        preallocation: PreallocArg,
        /// Grow a file target to this size (bytes or 10Gi, 500Mi, 1G); also its capacity.
        #[arg(long, value_parser = importer::size::parse_size)]
        target_size: Option<u64>,
        /// Expected checksum of the source bytes, ALGO:HEX (md5, sha1, sha256, sha512).
        #[arg(long)]
        checksum: Option<String>,
        /// Block device: also zero the part past the image.
        #[arg(long)]
        zero_tail: bool,
        /// Show a progress bar (default: when stderr is a terminal).
        #[arg(long, overrides_with = "no_progress")]
        progress: bool,
        /// Never show a progress bar.
        #[arg(long)]
        no_progress: bool,
        /// Directory for the qcow2 stream spill file (default: $TMPDIR).
        #[arg(long)]
        scratch_dir: Option<PathBuf>,
        /// Spill area of the qcow2 stream path; past it the rest of the stream is spooled to scratch.
        #[arg(long, value_parser = importer::size::parse_size, default_value = "256Mi")]
        spill_limit: u64,
        /// Print a report after success: human (with -v) or json (on stdout).
        #[arg(long, value_enum)]
        output: Option<OutputArg>,
        #[command(flatten)]
        http: HttpArgs,
        /// Source: a path, - for standard input, or an http(s) URL.
        source: String,
        /// Target file or block device.
        target: PathBuf,
    },
    /// Describe SOURCE without writing anything.
    Info {
        /// What the source is: auto (by content), raw, qcow2.
        #[arg(long, value_enum, default_value = "auto")]
        source_format: FormatArg,
        /// Output style.
        #[arg(long, value_enum, default_value = "human")]
        output: OutputArg,
        #[command(flatten)]
        http: HttpArgs,
        /// Source: a path, - for standard input, or an http(s) URL.
        source: String,
    },
}

fn source_format(f: FormatArg) -> SourceFormat {
    match f {
        FormatArg::Auto => SourceFormat::Auto,
        FormatArg::Raw => SourceFormat::Raw,
        FormatArg::Qcow2 => SourceFormat::Qcow2,
    }
}

fn run(cli: Cli) -> Result<(), ImportError> {
    match cli.command {
        Command::Import(_) => unreachable!("import is run by run_import"),
        Command::Convert {
            source_format: fmt,
            preallocation,
            target_size,
            checksum,
            zero_tail,
            progress,
            no_progress,
            scratch_dir,
            spill_limit,
            output,
            http,
            source,
            target,
        } => {
            let checksum = checksum
                .map(|c| c.parse::<sources::meter::Checksum>())
                .transpose()?;
            let opts = ConvertOptions {
                source,
                target,
                source_format: source_format(fmt),
                preallocation: match preallocation {
                    PreallocArg::Off => Preallocation::Off,
                    PreallocArg::Falloc => Preallocation::Falloc,
                    PreallocArg::Full => Preallocation::Full,
                },
                target_size,
                // --target-size is both the capacity and the size to grow to.
                grow_to: target_size,
                checksum,
                zero_tail,
                progress: !no_progress && (progress || std::io::stderr().is_terminal()),
                spill: formats::qcow2::stream::SpillOptions {
                    dir: scratch_dir.unwrap_or_else(std::env::temp_dir),
                    limit: spill_limit,
                },
                http: http.options()?,
                progress_state: None,
            };
            let started = std::time::Instant::now();
            let report = pipeline::convert(&opts)?;
            let secs = started.elapsed().as_secs_f64();
            if matches!(output, Some(OutputArg::Json)) {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report)
                        .map_err(|e| ImportError::Internal(e.to_string()))?
                );
            }
            // One summary line where a person watches (the bar is gone by
            // now), like curl's.
            if cli.verbose || opts.progress || matches!(output, Some(OutputArg::Human)) {
                eprintln!(
                    "Converted {} ({} source bytes): {} bytes, {} data, {} zero, in {:.1} s ({:.1} MiB/s).",
                    report.layers,
                    report.source_bytes,
                    report.virtual_size,
                    report.data_bytes,
                    report.zero_bytes,
                    secs,
                    report.source_bytes as f64 / secs.max(1e-3) / f64::from(1 << 20)
                );
            }
            Ok(())
        }
        Command::Info {
            source_format: fmt,
            output,
            http,
            source,
        } => {
            let r = pipeline::info(&source, source_format(fmt), &http.options()?)?;
            match output {
                OutputArg::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&r)
                        .map_err(|e| ImportError::Internal(e.to_string()))?
                ),
                OutputArg::Human => {
                    println!("layers: {}", r.layers.join(" -> "));
                    println!("format: {}", r.format);
                    println!("virtual size: {} bytes", r.virtual_size);
                    println!("allocated: {} bytes", r.allocated_bytes);
                    println!("zero: {} bytes", r.zero_bytes);
                    if let Some(q) = &r.qcow2 {
                        println!("qcow2 version: {}", q.version);
                        println!("cluster size: {} bytes", q.cluster_size);
                        println!("compression type: {}", q.compression_type);
                        println!("data clusters: {} bytes", q.data_bytes);
                        println!("compressed clusters: {} bytes", q.compressed_bytes);
                        println!("features: {}", q.features.join(", "));
                        println!("read path: {} ({} bytes spilled)", q.path, q.spilled_bytes);
                        if let Some(b) = &q.backing_file {
                            println!("backing file: {b:?} (never opened; refused on import)");
                        }
                        if let Some(d) = &q.data_file {
                            println!("data file: {d:?} (never opened; refused on import)");
                        }
                    }
                }
            }
            Ok(())
        }
    }
}

/// Large buffers (xz blocks, qcow2 extents) come and go; glibc's dynamic
/// mmap threshold would move them into the heap after the first free, where
/// freed memory stays resident. A fixed threshold keeps peak RSS to what is
/// live (benches/RESULTS.md).
fn tune_allocator() {
    // SAFETY: mallopt only sets allocator parameters; it is called before
    // any other thread exists and takes plain integers.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// CDI runs its importer as `cdi-importer -alsologtostderr -v=N`: those
/// flags are accepted (verbosity > 0 means `-v`).
fn cdi_args() -> Vec<std::ffi::OsString> {
    std::env::args_os()
        .filter_map(|a| {
            let s = a.to_string_lossy();
            if s == "-alsologtostderr" || s == "--alsologtostderr" {
                return None;
            }
            if let Some(n) = s.strip_prefix("-v=").or_else(|| s.strip_prefix("--v=")) {
                return (n.parse::<u32>().unwrap_or(0) > 0).then(|| "-v".into());
            }
            Some(a)
        })
        .collect()
}

/// `diskimport import`: always a termination message and CDI's exit codes.
fn run_import(args: ImportArgs, verbose: bool) -> ExitCode {
    // A pod's log is all an operator has: start, what was found, progress
    // and the outcome are logged at info whatever CDI's -v says; -v adds
    // debug detail.
    let level = if verbose {
        "info,importer=debug,sources=debug,formats=debug,diskimport=debug"
    } else {
        "info"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let fmt = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_target(false);
    if std::io::stderr().is_terminal() {
        fmt.init();
    } else {
        // JSON lines for log collectors.
        fmt.json().init();
    }
    let settings = match args.settings() {
        Ok(s) => s,
        Err(e) => {
            let msg = describe(&e, false);
            eprintln!("diskimport: error[usage]: {msg}");
            return ExitCode::from(1);
        }
    };
    let root = settings.root.clone();
    {
        // A panic still leaves a failure message for the controller.
        let root = root.clone();
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let _ = importer::cdi::write_termination(
                &root,
                "Unable to process data: internal error (panic)",
            );
            default(info);
        }));
    }
    let outcome = importer::cdi::run(&settings);
    if let Some(t) = &outcome.termination {
        if let Err(e) = importer::cdi::write_termination(&root, t) {
            tracing::error!("Writing the termination message: {e}");
        }
    }
    if outcome.exit_code == 0 {
        tracing::info!("{}", outcome.log);
    } else {
        tracing::error!("{}", outcome.log);
    }
    ExitCode::from(outcome.exit_code)
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse_from(cdi_args());
    if let Command::Import(args) = cli.command {
        return run_import(args, cli.verbose);
    }
    let level = if cli.verbose { "info" } else { "warn" };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .without_time()
        .with_target(false)
        .init();
    let verbose = cli.verbose;
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let kind: ErrorKind = e.kind();
            eprintln!("diskimport: error[{kind}]: {}", describe(&e, verbose));
            ExitCode::from(exit_code(kind) as u8)
        }
    }
}
