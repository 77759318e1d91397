use super::*;
use crate::event::{Event, EventKind};

const S: u64 = 1_000_000_000;

fn ev(kind: EventKind, pid: u32, count: Option<u64>) -> Event {
    let mut e = Event::new(kind, Default::default());
    e.pid = Some(pid);
    e.comm = Some("api".into());
    e.count = count;
    e.local_port = Some(2133);
    if kind == EventKind::AcceptFailed {
        e.error = Some("EMFILE".into());
    }
    e
}

#[test]
fn events_land_in_their_second_and_gauges_in_theirs() {
    let mut t = Timeline::new(100 * S);
    t.seed(
        7,
        "api",
        Gauge {
            fds: Some(60),
            fd_limit: Some(64),
            close_wait: 3,
        },
    );
    t.add(&ev(EventKind::AcceptFailed, 7, Some(5)), 102 * S + 1);
    t.add(&ev(EventKind::AcceptFailed, 7, Some(2)), 102 * S + 9);
    t.add(&ev(EventKind::RstSent, 7, None), 100 * S);
    t.add(&ev(EventKind::ListenOverflow, 7, Some(4)), 103 * S);
    t.sample(
        7,
        101 * S,
        Gauge {
            fds: Some(64),
            fd_limit: Some(64),
            close_wait: 10,
        },
    );
    t.finish(5);
    let p = &t.procs[&7];
    assert_eq!(p.accept_failed, vec![0, 0, 7, 0, 0]);
    assert_eq!(p.overflow_drops, vec![0, 0, 0, 4, 0]);
    assert_eq!(p.rst_sent, vec![1, 0, 0, 0, 0]);
    assert_eq!(p.fds, vec![Some(60), Some(64), None, None, None]);
    assert_eq!(p.close_wait[..2], [Some(3), Some(10)]);
    assert_eq!(p.fd_limit, Some(64));
    assert_eq!(p.ports, vec![2133]);
    let marks: Vec<(usize, &str)> = p
        .markers
        .iter()
        .map(|m| (m.bucket, m.what.as_str()))
        .collect();
    assert_eq!(
        marks,
        vec![
            (2, "first EMFILE"),
            (3, "accept queue of :2133 full"),
            (1, "fd limit reached")
        ]
    );
}

#[test]
fn late_events_join_the_last_second_and_short_series_are_padded() {
    let mut t = Timeline::new(0);
    t.add(&ev(EventKind::RstReceived, 1, None), 3 * S);
    t.add(&ev(EventKind::RstReceived, 1, None), 4 * S);
    t.finish(3);
    assert_eq!(t.procs[&1].rst_received, vec![0, 0, 2]);
    assert_eq!(t.procs[&1].fds, vec![None, None, None]);
    assert_eq!(t.buckets, 3);
}

#[test]
fn long_windows_stay_bounded() {
    let mut t = Timeline::new(0);
    for s in 0..(MAX_BUCKETS as u64 * 2 + 10) {
        t.add(&ev(EventKind::RstSent, 1, None), s * S);
    }
    assert_eq!(t.step_s, 4);
    let p = &t.procs[&1];
    assert!(p.rst_sent.len() <= MAX_BUCKETS, "{}", p.rst_sent.len());
    assert_eq!(p.rst_sent.iter().sum::<u64>(), MAX_BUCKETS as u64 * 2 + 10);
}

#[test]
fn at_most_max_procs_are_tracked() {
    let mut t = Timeline::new(0);
    for pid in 0..(MAX_PROCS as u32 + 5) {
        t.add(&ev(EventKind::RstSent, pid + 1, None), 0);
    }
    assert_eq!(t.tracked().len(), MAX_PROCS);
    assert!(!t.procs.contains_key(&(MAX_PROCS as u32 + 5)));
}

#[test]
fn a_process_charted_later_starts_where_it_stood_at_start() {
    let mut t = Timeline::new(0);
    t.remember_start(
        9,
        "api",
        Gauge {
            fds: Some(12),
            fd_limit: Some(64),
            close_wait: 1,
        },
    );
    t.add(&ev(EventKind::AcceptFailed, 9, Some(1)), 2 * S);
    t.finish(3);
    let p = &t.procs[&9];
    assert_eq!(p.fds, vec![Some(12), None, None]);
    assert_eq!(p.close_wait[0], Some(1));
    assert_eq!(p.fd_limit, Some(64));
    assert_eq!(p.comm.as_deref(), Some("api"));
}
