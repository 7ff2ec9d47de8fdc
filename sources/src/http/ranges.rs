//! Random access over HTTP range requests, for the qcow2 reader: no
//! scratch copy of the image is ever made.
//!
//! The file is cut into fixed blocks. [`ReadAt::prefetch`] hints from the
//! reader's read-ahead start block fetches on up to `connections` parallel
//! connections, so the link stays full while the reader decodes; a read
//! waits only for the blocks it needs. Every request carries `If-Range`
//! with the validator of the first response, and every `206` must cover
//! exactly the bytes asked for (H07, H23). A fetch that breaks continues
//! from its last byte, so nothing is fetched twice.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};

use bytes::{Bytes, BytesMut};
use formats::read_at::ReadAt;
use reqwest::header::{self, HeaderValue};
use reqwest::StatusCode;

use super::stream::content_range;
use formats::error::Classify;

use super::{
    bad_range, status_failure, HttpClient, HttpError, Net, Resource, Validator, MIN_PROGRESS,
};
use crate::meter::Meter;

/// Bytes per range request. Smaller blocks on more connections keep the
/// reader fed sooner than large ones: on the bench image (2 GB over
/// loopback nginx, warm, alternating series) 512 KiB blocks on 8
/// connections took 0.78-0.95 s where 2 MiB blocks on 4 took 1.05-1.20 s,
/// with less memory (benches/RESULTS.md, "Range blocks").
pub const BLOCK: u64 = 512 << 10;
/// Blocks kept or in flight: bounds memory at 16 MiB; four times the
/// default number of connections, so every connection has a block to
/// fetch while the reader works through the ones that arrived.
const MAX_BLOCKS: usize = 32;
/// Reads after which a prefetched block that was never read may go.
const STALE: u64 = 64;

enum Slot {
    Pending,
    /// `used` is the tick of the last read, or None while the block waits
    /// for its first read (read-ahead: never evicted before it is used).
    /// `born` is the tick it was asked for: an unread block the reader
    /// jumped past becomes evictable after [`STALE`] more reads.
    Ready {
        data: Bytes,
        used: Option<u64>,
        born: u64,
    },
    Failed(HttpError),
}

#[derive(Default)]
struct Cache {
    slots: HashMap<u64, Slot>,
    tick: u64,
}

/// Spare block buffers: a fresh block buffer costs page faults and
/// zeroing in the kernel for every block, so a block's buffer comes back
/// here when the last reference to it (the cache, or an extent on its way
/// to the target) is gone.
type Spares = Arc<Mutex<Vec<BytesMut>>>;
/// Spare buffers kept.
const MAX_SPARES: usize = 8;

/// The owner behind a block's `Bytes`: hands the buffer back on drop.
struct Pooled {
    buf: BytesMut,
    home: std::sync::Weak<Mutex<Vec<BytesMut>>>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(home) = self.home.upgrade() {
            let mut spares = home
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if spares.len() < MAX_SPARES {
                let mut b = std::mem::take(&mut self.buf);
                b.clear();
                spares.push(b);
            }
        }
    }
}

impl Cache {
    /// Drops the least recently read block; false when every block is
    /// in flight or not read yet.
    fn evict_one(&mut self) -> bool {
        let now = self.tick;
        let victim = self
            .slots
            .iter()
            .filter_map(|(&i, s)| match s {
                Slot::Ready { used: Some(u), .. } => Some((*u, i)),
                Slot::Ready {
                    used: None, born, ..
                } if born + STALE < now => Some((*born, i)),
                Slot::Ready { .. } => None,
                Slot::Failed(_) => Some((0, i)),
                Slot::Pending => None,
            })
            .min()
            .map(|(_, i)| i);
        // Dropping the block hands its buffer back once no extent uses it.
        victim.and_then(|i| self.slots.remove(&i)).is_some()
    }
}

struct Shared {
    net: Arc<Net>,
    res: Resource,
    size: u64,
    cache: Mutex<Cache>,
    ready: Condvar,
    permits: Arc<tokio::sync::Semaphore>,
    meter: Option<Arc<Meter>>,
    spares: Spares,
}

/// [`ReadAt`] over range requests.
pub struct HttpRanges {
    shared: Arc<Shared>,
    rt: Arc<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for HttpRanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpRanges")
            .field("size", &self.shared.size)
            .finish_non_exhaustive()
    }
}

impl HttpRanges {
    pub(crate) fn new(client: &HttpClient, res: Resource, meter: Option<Arc<Meter>>) -> Self {
        let connections = client.net.opts.connections.max(1);
        HttpRanges {
            shared: Arc::new(Shared {
                net: client.net.clone(),
                size: res.length.unwrap_or(0),
                res,
                cache: Mutex::new(Cache::default()),
                ready: Condvar::new(),
                permits: Arc::new(tokio::sync::Semaphore::new(connections)),
                meter,
                spares: Spares::default(),
            }),
            rt: client.rt.clone(),
        }
    }

    /// Block `idx`, fetched now if the read-ahead did not ask for it;
    /// waits for it.
    fn block(&self, idx: u64) -> io::Result<Bytes> {
        let mut cache = self.lock();
        loop {
            let tick = cache.tick + 1;
            match cache.slots.get_mut(&idx) {
                None => {
                    // A read the read-ahead did not foresee (metadata) may
                    // go past the cap rather than wait.
                    while cache.slots.len() >= MAX_BLOCKS && cache.evict_one() {}
                    self.schedule(&mut cache, idx);
                }
                Some(Slot::Pending) => {
                    cache = self
                        .shared
                        .ready
                        .wait(cache)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
                Some(Slot::Failed(e)) => return Err(e.clone().into_io()),
                Some(Slot::Ready { data, used, .. }) => {
                    *used = Some(tick);
                    let data = data.clone();
                    cache.tick = tick;
                    return Ok(data);
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.shared
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts fetching block `idx` (the caller made room).
    fn schedule(&self, cache: &mut Cache, idx: u64) {
        cache.slots.insert(idx, Slot::Pending);
        let born = cache.tick;
        let reuse = self
            .shared
            .spares
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        let shared = self.shared.clone();
        self.rt.spawn(async move {
            let start = idx * BLOCK;
            let end = (start + BLOCK).min(shared.size);
            let result = {
                let _permit = shared.permits.acquire().await;
                fetch(&shared, start, end, reuse).await
            };
            let mut cache = shared
                .cache
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            cache.slots.insert(
                idx,
                match result {
                    Ok(data) => Slot::Ready {
                        data,
                        used: None,
                        born,
                    },
                    Err(e) => Slot::Failed(e),
                },
            );
            shared.ready.notify_all();
        });
    }
}

impl ReadAt for HttpRanges {
    fn size(&self) -> u64 {
        self.shared.size
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if offset
            .checked_add(buf.len() as u64)
            .is_none_or(|end| end > self.shared.size)
        {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let within = (pos % BLOCK) as usize;
            let data = self.block(pos / BLOCK)?;
            let n = (buf.len() - done).min(data.len() - within);
            buf[done..done + n].copy_from_slice(&data[within..within + n]);
            done += n;
        }
        Ok(())
    }

    fn span_at(&self, offset: u64) -> u64 {
        BLOCK - offset % BLOCK
    }

    fn read_bytes_at(&self, offset: u64, len: usize) -> Option<io::Result<Bytes>> {
        let within = (offset % BLOCK) as usize;
        let fits = len > 0
            && within + len <= BLOCK as usize
            && offset
                .checked_add(len as u64)
                .is_some_and(|end| end <= self.shared.size);
        if !fits {
            return None;
        }
        Some(
            self.block(offset / BLOCK)
                .map(|data| data.slice(within..within + len)),
        )
    }

    fn prefetch(&self, offset: u64, len: u64) -> u64 {
        let size = self.shared.size;
        if offset >= size {
            return len;
        }
        let idx = offset / BLOCK;
        let take = ((idx + 1) * BLOCK).min(size) - offset;
        let mut cache = self.lock();
        if cache.slots.contains_key(&idx) {
            return take;
        }
        if cache.slots.len() >= MAX_BLOCKS && !cache.evict_one() {
            return 0;
        }
        self.schedule(&mut cache, idx);
        take
    }
}

/// Fetches `[start, end)`, continuing after breaks from the last byte
/// received.
async fn fetch(
    shared: &Shared,
    start: u64,
    end: u64,
    reuse: Option<BytesMut>,
) -> Result<Bytes, HttpError> {
    let (net, res) = (&*shared.net, &shared.res);
    let len = (end - start) as usize;
    let mut buf = match reuse {
        Some(b) if b.capacity() >= len => b,
        _ => BytesMut::with_capacity(len),
    };
    let mut failures = 0u32;
    loop {
        let before = buf.len();
        match fetch_into(net, res, shared.meter.as_deref(), start, end, &mut buf).await {
            Ok(()) => {
                return Ok(Bytes::from_owner(Pooled {
                    buf,
                    home: Arc::downgrade(&shared.spares),
                }))
            }
            Err(e) if e.kind().is_transient() && failures < net.opts.retry.retries => {
                // A block is 512 KiB: the first break after any progress is
                // retried at once (a reset mid-block costs nothing), but the
                // count of failures in a row starts again only after real
                // progress (docs/http.md, "Retries"), so a server that
                // sends a byte and closes runs out of retries.
                let made = buf.len() - before;
                if made >= MIN_PROGRESS as usize {
                    failures = 0;
                }
                let progressed = made > 0;
                if progressed {
                    net.stats.resumes.fetch_add(1, Ordering::Relaxed);
                }
                let at = Some(start + buf.len() as u64);
                if !net.back_off(failures, progressed, &e, at).await? {
                    return Err(net.deadline_error());
                }
                failures += 1;
            }
            // A range that keeps breaking is a truncation.
            Err(HttpError::Interrupted(detail)) => {
                return Err(HttpError::Truncated {
                    got: start + buf.len() as u64,
                    expected: end.to_string(),
                    detail,
                })
            }
            Err(e) => return Err(e),
        }
    }
}

async fn fetch_into(
    net: &Net,
    res: &Resource,
    meter: Option<&Meter>,
    start: u64,
    end: u64,
    buf: &mut BytesMut,
) -> Result<(), HttpError> {
    let at = start + buf.len() as u64;
    let asked = format!("bytes={at}-{}", end - 1);
    let mut extra = vec![(header::RANGE, HeaderValue::from_str(&asked).expect("ASCII"))];
    if let Some(v) = &res.validator {
        extra.push((header::IF_RANGE, v.value().clone()));
    }
    let mut resp = net.send(&res.url, &extra).await?;
    match resp.status() {
        StatusCode::PARTIAL_CONTENT => {
            let cr = resp.headers().get(header::CONTENT_RANGE);
            let ok = content_range(cr).is_some_and(|(a, b, total)| {
                a == at && b == end - 1 && total.is_none_or(|t| t == res.length.unwrap_or(t))
            });
            if !ok {
                return Err(bad_range(asked, cr));
            }
        }
        StatusCode::OK => {
            if Validator::of(resp.headers()) != res.validator {
                return Err(HttpError::Changed("the server sent a new version".into()));
            }
            if !(at == 0 && end == res.length.unwrap_or(u64::MAX)) {
                return Err(HttpError::Protocol(format!(
                    "the server ignored the range request {asked}"
                )));
            }
        }
        s => return Err(status_failure(s, 206)),
    }
    loop {
        match net.next_chunk(&mut resp).await? {
            Some(chunk) => {
                let n = chunk.len() as u64;
                if buf.len() as u64 + n > end - start {
                    return Err(HttpError::Protocol(format!(
                        "more bytes than asked for in {asked}"
                    )));
                }
                net.stats.fetched.fetch_add(n, Ordering::Relaxed);
                if let Some(m) = meter {
                    m.advance(n);
                }
                buf.extend_from_slice(&chunk);
            }
            None => {
                if buf.len() as u64 == end - start {
                    return Ok(());
                }
                return Err(HttpError::Interrupted("range response ended early".into()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(used: Option<u64>, born: u64) -> Slot {
        Slot::Ready {
            data: Bytes::from(vec![0u8; 16]),
            used,
            born,
        }
    }

    #[test]
    fn read_ahead_blocks_are_kept_until_read() {
        let mut c = Cache {
            tick: 10,
            ..Cache::default()
        };
        c.slots.insert(1, ready(None, 9));
        c.slots.insert(2, Slot::Pending);
        assert!(!c.evict_one(), "an unread or pending block was evicted");
        c.slots.insert(0, ready(Some(7), 1));
        c.slots.insert(3, ready(Some(5), 2));
        assert!(c.evict_one());
        assert!(!c.slots.contains_key(&3), "not the least recently read");
        assert!(c.evict_one());
        assert!(!c.slots.contains_key(&0));
        assert!(!c.evict_one());
    }

    #[test]
    fn a_block_buffer_comes_back_when_its_last_user_is_gone() {
        let spares = Spares::default();
        let mut b = BytesMut::with_capacity(64);
        b.extend_from_slice(&[7u8; 64]);
        let ptr = b.as_ptr();
        let block = Bytes::from_owner(Pooled {
            buf: b,
            home: Arc::downgrade(&spares),
        });
        let extent = block.slice(8..16);
        drop(block);
        assert!(spares.lock().unwrap().is_empty(), "returned while in use");
        assert_eq!(&extent[..], &[7u8; 8]);
        drop(extent);
        let back = spares.lock().unwrap().pop().unwrap();
        assert_eq!(back.as_ptr(), ptr);
        assert!(back.is_empty() && back.capacity() >= 64);
    }

    #[test]
    fn a_block_the_reader_jumped_past_goes_stale() {
        let mut c = Cache {
            tick: 10 + STALE + 1,
            ..Cache::default()
        };
        c.slots.insert(4, ready(None, 10));
        c.slots.insert(5, ready(None, 12));
        assert!(c.evict_one());
        assert!(!c.slots.contains_key(&4));
        assert!(!c.evict_one(), "a fresh unread block was evicted");
    }
}
