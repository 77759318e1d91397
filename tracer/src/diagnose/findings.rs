//! Window + host view -> findings, most likely root cause first. Pure: tested
//! with fixtures, no root.

use std::collections::HashMap;

pub use super::model::*;
use super::window::{RstPort, Window};
use super::words::who;
pub use super::words::{duration_words, thousands};

/// Thresholds below which a pattern is not called a finding.
pub const CLOSE_WAIT_MIN: u64 = 10;
pub const RST_STORM_MIN: u64 = 10;
pub const PEER_RESETS_MIN: u64 = 10;
/// fd usage at or above this share of the limit is exhaustion.
pub const FD_PRESSURE_PERCENT: u64 = 90;

/// Keeps the findings about the processes and ports asked for: with
/// `--port`, a finding with a local port must be on one of them; one
/// without (CLOSE_WAIT; a saturated upstream, resets on connections a
/// process made: those have a remote port) is kept when its remote port
/// is one of them or its process has a finding or a listener on one of
/// them; with `--pid`, the process must be one of them.
pub fn scope(found: Vec<Finding>, pids: &[u32], ports: &[u16], host: &HostView) -> Vec<Finding> {
    let port_ok = |p: Option<u16>| p.is_some_and(|p| ports.contains(&p));
    let mut on_ports: std::collections::HashSet<u32> = host
        .listeners
        .iter()
        .filter(|l| port_ok(Some(l.port)))
        .filter_map(|l| l.pid)
        .collect();
    on_ports.extend(
        found
            .iter()
            .filter(|f| port_ok(f.local_port))
            .filter_map(|f| f.pid),
    );
    found
        .into_iter()
        .filter(|f| pids.is_empty() || f.pid.is_some_and(|p| pids.contains(&p)))
        .filter(|f| {
            ports.is_empty()
                || match (f.local_port, f.remote_port) {
                    (Some(p), _) => ports.contains(&p),
                    (None, Some(p)) if ports.contains(&p) => true,
                    _ => f.pid.is_some_and(|p| on_ports.contains(&p)),
                }
        })
        .collect()
}

/// Everything the window and the host view show, ordered: findings are
/// grouped by process, the process with the most fundamental problem first
/// (fd exhaustion, then a full accept queue, then CLOSE_WAIT, then the
/// saturated upstream and slow listener that explain them, then resets),
/// and within a process in the order of the chain.
pub fn findings(w: &Window, host: &HostView) -> Vec<Finding> {
    let mut out = Vec::new();
    let comm_of = |pid: Option<u32>, fallback: &Option<String>| -> Option<String> {
        pid.and_then(|p| host.processes.get(&p).map(|v| v.comm.clone()))
            .or_else(|| fallback.clone())
    };

    // fd exhaustion: failed accepts for lack of fds (EMFILE: the process's
    // limit; ENFILE: the host's file table), or usage near the limit.
    #[derive(Default)]
    struct Fds {
        emfile: u64,
        enfile: u64,
        port: Option<u16>,
        most: u64,
        fd_count: Option<u32>,
        fd_limit: Option<u64>,
        comm: Option<String>,
    }
    let mut emfile: HashMap<Option<u32>, Fds> = HashMap::new();
    for ((pid, port, err), g) in &w.accept_failed {
        if err != "EMFILE" && err != "ENFILE" {
            continue;
        }
        let e = emfile.entry(*pid).or_default();
        if err == "EMFILE" {
            e.emfile += g.count;
        } else {
            e.enfile += g.count;
        }
        if g.count > e.most {
            e.port = *port;
            e.most = g.count;
        }
        e.fd_count = g.fd_count.or(e.fd_count);
        e.fd_limit = g.fd_limit.or(e.fd_limit);
        e.comm = g.comm.clone().or(e.comm.take());
    }
    let mut pressured: Vec<u32> = host
        .processes
        .iter()
        .filter(|(_, v)| {
            v.fd_limit
                .is_some_and(|l| l > 0 && v.fd_count as u64 * 100 >= l * FD_PRESSURE_PERCENT)
        })
        .map(|(p, _)| *p)
        .collect();
    pressured.sort_unstable();
    for pid in pressured {
        emfile.entry(Some(pid)).or_default();
    }
    for (pid, fds) in emfile {
        let Fds {
            emfile: n,
            enfile,
            port,
            fd_count: fd_c,
            fd_limit: fd_l,
            comm,
            ..
        } = fds;
        let view = pid.and_then(|p| host.processes.get(&p));
        let fd_count = view.map(|v| v.fd_count).or(fd_c);
        let fd_limit = view.and_then(|v| v.fd_limit).or(fd_l);
        let port = port.or_else(|| {
            host.listeners
                .iter()
                .find(|l| l.pid == pid && pid.is_some())
                .map(|l| l.port)
        });
        let mut f = Finding::new(Kind::FdExhaustion, pid, comm_of(pid, &comm));
        let fds = match (fd_count, fd_limit) {
            (Some(c), Some(l)) => format!(
                "holds {} of {} file descriptors",
                thousands(c as u64),
                thousands(l)
            ),
            (Some(c), None) => format!("holds {} file descriptors", thousands(c as u64)),
            _ => "is out of file descriptors".into(),
        };
        let on = port.map(|p| format!(" on :{p}")).unwrap_or_default();
        let mut accepts = String::new();
        if n > 0 {
            accepts.push_str(&format!(
                "; {} accept() calls failed with EMFILE{on}",
                thousands(n)
            ));
        }
        if enfile > 0 {
            accepts.push_str(&format!(
                "; {} accept() calls failed with ENFILE{on}: the host's file table is full",
                thousands(enfile)
            ));
        }
        f.summary = format!("{} {fds}{accepts}", who(pid, &f.comm));
        f.fd_count = fd_count;
        f.fd_limit = fd_limit;
        // EMFILE and ENFILE alike (docs/schema.md): both are accepts that
        // failed for want of a file descriptor.
        f.accept_emfile = Some(n + enfile);
        f.local_port = port;
        out.push(f);
    }

    // Accept queue overflow: drops seen in the window, or a queue full now.
    let mut overflow_keys: Vec<(Option<u32>, u16)> = w.overflows.keys().copied().collect();
    overflow_keys.sort_unstable();
    let mut seen_ports = Vec::new();
    for key in overflow_keys {
        let g = &w.overflows[&key];
        let l = host
            .listeners
            .iter()
            .find(|l| Some(l.netns) == key.0 && l.port == key.1);
        let pid = g.pid.or(l.and_then(|l| l.pid));
        let mut f = Finding::new(Kind::AcceptQueueOverflow, pid, comm_of(pid, &g.comm));
        f.local_port = Some(key.1);
        f.backlog = Some(l.map_or(g.backlog, |l| l.backlog));
        f.queued = Some(l.map_or(g.queued, |l| l.queued));
        f.overflows = Some(g.drops);
        f.summary = format!(
            "the accept queue of :{} ({}) is full ({}/{}): {} connection attempts dropped",
            key.1,
            who(pid, &f.comm),
            f.queued.unwrap_or(0),
            f.backlog.unwrap_or(0),
            thousands(g.drops)
        );
        seen_ports.push((key.0, key.1));
        out.push(f);
    }
    for l in &host.listeners {
        if l.queued > l.backlog && !seen_ports.contains(&(Some(l.netns), l.port)) {
            let mut f = Finding::new(Kind::AcceptQueueOverflow, l.pid, comm_of(l.pid, &l.comm));
            f.local_port = Some(l.port);
            f.backlog = Some(l.backlog);
            f.queued = Some(l.queued);
            f.overflows = Some(0);
            f.summary = format!(
                "the accept queue of :{} ({}) is full ({}/{})",
                l.port,
                who(l.pid, &f.comm),
                l.queued,
                l.backlog
            );
            out.push(f);
        }
    }

    // CLOSE_WAIT pile-ups.
    for (pid, (count, oldest)) in &host.close_wait {
        if *count < CLOSE_WAIT_MIN {
            continue;
        }
        let mut f = Finding::new(
            Kind::CloseWaitPileup,
            Some(*pid),
            comm_of(Some(*pid), &None),
        );
        f.count = Some(*count);
        let at_least = host.close_wait_at_least.contains(pid);
        if at_least {
            f.oldest_at_least_s = *oldest;
        } else {
            f.oldest_s = *oldest;
        }
        f.summary = format!(
            "{} of its sockets are in CLOSE_WAIT{}: the peers closed and the process never did",
            thousands(*count),
            oldest
                .map(|s| format!(
                    ", the oldest for {}{}",
                    if at_least { "at least " } else { "" },
                    duration_words(s)
                ))
                .unwrap_or_default()
        );
        super::upstream::classify_pileup(&mut f, host, *pid);
        out.push(f);
    }

    // Why: the upstream the handlers wait on, the listeners' response time.
    out.extend(super::upstream::upstream_findings(host));
    out.extend(super::upstream::listener_findings(host));

    // RSTs sent, per owner and local port (or, for connections the owner
    // made, the remote port they went to).
    for ((pid, port), g) in &w.rst_sent {
        if g.count < RST_STORM_MIN {
            continue;
        }
        let mut f = Finding::new(Kind::RstStorm, *pid, comm_of(*pid, &g.comm));
        let (at, unowned) = match *port {
            RstPort::Local(p) => {
                f.local_port = Some(p);
                (format!("from :{p}"), pid.is_none())
            }
            RstPort::Remote(p) => {
                f.remote_port = Some(p);
                (format!("on its connections to :{p}"), false)
            }
        };
        f.count = Some(g.count);
        f.reasons = Some(g.reasons.clone());
        let mut reasons: Vec<(&String, &u64)> = g.reasons.iter().collect();
        reasons.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let reasons: Vec<String> = reasons
            .iter()
            .map(|(r, n)| format!("{r} {}", thousands(**n)))
            .collect();
        f.summary = format!(
            "{} RSTs were sent {at} ({}){}",
            thousands(g.count),
            reasons.join(", "),
            if unowned {
                "; no process owns that port: nothing listens there"
            } else {
                ""
            }
        );
        out.push(f);
    }

    // Peers resetting this host's connections.
    for (pid, (comm, n)) in &w.rst_received {
        if *n < PEER_RESETS_MIN || pid.is_none() {
            continue;
        }
        let mut f = Finding::new(Kind::PeerResets, *pid, comm_of(*pid, comm));
        f.count = Some(*n);
        f.summary = format!(
            "{} of its connections were reset by their peers",
            thousands(*n)
        );
        out.push(f);
    }

    order(&mut out);
    out
}

fn magnitude(f: &Finding) -> u64 {
    f.accept_emfile
        .or(f.overflows)
        .or(f.count)
        .unwrap_or(0)
        .max(f.fd_count.unwrap_or(0) as u64)
}

/// Whether a finding only describes a condition, with nothing failing in
/// the window: fds near the limit but no accept failed, a queue full now
/// but nothing dropped.
fn condition_only(f: &Finding) -> bool {
    match f.kind {
        Kind::FdExhaustion => f.accept_emfile == Some(0),
        Kind::AcceptQueueOverflow => f.overflows == Some(0),
        _ => false,
    }
}

/// How bad a finding is, smaller first: whether something actually failed
/// (a process near a limit ranks after any process whose clients were
/// hurt), then its kind, then its size.
fn severity(f: &Finding) -> (bool, Kind, u64) {
    (condition_only(f), f.kind, u64::MAX - magnitude(f))
}

/// Groups by process, the process with the most fundamental finding first.
fn order(out: &mut [Finding]) {
    let mut best: HashMap<Option<u32>, (bool, Kind, u64)> = HashMap::new();
    for f in out.iter() {
        let e = best.entry(f.pid).or_insert(severity(f));
        if severity(f) < *e {
            *e = severity(f);
        }
    }
    out.sort_by(|a, b| {
        best[&a.pid]
            .cmp(&best[&b.pid])
            .then(a.pid.cmp(&b.pid))
            .then(a.kind.cmp(&b.kind))
            .then(magnitude(b).cmp(&magnitude(a)))
    });
}

#[cfg(test)]
#[path = "findings_tests.rs"]
mod tests;
