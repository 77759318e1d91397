//! `cargo xtask test [-- ARGS]`: set up, build tracer (debug), then run
//! `cargo test --workspace --exclude tracer-ebpf --no-fail-fast ARGS` with
//! `TRACER_BIN` pointing at the built binary, and print a summary.
//! Exits non-zero when anything fails.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{ExitCode, Stdio};

use anyhow::{Context as _, Result, bail};

use crate::setup::{self, Scope};
use crate::util::{self, describe, describe_status, target_dir};

#[derive(clap::Args)]
pub struct Args {
    /// Extra arguments for `cargo test` (after `--`).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    pub args: Vec<String>,
}

#[derive(Default)]
struct Totals {
    suites: u64,
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Totals {
    /// Adds a libtest line such as
    /// `test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; ...`.
    fn add(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result:") else {
            return;
        };
        self.suites += 1;
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(word), Some(count)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(count) = count.parse::<u64>() else {
                continue;
            };
            match word {
                "passed" => self.passed += count,
                "failed" => self.failed += count,
                "ignored" => self.ignored += count,
                _ => {}
            }
        }
    }
}

pub fn test(args: Args) -> Result<ExitCode> {
    setup::setup(Scope::All)?;

    let mut build = util::cargo();
    build.args(["build", "-p", "tracer"]);
    setup::use_bpf_linker(&mut build)?;
    util::run(&mut build, "fix the build errors above, then retry")?;

    let bin = target_dir().join("debug").join("tracer");
    if !bin.is_file() {
        bail!(
            "the build succeeded but {} does not exist; check CARGO_TARGET_DIR",
            bin.display()
        );
    }

    let mut cmd = util::cargo();
    cmd.args([
        "test",
        "--workspace",
        "--exclude",
        "tracer-ebpf",
        "--no-fail-fast",
    ])
    .args(&args.args)
    .env("TRACER_BIN", &bin)
    .stdin(Stdio::null())
    .stdout(Stdio::piped());
    setup::use_bpf_linker(&mut cmd)?;
    println!("xtask test: {}", describe(&cmd));

    let mut child = cmd
        .spawn()
        .with_context(|| format!("could not start `{}`", describe(&cmd)))?;
    let mut totals = Totals::default();
    if let Some(stdout) = child.stdout.take() {
        let mut reader = BufReader::new(stdout);
        let mut out = std::io::stdout();
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .context("reading cargo test's output failed")?;
            if n == 0 {
                break;
            }
            // A closed stdout (e.g. `| head`) must not stop the tests.
            let _ = out.write_all(&line).and_then(|()| out.flush());
            totals.add(&String::from_utf8_lossy(&line));
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for `{}` failed", describe(&cmd)))?;

    if totals.suites == 0 {
        println!(
            "xtask test: no test results were printed ({})",
            describe_status(status)
        );
    } else {
        println!(
            "xtask test: {} suites, cargo test ended with {}",
            totals.suites,
            describe_status(status)
        );
        println!(
            "summary: {} passed, {} failed, {} skipped",
            totals.passed, totals.failed, totals.ignored
        );
    }
    if totals.suites == 0 && !status.success() {
        bail!(
            "`{}` failed before any test ran ({}); see the compiler errors above",
            describe(&cmd),
            describe_status(status)
        );
    }
    if !status.success() || totals.failed > 0 {
        bail!(
            "tests failed (`{}` ended with {}); see the failures above",
            describe(&cmd),
            describe_status(status)
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::Totals;

    #[test]
    fn adds_libtest_result_lines() {
        let mut totals = Totals::default();
        totals.add("test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 2 filtered out; finished in 0.01s\n");
        totals.add("test result: FAILED. 4 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.50s");
        totals.add("running 6 tests");
        totals.add("test foo ... ok");
        assert_eq!(totals.suites, 2);
        assert_eq!(totals.passed, 7);
        assert_eq!(totals.failed, 2);
        assert_eq!(totals.ignored, 1);
    }
}
