//! The `diskimport` binary: `convert` and `info` for people on a node.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use formats::error::Classify;
use formats::ErrorKind;
use importer::cdi::ImportArgs;
use importer::cli::HttpArgs;
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

#[derive(Subcommand, Debug)]
enum Command {
    /// Build a container disk (an OCI image holding /disk/FILE, owned 107:107) and write or push it.
    Containerdisk {
        #[command(subcommand)]
        command: importer::containerdisk::ContainerdiskCommand,
    },
    /// Upload FILE to an upload server (as virtctl image-upload does: HEAD probe, then POST), with client certificates and a progress bar.
    Upload(importer::upload::UploadClientArgs),
    /// Run as CDI's upload server: HTTPS with client certificates; each upload converted while it arrives (settings from CDI's environment or flags).
    UploadServer(importer::upload::UploadArgs),
    /// Node pull: serve the one file of a container disk's /disk to the importer (CDI's cdi-containerimage-server; Go-style flags -p, -image-dir, -ready-file, -done-file). Also built as the static binary diskimport-serve-image.
    ServeImage {
        /// The server's flags.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
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
        /// Source: a path, - for standard input, an http(s) URL, or an image (docker://, oci:, oci-archive:).
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
        /// Source: a path, - for standard input, an http(s) URL, or an image (docker://, oci:, oci-archive:).
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
        Command::ServeImage { .. } => unreachable!("serve-image is run before parsing"),
        Command::UploadServer(_) => unreachable!("upload-server is run by run_upload_server"),
        Command::Upload(args) => {
            let done = importer::upload::run_client(args)?;
            eprintln!("{done}");
            Ok(())
        }
        Command::Containerdisk { command } => {
            let done = importer::containerdisk::run(command)?;
            eprintln!("{done}");
            Ok(())
        }
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
                wanted: http.wanted()?,
                progress_state: None,
                milestones: None,
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
            let r = pipeline::info(&source, source_format(fmt), &http.open_options()?)?;
            match output {
                OutputArg::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&r)
                        .map_err(|e| ImportError::Internal(e.to_string()))?
                ),
                OutputArg::Human => {
                    if let Some(i) = &r.image {
                        println!("image: {}", i.reference);
                        println!("manifest digest: {}", i.manifest_digest);
                        println!("platform: {}", i.platform.shown());
                        println!("layer: {}", i.layer);
                        println!(
                            "disk file: {} ({} bytes)",
                            formats::text::escape(&i.file),
                            i.file_size
                        );
                    }
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

/// `diskimport upload-server`: CDI's upload pod.
fn run_upload_server(args: importer::upload::UploadArgs, verbose: bool) -> ExitCode {
    pod_logging(verbose);
    let settings = match args.settings() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("UploadServer failed: {}", e.message);
            return ExitCode::from(e.exit_code);
        }
    };
    let ending = importer::upload::run(settings);
    if ending.exit_code == 0 {
        tracing::info!("{}", ending.log);
    } else {
        tracing::error!("{}", ending.log);
    }
    ExitCode::from(ending.exit_code)
}

/// A pod's log: JSON lines when stderr is not a terminal, info by default.
fn pod_logging(verbose: bool) {
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
        fmt.json().init();
    }
}

/// `diskimport import`: always a termination message and CDI's exit codes.
fn run_import(args: ImportArgs, verbose: bool) -> ExitCode {
    // A pod's log is all an operator has: start, what was found, progress
    // and the outcome are logged at info whatever CDI's -v says; -v adds
    // debug detail.
    pod_logging(verbose);
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
    // serve-image takes Go-style flags (-image-dir): handed over as they are.
    let argv: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if argv.get(1).map(String::as_str) == Some("serve-image") {
        let code = serveimage::main_with(&argv[2..]);
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    tune_allocator();
    let cli = Cli::parse_from(cdi_args());
    if let Command::Import(args) = cli.command {
        return run_import(args, cli.verbose);
    }
    if let Command::UploadServer(args) = cli.command {
        return run_upload_server(args, cli.verbose);
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
