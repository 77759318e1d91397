//! The machine the results came from, for the report.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::util::{output, workspace_root};

pub struct Machine {
    pub lines: Vec<(String, String)>,
}

impl Machine {
    pub fn probe(tracer: &Path) -> Machine {
        let read = |p: &str| fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or("unknown".to_owned(), |(_, m)| m.trim().to_owned());
        let mem_kib: u64 = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        let run = |program: &str, args: &[&str]| {
            output(
                Command::new(program)
                    .args(args)
                    .current_dir(workspace_root()),
            )
            .map_or_else(|e| format!("unknown ({e})"), |s| s.trim().to_owned())
        };
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        let mut commit = run("git", &["rev-parse", "--short", "HEAD"]);
        // Only changes to what the measured binary is built from count.
        let tracer_sources = [
            "status",
            "--porcelain",
            "--",
            "tracer",
            "tracer-ebpf",
            "tracer-common",
        ];
        if !run("git", &tracer_sources).is_empty() {
            commit.push_str(" with uncommitted changes to tracer");
        }
        Machine {
            lines: vec![
                ("date".into(), run("date", &["-u", "+%Y-%m-%d %H:%M UTC"])),
                ("kernel".into(), run("uname", &["-r"])),
                ("CPUs (nproc)".into(), cpus.to_string()),
                ("CPU model".into(), model),
                (
                    "memory".into(),
                    format!("{:.1} GiB", mem_kib as f64 / 1048576.0),
                ),
                ("tracer binary".into(), tracer.display().to_string()),
                ("workspace commit".into(), commit),
                ("bpftrace".into(), run("bpftrace", &["--version"])),
            ],
        }
    }
}
