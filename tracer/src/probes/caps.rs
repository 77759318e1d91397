//! Reads `KernelCaps` from the running kernel (the impure half of selection).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::select::KernelCaps;
use super::table::{HOOKS, Kind};
use crate::kernel::{self, KernelInfo};

/// Where the kprobe PMU appears when CONFIG_KPROBES is on.
const KPROBE_PMU: &str = "/sys/bus/event_source/devices/kprobe";

pub fn probe(info: &KernelInfo) -> KernelCaps {
    let mut caps = KernelCaps {
        release: release(),
        btf: true,
        ring_buffer: ring_buffer(info),
        kprobes: Path::new(KPROBE_PMU).exists(),
        tracefs: info.tracefs.is_some(),
        btf_tracepoints: BTreeMap::new(),
        tracepoints: BTreeMap::new(),
        functions: BTreeSet::new(),
        function_params: BTreeMap::new(),
    };
    // Each name is looked up once: rungs share their targets (fentry,
    // fexit, kprobe and kretprobe name the same function), and every BTF
    // lookup by name is a scan of the kernel's whole type list.
    let mut looked_up = BTreeSet::new();
    for hook in HOOKS {
        for mech in hook.mechanisms {
            for target in mech.targets {
                let class = match mech.kind {
                    Kind::TpBtf | Kind::RawTracepoint => 0,
                    Kind::Tracepoint => 1,
                    Kind::Fentry | Kind::Fexit | Kind::Kprobe | Kind::Kretprobe => 2,
                };
                if !looked_up.insert((class, *target)) {
                    continue;
                }
                match mech.kind {
                    Kind::TpBtf | Kind::RawTracepoint => {
                        if let Some(n) = info.tracepoint_arg_count(target) {
                            caps.btf_tracepoints.insert((*target).to_string(), n);
                        }
                    }
                    Kind::Tracepoint => {
                        let Some(root) = info.tracefs.as_deref() else {
                            continue;
                        };
                        let Some((system, event)) = target.split_once('/') else {
                            continue;
                        };
                        if let Some(fmt) = kernel::tracefs::read_format(root, system, event) {
                            let fields = fmt.fields.iter().map(|f| f.name.clone()).collect();
                            caps.tracepoints.insert((*target).to_string(), fields);
                        }
                    }
                    Kind::Fentry | Kind::Fexit | Kind::Kprobe | Kind::Kretprobe => {
                        if let Some(params) = info.function(target) {
                            caps.functions.insert((*target).to_string());
                            if let Some(n) = params {
                                caps.function_params.insert((*target).to_string(), n);
                            }
                        }
                    }
                }
            }
        }
    }
    caps
}

fn release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The ring buffer map type exists in this kernel's `enum bpf_map_type`.
fn ring_buffer(info: &KernelInfo) -> bool {
    info.btf
        .as_ref()
        .and_then(|b| kernel::btf::enum_values(b, "bpf_map_type"))
        .map(|values| values.iter().any(|(n, _)| n == "BPF_MAP_TYPE_RINGBUF"))
        .unwrap_or(false)
}
