//! The request/response load: what exchange timing (and owner learning) on
//! every send and receive costs. nginx (one worker, `return 200 "ok"`, no
//! access log) on 127.0.0.1 in the bench namespace, `wrk -t1 -c32` against
//! it for a few seconds, with no tracer and under `tracer watch --format
//! json` side by side in each run (order rotating); then one pass with BPF
//! run-time statistics on for the send/receive programs' ns per run.
//!
//! Worst case on purpose: a 2-byte response makes every request two hook
//! runs and one exchange, and nothing else.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};

use super::Bench;
use super::observer::{Mode, Observer};
use super::profile::{self, ProgCost};
use super::sandbox::{self, Guarded};
use super::stats::{median, range, thousands};
use crate::util::find_program;

const PORT: u16 = 8089;
const CONNECTIONS: u32 = 32;

/// One wrk run.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    pub run: u32,
    pub mode: Mode,
    pub rps: f64,
    pub p50_ms: f64,
}

pub struct Results {
    pub loads: Vec<Load>,
    pub progs: Vec<ProgCost>,
    pub secs: u32,
    pub requests_profiled: f64,
}

/// nginx in the bench namespace, stopped on drop.
struct Nginx {
    proc: Guarded,
}

impl Nginx {
    fn start(bench: &Bench) -> Result<Nginx> {
        let nginx = find_program("nginx").ok_or_else(|| anyhow!("nginx not found"))?;
        let dir = bench.paths.scratch.join("nginx");
        fs::create_dir_all(dir.join("tmp"))
            .with_context(|| format!("creating {}", dir.display()))?;
        let conf = dir.join("nginx.conf");
        fs::write(&conf, config(&dir)).with_context(|| format!("writing {}", conf.display()))?;
        let mut cmd = bench.ns.exec(&nginx)?;
        cmd.arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let proc = Guarded::spawn(&mut cmd)?;
        let n = Nginx { proc };
        // Ready when it answers.
        for _ in 0..20 {
            if wrk(bench, 1, 1).is_ok() {
                return Ok(n);
            }
            sandbox::sleep(Duration::from_millis(100))?;
        }
        bail!("nginx in the bench namespace did not answer on 127.0.0.1:{PORT}")
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.proc.signal(libc::SIGTERM);
        let _ = self.proc.wait_for(Duration::from_secs(5));
    }
}

fn config(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log;\nevents {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/tmp;\n  proxy_temp_path {d}/tmp;\n\
         \x20 fastcgi_temp_path {d}/tmp;\n  uwsgi_temp_path {d}/tmp;\n  scgi_temp_path {d}/tmp;\n\
         \x20 server {{\n    listen 127.0.0.1:{PORT};\n    location / {{ return 200 \"ok\"; }}\n  }}\n}}\n"
    )
}

/// `wrk -t1 -cN -dS --latency`: (requests/s, p50 ms).
fn wrk(bench: &Bench, connections: u32, secs: u32) -> Result<(f64, f64)> {
    let wrk = find_program("wrk").ok_or_else(|| anyhow!("wrk not found"))?;
    let mut cmd = bench.ns.exec(&wrk)?;
    cmd.args(["-t1", &format!("-c{connections}")])
        .arg(format!("-d{secs}s"))
        .args(["--latency", &format!("http://127.0.0.1:{PORT}/")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = run_output(cmd, Duration::from_secs(u64::from(secs) + 30))?;
    parse_wrk(&out).ok_or_else(|| anyhow!("cannot read wrk's output: {}", out.trim()))
}

fn run_output(mut cmd: Command, limit: Duration) -> Result<String> {
    let mut child = Guarded::spawn(&mut cmd)?;
    let stdout = child.child.stdout.take();
    let reader = std::thread::spawn(move || super::read_all(stdout));
    let status = child.wait_for(limit)?;
    let out = reader
        .join()
        .map_err(|_| anyhow!("reader thread panicked"))?;
    if !status.success() {
        bail!("wrk failed: {}", out.trim());
    }
    Ok(out)
}

/// Requests/sec and the 50% latency line of `wrk --latency`.
pub fn parse_wrk(text: &str) -> Option<(f64, f64)> {
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))?
        .trim()
        .parse()
        .ok()?;
    let p50 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("50%"))
        .and_then(|v| duration_ms(v.trim()))?;
    Some((rps, p50))
}

/// wrk's `512.00us`, `1.20ms`, `2.00s` in ms.
fn duration_ms(v: &str) -> Option<f64> {
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|x| x * scale)
}

/// The measured runs and the profile pass.
pub fn run(bench: &Bench, runs: u32, secs: u32) -> Result<Results> {
    let nginx = Nginx::start(bench)?;
    // Warm-up (not recorded).
    wrk(bench, CONNECTIONS, 1)?;
    let mut loads = Vec::new();
    for run in 0..runs {
        let mut order = [Mode::None, Mode::Tracer];
        order.rotate_left(run as usize % 2);
        let mut line = format!("bench: run {}/{runs} request/response:", run + 1);
        for mode in order {
            let obs = Observer::start(mode, &bench.paths, None)?;
            let (rps, p50_ms) = wrk(bench, CONNECTIONS, secs)?;
            obs.stop()?;
            let _ = write!(line, " {} {}/s;", mode.name(), thousands(rps));
            loads.push(Load {
                run,
                mode,
                rps,
                p50_ms,
            });
        }
        println!("{}", line.trim_end_matches(';'));
    }
    println!("bench: request/response profile pass (BPF run-time statistics on)");
    let (progs, requests_profiled) = profile::programs_during(Mode::Tracer, bench, || {
        wrk(bench, CONNECTIONS, secs).map(|(rps, _)| rps * f64::from(secs))
    })?;
    drop(nginx);
    Ok(Results {
        loads,
        progs,
        secs,
        requests_profiled,
    })
}

/// The markdown section of the report.
pub fn render(r: &Results) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "### Request/response load (exchange timing)\n\n\
         nginx (one worker, `return 200 \"ok\"`, no access log) on 127.0.0.1 in the \
         bench namespace; `wrk -t1 -c{CONNECTIONS} -d{}s --latency`, with no tracer and \
         under `tracer watch --format json > /dev/null`, side by side in each of {} runs. \
         Every request is one receive and one send on the server and one exchange timed \
         (plus wrk's own send and receive).\n",
        r.secs,
        r.loads.iter().map(|l| l.run).max().map_or(0, |m| m + 1),
    );
    let rps = |m: Mode| -> Vec<f64> {
        r.loads
            .iter()
            .filter(|l| l.mode == m)
            .map(|l| l.rps)
            .collect()
    };
    let p50 = |m: Mode| -> Vec<f64> {
        r.loads
            .iter()
            .filter(|l| l.mode == m)
            .map(|l| l.p50_ms)
            .collect()
    };
    let ratios: Vec<f64> = r
        .loads
        .iter()
        .filter(|l| l.mode == Mode::Tracer)
        .filter_map(|t| {
            let base = r
                .loads
                .iter()
                .find(|b| b.mode == Mode::None && b.run == t.run)?;
            (base.rps > 0.0).then(|| t.rps / base.rps)
        })
        .collect();
    let _ = writeln!(
        s,
        "| | requests/s (median, range) | p50 latency (median) |\n|---|---|---|"
    );
    for m in [Mode::None, Mode::Tracer] {
        let v = rps(m);
        let (lo, hi) = range(&v);
        let _ = writeln!(
            s,
            "| {} | {} ({} – {}) | {:.3} ms |",
            m.name(),
            median(v).map_or("-".into(), thousands),
            thousands(lo),
            thousands(hi),
            median(p50(m)).unwrap_or(0.0)
        );
    }
    let (lo, hi) = range(&ratios);
    let _ = writeln!(
        s,
        "\n**Throughput ratio** (tracer / no tracer, same run): median {:.3} (range {:.3} – {:.3}).\n",
        median(ratios.clone()).unwrap_or(0.0),
        lo,
        hi
    );
    let _ = writeln!(
        s,
        "BPF programs during one {}-s load with run-time statistics on ({} requests):\n\n\
         | program | runs | ns per run | runs per request |\n|---|---|---|---|",
        r.secs,
        thousands(r.requests_profiled)
    );
    for p in &r.progs {
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} | {:.2} |",
            p.name,
            thousands(p.runs as f64),
            p.ns as f64 / p.runs.max(1) as f64,
            p.runs as f64 / r.requests_profiled.max(1.0)
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_output() {
        let text = "Running 6s test @ http://127.0.0.1:8089/\n  1 threads and 32 connections\n\
            \x20 Latency Distribution\n     50%  512.00us\n     75%    1.20ms\n\
            \x20 190000 requests in 6.00s, 30.00MB read\nRequests/sec:  31666.67\n";
        assert_eq!(parse_wrk(text), Some((31666.67, 0.512)));
        assert_eq!(duration_ms("2.00s"), Some(2000.0));
        assert_eq!(parse_wrk("garbage"), None);
    }
}
