//! tracer: why are clients getting "connection reset by peer"?
//!
//! Pipeline, in file order: probes (hooks, choice, attach) -> decode (ring
//! buffer bytes to records) -> attribute (owners) -> enrich (events) ->
//! sinks (`sink::Sink`: output's json, text, file; metrics; diagnose's
//! window). `event` and `report` (the verdict) are what sinks see; the
//! commands (`watch`, `diagnose_cmd`, `probes_cmd`) sit on top; CLI types
//! (`cli`) stop at this file, which converts them into each command's
//! `Config`.

mod aggregate;
mod attribute;
mod cli;
mod clock;
mod container;
mod decode;
mod diagnose;
mod diagnose_cmd;
mod enrich;
mod event;
mod exchange;
mod kernel;
#[cfg(test)]
mod line_cost_tests;
mod map_sizes;
mod metrics;
mod output;
mod overflow;
mod probes;
mod probes_cmd;
mod report;
mod session;
mod sink;
mod snapshot;
mod storm;
mod task_iter;
mod timestamp;
mod watch;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, DiagnoseArgs, WatchArgs};

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
        Command::Watch(args) => runtime.block_on(watch::run(watch_config(args))).map(|_| ()),
        Command::Diagnose(args) => runtime.block_on(diagnose_cmd::run(diagnose_config(args))),
        Command::Probes(a) => probes_cmd::run(probes_cmd::Config {
            format: a.format,
            no_mechanism: a.no_mechanism,
            verbose: a.verbose,
        }),
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

/// `watch`'s own config from its command line (CLI types stop here).
fn watch_config(a: WatchArgs) -> watch::Config {
    watch::Config {
        common: common_config(a.common),
        states: a.states,
        summary_every: a.summary_every,
        sink: output::SinkConfig {
            output: a.output,
            metrics_addr: a.metrics_addr,
        },
    }
}

/// `diagnose`'s own config from its command line.
fn diagnose_config(a: DiagnoseArgs) -> diagnose_cmd::Config {
    diagnose_cmd::Config {
        common: common_config(a.common),
        report: a.report,
    }
}

/// What `watch` and `diagnose` share.
fn common_config(c: cli::CommonArgs) -> watch::Common {
    watch::Common {
        storm_threshold: c.storm_threshold(),
        format: c.format,
        duration: c.duration,
        ring_buffer_kib: c.ring_buffer_kib,
        pids: c.pid,
        ports: c.port,
        comm: c.comm,
        no_mechanism: c.no_mechanism,
    }
}
