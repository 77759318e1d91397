//! `cargo xtask bench`: placeholder. There are no benchmarks yet; this says so
//! and exits 2 rather than pretending to have measured anything.

use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Arguments for the future benchmark runner (ignored for now).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

pub fn bench(_args: Args) -> ExitCode {
    eprintln!("xtask bench: not implemented yet");
    ExitCode::from(2)
}
