use super::*;
use crate::diagnose::model::{Finding, Kind, ListenerView, ProcView};
use crate::diagnose::timeline::Gauge;
use crate::diagnose::window::Counters;

fn fixture() -> (Report, Timeline, HostView, Meta) {
    let mut f = Finding::new(Kind::FdExhaustion, Some(42), Some("api<b>".into()));
    f.summary = "pid 42 (api<b>) holds 64 of 64 fds".into();
    f.fd_count = Some(64);
    f.fd_limit = Some(64);
    f.local_port = Some(2133);
    let counters = Counters {
        accept_failed: 9,
        ..Default::default()
    };
    let r = Report::new(5.0, &counters, vec![f]);
    let mut t = Timeline::new(0);
    t.seed(
        42,
        "api<b>",
        Gauge {
            fds: Some(20),
            fd_limit: Some(64),
            close_wait: 0,
        },
    );
    for s in 1..5u64 {
        t.sample(
            42,
            s * 1_000_000_000,
            Gauge {
                fds: Some(20 + 11 * s as u32),
                fd_limit: Some(64),
                close_wait: 4 * s as u32,
            },
        );
    }
    t.finish(5);
    let mut host = HostView::default();
    host.processes.insert(
        42,
        ProcView {
            comm: "api<b>".into(),
            fd_count: 64,
            fd_limit: Some(64),
        },
    );
    host.listeners.push(ListenerView {
        pid: Some(42),
        comm: Some("api<b>".into()),
        netns: 4026531840,
        port: 2133,
        backlog: 8,
        queued: 9,
    });
    let meta = Meta {
        host: "web-1".into(),
        kernel: "6.1.0-57-amd64".into(),
        version: "0.1.0",
        command: "tracer diagnose --report r.html".into(),
        started: "2026-12-01T10:00:00Z".into(),
    };
    (r, t, host, meta)
}

#[test]
fn the_page_is_self_contained_and_tells_the_story() {
    let (r, t, host, meta) = fixture();
    let page = render(&r, &t, &host, &meta);
    for banned in [
        "http://", "https://", "<script", "src=", "@import", "url(", "<link",
    ] {
        assert!(!page.contains(banned), "{banned} in the page");
    }
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.contains("pid 42 (api&lt;b&gt;)"), "{page}");
    assert!(!page.contains("api<b>"), "unescaped name");
    assert!(page.contains("File descriptors held (limit 64)"));
    assert!(page.contains("fd limit reached"), "marker");
    // Every chart has one point per second of the window.
    let points: Vec<&str> = page
        .match_indices("data-points=\"")
        .map(|(i, _)| &page[i + 13..i + 14])
        .collect();
    assert_eq!(
        points.len(),
        6,
        "fds, CLOSE_WAIT, 2 accept lines, 2 RST lines"
    );
    assert!(points.iter().all(|p| *p == "5"), "{points:?}");
    assert!(page.contains(":2133"));
    assert!(page.contains("Processes near their fd limit"));
    assert!(page.contains("tracer diagnose --report r.html"));
    assert!(page.contains("6.1.0-57-amd64"));
}

#[test]
fn a_healthy_window_has_no_timeline() {
    let (_, t, host, meta) = fixture();
    let r = Report::new(5.0, &Counters::default(), vec![]);
    let page = render(&r, &t, &host, &meta);
    assert!(page.contains("verdict healthy"));
    assert!(!page.contains("<svg"));
}
