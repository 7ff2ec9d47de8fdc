//! One xz stream decoded block by block on two worker threads with a
//! window of two blocks (docs/formats.md, "xz decoding").
//!
//! liblzma's threaded decoder keeps every block's whole output until it is
//! read, plus a cached spare: about 46 MiB for `xz -T2 -3` files (12 MiB
//! blocks), most of the process's peak. Here the block being read streams
//! its output in 1 MiB pieces as it is decoded, only the block behind it
//! buffers (at most [`BACK_PIECES`] pieces; a larger block's worker waits),
//! and pieces are reused. The blocks are still liblzma's (`lzma_block_decoder`,
//! which checks each block's sizes and check), the index is checked with
//! `lzma_index_hash` and the footer against the header, as xz does.
//!
//! A reader thread owns the input: it parses each block header; a block
//! whose header gives both sizes and whose input and dictionary are small
//! goes, whole, to the next worker; any other block (no sizes, as `xz -T1`
//! writes, or huge) is decoded on the reader thread itself, in order.
//! Every number from a header is bounded before use (G3).

use std::io::{self, BufRead, Read};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use formats::error::{kinded_io, ErrorKind};
use liblzma_sys as lz;

use crate::decode::XZ_MEMLIMIT_STOP;
use crate::peek::PeekReader;

/// Output handed over at a time.
const PIECE: usize = 1 << 20;
/// Pieces the block behind the one being read may hold: a 24 MiB block
/// (`xz -6`) fits, a larger one makes its worker wait.
const BACK_PIECES: usize = 24;
/// Largest block input given to a worker whole; larger blocks are decoded
/// on the reader thread as they arrive.
const WORKER_MAX_INPUT: u64 = 32 << 20;
/// Largest decoder memory (mostly the dictionary) for a worker block: two
/// workers keep theirs between blocks.
const WORKER_MAX_MEMORY: u64 = 24 << 20;
/// Idle pieces kept for reuse.
const POOL_DEPTH: usize = BACK_PIECES + 8;

/// What a block's channel carries.
enum Piece {
    Data(Vec<u8>),
    End,
    Failed(io::Error),
}

/// What the reader thread hands the consumer, in stream order.
enum Next {
    Block(Receiver<Piece>),
    Failed(io::Error),
    Done,
}

/// Idle output buffers shared by the workers and the consumer.
#[derive(Default)]
struct Pool(Mutex<Vec<Vec<u8>>>);

impl Pool {
    fn take(&self) -> Vec<u8> {
        let spare = self.0.lock().ok().and_then(|mut v| v.pop());
        let mut b = spare.unwrap_or_default();
        b.clear();
        b.reserve(PIECE);
        b
    }
    fn give(&self, b: Vec<u8>) {
        if let Ok(mut v) = self.0.lock() {
            if v.len() < POOL_DEPTH {
                v.push(b);
            }
        }
    }
}

/// A decoder of one xz stream; `Read` gives the decoded bytes in order.
pub(crate) struct XzBlocks<R> {
    order: Receiver<Next>,
    block: Option<Receiver<Piece>>,
    cur: Vec<u8>,
    at: usize,
    pool: Arc<Pool>,
    reader: Option<JoinHandle<PeekReader<R>>>,
    done: bool,
}

impl<R: Read + Send + 'static> XzBlocks<R> {
    /// Starts decoding the stream at the start of `input`.
    pub(crate) fn start(input: PeekReader<R>) -> Self {
        let pool = Arc::new(Pool::default());
        // Capacity 1: with the block being read, two blocks are in flight.
        let (order_tx, order) = sync_channel(1);
        let p = pool.clone();
        let reader = std::thread::Builder::new()
            .name("xz-read".into())
            .spawn(move || read_stream(input, order_tx, p))
            .ok();
        XzBlocks {
            order,
            block: None,
            cur: Vec::new(),
            at: 0,
            pool,
            reader,
            done: false,
        }
    }

    /// The input, positioned just after the stream footer. Only after
    /// `read` returned 0.
    pub(crate) fn finish(&mut self) -> io::Result<PeekReader<R>> {
        self.reader
            .take()
            .and_then(|h| h.join().ok())
            .ok_or_else(|| io::Error::other("xz reader thread failed"))
    }
}

impl<R> Read for XzBlocks<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.at < self.cur.len() {
                let n = buf.len().min(self.cur.len() - self.at);
                buf[..n].copy_from_slice(&self.cur[self.at..self.at + n]);
                self.at += n;
                return Ok(n);
            }
            if self.done || buf.is_empty() {
                return Ok(0);
            }
            if let Some(rx) = &self.block {
                match rx.recv() {
                    Ok(Piece::Data(b)) => {
                        let old = std::mem::replace(&mut self.cur, b);
                        self.pool.give(old);
                        self.at = 0;
                    }
                    Ok(Piece::End) => self.block = None,
                    Ok(Piece::Failed(e)) => return Err(e),
                    Err(_) => return Err(io::Error::other("xz decoder thread stopped")),
                }
                continue;
            }
            match self.order.recv() {
                Ok(Next::Block(rx)) => self.block = Some(rx),
                Ok(Next::Failed(e)) => return Err(e),
                Ok(Next::Done) => self.done = true,
                Err(_) => return Err(io::Error::other("xz reader thread stopped")),
            }
        }
    }
}

fn corrupt(what: &str) -> io::Error {
    kinded_io(ErrorKind::Integrity, format!("Corrupt xz data: {what}"))
}

fn invalid(what: &str) -> io::Error {
    kinded_io(ErrorKind::Format, format!("Invalid xz data: {what}"))
}

fn truncated() -> io::Error {
    kinded_io(ErrorKind::Truncated, "xz stream is truncated")
}

fn over_limit() -> io::Error {
    kinded_io(
        ErrorKind::Limit,
        format!("xz stream needs more than the memory limit of {XZ_MEMLIMIT_STOP} bytes"),
    )
}

/// Maps a liblzma return code of a block decoder to an error.
fn lzma_error(ret: lz::lzma_ret) -> io::Error {
    match ret {
        lz::LZMA_MEM_ERROR | lz::LZMA_MEMLIMIT_ERROR => over_limit(),
        lz::LZMA_FORMAT_ERROR | lz::LZMA_OPTIONS_ERROR => invalid("unsupported options"),
        lz::LZMA_BUF_ERROR => truncated(),
        lz::LZMA_DATA_ERROR => corrupt("the block does not decode or its check fails"),
        _ => corrupt("the decoder failed"),
    }
}

/// Reads exactly `buf.len()` bytes; a short stream is a truncation.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<()> {
    input.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            truncated()
        } else {
            e
        }
    })
}

/// A parsed block header: what the reader needs to split the input.
struct BlockHeader {
    bytes: Vec<u8>,
    compressed: Option<u64>,
    uncompressed: Option<u64>,
    memory: u64,
    check_size: u64,
}

/// An `lzma_block` with its filter chain, kept together because liblzma
/// points from one to the other.
struct Block {
    block: Box<lz::lzma_block>,
    filters: Box<[lz::lzma_filter; lz::LZMA_FILTERS_MAX as usize + 1]>,
    decoded_filters: bool,
}

impl Block {
    /// Decodes the header in `bytes` (its first byte gives its size).
    fn parse(bytes: &[u8], check: lz::lzma_check) -> io::Result<Block> {
        // SAFETY: lzma_block and the lzma_filter array are plain C
        // structs for which all-zero is a valid empty value, as liblzma's
        // own initialisers assume.
        let block = Box::new(unsafe { std::mem::zeroed::<lz::lzma_block>() });
        // SAFETY: as above.
        let filters = Box::new(unsafe { std::mem::zeroed() });
        let mut b = Block {
            block,
            filters,
            decoded_filters: false,
        };
        b.block.version = 1;
        b.block.header_size = bytes.len() as u32;
        b.block.check = check;
        b.block.filters = b.filters.as_mut_ptr();
        // SAFETY: `bytes` holds header_size bytes (checked by the caller
        // against the size byte); block.filters points to an array of
        // LZMA_FILTERS_MAX + 1 entries as the function requires; both
        // boxes outlive the call.
        let ret = unsafe {
            lz::lzma_block_header_decode(&mut *b.block, std::ptr::null(), bytes.as_ptr())
        };
        if ret != lz::LZMA_OK {
            return Err(match ret {
                lz::LZMA_OPTIONS_ERROR => invalid("unsupported block options"),
                _ => corrupt("bad block header"),
            });
        }
        b.decoded_filters = true;
        Ok(b)
    }

    fn header(&self, bytes: Vec<u8>) -> BlockHeader {
        let known = |v: lz::lzma_vli| (v != lz::LZMA_VLI_UNKNOWN).then_some(v);
        // SAFETY: the filter chain was filled by lzma_block_header_decode
        // and ends with LZMA_VLI_UNKNOWN; lzma_check_size takes any value.
        let (memory, check_size) = unsafe {
            (
                lz::lzma_raw_decoder_memusage(self.filters.as_ptr()),
                u64::from(lz::lzma_check_size(self.block.check)),
            )
        };
        BlockHeader {
            bytes,
            compressed: known(self.block.compressed_size),
            uncompressed: known(self.block.uncompressed_size),
            memory,
            check_size,
        }
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        if self.decoded_filters {
            // SAFETY: the options in the chain were allocated by
            // lzma_block_header_decode with the default allocator.
            unsafe { lz::lzma_filters_free(self.filters.as_mut_ptr(), std::ptr::null()) };
        }
    }
}

/// An `lzma_stream`, ended on drop; reused between blocks so its
/// dictionary is allocated once.
struct Lzma(lz::lzma_stream);

impl Lzma {
    fn new() -> Self {
        // SAFETY: an all-zero lzma_stream is LZMA_STREAM_INIT.
        Lzma(unsafe { std::mem::zeroed() })
    }
}

impl Drop for Lzma {
    fn drop(&mut self) {
        // SAFETY: lzma_end accepts an initialised or never-used stream.
        unsafe { lz::lzma_end(&mut self.0) };
    }
}

/// Decodes one block (header in `header`) from `input` into `out`, piece
/// by piece; returns its unpadded and uncompressed sizes.
fn decode_block(
    lzma: &mut Lzma,
    header: &[u8],
    check: lz::lzma_check,
    input: &mut dyn BufRead,
    out: &SyncSender<Piece>,
    pool: &Pool,
) -> io::Result<(u64, u64)> {
    let mut block = Block::parse(header, check)?;
    // SAFETY: block.block and its filter chain are valid and stay alive
    // (boxed, owned by `block`) until the decoder is done with them below.
    let ret = unsafe { lz::lzma_block_decoder(&mut lzma.0, &mut *block.block) };
    if ret != lz::LZMA_OK {
        return Err(lzma_error(ret));
    }
    let mut piece = pool.take();
    loop {
        let chunk = input.fill_buf()?;
        let action = if chunk.is_empty() {
            lz::LZMA_FINISH
        } else {
            lz::LZMA_RUN
        };
        let spare = piece.spare_capacity_mut();
        lzma.0.next_in = chunk.as_ptr();
        lzma.0.avail_in = chunk.len();
        lzma.0.next_out = spare.as_mut_ptr().cast();
        lzma.0.avail_out = spare.len();
        // SAFETY: next_in/avail_in describe `chunk` and next_out/avail_out
        // the piece's spare capacity, both valid for the call; the block
        // struct the decoder points to is alive (owned by `block`).
        let ret = unsafe { lz::lzma_code(&mut lzma.0, action) };
        let used = chunk.len() - lzma.0.avail_in;
        let produced = spare.len() - lzma.0.avail_out;
        input.consume(used);
        // SAFETY: liblzma initialised `produced` bytes of the spare
        // capacity.
        unsafe { piece.set_len(piece.len() + produced) };
        match ret {
            lz::LZMA_OK => {
                if action == lz::LZMA_FINISH && used == 0 && produced == 0 {
                    return Err(truncated());
                }
                if piece.len() == piece.capacity() {
                    let full = std::mem::replace(&mut piece, pool.take());
                    send(out, Piece::Data(full))?;
                }
            }
            lz::LZMA_STREAM_END => {
                if !piece.is_empty() {
                    send(out, Piece::Data(piece))?;
                }
                // SAFETY: the decoder filled in the actual sizes; the
                // struct is valid.
                let unpadded = unsafe { lz::lzma_block_unpadded_size(&*block.block) };
                if unpadded == 0 {
                    return Err(corrupt("bad block sizes"));
                }
                // The decoder keeps a pointer to `block`, dropped on return:
                // nothing reads it before the next lzma_block_decoder call
                // replaces it.
                return Ok((unpadded, block.block.uncompressed_size));
            }
            other => return Err(lzma_error(other)),
        }
    }
}

fn send(out: &SyncSender<Piece>, p: Piece) -> io::Result<()> {
    out.send(p)
        .map_err(|_| io::Error::other("xz consumer gone"))
}

/// A worker block: its header and whole input.
struct Job {
    header: Vec<u8>,
    check: lz::lzma_check,
    data: Vec<u8>,
    out: SyncSender<Piece>,
}

fn worker(jobs: Receiver<Job>, pool: Arc<Pool>) {
    let mut lzma = Lzma::new();
    for job in jobs {
        let mut input: &[u8] = &job.data;
        match decode_block(
            &mut lzma,
            &job.header,
            job.check,
            &mut input,
            &job.out,
            &pool,
        ) {
            Ok(_) if !input.is_empty() => {
                let _ = job
                    .out
                    .send(Piece::Failed(corrupt("data after the block's end")));
            }
            Ok(_) => {
                let _ = job.out.send(Piece::End);
            }
            Err(e) => {
                let _ = job.out.send(Piece::Failed(e));
                // A failed decoder is started afresh.
                lzma = Lzma::new();
            }
        }
    }
}

/// The reader thread: walks the stream, hands blocks out in order, checks
/// the index and footer; returns the input after the footer.
fn read_stream<R: Read + Send + 'static>(
    mut input: PeekReader<R>,
    order: SyncSender<Next>,
    pool: Arc<Pool>,
) -> PeekReader<R> {
    let next = match walk(&mut input, &order, &pool) {
        Ok(()) => Next::Done,
        Err(e) => Next::Failed(e),
    };
    let _ = order.send(next);
    input
}

fn walk<R: Read>(
    input: &mut PeekReader<R>,
    order: &SyncSender<Next>,
    pool: &Arc<Pool>,
) -> io::Result<()> {
    let mut head = [0u8; lz::LZMA_STREAM_HEADER_SIZE as usize];
    read_full(input, &mut head)?;
    // SAFETY: lzma_stream_flags is a plain C struct (all-zero valid).
    let mut flags: lz::lzma_stream_flags = unsafe { std::mem::zeroed() };
    // SAFETY: `head` holds LZMA_STREAM_HEADER_SIZE bytes.
    match unsafe { lz::lzma_stream_header_decode(&mut flags, head.as_ptr()) } {
        lz::LZMA_OK => {}
        lz::LZMA_OPTIONS_ERROR => return Err(invalid("unsupported stream flags")),
        lz::LZMA_FORMAT_ERROR => return Err(invalid("not an xz stream")),
        _ => return Err(corrupt("bad stream header")),
    }
    let index = IndexHash::new()?;
    let mut workers: Vec<(SyncSender<Job>, JoinHandle<()>)> = Vec::new();
    let mut turn = 0usize;
    let mut inline: Option<Lzma> = None;
    loop {
        let first = input.peek(1)?.first().copied().ok_or_else(truncated)?;
        if first == 0 {
            break; // the index
        }
        let size = (usize::from(first) + 1) * 4;
        let mut bytes = vec![0u8; size];
        read_full(input, &mut bytes)?;
        let header = Block::parse(&bytes, flags.check)?.header(bytes);
        if header.memory == u64::MAX || header.memory > XZ_MEMLIMIT_STOP {
            return Err(over_limit());
        }
        let (tx, rx) = sync_channel(pieces_for(header.uncompressed));
        order
            .send(Next::Block(rx))
            .map_err(|_| io::Error::other("xz consumer gone"))?;
        let whole = match (header.compressed, header.uncompressed) {
            (Some(c), Some(_)) if header.memory <= WORKER_MAX_MEMORY => {
                let len = c.div_ceil(4) * 4 + header.check_size;
                (len <= WORKER_MAX_INPUT).then_some(len)
            }
            _ => None,
        };
        // From here a failure belongs to this block: the consumer reads it
        // in order, after the blocks before it (a cut download inside a
        // block is Truncated, like anywhere else).
        let failed = tx.clone();
        let block = (|| -> io::Result<()> {
            match whole {
                Some(len) => {
                    let mut data = vec![0u8; len as usize];
                    read_full(input, &mut data)?;
                    let unpadded = header.bytes.len() as u64
                        + header.compressed.unwrap_or(0)
                        + header.check_size;
                    index.append(unpadded, header.uncompressed.unwrap_or(0))?;
                    if workers.len() < 2 {
                        let (jtx, jrx) = sync_channel::<Job>(1);
                        let p = pool.clone();
                        let h = std::thread::Builder::new()
                            .name("xz-block".into())
                            .spawn(move || worker(jrx, p))?;
                        workers.push((jtx, h));
                    }
                    let job = Job {
                        header: header.bytes,
                        check: flags.check,
                        data,
                        out: tx,
                    };
                    workers[turn % workers.len()]
                        .0
                        .send(job)
                        .map_err(|_| io::Error::other("xz worker stopped"))?;
                    turn += 1;
                }
                None => {
                    let lzma = inline.get_or_insert_with(Lzma::new);
                    // lzma_block_decoder consumes the block's padding and
                    // check too.
                    let (unpadded, uncompressed) =
                        decode_block(lzma, &header.bytes, flags.check, input, &tx, pool)?;
                    index.append(unpadded, uncompressed)?;
                    let _ = tx.send(Piece::End);
                }
            }
            Ok(())
        })();
        if let Err(e) = block {
            let _ = failed.send(Piece::Failed(e));
            return Ok(()); // the consumer reports it
        }
    }
    drop(workers);
    index.decode(input)?;
    let mut foot = [0u8; lz::LZMA_STREAM_HEADER_SIZE as usize];
    read_full(input, &mut foot)?;
    // SAFETY: as for the header.
    let mut footer: lz::lzma_stream_flags = unsafe { std::mem::zeroed() };
    // SAFETY: `foot` holds LZMA_STREAM_HEADER_SIZE bytes; both structs are
    // valid for the compare.
    unsafe {
        if lz::lzma_stream_footer_decode(&mut footer, foot.as_ptr()) != lz::LZMA_OK {
            return Err(corrupt("bad stream footer"));
        }
        if lz::lzma_stream_flags_compare(&flags, &footer) != lz::LZMA_OK {
            return Err(corrupt("stream footer does not match its header"));
        }
    }
    if footer.backward_size != index.size() {
        return Err(corrupt("index size does not match the footer"));
    }
    Ok(())
}

/// How many pieces a block's channel holds: all of a small block, so the
/// worker behind the block being read never waits, at most BACK_PIECES.
fn pieces_for(uncompressed: Option<u64>) -> usize {
    match uncompressed {
        Some(u) => (u.div_ceil(PIECE as u64) as usize + 1).min(BACK_PIECES),
        None => 2,
    }
}

/// liblzma's index hash: the blocks' sizes as they pass, then the index
/// itself checked against them.
struct IndexHash(*mut lz::lzma_index_hash);

impl IndexHash {
    fn new() -> io::Result<Self> {
        // SAFETY: a null previous hash asks for a new one.
        let h = unsafe { lz::lzma_index_hash_init(std::ptr::null_mut(), std::ptr::null()) };
        if h.is_null() {
            return Err(over_limit());
        }
        Ok(IndexHash(h))
    }

    fn append(&self, unpadded: u64, uncompressed: u64) -> io::Result<()> {
        // SAFETY: self.0 is a live index hash.
        match unsafe { lz::lzma_index_hash_append(self.0, unpadded, uncompressed) } {
            lz::LZMA_OK => Ok(()),
            _ => Err(corrupt("block sizes out of range")),
        }
    }

    /// Reads the index from `input` (starting at its indicator byte).
    fn decode(&self, input: &mut dyn BufRead) -> io::Result<()> {
        loop {
            let chunk = input.fill_buf()?;
            if chunk.is_empty() {
                return Err(truncated());
            }
            let mut pos = 0usize;
            // SAFETY: `chunk` is valid for its length; pos is in bounds and
            // updated by liblzma within it.
            let ret = unsafe {
                lz::lzma_index_hash_decode(self.0, chunk.as_ptr(), &mut pos, chunk.len())
            };
            input.consume(pos);
            match ret {
                lz::LZMA_OK => continue,
                lz::LZMA_STREAM_END => return Ok(()),
                _ => return Err(corrupt("the index does not match the blocks")),
            }
        }
    }

    fn size(&self) -> u64 {
        // SAFETY: self.0 is a live index hash.
        unsafe { lz::lzma_index_hash_size(self.0) }
    }
}

impl Drop for IndexHash {
    fn drop(&mut self) {
        // SAFETY: self.0 came from lzma_index_hash_init.
        unsafe { lz::lzma_index_hash_end(self.0, std::ptr::null()) };
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Cursor, Read, Write};

    use formats::error::ErrorKind;
    use proptest::prelude::*;

    use crate::decode::decoder;
    use crate::peek::PeekReader;
    use formats::Probe;

    /// Data that compresses like a disk: text, noise and zero runs.
    fn disk_like(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                match (i / 4096) % 4 {
                    0 => 0,
                    1 => b"diskimport "[i % 11],
                    _ => x as u8,
                }
            })
            .collect()
    }

    /// xz made in blocks of `block` bytes: every header carries both
    /// sizes (the worker path).
    fn blocks(data: &[u8], block: u64, check: liblzma::stream::Check) -> Vec<u8> {
        let stream = liblzma::stream::MtStreamBuilder::new()
            .threads(2)
            .block_size(block)
            .preset(1)
            .check(check)
            .encoder()
            .unwrap();
        let mut e = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// xz in one block without sizes in its header (`xz -T1`: the reader
    /// thread's own path).
    fn single(data: &[u8]) -> Vec<u8> {
        let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn ours(input: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut d = decoder(Probe::Xz, PeekReader::new(Cursor::new(input.to_vec())), 2)?;
        let mut out = Vec::new();
        d.read_to_end(&mut out)?;
        Ok(out)
    }

    /// The reference: liblzma's own single-threaded decoder, every stream.
    fn reference(input: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        liblzma::read::XzDecoder::new_multi_decoder(input).read_to_end(&mut out)?;
        Ok(out)
    }

    fn kind(e: &std::io::Error) -> Option<ErrorKind> {
        e.get_ref()
            .and_then(|i| i.downcast_ref::<formats::error::KindedIoError>())
            .map(|k| k.kind)
    }

    #[test]
    fn multi_block_streams_decode_exactly_with_every_check() {
        use liblzma::stream::Check;
        let data = disk_like(3 << 20, 7);
        for check in [Check::None, Check::Crc32, Check::Crc64, Check::Sha256] {
            // 300 KiB blocks: eleven blocks, the last one short.
            let xz = blocks(&data, 300 << 10, check);
            assert_eq!(ours(&xz).unwrap(), data, "check {check:?}");
        }
    }

    #[test]
    fn blocks_without_sizes_and_mixed_streams_decode_exactly() {
        let a = disk_like(2 << 20, 3);
        let b = disk_like(700 << 10, 5);
        assert_eq!(ours(&single(&a)).unwrap(), a);
        // A stream without sizes, then one with, then stream padding.
        let mut xz = single(&a);
        xz.extend(blocks(&b, 64 << 10, liblzma::stream::Check::Crc64));
        xz.extend([0u8; 8]);
        let mut want = a.clone();
        want.extend(&b);
        assert_eq!(ours(&xz).unwrap(), want);
    }

    #[test]
    fn empty_stream_decodes_to_nothing() {
        assert_eq!(
            ours(&blocks(&[], 1 << 20, liblzma::stream::Check::Crc64)).unwrap(),
            b""
        );
    }

    #[test]
    fn a_flipped_byte_in_a_worker_block_is_an_integrity_error() {
        let data = disk_like(1 << 20, 11);
        let mut xz = blocks(&data, 128 << 10, liblzma::stream::Check::Crc32);
        // Well inside the third block's compressed data, past its header.
        let at = xz.len() / 3;
        xz[at] ^= 0x40;
        let e = ours(&xz).unwrap_err();
        assert_eq!(kind(&e), Some(ErrorKind::Integrity), "{e}");
        assert!(reference(&xz).is_err());
    }

    #[test]
    fn truncation_anywhere_is_an_error_never_short_success() {
        let data = disk_like(600 << 10, 13);
        let xz = blocks(&data, 100 << 10, liblzma::stream::Check::Crc64);
        for cut in (1..xz.len())
            .step_by(xz.len() / 40 + 1)
            .chain([xz.len() - 1, 12, 13])
        {
            let e = ours(&xz[..cut]).expect_err("a cut stream must fail");
            assert!(
                matches!(
                    kind(&e),
                    Some(ErrorKind::Truncated | ErrorKind::Integrity | ErrorKind::Format)
                ),
                "cut at {cut}: {e}"
            );
        }
    }

    #[test]
    fn an_index_that_disagrees_with_the_blocks_is_refused() {
        let data = disk_like(400 << 10, 17);
        let mut xz = blocks(&data, 100 << 10, liblzma::stream::Check::Crc64);
        // The index sits just before the 12-byte footer; its records are
        // VLIs. Changing one byte of it breaks its CRC32 or its sizes.
        let at = xz.len() - 12 - 6;
        xz[at] ^= 0x01;
        assert!(ours(&xz).is_err());
        assert!(reference(&xz).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Any damage to a stream (multi-block or sizeless): ours and liblzma's own
        /// decoder agree on success, and on the bytes when both succeed.
        #[test]
        fn damaged_streams_agree_with_liblzma(
            len in 0usize..300_000,
            block in 4096u64..80_000,
            seed in any::<u64>(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 0..3),
            cut in proptest::option::of(any::<prop::sample::Index>()),
            sized in any::<bool>(),
        ) {
            let data = disk_like(len, seed);
            // Sized blocks go to the workers, a sizeless one is decoded
            // on the reader thread.
            let mut xz = if sized {
                blocks(&data, block, liblzma::stream::Check::Crc64)
            } else {
                single(&data)
            };
            for (i, x) in &flips {
                let at = i.index(xz.len());
                xz[at] ^= x;
            }
            if let Some(c) = cut {
                let at = c.index(xz.len());
                xz.truncate(at);
            }
            let want = reference(&xz);
            let got = ours(&xz);
            match (&want, &got) {
                (Ok(w), Ok(g)) => prop_assert_eq!(w, g),
                (Err(_), Err(_)) => {}
                _ => prop_assert!(false, "liblzma {:?} vs ours {:?}", want.as_ref().map(Vec::len), got.as_ref().map(Vec::len)),
            }
        }
    }
}
