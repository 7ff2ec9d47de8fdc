//! # Overview
//!
//! `importer` runs diskimport's pipeline: it joins a source from
//! [`sources`] to a format reader from [`formats`] and writes the extents
//! to a target [`sink`], a sparse file or a block device.
//!
//! - [`pipeline`] is the one streaming pipeline behind every entrypoint:
//!   producer thread (read + decompress) -> bounded channel -> consumer
//!   (zero detection + writes), with everything that can refuse an import
//!   checked before the target is touched.
//! - [`sink`] holds the file and block-device targets, preallocation and
//!   the cleanup guard that keeps a failed import from looking complete.
//! - [`error`] maps every failure to an [`formats::ErrorKind`] and an exit
//!   code.
//! - [`size`] parses byte sizes and Kubernetes quantities.
//! - [`progress`] shows a progress bar on a terminal and keeps the
//!   percentage for CDI's metric.
//! - [`cdi`] is `diskimport import`: CDI's importer contract (environment,
//!   paths, space rules, termination message, progress metric).
//!
//! ```no_run
//! use importer::pipeline::{convert, ConvertOptions};
//! let report = convert(&ConvertOptions {
//!     source: "disk.raw.xz".into(),
//!     target: "disk.img".into(),
//!     ..ConvertOptions::default()
//! })
//! .unwrap();
//! println!("{} bytes of data", report.data_bytes);
//! ```

pub mod cdi;
pub mod cli;
pub mod containerdisk;
pub mod error;
pub mod pipeline;
pub mod progress;
pub mod sink;
pub mod size;
pub mod upload;

pub use error::ImportError;
