//! The guest's side of the kernel matrix: the shell script that runs each
//! test of the subset on its own, between markers carrying its exit status
//! and wall time, every run bounded by a watchdog that shows what a hung
//! guest is doing and kills the run.

use std::fmt::Write as _;
use std::time::Duration;

use super::guest::quote;
use super::matrix::Entry;
use super::results::{BEGIN, END};

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
pub fn guest_command(plan: &[Entry]) -> [String; 3] {
    [
        "sh".to_owned(),
        "-c".to_owned(),
        guest_script(plan, TEST_BOUND),
    ]
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Instant;

    use super::*;
    use crate::vm::results::{self, Verdict};

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
