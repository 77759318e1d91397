//! The kernel's counts as a collector of their own: records the ring
//! buffer could not take (`DROPS`), accept failures (`ACCEPT_FAILS`) and RST
//! storms (`RST_STORMS`), all counted in per-CPU maps. Reading them is a
//! walk of every key with a copy of its value for each possible CPU (on a
//! 64-CPU host with a storm of many keys, megabytes a second), so it runs
//! off the event thread (`spawn_blocking`), once a second, and hands the
//! loop what changed since the last read: the loop only turns that into
//! events.

use aya::Pod;
use aya::maps::{MapData, PerCpuArray, PerCpuHashMap};
use tracer_common::storm::{RstStormAgg, RstStormKey};
use tracer_common::{AcceptFailAgg, AcceptFailKey};

use crate::aggregate::{Interval, KernelTotals};
use crate::storm::{StormLine, StormTotals};

/// The maps and what was read from them last.
pub struct KernelCounts {
    drops: PerCpuArray<MapData, u64>,
    accept_fails: Option<PerCpuHashMap<MapData, AcceptFailKey, AcceptFailAgg>>,
    rst_storms: Option<PerCpuHashMap<MapData, RstStormKey, RstStormAgg>>,
    drops_seen: u64,
    accept_totals: KernelTotals,
    storm_totals: StormTotals,
}

/// What changed since the previous read.
#[derive(Debug, Default)]
pub struct Counts {
    /// Records lost since the previous read.
    pub lost: u64,
    /// Every record lost so far.
    pub lost_total: u64,
    /// Accept failures counted since, per (process, listener, errno).
    pub accept_failures: Vec<Interval>,
    /// One line per storm key with resets counted since.
    pub storms: Vec<StormLine>,
}

impl KernelCounts {
    pub fn new(
        drops: PerCpuArray<MapData, u64>,
        accept_fails: Option<PerCpuHashMap<MapData, AcceptFailKey, AcceptFailAgg>>,
        rst_storms: Option<PerCpuHashMap<MapData, RstStormKey, RstStormAgg>>,
    ) -> Self {
        KernelCounts {
            drops,
            accept_fails,
            rst_storms,
            drops_seen: 0,
            accept_totals: KernelTotals::default(),
            storm_totals: StormTotals::default(),
        }
    }

    /// Reads every map (blocking: bpf syscalls for each key).
    pub fn read(&mut self) -> Counts {
        let total: u64 = self
            .drops
            .get(&0, 0)
            .map(|v| v.iter().sum())
            .unwrap_or(self.drops_seen);
        let lost = total.saturating_sub(self.drops_seen);
        self.drops_seen = self.drops_seen.max(total);
        let accept_failures = match &self.accept_fails {
            Some(map) => self.accept_totals.increments(entries(map)),
            None => Vec::new(),
        };
        let storms = match &self.rst_storms {
            Some(map) => self.storm_totals.increments(entries(map)),
            None => Vec::new(),
        };
        Counts {
            lost,
            lost_total: self.drops_seen,
            accept_failures,
            storms,
        }
    }
}

/// Every entry of a per-CPU hash map with its values, one per possible CPU
/// (entries that vanish mid-walk are skipped).
fn entries<K: Pod, V: Pod>(map: &PerCpuHashMap<MapData, K, V>) -> Vec<(K, Vec<V>)> {
    map.iter()
        .filter_map(Result::ok)
        .map(|(k, v)| (k, v.iter().copied().collect()))
        .collect()
}

/// The collector between reads, or its read in flight.
pub enum Collector {
    Idle(Box<KernelCounts>),
    Reading(tokio::task::JoinHandle<(Box<KernelCounts>, Counts)>),
    /// Lost: its read task panicked (nothing more is counted).
    Gone,
}

impl Collector {
    /// Starts a read off the event thread unless one is in flight.
    pub fn start(&mut self) {
        if let Collector::Idle(_) = self {
            let Collector::Idle(mut counts) = std::mem::replace(self, Collector::Gone) else {
                return;
            };
            *self = Collector::Reading(tokio::task::spawn_blocking(move || {
                let c = counts.read();
                (counts, c)
            }));
        }
    }

    /// The read in flight, when it is done (pending forever otherwise: a
    /// branch of the loop's `select!`).
    pub async fn done(&mut self) -> Option<Counts> {
        let Collector::Reading(h) = self else {
            return std::future::pending().await;
        };
        let out = h.await;
        match out {
            Ok((counts, c)) => {
                *self = Collector::Idle(counts);
                Some(c)
            }
            Err(e) => {
                log::warn!(
                    "reading the kernel's counts failed: {e}; no more lost, accept-failure or storm counts"
                );
                *self = Collector::Gone;
                None
            }
        }
    }

    /// The last read, at the end of the session: waits for the one in
    /// flight, then reads once more on this thread, so that every count
    /// the kernel holds is printed.
    pub async fn last(&mut self) -> Counts {
        let mut all = Counts::default();
        if let Collector::Reading(_) = self
            && let Some(c) = self.done().await
        {
            all = c;
        }
        if let Collector::Idle(counts) = self {
            let c = counts.read();
            all.lost += c.lost;
            all.lost_total = c.lost_total;
            all.accept_failures.extend(c.accept_failures);
            all.storms.extend(c.storms);
        }
        all
    }
}
