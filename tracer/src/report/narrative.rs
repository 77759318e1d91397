//! The verdict told in sentences: what the clients see, which process, why.

use super::{Kind, Report};

/// The text form: what the clients see, which process, why.
pub fn narrative(r: &Report) -> String {
    let c = &r.counters;
    let mut s = format!("Observed {:.1} s: ", r.window_s);
    s.push_str(&format!(
        "{} RSTs sent, {} received, {} failed accepts, {} connection attempts dropped by full accept queues.\n",
        thousands(c.rst_sent),
        thousands(c.rst_received),
        thousands(c.accept_failed),
        thousands(c.listen_overflow)
    ));
    if c.lost > 0 {
        s.push_str(&format!(
            "Warning: {} events were lost (ring buffer full); counts are lower bounds.\n",
            thousands(c.lost)
        ));
    }
    if r.findings.is_empty() {
        s.push_str("Healthy: no resets, failed accepts, accept-queue overflows or CLOSE_WAIT pile-ups worth reporting.\n");
        return s;
    }
    if let Some(line) = what_clients_see(r) {
        s.push_str(&format!("\n{line}\n"));
    }
    let first = &r.findings[0];
    let cause = match first.kind {
        Kind::RstStorm if first.local_port.is_none() => "is resetting the connections it made",
        Kind::FdExhaustion => "has run out of file descriptors",
        Kind::AcceptQueueOverflow => "does not accept connections fast enough",
        Kind::CloseWaitPileup => "does not close connections its peers closed",
        Kind::UpstreamSaturation => "waits on a saturated upstream",
        Kind::ListenerLatency => "answers its requests slowly",
        Kind::RstStorm => "is resetting its clients",
        Kind::PeerResets => "is being reset by its peers",
    };
    let who = match (first.pid, &first.comm) {
        (Some(p), Some(c)) => format!("pid {p} ({c})"),
        (Some(p), None) => format!("pid {p}"),
        _ => "no single process".into(),
    };
    // Why, when the same process waits on an upstream.
    let why = r
        .findings
        .iter()
        .find(|f| f.kind == Kind::UpstreamSaturation && f.pid == first.pid && first.kind != f.kind)
        .map(|f| {
            format!(
                ": its handlers wait on its {} connection{} to {}:{}{}",
                f.connections.unwrap_or(0),
                if f.connections == Some(1) { "" } else { "s" },
                f.remote_addr.as_deref().unwrap_or("?"),
                f.remote_port.unwrap_or(0),
                match (f.peer_pid, &f.peer_comm) {
                    (Some(p), Some(c)) => format!(" (pid {p}, {c})"),
                    (Some(p), None) => format!(" (pid {p})"),
                    _ => String::new(),
                }
            )
        })
        .unwrap_or_default();
    s.push_str(&format!("Most likely cause: {who} {cause}{why}.\n\n"));
    // One paragraph per process, in the order of the chain.
    let mut i = 0;
    while i < r.findings.len() {
        let pid = r.findings[i].pid;
        let head = match (pid, &r.findings[i].comm) {
            (Some(p), Some(c)) => format!("pid {p} ({c})"),
            (Some(p), None) => format!("pid {p}"),
            _ => "no process".into(),
        };
        let mut parts = Vec::new();
        while i < r.findings.len() && r.findings[i].pid == pid {
            parts.push(&r.findings[i]);
            i += 1;
        }
        // Told as a person explains it: the process's state and why (its
        // fds, the stuck sockets, what they wait on), then what followed.
        parts.sort_by_key(|f| told_order(f.kind));
        let mut text = String::new();
        for (n, f) in parts.iter().enumerate() {
            if n > 0 {
                let then = told_order(f.kind) >= THEN && told_order(parts[n - 1].kind) < THEN;
                text.push_str(if then { "; then: " } else { "; " });
            }
            text.push_str(&f.summary);
        }
        // Every paragraph says whose it is.
        if text.starts_with(&head) {
            s.push_str(&format!("- {text}.\n"));
        } else {
            s.push_str(&format!("- {head}: {text}.\n"));
        }
    }
    s
}

/// Place of a finding in its process's paragraph; from [`THEN`] on, the
/// consequences.
fn told_order(kind: Kind) -> u8 {
    match kind {
        Kind::FdExhaustion => 0,
        Kind::CloseWaitPileup => 1,
        Kind::UpstreamSaturation => 2,
        Kind::ListenerLatency => 3,
        Kind::AcceptQueueOverflow => 4,
        Kind::RstStorm => 5,
        Kind::PeerResets => 6,
    }
}

const THEN: u8 = 4;

/// One sentence on what clients of the blamed port experience, from the
/// findings' evidence.
fn what_clients_see(r: &Report) -> Option<String> {
    let port = r.findings.iter().find_map(|f| f.local_port)?;
    let mine = |k: Kind| {
        r.findings
            .iter()
            .filter(move |f| f.kind == k && f.local_port == Some(port))
    };
    let resets: u64 = mine(Kind::RstStorm).filter_map(|f| f.count).sum();
    let dropped: u64 = mine(Kind::AcceptQueueOverflow)
        .filter_map(|f| f.overflows)
        .sum();
    let refused: u64 = mine(Kind::FdExhaustion)
        .filter_map(|f| f.accept_emfile)
        .sum();
    let mut seen = Vec::new();
    if resets > 0 {
        seen.push(format!(
            "\"connection reset by peer\" ({} RSTs)",
            thousands(resets)
        ));
    }
    if dropped > 0 {
        seen.push(format!(
            "connection attempts that hang and time out ({} dropped)",
            thousands(dropped)
        ));
    }
    if refused > 0 {
        seen.push(format!(
            "connections that are never served ({} accept() calls failed)",
            thousands(refused)
        ));
    }
    if seen.is_empty() {
        return None;
    }
    Some(format!("Clients of :{port} see {}.", seen.join(", ")))
}

/// `1811` -> `1,811`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
