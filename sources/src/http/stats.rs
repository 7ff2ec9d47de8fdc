//! Counters of a download (requests, retries, resumes, bytes), for reports
//! and tests.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one download, for reports and tests.
#[derive(Debug, Default)]
pub struct HttpStats {
    pub(crate) requests: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) resumes: AtomicU64,
    pub(crate) fetched: AtomicU64,
    pub(crate) refetched: AtomicU64,
}

/// A snapshot of [`HttpStats`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HttpCounts {
    /// Requests sent.
    pub requests: u64,
    /// Failed attempts that were retried.
    pub retries: u64,
    /// Broken bodies continued with a range request.
    pub resumes: u64,
    /// Body bytes received.
    pub fetched_bytes: u64,
    /// Body bytes received a second time (restarts without ranges).
    pub refetched_bytes: u64,
}

impl HttpStats {
    /// The current counts.
    pub fn counts(&self) -> HttpCounts {
        HttpCounts {
            requests: self.requests.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            resumes: self.resumes.load(Ordering::Relaxed),
            fetched_bytes: self.fetched.load(Ordering::Relaxed),
            refetched_bytes: self.refetched.load(Ordering::Relaxed),
        }
    }
}
