//! Needs root. Issue 12's incident with a real pool, end to end: a service
//! (tests/scenarios/pooled_service.py, comm "api", 64 fds) whose handlers
//! each take one of 2 pooled persistent connections to an upstream (comm
//! "slowdb") that answers each request after 300 ms, and impatient clients
//! (1 s timeout), all started before tracer in a private network namespace.
//! `tracer diagnose` must name the upstream (port, 2 connections, its pid
//! and comm) and classify the CLOSE_WAIT sockets exactly as `ss` shows
//! them. A healthy pool (8 connections, 5 ms upstream, light load) gets no
//! finding at all.
//!
//! `watch --summary-every` carries the same finding, and `--metrics-addr`
//! the upstream's gauges and exchange-time histogram.
//!
//! Run: `cargo xtask test -- --test upstream_e2e` (as root).

mod common;
mod ecosystem_common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{Netns, Proc, Tracer, require_root};
use ecosystem_common::{free_port, http_get};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/scenarios/pooled_service.py"
);
const PORT: u16 = 2133;
const UP_PORT: u16 = 5432;

fn start(ns: &Netns, label: &str, args: &[&str]) -> Proc {
    let mut full = vec![SCRIPT];
    full.extend_from_slice(args);
    let p = Proc::spawn(label, ns.command("python3", &full));
    let line = p.line_within(common::scaled(Duration::from_secs(10)));
    assert_eq!(line, "ready", "{label}: {}", p.stderr());
    p
}

/// The upstream (answering after `delay_ms`), the service with `pool`
/// connections to it and `nofile` fds, and clients (`load`: seconds,
/// threads, timeout), all in `ns`.
fn scenario(ns: &Netns, delay_ms: &str, pool: &str, nofile: &str, load: [&str; 3]) -> [Proc; 3] {
    let up = start(
        ns,
        "upstream",
        &["upstream", &UP_PORT.to_string(), delay_ms],
    );
    let service = start(
        ns,
        "service",
        &[
            "service",
            &PORT.to_string(),
            &UP_PORT.to_string(),
            pool,
            nofile,
        ],
    );
    let mut args = vec![SCRIPT, "clients"];
    let port = PORT.to_string();
    args.push(&port);
    args.extend_from_slice(&load);
    let clients = Proc::spawn("clients", ns.command("python3", &args));
    [up, service, clients]
}

/// `name:N` in an `ss -i` line (0 when ss leaves it out, as it does zeros).
fn ss_field(line: &str, name: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(name)?.strip_prefix(':')?.parse().ok())
        .unwrap_or(0)
}

/// (count, unread, unanswered, answered) of the service's CLOSE_WAIT
/// sockets as `ss -tnie` shows them (sockets with an inode: accepted),
/// by the rule docs/schema.md states.
fn ss_classes(ns: &Netns) -> (u64, u64, u64, u64) {
    let out = ns.stdout(
        "ss",
        &[
            "-tnieH",
            "state",
            "close-wait",
            "sport",
            "=",
            &format!(":{PORT}"),
        ],
    );
    // ss prints a socket's -i details on indented lines after its own.
    let mut sockets: Vec<String> = Vec::new();
    for l in out.lines().filter(|l| !l.trim().is_empty()) {
        match sockets.last_mut() {
            Some(last) if l.starts_with(char::is_whitespace) => {
                last.push(' ');
                last.push_str(l.trim());
            }
            _ => sockets.push(l.to_string()),
        }
    }
    let (mut n, mut unread, mut unanswered, mut answered) = (0, 0, 0, 0);
    for line in &sockets {
        if ss_field(line, "ino") == 0 {
            continue;
        }
        n += 1;
        let recv_q: u64 = line
            .split_whitespace()
            .next()
            .and_then(|w| w.parse().ok())
            .expect("Recv-Q");
        let data = ss_field(line, "bytes_received").saturating_sub(1);
        let sent = ss_field(line, "bytes_sent");
        if recv_q > 1 || data == 0 {
            unread += 1;
        } else if sent == 0 || ss_field(line, "lastsnd") > ss_field(line, "lastrcv") {
            unanswered += 1;
        } else {
            answered += 1;
        }
    }
    (n, unread, unanswered, answered)
}

#[test]
fn diagnose_names_the_stuck_handlers_and_the_pool_they_wait_on() {
    if !require_root("diagnose_names_the_stuck_handlers_and_the_pool_they_wait_on") {
        return;
    }
    let ns = Netns::new();
    // Load for 7 s: the pool serves ~7 requests a second, 40 clients ask
    // for far more and give up after 1 s.
    let delay_ms = 300;
    let [mut up, service, clients] =
        scenario(&ns, &delay_ms.to_string(), "2", "64", ["7.0", "40", "1.0"]);
    std::thread::sleep(Duration::from_secs(2));
    let html = std::env::temp_dir().join(format!("upstream-report-{}.html", std::process::id()));
    let html_arg = html.display().to_string();
    let tracer = Tracer::start(&[
        "diagnose",
        "--duration",
        "9",
        "--format",
        "json",
        "--report",
        &html_arg,
    ]);
    // The clients stop; once their last timeouts are over, the upstream
    // stalls so that nothing moves any more: the end snapshot and `ss`
    // below see the same sockets.
    let done = clients.line_within(common::scaled(Duration::from_secs(20)));
    assert!(
        done.starts_with("done"),
        "clients: {done} {}",
        clients.stderr()
    );
    std::thread::sleep(common::scaled(Duration::from_millis(1500)));
    up.send("stall");
    up.expect_line("stalled");
    let stopped = tracer.wait_exit(common::scaled(Duration::from_secs(30)));
    let (n, unread, unanswered, answered) = ss_classes(&ns);
    let r = stopped.report();
    let findings = r["findings"].as_array().expect("findings");
    let of = |kind: &str| -> Vec<&Value> {
        findings
            .iter()
            .filter(|f| f["kind"] == kind && f["pid"] == service.id())
            .collect()
    };
    eprintln!(
        "upstream_e2e: {done}; ss: {n} CLOSE_WAIT, {unread} unread, {unanswered} unanswered, {answered} answered\n{r}"
    );

    let up_f = of("upstream_saturation");
    assert_eq!(up_f.len(), 1, "{r}");
    let u = up_f[0];
    assert_eq!(u["remote_addr"], "127.0.0.1", "{u}");
    assert_eq!(u["remote_port"], UP_PORT, "{u}");
    assert_eq!(u["connections"], 2, "{u}");
    assert_eq!(u["peer_pid"], up.id(), "{u}");
    assert_eq!(u["peer_comm"], "slowdb", "{u}");
    assert_eq!(u["comm"], "api", "{u}");
    let busy = u["busy_ratio"].as_f64().expect("busy_ratio");
    assert!((0.8..=1.0).contains(&busy), "{u}");
    // 300 ms lies in the [262, 328) ms bucket.
    assert_eq!(u["exchange_ms_p50"], 294.9, "{u}");
    assert!(u["waiting"].as_u64().expect("waiting") >= 1, "{u}");

    let cw = of("close_wait_pileup");
    assert_eq!(cw.len(), 1, "{r}");
    let cw = cw[0];
    assert_eq!(cw["count"], n, "{cw}");
    assert_eq!(cw["unread"], unread, "{cw}");
    assert_eq!(cw["unanswered"], unanswered, "{cw}");
    assert_eq!(cw["answered"], answered, "{cw}");
    assert!(unanswered >= 1, "{cw}");

    // The story in order: the process's fds, what the stuck sockets are,
    // the upstream they wait on.
    let kinds: Vec<&str> = findings
        .iter()
        .filter(|f| f["pid"] == service.id())
        .filter_map(|f| f["kind"].as_str())
        .collect();
    let pos = |k: &str| kinds.iter().position(|x| *x == k);
    assert!(
        pos("close_wait_pileup") < pos("upstream_saturation"),
        "{kinds:?}"
    );
    assert_eq!(findings[0]["pid"], service.id(), "{r}");

    // The report charts the pool: its busy share and time per exchange.
    let page = std::fs::read_to_string(&html).expect("the --report file");
    let _ = std::fs::remove_file(&html);
    for title in [
        "share of time with a request outstanding",
        "Time per exchange with its upstreams",
    ] {
        assert!(page.contains(title), "no chart {title:?} in the report");
    }
    // (Drawn only when seconds of the pool's exchanges were sampled.)
    assert!(
        page.contains(r#"<polyline class="busy""#),
        "no busy-share line"
    );
}

#[test]
fn a_healthy_pool_gets_no_finding() {
    if !require_root("a_healthy_pool_gets_no_finding") {
        return;
    }
    let ns = Netns::new();
    let [up, service, clients] = scenario(&ns, "5", "8", "1024", ["6.0", "4", "2.0"]);
    std::thread::sleep(Duration::from_secs(1));
    let (sp, upp) = (service.id().to_string(), up.id().to_string());
    let tracer = Tracer::start(&[
        "diagnose",
        "--duration",
        "4",
        "--format",
        "json",
        "--pid",
        &sp,
        "--pid",
        &upp,
    ]);
    let stopped = tracer.wait_exit(common::scaled(Duration::from_secs(30)));
    let done = clients.line_within(common::scaled(Duration::from_secs(20)));
    let r = stopped.report();
    eprintln!("upstream_e2e healthy: {done}\n{r}");
    let ok: u64 = done
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ok=")?.parse().ok())
        .expect("ok=N");
    assert!(ok >= 100, "the load must be real: {done}");
    assert!(done.ends_with("failed=0"), "{done}");
    assert_eq!(r["findings"], Value::Array(vec![]), "{r}");
    assert_eq!(r["verdict"], "healthy", "{r}");
}

/// The value of the metric line that starts with `name{` and holds every
/// one of `labels`; `None` when there is none.
fn metric(body: &str, name: &str, labels: &[&str]) -> Option<f64> {
    body.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .find_map(|l| l.rsplit_once(' ')?.1.parse().ok())
}

#[test]
fn summaries_and_metrics_carry_the_upstream() {
    if !require_root("summaries_and_metrics_carry_the_upstream") {
        return;
    }
    let ns = Netns::new();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port())
        .parse()
        .expect("address");
    let tracer = Tracer::watch_json(&["--summary-every", "4", "--metrics-addr", &addr.to_string()]);
    let [up, service, clients] = scenario(&ns, "300", "2", "64", ["14.0", "40", "1.0"]);
    let remote = format!("remote=\"127.0.0.1:{UP_PORT}\"");
    let comm = "comm=\"api\"";
    // Scrape while the load runs: 2 connections, busy, 300 ms exchanges.
    let deadline = Instant::now() + common::scaled(Duration::from_secs(12));
    let mut seen = (None, None, None);
    let mut body = String::new();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        let (status, head, b) = http_get(addr, "/metrics");
        assert_eq!(status, 200, "{head}");
        body = b;
        let labels = [remote.as_str(), comm];
        seen = (
            metric(&body, "tracer_upstream_connections", &labels),
            metric(&body, "tracer_upstream_busy_ratio", &labels),
            metric(&body, "tracer_upstream_exchange_seconds_count", &labels),
        );
        if seen.0 == Some(2.0) && seen.1.is_some_and(|b| b >= 0.8) && seen.2 >= Some(10.0) {
            break;
        }
    }
    // A summary whose window lies within the load names the pool.
    let names_pool = |f: &Value| f["kind"] == "upstream_saturation" && f["pid"] == service.id();
    let named = tracer.wait_for(common::scaled(Duration::from_secs(20)), |ev| {
        ev.iter()
            .filter(|e| e["event"] == "summary")
            .filter_map(|e| e["findings"].as_array())
            .flatten()
            .any(names_pool)
    });
    let done = clients.line_within(common::scaled(Duration::from_secs(20)));
    let lines = tracer.stop();
    let (conns, busy, count) = seen;
    assert_eq!(conns, Some(2.0), "{body}");
    assert!(busy.is_some_and(|b| (0.8..=1.0).contains(&b)), "{body}");
    assert!(count >= Some(10.0), "{body}");
    // 300 ms exchanges: none under 0.262144 s, all under 0.524288 s.
    let bucket = |le: &str| {
        metric(
            &body,
            "tracer_upstream_exchange_seconds_bucket",
            &[&format!("le=\"{le}\""), remote.as_str(), comm],
        )
    };
    assert_eq!(bucket("0.262144"), Some(0.0), "{body}");
    assert_eq!(bucket("0.524288"), count, "{body}");

    let events = lines.events();
    let finding = events
        .iter()
        .filter(|e| e["event"] == "summary")
        .filter_map(|e| e["findings"].as_array())
        .flatten()
        .find(|f| names_pool(f));
    let (true, Some(u)) = (named, finding) else {
        panic!(
            "no summary names the upstream ({done}): {}",
            common::dump(&events)
        );
    };
    assert_eq!(u["remote_port"], UP_PORT, "{u}");
    assert_eq!(u["connections"], 2, "{u}");
    assert_eq!(u["peer_pid"], up.id(), "{u}");
    assert_eq!(u["peer_comm"], "slowdb", "{u}");
}
