//! The Debian tools the tests use: installed by `cargo xtask setup` when a
//! program is missing, with `apt-get update` only when needed.

use std::fs;
use std::process::{Command, Stdio};

use anyhow::{Result, anyhow, bail};

use crate::util::{self, find_program, is_root, output};

/// Programs the tests run, and the Debian package that provides each.
const REQUIRED: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("ss", "iproute2"),
    ("nstat", "iproute2"),
    ("bpftrace", "bpftrace"),
    ("jq", "jq"),
    ("python3", "python3"),
    ("ps", "procps"),
    ("sysctl", "procps"),
    // `promtool check metrics` validates the --metrics-addr body
    // (tests/ecosystem_metrics.rs); Debian ships it only with the server.
    ("promtool", "prometheus"),
    // Headless rendering of `diagnose --report` (tests/report_html.rs).
    ("chromium", "chromium"),
    // `cargo xtask vm` and the kernel matrix of `cargo xtask test`.
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("busybox", "busybox-static"),
    ("modprobe", "kmod"),
    ("depmod", "kmod"),
    ("cpio", "cpio"),
    ("xz", "xz-utils"),
    ("zstd", "zstd"),
    ("dpkg-deb", "dpkg"),
];

/// Programs only `cargo xtask bench` runs (its request/response load).
const BENCH: &[(&str, &str)] = &[("nginx", "nginx"), ("wrk", "wrk")];

/// Installed when the distribution has it (not every release packages it).
const OPTIONAL: (&str, &str) = ("bpftool", "bpftool");

fn missing_packages() -> Vec<&'static str> {
    missing_of(REQUIRED)
}

fn missing_of(list: &[(&str, &'static str)]) -> Vec<&'static str> {
    let mut packages = Vec::new();
    for &(program, package) in list {
        if find_program(program).is_none() && !packages.contains(&package) {
            packages.push(package);
        }
    }
    packages
}

fn apt_command(program: &str) -> Result<Command> {
    let path = find_program(program).ok_or_else(|| {
        anyhow!(
            "`{program}` not found: this is not a Debian-like system; install the packages by hand"
        )
    })?;
    let mut cmd = Command::new(path);
    cmd.env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null());
    Ok(cmd)
}

/// True when the package lists have been downloaded at least once.
fn apt_lists_present() -> bool {
    fs::read_dir("/var/lib/apt/lists").is_ok_and(|entries| {
        entries
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().contains("_Packages"))
    })
}

fn apt_has_candidate(package: &str) -> Result<bool> {
    let policy = output(apt_command("apt-cache")?.args(["policy", package]))?;
    Ok(policy
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Candidate:"))
        .any(|c| !c.trim().is_empty() && c.trim() != "(none)"))
}

fn apt_update() -> Result<()> {
    util::run(
        apt_command("apt-get")?.args(["update", "-q"]),
        "check access to the Debian mirrors",
    )
}

pub fn packages() -> Result<String> {
    let mut wanted = missing_packages();
    let optional_missing = find_program(OPTIONAL.0).is_none();
    if wanted.is_empty() && !optional_missing {
        return Ok("ok".to_owned());
    }

    let mut updated = false;
    let mut notes = Vec::new();
    if optional_missing {
        if !apt_lists_present() && is_root() {
            apt_update()?;
            updated = true;
        }
        if apt_has_candidate(OPTIONAL.1).unwrap_or(false) {
            if is_root() || !wanted.is_empty() {
                wanted.push(OPTIONAL.1);
            } else {
                notes.push(format!("{} missing; run as root to install it", OPTIONAL.1));
            }
        } else {
            notes.push(format!("{} is not in apt; skipped", OPTIONAL.1));
        }
    }
    if wanted.is_empty() {
        return Ok(format!("ok ({})", notes.join("; ")));
    }

    if !is_root() {
        bail!(
            "missing Debian packages: {}; run `cargo xtask setup` as root, or \
             `sudo apt-get install --no-install-recommends {}`",
            wanted.join(" "),
            wanted.join(" ")
        );
    }
    if !updated {
        apt_update()?;
    }
    install(&wanted, REQUIRED)?;
    let mut outcome = format!("installed {}", wanted.join(" "));
    if !notes.is_empty() {
        outcome.push_str(&format!(" ({})", notes.join("; ")));
    }
    Ok(outcome)
}

/// The bench's extra programs (nginx, wrk), installed when missing.
pub fn bench_packages() -> Result<String> {
    let wanted = missing_of(BENCH);
    if wanted.is_empty() {
        return Ok("ok".to_owned());
    }
    if !is_root() {
        bail!("missing Debian packages: {}; run as root", wanted.join(" "));
    }
    apt_update()?;
    install(&wanted, BENCH)?;
    Ok(format!("installed {}", wanted.join(" ")))
}

/// `apt-get install` of `wanted`; then every program of `list` must be on
/// PATH.
fn install(wanted: &[&str], list: &[(&str, &'static str)]) -> Result<()> {
    util::run(
        apt_command("apt-get")?
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(wanted),
        "see apt's messages above",
    )?;
    let still = missing_of(list);
    if !still.is_empty() {
        bail!(
            "installed {} but these still provide no program on PATH: {}; check PATH",
            wanted.join(" "),
            still.join(" ")
        );
    }
    Ok(())
}
