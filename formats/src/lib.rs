//! # Overview
//!
//! `formats` is the pure half of diskimport: it knows what disk images look
//! like, and nothing about where their bytes come from. It never opens a
//! network connection and never names a file of its own accord.
//!
//! diskimport moves data in two planes, joined at the format stage:
//!
//! ```text
//! byte plane (std::io::Read chain)          block plane (extents, guest order)
//! Source -> Decoder -> Probe -> Format ----> ZeroSplitter -> Sink
//!  file      gz/xz/zst  magic   raw: Chunker                 file | block device
//!  stdin                        qcow2: ReadAt
//! ```
//!
//! - [`probe`] decides what a stream is from its first bytes, never from a
//!   file name.
//! - [`extent`] defines the block-plane currency: [`Extent::Data`] and
//!   [`Extent::Zero`], yielded in strictly increasing, contiguous guest order.
//! - [`raw`] turns a byte stream into extents; [`zero`] finds all-zero 4 KiB
//!   blocks so that every format produces sparse output.
//! - [`sink`] is the contract every target implements; [`sink::MemSink`] is
//!   the in-memory reference used by tests.
//! - [`error`] holds [`ErrorKind`], the small classification every crate of
//!   the workspace maps its errors to (retry, exit code, message).
//!
//! ```
//! use formats::{raw::RawReader, sink::{MemSink, drain}};
//! let mut image = vec![0u8; 10_000];
//! image[5000] = 7;
//! let mut reader = RawReader::new(&image[..]);
//! let mut sink = MemSink::default();
//! let size = drain(&mut reader, &mut sink).unwrap();
//! assert_eq!(size, 10_240); // rounded up to 512
//! assert_eq!(&sink.contents()[..10_000], &image[..]);
//! ```

pub mod error;
pub mod extent;
pub mod kind;

#[cfg(test)]
mod contract_tests;
pub mod pool;
pub mod probe;
pub mod qcow2;
pub mod raw;
pub mod read_at;
pub mod sink;
pub mod text;
pub mod zero;

pub use error::{ErrorKind, FormatError};
pub use extent::{Extent, ExtentReader};
pub use probe::Probe;
