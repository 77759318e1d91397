//! `cargo xtask vm KVER [-- CMD ARGS...]`: runs a command as root, in the
//! caller's working directory, inside another Debian kernel booted under
//! qemu, with the host's `/` read-only below a tmpfs overlay; exits with
//! the command's status.
//!
//! - `kernels`: the pinned matrix (one place) and the cache location.
//! - `fetch`: download (private apt state), extraction, the bootable image.
//! - `image`: the uncompressed vmlinux inside a bzImage.
//! - `initramfs`: busybox, the 9p/overlay modules and the guest's `/init`.
//! - `guest`: the per-run script, environment and kernel command line.
//! - `qemu`: the machine, its serial ports, bounded waiting.
//! - `matrix`, `results`: the root integration tests run in each kernel.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};

pub mod fetch;
pub mod guest;
pub mod image;
pub mod initramfs;
pub mod kernels;
pub mod matrix;
pub mod mirrors;
pub mod qemu;
pub mod results;
pub mod retry;
pub mod watchdog;

/// The whole-VM timeout when none is given.
pub const DEFAULT_TIMEOUT: &str = "40m";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A kernel of the matrix (5.10, 6.1, 6.12) or a Debian release
    /// (`6.1.0-57-amd64`).
    #[arg(value_name = "KVER")]
    pub kernel: String,
    /// Kill the VM after this long (`90s`, `40m`, `1h`; seconds when bare).
    #[arg(long, default_value = DEFAULT_TIMEOUT, value_parser = parse_duration)]
    pub timeout: Duration,
    /// The command and its arguments (after `--`; default `uname -a`).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub command: Vec<String>,
}

pub fn vm(args: Args) -> Result<ExitCode> {
    let kernel = kernels::resolve(&args.kernel)?;
    let command: Vec<String> = if args.command.is_empty() {
        guest::DEFAULT_COMMAND
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        args.command
    };
    let cwd = env::current_dir().context("cannot read the current directory")?;
    let env = guest::environment(|name| env::var(name).ok(), &[]);
    let outcome = run(&kernel, &cwd, &env, &command, args.timeout, None)?;
    Ok(ExitCode::from(u8::try_from(outcome.code).unwrap_or(1)))
}

/// Installs the VM tools when missing (as `cargo xtask setup` does).
pub fn ensure_tools() -> Result<()> {
    crate::apt::packages().map(drop)
}

/// Boots `kernel` once to run `command` (as root, in `cwd`, with `env`).
pub fn run(
    kernel: &kernels::Kernel,
    cwd: &Path,
    env: &[(String, String)],
    command: &[String],
    timeout: Duration,
    capture: Option<qemu::Capture>,
) -> Result<qemu::Outcome> {
    ensure_tools()?;
    let prepared = fetch::prepare(kernel)?;
    let run_dir = RunDir::create()?;
    let script = run_dir.0.join("run.sh");
    fs::write(&script, guest::run_script(cwd, env, command)?)
        .with_context(|| format!("cannot write {}", script.display()))?;
    let cmdline = guest::kernel_cmdline(&script, &prepared.modules)?;
    let console_log = run_dir.0.join("console.log");
    let machine = qemu::Machine {
        image: &prepared.image,
        initramfs: &prepared.initramfs,
        cmdline: &cmdline,
        console_log: &console_log,
        status_log: &run_dir.0.join("status.log"),
    };
    let outcome = qemu::boot(&machine, &prepared.release, timeout, capture);
    if outcome.is_err() {
        // Kept for reading: the error names the console log.
        run_dir.keep();
    }
    outcome
}

/// `${cache}/runs/<pid>-<n>`: the run script and the logs of one VM,
/// removed afterwards unless kept.
struct RunDir(PathBuf, bool);

impl RunDir {
    fn create() -> Result<RunDir> {
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let n = COUNT.fetch_add(1, Ordering::SeqCst);
        let dir = kernels::cache_root()?
            .join("runs")
            .join(format!("{}-{n}", std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
        }
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(RunDir(dir, false))
    }

    fn keep(mut self) {
        self.1 = true;
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if !self.1 {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// `90`, `90s`, `40m`, `1h`.
pub fn parse_duration(value: &str) -> Result<Duration> {
    let value = value.trim();
    let (number, unit) = match value.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => value.split_at(i),
        None => (value, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| anyhow!("`{value}` is not a duration such as 90s, 40m or 1h"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => bail!("`{value}` is not a duration such as 90s, 40m or 1h"),
    };
    if secs == 0 {
        bail!("a timeout of zero would kill every VM at once");
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("40m").unwrap(), Duration::from_secs(2400));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("m").is_err());
    }

    #[test]
    fn arguments_after_the_kernel_are_the_command() {
        let cli = Cli::try_parse_from(["vm", "6.1", "--", "sh", "-c", "exit 3"]).unwrap();
        assert_eq!(cli.args.kernel, "6.1");
        assert_eq!(cli.args.command, ["sh", "-c", "exit 3"]);
        assert_eq!(cli.args.timeout, Duration::from_secs(2400));
        let cli = Cli::try_parse_from(["vm", "--timeout", "2m", "5.10", "--", "ls", "-l"]).unwrap();
        assert_eq!(cli.args.timeout, Duration::from_secs(120));
        assert_eq!(cli.args.command, ["ls", "-l"]);
        let cli = Cli::try_parse_from(["vm", "6.12"]).unwrap();
        assert!(cli.args.command.is_empty());
        assert!(Cli::try_parse_from(["vm"]).is_err());
    }
}
