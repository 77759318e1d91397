//! The kernel matrix of `cargo xtask test`: a named subset of the root
//! integration tests, run in one VM per kernel, each test on its own with
//! `--test-threads=1`, and reported per kernel.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use super::guest::{self, quote};
use super::kernels::Kernel;
use super::results::{self, BEGIN, END, Outcome, Verdict};
use super::retry::{finished_tests, remaining, unfinished_tail};
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

/// The guest's shell script: each test on its own, between markers that
/// carry its exit status and wall time in ms.
pub fn guest_script(plan: &[Entry], bound: Duration) -> String {
    let mut s = String::from("now() { date +%s%3N; }\n");
    s.push_str(&WATCHDOG.replace("BOUND", &bound.as_secs().max(1).to_string()));
    for entry in plan {
        let Some(exe) = &entry.exe else { continue };
        let filters: Vec<&str> = if entry.names.is_empty() {
            vec![""]
        } else {
            entry.names.iter().map(String::as_str).collect()
        };
        for filter in filters {
            let args = if filter.is_empty() {
                String::new()
            } else {
                format!(" --exact {}", quote(filter))
            };
            let _ = writeln!(
                s,
                "echo {}; t=$(now); run_test {} {} --test-threads=1 --color=never{args}; rc=$?; echo; echo {} $rc $(( $(now) - t ))",
                quote(&format!("{BEGIN}{} {filter}", entry.target)),
                quote(&format!("{} {filter}", entry.target)),
                quote(&exe.display().to_string()),
                quote(&format!("{END}{}", entry.target)),
            );
        }
    }
    s
}

/// How long one test binary run may take in a guest before the watchdog
/// shows what the guest is doing and kills it (the slowest test takes
/// about 100 s in the 5.10 guest): a hung test fails alone, the others still run.
pub const TEST_BOUND: Duration = Duration::from_secs(300);

/// `bounded PID LABEL`: waits for the test run PID (a session leader, by
/// setsid); past BOUND seconds prints the processes, the stacks of the
/// blocked ones and the kernel log's tail, then kills its session. Returns
/// the run's exit status (137 when killed).
///
/// `run_test LABEL EXE ARGS...`: one bounded run; a run the watchdog killed
/// runs once more, said in the output (the 5.10 guest under TCG has hung
/// now and then in a test that passes in the next run; a test that hangs
/// again fails), its verdict the second run's.
const WATCHDOG: &str = r#"hung="${TMPDIR:-/tmp}/xtask-matrix-hung"
run_test() {
  l=$1; shift
  rm -f "$hung"
  setsid "$@" & bounded $! "$l"; r=$?
  if [ -e "$hung" ]; then
    rm -f "$hung"
    echo; echo "xtask-matrix: watchdog: $l hung and was killed (what the guest was doing is above); running it once more"
    setsid "$@" & bounded $! "$l"; r=$?
  fi
  return "$r"
}
bounded() {
  ( n=0
    while kill -0 "$1" 2>/dev/null; do
      sleep 1; n=$((n+1))
      if [ "$n" -ge BOUND ]; then
        echo; echo "xtask-matrix: watchdog: $2 still running after BOUND s; what the guest is doing:"
        ps -eo pid,ppid,pgid,stat,wchan:32,etime,args
        for d in /proc/[0-9]*; do
          case "$(sed -n 's/^State:[[:space:]]*\(.\).*/\1/p' "$d/status" 2>/dev/null)" in
            D) echo "xtask-matrix: blocked ${d#/proc/} $(cat "$d/comm" 2>/dev/null):"; cat "$d/stack" 2>/dev/null;;
          esac
        done
        dmesg 2>/dev/null | tail -n 40
        : > "$hung"
        kill -KILL "-$1" 2>/dev/null
        break
      fi
    done ) &
  w=$!
  wait "$1"; r=$?
  kill "$w" 2>/dev/null; wait "$w" 2>/dev/null
  return "$r"
}
"#;

/// The guest's command: [`guest_script`] of `plan` with [`TEST_BOUND`].
fn guest_command(plan: &[Entry]) -> [String; 3] {
    [
        "sh".to_owned(),
        "-c".to_owned(),
        guest_script(plan, TEST_BOUND),
    ]
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

    #[test]
    fn the_guest_script_runs_each_test_alone_between_markers() {
        let plan = vec![
            Entry {
                target: "a".into(),
                names: vec!["t1".into(), "t2".into()],
                exe: Some("/e/a-1".into()),
                in_tree: true,
            },
            Entry {
                target: "b".into(),
                names: vec![],
                exe: None,
                in_tree: true,
            },
            Entry {
                target: "c".into(),
                names: vec![],
                exe: Some("/e/c".into()),
                in_tree: true,
            },
        ];
        let script = guest_script(&plan, TEST_BOUND);
        assert!(script.contains("echo 'xtask-matrix: begin a t1'; t=$(now); run_test 'a t1' '/e/a-1' --test-threads=1 --color=never --exact 't1'; rc=$?; echo; echo 'xtask-matrix: end a' $rc"));
        assert!(
            script.contains("run_test 'a t2' '/e/a-1' --test-threads=1 --color=never --exact 't2'")
        );
        assert!(!script.contains("begin b"));
        assert!(script.contains(
            "echo 'xtask-matrix: begin c '; t=$(now); run_test 'c ' '/e/c' --test-threads=1 --color=never; rc=$?"
        ));
        assert!(script.contains("-ge 300 ]"), "the bound is in the script");
        // The blocked tasks are found by the state letter of /proc/PID/status.
        let sed = script
            .lines()
            .find_map(|l| Some(l.split_once("sed -n '")?.1.split_once('\'')?.0))
            .unwrap();
        let out = std::process::Command::new("sed")
            .args(["-n", sed])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write as _;
                c.stdin
                    .take()
                    .unwrap()
                    .write_all(b"Name:\tx\nState:\tD (disk sleep)\n")?;
                c.wait_with_output()
            })
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "D\n");
    }

    #[test]
    fn a_hung_test_is_killed_and_the_next_one_still_runs() {
        let dir = std::env::temp_dir().join(format!("xtask-watchdog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let exe = |name: &str, body: &str| {
            let path = dir.join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
            path
        };
        let entry = |target: &str, path: PathBuf| Entry {
            target: target.into(),
            names: vec![],
            exe: Some(path),
            in_tree: true,
        };
        // The hung one leaves a child behind in its session (killed too) and
        // hangs again when run once more; the flaky one hangs only once.
        let once = dir.join("once");
        let plan = vec![
            entry("hangs", exe("hangs", "sleep 60 & echo child $!; sleep 60")),
            entry(
                "flaky",
                exe(
                    "flaky",
                    &format!(
                        "if [ -e {0} ]; then echo 'test t ... ok'; echo 'test result: ok. 1 passed'; else : > {0}; sleep 60; fi",
                        once.display()
                    ),
                ),
            ),
            entry("quick", exe("quick", "echo 'test result: ok. 1 passed'")),
        ];
        let started = Instant::now();
        let out = std::process::Command::new("sh")
            .args(["-c", &guest_script(&plan, Duration::from_secs(2))])
            .env("TMPDIR", &dir)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(started.elapsed() < Duration::from_secs(40), "{text}");
        assert!(
            text.contains("xtask-matrix: watchdog: hangs  still running after 2 s"),
            "{text}"
        );
        assert!(
            text.contains("xtask-matrix: watchdog: flaky  hung and was killed (what the guest was doing is above); running it once more"),
            "{text}"
        );
        let sections = results::sections(&text);
        assert_eq!(sections.len(), 3, "{text}");
        assert_eq!(sections[0].status, Some(137), "hung twice: {text}");
        assert!(!sections[0].finished, "{text}");
        assert_eq!(sections[1].status, Some(0), "passed when run again: {text}");
        assert_eq!(
            sections[1].tests,
            vec![("t".to_owned(), Verdict::Passed)],
            "{text}"
        );
        assert_eq!(sections[2].status, Some(0), "{text}");
        assert!(sections[2].finished, "{text}");
        let children: Vec<i32> = text
            .lines()
            .filter_map(|l| l.strip_prefix("child ")?.trim().parse().ok())
            .collect();
        assert_eq!(
            children.len(),
            2,
            "one child a run of the hung test: {text}"
        );
        for child in children {
            // SAFETY: kill(2) with signal 0 only checks that the pid exists.
            let alive = || unsafe { libc::kill(child, 0) } == 0;
            // A killed child is a zombie until init reaps it: give it time.
            let deadline = Instant::now() + Duration::from_secs(10);
            while alive() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            assert!(!alive(), "the hung test's child {child} survived: {text}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
