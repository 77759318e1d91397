//! Selecting and counting the JSON events of one namespace, kind or process.

use super::*;

// Event filters

/// Events of one namespace (by inode).
pub fn in_netns(events: &[Value], netns: u64) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["netns"].as_u64() == Some(netns))
        .cloned()
        .collect()
}

/// Events of one kind.
pub fn of_kind(events: &[Value], kind: &str) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["event"] == kind)
        .cloned()
        .collect()
}

/// Events of one kind in one namespace.
pub fn select(events: &[Value], netns: u64, kind: &str) -> Vec<Value> {
    of_kind(&in_netns(events, netns), kind)
}

/// Counts events of `kind` in `netns`.
pub fn count(events: &[Value], netns: u64, kind: &str) -> usize {
    events
        .iter()
        .filter(|e| e["netns"].as_u64() == Some(netns) && e["event"] == kind)
        .count()
}

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Held by a test for its whole run: the tests of one file that take it run
/// one after another (each loads the BPF programs, which on a loaded 2-core
/// host can take longer than the ready timeout when several do at once).
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Events of `kind` attributed to `pid`, in any namespace.
pub fn of_pid(events: &[Value], kind: &str, pid: u64) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["event"] == kind && e["pid"] == pid)
        .cloned()
        .collect()
}

/// The sum of the events' `count` fields (aggregated lines).
pub fn sum_count(events: &[Value]) -> u64 {
    events
        .iter()
        .map(|e| e["count"].as_u64().unwrap_or(0))
        .sum()
}

/// The resets RST lines stand for: each line's `count`, 1 when absent
/// (a line of its own).
pub fn resets(lines: &[Value]) -> u64 {
    lines.iter().map(|e| e["count"].as_u64().unwrap_or(1)).sum()
}

/// The whitespace-separated numbers of a line a test script printed.
pub fn numbers(line: &str) -> Vec<u64> {
    line.split_whitespace()
        .map(|f| f.parse().expect("number"))
        .collect()
}

/// One line per event, for assertion messages.
pub fn dump(events: &[Value]) -> String {
    events
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}
