use super::*;
use crate::event::{AttributedBy, Owner};
use crate::metrics::procs::Row;

const TS: &str = "2024-05-01T12:34:56.789012345Z";

fn ev(kind: EventKind, pid: u32, comm: &str, port: u16) -> Event {
    let mut e = Event::new(kind, TS.into());
    e.set_owner(
        Some(&Owner::new(pid, comm.as_bytes().to_vec(), Vec::new(), None)),
        AttributedBy::SocketOwner,
    );
    e.local_port = Some(port);
    e
}

/// The sample lines of the text format, without comments.
fn samples(m: &Metrics) -> Vec<String> {
    m.encode()
        .expect("test data")
        .lines()
        .filter(|l| !l.starts_with('#') && *l != "tracer_lost_events_total 0")
        .map(str::to_string)
        .collect()
}

#[test]
fn events_become_counters() {
    let m = Metrics::new();
    let mut rst = ev(EventKind::RstSent, 7, "nginx", 8080);
    rst.reason = Some(Some("NO_SOCKET".into()));
    m.observe(&rst);
    m.observe(&rst);
    let mut old_kernel = ev(EventKind::RstSent, 7, "nginx", 8080);
    old_kernel.reason = Some(None);
    m.observe(&old_kernel);
    let mut client = ev(EventKind::RstReceived, 8, "curl", 40000);
    client.remote_port = Some(443);
    m.observe(&client);
    let mut acc = ev(EventKind::AcceptFailed, 9, "java", 9000);
    acc.error = Some("EMFILE".into());
    acc.count = Some(41);
    m.observe(&acc);
    let mut ovf = ev(EventKind::ListenOverflow, 9, "java", 9000);
    ovf.count = Some(3);
    m.observe(&ovf);
    let mut lost = Event::new(EventKind::Lost, TS.into());
    lost.count = Some(5);
    m.observe(&lost);
    m.observe(&ev(EventKind::StateChange, 9, "java", 9000));
    let mut unowned = Event::new(EventKind::RstReceived, TS.into());
    unowned.local_port = Some(22);
    m.observe(&unowned);

    let mut got = samples(&m);
    got.sort();
    let mut want = vec![
        r#"tracer_rst_sent_total{local_port="8080",reason="NO_SOCKET",comm="nginx"} 2"#,
        r#"tracer_rst_sent_total{local_port="8080",reason="unknown",comm="nginx"} 1"#,
        r#"tracer_rst_received_total{port="443",comm="curl"} 1"#,
        r#"tracer_rst_received_total{port="22",comm="unknown"} 1"#,
        r#"tracer_accept_failures_total{error="EMFILE",local_port="9000",comm="java"} 41"#,
        r#"tracer_listen_overflows_total{local_port="9000",comm="java"} 3"#,
        "tracer_lost_events_total 5",
    ];
    want.sort();
    assert_eq!(got, want);
    // Every metric with samples is described (families without any are
    // left out by the encoder).
    let text = m.encode().expect("test data");
    for name in [
        "tracer_rst_sent_total",
        "tracer_rst_received_total",
        "tracer_accept_failures_total",
        "tracer_listen_overflows_total",
        "tracer_lost_events_total",
    ] {
        assert!(text.contains(&format!("# HELP {name} ")), "{name}: {text}");
        assert!(text.contains(&format!("# TYPE {name} ")), "{name}: {text}");
    }
}

#[test]
fn label_sets_past_the_cap_fold_into_other() {
    let m = Metrics::with_cap(3);
    for port in 1..=10u16 {
        let mut e = ev(
            EventKind::RstSent,
            u32::from(port),
            &format!("p{port}"),
            port,
        );
        e.reason = Some(Some("NO_SOCKET".into()));
        m.observe(&e);
    }
    // Seen ones keep counting on their own series.
    let mut e = ev(EventKind::RstSent, 1, "p1", 1);
    e.reason = Some(Some("NO_SOCKET".into()));
    m.observe(&e);
    let got = samples(&m);
    assert_eq!(got.len(), 4, "{got:?}");
    assert!(got.contains(
        &r#"tracer_rst_sent_total{local_port="1",reason="NO_SOCKET",comm="p1"} 2"#.to_string()
    ));
    assert!(
        got.contains(
            &r#"tracer_rst_sent_total{local_port="other",reason="NO_SOCKET",comm="other"} 7"#
                .to_string()
        )
    );
}

#[test]
fn awkward_process_names_are_escaped() {
    let m = Metrics::new();
    m.observe(&ev(EventKind::RstReceived, 1, "a\"b\\c\nd", 80));
    let got = samples(&m);
    assert_eq!(
        got,
        vec![r#"tracer_rst_received_total{port="80",comm="a\"b\\c\nd"} 1"#.to_string()]
    );
}

#[test]
fn process_gauges_are_replaced_whole() {
    let m = Metrics::new();
    let row = |pid: u32, fds, limit, cw| Row {
        labels: ProcLabels {
            pid: pid.to_string(),
            comm: format!("p{pid}"),
        },
        fds,
        fd_limit: limit,
        close_wait: cw,
    };
    m.apply(
        vec![row(1, Some(10), Some(1024), 0), row(2, None, None, 12)],
        &[],
    );
    let mut got = samples(&m);
    got.sort();
    assert_eq!(
        got,
        vec![
            r#"tracer_process_close_wait_sockets{pid="1",comm="p1"} 0"#,
            r#"tracer_process_close_wait_sockets{pid="2",comm="p2"} 12"#,
            r#"tracer_process_fd_limit{pid="1",comm="p1"} 1024"#,
            r#"tracer_process_open_fds{pid="1",comm="p1"} 10"#,
        ]
    );
    // A process gone at the next refresh leaves no series behind.
    m.apply(vec![row(2, Some(3), None, 0)], &[1]);
    let mut got = samples(&m);
    got.sort();
    assert_eq!(
        got,
        vec![
            r#"tracer_process_close_wait_sockets{pid="2",comm="p2"} 0"#,
            r#"tracer_process_open_fds{pid="2",comm="p2"} 3"#,
        ]
    );
}

#[test]
fn tracked_pids_come_from_events() {
    struct Fake;
    impl crate::attribute::procs::ProcSource for Fake {
        fn process(&self, pid: u32) -> Option<crate::snapshot::ProcessInfo> {
            (pid == 7).then(|| crate::snapshot::ProcessInfo {
                pid,
                comm: b"nginx".to_vec(),
                cgroup: None,
                fd_count: 0,
                fd_limit: Some(64),
            })
        }
    }
    let cw = std::collections::HashMap::from([(7, 4)]);
    let (rows, gone) = procs::read_rows(&[7, 8], &cw, &Fake);
    assert_eq!(gone, vec![8]);
    assert_eq!(
        rows,
        vec![Row {
            labels: ProcLabels {
                pid: "7".into(),
                comm: "nginx".into()
            },
            fds: None,
            fd_limit: Some(64),
            close_wait: 4,
        }]
    );
}

#[test]
fn service_port_is_the_non_ephemeral_end() {
    use super::service_port;
    // A client's reset: its own port is ephemeral, the server's is not.
    assert_eq!(service_port(Some(40000), Some(443)), Some(443));
    // A server's: its own port.
    assert_eq!(service_port(Some(8080), Some(51000)), Some(8080));
    // Both ephemeral or both not: the local port.
    assert_eq!(service_port(Some(40000), Some(50000)), Some(40000));
    assert_eq!(service_port(Some(22), Some(80)), Some(22));
    assert_eq!(service_port(None, Some(80)), Some(80));
    assert_eq!(service_port(None, None), None);
}

#[test]
fn storm_lines_count_their_resets() {
    let m = Metrics::new();
    let mut one = ev(EventKind::RstSent, 7, "nginx", 8080);
    one.reason = Some(Some("NO_SOCKET".into()));
    m.observe(&one);
    let mut storm = one.clone();
    storm.count = Some(4999);
    m.observe(&storm);
    let mut recv = ev(EventKind::RstReceived, 8, "curl", 40000);
    recv.remote_port = Some(443);
    recv.count = Some(70);
    m.observe(&recv);
    let got = samples(&m);
    assert!(
        got.contains(
            &r#"tracer_rst_sent_total{local_port="8080",reason="NO_SOCKET",comm="nginx"} 5000"#
                .to_string()
        ),
        "{got:?}"
    );
    assert!(
        got.contains(&r#"tracer_rst_received_total{port="443",comm="curl"} 70"#.to_string()),
        "{got:?}"
    );
}
