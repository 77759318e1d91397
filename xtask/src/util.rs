//! Shared helpers: locating the workspace, finding programs, and running
//! commands so that a failure says what ran, how it failed and what to do.

use std::env;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use anyhow::{Context as _, Result, bail};

/// The workspace root: the parent of this crate's manifest directory.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// The cargo target directory: `CARGO_TARGET_DIR` (relative to the workspace
/// root when relative) or `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    let root = workspace_root();
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}

/// A `cargo` command run from the workspace root. Uses the cargo that runs
/// xtask (`$CARGO`) so that the toolchain stays the same.
pub fn cargo() -> Command {
    let program = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(program);
    cmd.current_dir(workspace_root());
    cmd
}

/// `cargo test` over the workspace as `cargo xtask test` runs it (every
/// crate but the eBPF one, no fail-fast), with `TRACER_BIN` set to `bin`;
/// the host run and the matrix's listing of executables share it, so the
/// listing never rebuilds.
pub fn cargo_test(bin: &std::path::Path) -> Command {
    let mut cmd = cargo();
    cmd.args([
        "test",
        "--workspace",
        "--exclude",
        "tracer-ebpf",
        "--no-fail-fast",
    ])
    .env("TRACER_BIN", bin);
    cmd
}

/// Looks a program up in PATH, then in the sbin/bin directories that a
/// non-login PATH may lack.
pub fn find_program(name: &str) -> Option<PathBuf> {
    if let Ok(path) = which::which(name) {
        return Some(path);
    }
    [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ]
    .iter()
    .map(|dir| Path::new(dir).join(name))
    .find(|path| path.is_file())
}

/// True when the effective user is root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The command line as a person would type it, for messages.
pub fn describe(cmd: &Command) -> String {
    let mut parts: Vec<String> = cmd
        .get_envs()
        .filter_map(|(key, value)| {
            value.map(|v| format!("{}={}", key.to_string_lossy(), v.to_string_lossy()))
        })
        .collect();
    parts.push(cmd.get_program().to_string_lossy().into_owned());
    parts.extend(cmd.get_args().map(quote));
    parts.join(" ")
}

fn quote(arg: &OsStr) -> String {
    let s = arg.to_string_lossy();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:+,@".contains(c))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Describes how a finished command ended: "exit code N" or "signal N".
pub fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("signal {sig}"),
        (None, None) => "unknown status".to_owned(),
    }
}

/// Error for a command that could not be started at all.
fn spawn_error(cmd: &Command, err: std::io::Error) -> anyhow::Error {
    anyhow::anyhow!(
        "could not start `{}`: {err}; check that `{}` is installed and on PATH",
        describe(cmd),
        cmd.get_program().to_string_lossy()
    )
}

/// Runs a command with inherited stdio; fails unless it exits 0.
/// `hint` says what to do when it fails.
pub fn run(cmd: &mut Command, hint: &str) -> Result<()> {
    let status = cmd.status().map_err(|e| spawn_error(cmd, e))?;
    if !status.success() {
        bail!(
            "`{}` failed ({}); {hint}",
            describe(cmd),
            describe_status(status)
        );
    }
    Ok(())
}

/// Runs a command and returns its stdout; fails (quoting stderr) unless it
/// exits 0.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| spawn_error(cmd, e))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        bail!(
            "`{}` failed ({}): {}",
            describe(cmd),
            describe_status(out.status),
            stderr.trim()
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("`{}` printed non-UTF-8", describe(cmd)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_quotes_what_a_shell_would_split() {
        let mut cmd = Command::new("cargo");
        cmd.args(["test", "--", "a b", "it's"]).env("X", "1");
        assert_eq!(describe(&cmd), r"X=1 cargo test -- 'a b' 'it'\''s'");
    }

    #[test]
    fn workspace_root_holds_the_workspace_manifest() {
        assert!(workspace_root().join("Cargo.toml").is_file());
        assert!(workspace_root().join("xtask").is_dir());
    }
}
