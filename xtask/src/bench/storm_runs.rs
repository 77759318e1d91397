//! The storms of `cargo xtask bench`: every storm under every observer,
//! side by side in each run, the one-generator-thread closed storm, then
//! delivery and the BPF profile; the section of docs/benchmarks.md between
//! the `bench` markers.

use anyhow::Result;

use super::observer::Mode;
use super::storm::Kind;
use super::{Args, Bench, command_line, delivery, machine, one_thread, profile, report, stats};
use crate::util::workspace_root;

pub fn run(bench: &Bench, args: &Args) -> Result<()> {
    let sizes = |kind| match kind {
        Kind::Emfile => args.accepts,
        _ => args.connects,
    };

    // Warm-up (not recorded): first connects and page faults are slower.
    for kind in Kind::ALL {
        bench.storm(kind, sizes(kind).div_ceil(10))?;
    }

    let mut samples = Vec::new();
    let mut starts = Vec::new();
    let mut one_thread = Vec::new();
    for run in 0..args.runs {
        for (k, kind) in Kind::ALL.into_iter().enumerate() {
            // Side by side: the four modes of one storm back to back, in an
            // order that rotates with the run and the storm.
            let mut order = Mode::ALL;
            order.rotate_left((run as usize + k) % Mode::ALL.len());
            let mut line = format!("bench: run {}/{} {}:", run + 1, args.runs, kind.name());
            for mode in order {
                let (sample, start) = bench.measure(run, mode, kind, sizes(kind))?;
                line.push_str(&format!(
                    " {} {}/s;",
                    mode.name(),
                    stats::thousands(sample.outcome.rate())
                ));
                samples.push(sample);
                starts.extend(start);
            }
            println!("{}", line.trim_end_matches(';'));
        }
        if bench.workers > 1 {
            let pair = one_thread::measure(bench, run, args.connects)?;
            println!(
                "bench: run {}/{} closed, 1 generator thread: none {}/s; tracer {}/s",
                run + 1,
                args.runs,
                stats::thousands(pair.none.outcome.rate()),
                stats::thousands(pair.tracer.outcome.rate())
            );
            one_thread.push(pair);
        }
    }

    let delivered = delivery::run(bench, &sizes, &mut starts)?;
    let half = |kind| sizes(kind).div_ceil(2);
    let profiles = profile::run(bench, &half)?;
    let report = report::Report {
        profile: profile::render(&profiles, &samples, bench.workers),
        command: command_line(args),
        machine: machine::Machine::probe(&bench.paths.tracer),
        workers: bench.workers,
        samples,
        starts,
        delivered,
        one_thread,
    };
    let text = report.render();
    println!("\n{text}");
    if !args.no_doc {
        let doc = workspace_root().join("docs").join("benchmarks.md");
        report::write_doc(&doc, &text)?;
        println!("bench: wrote {}", doc.display());
    }
    Ok(())
}
