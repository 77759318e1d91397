//! tracer: why are clients getting "connection reset by peer"?
//!
//! Pipeline, in file order: probes (hooks, choice, attach) -> decode (ring
//! buffer bytes to records) -> attribute (owners) -> enrich (events) ->
//! output (json, text).

mod aggregate;
mod attribute;
mod cli;
mod clock;
mod container;
mod decode;
mod diagnose;
mod enrich;
mod event;
mod exchange;
mod kernel;
mod metrics;
mod output;
mod overflow;
mod probes;
mod probes_cmd;
mod session;
mod snapshot;
mod storm;
mod task_iter;
mod watch;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, WatchArgs};

fn main() -> ExitCode {
    single_malloc_arena();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp(None)
        .init();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // --help and --version are not errors.
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tracer: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = match cli.command.unwrap_or(Command::Watch(WatchArgs::default())) {
        Command::Watch(args) => runtime.block_on(watch::run(args)).map(|_| ()),
        Command::Diagnose(args) => runtime.block_on(diagnose::run(args)),
        Command::Probes(args) => probes_cmd::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tracer: {}", one_line(&e));
            ExitCode::from(1)
        }
    }
}

/// The whole error chain on one line.
fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ").replace('\n', " ")
}

/// One malloc arena for all threads. The snapshot is built on blocking
/// threads; with an arena per thread the memory it freed stayed with those
/// arenas (some 28 MB on a host with 100k sockets) instead of going back
/// to the system. tracer's threads seldom allocate at once: no contention.
fn single_malloc_arena() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; called first thing
    // in main, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
