//! Choosing mechanisms: a pure function of what the kernel offers, tested
//! without root against recorded capabilities of several kernels.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::table::{Hook, Kind, Mechanism, Need};

/// What a kernel offers, as far as the choice of mechanisms goes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelCaps {
    /// `uname -r`.
    pub release: String,
    /// /sys/kernel/btf/vmlinux present.
    pub btf: bool,
    /// BPF ring buffer (Linux 5.8+).
    pub ring_buffer: bool,
    /// CONFIG_KPROBES (the kprobe PMU exists).
    pub kprobes: bool,
    /// tracefs mounted (or mountable).
    pub tracefs: bool,
    /// Raw/BTF tracepoints named in BTF (`btf_trace_<name>`), with their
    /// parameter count including the leading context pointer.
    #[serde(default)]
    pub btf_tracepoints: BTreeMap<String, usize>,
    /// Classic tracepoints with a readable format file (`tcp/tcp_send_reset`)
    /// and their field names.
    #[serde(default)]
    pub tracepoints: BTreeMap<String, BTreeSet<String>>,
    /// Kernel functions found in BTF (only those the table names).
    #[serde(default)]
    pub functions: BTreeSet<String>,
    /// Their parameter counts, from BTF (where it describes them).
    #[serde(default)]
    pub function_params: BTreeMap<String, usize>,
}

/// The choice for one hook: candidates to try at attach, in order, and the
/// mechanisms refused up front with the reason.
#[derive(Debug)]
pub struct HookPlan {
    pub hook: &'static Hook,
    pub candidates: Vec<&'static Mechanism>,
    pub refused: Vec<(&'static Mechanism, String)>,
    /// Why the hook is not wanted on this kernel at all (then it has no
    /// candidates and nothing is refused).
    pub not_needed: Option<String>,
}

/// Why `mech` cannot work on a kernel with `caps`, or `None` if it may.
pub fn refusal(mech: &Mechanism, caps: &KernelCaps) -> Option<String> {
    match mech.kind {
        Kind::TpBtf | Kind::RawTracepoint => {
            if mech.kind == Kind::TpBtf && !caps.btf {
                return Some("no kernel BTF (/sys/kernel/btf/vmlinux)".into());
            }
            for target in mech.targets {
                let Some(&params) = caps.btf_tracepoints.get(*target) else {
                    return Some(if caps.btf {
                        format!("tracepoint {target} does not exist on this kernel")
                    } else {
                        format!("cannot check tracepoint {target}'s arguments without BTF")
                    });
                };
                if let Some(want) = mech.params
                    && want != params
                {
                    return Some(format!(
                        "{target} has {} arguments here, this program reads {}",
                        params.saturating_sub(1),
                        want - 1
                    ));
                }
            }
            None
        }
        Kind::Tracepoint => {
            if !caps.tracefs {
                return Some("tracefs is not mounted and could not be mounted".into());
            }
            // A multi-target program needs at least one of its targets.
            let mut missing = Vec::new();
            let mut found = 0;
            for target in mech.targets {
                match caps.tracepoints.get(*target) {
                    None => missing.push(format!("tracepoint {target} does not exist")),
                    Some(fields) => match mech.field {
                        Some(f) if !fields.contains(f) => {
                            missing.push(format!("{target} has no field `{f}`"))
                        }
                        _ => found += 1,
                    },
                }
            }
            if found == 0 {
                Some(missing.join("; "))
            } else {
                None
            }
        }
        Kind::Fentry | Kind::Fexit => {
            if !caps.btf {
                return Some("no kernel BTF".into());
            }
            if !all_functions(mech, caps) {
                return Some(format!("function {} not in BTF", mech.targets.join(", ")));
            }
            for target in mech.targets {
                let Some(want) = mech.params else { continue };
                // A program that reads past the parameters (an fexit's
                // return value) must know how many there are.
                let Some(&have) = caps.function_params.get(*target) else {
                    return Some(format!(
                        "cannot count {target}'s parameters (no BTF for it)"
                    ));
                };
                if want != have {
                    return Some(format!(
                        "{target} has {have} parameters here, this program was written for {want}"
                    ));
                }
            }
            None
        }
        Kind::Kprobe | Kind::Kretprobe => {
            if !caps.kprobes {
                Some("kprobes are not enabled in this kernel (CONFIG_KPROBES)".into())
            } else if caps.btf && !all_functions(mech, caps) {
                Some(format!("function {} not found", mech.targets.join(", ")))
            } else {
                None
            }
        }
    }
}

fn all_functions(mech: &Mechanism, caps: &KernelCaps) -> bool {
    mech.targets.iter().all(|t| caps.functions.contains(*t))
}

/// Whether `tcp:tcp_send_reset` reports resets sent with no full socket.
/// Before 6.10 the event (class `tcp_event_sk_skb`: `sport`, `dport`,
/// `family`, 4- and 16-byte addresses) reads everything from the socket, so
/// the kernel fires it only for full sockets; since 6.10 it has its own
/// layout (28-byte sockaddrs taken from the packet when there is no socket)
/// and a `reason` argument. The format file decides; without tracefs, the
/// reason argument (4 BTF parameters) does.
pub fn send_reset_reports_no_socket(caps: &KernelCaps) -> bool {
    match caps.tracepoints.get("tcp/tcp_send_reset") {
        Some(fields) => !fields.contains("sport"),
        None => caps.btf_tracepoints.get("tcp_send_reset") == Some(&4),
    }
}

/// Why `hook` is not wanted on a kernel with `caps`, or `None` if it is.
fn not_needed(hook: &Hook, caps: &KernelCaps) -> Option<String> {
    match hook.need {
        Need::Always => None,
        Need::SendResetMissesNoSocket => send_reset_reports_no_socket(caps).then(|| {
            "not needed: tcp:tcp_send_reset reports resets with no full socket on this kernel"
                .to_string()
        }),
    }
}

/// Plans every hook of `table` for a kernel.
#[cfg(test)]
pub fn plan(table: &'static [Hook], caps: &KernelCaps) -> Vec<HookPlan> {
    plan_without(table, caps, &[])
}

/// Plans every hook of `table`, refusing the mechanism kinds in `denied`
/// (`--no-mechanism`) as if the kernel lacked them.
pub fn plan_without(table: &'static [Hook], caps: &KernelCaps, denied: &[Kind]) -> Vec<HookPlan> {
    table
        .iter()
        .map(|hook| {
            let mut candidates = Vec::new();
            let mut refused = Vec::new();
            let not_needed = not_needed(hook, caps);
            if not_needed.is_none() {
                for mech in hook.mechanisms {
                    let why = if denied.contains(&mech.kind) {
                        Some(format!("refused by --no-mechanism {}", mech.kind.name()))
                    } else {
                        refusal(mech, caps)
                    };
                    match why {
                        None => candidates.push(mech),
                        Some(why) => refused.push((mech, why)),
                    }
                }
            }
            HookPlan {
                hook,
                candidates,
                refused,
                not_needed,
            }
        })
        .collect()
}

/// Required hooks with no candidate at all, with the reasons: `tracer`
/// cannot run on such a kernel.
pub fn unsatisfiable(plans: &[HookPlan]) -> Vec<String> {
    plans
        .iter()
        .filter(|p| p.hook.required && p.candidates.is_empty())
        .map(|p| {
            let why: Vec<String> = p
                .refused
                .iter()
                .map(|(m, w)| format!("{}: {w}", m.kind.name()))
                .collect();
            format!("{} ({})", p.hook.name, why.join("; "))
        })
        .collect()
}

#[cfg(test)]
#[path = "select_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "kernels_table_tests.rs"]
mod kernels_table_tests;
