//! `cargo xtask run [-- ARGS]`: set up the toolchain, build tracer in release
//! mode and replace this process with `target/release/tracer ARGS` (default
//! `watch`), through `sudo -E` when not root.
//!
//! Replacing the process (exec) rather than waiting on a child means the exit
//! code is tracer's own and Ctrl-C reaches tracer with nothing in between
//! that could die first.

use std::os::unix::process::CommandExt as _;
use std::process::{Command, ExitCode};

use anyhow::{Result, anyhow, bail};

use crate::setup::{self, Scope};
use crate::util::{self, describe, find_program, is_root, target_dir};

#[derive(clap::Args)]
pub struct Args {
    /// Arguments for tracer (default: `watch`).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    pub args: Vec<String>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    // Only the toolchain steps: the Debian test tools are not needed to run.
    setup::setup(Scope::Build)?;

    let mut build = util::cargo();
    build.args(["build", "--release", "-p", "tracer"]);
    setup::use_bpf_linker(&mut build)?;
    util::run(&mut build, "fix the build errors above, then retry")?;

    let bin = target_dir().join("release").join("tracer");
    if !bin.is_file() {
        bail!(
            "the build succeeded but {} does not exist; check CARGO_TARGET_DIR",
            bin.display()
        );
    }
    let tracer_args = if args.args.is_empty() {
        vec!["watch".to_owned()]
    } else {
        args.args
    };

    let mut cmd = if is_root() {
        Command::new(&bin)
    } else {
        let sudo = find_program("sudo").ok_or_else(|| {
            anyhow!(
                "tracer needs root (CAP_BPF, CAP_PERFMON) and sudo is not installed; \
                 run `cargo xtask run` as root"
            )
        })?;
        let mut cmd = Command::new(sudo);
        cmd.arg("-E").arg(&bin);
        cmd
    };
    cmd.args(&tracer_args);
    // exec only returns on failure.
    let err = cmd.exec();
    Err(anyhow!("could not start `{}`: {err}", describe(&cmd)))
}
