//! How many keys the object's per-CPU aggregate maps get on this host.
//!
//! A per-CPU hash map is preallocated with a value per key on every
//! *possible* CPU: the compiled-in sizes (`tracer-ebpf/src/maps.rs`) cost
//! some 3.6 MiB of kernel memory per CPU, which is 8 MiB on a 2-CPU VM but
//! about 460 MiB on a 128-CPU host, and creating them (the kernel zeroes
//! every value) took 7-9 ms per map here on 2 CPUs, growing with the CPUs
//! too. So each map keeps its compiled size up to [`FULL_UP_TO_CPUS`]
//! possible CPUs; beyond, its keys shrink so that its memory stays what it
//! is at that count, down to a floor of keys per map (below which the LRU
//! would evict live aggregates in an ordinary incident). The floors bound
//! the memory at about 0.9 MiB per CPU.

use tracer_common::{AcceptFailAgg, exchange::ExchAgg, storm::RstStormAgg};

/// Up to this many possible CPUs every map keeps its compiled-in size.
pub const FULL_UP_TO_CPUS: usize = 8;

/// One per-CPU map of the object and its sizing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PerCpuMap {
    /// The map's name in the object.
    pub name: &'static str,
    /// Keys compiled in (`maps.rs`).
    pub compiled: u32,
    /// Bytes of one CPU's value.
    pub value_bytes: usize,
    /// Fewest keys it is given.
    pub floor: u32,
}

/// The per-CPU hash maps of the object (arrays of one slot are left out:
/// they are a few hundred bytes per CPU).
pub const PER_CPU_MAPS: [PerCpuMap; 3] = [
    PerCpuMap {
        name: "EXCHANGES",
        compiled: 4096,
        value_bytes: core::mem::size_of::<ExchAgg>(),
        floor: 1024,
    },
    PerCpuMap {
        name: "RST_STORMS",
        compiled: 4096,
        value_bytes: core::mem::size_of::<RstStormAgg>(),
        floor: 1024,
    },
    PerCpuMap {
        name: "ACCEPT_FAILS",
        compiled: 1024,
        value_bytes: core::mem::size_of::<AcceptFailAgg>(),
        floor: 256,
    },
];

impl PerCpuMap {
    /// Keys for `cpus` possible CPUs: the compiled size up to
    /// [`FULL_UP_TO_CPUS`], then the same memory over more CPUs, never
    /// under the floor (and never over the compiled size).
    pub fn keys_for(&self, cpus: usize) -> u32 {
        if cpus <= FULL_UP_TO_CPUS {
            return self.compiled;
        }
        let same_memory = u64::from(self.compiled) * FULL_UP_TO_CPUS as u64 / cpus as u64;
        (same_memory as u32).clamp(self.floor.min(self.compiled), self.compiled)
    }

    /// Kernel memory of its values with `keys` keys on `cpus` CPUs.
    pub fn value_memory(&self, keys: u32, cpus: usize) -> u64 {
        u64::from(keys) * self.value_bytes as u64 * cpus as u64
    }
}

/// (map name, keys) for every per-CPU map on `cpus` possible CPUs.
pub fn sizes_for(cpus: usize) -> Vec<(&'static str, u32)> {
    PER_CPU_MAPS
        .iter()
        .map(|m| (m.name, m.keys_for(cpus)))
        .collect()
}

/// The one line start-up logs when the maps were made smaller than
/// compiled (`None` when they were not).
pub fn shrunk_note(cpus: usize) -> Option<String> {
    let shrunk: Vec<String> = PER_CPU_MAPS
        .iter()
        .filter(|m| m.keys_for(cpus) < m.compiled)
        .map(|m| {
            let keys = m.keys_for(cpus);
            format!(
                "{} {} keys (of {}, {:.1} MiB)",
                m.name,
                keys,
                m.compiled,
                m.value_memory(keys, cpus) as f64 / (1 << 20) as f64
            )
        })
        .collect();
    (!shrunk.is_empty()).then(|| {
        format!(
            "{cpus} possible CPUs: per-CPU aggregate maps sized down to keep their kernel memory: {}",
            shrunk.join(", ")
        )
    })
}

/// The host's possible CPUs (what per-CPU maps are allocated for), 1 when
/// unreadable.
pub fn possible_cpus() -> usize {
    aya::util::nr_cpus().unwrap_or(1).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_hosts_keep_the_compiled_sizes() {
        for cpus in 1..=FULL_UP_TO_CPUS {
            for m in PER_CPU_MAPS {
                assert_eq!(m.keys_for(cpus), m.compiled, "{} on {cpus} CPUs", m.name);
            }
            assert_eq!(shrunk_note(cpus), None);
        }
    }

    #[test]
    fn big_hosts_keep_the_memory_of_eight_cpus_down_to_the_floor() {
        let ex = PER_CPU_MAPS[0];
        assert_eq!(ex.name, "EXCHANGES");
        assert_eq!(ex.keys_for(16), 2048);
        assert_eq!(ex.keys_for(32), 1024);
        assert_eq!(ex.keys_for(128), 1024);
        let af = PER_CPU_MAPS[2];
        assert_eq!(af.keys_for(16), 512);
        assert_eq!(af.keys_for(4096), 256);
        for m in PER_CPU_MAPS {
            for cpus in [9, 12, 48, 64, 96, 192, 256, 1024] {
                let keys = m.keys_for(cpus);
                assert!(
                    keys >= m.floor && keys <= m.compiled,
                    "{} on {cpus}",
                    m.name
                );
                // Never more memory than the compiled size on 8 CPUs,
                // unless the floor says so.
                if keys > m.floor {
                    assert!(
                        m.value_memory(keys, cpus) <= m.value_memory(m.compiled, FULL_UP_TO_CPUS)
                    );
                }
            }
        }
    }

    #[test]
    fn the_floors_bound_the_memory_per_cpu() {
        let per_cpu: u64 = PER_CPU_MAPS
            .iter()
            .map(|m| m.value_memory(m.keys_for(1024), 1))
            .sum();
        assert!(per_cpu < 1 << 20, "{per_cpu} bytes per CPU at the floors");
        // What the module's header says the compiled sizes cost per CPU.
        let compiled: u64 = PER_CPU_MAPS
            .iter()
            .map(|m| m.value_memory(m.compiled, 1))
            .sum();
        assert!((3 << 20..4 << 20).contains(&compiled), "{compiled}");
    }

    #[test]
    fn the_note_names_the_shrunk_maps() {
        let note = shrunk_note(64).expect("64 CPUs shrink the maps");
        assert!(note.starts_with("64 possible CPUs:"), "{note}");
        assert!(
            note.contains("EXCHANGES 1024 keys (of 4096, 34.5 MiB)"),
            "{note}"
        );
        assert!(note.contains("ACCEPT_FAILS 256 keys (of 1024"), "{note}");
    }

    #[test]
    fn the_table_matches_the_object() {
        // The compiled sizes and value types are the kernel side's
        // (tracer-ebpf/src/maps.rs): a drift there would size a map from
        // wrong figures.
        let src = include_str!("../../tracer-ebpf/src/maps.rs");
        for m in PER_CPU_MAPS {
            let decl = src
                .split(&format!("pub static {}:", m.name))
                .nth(1)
                .unwrap_or_else(|| panic!("{} is not declared in maps.rs", m.name));
            let line = decl.split(';').next().unwrap_or_default();
            assert!(
                line.contains(&format!("with_max_entries({}", m.compiled)),
                "{}: {line}",
                m.name
            );
        }
    }
}
