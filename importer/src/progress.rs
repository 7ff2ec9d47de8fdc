//! Progress of an import: source bytes read against the source size, shown
//! as a bar on a terminal, logged every few seconds in a pod, and served
//! as CDI's metric.

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
                        "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} ETA {steady_eta}",
                    )
                    .map_or_else(
                        |_| indicatif::ProgressStyle::default_bar(),
                        |s| {
                            s.with_key(
                                "steady_eta",
                                |st: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                                    let _ = w.write_str(&eta_text(
                                        st.elapsed(),
                                        st.pos(),
                                        st.len().unwrap_or(0),
                                    ));
                                },
                            )
                        },
                    ),
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

/// The time left, from the average rate since the start, once it means
/// something: after 2 s and 1% of the work ("--" before, so the first
/// seconds, spent reading headers, do not promise hours).
pub fn eta_text(elapsed: Duration, pos: u64, len: u64) -> String {
    if elapsed < Duration::from_secs(2) || len == 0 || pos < len / 100 || pos == 0 {
        return "--".into();
    }
    let left = elapsed.as_secs_f64() * (len.saturating_sub(pos)) as f64 / pos as f64;
    let s = left.round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// Logs progress at info level every `every` while alive (pods have no
/// terminal: this is what an operator reads in the logs).
#[derive(Debug)]
pub struct ProgressLog {
    stop: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    handle: Option<JoinHandle<()>>,
}

impl ProgressLog {
    /// Starts logging the source that `state` follows (once attached).
    pub fn start(state: Arc<ProgressState>, every: Duration) -> Self {
        let stop = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        let flag = stop.clone();
        let started = std::time::Instant::now();
        let handle = std::thread::spawn(move || {
            let (lock, cv) = &*flag;
            let mut stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                let (guard, _) = cv
                    .wait_timeout(stopped, every)
                    .unwrap_or_else(|e| e.into_inner());
                stopped = guard;
                if *stopped {
                    return;
                }
                let Some((meter, total)) = state.source() else {
                    continue;
                };
                let read = meter.bytes();
                let secs = started.elapsed().as_secs_f64();
                let rate = (read as f64 / secs.max(1e-3) / (1 << 20) as f64 * 10.0).round() / 10.0;
                match total {
                    Some(t) if t > 0 => tracing::info!(
                        read,
                        total = t,
                        percent = (read as f64 / t as f64 * 1000.0).floor() / 10.0,
                        mib_per_s = rate,
                        eta = %eta_text(started.elapsed(), read, t),
                        "Progress"
                    ),
                    _ => tracing::info!(read, mib_per_s = rate, "Progress"),
                }
            }
        });
        ProgressLog {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for ProgressLog {
    fn drop(&mut self) {
        let (lock, cv) = &*self.stop;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_all();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
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

    /// The meter and total being followed, once attached.
    pub fn source(&self) -> Option<(Arc<Meter>, Option<u64>)> {
        self.source.get().cloned()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eta_waits_for_two_seconds_and_one_percent_then_follows_the_average() {
        let s = Duration::from_secs;
        // Headers being read: no promise.
        assert_eq!(eta_text(Duration::from_millis(1500), 50, 100), "--");
        assert_eq!(eta_text(s(30), 9, 1000), "--");
        assert_eq!(eta_text(s(5), 0, 1000), "--");
        // Half done in 10 s: 10 s left; a tenth in 1 min: 9 min left.
        assert_eq!(eta_text(s(10), 50, 100), "10s");
        assert_eq!(eta_text(s(60), 100, 1000), "9m00s");
        assert_eq!(eta_text(s(3600), 1, 3), "2h00m");
        assert_eq!(eta_text(s(3), 100, 100), "0s");
    }
}
