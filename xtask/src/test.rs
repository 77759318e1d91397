//! `cargo xtask test [--kernels LIST] [-- ARGS]`: set up, build tracer
//! (debug), then run `cargo test --workspace --exclude tracer-ebpf
//! --no-fail-fast ARGS` with `TRACER_BIN` pointing at the built binary, then
//! the kernel matrix (a subset of the root tests in one VM per kernel, see
//! `vm::matrix`), and print one summary. Exits non-zero when anything fails.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use crate::setup::{self, Scope};
use crate::util::{self, describe, describe_status, target_dir};
use crate::vm::{self, kernels, matrix};

#[derive(clap::Args)]
pub struct Args {
    /// Kernels of the VM matrix run after the host tests: `all` (default),
    /// `none`, or a list such as `5.10,6.1`. Default from TRACER_VM_KERNELS.
    #[arg(long, value_name = "LIST")]
    pub kernels: Option<String>,
    /// Kill a kernel's VM after this long (`25m`, `90s`).
    #[arg(long, value_name = "DURATION", default_value = matrix::DEFAULT_VM_TIMEOUT, value_parser = vm::parse_duration)]
    pub vm_timeout: Duration,
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

/// The kernels to run the matrix on: `--kernels`, else TRACER_VM_KERNELS,
/// else all of them.
fn selected_kernels(flag: Option<&str>, env: Option<&str>) -> Result<Vec<kernels::Kernel>> {
    let value = flag.or(env).unwrap_or("all");
    kernels::parse_list(value)
        .with_context(|| format!("bad kernel list `{value}` (--kernels or TRACER_VM_KERNELS)"))
}

/// The cargo flags of ARGS: what comes before a `--`.
fn cargo_flags(args: &[String]) -> &[String] {
    let end = args.iter().position(|a| a == "--").unwrap_or(args.len());
    &args[..end]
}

pub fn test(args: Args) -> Result<ExitCode> {
    let env_kernels = std::env::var("TRACER_VM_KERNELS").ok();
    let kernels = selected_kernels(args.kernels.as_deref(), env_kernels.as_deref())?;
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

    let mut cmd = util::cargo_test(&bin);
    cmd.args(&args.args)
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

    if totals.suites == 0 && !status.success() {
        println!(
            "xtask test: no test results were printed ({})",
            describe_status(status)
        );
        bail!(
            "`{}` failed before any test ran ({}); see the compiler errors above",
            describe(&cmd),
            describe_status(status)
        );
    }
    println!(
        "xtask test: host: {} suites, {} passed, {} failed, {} skipped; cargo test ended with {}",
        totals.suites,
        totals.passed,
        totals.failed,
        totals.ignored,
        describe_status(status)
    );
    let host_ok = status.success() && totals.failed == 0;

    let kernels_ok = run_matrix(&kernels, &args, &bin, &mut totals)?;

    println!(
        "summary: {} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.ignored
    );
    if !host_ok {
        bail!(
            "tests failed (`{}` ended with {}); see the failures above",
            describe(&cmd),
            describe_status(status)
        );
    }
    if !kernels_ok {
        bail!("tests failed in the kernel matrix; see the `kernel ...` lines above");
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs the subset in each kernel, one VM after the other, folding the
/// counts into `totals`. True when nothing failed.
fn run_matrix(
    kernels: &[kernels::Kernel],
    args: &Args,
    bin: &std::path::Path,
    totals: &mut Totals,
) -> Result<bool> {
    if kernels.is_empty() {
        println!("xtask test: kernel matrix: none (--kernels none)");
        return Ok(true);
    }
    let built = matrix::executables(cargo_flags(&args.args), bin)?;
    let plan = matrix::plan(&built, &util::workspace_root().join("tracer").join("tests"));
    matrix::check_plan(&plan)?;
    // Inside the emulated kernels the tests run the release build: under TCG
    // a debug tracer spends most of a minute parsing BTF at every start.
    let mut build = util::cargo();
    build.args(["build", "--release", "-p", "tracer"]);
    crate::setup::use_bpf_linker(&mut build)?;
    util::run(&mut build, "fix the build errors above, then retry")?;
    let vm_bin = target_dir().join("release").join("tracer");
    let mut ok = true;
    let mut reports = Vec::new();
    for kernel in kernels {
        if let Some(sig) = vm::qemu::signals::received() {
            println!(
                "xtask test: kernel {}: not run (interrupted by signal {sig})",
                kernel.release
            );
            totals.failed += 1;
            ok = false;
            continue;
        }
        let report = matrix::run_kernel(kernel, &plan, &vm_bin, args.vm_timeout);
        matrix::print(&report, &plan);
        reports.push(report);
    }
    for report in &reports {
        // Repeated next to the summary, for the log reader.
        let (passed, failed, skipped) = report.counts();
        println!(
            "kernel {}: {passed} passed, {failed} failed, {skipped} skipped in {:.0} s",
            report.release,
            report.time.as_secs_f64()
        );
        totals.suites += 1;
        totals.passed += passed;
        totals.failed += failed;
        totals.ignored += skipped;
        ok &= failed == 0;
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_list_comes_from_the_flag_then_the_environment() {
        let releases =
            |k: Vec<kernels::Kernel>| -> Vec<String> { k.into_iter().map(|k| k.release).collect() };
        assert_eq!(releases(selected_kernels(None, None).unwrap()).len(), 3);
        assert!(
            selected_kernels(Some("none"), Some("6.1"))
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            releases(selected_kernels(None, Some("6.1")).unwrap()),
            ["6.1.0-57-amd64"]
        );
        assert!(selected_kernels(Some("7.0"), None).is_err());
    }

    #[test]
    fn cargo_flags_stop_at_the_double_dash() {
        let args: Vec<String> = ["-p", "tracer", "--", "--nocapture"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(cargo_flags(&args), ["-p", "tracer"]);
        assert_eq!(cargo_flags(&args[..2]), ["-p", "tracer"]);
    }

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
