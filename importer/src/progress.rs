//! Progress of an import: source bytes read against the source size, shown
//! as a bar on a terminal.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use sources::meter::Meter;

/// A progress bar fed from a [`Meter`] by a small background thread.
#[derive(Debug)]
pub struct ProgressBar {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl ProgressBar {
    /// Starts showing progress of `meter` against `total` bytes (when known).
    pub fn start(meter: Arc<Meter>, total: Option<u64>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let bar = match total {
                Some(t) => indicatif::ProgressBar::new(t).with_style(
                    indicatif::ProgressStyle::with_template(
                        "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                ),
                None => indicatif::ProgressBar::new_spinner().with_style(
                    indicatif::ProgressStyle::with_template("{spinner} {bytes} {bytes_per_sec}")
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                ),
            };
            while !flag.load(Ordering::Relaxed) {
                bar.set_position(meter.bytes());
                std::thread::sleep(Duration::from_millis(100));
            }
            bar.set_position(meter.bytes());
            bar.finish_and_clear();
        });
        ProgressBar {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for ProgressBar {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Progress as a percentage for CDI's metric: source bytes read against the
/// source size, monotonic, held below 100 until the import is complete.
#[derive(Debug, Default)]
pub struct ProgressState {
    source: std::sync::OnceLock<(Arc<Meter>, Option<u64>)>,
    done: AtomicBool,
    /// The highest value reported, as f64 bits (keeps it monotonic).
    high: std::sync::atomic::AtomicU64,
}

impl ProgressState {
    /// Starts following `meter` against `total` source bytes.
    pub fn attach(&self, meter: Arc<Meter>, total: Option<u64>) {
        let _ = self.source.set((meter, total));
    }

    /// Marks the import complete: 100 from now on.
    pub fn complete(&self) {
        self.done.store(true, Ordering::SeqCst);
    }

    /// The percentage, 0 to 100.
    pub fn percent(&self) -> f64 {
        let now = if self.done.load(Ordering::SeqCst) {
            100.0
        } else {
            match self.source.get() {
                Some((m, Some(total))) if *total > 0 => {
                    (m.bytes() as f64 / *total as f64 * 100.0).min(99.99)
                }
                _ => 0.0,
            }
        };
        let prev = f64::from_bits(self.high.fetch_max(now.to_bits(), Ordering::SeqCst));
        // Non-negative f64 bit patterns order like the numbers.
        now.max(prev)
    }
}
