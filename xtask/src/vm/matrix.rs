//! The kernel matrix of `cargo xtask test`: a named subset of the root
//! integration tests, run in one VM per kernel, each test on its own with
//! `--test-threads=1`, and reported per kernel.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use super::guest;
use super::kernels::Kernel;
use super::results::{self, Outcome, Verdict};
use super::retry::{finished_tests, remaining, unfinished_tail};
use super::watchdog::guest_command;
use crate::util::{self, workspace_root};

/// The subset: (test target in tracer/tests, exact test names). No names:
/// every test of the binary.
pub const SUBSET: &[(&str, &[&str])] = &[
    (
        "rst_closed_port",
        &["closed_port_rsts_counted_and_attributed"],
    ),
    (
        "attribution_rst",
        &[
            "a_linger0_abort_by_server",
            "b_close_with_unread_data",
            "c_linger0_abort_ipv6",
            "d_connection_established_before_tracer",
        ],
    ),
    (
        "starving_signals",
        &[
            "emfile_accept_failures_name_pid_limit_and_port",
            "full_accept_queue_is_a_listen_overflow_of_its_owner",
            "close_wait_counts_are_exact",
        ],
    ),
    (
        "rst_storm",
        &[
            "closed_port_storm_lines_add_up_to_the_kernel_count",
            "abort_storm_lines_keep_the_service_port_on_both_sides",
            "diagnose_counts_an_abort_storm_by_the_service_port",
            "per_rst_keeps_one_line_per_reset",
        ],
    ),
    ("diagnose_e2e", &["diagnose_tells_the_production_story"]),
    ("io_uring_accept", &["io_uring_accept_emfile_is_reported"]),
    // The diagnose run of the pooled incident stays on the host: under TCG
    // the Python service spends seconds between two exchanges of its pool
    // (measured in a 6.12 guest), so the pool is not saturated there. The
    // summary test asserts the same finding from a window of a watch that
    // was attached before the incident.
    (
        "upstream_e2e",
        &[
            "summaries_and_metrics_carry_the_upstream",
            "a_healthy_pool_gets_no_finding",
        ],
    ),
    (
        "startup_crowded",
        &["resets_during_the_start_up_snapshot_are_all_reported_and_attributed"],
    ),
    (
        "map_memory",
        &["per_cpu_maps_are_sized_for_the_possible_cpus"],
    ),
    (
        "owner_cache",
        &["a_destroyed_socket_leaves_no_owner_in_the_cache_or_the_map"],
    ),
    (
        "snapshot_root",
        &["a_close_wait_socket_the_dump_missed_is_found_by_lookup"],
    ),
    ("kernels", &[]),
];

/// The whole-VM bound of one kernel's run when none is given.
pub const DEFAULT_VM_TIMEOUT: &str = "25m";

/// One entry of the subset, resolved against the build.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    pub target: String,
    pub names: Vec<String>,
    /// The built test executable, if the build has this target.
    pub exe: Option<PathBuf>,
    /// tracer/tests/<target>.rs (or <target>/main.rs) exists in this tree.
    pub in_tree: bool,
}

/// The tracer integration test executables of a `cargo test --no-run
/// --message-format=json` run: target name → executable.
pub fn parse_executables(json_lines: &str, tests_dir: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    for line in json_lines.lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" || msg["profile"]["test"] != true {
            continue;
        }
        let (Some(name), Some(src), Some(exe)) = (
            msg["target"]["name"].as_str(),
            msg["target"]["src_path"].as_str(),
            msg["executable"].as_str(),
        ) else {
            continue;
        };
        let is_test = msg["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "test"));
        if is_test && Path::new(src).starts_with(tests_dir) {
            out.insert(name.to_owned(), PathBuf::from(exe));
        }
    }
    out
}

/// Finds the built test executables with the host run's cargo flags (the
/// part of ARGS before `--`) and environment, so nothing is rebuilt.
pub fn executables(cargo_args: &[String], bin: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let mut cmd = util::cargo_test(bin);
    cmd.args(["--no-run", "--message-format=json"])
        .args(cargo_args)
        .stderr(Stdio::inherit());
    crate::setup::use_bpf_linker(&mut cmd)?;
    let json = util::output(&mut cmd).context("listing the built test executables failed")?;
    Ok(parse_executables(&json, &tests_dir()))
}

fn tests_dir() -> PathBuf {
    workspace_root().join("tracer").join("tests")
}

/// The subset, resolved against the built executables.
pub fn plan(built: &BTreeMap<String, PathBuf>, tests_dir: &Path) -> Vec<Entry> {
    SUBSET
        .iter()
        .map(|(target, names)| Entry {
            target: (*target).to_owned(),
            names: names.iter().map(|n| (*n).to_owned()).collect(),
            exe: built.get(*target).cloned(),
            in_tree: tests_dir.join(format!("{target}.rs")).is_file()
                || tests_dir.join(target).join("main.rs").is_file(),
        })
        .collect()
}

/// One kernel's run of the subset.
pub struct Report {
    pub release: String,
    pub outcomes: Vec<Outcome>,
    pub time: Duration,
    /// Set when the VM could not be prepared, booted or did not finish.
    pub error: Option<String>,
}

impl Report {
    /// Passed, failed, skipped; a VM that failed counts one failure more.
    pub fn counts(&self) -> (u64, u64, u64) {
        let (p, f, s) = results::count(&self.outcomes);
        (p, f + u64::from(self.error.is_some()), s)
    }
}

/// Boots `kernel` once and runs the planned tests in it.
pub fn run_kernel(kernel: &Kernel, plan: &[Entry], bin: &Path, timeout: Duration) -> Report {
    let start = Instant::now();
    let mut report = Report {
        release: kernel.release.clone(),
        outcomes: Vec::new(),
        time: Duration::ZERO,
        error: None,
    };
    let extra = [("TRACER_BIN".to_owned(), bin.display().to_string())];
    let env = guest::environment(|name| std::env::var(name).ok(), &extra);
    let command = guest_command(plan);
    let cwd = workspace_root().join("tracer");
    println!("xtask test: kernel {}: booting", kernel.release);
    let mut stdout = Vec::new();
    for attempt in 0..2 {
        let capture = super::qemu::Capture::default();
        let run = super::run(kernel, &cwd, &env, &command, timeout, Some(capture.clone()));
        stdout = capture.lock().map(|b| b.clone()).unwrap_or_default();
        match run {
            Ok(_) => break,
            // A guest that dies before its first test (TCG now and then
            // panics while a kernel patches its own text at boot) is booted
            // once more; the tests never ran, so nothing is hidden.
            Err(err) if attempt == 0 && stdout.is_empty() => println!(
                "xtask test: kernel {}: the guest failed before any test ran ({err:#}); booting once more",
                kernel.release
            ),
            Err(err) => {
                // What finished before the VM failed is still reported.
                report.error = Some(format!("{err:#}"));
                break;
            }
        }
    }
    let mut text = String::from_utf8_lossy(&stdout).into_owned();
    // A guest kernel that panics mid-run (6.12 under TCG, at an int3 of its
    // own text patching, now and then) gets one more boot for the tests
    // that had not finished, said in the output; a test that fails again,
    // or panics the guest again, fails.
    if let Some(err) = report.error.clone()
        && err.contains("the guest kernel panicked")
    {
        let done = finished_tests(&text);
        let rest = remaining(plan, &done);
        if !rest.is_empty() {
            println!(
                "xtask test: kernel {}: {err}; booting once more for the {} tests that had not finished",
                kernel.release,
                rest.iter().map(|e| e.names.len().max(1)).sum::<usize>()
            );
            text.truncate(unfinished_tail(&text));
            let command = guest_command(&rest);
            let capture = super::qemu::Capture::default();
            let run = super::run(kernel, &cwd, &env, &command, timeout, Some(capture.clone()));
            let again = capture.lock().map(|b| b.clone()).unwrap_or_default();
            text.push_str(&String::from_utf8_lossy(&again));
            report.error = run
                .err()
                .map(|e| format!("{err}; then, booted once more: {e:#}"));
        }
    }
    let sections = results::sections(&text);
    for entry in plan {
        if entry.exe.is_none() {
            if entry.in_tree {
                report.outcomes.push(Outcome {
                    target: entry.target.clone(),
                    name: "(binary)".to_owned(),
                    verdict: Verdict::NotBuilt,
                    time: None,
                });
            }
            continue;
        }
        report
            .outcomes
            .extend(results::judge(&entry.target, &entry.names, &sections));
    }
    report.time = start.elapsed();
    report
}

/// Prints what each test did and the per-kernel line.
pub fn print(report: &Report, plan: &[Entry]) {
    for entry in plan.iter().filter(|e| e.exe.is_none()) {
        let note = if entry.in_tree {
            "NOT BUILT although tracer/tests has it: a failure"
        } else {
            "not built (no such file in tracer/tests of this tree)"
        };
        println!(
            "xtask test: kernel {}: {} {note}",
            report.release, entry.target
        );
    }
    for o in &report.outcomes {
        let time = o
            .time
            .map_or(String::new(), |t| format!(" ({:.1} s)", t.as_secs_f64()));
        println!(
            "xtask test: kernel {}: {:<11} {}::{}{time}",
            report.release,
            o.verdict.word(),
            o.target,
            o.name
        );
    }
    if let Some(err) = &report.error {
        println!("xtask test: kernel {}: VM FAILED: {err}", report.release);
    }
    let (p, f, s) = report.counts();
    println!(
        "kernel {}: {p} passed, {f} failed, {s} skipped in {:.0} s",
        report.release,
        report.time.as_secs_f64()
    );
}

/// Refuses an empty plan: nothing of the subset was built.
pub fn check_plan(plan: &[Entry]) -> Result<()> {
    if plan.iter().all(|e| e.exe.is_none()) {
        bail!(
            "none of the kernel matrix's test targets was built; \
             drop the cargo flags that exclude them, or use --kernels none"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executables_are_the_tracer_test_targets() {
        let json = r#"{"reason":"compiler-artifact","profile":{"test":true},"target":{"name":"rst_closed_port","kind":["test"],"src_path":"/w/tracer/tests/rst_closed_port.rs"},"executable":"/w/target/debug/deps/rst_closed_port-1"}
{"reason":"compiler-artifact","profile":{"test":true},"target":{"name":"tracer","kind":["bin"],"src_path":"/w/tracer/src/main.rs"},"executable":"/w/target/debug/deps/tracer-2"}
{"reason":"compiler-artifact","profile":{"test":false},"target":{"name":"x","kind":["test"],"src_path":"/w/tracer/tests/x.rs"},"executable":null}
{"reason":"build-finished","success":true}
not json"#;
        let got = parse_executables(json, Path::new("/w/tracer/tests"));
        assert_eq!(got.len(), 1);
        assert_eq!(
            got["rst_closed_port"],
            PathBuf::from("/w/target/debug/deps/rst_closed_port-1")
        );
    }

    #[test]
    fn the_subset_names_real_targets_and_kernels_is_reported_when_absent() {
        let built: BTreeMap<String, PathBuf> =
            [("rst_closed_port".to_owned(), PathBuf::from("/x/rst"))].into();
        let plan = plan(&built, &tests_dir());
        assert_eq!(plan.len(), SUBSET.len());
        assert_eq!(plan[0].exe, Some(PathBuf::from("/x/rst")));
        for entry in plan.iter().filter(|e| e.target != "kernels") {
            assert!(entry.in_tree, "{} is not in tracer/tests", entry.target);
        }
        let kernels = plan.iter().find(|e| e.target == "kernels").unwrap();
        assert!(kernels.exe.is_none());
        assert_eq!(kernels.in_tree, tests_dir().join("kernels.rs").is_file());
    }
}
