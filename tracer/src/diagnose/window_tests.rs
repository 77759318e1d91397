//! Storm lines (`count` > 1) weigh in the window as the resets they stand
//! for, exactly as the same resets one line each would.

use super::*;
use crate::diagnose::findings::{HostView, findings};
use crate::diagnose::model::Kind;
use crate::event::{AttributedBy, Endpoint, Owner};

fn rst(kind: EventKind, count: Option<u64>) -> Event {
    let mut e = Event::new(kind, "2024-05-01T12:34:56.789012345Z".into());
    e.set_owner(
        Some(&Owner::new(5, b"srv".to_vec(), Vec::new(), None)),
        AttributedBy::SocketOwner,
    );
    e.local_port = Some(8080);
    e.reason = Some(Some("NO_SOCKET".into()));
    e.count = count;
    e.remote_sample = count.map(|_| {
        vec![Endpoint {
            addr: "10.0.0.2".into(),
            port: 40000,
        }]
    });
    e
}

#[test]
fn storm_lines_weigh_by_count() {
    let mut one_each = Window::default();
    for _ in 0..5000 {
        one_each.add(&rst(EventKind::RstSent, None));
    }
    let mut aggregated = Window::default();
    for _ in 0..100 {
        aggregated.add(&rst(EventKind::RstSent, None));
    }
    aggregated.add(&rst(EventKind::RstSent, Some(4900)));
    aggregated.add(&rst(EventKind::RstReceived, Some(30)));
    assert_eq!(aggregated.counters.rst_sent, 5000);
    assert_eq!(aggregated.counters.rst_received, 30);
    assert_eq!(aggregated.rst_sent, one_each.rst_sent);
    assert_eq!(aggregated.rst_received.get(&Some(5)).map(|g| g.1), Some(30));

    let host = HostView::default();
    let found = findings(&aggregated, &host);
    let storm = found
        .iter()
        .find(|f| f.kind == Kind::RstStorm)
        .expect("an rst_storm finding");
    assert_eq!(storm.count, Some(5000));
    assert_eq!(
        storm
            .reasons
            .as_ref()
            .and_then(|r| r.get("NO_SOCKET"))
            .copied(),
        Some(5000)
    );
    // A single storm line is a storm by itself.
    let mut w = Window::default();
    w.add(&rst(EventKind::RstSent, Some(40)));
    assert!(findings(&w, &host).iter().any(|f| f.kind == Kind::RstStorm));
}

#[test]
fn resets_of_connections_made_are_grouped_by_the_port_they_went_to() {
    // A client aborting its connections to :5432: storm lines keyed by the
    // remote port carry local_sample and the first reset's local port,
    // which says nothing (a new one per connection).
    let aborts = |local_port: u16, count: u64| {
        let mut e = rst(EventKind::RstSent, Some(count));
        e.remote_sample = None;
        e.local_sample = Some(vec![Endpoint {
            addr: "10.0.0.1".into(),
            port: local_port,
        }]);
        e.local_port = Some(local_port);
        e.remote_port = Some(5432);
        e.reason = Some(Some("TCP_STATE".into()));
        e
    };
    let mut w = Window::default();
    w.add(&aborts(48604, 950));
    w.add(&aborts(46304, 900));
    // A refused connect's reset, in SYN_SENT: its local port says nothing.
    let mut refused = rst(EventKind::RstSent, None);
    refused.state = Some(Some("SYN_SENT".into()));
    refused.local_port = Some(40001);
    refused.remote_port = Some(5432);
    w.add(&refused);
    assert_eq!(w.counters.rst_sent, 1851);
    assert_eq!(w.rst_sent.len(), 1, "{:?}", w.rst_sent);
    assert_eq!(w.rst_sent[&(Some(5), RstPort::Remote(5432))].count, 1851);

    let found = findings(&w, &HostView::default());
    let storm = found
        .iter()
        .find(|f| f.kind == Kind::RstStorm)
        .expect("an rst_storm finding");
    assert_eq!(storm.remote_port, Some(5432));
    assert_eq!(storm.local_port, None);
    assert_eq!(storm.count, Some(1851));
    assert!(
        storm
            .summary
            .starts_with("1,851 RSTs were sent on its connections to :5432"),
        "{}",
        storm.summary
    );
}

/// One reset a client (pid 5) sent on an established connection it made
/// from `local_port` to :5432: a single line, the kernel's word that the
/// peer is the service set.
fn client_abort(local_port: u16) -> Event {
    let mut e = rst(EventKind::RstSent, None);
    e.state = Some(Some("ESTABLISHED".into()));
    e.local_port = Some(local_port);
    e.remote_port = Some(5432);
    e.reason = Some(Some("TCP_STATE".into()));
    e.peer_is_service = true;
    e
}

#[test]
fn a_client_abort_storms_single_lines_join_its_storm_lines() {
    // Past the threshold the kernel counts: a storm line keyed by :5432.
    let mut storm_line = client_abort(48604);
    storm_line.count = Some(900);
    storm_line.local_sample = Some(vec![Endpoint {
        addr: "10.0.0.1".into(),
        port: 48604,
    }]);
    let mut w = Window::default();
    // Below it: single lines, each from another ephemeral port, fewer than
    // the finding's threshold on any one of them.
    for i in 0..100 {
        w.add(&client_abort(40000 + i));
    }
    w.add(&storm_line);
    assert_eq!(w.rst_sent.len(), 1, "{:?}", w.rst_sent.keys());
    assert_eq!(w.rst_sent[&(Some(5), RstPort::Remote(5432))].count, 1000);

    let found = findings(&w, &HostView::default());
    let storm = found
        .iter()
        .find(|f| f.kind == Kind::RstStorm)
        .expect("an rst_storm finding");
    assert_eq!(storm.remote_port, Some(5432));
    assert_eq!(storm.count, Some(1000));
    // `--port 5432` keeps it (its process listens on nothing there).
    let host = HostView::default();
    let kept = crate::diagnose::findings::scope(found.clone(), &[], &[5432], &host);
    assert!(kept.iter().any(|f| f.kind == Kind::RstStorm), "{kept:?}");
    let other = crate::diagnose::findings::scope(found, &[], &[8080], &host);
    assert!(!other.iter().any(|f| f.kind == Kind::RstStorm), "{other:?}");
}

#[test]
fn a_services_resets_stay_by_its_local_port() {
    // A server (flag clear) resetting its clients' connections to :8080,
    // established, from many remote ports.
    let mut w = Window::default();
    for i in 0..20 {
        let mut e = rst(EventKind::RstSent, None);
        e.state = Some(Some("ESTABLISHED".into()));
        e.remote_port = Some(40000 + i);
        w.add(&e);
    }
    assert_eq!(w.rst_sent.len(), 1, "{:?}", w.rst_sent.keys());
    assert_eq!(w.rst_sent[&(Some(5), RstPort::Local(8080))].count, 20);
    // Without the flag, only SYN_SENT names the remote port.
    let mut refused = rst(EventKind::RstSent, None);
    refused.state = Some(Some("SYN_SENT".into()));
    refused.remote_port = Some(5432);
    assert_eq!(RstPort::of(&refused), RstPort::Remote(5432));
}
