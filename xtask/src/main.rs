//! `cargo xtask`: developer tasks for the tracer workspace.
//!
//! One module per command; `util` holds the shared helpers (running commands
//! with clear errors, locating the workspace).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod apt;
mod bench;
mod run;
mod setup;
mod test;
mod util;
mod vm;

#[derive(Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    about = "Developer tasks for tracer",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what the build and the tests need and is missing (idempotent):
    /// rust-src for nightly, bpf-linker 0.13 against stable's libLLVM, and the
    /// Debian tools the tests use.
    Setup,
    /// Set up, build tracer in release mode and run it as root
    /// (`cargo xtask run -- ARGS`; ARGS default to `watch`).
    Run(run::Args),
    /// Set up, build tracer (debug) and run the workspace tests
    /// (`cargo xtask test -- ARGS` passes ARGS to `cargo test`).
    Test(test::Args),
    /// Benchmarks: RST storms and EMFILE bursts with no tracer, tracer and bpftrace, side by side (docs/benchmarks.md).
    Bench(bench::Args),
    /// Run a command as root in another Debian kernel under qemu (TCG), with
    /// the host's / read-only below a tmpfs overlay, in the current directory
    /// (`cargo xtask vm 6.1 -- uname -r`; kernels: 5.10, 6.1, 6.12 or a release).
    Vm(vm::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::setup(setup::Scope::All).map(|()| ExitCode::SUCCESS),
        Command::Run(args) => run::run(args),
        Command::Test(args) => test::test(args),
        Command::Bench(args) => Ok(bench::bench(args)),
        Command::Vm(args) => vm::vm(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
