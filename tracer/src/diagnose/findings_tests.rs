use std::collections::BTreeMap;

use super::super::window::*;
use super::*;
use crate::event::{AttributedBy, Event, EventKind, Owner};
use crate::report::{Report, narrative};

const TS: &str = "2024-05-01T12:34:56.789012345Z";
/// The init network namespace's usual inode.
const NETNS: u32 = 4026531840;

// ---------------------------------------------------------------------------
// Builders: events go through `Window::add`, exactly as diagnose feeds them.

fn owned(kind: EventKind, pid: Option<u32>, comm: &str) -> Event {
    let mut e = Event::new(kind, TS.into());
    let owner = pid.map(|pid| Owner::new(pid, comm.as_bytes().to_vec(), Vec::new(), None));
    e.set_owner(owner.as_ref(), AttributedBy::SocketOwner);
    e.netns = Some(NETNS);
    e.family = Some("inet");
    e
}

/// `n` accept() failures with `error`, one event each (count absent = 1).
fn accept_failures(
    w: &mut Window,
    pid: u32,
    comm: &str,
    port: Option<u16>,
    error: &str,
    n: u64,
    fds: (u32, u64),
) {
    for _ in 0..n {
        let mut e = owned(EventKind::AcceptFailed, Some(pid), comm);
        e.errno = Some(if error == "ENFILE" {
            libc::ENFILE
        } else {
            libc::EMFILE
        });
        e.error = Some(error.into());
        e.fd_count = Some(Some(fds.0));
        e.fd_limit = Some(Some(fds.1));
        e.local_addr = port.map(|_| "0.0.0.0".parse().expect("test data"));
        e.local_port = port;
        w.add(&e);
    }
}

/// `drops` overflow drops on a listener, reported in lines of `per_line`.
fn overflows(
    w: &mut Window,
    pid: Option<u32>,
    comm: &str,
    port: u16,
    (backlog, queued): (u32, u32),
    drops: u64,
    per_line: u64,
) {
    let mut left = drops;
    while left > 0 {
        let n = left.min(per_line);
        let mut e = owned(EventKind::ListenOverflow, pid, comm);
        e.local_addr = Some("0.0.0.0".parse().expect("test data"));
        e.local_port = Some(port);
        e.backlog = Some(backlog);
        e.queued = Some(queued);
        e.count = Some(n);
        w.add(&e);
        left -= n;
    }
}

/// `n` RSTs sent from `port` with `reason` (None: the kernel gave none).
fn rsts_sent(
    w: &mut Window,
    pid: Option<u32>,
    comm: &str,
    port: u16,
    reason: Option<&str>,
    n: u64,
) {
    for i in 0..n {
        let mut e = owned(EventKind::RstSent, pid, comm);
        e.local_addr = Some("10.0.0.1".parse().expect("test data"));
        e.local_port = Some(port);
        e.remote_addr = Some("10.0.0.2".parse().expect("test data"));
        e.remote_port = Some(40000 + (i % 20000) as u16);
        e.state = Some(Some("ESTABLISHED".into()));
        e.reason = Some(reason.map(Into::into));
        w.add(&e);
    }
}

fn rsts_received(w: &mut Window, pid: Option<u32>, comm: &str, n: u64) {
    for i in 0..n {
        let mut e = owned(EventKind::RstReceived, pid, comm);
        e.local_addr = Some("10.0.0.1".parse().expect("test data"));
        e.local_port = Some(50000 + (i % 10000) as u16);
        e.remote_addr = Some("10.0.0.9".parse().expect("test data"));
        e.remote_port = Some(443);
        e.state = Some(Some("ESTABLISHED".into()));
        w.add(&e);
    }
}

fn proc_view(comm: &str, fd_count: u32, fd_limit: Option<u64>) -> ProcView {
    ProcView {
        comm: comm.into(),
        fd_count,
        fd_limit,
    }
}

fn listener(
    pid: Option<u32>,
    comm: Option<&str>,
    port: u16,
    backlog: u32,
    queued: u32,
) -> ListenerView {
    ListenerView {
        pid,
        comm: comm.map(str::to_string),
        netns: NETNS,
        port,
        backlog,
        queued,
    }
}

fn kinds(found: &[Finding]) -> Vec<(Kind, Option<u32>)> {
    found.iter().map(|f| (f.kind, f.pid)).collect()
}

fn reasons(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(r, n)| (r.to_string(), *n)).collect()
}

// ---------------------------------------------------------------------------
// (a) The production story.

/// pid 4242 (api): out of fds, accept() failing with EMFILE on :2133, its
/// accept queue full, thousands of CLOSE_WAIT sockets and the kernel
/// resetting its clients; pid 77 (worker) merely sees some peer resets.
fn production() -> (Window, HostView) {
    let mut w = Window::default();
    // Interleave the kinds, as a real window would.
    accept_failures(
        &mut w,
        4242,
        "api",
        Some(2133),
        "EMFILE",
        1000,
        (10240, 10240),
    );
    overflows(&mut w, Some(4242), "api", 2133, (128, 129), 300, 100);
    rsts_sent(&mut w, Some(4242), "api", 2133, Some("NOT_SPECIFIED"), 3000);
    rsts_received(&mut w, Some(77), "worker", 15);
    accept_failures(
        &mut w,
        4242,
        "api",
        Some(2133),
        "EMFILE",
        811,
        (10240, 10240),
    );
    overflows(&mut w, Some(4242), "api", 2133, (128, 129), 200, 50);
    rsts_sent(
        &mut w,
        Some(4242),
        "api",
        2133,
        Some("TCP_ABORT_ON_CLOSE"),
        220,
    );

    let mut host = HostView::default();
    host.processes
        .insert(4242, proc_view("api", 10240, Some(10240)));
    host.processes
        .insert(77, proc_view("worker", 31, Some(1024)));
    host.processes
        .insert(1, proc_view("systemd", 120, Some(524288)));
    host.listeners
        .push(listener(Some(4242), Some("api"), 2133, 128, 129));
    host.listeners
        .push(listener(Some(1), Some("systemd"), 22, 128, 0));
    host.close_wait.insert(4242, (9702, Some(2820.0)));
    host.close_wait.insert(77, (2, Some(3.0)));
    (w, host)
}

#[test]
fn production_story_window_counters() {
    let (w, _) = production();
    assert_eq!(
        w.counters,
        Counters {
            rst_sent: 3220,
            rst_received: 15,
            accept_failed: 1811,
            listen_overflow: 500,
            lost: 0,
        }
    );
    let g = &w.accept_failed[&(Some(4242), Some(2133), "EMFILE".to_string())];
    assert_eq!(
        *g,
        AcceptGroup {
            comm: Some("api".into()),
            count: 1811,
            fd_count: Some(10240),
            fd_limit: Some(10240),
        }
    );
    assert_eq!(
        w.overflows[&(Some(NETNS), 2133)],
        OverflowGroup {
            pid: Some(4242),
            comm: Some("api".into()),
            drops: 500,
            backlog: 128,
            queued: 129,
        }
    );
    assert_eq!(
        w.rst_sent[&(Some(4242), RstPort::Local(2133))].reasons,
        reasons(&[("NOT_SPECIFIED", 3000), ("TCP_ABORT_ON_CLOSE", 220)])
    );
    assert_eq!(w.rst_received[&Some(77)], (Some("worker".into()), 15));
}

#[test]
fn production_story_findings() {
    let (w, host) = production();
    let found = findings(&w, &host);
    assert_eq!(
        kinds(&found),
        vec![
            (Kind::FdExhaustion, Some(4242)),
            (Kind::AcceptQueueOverflow, Some(4242)),
            (Kind::CloseWaitPileup, Some(4242)),
            (Kind::RstStorm, Some(4242)),
            (Kind::PeerResets, Some(77)),
        ],
        "{found:#?}"
    );

    let mut fd = Finding::new(Kind::FdExhaustion, Some(4242), Some("api".into()));
    fd.summary = "pid 4242 (api) holds 10,240 of 10,240 file descriptors; \
                  1,811 accept() calls failed with EMFILE on :2133"
        .into();
    fd.fd_count = Some(10240);
    fd.fd_limit = Some(10240);
    fd.accept_emfile = Some(1811);
    fd.local_port = Some(2133);
    assert_eq!(found[0], fd);

    let mut q = Finding::new(Kind::AcceptQueueOverflow, Some(4242), Some("api".into()));
    q.summary = "the accept queue of :2133 (pid 4242 (api)) is full (129/128): \
                 500 connection attempts dropped"
        .into();
    q.local_port = Some(2133);
    q.backlog = Some(128);
    q.queued = Some(129);
    q.overflows = Some(500);
    assert_eq!(found[1], q);

    let mut cw = Finding::new(Kind::CloseWaitPileup, Some(4242), Some("api".into()));
    cw.summary = "9,702 of its sockets are in CLOSE_WAIT, the oldest for 47 min: \
                  the peers closed and the process never did"
        .into();
    cw.count = Some(9702);
    cw.oldest_s = Some(2820.0);
    assert_eq!(found[2], cw);

    let mut rst = Finding::new(Kind::RstStorm, Some(4242), Some("api".into()));
    rst.summary =
        "3,220 RSTs were sent from :2133 (NOT_SPECIFIED 3,000, TCP_ABORT_ON_CLOSE 220)".into();
    rst.local_port = Some(2133);
    rst.count = Some(3220);
    rst.reasons = Some(reasons(&[
        ("NOT_SPECIFIED", 3000),
        ("TCP_ABORT_ON_CLOSE", 220),
    ]));
    assert_eq!(found[3], rst);

    let mut peer = Finding::new(Kind::PeerResets, Some(77), Some("worker".into()));
    peer.summary = "15 of its connections were reset by their peers".into();
    peer.count = Some(15);
    assert_eq!(found[4], peer);
}

#[test]
fn unrelated_process_comes_after_the_root_cause_whatever_its_volume() {
    let (mut w, host) = production();
    // pid 77 now sees far more resets than 4242 has failures of any kind.
    rsts_received(&mut w, Some(77), "worker", 20_000);
    // And a third process sends a storm of resets from its own port.
    rsts_sent(&mut w, Some(900), "proxy", 8443, Some("NO_SOCKET"), 50_000);
    let found = findings(&w, &host);
    let order = kinds(&found);
    let last_4242 = order
        .iter()
        .rposition(|(_, p)| *p == Some(4242))
        .expect("test data");
    assert_eq!(last_4242, 3, "{order:?}");
    assert!(
        order[..4].iter().all(|(_, p)| *p == Some(4242)),
        "{order:?}"
    );
    assert_eq!(
        order[4..],
        [(Kind::RstStorm, Some(900)), (Kind::PeerResets, Some(77))],
        "{order:?}"
    );
    assert_eq!(found[5].count, Some(20_015));
}

#[test]
fn production_story_narrative() {
    let (w, host) = production();
    let rep = Report::new(30.04, &w.counters, findings(&w, &host));
    assert_eq!(rep.verdict, "unhealthy");
    let text = narrative(&rep);
    // Everything up to pid 77's paragraph, exactly.
    let head = "Observed 30.0 s: 3,220 RSTs sent, 15 received, 1,811 failed accepts, \
         500 connection attempts dropped by full accept queues.\n\
         \n\
         Clients of :2133 see \"connection reset by peer\" (3,220 RSTs), \
         connection attempts that hang and time out (500 dropped), \
         connections that are never served (1,811 accept() calls failed).\n\
         Most likely cause: pid 4242 (api) has run out of file descriptors.\n\
         \n\
         - pid 4242 (api) holds 10,240 of 10,240 file descriptors; \
         1,811 accept() calls failed with EMFILE on :2133; \
         9,702 of its sockets are in CLOSE_WAIT, the oldest for 47 min: the peers closed and the process never did; \
         then: the accept queue of :2133 (pid 4242 (api)) is full (129/128): 500 connection attempts dropped; \
         3,220 RSTs were sent from :2133 (NOT_SPECIFIED 3,000, TCP_ABORT_ON_CLOSE 220).\n\
         - ";
    assert!(text.starts_with(head), "{text}");
    // pid 77's own paragraph (see `narrative_names_every_process`).
    assert!(
        text.ends_with("15 of its connections were reset by their peers.\n"),
        "{text}"
    );
    assert_eq!(text.lines().filter(|l| l.starts_with("- ")).count(), 2);
}

/// Every paragraph of the narrative is about one process and should say
/// which: today only the first finding kinds' summaries name it, so a
/// process whose findings are CLOSE_WAIT or peer resets only gets
/// "- 15 of its connections were reset by their peers." (whose?).
#[test]
fn narrative_names_every_process() {
    let (w, host) = production();
    let text = narrative(&Report::new(30.0, &w.counters, findings(&w, &host)));
    for para in text.lines().filter(|l| l.starts_with("- ")) {
        assert!(para.contains("pid "), "paragraph names no process: {para}");
    }
}

// ---------------------------------------------------------------------------
// (b) A healthy host.

#[test]
fn empty_window_and_host_is_healthy() {
    let w = Window::default();
    let host = HostView::default();
    let found = findings(&w, &host);
    assert!(found.is_empty(), "{found:#?}");
    let rep = Report::new(30.0, &w.counters, found);
    assert_eq!(rep.verdict, "healthy");
    let text = narrative(&rep);
    assert!(text.contains("Healthy"), "{text}");
    assert!(!text.contains("Most likely cause"), "{text}");
    assert!(!text.contains("Warning"), "{text}");
    assert!(
        text.starts_with(
            "Observed 30.0 s: 0 RSTs sent, 0 received, 0 failed accepts, \
             0 connection attempts dropped by full accept queues.\n"
        ),
        "{text}"
    );
}

#[test]
fn busy_but_healthy_host_has_no_findings() {
    let mut w = Window::default();
    // A few of everything, each below its threshold.
    rsts_sent(&mut w, Some(10), "nginx", 80, Some("NO_SOCKET"), 9);
    rsts_received(&mut w, Some(10), "nginx", 9);
    let mut host = HostView::default();
    host.processes
        .insert(10, proc_view("nginx", 200, Some(1024)));
    // No limit known (unlimited / unreadable): never pressure.
    host.processes.insert(11, proc_view("init", 5000, None));
    // A limit of 0 must not divide into a finding.
    host.processes.insert(12, proc_view("odd", 0, Some(0)));
    // Queue exactly at its backlog is not over it.
    host.listeners
        .push(listener(Some(10), Some("nginx"), 80, 511, 511));
    host.close_wait.insert(10, (9, Some(1.0)));
    let found = findings(&w, &host);
    assert!(found.is_empty(), "{found:#?}");
    let rep = Report::new(5.0, &w.counters, found);
    assert_eq!(rep.verdict, "healthy");
    assert!(narrative(&rep).contains("Healthy"));
}

#[test]
fn lost_events_warn_in_the_narrative() {
    let mut w = Window::default();
    let mut e = Event::new(EventKind::Lost, TS.into());
    e.count = Some(1234);
    w.add(&e);
    assert_eq!(w.counters.lost, 1234);
    let rep = Report::new(1.0, &w.counters, findings(&w, &HostView::default()));
    let text = narrative(&rep);
    assert!(
        text.contains(
            "Warning: 1,234 events were lost (ring buffer full); counts are lower bounds."
        ),
        "{text}"
    );
    assert!(text.contains("Healthy"), "{text}");
}

// ---------------------------------------------------------------------------
// (c) Thresholds.

fn close_wait_host(n: u64) -> HostView {
    let mut host = HostView::default();
    host.processes.insert(300, proc_view("app", 40, Some(1024)));
    host.close_wait.insert(300, (n, None));
    host
}

#[test]
fn close_wait_threshold() {
    let w = Window::default();
    assert_eq!(CLOSE_WAIT_MIN, 10);
    assert!(findings(&w, &close_wait_host(9)).is_empty());
    let found = findings(&w, &close_wait_host(10));
    assert_eq!(kinds(&found), vec![(Kind::CloseWaitPileup, Some(300))]);
    let f = &found[0];
    assert_eq!(f.count, Some(10));
    assert_eq!(f.oldest_s, None);
    assert_eq!(f.comm.as_deref(), Some("app"));
    // No age known: the summary says nothing about it.
    assert_eq!(
        f.summary,
        "10 of its sockets are in CLOSE_WAIT: the peers closed and the process never did"
    );
}

#[test]
fn rst_storm_threshold() {
    assert_eq!(RST_STORM_MIN, 10);
    let host = HostView::default();
    let mut w = Window::default();
    rsts_sent(&mut w, Some(5), "srv", 8080, Some("NO_SOCKET"), 9);
    assert!(findings(&w, &host).is_empty());
    rsts_sent(&mut w, Some(5), "srv", 8080, Some("NO_SOCKET"), 1);
    let found = findings(&w, &host);
    assert_eq!(kinds(&found), vec![(Kind::RstStorm, Some(5))]);
    assert_eq!(found[0].count, Some(10));
    // Per port: 9 on each of two ports is no storm anywhere.
    let mut w = Window::default();
    rsts_sent(&mut w, Some(5), "srv", 8080, Some("NO_SOCKET"), 9);
    rsts_sent(&mut w, Some(5), "srv", 8081, Some("NO_SOCKET"), 9);
    assert!(findings(&w, &host).is_empty());
}

#[test]
fn peer_resets_threshold() {
    assert_eq!(PEER_RESETS_MIN, 10);
    let host = HostView::default();
    let mut w = Window::default();
    rsts_received(&mut w, Some(6), "client", 9);
    assert!(findings(&w, &host).is_empty());
    rsts_received(&mut w, Some(6), "client", 1);
    assert_eq!(
        kinds(&findings(&w, &host)),
        vec![(Kind::PeerResets, Some(6))]
    );
    // Resets received on sockets nobody owns blame nobody.
    let mut w = Window::default();
    rsts_received(&mut w, None, "", 50);
    assert!(findings(&w, &host).is_empty());
}

#[test]
fn fd_pressure_threshold() {
    assert_eq!(FD_PRESSURE_PERCENT, 90);
    let w = Window::default();
    let mut host = HostView::default();
    host.processes.insert(8, proc_view("svc", 89, Some(100)));
    assert!(findings(&w, &host).is_empty());
    host.processes.insert(8, proc_view("svc", 90, Some(100)));
    assert_eq!(
        kinds(&findings(&w, &host)),
        vec![(Kind::FdExhaustion, Some(8))]
    );
}

// ---------------------------------------------------------------------------
// (d) fd pressure without EMFILE.

#[test]
fn fd_pressure_without_emfile() {
    let w = Window::default();
    let mut host = HostView::default();
    host.processes.insert(31, proc_view("cache", 95, Some(100)));
    host.listeners
        .push(listener(Some(31), Some("cache"), 6379, 511, 0));
    let found = findings(&w, &host);
    let mut want = Finding::new(Kind::FdExhaustion, Some(31), Some("cache".into()));
    want.summary = "pid 31 (cache) holds 95 of 100 file descriptors".into();
    want.fd_count = Some(95);
    want.fd_limit = Some(100);
    want.accept_emfile = Some(0);
    // The starved listener: the one it owns.
    want.local_port = Some(6379);
    assert_eq!(found, vec![want]);

    // Without a listener of its own, no port.
    let mut host = HostView::default();
    host.processes.insert(31, proc_view("cache", 95, Some(100)));
    host.listeners.push(listener(None, None, 6379, 511, 0));
    let found = findings(&w, &host);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].accept_emfile, Some(0));
    assert_eq!(found[0].local_port, None);
}

#[test]
fn emfile_from_events_alone() {
    // The process exited before the final snapshot: the events' own fd
    // numbers and comm tell the story.
    let mut w = Window::default();
    accept_failures(&mut w, 55, "gone", Some(9000), "EMFILE", 3, (64, 64));
    // Other errors are no fd exhaustion.
    let mut e = owned(EventKind::AcceptFailed, Some(55), "gone");
    e.errno = Some(libc::ECONNABORTED);
    e.error = Some("ECONNABORTED".into());
    e.local_port = Some(9000);
    w.add(&e);
    assert_eq!(w.counters.accept_failed, 4);
    let found = findings(&w, &HostView::default());
    assert_eq!(kinds(&found), vec![(Kind::FdExhaustion, Some(55))]);
    assert_eq!(
        found[0].summary,
        "pid 55 (gone) holds 64 of 64 file descriptors; 3 accept() calls failed with EMFILE on :9000"
    );
    assert_eq!(found[0].accept_emfile, Some(3));
    assert_eq!(found[0].fd_count, Some(64));
    assert_eq!(found[0].fd_limit, Some(64));
}

#[test]
fn emfile_port_is_the_listener_that_failed_most() {
    let mut w = Window::default();
    accept_failures(&mut w, 9, "multi", Some(80), "EMFILE", 4, (1024, 1024));
    accept_failures(&mut w, 9, "multi", Some(443), "EMFILE", 7, (1024, 1024));
    let found = findings(&w, &HostView::default());
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].accept_emfile, Some(11));
    assert_eq!(found[0].local_port, Some(443));
    assert!(
        found[0]
            .summary
            .ends_with("11 accept() calls failed with EMFILE on :443")
    );
}

// ---------------------------------------------------------------------------
// (e) RSTs nobody owns.

#[test]
fn rsts_from_a_port_nobody_listens_on() {
    let mut w = Window::default();
    rsts_sent(&mut w, None, "", 1, Some("NO_SOCKET"), 12);
    let found = findings(&w, &HostView::default());
    assert_eq!(kinds(&found), vec![(Kind::RstStorm, None)]);
    let f = &found[0];
    assert_eq!(f.comm, None);
    assert_eq!(f.local_port, Some(1));
    assert_eq!(f.count, Some(12));
    assert_eq!(f.reasons, Some(reasons(&[("NO_SOCKET", 12)])));
    assert!(f.summary.contains("nothing listens"), "{}", f.summary);
    assert_eq!(
        f.summary,
        "12 RSTs were sent from :1 (NO_SOCKET 12); no process owns that port: nothing listens there"
    );
    let rep = Report::new(2.0, &w.counters, found);
    assert!(
        narrative(&rep).contains("Most likely cause: no single process is resetting its clients."),
        "{}",
        narrative(&rep)
    );
}

#[test]
fn rst_reasons_unknown_and_ordered_by_count() {
    let mut w = Window::default();
    rsts_sent(&mut w, Some(3), "srv", 443, None, 5);
    rsts_sent(&mut w, Some(3), "srv", 443, Some("TCP_ABORT_ON_DATA"), 5);
    rsts_sent(&mut w, Some(3), "srv", 443, Some("NOT_SPECIFIED"), 1);
    let found = findings(&w, &HostView::default());
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0].reasons,
        Some(reasons(&[
            ("NOT_SPECIFIED", 1),
            ("TCP_ABORT_ON_DATA", 5),
            ("UNKNOWN", 5)
        ]))
    );
    // Most frequent first, ties by name.
    assert_eq!(
        found[0].summary,
        "11 RSTs were sent from :443 (TCP_ABORT_ON_DATA 5, UNKNOWN 5, NOT_SPECIFIED 1)"
    );
}

// ---------------------------------------------------------------------------
// Accept queue overflow.

#[test]
fn overflow_listener_gone_uses_the_events() {
    let mut w = Window::default();
    overflows(&mut w, Some(12), "web", 8080, (64, 65), 40, 7);
    let found = findings(&w, &HostView::default());
    let mut want = Finding::new(Kind::AcceptQueueOverflow, Some(12), Some("web".into()));
    want.summary =
        "the accept queue of :8080 (pid 12 (web)) is full (65/64): 40 connection attempts dropped"
            .into();
    want.local_port = Some(8080);
    want.backlog = Some(64);
    want.queued = Some(65);
    want.overflows = Some(40);
    assert_eq!(found, vec![want]);
}

#[test]
fn full_queue_now_without_drops_in_the_window() {
    let mut host = HostView::default();
    host.processes.insert(13, proc_view("slow", 20, Some(1024)));
    host.listeners
        .push(listener(Some(13), Some("slow"), 5432, 16, 17));
    let found = findings(&Window::default(), &host);
    let mut want = Finding::new(Kind::AcceptQueueOverflow, Some(13), Some("slow".into()));
    want.summary = "the accept queue of :5432 (pid 13 (slow)) is full (17/16)".into();
    want.local_port = Some(5432);
    want.backlog = Some(16);
    want.queued = Some(17);
    want.overflows = Some(0);
    assert_eq!(found, vec![want]);

    // Drops seen in the window for the same listener: one finding, not two.
    let mut w = Window::default();
    overflows(&mut w, Some(13), "slow", 5432, (16, 17), 3, 3);
    let found = findings(&w, &host);
    assert_eq!(kinds(&found), vec![(Kind::AcceptQueueOverflow, Some(13))]);
    assert_eq!(found[0].overflows, Some(3));
}

// ---------------------------------------------------------------------------
// Ordering between processes.

#[test]
fn processes_ordered_by_their_most_fundamental_finding() {
    let mut w = Window::default();
    // pid 2: only CLOSE_WAIT (huge); pid 3: a full accept queue (small);
    // pid 4: resets only.
    overflows(&mut w, Some(3), "q", 7000, (8, 9), 2, 2);
    rsts_sent(&mut w, Some(4), "r", 7001, Some("NO_SOCKET"), 100);
    let mut host = HostView::default();
    host.close_wait.insert(2, (100_000, None));
    let found = findings(&w, &host);
    assert_eq!(
        kinds(&found),
        vec![
            (Kind::AcceptQueueOverflow, Some(3)),
            (Kind::CloseWaitPileup, Some(2)),
            (Kind::RstStorm, Some(4)),
        ]
    );
    // Same kind: the larger one first.
    let mut host = HostView::default();
    host.close_wait.insert(2, (10, None));
    host.close_wait.insert(5, (500, None));
    let found = findings(&w, &host);
    assert_eq!(
        kinds(&found),
        vec![
            (Kind::AcceptQueueOverflow, Some(3)),
            (Kind::CloseWaitPileup, Some(5)),
            (Kind::CloseWaitPileup, Some(2)),
            (Kind::RstStorm, Some(4)),
        ]
    );
}

/// A process at 90 % of its fds with nothing failing is a condition; another
/// process's real drops (or resets) are harm, and come first.
#[test]
fn real_failures_outrank_conditions() {
    let mut w = Window::default();
    overflows(&mut w, Some(3), "q", 7000, (8, 9), 5, 5);
    rsts_sent(&mut w, Some(4), "r", 7001, Some("NO_SOCKET"), 20);
    let mut host = HostView::default();
    host.processes.insert(2, proc_view("near", 950, Some(1000)));
    host.listeners
        .push(listener(Some(6), Some("full"), 7002, 4, 5));
    let found = findings(&w, &host);
    assert_eq!(
        kinds(&found),
        vec![
            (Kind::AcceptQueueOverflow, Some(3)),
            (Kind::RstStorm, Some(4)),
            (Kind::FdExhaustion, Some(2)),
            (Kind::AcceptQueueOverflow, Some(6)),
        ]
    );
    // Once its accepts fail, fd exhaustion is the root cause again.
    accept_failures(&mut w, 2, "near", Some(7003), "EMFILE", 1, (1000, 1000));
    assert_eq!(
        kinds(&findings(&w, &host))[0],
        (Kind::FdExhaustion, Some(2))
    );
}

/// ENFILE (the host's file table is full) is a failure too: counted in
/// `accept_emfile`, and ranked as one.
#[test]
fn enfile_only_failures_are_failures() {
    let mut w = Window::default();
    accept_failures(&mut w, 2, "starved", Some(80), "ENFILE", 7, (100, 1000));
    overflows(&mut w, Some(3), "q", 7000, (8, 9), 50, 50);
    let found = findings(&w, &HostView::default());
    assert_eq!(
        kinds(&found),
        vec![
            (Kind::FdExhaustion, Some(2)),
            (Kind::AcceptQueueOverflow, Some(3)),
        ]
    );
    assert_eq!(found[0].accept_emfile, Some(7));
    assert!(found[0].summary.contains("ENFILE"), "{}", found[0].summary);
}

// ---------------------------------------------------------------------------
// (f) The JSON report.

#[test]
fn report_json_shape() {
    let (w, host) = production();
    let rep = Report::new(6.04, &w.counters, findings(&w, &host));
    let v: serde_json::Value = serde_json::to_value(&rep).expect("test data");
    let obj = v.as_object().expect("test data");
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["counters", "findings", "v", "verdict", "window_s"]);
    assert_eq!(v["v"], 1);
    assert_eq!(v["window_s"], 6.0);
    assert_eq!(v["verdict"], "unhealthy");
    assert_eq!(
        v["counters"],
        serde_json::json!({
            "rst_sent": 3220, "rst_received": 15, "accept_failed": 1811,
            "listen_overflow": 500, "lost": 0
        })
    );
    let f = v["findings"].as_array().expect("test data");
    let kinds: Vec<&str> = f
        .iter()
        .map(|f| f["kind"].as_str().expect("test data"))
        .collect();
    assert_eq!(
        kinds,
        [
            "fd_exhaustion",
            "accept_queue_overflow",
            "close_wait_pileup",
            "rst_storm",
            "peer_resets"
        ]
    );
    assert_eq!(
        f[0],
        serde_json::json!({
            "kind": "fd_exhaustion", "pid": 4242, "comm": "api",
            "summary": "pid 4242 (api) holds 10,240 of 10,240 file descriptors; 1,811 accept() calls failed with EMFILE on :2133",
            "fd_count": 10240, "fd_limit": 10240, "accept_emfile": 1811, "local_port": 2133
        })
    );
    assert_eq!(
        f[1],
        serde_json::json!({
            "kind": "accept_queue_overflow", "pid": 4242, "comm": "api",
            "summary": "the accept queue of :2133 (pid 4242 (api)) is full (129/128): 500 connection attempts dropped",
            "local_port": 2133, "backlog": 128, "queued": 129, "overflows": 500
        })
    );
    assert_eq!(f[2]["count"], 9702);
    assert_eq!(f[2]["oldest_s"], 2820.0);
    assert_eq!(
        f[3]["reasons"],
        serde_json::json!({"NOT_SPECIFIED": 3000, "TCP_ABORT_ON_CLOSE": 220})
    );
    assert_eq!(f[3]["local_port"], 2133);
    assert_eq!(f[3]["count"], 3220);
    // Absent evidence is left out, not null.
    assert_eq!(
        f[4],
        serde_json::json!({
            "kind": "peer_resets", "pid": 77, "comm": "worker",
            "summary": "15 of its connections were reset by their peers", "count": 15
        })
    );
}

#[test]
fn report_json_healthy_and_unknown_owner() {
    let rep = Report::new(2.0, &Counters::default(), Vec::new());
    assert_eq!(
        serde_json::to_string(&rep).expect("test data"),
        r#"{"v":1,"window_s":2.0,"counters":{"rst_sent":0,"rst_received":0,"accept_failed":0,"listen_overflow":0,"lost":0},"verdict":"healthy","findings":[]}"#
    );
    let mut w = Window::default();
    rsts_sent(&mut w, None, "", 1, Some("NO_SOCKET"), 10);
    let rep = Report::new(2.0, &w.counters, findings(&w, &HostView::default()));
    let v = serde_json::to_value(&rep).expect("test data");
    // pid and comm are always present, null when unknown.
    assert_eq!(v["findings"][0]["pid"], serde_json::Value::Null);
    assert_eq!(v["findings"][0]["comm"], serde_json::Value::Null);
    assert!(
        v["findings"][0]
            .as_object()
            .expect("test data")
            .contains_key("pid")
    );
    assert!(
        v["findings"][0]
            .as_object()
            .expect("test data")
            .contains_key("comm")
    );
}

// ---------------------------------------------------------------------------
// Words.

#[test]
fn thousands_separators() {
    assert_eq!(thousands(0), "0");
    assert_eq!(thousands(7), "7");
    assert_eq!(thousands(999), "999");
    assert_eq!(thousands(1000), "1,000");
    assert_eq!(thousands(1811), "1,811");
    assert_eq!(thousands(10240), "10,240");
    assert_eq!(thousands(100000), "100,000");
    assert_eq!(thousands(1234567), "1,234,567");
    assert_eq!(thousands(u64::MAX), "18,446,744,073,709,551,615");
}

#[test]
fn durations_in_words() {
    assert_eq!(duration_words(0.0), "0 s");
    assert_eq!(duration_words(0.4), "0 s");
    assert_eq!(duration_words(6.0), "6 s");
    assert_eq!(duration_words(59.5), "60 s");
    assert_eq!(duration_words(119.0), "119 s");
    assert_eq!(duration_words(120.0), "2 min");
    assert_eq!(duration_words(2820.0), "47 min");
    assert_eq!(duration_words(7199.0), "120 min");
    assert_eq!(duration_words(7200.0), "2.0 h");
    assert_eq!(duration_words(9000.0), "2.5 h");
    assert_eq!(duration_words(86400.0 * 3.0), "72.0 h");
}

// ---------------------------------------------------------------------------
// Problems found by these tests, fixed.

/// A process that merely uses 1,000 of 1,024 fds, with no failure at all,
/// is ranked above the one whose accept() calls actually fail with EMFILE:
/// within a kind, `magnitude` compares a failure count (491) with an fd
/// count (1,000).
#[test]
fn failing_accepts_outrank_mere_fd_pressure() {
    let mut w = Window::default();
    accept_failures(&mut w, 100, "server", Some(2133), "EMFILE", 491, (64, 64));
    let mut host = HostView::default();
    host.processes
        .insert(100, proc_view("server", 64, Some(64)));
    host.processes
        .insert(200, proc_view("bigdb", 1000, Some(1024)));
    let found = findings(&w, &host);
    assert_eq!(
        kinds(&found),
        vec![
            (Kind::FdExhaustion, Some(100)),
            (Kind::FdExhaustion, Some(200)),
        ]
    );
}

/// ENFILE is the system-wide file table, not the process's limit: the
/// summary must not say EMFILE, nor blame a process holding 10 of 1,024.
#[test]
fn enfile_is_not_told_as_emfile() {
    let mut w = Window::default();
    accept_failures(&mut w, 100, "server", Some(2133), "ENFILE", 5, (10, 1024));
    let found = findings(&w, &HostView::default());
    for f in &found {
        assert!(!f.summary.contains("EMFILE"), "{}", f.summary);
    }
}

/// `--port` limits the verdict to that port's story: findings on other
/// ports go, and CLOSE_WAIT stays only for a process with a finding or a
/// listener on the port.
#[test]
fn scope_by_port_keeps_that_ports_story() {
    let (w, host) = production();
    let all = findings(&w, &host);
    let kept = scope(all.clone(), &[], &[2133], &host);
    assert!(!kept.is_empty());
    for f in &kept {
        assert_eq!(f.pid, Some(4242), "{f:?}");
    }
    assert!(kept.iter().any(|f| f.kind == Kind::CloseWaitPileup));
    assert!(scope(all.clone(), &[], &[59999], &host).is_empty());
    // --pid alone.
    let only77 = scope(all.clone(), &[77], &[], &host);
    assert_eq!(kinds(&only77), vec![(Kind::PeerResets, Some(77))]);
    // No filters: unchanged.
    assert_eq!(scope(all.clone(), &[], &[], &host), all);
}

/// CLOSE_WAIT sockets that predate tracer have no known age: the finding
/// says "at least" and leaves `oldest_s` out.
#[test]
fn close_wait_age_that_predates_tracer_is_a_lower_bound() {
    let (w, mut host) = production();
    host.close_wait_at_least.insert(4242);
    let found = findings(&w, &host);
    let cw = found
        .iter()
        .find(|f| f.kind == Kind::CloseWaitPileup)
        .expect("close_wait finding");
    assert_eq!(cw.oldest_s, None);
    assert_eq!(cw.oldest_at_least_s, Some(2820.0));
    assert!(
        cw.summary.contains("the oldest for at least 47 min"),
        "{}",
        cw.summary
    );
    let json = serde_json::to_value(cw).expect("test data");
    assert!(json.get("oldest_s").is_none());
    assert_eq!(json["oldest_at_least_s"], 2820.0);
}
