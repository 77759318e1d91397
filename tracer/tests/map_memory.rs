//! Needs root. The per-CPU aggregate maps are sized for the host's
//! possible CPUs (tracer/src/map_sizes.rs), as the kernel reports them in
//! /proc/PID/fdinfo: their compiled sizes up to 8 possible CPUs, beyond
//! that the memory of 8 CPUs (down to a floor of keys), and the kernel's
//! own `memlock` for each confirms what a key costs on this host. The VM
//! matrix boots guests with 16 possible CPUs (xtask/src/vm/qemu.rs) where
//! the kernel honours it, so both sides of the rule run there.
//!
//! Run: `cargo test -p tracer --test map_memory` (as root).

mod common;

use common::{Tracer, one_at_a_time, require_root};

/// `BPF_MAP_TYPE_LRU_PERCPU_HASH` (UAPI, include/uapi/linux/bpf.h).
const LRU_PERCPU_HASH: u64 = 10;

/// (name, compiled keys, value bytes, floor) of the per-CPU hash maps:
/// the contract of docs/operations.md ("Kernel memory").
fn contract() -> [(&'static str, u64, u64, u64); 3] {
    [
        (
            "EXCHANGES",
            4096,
            std::mem::size_of::<tracer_common::exchange::ExchAgg>() as u64,
            1024,
        ),
        (
            "RST_STORMS",
            4096,
            std::mem::size_of::<tracer_common::storm::RstStormAgg>() as u64,
            1024,
        ),
        (
            "ACCEPT_FAILS",
            1024,
            std::mem::size_of::<tracer_common::AcceptFailAgg>() as u64,
            256,
        ),
    ]
}

/// CPUs in a kernel CPU list (`0-15`, `0,2-3`).
fn cpus_in(list: &str) -> u64 {
    list.trim()
        .split(',')
        .filter(|r| !r.is_empty())
        .map(|r| match r.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u64, u64) = (a.parse().expect("cpu"), b.parse().expect("cpu"));
                b - a + 1
            }
            None => 1,
        })
        .sum()
}

/// (map_type, value_size, max_entries, memlock) of every BPF map `pid`
/// holds, from fdinfo.
fn maps_of(pid: u32) -> Vec<(u64, u64, u64, u64)> {
    let mut maps = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).expect("fdinfo") {
        let Ok(entry) = entry else { continue };
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let (Some(t), Some(v), Some(n), Some(m)) = (
            field("map_type:"),
            field("value_size:"),
            field("max_entries:"),
            field("memlock:"),
        ) {
            maps.push((t, v, n, m));
        }
    }
    maps
}

#[test]
fn per_cpu_maps_are_sized_for_the_possible_cpus() {
    let test = "per_cpu_maps_are_sized_for_the_possible_cpus";
    if !require_root(test) {
        return;
    }
    let _serial = one_at_a_time();
    let possible = std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .expect("/sys/devices/system/cpu/possible");
    let cpus = cpus_in(&possible);
    assert!(cpus >= 1, "{possible}");
    let tracer = Tracer::watch_json(&[]);
    let maps = maps_of(tracer.pid());
    let mut shrunk = Vec::new();
    for (name, compiled, value, floor) in contract() {
        let found: Vec<_> = maps
            .iter()
            .filter(|m| m.0 == LRU_PERCPU_HASH && m.1 == value)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "{test}: {name} ({value}-byte values): {maps:?}"
        );
        let (_, _, keys, memlock) = *found[0];
        let expected = if cpus <= 8 {
            compiled
        } else {
            (compiled * 8 / cpus).clamp(floor, compiled)
        };
        assert_eq!(keys, expected, "{test}: {name} on {cpus} possible CPUs");
        if keys < compiled {
            shrunk.push(format!("{name} {keys} keys"));
        }
        // The kernel allocates a value per key on every possible CPU (the
        // reason for the rule) and not much more.
        let values = keys * value.next_multiple_of(8) * cpus;
        assert!(
            memlock >= values && memlock <= 2 * values + (1 << 20),
            "{test}: {name}: memlock {memlock} for {keys} keys x {value} bytes x {cpus} CPUs"
        );
    }
    let stopped = tracer.stop_ok();
    // The operator is told, in one line, when (and only when) the maps
    // were made smaller than compiled.
    let note = stopped
        .stderr
        .lines()
        .find(|l| l.contains("per-CPU aggregate maps sized down"));
    if shrunk.is_empty() {
        assert!(note.is_none(), "{test}: {note:?} on {cpus} CPUs");
    } else {
        let note = note.unwrap_or_else(|| panic!("{test}: no note; stderr:\n{}", stopped.stderr));
        assert!(note.contains(&format!("{cpus} possible CPUs")), "{note}");
        for s in &shrunk {
            assert!(note.contains(s.as_str()), "{test}: {s} not in {note}");
        }
    }
}
