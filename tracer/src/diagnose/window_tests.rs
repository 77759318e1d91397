//! Storm lines (`count` > 1) weigh in the window as the resets they stand
//! for, exactly as the same resets one line each would.

use super::*;
use crate::diagnose::findings::{HostView, findings};
use crate::diagnose::model::Kind;
use crate::event::{AttributedBy, Endpoint, Owner};

fn rst(kind: EventKind, count: Option<u64>) -> Event {
    let mut e = Event::new(kind, "2024-05-01T12:34:56.789012345Z".into());
    e.set_owner(
        Some(&Owner {
            pid: 5,
            comm: b"srv".to_vec(),
            thread: Vec::new(),
            cgroup: None,
        }),
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
