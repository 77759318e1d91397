//! Why the handlers are stuck: the process's outbound connections grouped
//! by remote endpoint (`upstream_saturation`), its listeners' response time
//! (`listener_latency`), and what its CLOSE_WAIT sockets were waiting for.
//! Pure: tested with fixtures, no root.

use std::collections::{BTreeMap, HashMap};

use tracer_common::exchange::{DIR_SERVED, DIR_UPSTREAM, ExchKey};
use tracer_common::socket_id;

use super::model::{Endpoint, Finding, HostView, Kind};
use super::stuck::{Classes, ConnView};
use super::words::{thousands, who};
use crate::exchange::ExchStat;
use crate::snapshot::{TCP_CLOSE_WAIT, TCP_ESTABLISHED};

/// An endpoint's pool is "few" connections: at most this many.
pub const UPSTREAM_MAX_CONNS: u64 = 32;
/// Share of the window its connections had a request outstanding.
pub const UPSTREAM_BUSY_MIN: f64 = 0.8;
/// Exchanges in the window before a pattern is called one.
pub const UPSTREAM_MIN_EXCHANGES: u64 = 3;
/// A listener's p99 response time at or above this is high.
pub const LISTENER_SLOW_MS: f64 = 1000.0;
/// Requests waiting at a listener's end at or above this are stuck.
pub const LISTENER_WAITING_MIN: u64 = 10;

/// The accepted connections of `pid` in `states`, by handling.
pub fn classes(host: &HostView, pid: u32, states: &[u8], port: Option<u16>) -> Classes {
    let mut c = Classes::default();
    for v in host.conns.iter().filter(|v| {
        v.pid == pid
            && v.inbound
            && states.contains(&v.state)
            && port.is_none_or(|p| v.local.1 == p)
    }) {
        c.add(v.handling);
    }
    c
}

/// The unanswered/unread/answered fields of a `close_wait_pileup` over all
/// of the process's CLOSE_WAIT sockets (accepted or not, so they add up to
/// `count`); left out when some socket had no `tcp_info`.
pub fn classify_pileup(f: &mut Finding, host: &HostView, pid: u32) {
    let mut c = Classes::default();
    for v in host
        .conns
        .iter()
        .filter(|v| v.pid == pid && v.state == TCP_CLOSE_WAIT)
    {
        c.add(v.handling);
    }
    let total = c.unread + c.idle + c.unanswered + c.answered;
    if c.unknown > 0 || Some(total) != f.count {
        return;
    }
    f.unread = Some(c.unread + c.idle);
    f.unanswered = Some(c.unanswered);
    f.answered = Some(c.answered);
    if c.unanswered > 0 {
        f.summary.push_str(&format!(
            ", {} of them with the request read and never answered: its handlers are stuck",
            thousands(c.unanswered)
        ));
    }
    if c.unread > 0 {
        f.summary.push_str(&format!(
            "; {} with the request never read",
            thousands(c.unread)
        ));
    }
}

/// The endpoint of an exchange key: the remote one for [`DIR_UPSTREAM`],
/// (0.0.0.0, local port) for [`DIR_SERVED`].
pub fn endpoint(k: &ExchKey) -> Option<Endpoint> {
    let ip = match k.dir {
        DIR_UPSTREAM => socket_id::addr(k.family, &k.addr)?,
        _ => std::net::IpAddr::from([0u8; 4]),
    };
    Some((k.tgid, k.netns, ip, k.port))
}

/// The exchanges of one key kind, by endpoint.
fn by_endpoint(host: &HostView, dir: u8) -> HashMap<Endpoint, &ExchStat> {
    host.exchanges
        .iter()
        .filter(|(k, _)| k.dir == dir)
        .filter_map(|(k, s)| Some((endpoint(k)?, s)))
        .collect()
}

/// The process at the far end of `conns` (their remote endpoint), on this
/// host in any namespace: the socket whose 4-tuple is theirs reversed, else
/// the listener on that port in their namespace.
fn peer(host: &HostView, conns: &[&ConnView]) -> Option<u32> {
    let first = conns.first()?;
    host.conns
        .iter()
        .find(|p| {
            p.local == first.remote
                && conns
                    .iter()
                    .any(|c| c.local == p.remote && c.remote == p.local)
        })
        .map(|p| p.pid)
        .or_else(|| {
            host.listeners
                .iter()
                .find(|l| l.netns == first.netns && l.port == first.remote.1)
                .and_then(|l| l.pid)
        })
}

/// `upstream_saturation`: a process's outbound connections to one remote
/// endpoint, few (≤ [`UPSTREAM_MAX_CONNS`]), as many at the end as at the
/// start, with a request outstanding at least [`UPSTREAM_BUSY_MIN`] of
/// connections × window.
pub fn upstream_findings(host: &HostView) -> Vec<Finding> {
    let mut groups: BTreeMap<Endpoint, Vec<&ConnView>> = BTreeMap::new();
    for v in host
        .conns
        .iter()
        .filter(|v| !v.inbound && v.state == TCP_ESTABLISHED)
    {
        groups
            .entry((v.pid, v.netns, v.remote.0, v.remote.1))
            .or_default()
            .push(v);
    }
    let timed = by_endpoint(host, DIR_UPSTREAM);
    let mut out = Vec::new();
    for (ep, conns) in groups {
        let n = conns.len() as u64;
        let Some(stat) = timed.get(&ep) else {
            log::debug!("upstream {ep:?}: {n} connections, no exchange timed");
            continue;
        };
        let constant = host
            .start_outbound
            .as_ref()
            .is_none_or(|s| s.get(&ep) == Some(&n));
        if n > UPSTREAM_MAX_CONNS || !constant || stat.count < UPSTREAM_MIN_EXCHANGES {
            continue;
        }
        let capacity = n as f64 * host.window_s * 1e9;
        // Requests still open at the end count for their time so far; the
        // part before the window of those open at its start does not.
        let open_ns = host.open.get(&ep).copied().unwrap_or(0.0);
        let busy = ((stat.busy_ns as f64 + open_ns) / capacity).clamp(0.0, 1.0);
        log::debug!(
            "upstream {ep:?}: {n} connections (constant: {constant}), {} exchanges ({} ms), {:.0} ms outstanding, busy {busy:.2}",
            stat.count,
            stat.busy_ns / 1_000_000,
            open_ns / 1e6
        );
        if capacity <= 0.0 || busy < UPSTREAM_BUSY_MIN {
            continue;
        }
        let (pid, _, ip, port) = ep;
        let comm = host.processes.get(&pid).map(|p| p.comm.clone());
        let mut f = Finding::new(Kind::UpstreamSaturation, Some(pid), comm);
        f.remote_addr = Some(ip.to_string());
        f.remote_port = Some(port);
        f.connections = Some(n);
        f.busy_ratio = Some((busy * 100.0).round() / 100.0);
        f.exchanges = Some(stat.count);
        f.exchange_ms_p50 = stat.quantile_ms(0.5);
        f.exchange_ms_p99 = stat.quantile_ms(0.99);
        let waiting = classes(host, pid, &[TCP_ESTABLISHED, TCP_CLOSE_WAIT], None).waiting();
        f.waiting = Some(waiting);
        f.peer_pid = peer(host, &conns);
        f.peer_comm = f
            .peer_pid
            .and_then(|p| host.processes.get(&p))
            .map(|p| p.comm.clone());
        let peer = match f.peer_pid {
            Some(_) => format!(" ({})", who(f.peer_pid, &f.peer_comm)),
            None => String::new(),
        };
        let addr = if ip.is_ipv6() {
            format!("[{ip}]:{port}")
        } else {
            format!("{ip}:{port}")
        };
        f.summary = format!(
            "{} of its requests wait on its {n} connection{} to {addr}{peer}, busy {:.0} % of the window, {} per exchange: the pool to :{port} is too small for the load, or :{port} is slow",
            thousands(waiting),
            if n == 1 { "" } else { "s" },
            busy * 100.0,
            f.exchange_ms_p50
                .map(|m| format!("{m:.0} ms"))
                .unwrap_or_else(|| "?".into()),
        );
        out.push(f);
    }
    out
}

/// `listener_latency`: per listener, request read -> first response byte
/// over the window, and the requests waiting at its end; a finding when the
/// p99 is at least [`LISTENER_SLOW_MS`] or [`LISTENER_WAITING_MIN`]
/// requests wait.
pub fn listener_findings(host: &HostView) -> Vec<Finding> {
    let served = by_endpoint(host, DIR_SERVED);
    let mut out = Vec::new();
    let mut seen = Vec::new();
    for l in &host.listeners {
        let Some(pid) = l.pid else { continue };
        if seen.contains(&(pid, l.netns, l.port)) {
            continue;
        }
        seen.push((pid, l.netns, l.port));
        let stat = served.get(&(pid, l.netns, [0u8; 4].into(), l.port));
        let waiting =
            classes(host, pid, &[TCP_ESTABLISHED, TCP_CLOSE_WAIT], Some(l.port)).waiting();
        let p99 = stat.and_then(|s| s.quantile_ms(0.99));
        if waiting < LISTENER_WAITING_MIN && p99.is_none_or(|p| p < LISTENER_SLOW_MS) {
            continue;
        }
        let mut f = Finding::new(Kind::ListenerLatency, Some(pid), l.comm.clone());
        f.local_port = Some(l.port);
        f.response_ms_p50 = stat.and_then(|s| s.quantile_ms(0.5));
        f.response_ms_p99 = p99;
        f.exchanges = stat.map(|s| s.count);
        f.waiting = Some(waiting);
        let times = match (f.response_ms_p50, p99) {
            (Some(a), Some(b)) => format!(
                "answered requests on :{} took {a:.0} ms (p50), {b:.0} ms (p99)",
                l.port
            ),
            _ => format!("no request on :{} was answered in the window", l.port),
        };
        f.summary = format!(
            "{times}; {} requests are waiting at its end",
            thousands(waiting)
        );
        out.push(f);
    }
    out
}

/// Outbound connections per endpoint in a snapshot (for `start_outbound`).
pub fn outbound_counts(conns: &[ConnView]) -> HashMap<Endpoint, u64> {
    let mut out = HashMap::new();
    for v in conns
        .iter()
        .filter(|v| !v.inbound && v.state == TCP_ESTABLISHED)
    {
        *out.entry((v.pid, v.netns, v.remote.0, v.remote.1))
            .or_default() += 1;
    }
    out
}

#[cfg(test)]
#[path = "upstream_tests.rs"]
mod tests;
