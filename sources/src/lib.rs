//! # Overview
//!
//! `sources` is the byte plane of diskimport: where bytes come from and how
//! their compression is removed, before a format reader turns them into
//! extents.
//!
//! - [`source`] is the one way in: a [`source::SourceSpec`] opened into a
//!   [`source::Source`], looked at, then read one way, metered once.
//! - [`file`] opens a local file or standard input, and reads sparse local
//!   files hole-aware.
//! - [`http`] fetches http(s) sources: redirects by our rules, retries,
//!   resume with `Range` + `If-Range`, random access by range requests on
//!   parallel connections (qcow2 without a scratch copy), TLS with CA
//!   directories, an egress policy checked at connect time.
//! - [`meter`] counts the source bytes (progress) and hashes them for
//!   `--checksum` (over the bytes as read, before decompression).
//! - [`peek`] lets detection look at a prefix without consuming it.
//! - [`targuard`] watches a tar stream's headers as they pass, bounding
//!   long names and PAX records before the `tar` crate reads them.
//! - [`decode`] removes one compression layer: gzip (every member), xz
//!   (every stream, multi-threaded) and zstd (every frame), each with
//!   bounded memory.
//! - [`layers`] peels the stack: probe, decode once, probe again, refuse
//!   nested compression (D9) and recognised-but-unsupported formats (G2).
//!
//! Stages are plain `std::io::Read` values run on dedicated threads: the
//! CPU-heavy ones (inflate, xz, zstd) must never run on an async executor.
//! The HTTP source does its network I/O on a small tokio runtime and hands
//! bytes to those threads through bounded channels.
//!
//! ```
//! use std::io::Read;
//! use sources::layers::{open_layers, LayerOptions};
//! let gz = {
//!     let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
//!     std::io::Write::write_all(&mut e, b"hello disk").unwrap();
//!     e.finish().unwrap()
//! };
//! let mut opened = open_layers(Box::new(std::io::Cursor::new(gz)), &LayerOptions::default()).unwrap();
//! assert_eq!(opened.describe(), "gzip -> raw");
//! let mut out = String::new();
//! opened.reader.read_to_string(&mut out).unwrap();
//! assert_eq!(out, "hello disk");
//! ```

pub mod decode;
pub mod error;
pub mod file;
pub mod http;
pub mod layers;
pub mod meter;
pub mod peek;
pub mod registry;
pub mod source;
pub mod targuard;
mod xzblocks;

pub use error::SourceError;
