//! The closed-port storm with one generator thread, with no tracer and
//! under a freshly started `tracer` (default mode), side by side in every
//! run. With one generator on a machine of two or more CPUs, tracer's own
//! process has a CPU of its own, so the rate ratio shows what the kernel
//! programs add to the generator's path (the target: ≥ 0.95).

use std::fmt::Write as _;

use anyhow::Result;

use super::observer::Mode;
use super::stats::{median, range, thousands};
use super::storm::Kind;
use super::{Bench, Sample};

/// Rate with tracer / without, one generator thread.
pub const TARGET: f64 = 0.95;

/// One run's pair.
pub struct Pair {
    pub none: Sample,
    pub tracer: Sample,
}

impl Pair {
    fn rate_ratio(&self) -> Option<f64> {
        let base = self.none.outcome.rate();
        (base > 0.0).then(|| self.tracer.outcome.rate() / base)
    }

    fn cpu_ratio(&self) -> Option<f64> {
        let with = self.tracer.cpu_per_op();
        (with > 0.0).then(|| self.none.cpu_per_op() / with)
    }
}

/// Run `run`'s pair, in an order that alternates from run to run.
pub fn measure(bench: &Bench, run: u32, count: u64) -> Result<Pair> {
    let mut order = [Mode::None, Mode::Tracer];
    if run % 2 == 1 {
        order.reverse();
    }
    let (mut none, mut tracer) = (None, None);
    for mode in order {
        let (sample, _) = bench.measure_with(run, mode, Kind::Closed, count, 1)?;
        match mode {
            Mode::None => none = Some(sample),
            _ => tracer = Some(sample),
        }
    }
    match (none, tracer) {
        (Some(none), Some(tracer)) => Ok(Pair { none, tracer }),
        _ => anyhow::bail!("one-thread pair incomplete"),
    }
}

/// The row of "Against the targets".
pub fn target_row(pairs: &[Pair], t: &mut String) {
    let rates: Vec<f64> = pairs.iter().filter_map(Pair::rate_ratio).collect();
    let Some(r) = median(rates) else { return };
    let _ = writeln!(
        t,
        "| closed rate ratio with tracer, 1 generator thread | ≥ {TARGET} | {r:.3} | {} |",
        if r >= TARGET { "met" } else { "**missed**" }
    );
}

/// The section: per-run rates and both ratios.
pub fn render(pairs: &[Pair], t: &mut String) {
    if pairs.is_empty() {
        return;
    }
    let rates: Vec<f64> = pairs.iter().filter_map(Pair::rate_ratio).collect();
    let cpus: Vec<f64> = pairs.iter().filter_map(Pair::cpu_ratio).collect();
    let (rlo, rhi) = range(&rates);
    let (clo, chi) = range(&cpus);
    let _ = writeln!(
        t,
        "### Closed storm, one generator thread\n\n\
         The closed storm again with one generator thread, with no tracer and under \
         `tracer` (default mode), side by side in each run: tracer's process has a CPU \
         of its own, so the rate ratio is what the kernel programs add to the \
         generator's path. Rate ratio median {} ({rlo:.2}–{rhi:.2}), CPU-cost ratio \
         median {} ({clo:.2}–{chi:.2}).\n\n\
         | run | no tracer | tracer | tracer / none |\n| ---: | ---: | ---: | ---: |",
        median(rates.clone()).map_or("–".into(), |r| format!("{r:.3}")),
        median(cpus.clone()).map_or("–".into(), |r| format!("{r:.3}")),
    );
    for p in pairs {
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} |",
            p.none.run + 1,
            thousands(p.none.outcome.rate()),
            thousands(p.tracer.outcome.rate()),
            p.rate_ratio().map_or("–".into(), |r| format!("{r:.3}"))
        );
    }
    t.push('\n');
}
