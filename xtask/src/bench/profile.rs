//! Where the time goes: one extra pass per observer with the kernel's BPF
//! run-time statistics on (BPF_ENABLE_STATS: on while the harness holds the
//! fd, off when it closes, even if the harness dies), reading each
//! program's run count and run time from the observer's /proc/PID/fdinfo
//! before and after every storm (names from `bpftool prog show` if present). Kept apart from the measured runs, because the
//! statistics themselves cost two clock reads per program run.

use std::collections::BTreeMap;
use std::fs;
use std::os::fd::{FromRawFd as _, OwnedFd};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use serde_json::Value;

use super::observer::{Mode, Observer};
use super::storm::{Kind, Outcome};
use super::{Bench, Sample};
use crate::util::{find_program, output};

/// One BPF program's share of one storm.
#[derive(Clone, Debug)]
pub struct ProgCost {
    pub name: String,
    pub runs: u64,
    pub ns: u64,
}

/// One storm under one observer with statistics on.
#[derive(Clone, Debug)]
pub struct Profile {
    pub mode: Mode,
    pub kind: Kind,
    pub outcome: Outcome,
    pub progs: Vec<ProgCost>,
    /// Observer process CPU (user, system seconds) over the storm and drain.
    pub cpu: (f64, f64),
}

/// Keeps run-time statistics on while alive.
struct StatsOn(#[allow(dead_code)] OwnedFd);

fn enable_stats() -> Result<StatsOn> {
    const BPF_ENABLE_STATS: libc::c_long = 32;
    // union bpf_attr { struct { __u32 type; } enable_stats; }: BPF_STATS_RUN_TIME = 0.
    let attr: u32 = 0;
    // SAFETY: bpf(2) reads `size` bytes from a valid pointer to a u32.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_ENABLE_STATS,
            (&raw const attr).cast::<u8>(),
            std::mem::size_of::<u32>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error())
            .context("bpf(BPF_ENABLE_STATS) (needs CAP_SYS_ADMIN)");
    }
    let fd = i32::try_from(fd)?;
    // SAFETY: a new fd that nothing else owns.
    Ok(StatsOn(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// (run count, run ns) of each BPF program `pid` holds, by program id,
/// from /proc/PID/fdinfo of its `anon_inode:bpf-prog` descriptors.
fn snapshot(pid: u32) -> Result<BTreeMap<u64, (u64, u64)>> {
    let dir = format!("/proc/{pid}/fd");
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("listing {dir}"))? {
        let entry = entry.with_context(|| format!("listing {dir}"))?;
        let is_prog = fs::read_link(entry.path())
            .is_ok_and(|target| target.as_os_str() == "anon_inode:bpf-prog");
        if !is_prog {
            continue;
        }
        let info = format!("/proc/{pid}/fdinfo/{}", entry.file_name().to_string_lossy());
        let Ok(text) = fs::read_to_string(&info) else {
            continue; // closed meanwhile
        };
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let Some(id) = field("prog_id:") {
            let runs = field("run_cnt:").unwrap_or(0);
            let ns = field("run_time_ns:").unwrap_or(0);
            out.insert(id, (runs, ns));
        }
    }
    Ok(out)
}

/// Program names by id, from bpftool when it is installed.
fn names() -> BTreeMap<u64, String> {
    let Some(bpftool) = find_program("bpftool") else {
        return BTreeMap::new();
    };
    let Ok(text) = output(Command::new(bpftool).args(["--json", "prog", "show"])) else {
        return BTreeMap::new();
    };
    let Ok(Value::Array(progs)) = serde_json::from_str::<Value>(&text) else {
        return BTreeMap::new();
    };
    progs
        .iter()
        .filter_map(|p| {
            let id = p.get("id")?.as_u64()?;
            Some((id, p.get("name")?.as_str()?.to_owned()))
        })
        .collect()
}

/// The profile pass: each observer once, every storm at the given size.
pub fn run(bench: &Bench, sizes: &dyn Fn(Kind) -> u64) -> Result<Vec<Profile>> {
    println!("bench: profile pass (BPF run-time statistics on)");
    let _stats = enable_stats()?;
    let mut out = Vec::new();
    for mode in Mode::OBSERVERS {
        let obs = Observer::start(mode, &bench.paths, None)?;
        let pid = obs
            .pid()
            .ok_or_else(|| anyhow!("observer without a process"))?;
        let names = names();
        for kind in Kind::ALL {
            let before = snapshot(pid)?;
            let cpu0 = obs.cpu()?;
            let outcome = bench.storm(kind, sizes(kind))?;
            obs.settle(Duration::from_secs(5))?;
            let cpu = cpu0.delta_secs(&obs.cpu()?);
            let progs = costs(&before, &snapshot(pid)?, &names);
            out.push(Profile {
                mode,
                kind,
                outcome,
                progs,
                cpu,
            });
        }
        obs.stop()?;
    }
    Ok(out)
}

/// What each program ran between two snapshots (those that ran).
fn costs(
    before: &BTreeMap<u64, (u64, u64)>,
    after: &BTreeMap<u64, (u64, u64)>,
    names: &BTreeMap<u64, String>,
) -> Vec<ProgCost> {
    after
        .iter()
        .map(|(id, (cnt, ns))| {
            let (c0, n0) = before.get(id).copied().unwrap_or((0, 0));
            ProgCost {
                name: names
                    .get(id)
                    .cloned()
                    .unwrap_or_else(|| format!("prog {id}")),
                runs: cnt.saturating_sub(c0),
                ns: ns.saturating_sub(n0),
            }
        })
        .filter(|p| p.runs > 0)
        .collect()
}

/// The programs' cost while `load` runs under a fresh `mode` observer
/// with run-time statistics on; `load`'s own result beside it.
pub fn programs_during<T>(
    mode: Mode,
    bench: &Bench,
    load: impl FnOnce() -> Result<T>,
) -> Result<(Vec<ProgCost>, T)> {
    let _stats = enable_stats()?;
    let obs = Observer::start(mode, &bench.paths, None)?;
    let pid = obs
        .pid()
        .ok_or_else(|| anyhow!("observer without a process"))?;
    let names = names();
    let before = snapshot(pid)?;
    let out = load()?;
    let progs = costs(&before, &snapshot(pid)?, &names);
    obs.stop()?;
    Ok((progs, out))
}

/// Median over runs of the CPU each operation gained under `mode`:
/// workers × (1 / rate with − 1 / rate without), same run, same storm.
fn added_us(samples: &[Sample], mode: Mode, kind: Kind, workers: u32) -> Option<f64> {
    let of = |m: Mode| {
        samples
            .iter()
            .filter(move |s| s.mode == m && s.kind == kind)
    };
    super::stats::median(
        of(mode)
            .filter_map(|s| {
                let base = of(Mode::None).find(|b| b.run == s.run)?;
                let (with, without) = (s.outcome.rate(), base.outcome.rate());
                (with > 0.0 && without > 0.0)
                    .then(|| f64::from(workers) * (1.0 / with - 1.0 / without) * 1e6)
            })
            .collect(),
    )
}

/// Markdown: the cost each observer adds per operation and where it goes.
pub fn render(profiles: &[Profile], samples: &[Sample], workers: u32) -> String {
    use std::fmt::Write as _;
    let mut t = String::new();
    if profiles.is_empty() {
        return t;
    }
    let _ = writeln!(
        t,
        "### Where the time goes\n\n\
         Added CPU per operation: median over runs of {workers} generator threads × \
         (1 / rate with the observer − 1 / rate without, same run). BPF programs: kernel run-time \
         statistics from a separate pass (statistics on); observer process: its user + system \
         CPU in that pass. The remainder is what neither explains (syscall tracepoint slow \
         paths, cache effects, scheduling).\n"
    );
    let _ = writeln!(
        t,
        "| storm | observer | added µs/op | BPF programs µs/op | observer process µs/op | remainder µs/op | programs (runs per op × ns per run) |\n\
         | --- | --- | ---: | ---: | ---: | ---: | --- |"
    );
    for p in profiles {
        let ops = p.outcome.ops.max(1) as f64;
        let added = added_us(samples, p.mode, p.kind, workers);
        let bpf = p.progs.iter().map(|c| c.ns as f64).sum::<f64>() / ops / 1e3;
        let proc = (p.cpu.0 + p.cpu.1) * 1e6 / ops;
        let mut progs: Vec<&ProgCost> = p.progs.iter().collect();
        progs.sort_by_key(|c| std::cmp::Reverse(c.ns));
        // Programs that ran for other processes' sockets only are left out.
        let detail: Vec<String> = progs
            .iter()
            .filter(|c| c.runs as f64 / ops >= 0.01)
            .map(|c| {
                format!(
                    "{} {:.2} × {:.0}",
                    c.name,
                    c.runs as f64 / ops,
                    c.ns as f64 / c.runs.max(1) as f64
                )
            })
            .collect();
        let fmt = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.2}"));
        let _ = writeln!(
            t,
            "| {} | {} | {} | {bpf:.2} | {proc:.2} | {} | {} |",
            p.kind.name(),
            p.mode.name(),
            fmt(added),
            fmt(added.map(|a| a - bpf - proc)),
            detail.join("; ")
        );
    }
    let _ = writeln!(t);
    t
}
