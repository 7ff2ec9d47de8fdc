//! `diskimport containerdisk build|push`: container disks without a
//! Containerfile or a daemon (docs/registry.md, "Building container
//! disks").

use std::collections::BTreeMap;
use std::path::PathBuf;

use sources::registry::{BuildOptions, ImageRef, LayerCompression, Platform};

use crate::ImportError;

/// Layer compression on the command line.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum CompressionArg {
    /// tar+gzip (read by every runtime).
    Gzip,
    /// tar+zstd.
    Zstd,
    /// Plain tar.
    None,
}

/// What every containerdisk command takes.
#[derive(clap::Args, Debug)]
pub struct ImageArgs {
    /// Platform of DISK (os/arch[/variant], default linux and this machine's architecture), or os/arch[/variant]=DISK for one disk per platform in one index. Repeatable.
    #[arg(long = "platform", value_name = "PLATFORM[=DISK]")]
    platforms: Vec<String>,
    /// Layer compression.
    #[arg(long, value_enum, default_value = "gzip")]
    compression: CompressionArg,
    /// Config label K=V. Repeatable.
    #[arg(long = "label", value_name = "K=V")]
    labels: Vec<String>,
    /// Config Env entry K=V (CDI turns *KUBEVIRT_IO_* ones into PVC labels). Repeatable.
    #[arg(long = "env", value_name = "K=V")]
    env: Vec<String>,
}

impl ImageArgs {
    /// The build options for `disk` (optional when every platform names
    /// its own).
    pub fn options(&self, disk: Option<PathBuf>) -> Result<BuildOptions, ImportError> {
        let usage = |m: String| ImportError::Usage(m);
        let mut disks = Vec::new();
        for p in &self.platforms {
            let (plat, file) = match p.split_once('=') {
                Some((pl, f)) => (pl, Some(PathBuf::from(f))),
                None => (p.as_str(), None),
            };
            let platform = Platform::parse(plat).map_err(|e| usage(e.to_string()))?;
            let file = file.or_else(|| disk.clone()).ok_or_else(|| {
                usage(format!(
                    "--platform {plat}: no disk (give DISK or {plat}=FILE)"
                ))
            })?;
            disks.push((platform, file));
        }
        if disks.is_empty() {
            let d = disk.ok_or_else(|| usage("give DISK or --platform os/arch=DISK".into()))?;
            disks.push((Platform::host(), d));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (p, _) in &disks {
            if !seen.insert(p.shown()) {
                return Err(usage(format!("platform {} given twice", p.shown())));
            }
        }
        let mut labels = BTreeMap::new();
        for l in &self.labels {
            let (k, v) = l
                .split_once('=')
                .ok_or_else(|| usage(format!("--label {l:?}: expected K=V")))?;
            labels.insert(k.to_owned(), v.to_owned());
        }
        for e in &self.env {
            if !e.contains('=') {
                return Err(usage(format!("--env {e:?}: expected K=V")));
            }
        }
        Ok(BuildOptions {
            disks,
            compression: match self.compression {
                CompressionArg::Gzip => LayerCompression::Gzip,
                CompressionArg::Zstd => LayerCompression::Zstd,
                CompressionArg::None => LayerCompression::None,
            },
            labels,
            env: self.env.clone(),
        })
    }
}

/// The `containerdisk` commands.
#[derive(clap::Subcommand, Debug)]
pub enum ContainerdiskCommand {
    /// Build a container disk as an OCI layout: --output oci:DIR[:TAG] or oci-archive:FILE[:TAG].
    Build {
        /// Where to write it.
        #[arg(long)]
        output: String,
        /// Platforms, compression, labels, env.
        #[command(flatten)]
        image: ImageArgs,
        /// The disk file (raw, qcow2, ISO, compressed or not), stored as it is.
        disk: Option<PathBuf>,
    },
    /// Build a container disk and push it: docker://HOST/REPO:TAG.
    Push {
        /// Platforms, compression, labels, env.
        #[command(flatten)]
        image: ImageArgs,
        /// CA directories, TLS verification, credentials.
        #[command(flatten)]
        auth: crate::cli::AuthArgs,
        /// [DISK] DESTINATION: the disk file (optional when every --platform names its own), then docker://HOST/REPO:TAG.
        #[arg(required = true, num_args = 1..=2, value_names = ["DISK", "DESTINATION"])]
        operands: Vec<String>,
    },
}

/// Runs a `containerdisk` command; what to print on success.
pub fn run(cmd: ContainerdiskCommand) -> Result<String, ImportError> {
    let image_ref = |s: &str| ImageRef::parse(s).map_err(|e| ImportError::Usage(e.to_string()));
    match cmd {
        ContainerdiskCommand::Build {
            output,
            image,
            disk,
        } => {
            let out = image_ref(&output)?;
            sources::registry::build(&out, &image.options(disk)?)
                .map_err(|e| ImportError::Source(e.into()))?;
            Ok(format!("Wrote {}", out.shown()))
        }
        ContainerdiskCommand::Push {
            image,
            auth,
            mut operands,
        } => {
            let destination = operands.pop().expect("clap requires one");
            let disk = operands.pop().map(PathBuf::from);
            let dest = image_ref(&destination)?;
            let http = sources::http::HttpOptions {
                ca_dirs: auth.cert_dir.clone(),
                insecure: auth.insecure,
                username: auth.username.clone(),
                password: auth.password()?,
                ..Default::default()
            };
            let digest = sources::registry::push(&dest, &image.options(disk)?, &http)
                .map_err(|e| ImportError::Source(e.into()))?;
            Ok(format!("Pushed {}@{digest}", dest.shown()))
        }
    }
}
