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
