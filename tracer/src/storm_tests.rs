use std::net::{IpAddr, Ipv4Addr};

use tracer_common::kind;
use tracer_common::storm::{RstStormAgg, RstStormKey, StormEndpoint};

use super::*;

fn key(port: u16) -> RstStormKey {
    RstStormKey {
        netns: 4026531840,
        reason: 2,
        owner_tgid: 0,
        port,
        kind: kind::RST_SENT as u8,
        by_remote: 0,
    }
}

fn ep(last_octet: u8, port: u16) -> StormEndpoint {
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&[10, 0, 0, last_octet]);
    StormEndpoint {
        addr,
        port,
        family: tracer_common::socket_id::AF_INET,
    }
}

fn ip(last_octet: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, last_octet))
}

/// One CPU's value after `count` counted resets, reset `n` (from 0) from
/// 10.0.0.1:(40000 + n), the first at `first_ns`.
fn cpu(count: u64, first_ns: u64) -> RstStormAgg {
    let mut v = RstStormAgg {
        count,
        last_ns: first_ns + count,
        ..Default::default()
    };
    for n in 0..count {
        v.samples[(n % 4) as usize] = ep(1, 40000 + n as u16);
    }
    if count > 0 {
        v.first.header.kind = kind::RST_SENT;
        v.first.header.ts_boot_ns = first_ns;
    }
    v
}

#[test]
fn totals_per_cpu_become_counts_with_the_latest_endpoints() {
    let mut t = StormTotals::default();
    let out = t.increments([(key(9), vec![cpu(10, 500), cpu(3, 200)])]);
    assert_eq!(out.len(), 1);
    let l = &out[0];
    assert_eq!(l.count, 13);
    // The earliest first reset describes the line, the latest sets its time.
    assert_eq!(l.first.header.ts_boot_ns, 200);
    assert_eq!(l.last_ns, 510);
    // CPU 0's newest four (40009..40006), then CPU 1's fill nothing more.
    assert_eq!(
        l.sample,
        vec![
            (ip(1), 40009),
            (ip(1), 40008),
            (ip(1), 40007),
            (ip(1), 40006)
        ]
    );

    // Two more on CPU 1 only: the increment, and only its two new endpoints.
    let out = t.increments([(key(9), vec![cpu(10, 500), cpu(5, 200)])]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].count, 2);
    assert_eq!(out[0].sample, vec![(ip(1), 40004), (ip(1), 40003)]);

    // Nothing new: no line.
    assert!(
        t.increments([(key(9), vec![cpu(10, 500), cpu(5, 200)])])
            .is_empty()
    );
}

#[test]
fn evicted_entries_and_zeroed_cpus() {
    let mut t = StormTotals::default();
    t.increments([(key(9), vec![cpu(100, 1)])]);
    // Evicted and created again with 7: all 7 are news.
    let out = t.increments([(key(9), vec![cpu(7, 900)])]);
    assert_eq!(out[0].count, 7);
    // A CPU that never counted this key holds zeros: no line from it.
    let mut fresh = StormTotals::default();
    assert!(
        fresh
            .increments([(
                key(80),
                vec![RstStormAgg::default(), RstStormAgg::default()]
            )])
            .is_empty()
    );
    // Gone from the map, then back: counted from zero again.
    assert!(t.increments(Vec::new()).is_empty());
    assert_eq!(t.increments([(key(9), vec![cpu(7, 900)])])[0].count, 7);
}

#[test]
fn samples_are_distinct_and_bounded() {
    let mut v = cpu(6, 1);
    for s in &mut v.samples {
        *s = ep(2, 443);
    }
    let mut t = StormTotals::default();
    let out = t.increments([(key(443), vec![v, cpu(9, 5)])]);
    assert_eq!(out[0].count, 15);
    assert_eq!(out[0].sample.len(), 4);
    assert_eq!(out[0].sample[0], (ip(2), 443));
    let mut seen = out[0].sample.clone();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 4, "{:?}", out[0].sample);
}

#[test]
fn threshold_split_over_cpus() {
    assert_eq!(per_cpu_threshold(None, 2), 0);
    assert_eq!(per_cpu_threshold(Some(0), 2), 0);
    assert_eq!(per_cpu_threshold(Some(100), 2), 50);
    assert_eq!(per_cpu_threshold(Some(101), 2), 51);
    assert_eq!(per_cpu_threshold(Some(1), 8), 1);
    assert_eq!(per_cpu_threshold(Some(100), 0), 100);
}

#[test]
fn a_key_met_twice_in_one_walk_counts_once() {
    let mut t = StormTotals::default();
    let out = t.increments([(key(9), vec![cpu(10, 1)]), (key(9), vec![cpu(10, 1)])]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].count, 10);
    let out = t.increments([
        (key(9), vec![cpu(12, 1)]),
        (key(80), vec![cpu(3, 7)]),
        (key(9), vec![cpu(12, 1)]),
    ]);
    let counts: Vec<u64> = out.iter().map(|l| l.count).collect();
    assert_eq!(counts, vec![2, 3]);
}

#[test]
fn a_key_of_a_remote_port_says_so() {
    let mut t = StormTotals::default();
    let remote = RstStormKey {
        by_remote: 1,
        ..key(9)
    };
    // The same port as a local key and as a remote one: two keys, two lines.
    let out = t.increments([(key(9), vec![cpu(2, 100)]), (remote, vec![cpu(5, 50)])]);
    assert_eq!(out.len(), 2);
    assert!(!out[0].by_remote);
    assert_eq!(out[0].count, 2);
    assert!(out[1].by_remote);
    assert_eq!(out[1].count, 5);
}
