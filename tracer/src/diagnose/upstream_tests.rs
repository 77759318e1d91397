use std::net::IpAddr;

use tracer_common::exchange::{DIR_SERVED, DIR_UPSTREAM, ExchAgg, ExchKey, bucket_of};

use super::super::findings::findings;
use super::super::model::{ListenerView, ProcView};
use super::super::stuck::Handling;
use super::super::window::Window;
use super::*;
use crate::exchange::{Totals, delta};
use crate::report::{Report, narrative};

const NS: u32 = 4026531840;
const API: u32 = 4242;
const PG: u32 = 811;
const WINDOW_S: f64 = 10.0;

fn lo() -> IpAddr {
    [127, 0, 0, 1].into()
}

fn proc_view(comm: &str, fd_count: u32, fd_limit: Option<u64>) -> ProcView {
    ProcView {
        comm: comm.into(),
        fd_count,
        fd_limit,
    }
}

fn conn(pid: u32, state: u8, local: u16, remote: u16, inbound: bool, h: Handling) -> ConnView {
    ConnView {
        pid,
        netns: NS,
        state,
        local: (lo(), local),
        remote: (lo(), remote),
        inbound,
        handling: Some(h),
    }
}

fn listener(pid: u32, comm: &str, port: u16) -> ListenerView {
    ListenerView {
        pid: Some(pid),
        comm: Some(comm.into()),
        netns: NS,
        port,
        backlog: 32,
        queued: 0,
    }
}

/// `n` exchanges of `ms` each on one key, as the kernel would total them.
fn exchanges(host: &mut HostView, key: ExchKey, n: u64, ms: u64) {
    let mut a = ExchAgg::default();
    for _ in 0..n {
        a.count += 1;
        a.busy_ns += ms * 1_000_000;
        a.buckets[bucket_of(ms * 1000)] += 1;
    }
    let after: Totals = [(key, a)].into();
    host.exchanges.extend(delta(&Totals::new(), &after));
}

fn upstream_key(pid: u32, port: u16) -> ExchKey {
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&[127, 0, 0, 1]);
    ExchKey {
        tgid: pid,
        netns: NS,
        family: 2,
        port,
        dir: DIR_UPSTREAM,
        addr,
        ..ExchKey::default()
    }
}

/// The incident: api (:2133, 128 fds of 128) with 12 CLOSE_WAIT sockets (9
/// read and unanswered, 2 unread, 1 answered) and 2 pooled connections to
/// postgres on :5432, each with a 300 ms query outstanding 99 % of the time.
fn incident(pool: u64, busy_per_conn: u64) -> HostView {
    let mut host = HostView {
        window_s: WINDOW_S,
        ..HostView::default()
    };
    host.processes.insert(API, proc_view("api", 128, Some(128)));
    host.processes
        .insert(PG, proc_view("postgres", 12, Some(1024)));
    host.listeners.push(listener(API, "api", 2133));
    host.listeners.push(listener(PG, "postgres", 5432));
    for i in 0..12u16 {
        let h = match i {
            0..9 => Handling::Unanswered,
            9..11 => Handling::Unread,
            _ => Handling::Answered,
        };
        host.conns
            .push(conn(API, TCP_CLOSE_WAIT, 2133, 40000 + i, true, h));
    }
    host.close_wait.insert(API, (12, None));
    for i in 0..pool as u16 {
        host.conns.push(conn(
            API,
            TCP_ESTABLISHED,
            50000 + i,
            5432,
            false,
            Handling::Idle,
        ));
        host.conns.push(conn(
            PG,
            TCP_ESTABLISHED,
            5432,
            50000 + i,
            true,
            Handling::Unanswered,
        ));
    }
    host.start_outbound = Some([((API, NS, lo(), 5432), pool)].into());
    exchanges(
        &mut host,
        upstream_key(API, 5432),
        busy_per_conn * pool,
        300,
    );
    host
}

#[test]
fn the_stuck_handlers_and_the_pool_they_wait_on() {
    // 33 exchanges of 300 ms per connection in 10 s: busy 99 %.
    let host = incident(2, 33);
    let found = findings(&Window::default(), &host);
    let kinds: Vec<Kind> = found.iter().map(|f| f.kind).collect();
    assert_eq!(
        kinds,
        vec![
            Kind::FdExhaustion,
            Kind::CloseWaitPileup,
            Kind::UpstreamSaturation,
            Kind::ListenerLatency
        ]
    );
    let cw = &found[1];
    assert_eq!(
        (cw.count, cw.unanswered, cw.unread, cw.answered),
        (Some(12), Some(9), Some(2), Some(1))
    );
    let up = &found[2];
    assert_eq!(up.pid, Some(API));
    assert_eq!(up.remote_addr.as_deref(), Some("127.0.0.1"));
    assert_eq!(up.remote_port, Some(5432));
    assert_eq!(up.connections, Some(2));
    assert_eq!(up.busy_ratio, Some(0.99));
    assert_eq!(up.exchanges, Some(66));
    assert_eq!(up.exchange_ms_p50, Some(294.9));
    assert_eq!(up.exchange_ms_p99, Some(294.9));
    // Unanswered + unread requests of api (CLOSE_WAIT; none ESTABLISHED).
    assert_eq!(up.waiting, Some(11));
    assert_eq!(
        (up.peer_pid, up.peer_comm.as_deref()),
        (Some(PG), Some("postgres"))
    );
    // postgres answers slowly too, but only api's listener has requests waiting.
    let l = &found[3];
    assert_eq!(
        (l.pid, l.local_port, l.waiting),
        (Some(API), Some(2133), Some(11))
    );
    let text = narrative(&Report::new(WINDOW_S, &Default::default(), found.clone()));
    assert!(
        text.contains(
            "Most likely cause: pid 4242 (api) has run out of file descriptors: its handlers wait on its 2 connections to 127.0.0.1:5432 (pid 811, postgres)."
        ),
        "{text}"
    );
    assert!(
        text.contains("9 of them with the request read and never answered: its handlers are stuck; 2 with the request never read; 11 of its requests wait on its 2 connections to 127.0.0.1:5432 (pid 811 (postgres)), busy 99 % of the window, 295 ms per exchange"),
        "{text}"
    );
}

#[test]
fn a_healthy_pool_is_no_finding() {
    // Ten connections, each busy 3 % of the window.
    let mut host = incident(10, 1);
    host.close_wait.clear();
    host.conns.retain(|c| c.state != TCP_CLOSE_WAIT);
    // postgres has answered every query it was sent.
    for c in host.conns.iter_mut().filter(|c| c.pid == PG) {
        c.handling = Some(Handling::Answered);
    }
    host.processes.insert(API, proc_view("api", 30, Some(1024)));
    assert!(findings(&Window::default(), &host).is_empty());
}

#[test]
fn a_request_still_outstanding_counts_for_its_time_so_far() {
    // 20 exchanges of 300 ms per connection (60 %), then both stuck for 4 s.
    let mut host = incident(2, 20);
    assert!(upstream_findings(&host).is_empty());
    host.open.insert((API, NS, lo(), 5432), 8e9);
    let found = upstream_findings(&host);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].busy_ratio, Some(1.0));
}

#[test]
fn a_pool_that_changed_size_or_saw_few_exchanges_is_not_saturated() {
    let mut host = incident(2, 33);
    host.start_outbound = Some([((API, NS, lo(), 5432), 5)].into());
    assert!(upstream_findings(&host).is_empty());
    let mut host = incident(2, 33);
    host.exchanges.clear();
    exchanges(&mut host, upstream_key(API, 5432), 2, 9000);
    assert!(upstream_findings(&host).is_empty());
    // Unknown start (no start snapshot): the end alone decides.
    let mut host = incident(2, 33);
    host.start_outbound = None;
    assert_eq!(upstream_findings(&host).len(), 1);
}

#[test]
fn a_slow_listener_with_nothing_waiting_is_named_by_its_p99() {
    let mut host = HostView {
        window_s: WINDOW_S,
        ..HostView::default()
    };
    host.processes
        .insert(PG, proc_view("postgres", 12, Some(1024)));
    host.listeners.push(listener(PG, "postgres", 5432));
    let key = ExchKey {
        tgid: PG,
        netns: NS,
        family: 2,
        port: 5432,
        dir: DIR_SERVED,
        ..ExchKey::default()
    };
    exchanges(&mut host, key, 20, 1500);
    let found = listener_findings(&host);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].response_ms_p99, Some(1441.8));
    assert_eq!(found[0].waiting, Some(0));
    host.exchanges.clear();
    exchanges(&mut host, key, 20, 20);
    assert!(listener_findings(&host).is_empty());
}

#[test]
fn pileup_fields_are_left_out_unless_every_socket_was_classified() {
    let mut host = incident(2, 33);
    host.conns[0].handling = None;
    let found = findings(&Window::default(), &host);
    let cw = found
        .iter()
        .find(|f| f.kind == Kind::CloseWaitPileup)
        .expect("pileup");
    assert_eq!((cw.unanswered, cw.unread, cw.answered), (None, None, None));
}
