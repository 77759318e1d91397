//! RST storms counted in the kernel (tracer-ebpf/src/storm.rs): the per-CPU
//! totals of `RST_STORMS`, read once a second, become one line's worth per
//! key: how many resets it stands for, the first one's details, the time of
//! the latest, and a sample of the endpoints that vary (remote ones for a
//! key of a local port, local ones for a key of a remote port). Entries are never deleted
//! from userspace (a delete could lose a concurrent increment): the kernel's
//! LRU bounds the map, and a total lower than last time means the entry was
//! evicted and started again.

use std::collections::HashMap;
use std::net::IpAddr;

use tracer_common::RstRecord;
use tracer_common::socket_id;
use tracer_common::storm::{RstStormAgg, RstStormKey, STORM_SAMPLES, StormEndpoint};

/// Endpoints one aggregated line lists at most (`remote_sample`,
/// `local_sample`).
pub const SAMPLE_MAX: usize = STORM_SAMPLES;

/// Default `--storm-threshold`: resets per second and key that stay lines
/// of their own.
pub const DEFAULT_THRESHOLD: u32 = 100;

/// What the kernel programs are told (`Filter::storm_per_cpu`): the
/// threshold split evenly over the CPUs, rounded up; 0 counts nothing.
pub fn per_cpu_threshold(threshold: Option<u32>, cpus: usize) -> u32 {
    match threshold {
        None | Some(0) => 0,
        Some(t) => t.div_ceil(cpus.max(1) as u32).max(1),
    }
}

/// CPUs the reset programs run on (the threshold is split over them).
pub fn online_cpus() -> usize {
    aya::util::online_cpus().map_or(1, |c| c.len().max(1))
}

/// One aggregated line's worth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StormLine {
    /// The earliest first-counted reset over the CPUs: the line's details.
    pub first: RstRecord,
    /// Resets counted since the previous read.
    pub count: u64,
    /// Boot-time ns of the latest of them.
    pub last_ns: u64,
    /// Distinct endpoints among the latest counted, at most
    /// [`SAMPLE_MAX`]: remote ones, or local ones when `by_remote`.
    pub sample: Vec<(IpAddr, u16)>,
    /// The key names the remote port (connections this host made): the
    /// sample holds local endpoints.
    pub by_remote: bool,
}

/// Totals of `RST_STORMS` as last read, per key and CPU.
#[derive(Default)]
pub struct StormTotals {
    last: HashMap<RstStormKey, Vec<u64>>,
}

impl StormTotals {
    /// Lines for the entries read now (one `Vec` of per-CPU values each),
    /// in the order read; a key read twice counts once.
    pub fn increments(
        &mut self,
        now: impl IntoIterator<Item = (RstStormKey, Vec<RstStormAgg>)>,
    ) -> Vec<StormLine> {
        let mut next = HashMap::new();
        let mut out = Vec::new();
        for (key, per_cpu) in now {
            // A walk of a map the kernel changes meanwhile (an LRU evicting)
            // can meet a key twice: count it once.
            if next.contains_key(&key) {
                continue;
            }
            let before = self.last.get(&key);
            let mut line: Option<StormLine> = None;
            for (cpu, v) in per_cpu.iter().enumerate() {
                let was = before.and_then(|b| b.get(cpu)).copied().unwrap_or(0);
                let inc = crate::aggregate::increment(v.count, was);
                if inc == 0 || v.first.header.kind != u16::from(key.kind) {
                    continue;
                }
                let l = line.get_or_insert_with(|| StormLine {
                    first: v.first,
                    count: 0,
                    last_ns: 0,
                    sample: Vec::new(),
                    by_remote: key.by_remote != 0,
                });
                if v.first.header.ts_boot_ns < l.first.header.ts_boot_ns {
                    l.first = v.first;
                }
                l.count += inc;
                // The kernel times counted resets to the tick (its
                // TickClock): never before the line's first reset.
                l.last_ns = l.last_ns.max(v.last_ns).max(l.first.header.ts_boot_ns);
                add_samples(&mut l.sample, v, inc);
            }
            next.insert(key, per_cpu.iter().map(|v| v.count).collect());
            out.extend(line);
        }
        self.last = next;
        out
    }
}

/// Adds the latest `min(inc, STORM_SAMPLES)` endpoints of one CPU's ring,
/// newest first, skipping ones already listed.
fn add_samples(sample: &mut Vec<(IpAddr, u16)>, v: &RstStormAgg, inc: u64) {
    let fresh = inc.min(v.count).min(STORM_SAMPLES as u64);
    for back in 1..=fresh {
        let slot = ((v.count - back) % STORM_SAMPLES as u64) as usize;
        let Some(ep) = v.samples.get(slot).and_then(endpoint) else {
            continue;
        };
        if sample.len() < SAMPLE_MAX && !sample.contains(&ep) {
            sample.push(ep);
        }
    }
}

fn endpoint(e: &StormEndpoint) -> Option<(IpAddr, u16)> {
    socket_id::addr(e.family, &e.addr).map(|a| (a, e.port))
}

#[cfg(test)]
#[path = "storm_tests.rs"]
mod tests;
