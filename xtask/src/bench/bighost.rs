//! The big host: what tracer costs when it attaches to a crowded server.
//! The crowd (`crowd.rs`: 128k loopback sockets with 3,000 in CLOSE_WAIT,
//! 300 processes with 200 fds each, 100 namespaces with a listener each)
//! is built in the bench namespace; then, side by side in each run:
//!
//! - `ss -tanp` in the crowded namespace (what an SRE runs instead);
//! - `tracer diagnose --duration W`: wall time, and how much beyond W;
//! - `tracer watch --format json`: exec to attached, exec to the first
//!   event (a closed-port connect every 5 ms runs throughout), idle CPU
//!   after it settled, peak RSS.

use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Read as _};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};

use super::Bench;
use super::crowd::Spec;
use super::first_event;
use super::observer::{Mode, Observer};
use super::sandbox::{self, Guarded};
use super::stats::range;

/// The median of a sample (0 when empty).
fn med(v: &[f64]) -> f64 {
    super::stats::median(v.to_vec()).unwrap_or(0.0)
}

/// Targets of issue 14.
const DIAGNOSE_BEYOND_S: f64 = 1.0;
const IDLE_CPU_PCT: f64 = 0.5;
const RSS_MIB: f64 = 48.0;
const FIRST_EVENT_S: f64 = 0.1;

/// One run's figures.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    pub ss_s: f64,
    pub diagnose_s: f64,
    pub attach_s: f64,
    pub first_event_s: f64,
    /// Exec to the first printed line's own timestamp: from when resets
    /// are seen (they are printed once every hook is in).
    pub first_seen_s: f64,
    pub idle_pct: f64,
    pub peak_rss_mib: f64,
}

pub struct Results {
    pub spec: Spec,
    pub window_s: f64,
    pub settle_s: u64,
    pub idle_s: u64,
    pub runs: Vec<Run>,
    /// What diagnose found (the crowd's CLOSE_WAIT, exactly).
    pub close_wait_seen: u64,
}

/// The crowd, alive while this lives (its stdin closes on drop).
struct Crowd {
    proc: Guarded,
}

impl Crowd {
    fn start(bench: &Bench, spec: &Spec) -> Result<Crowd> {
        let mut cmd = bench.ns.exec(&bench.generator)?;
        cmd.args(["bench", "crowd"])
            .args(spec.args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut proc = Guarded::spawn(&mut cmd)?;
        let stdout = proc
            .child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no stdout pipe"))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let started = Instant::now();
        loop {
            sandbox::check_interrupted()?;
            if let Ok(line) = rx.try_recv() {
                if line.starts_with("ready ") {
                    println!(
                        "bench: big host: {} ({:.1} s)",
                        line.trim(),
                        started.elapsed().as_secs_f64()
                    );
                    return Ok(Crowd { proc });
                }
                bail!("the crowd did not set up: {line:?}");
            }
            if let Some(status) = proc.try_wait()? {
                bail!("the crowd exited ({status}) while setting up");
            }
            if started.elapsed() > Duration::from_secs(300) {
                bail!("the crowd was not ready within 300 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Crowd {
    fn drop(&mut self) {
        drop(self.proc.child.stdin.take());
        let _ = self.proc.wait_for(Duration::from_secs(30));
    }
}

/// A closed-port connect every `every_ms` in the bench namespace, `count`
/// times (the generator `xtask bench pace`).
pub fn pace(every_ms: u64, count: u64) -> Result<()> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 9));
    for _ in 0..count {
        let _ = std::net::TcpStream::connect(addr);
        std::thread::sleep(Duration::from_millis(every_ms));
    }
    Ok(())
}

pub fn run(bench: &Bench, spec: Spec, runs: u32, window_s: f64, idle_s: u64) -> Result<Results> {
    let crowd = Crowd::start(bench, &spec)?;
    let settle_s = 35;
    let mut out = Results {
        spec,
        window_s,
        settle_s,
        idle_s,
        runs: Vec::new(),
        close_wait_seen: 0,
    };
    for run in 0..runs {
        let ss_s = time_ss(bench)?;
        let (diagnose_s, close_wait) = time_diagnose(bench, window_s)?;
        out.close_wait_seen = close_wait;
        let (attach_s, first_event_s, first_seen_s) = first_event::measure(bench)?;
        let (idle_pct, peak_rss_mib) = idle(bench, settle_s, idle_s)?;
        let r = Run {
            ss_s,
            diagnose_s,
            attach_s,
            first_event_s,
            first_seen_s,
            idle_pct,
            peak_rss_mib,
        };
        println!(
            "bench: big host run {}/{runs}: ss -tanp {:.2} s; diagnose {:.2} s for {window_s} s; attach {:.3} s, first event {:.3} s (seen at {:.3} s); idle {:.2} % CPU; peak RSS {:.1} MiB",
            run + 1,
            r.ss_s,
            r.diagnose_s,
            r.attach_s,
            r.first_event_s,
            r.first_seen_s,
            r.idle_pct,
            r.peak_rss_mib
        );
        out.runs.push(r);
    }
    drop(crowd);
    Ok(out)
}

fn time_ss(bench: &Bench) -> Result<f64> {
    let ss = crate::util::find_program("ss").ok_or_else(|| anyhow!("ss not found"))?;
    let mut cmd = bench.ns.exec(&ss)?;
    cmd.arg("-tanp")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let t = Instant::now();
    let status = Guarded::spawn(&mut cmd)?.wait_for(Duration::from_secs(300))?;
    if !status.success() {
        bail!("ss -tanp failed ({status})");
    }
    Ok(t.elapsed().as_secs_f64())
}

/// Wall time of `tracer diagnose --duration W --format json`, and the
/// CLOSE_WAIT count of its finding (checked against the crowd's).
fn time_diagnose(bench: &Bench, window_s: f64) -> Result<(f64, u64)> {
    let mut cmd = Command::new(&bench.paths.tracer);
    cmd.args(["diagnose", "--format", "json", "--duration"])
        .arg(window_s.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let t = Instant::now();
    let mut proc = Guarded::spawn(&mut cmd)?;
    let mut stdout = proc
        .child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("no stdout"))?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let status = proc.wait_for(Duration::from_secs(600))?;
    let wall = t.elapsed().as_secs_f64();
    let text = reader.join().map_err(|_| anyhow!("reader panicked"))?;
    if !status.success() {
        bail!("tracer diagnose failed ({status})");
    }
    let v: serde_json::Value =
        serde_json::from_str(text.trim()).with_context(|| format!("diagnose printed {text:?}"))?;
    let close_wait = v["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["kind"] == "close_wait_pileup")
        .filter_map(|f| f["count"].as_u64())
        .sum();
    Ok((wall, close_wait))
}

/// Idle CPU (% of one CPU) of `tracer watch` over `idle_s` after `settle_s`,
/// and its peak RSS (MiB).
fn idle(bench: &Bench, settle_s: u64, idle_s: u64) -> Result<(f64, f64)> {
    let obs = Observer::start(Mode::Tracer, &bench.paths, None)?;
    sandbox::sleep(Duration::from_secs(settle_s))?;
    let before = obs.cpu()?;
    sandbox::sleep(Duration::from_secs(idle_s))?;
    let (user, sys) = before.delta_secs(&obs.cpu()?);
    let rss = obs.peak_rss_kib()? as f64 / 1024.0;
    obs.stop()?;
    Ok((100.0 * (user + sys) / idle_s as f64, rss))
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

pub fn render(r: &Results) -> String {
    let mut t = String::new();
    let s = &r.spec;
    let col = |f: fn(&Run) -> f64| r.runs.iter().map(f).collect::<Vec<f64>>();
    let (ss, diag, attach, first, idle, rss) = (
        col(|x| x.ss_s),
        col(|x| x.diagnose_s),
        col(|x| x.attach_s),
        col(|x| x.first_event_s),
        col(|x| x.idle_pct),
        col(|x| x.peak_rss_mib),
    );
    let beyond: Vec<f64> = diag.iter().map(|d| d - r.window_s).collect();
    let _ = writeln!(
        t,
        "### Big host\n\n{} sockets ({} loopback pairs, {} in CLOSE_WAIT), {} more processes with {} fds each, {} more namespaces with a listener each; {} runs, medians (range). Idle CPU over {} s after {} s settled.\n",
        s.sockets(),
        s.pairs,
        s.close_wait,
        s.procs,
        s.fds,
        s.namespaces,
        r.runs.len(),
        r.idle_s,
        r.settle_s
    );
    let _ = writeln!(
        t,
        "| figure | `ss -tanp` | tracer | target | |\n|---|---|---|---|---|"
    );
    let cell = |v: &[f64], unit: &str, prec: usize| {
        let (lo, hi) = range(v);
        format!(
            "{:.*} {unit} ({:.*}–{:.*})",
            prec,
            med(v),
            prec,
            lo,
            prec,
            hi
        )
    };
    let _ = writeln!(
        t,
        "| one look at the sockets | {} | — | — | |",
        cell(&ss, "s", 2)
    );
    let _ = writeln!(
        t,
        "| `diagnose --duration {}` wall time | — | {} | ≤ window + {DIAGNOSE_BEYOND_S} s | {} |",
        r.window_s,
        cell(&diag, "s", 2),
        met(med(&beyond) <= DIAGNOSE_BEYOND_S)
    );
    let _ = writeln!(
        t,
        "| … of which beyond the window | — | {} | ≤ {DIAGNOSE_BEYOND_S} s | |",
        cell(&beyond, "s", 2)
    );
    let _ = writeln!(
        t,
        "| `watch` exec → attached | — | {} | — | |",
        cell(&attach, "s", 3)
    );
    let after: Vec<f64> = r
        .runs
        .iter()
        .map(|x| x.first_event_s - x.attach_s)
        .collect();
    let _ = writeln!(
        t,
        "| `watch` exec → first event | — | {} | < {FIRST_EVENT_S} s | {} |",
        cell(&first, "s", 3),
        met(med(&first) < FIRST_EVENT_S)
    );
    let _ = writeln!(
        t,
        "| … of which after the hooks were attached | — | {} | — | |",
        cell(&after, "s", 3)
    );
    let _ = writeln!(
        t,
        "| `watch` exec → first event seen (the line's `ts`) | — | {} | — | |",
        cell(&col(|x| x.first_seen_s), "s", 3)
    );
    let _ = writeln!(
        t,
        "| `watch` idle CPU | — | {} | ≤ {IDLE_CPU_PCT} % | {} |",
        cell(&idle, "%", 2),
        met(med(&idle) <= IDLE_CPU_PCT)
    );
    let _ = writeln!(
        t,
        "| `watch` peak RSS | — | {} | ≤ {RSS_MIB} MiB | {} |",
        cell(&rss, "MiB", 1),
        met(med(&rss) <= RSS_MIB)
    );
    let _ = writeln!(
        t,
        "\ndiagnose / ss -tanp wall-time ratio: {:.2} (one look of ss against a whole verdict over a {} s window). diagnose's CLOSE_WAIT finding counted {} (the crowd holds {}).",
        med(&diag) / med(&ss).max(1e-9),
        r.window_s,
        r.close_wait_seen,
        s.close_wait
    );
    t
}
