//! The decoder stage: removes one compression layer, consuming the whole
//! input (every gzip member, every xz stream, every zstd frame) and checking
//! integrity on the way (G6). Memory is bounded for hostile input (G3).
//!
//! Errors are returned as `io::Error`s carrying a classified
//! [`formats::error::KindedIoError`], so the kind (truncated, integrity,
//! format, limit) survives the `Read` chain.

use std::io::{self, BufRead, Read};

use formats::error::{kinded_io, ErrorKind, KindedIoError};
use formats::Probe;

use crate::peek::PeekReader;

/// xz: decoding stops above this much memory (C11).
pub const XZ_MEMLIMIT_STOP: u64 = 512 << 20;
/// xz: threads decode blocks in parallel only within this much memory;
/// beyond it liblzma runs fewer threads. The spec allows up to 256 MiB;
/// 48 MiB keeps two threads busy on `xz -T2 -3` files (12 MiB blocks) while
/// the whole process stays under its 64 MiB RSS budget (measured in
/// benches/RESULTS.md: 256 MiB bought no measurable speed, and 25 MiB more
/// RSS).
pub const XZ_MEMLIMIT_THREADING: u64 = 48 << 20;
/// zstd: the largest window accepted, as a power of two (128 MiB, zstd's
/// own default limit): frames made with `--long=31` are refused (C13).
pub const ZSTD_WINDOW_LOG_MAX: u32 = 27;
/// gzip: the longest header (FEXTRA + FNAME + FCOMMENT) accepted, so an
/// unterminated name cannot make the header parser buffer the whole
/// stream (C17).
pub const MAX_GZIP_HEADER: usize = 64 * 1024;

/// A decompressing reader for one layer.
pub type Decoder = Box<dyn Read + Send>;

/// Wraps `input` in the decoder for `kind`; `threads` is the xz decoder's
/// thread count.
pub fn decoder<R: Read + Send + 'static>(
    kind: Probe,
    input: PeekReader<R>,
    threads: u32,
) -> io::Result<Decoder> {
    match kind {
        Probe::Gzip => Ok(Box::new(Members::new(input, GzipFormat))),
        Probe::Xz => xz(input, threads),
        Probe::Zstd => zstd(input),
        other => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a compression format", other.name()),
        )),
    }
}

fn xz<R: Read + Send + 'static>(input: PeekReader<R>, threads: u32) -> io::Result<Decoder> {
    Ok(Box::new(Members::new(input, XzFormat { threads })))
}

fn zstd<R: Read + Send + 'static>(input: PeekReader<R>) -> io::Result<Decoder> {
    let mut d = zstd::stream::read::Decoder::with_buffer(input)?;
    d.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
    Ok(Box::new(Classified {
        inner: d,
        format: "zstd",
    }))
}

/// Gives a decoder's plain `io::Error`s a kind and a clear message.
struct Classified<R> {
    inner: R,
    format: &'static str,
}

impl<R: Read> Read for Classified<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner
            .read(buf)
            .map_err(|e| classify_decoder_error(self.format, e))
    }
}

/// Turns a decoder's error into a classified one. The libraries report
/// kinds only through `io::ErrorKind` and message text, so this is the one
/// place that reads their messages.
fn classify_decoder_error(format: &'static str, e: io::Error) -> io::Error {
    if e.get_ref().is_some_and(|i| i.is::<KindedIoError>()) {
        return e;
    }
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    if let Some(x) = e
        .get_ref()
        .and_then(|i| i.downcast_ref::<liblzma::stream::Error>())
    {
        return match x {
            liblzma::stream::Error::MemLimit | liblzma::stream::Error::Mem => kinded_io(
                ErrorKind::Limit,
                format!("xz stream needs more than the memory limit of {XZ_MEMLIMIT_STOP} bytes"),
            ),
            liblzma::stream::Error::Format | liblzma::stream::Error::Options => {
                kinded_io(ErrorKind::Format, format!("Invalid xz data: {text}"))
            }
            _ => kinded_io(ErrorKind::Integrity, format!("Corrupt xz data: {text}")),
        };
    }
    if e.kind() == io::ErrorKind::UnexpectedEof
        || lower.contains("incomplete")
        || lower.contains("premature")
        || lower.contains("unexpected end")
    {
        return kinded_io(
            ErrorKind::Truncated,
            format!("{format} stream is truncated"),
        );
    }
    if lower.contains("checksum") || lower.contains("matching size") {
        return kinded_io(
            ErrorKind::Integrity,
            format!("{format} integrity check failed: {text}"),
        );
    }
    if lower.contains("window") || lower.contains("memory") {
        return kinded_io(
            ErrorKind::Limit,
            format!(
                "{format} frame needs a window above the limit of 2^{ZSTD_WINDOW_LOG_MAX} bytes"
            ),
        );
    }
    if lower.contains("unknown frame descriptor") {
        return kinded_io(
            ErrorKind::Format,
            format!("Trailing data after {format} stream"),
        );
    }
    kinded_io(ErrorKind::Format, format!("Invalid {format} data: {text}"))
}

/// A format made of members (gzip members, xz streams) that may be
/// concatenated and followed by zero padding.
trait MemberFormat<R: Read>: Send {
    /// Name used in messages.
    const NAME: &'static str;
    /// The magic that starts a member.
    const MAGIC: &'static [u8];
    /// Zero padding after the last member must be a multiple of this.
    const PADDING_MULTIPLE: u64;
    /// Checks the start of a member before the decoder sees it.
    fn check_start(&self, _head: &[u8], _at_eof: bool) -> io::Result<()> {
        Ok(())
    }
    /// Starts decoding one member at the start of `input`.
    fn open(&self, input: PeekReader<R>) -> io::Result<Box<dyn Member<R>>>;
}

/// A decoder of one member that hands its input back when done.
trait Member<R>: Read + Send {
    fn into_input(self: Box<Self>) -> io::Result<PeekReader<R>>;
}

impl<R: Read + Send> Member<R> for flate2::bufread::GzDecoder<PeekReader<R>> {
    fn into_input(self: Box<Self>) -> io::Result<PeekReader<R>> {
        Ok(self.into_inner())
    }
}

impl<R: Read + Send> Member<R> for liblzma::bufread::XzDecoder<PeekReader<R>> {
    fn into_input(self: Box<Self>) -> io::Result<PeekReader<R>> {
        Ok(self.into_inner())
    }
}

impl<R: Read + Send + 'static> Member<R> for crate::xzblocks::XzBlocks<R> {
    fn into_input(mut self: Box<Self>) -> io::Result<PeekReader<R>> {
        self.finish()
    }
}

struct GzipFormat;

impl<R: Read + Send + 'static> MemberFormat<R> for GzipFormat {
    const NAME: &'static str = "gzip";
    const MAGIC: &'static [u8] = &[0x1f, 0x8b];
    const PADDING_MULTIPLE: u64 = 1;

    fn check_start(&self, head: &[u8], at_eof: bool) -> io::Result<()> {
        check_gzip_header(head, at_eof)
    }

    fn open(&self, input: PeekReader<R>) -> io::Result<Box<dyn Member<R>>> {
        Ok(Box::new(flate2::bufread::GzDecoder::new(input)))
    }
}

struct XzFormat {
    threads: u32,
}

impl<R: Read + Send + 'static> MemberFormat<R> for XzFormat {
    const NAME: &'static str = "xz";
    const MAGIC: &'static [u8] = b"\xfd7zXZ\x00";
    // xz stream padding is a multiple of four null bytes (xz file format
    // 1.2.1, section 2.2).
    const PADDING_MULTIPLE: u64 = 4;

    fn open(&self, input: PeekReader<R>) -> io::Result<Box<dyn Member<R>>> {
        // Two threads or more: our block decoder, which needs about half
        // the memory of liblzma's threaded one (crate::xzblocks).
        if self.threads >= 2 {
            return Ok(Box::new(crate::xzblocks::XzBlocks::start(input)));
        }
        // liblzma's threaded decoder has no CONCATENATED flag in the Rust
        // binding, so streams are chained here, one decoder per stream.
        let stream = liblzma::stream::MtStreamBuilder::new()
            .threads(self.threads.max(1))
            .memlimit_threading(XZ_MEMLIMIT_THREADING)
            .memlimit_stop(XZ_MEMLIMIT_STOP)
            .decoder()
            .map_err(io::Error::from)?;
        Ok(Box::new(liblzma::bufread::XzDecoder::new_stream(
            input, stream,
        )))
    }
}

/// Decodes every member of a concatenated stream, accepts zero padding
/// after the last one (D8 for gzip, gzip(1) compatible; xz stream padding)
/// and refuses any other trailing bytes. `flate2::GzDecoder` alone stops
/// silently after the first member (C04) and `MultiGzDecoder` rejects zero
/// padding (C06).
struct Members<R: Read, F> {
    format: F,
    state: MemberState<R>,
}

enum MemberState<R: Read> {
    Member(Box<dyn Member<R>>),
    Between(PeekReader<R>),
    Done,
    Poisoned,
}

impl<R: Read + Send + 'static, F: MemberFormat<R>> Members<R, F> {
    fn new(input: PeekReader<R>, format: F) -> Self {
        Members {
            format,
            state: MemberState::Between(input),
        }
    }

    /// At a member boundary: start the next member, or check the padding
    /// and finish.
    fn next_member(&mut self, mut input: PeekReader<R>) -> io::Result<bool> {
        let limit = MAX_GZIP_HEADER + 12;
        let head = input.peek(limit)?;
        if head.is_empty() {
            return Ok(false);
        }
        if head.starts_with(F::MAGIC) {
            let at_eof = head.len() < limit;
            self.format.check_start(head, at_eof)?;
            self.state = MemberState::Member(self.format.open(input)?);
            return Ok(true);
        }
        let mut zeros = 0u64;
        loop {
            let chunk = input.fill_buf()?;
            if chunk.is_empty() {
                break;
            }
            if chunk.iter().any(|&b| b != 0) {
                return Err(kinded_io(
                    ErrorKind::Format,
                    format!("Trailing data after {} stream", F::NAME),
                ));
            }
            let n = chunk.len();
            zeros += n as u64;
            input.consume(n);
        }
        if zeros % F::PADDING_MULTIPLE != 0 {
            return Err(kinded_io(
                ErrorKind::Format,
                format!("Trailing data after {} stream", F::NAME),
            ));
        }
        Ok(false)
    }
}

impl<R: Read + Send + 'static, F: MemberFormat<R>> Read for Members<R, F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match std::mem::replace(&mut self.state, MemberState::Poisoned) {
                MemberState::Member(mut dec) => match dec.read(buf) {
                    Ok(0) => self.state = MemberState::Between(dec.into_input()?),
                    Ok(n) => {
                        self.state = MemberState::Member(dec);
                        return Ok(n);
                    }
                    Err(e) => return Err(classify_decoder_error(F::NAME, e)),
                },
                MemberState::Between(input) => {
                    if !self.next_member(input)? {
                        self.state = MemberState::Done;
                        return Ok(0);
                    }
                }
                MemberState::Done => {
                    self.state = MemberState::Done;
                    return Ok(0);
                }
                MemberState::Poisoned => {
                    return Err(io::Error::other("decoder used after an error"));
                }
            }
        }
    }
}

/// Checks that the gzip header at the start of `prefix` ends within
/// [`MAX_GZIP_HEADER`] bytes (`at_eof`: the prefix is all there is).
fn check_gzip_header(prefix: &[u8], at_eof: bool) -> io::Result<()> {
    const FEXTRA: u8 = 4;
    const FNAME: u8 = 8;
    const FCOMMENT: u8 = 16;
    let truncated = || {
        kinded_io(
            ErrorKind::Truncated,
            "gzip stream is truncated in a member header",
        )
    };
    if prefix.len() < 10 {
        return Err(truncated());
    }
    let flags = prefix[3];
    let mut pos = 10usize;
    if flags & FEXTRA != 0 {
        let xlen = prefix.get(10..12).ok_or_else(truncated)?;
        pos += 2 + usize::from(u16::from_le_bytes([xlen[0], xlen[1]]));
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            match prefix
                .get(pos..)
                .and_then(|r| r.iter().position(|&b| b == 0))
            {
                Some(nul) => pos += nul + 1,
                None if at_eof => return Err(truncated()),
                None => {
                    return Err(kinded_io(
                        ErrorKind::Format,
                        format!("gzip header is longer than {MAX_GZIP_HEADER} bytes"),
                    ))
                }
            }
        }
    }
    if pos > prefix.len() && at_eof {
        return Err(truncated());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use formats::error::classify_io;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn decode(kind: Probe, input: Vec<u8>) -> io::Result<Vec<u8>> {
        let mut d = decoder(kind, PeekReader::new(io::Cursor::new(input)), 2)?;
        let mut out = Vec::new();
        d.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn gzip_header_with_unterminated_name_is_refused_with_bounded_buffer() {
        // C17: FNAME flag and no NUL in the first 64 KiB.
        let mut h = vec![0x1f, 0x8b, 8, 8, 0, 0, 0, 0, 0, 3];
        h.extend(std::iter::repeat_n(b'a', 200_000));
        let e = decode(Probe::Gzip, h).unwrap_err();
        assert_eq!(classify_io(&e), ErrorKind::Format);
        assert!(e.to_string().contains("longer than"), "{e}");
    }

    #[test]
    fn gzip_members_and_zero_padding_decode() {
        let mut v = gz(b"first ");
        v.extend(gz(b"second"));
        v.extend([0u8; 1024]);
        assert_eq!(decode(Probe::Gzip, v).unwrap(), b"first second");
    }

    #[test]
    fn gzip_truncated_header_is_truncated() {
        let e = decode(Probe::Gzip, vec![0x1f, 0x8b, 8, 0]).unwrap_err();
        assert_eq!(classify_io(&e), ErrorKind::Truncated);
    }
}
