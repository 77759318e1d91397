//! Names of the kernel enums the events carry as numbers: TCP states, RST
//! reasons (`enum sk_rst_reason`, 6.10+) and drop reasons (`enum
//! skb_drop_reason`). Their numbering changes between releases, so they are
//! read from the running kernel: BTF first, the tracepoint `print fmt`
//! tables second, and a small built-in table last.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use btf_rs::Btf;

use super::btf::{anon_enum_containing, enum_values};
#[cfg(test)]
use super::tracefs::parse_format;
use super::tracefs::{Format, symbolic_tables};

/// Value → name tables; names carry no `TCP_` / `SK_RST_REASON_` /
/// `SKB_DROP_REASON_` prefix (`ESTABLISHED`, `NO_SOCKET`). The names events
/// carry are shared: each event holds a reference, not a copy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelNames {
    states: BTreeMap<u32, Arc<str>>,
    rst_reasons: BTreeMap<u32, Arc<str>>,
    drop_reasons: BTreeMap<u32, String>,
}

fn strip_state(name: &str) -> Option<String> {
    let short = name.strip_prefix("TCP_")?;
    (short != "MAX_STATES").then(|| short.to_string())
}

fn strip_rst(name: &str) -> String {
    name.strip_prefix("SK_RST_REASON_")
        .unwrap_or(name)
        .to_string()
}

/// `SKB_DROP_REASON_NO_SOCKET` → `NO_SOCKET`; the two values that are not
/// drops (`SKB_NOT_DROPPED_YET`, `SKB_CONSUMED`) lose their `SKB_` prefix.
fn strip_drop(name: &str) -> String {
    name.strip_prefix("SKB_DROP_REASON_")
        .or_else(|| name.strip_prefix("SKB_"))
        .unwrap_or(name)
        .to_string()
}

fn table<T: From<String>>(
    values: Option<Vec<(String, i64)>>,
    rename: impl Fn(&str) -> Option<String>,
) -> BTreeMap<u32, T> {
    values
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(name, v)| Some((u32::try_from(v).ok()?, rename(&name)?.into())))
        .collect()
}

#[cfg(test)]
fn find_rev<T: AsRef<str>>(map: &BTreeMap<u32, T>, name: &str) -> Option<u32> {
    map.iter()
        .find(|(_, n)| n.as_ref() == name)
        .map(|(v, _)| *v)
}

impl KernelNames {
    /// TCP state name without `TCP_` (`1` → `ESTABLISHED`).
    #[cfg(test)]
    pub fn state_name(&self, state: u32) -> Option<&str> {
        self.state_text(state).map(|s| &**s)
    }

    /// TCP state name without `TCP_` (`1` → `ESTABLISHED`), shared (for
    /// an event).
    pub fn state_text(&self, state: u32) -> Option<&Arc<str>> {
        self.states.get(&state)
    }

    /// RST reason name without `SK_RST_REASON_` (`1` → `NO_SOCKET`).
    #[cfg(test)]
    pub fn rst_reason_name(&self, reason: u32) -> Option<&str> {
        self.rst_reason_text(reason).map(|s| &**s)
    }

    /// RST reason name without `SK_RST_REASON_` (`1` → `NO_SOCKET`),
    /// shared (for an event).
    pub fn rst_reason_text(&self, reason: u32) -> Option<&Arc<str>> {
        self.rst_reasons.get(&reason)
    }

    /// Drop reason name without `SKB_DROP_REASON_` (`3` → `NO_SOCKET` on 6.18).
    #[cfg(test)]
    pub fn drop_reason_name(&self, reason: u32) -> Option<&str> {
        self.drop_reasons.get(&reason).map(String::as_str)
    }

    /// Value of a TCP state by its short name (`LISTEN`).
    #[cfg(test)]
    pub fn state_value(&self, name: &str) -> Option<u32> {
        find_rev(&self.states, name)
    }

    /// Value of an RST reason by its short name (`TCP_ABORT_ON_CLOSE`).
    #[cfg(test)]
    pub fn rst_reason_value(&self, name: &str) -> Option<u32> {
        find_rev(&self.rst_reasons, name)
    }

    /// Value of a drop reason by its short name (`TCP_LISTEN_OVERFLOW`).
    #[cfg(test)]
    pub fn drop_reason_value(&self, name: &str) -> Option<u32> {
        find_rev(&self.drop_reasons, name)
    }

    /// Reads the three enums from BTF. A table stays empty when the kernel
    /// has no such enum (`sk_rst_reason` before 6.10).
    pub fn from_btf(btf: &Btf) -> KernelNames {
        KernelNames {
            states: table(anon_enum_containing(btf, "TCP_ESTABLISHED"), strip_state),
            rst_reasons: table(enum_values(btf, "sk_rst_reason"), |n| Some(strip_rst(n))),
            drop_reasons: table(enum_values(btf, "skb_drop_reason"), |n| Some(strip_drop(n))),
        }
    }

    /// Reads the numeric `__print_symbolic` tables of one tracepoint format
    /// file: `state`/`oldstate`/`newstate` fields give TCP states (only
    /// `sock:inet_sock_set_state` has numeric keys; `tcp:*` tables keep the
    /// symbols, e.g. `{ TCP_ESTABLISHED, "TCP_ESTABLISHED" }`, which cannot be
    /// resolved from text and are skipped), and fields typed `enum
    /// sk_rst_reason` / `enum skb_drop_reason` give reasons.
    #[cfg(test)]
    pub fn from_print_fmt(format_file_text: &str) -> KernelNames {
        let fmt = parse_format(format_file_text);
        let mut names = KernelNames::default();
        names.add_print_fmt(&fmt);
        names
    }

    fn add_print_fmt(&mut self, fmt: &Format) {
        for t in symbolic_tables(&fmt.print_fmt) {
            let ty = fmt.field(&t.field).map_or("", |f| f.type_name.as_str());
            for (v, name) in t.numeric() {
                if matches!(t.field.as_str(), "state" | "oldstate" | "newstate") {
                    if let Some(short) = strip_state(name) {
                        self.states.entry(v).or_insert(short.into());
                    }
                } else if ty.contains("sk_rst_reason") {
                    self.rst_reasons
                        .entry(v)
                        .or_insert_with(|| strip_rst(name).into());
                } else if ty.contains("skb_drop_reason") {
                    self.drop_reasons
                        .entry(v)
                        .or_insert_with(|| strip_drop(name));
                }
            }
        }
    }

    /// Reads the tables of `sock:inet_sock_set_state`, `tcp:tcp_send_reset`
    /// and `skb:kfree_skb` under the tracefs mount `root`.
    pub fn from_tracefs(root: &Path) -> KernelNames {
        let mut names = KernelNames::default();
        for (system, event) in [
            ("sock", "inet_sock_set_state"),
            ("tcp", "tcp_send_reset"),
            ("skb", "kfree_skb"),
        ] {
            if let Some(fmt) = super::tracefs::read_format(root, system, event) {
                names.add_print_fmt(&fmt);
            }
        }
        names
    }

    /// LAST RESORT, used only for tables that neither BTF nor tracefs could
    /// fill. It holds only values that have not moved in any release:
    /// the TCP states (include/net/tcp_states.h, stable since 2.6; 13
    /// BOUND_INACTIVE since 6.5) and the first two RST reasons
    /// (NOT_SPECIFIED = 0, NO_SOCKET = 1 since 6.10). Drop reasons have been
    /// renumbered many times, so none are guessed.
    pub fn fallback() -> KernelNames {
        const STATES: [&str; 13] = [
            "ESTABLISHED",
            "SYN_SENT",
            "SYN_RECV",
            "FIN_WAIT1",
            "FIN_WAIT2",
            "TIME_WAIT",
            "CLOSE",
            "CLOSE_WAIT",
            "LAST_ACK",
            "LISTEN",
            "CLOSING",
            "NEW_SYN_RECV",
            "BOUND_INACTIVE",
        ];
        KernelNames {
            states: (1..).zip(STATES.iter().map(|&s| Arc::from(s))).collect(),
            rst_reasons: [(0, "NOT_SPECIFIED"), (1, "NO_SOCKET")]
                .into_iter()
                .map(|(v, n)| (v, Arc::from(n)))
                .collect(),
            drop_reasons: BTreeMap::new(),
        }
    }

    /// Fills each table from the first source that has it: BTF, then the
    /// tracefs format files, then [`KernelNames::fallback`].
    pub fn load(btf: Option<&Btf>, tracefs: Option<&Path>) -> KernelNames {
        let mut names = btf.map(KernelNames::from_btf).unwrap_or_default();
        if let Some(root) = tracefs {
            names.fill_missing(KernelNames::from_tracefs(root));
        }
        let (states, rst, drop) = names.counts();
        for (n, what) in [
            (states, "TCP state"),
            (rst, "RST reason"),
            (drop, "drop reason"),
        ] {
            if n == 0 {
                log::info!("no {what} names in BTF or tracefs; using the built-in table");
            }
        }
        names.fill_missing(KernelNames::fallback());
        names
    }

    /// Takes each of `other`'s tables for which `self` has none.
    pub fn fill_missing(&mut self, other: KernelNames) {
        if self.states.is_empty() {
            self.states = other.states;
        }
        if self.rst_reasons.is_empty() {
            self.rst_reasons = other.rst_reasons;
        }
        if self.drop_reasons.is_empty() {
            self.drop_reasons = other.drop_reasons;
        }
    }

    /// Number of names in each table (states, RST reasons, drop reasons).
    pub fn counts(&self) -> (usize, usize, usize) {
        (
            self.states.len(),
            self.rst_reasons.len(),
            self.drop_reasons.len(),
        )
    }
}
