//! Command line (clap). Wiring only.

use clap::{Args, Parser, Subcommand};

use crate::output::Format;
use crate::probes::table::Kind;

#[derive(Parser, Debug)]
#[command(
    name = "tracer",
    version,
    about = "Why are clients getting \"connection reset by peer\"? Attributes TCP resets and failed accepts to the process and socket responsible."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Attach and stream one event per line until Ctrl-C, SIGTERM or --duration.
    Watch(WatchArgs),
    /// Observe a window (--duration, default 30 s, or until Ctrl-C), then print one verdict.
    Diagnose(DiagnoseArgs),
    /// Print each hook, the mechanism chosen on this kernel and why the others were refused.
    Probes(ProbesArgs),
}

#[derive(Args, Debug, Clone, Default)]
pub struct DiagnoseArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Also write the window as a self-contained HTML incident report
    /// (verdict, per-second timeline of each blamed process, evidence).
    #[arg(long, value_name = "FILE")]
    pub report: Option<std::path::PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// Output format [default: text on a terminal, json otherwise].
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS", value_parser = duration_secs)]
    pub duration: Option<f64>,
    /// Only events of this process (repeatable).
    #[arg(long, value_name = "PID")]
    pub pid: Vec<u32>,
    /// Only events where either end uses this port (repeatable).
    #[arg(long, value_name = "PORT")]
    pub port: Vec<u16>,
    /// Only events of processes with this name (the process's name, as in
    /// /proc/PID/comm, not a thread's).
    #[arg(long, value_name = "NAME")]
    pub comm: Option<String>,
    /// Ring buffer size in KiB (a power of two, at least 4).
    #[arg(long, value_name = "KIB", default_value_t = DEFAULT_RING_KIB, value_parser = ring_kib)]
    pub ring_buffer_kib: u32,
    /// Never use this attach mechanism (repeatable: tp_btf, raw_tracepoint,
    /// tracepoint, fentry, fexit, kprobe, kretprobe), e.g. to step around a
    /// kernel bug; each hook falls back to its next rung.
    #[arg(long, value_name = "KIND", value_parser = mechanism_kind)]
    pub no_mechanism: Vec<Kind>,
    /// One line per RST however many there are: no storm counting in the
    /// kernel (see --storm-threshold).
    #[arg(long, conflicts_with = "storm_threshold")]
    pub per_rst: bool,
    /// RSTs per second of one key (network namespace, local port, reason,
    /// owner, sent/received) that stay lines of their own; beyond it, the
    /// kernel counts them and one line per key and second carries `count`
    /// and a sample of remote endpoints [default: 100].
    #[arg(long, value_name = "N", value_parser = storm_threshold)]
    pub storm_threshold: Option<u32>,
}

impl CommonArgs {
    /// The storm threshold in force: `None` with `--per-rst`.
    pub fn storm_threshold(&self) -> Option<u32> {
        if self.per_rst {
            return None;
        }
        Some(
            self.storm_threshold
                .unwrap_or(crate::storm::DEFAULT_THRESHOLD),
        )
    }
}

#[derive(Args, Debug, Clone, Default)]
pub struct WatchArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Also emit every TCP state transition (state_change events).
    #[arg(long)]
    pub states: bool,
    /// Every SECS seconds, also emit the diagnose verdict of the last SECS
    /// seconds (a `summary` line).
    #[arg(long, value_name = "SECS", value_parser = positive_secs)]
    pub summary_every: Option<f64>,
    /// Append events to FILE instead of stdout (JSON unless --format text);
    /// reopened on SIGHUP, for logrotate.
    #[arg(long, value_name = "FILE")]
    pub output: Option<std::path::PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

#[derive(Args, Debug, Clone, Default)]
pub struct ProbesArgs {
    /// Output format [default: text on a terminal, json otherwise].
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Never use this attach mechanism (repeatable), as for `watch`.
    #[arg(long, value_name = "KIND", value_parser = mechanism_kind)]
    pub no_mechanism: Vec<Kind>,
    /// Text: print the kernel's whole answer (e.g. the verifier log) under
    /// each refusal, not only its last meaningful line.
    #[arg(short, long)]
    pub verbose: bool,
}

/// Default ring buffer size (KiB).
pub const DEFAULT_RING_KIB: u32 = 4096;

impl Default for CommonArgs {
    /// What `tracer` with no subcommand uses (`watch` with defaults).
    fn default() -> Self {
        CommonArgs {
            format: None,
            duration: None,
            pid: Vec::new(),
            port: Vec::new(),
            comm: None,
            ring_buffer_kib: DEFAULT_RING_KIB,
            no_mechanism: Vec::new(),
            per_rst: false,
            storm_threshold: None,
        }
    }
}

/// `--ring-buffer-kib`: checked at parse time so a bad value is bad usage.
fn ring_kib(s: &str) -> Result<u32, String> {
    let kib: u32 = s.parse().map_err(|e| format!("{e}"))?;
    crate::session::ring_bytes(kib).map_err(|e| e.to_string())?;
    Ok(kib)
}

/// `--storm-threshold`: a whole number of RSTs per second, 1 to 10^6.
fn storm_threshold(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a whole number of RSTs per second"))?;
    match n {
        0 => Err("must be at least 1 (for one line per RST, use --per-rst)".into()),
        1..=1_000_000 => Ok(n),
        _ => Err("must be at most 1000000".into()),
    }
}

/// `--no-mechanism`: one of the kinds `tracer probes` prints.
fn mechanism_kind(s: &str) -> Result<Kind, String> {
    Kind::from_name(s).ok_or_else(|| {
        let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
        format!("unknown mechanism `{s}`; one of {}", names.join(", "))
    })
}

fn positive_secs(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if v.is_finite() && v >= 1.0 {
        Ok(v)
    } else {
        Err("must be a number of seconds, at least 1".into())
    }
}

/// `--duration`: a finite number of seconds, 0 to one year.
fn duration_secs(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if v.is_finite() && (0.0..=31_536_000.0).contains(&v) {
        Ok(v)
    } else {
        Err("must be a number of seconds from 0 to 31536000".into())
    }
}
