//! Needs root. `watch --metrics-addr`: the real binary in the host namespace,
//! resets, a full accept queue, failed accepts and CLOSE_WAIT sockets made in
//! a private network namespace; the endpoint is scraped over TCP, the body
//! checked by Prometheus's own `promtool check metrics` (Debian package
//! `prometheus`, installed by `cargo xtask setup`), and the counters compared
//! with the event lines printed.
//!
//! Run: `cargo test -p tracer --test ecosystem_metrics` (as root).

mod common;
mod ecosystem_common;

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{Netns, Tracer, dump, in_netns, require_root};
use ecosystem_common::{TRAFFIC, done_fields, free_port, http_get, which};

/// One sample: name, labels, value.
type Sample = (String, HashMap<String, String>, f64);

/// Parses the sample lines of the text format (label values without `,`
/// or `}` inside, which holds for what this test generates).
fn samples(body: &str) -> Vec<Sample> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("sample has a value");
            let value: f64 = value.parse().expect("numeric value");
            match series.split_once('{') {
                Some((name, rest)) => {
                    let labels = rest
                        .trim_end_matches('}')
                        .split("\",")
                        .filter(|kv| !kv.is_empty())
                        .map(|kv| {
                            let (k, v) = kv.split_once("=\"").expect("k=\"v\"");
                            (k.to_string(), v.trim_end_matches('"').to_string())
                        })
                        .collect();
                    (name.to_string(), labels, value)
                }
                None => (series.to_string(), HashMap::new(), value),
            }
        })
        .collect()
}

/// Sum of the samples of `name` whose labels include every `want` pair.
fn sum(s: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    s.iter()
        .filter(|(n, l, _)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

fn count_events(events: &[Value], kind: &str, port: u64) -> u64 {
    events
        .iter()
        .filter(|e| e["event"] == kind && e["local_port"] == port)
        .map(|e| {
            if kind == "rst_sent" {
                1
            } else {
                e["count"].as_u64().unwrap_or(0)
            }
        })
        .sum()
}

/// `promtool check metrics` on `body`: Ok, or its complaints.
fn promtool_check(promtool: &std::path::Path, body: &str) -> Result<(), String> {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().expect("promtool output");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[test]
fn metrics_endpoint_counts_what_was_printed() {
    if !require_root("metrics_endpoint_counts_what_was_printed") {
        return;
    }
    let Some(promtool) = which("promtool") else {
        eprintln!(
            "metrics_endpoint_counts_what_was_printed: skipped, `promtool` not found \
             (Debian package `prometheus`; `cargo xtask setup` installs it)"
        );
        return;
    };
    let ns = Netns::new();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    // Fixed ports in the private namespace, and tracer filtering on them: a
    // storm elsewhere on the host cannot crowd these events out.
    let ports = ["7101", "7102", "7103", "7104", "7105"];
    let mut args = vec!["--metrics-addr".to_string(), addr.to_string()];
    for p in ports {
        args.extend(["--port".to_string(), p.to_string()]);
    }
    let tracer = Tracer::watch_json(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let mut traffic = ns.python("traffic", TRAFFIC, &[]);
    let pid: u64 = traffic.line().trim().parse().expect("pid");
    traffic.send("limit 300");
    traffic.line();

    traffic.send("abort 7 7101");
    let abort_port = done_fields(&traffic.line())[0];
    traffic.send("closed 3 7102");
    let closed_port = done_fields(&traffic.line())[0];
    traffic.send("emfile 5 7103");
    let f = done_fields(&traffic.line());
    let (emfile_port, failed) = (f[0], f[1]);
    assert_eq!(failed, 5, "the accepts must fail with EMFILE");
    traffic.send("overflow 1 6 7104");
    let overflow_port = done_fields(&traffic.line())[0];
    traffic.send("close_wait 4 7105");
    traffic.line();

    let seen = tracer.wait_for(Duration::from_secs(15), |ev| {
        count_events(ev, "rst_sent", abort_port) >= 7
            && count_events(ev, "rst_sent", closed_port) >= 3
            && count_events(ev, "accept_failed", emfile_port) >= 5
            && count_events(ev, "listen_overflow", overflow_port) >= 1
    });
    assert!(
        seen,
        "events in the namespace:\n{}",
        dump(&in_netns(&tracer.events(), ns.inode()))
    );

    // Scrape until the gauges are in and the counters match the lines
    // printed so far (both move while events arrive).
    let deadline = Instant::now() + Duration::from_secs(15);
    let (body, events) = loop {
        let (status, head, body) = http_get(addr, "/metrics");
        assert_eq!(status, 200, "{head}");
        assert!(
            head.contains("Content-Type: text/plain; version=0.0.4"),
            "{head}"
        );
        let events = tracer.events();
        let s = samples(&body);
        let pid_s = pid.to_string();
        let ok = sum(
            &s,
            "tracer_rst_sent_total",
            &[("local_port", &abort_port.to_string())],
        ) == count_events(&events, "rst_sent", abort_port) as f64
            && sum(&s, "tracer_process_close_wait_sockets", &[("pid", &pid_s)]) == 4.0
            && sum(&s, "tracer_process_fd_limit", &[("pid", &pid_s)]) == 300.0;
        if ok || Instant::now() >= deadline {
            break (body, events);
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    if let Err(e) = promtool_check(&promtool, &body) {
        panic!("promtool check metrics failed: {e}\nbody:\n{body}");
    }
    let s = samples(&body);
    let port = |p: u64| p.to_string();
    let pid_s = pid.to_string();
    assert_eq!(
        sum(
            &s,
            "tracer_rst_sent_total",
            &[("local_port", &port(abort_port)), ("comm", "python3")]
        ),
        count_events(&events, "rst_sent", abort_port) as f64,
        "{body}\nevents:\n{}",
        dump(&events)
    );
    assert_eq!(count_events(&events, "rst_sent", abort_port), 7);
    assert_eq!(
        sum(
            &s,
            "tracer_rst_sent_total",
            &[("local_port", &port(closed_port)), ("reason", "NO_SOCKET")]
        ),
        count_events(&events, "rst_sent", closed_port) as f64,
        "{body}"
    );
    assert_eq!(
        sum(
            &s,
            "tracer_accept_failures_total",
            &[
                ("error", "EMFILE"),
                ("local_port", &port(emfile_port)),
                ("comm", "python3")
            ]
        ),
        5.0,
        "{body}"
    );
    assert_eq!(
        sum(
            &s,
            "tracer_listen_overflows_total",
            &[("local_port", &port(overflow_port)), ("comm", "python3")]
        ),
        count_events(&events, "listen_overflow", overflow_port) as f64,
        "{body}"
    );
    assert_eq!(
        sum(
            &s,
            "tracer_process_close_wait_sockets",
            &[("pid", &pid_s), ("comm", "python3")]
        ),
        4.0,
        "{body}"
    );
    assert_eq!(
        sum(&s, "tracer_process_fd_limit", &[("pid", &pid_s)]),
        300.0,
        "{body}"
    );
    assert!(
        sum(&s, "tracer_process_open_fds", &[("pid", &pid_s)]) >= 4.0,
        "{body}"
    );
    assert!(body.contains("\ntracer_lost_events_total "), "{body}");

    // Anything but /metrics is 404.
    let (status, _, _) = http_get(addr, "/");
    assert_eq!(status, 404);
    drop(traffic);
    let stopped = tracer.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
}

#[test]
fn a_taken_metrics_port_fails_at_start_with_one_line() {
    // The port is bound before anything is attached: no root needed.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(common::tracer_bin())
        .args(["watch", "--metrics-addr", &addr, "--duration", "1"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen on {addr} for --metrics-addr")),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    // Bad usage is exit 2.
    let out = Command::new(common::tracer_bin())
        .args(["watch", "--metrics-addr", "not-an-address"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
