//! Exchange timing read from the kernel (`EXCHANGES`, `exchange.rs` in
//! tracer-ebpf) and the listening-port set it needs (`LISTEN_PORTS`).
//! The kernel keeps running totals per CPU, open requests included; a read
//! adds the CPUs up; a window is the difference of two reads.

use std::collections::{HashMap, HashSet};

use anyhow::Context as _;
use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuHashMap};
use tracer_common::exchange::{EXCH_BUCKETS, ExchAgg, ExchKey, ListenPortKey, bucket_lower_us};

use crate::snapshot::Snapshot;

/// The kernel's exchange totals, as read at one instant.
pub type Totals = HashMap<ExchKey, ExchAgg>;

/// The exchange maps of a loaded session.
pub struct ExchangeMaps {
    aggs: PerCpuHashMap<MapData, ExchKey, ExchAgg>,
    ports: BpfHashMap<MapData, ListenPortKey, u8>,
}

impl ExchangeMaps {
    /// Takes the maps from the loaded object; `None` when it has none.
    pub fn take(ebpf: &mut aya::Ebpf) -> anyhow::Result<Option<Self>> {
        let (Some(aggs), Some(ports)) = (ebpf.take_map("EXCHANGES"), ebpf.take_map("LISTEN_PORTS"))
        else {
            return Ok(None);
        };
        Ok(Some(ExchangeMaps {
            aggs: PerCpuHashMap::try_from(aggs).context("opening the exchange totals")?,
            ports: BpfHashMap::try_from(ports).context("opening the listening-port set")?,
        }))
    }

    /// Every total now, the CPUs added up. Entries the LRU evicts
    /// meanwhile are skipped.
    pub fn read(&self) -> Totals {
        self.aggs
            .iter()
            .filter_map(Result::ok)
            .map(|(k, per_cpu)| (k, sum_cpus(per_cpu.iter())))
            .collect()
    }

    /// Makes the kernel's listening-port set the snapshot's listeners.
    pub fn set_listeners(&mut self, snap: &Snapshot) {
        let want: HashSet<ListenPortKey> = snap
            .listeners()
            .map(|l| ListenPortKey {
                netns: l.netns,
                port: l.local.port(),
                _pad: 0,
            })
            .collect();
        let stale: Vec<ListenPortKey> = self
            .ports
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !want.contains(k))
            .collect();
        for k in stale {
            let _ = self.ports.remove(&k);
        }
        for k in want {
            if let Err(e) = self.ports.insert(k, 1, 0) {
                log::debug!("listening-port set: {e}");
            }
        }
    }
}

/// Sockets keyed to an aggregate now (the kernel's wrapping per-CPU
/// differences, summed); never below zero.
pub fn sockets(a: &ExchAgg) -> u64 {
    (a.sockets as i64).max(0) as u64
}

/// How long the requests open at `at_ns` (boot clock, when `a` was read)
/// had been open then, summed, ns (exact: the kernel keeps their count and
/// the sum of their start times).
pub fn open_ns(a: &ExchAgg, at_ns: u64) -> i64 {
    a.open.wrapping_mul(at_ns).wrapping_sub(a.open_since) as i64
}

/// Time with a request outstanding between two reads (`then` at
/// `then_ns`, `now` at `now_ns`), per key, ns: the exchanges completed
/// in between, plus what is open at the end, minus what was already open at
/// the start (that part lies before the window). Exact, whatever the
/// durations.
pub fn busy_between(
    then: &Totals,
    then_ns: u64,
    now: &Totals,
    now_ns: u64,
) -> HashMap<ExchKey, i64> {
    let d = delta(then, now);
    now.iter()
        .map(|(k, a)| {
            let done = d.get(k).map_or(0, |s| s.busy_ns as i64);
            let before = then
                .get(k)
                .filter(|b| b.count <= a.count)
                .map_or(0, |b| open_ns(b, then_ns));
            (*k, (done + open_ns(a, now_ns) - before).max(0))
        })
        .collect()
}

/// One key's per-CPU values as one total (each CPU counts its own
/// exchanges: the sums are exact).
fn sum_cpus<'a>(per_cpu: impl Iterator<Item = &'a ExchAgg>) -> ExchAgg {
    let mut t = ExchAgg::default();
    for a in per_cpu {
        t.count += a.count;
        t.busy_ns += a.busy_ns;
        t.sockets = t.sockets.wrapping_add(a.sockets);
        t.open = t.open.wrapping_add(a.open);
        t.open_since = t.open_since.wrapping_add(a.open_since);
        for (sum, n) in t.buckets.iter_mut().zip(a.buckets.iter()) {
            *sum = sum.saturating_add(*n);
        }
    }
    t
}

/// Exchanges of one key within a window.
#[derive(Clone, Debug, PartialEq)]
pub struct ExchStat {
    pub count: u64,
    pub busy_ns: u64,
    pub buckets: Vec<u64>,
}

impl ExchStat {
    /// The `q` quantile (0..1) in ms: the midpoint of the bucket that
    /// holds it (buckets are a quarter of a power of two wide).
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let total: u64 = self.buckets.iter().sum();
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let mid = (bucket_lower_us(i) + bucket_lower_us(i + 1)) / 2.0;
                return Some((mid / 1000.0 * 10.0).round() / 10.0);
            }
        }
        None
    }
}

/// What happened between two reads. A key whose count went down was
/// evicted and started again: its new totals are the window's.
pub fn delta(before: &Totals, after: &Totals) -> HashMap<ExchKey, ExchStat> {
    let mut out = HashMap::new();
    for (k, a) in after {
        let b = before.get(k).filter(|b| b.count <= a.count);
        let stat = ExchStat {
            count: a.count - b.map_or(0, |b| b.count),
            busy_ns: a.busy_ns.saturating_sub(b.map_or(0, |b| b.busy_ns)),
            buckets: (0..EXCH_BUCKETS)
                .map(|i| {
                    u64::from(a.buckets[i]).saturating_sub(b.map_or(0, |b| u64::from(b.buckets[i])))
                })
                .collect(),
        };
        if stat.count > 0 {
            out.insert(*k, stat);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracer_common::exchange::{DIR_UPSTREAM, bucket_of};

    fn agg(durations_ms: &[u64]) -> ExchAgg {
        let mut a = ExchAgg::default();
        for d in durations_ms {
            a.count += 1;
            a.busy_ns += d * 1_000_000;
            a.buckets[bucket_of(d * 1000)] += 1;
        }
        a
    }

    fn key(port: u16) -> ExchKey {
        ExchKey {
            tgid: 7,
            port,
            dir: DIR_UPSTREAM,
            ..ExchKey::default()
        }
    }

    #[test]
    fn a_window_is_the_difference_and_quantiles_come_from_its_buckets() {
        let before: Totals = [(key(5432), agg(&[1, 1, 1]))].into();
        let mut later = vec![1, 1, 1];
        later.extend(std::iter::repeat_n(300, 98));
        later.extend([2000, 2000]);
        let after: Totals = [(key(5432), agg(&later)), (key(6379), agg(&[3]))].into();
        let d = delta(&before, &after);
        let s = &d[&key(5432)];
        assert_eq!(s.count, 100);
        assert_eq!(s.busy_ns, (98 * 300 + 4000) * 1_000_000);
        // 300 ms is in [262.1, 327.7) ms: midpoint 294.9.
        assert_eq!(s.quantile_ms(0.5), Some(294.9));
        // The 99th of 100 is one of the two 2 s exchanges: [1835, 2097) ms.
        assert_eq!(s.quantile_ms(0.99), Some(1966.1));
        assert_eq!(d[&key(6379)].count, 1);
    }

    #[test]
    fn the_cpus_add_up() {
        let (a, b) = (agg(&[1, 300]), agg(&[300, 300, 2000]));
        let t = sum_cpus([a, b].iter());
        assert_eq!(t, agg(&[1, 300, 300, 300, 2000]));
    }

    #[test]
    fn an_evicted_key_counts_from_zero_and_idle_keys_are_left_out() {
        let before: Totals = [(key(1), agg(&[5, 5, 5])), (key(2), agg(&[5]))].into();
        let after: Totals = [(key(1), agg(&[7])), (key(2), agg(&[5]))].into();
        let d = delta(&before, &after);
        assert_eq!(d[&key(1)].count, 1);
        assert_eq!(d[&key(1)].busy_ns, 7_000_000);
        assert!(!d.contains_key(&key(2)));
    }
}
