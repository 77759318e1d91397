//! The exchange metrics' once-a-second refresh, which names each new
//! process from /proc/PID/comm, on a thread of its own: the event loop
//! hands it the kernel totals on a bounded channel and never waits.

use std::sync::Arc;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};

use super::Metrics;
use crate::exchange::Totals;

/// Reads that may wait; past it a second is skipped (the next refresh
/// covers it: histograms add the difference since the last read).
pub const QUEUE: usize = 4;

pub struct ExchangeFeed {
    tx: SyncSender<(Totals, u64)>,
    /// Seconds skipped because the refresh was behind.
    pub skipped: u64,
}

impl ExchangeFeed {
    /// Starts the refresh thread; it ends when the feed is dropped.
    pub fn spawn(m: Arc<Metrics>) -> std::io::Result<ExchangeFeed> {
        let (tx, rx) = sync_channel::<(Totals, u64)>(QUEUE);
        std::thread::Builder::new()
            .name("metrics-exchanges".into())
            .spawn(move || {
                for (totals, now_ns) in rx {
                    m.exchanges.refresh(totals, now_ns, &proc_comm);
                }
            })?;
        Ok(ExchangeFeed { tx, skipped: 0 })
    }

    /// One read of the kernel totals at `now_ns` (boot clock).
    pub fn send(&mut self, totals: Totals, now_ns: u64) {
        match self.tx.try_send((totals, now_ns)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.skipped += 1;
                log::debug!("metrics: exchange refresh behind; a second skipped");
            }
            Err(TrySendError::Disconnected(_)) => {
                log::debug!("metrics: the exchange refresh thread is gone");
            }
        }
    }
}

/// A thread-group id's name (asked once per process: the refresh caches it).
pub fn proc_comm(tgid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{tgid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_owned())
}
