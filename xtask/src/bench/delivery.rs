//! The delivery run: tracer writes its JSON lines to a file while each storm
//! runs once at full speed; the lines of each storm are then counted against
//! what the kernel counted (Tcp OutRsts of the bench namespace) and what the
//! generator did.

use std::fs;
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use serde_json::Value;

use super::observer::{Mode, Observer};
use super::sandbox;
use super::stats::thousands;
use super::storm::{Kind, Outcome};
use super::{Bench, Start};

/// What tracer delivered for one storm.
#[derive(Clone, Copy, Debug, Default)]
pub struct Delivery {
    pub kind: Option<Kind>,
    /// Which tracer mode (default: storms counted in the kernel, or
    /// `--per-rst`).
    pub mode: Option<Mode>,
    pub outcome: Outcome,
    /// Resets of the `rst_sent` lines whose `netns` is the bench namespace
    /// (the sum of `count`, 1 where absent).
    pub rst_sent: u64,
    /// Those lines.
    pub rst_sent_lines: u64,
    /// Of those resets, attributed to the generator's pid.
    pub rst_sent_attributed: u64,
    pub rst_received: u64,
    /// Sum of `count` of `accept_failed` lines in the bench namespace.
    pub accept_failed: u64,
    /// Sum of `count` of `lost` lines (host-wide: lost records carry no namespace).
    pub lost: u64,
    /// Every line written during the storm and its drain.
    pub lines: u64,
    pub unparsed: u64,
    /// tracer CPU over the storm and its drain (user, system seconds).
    pub cpu: (f64, f64),
}

/// Aggregated accept failures are flushed once a second: wait this long
/// after a storm before closing its segment.
const FLUSH_WAIT: Duration = Duration::from_millis(1500);

pub fn run(
    bench: &Bench,
    sizes: &dyn Fn(Kind) -> u64,
    starts: &mut Vec<Start>,
) -> Result<Vec<Delivery>> {
    let mut all = Vec::new();
    for mode in Mode::TRACERS {
        all.extend(run_mode(bench, mode, sizes, starts)?);
    }
    Ok(all)
}

/// Every storm once under one tracer `mode` writing to a file.
fn run_mode(
    bench: &Bench,
    mode: Mode,
    sizes: &dyn Fn(Kind) -> u64,
    starts: &mut Vec<Start>,
) -> Result<Vec<Delivery>> {
    let file = bench.paths.scratch.join("tracer-events.jsonl");
    println!(
        "bench: delivery run, {} (output to {})",
        mode.name(),
        file.display()
    );
    let mut obs = Observer::start(mode, &bench.paths, Some(&file))?;
    let mut segments = Vec::new();
    let mut offset = settled_len(&file)?;
    for kind in Kind::ALL {
        let before = obs.cpu()?;
        let outcome = bench.storm(kind, sizes(kind))?;
        obs.settle(Duration::from_secs(10))?;
        sandbox::sleep(FLUSH_WAIT)?;
        let end = settled_len(&file)?;
        obs.check_alive()?;
        let cpu = before.delta_secs(&obs.cpu()?);
        segments.push((kind, outcome, cpu, offset, end));
        offset = end;
    }
    starts.push(Start {
        mode,
        attach: obs.attach,
        peak_rss_kib: obs.peak_rss_kib()?,
    });
    obs.stop()?;

    let counted = count_segments(&file, &segments, bench.ns.inode);
    // The file is large (hundreds of MB at the default sizes): not kept.
    let _ = fs::remove_file(&file);
    let mut out = counted?;
    for (d, (kind, outcome, cpu, _, _)) in out.iter_mut().zip(&segments) {
        d.kind = Some(*kind);
        d.mode = Some(mode);
        d.outcome = *outcome;
        d.cpu = *cpu;
    }
    Ok(out)
}

type Segment = (Kind, Outcome, (f64, f64), u64, u64);

/// Streams the file once, counting each segment's lines.
fn count_segments(file: &Path, segments: &[Segment], netns: u64) -> Result<Vec<Delivery>> {
    let f = fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let mut reader = BufReader::with_capacity(1 << 20, f);
    let mut out: Vec<Delivery> = segments.iter().map(|_| Delivery::default()).collect();
    let (mut pos, mut line) = (0u64, Vec::new());
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .with_context(|| format!("reading {}", file.display()))?;
        if n == 0 {
            break;
        }
        let at = pos;
        pos += n as u64;
        let found = segments.iter().position(|s| s.3 <= at && at < s.4);
        if let (Some(i), Some(d)) = (found, found.and_then(|i| out.get_mut(i))) {
            count_line(d, &line, netns, segments[i].1.pid);
        }
    }
    Ok(out)
}

/// The file's length once it has stopped growing for 200 ms (at most 10 s).
fn settled_len(path: &Path) -> Result<u64> {
    let len = || -> Result<u64> {
        Ok(fs::metadata(path)
            .with_context(|| format!("stat {}", path.display()))?
            .len())
    };
    let start = Instant::now();
    let mut last = len()?;
    loop {
        sandbox::sleep(Duration::from_millis(200))?;
        let now = len()?;
        if now == last || start.elapsed() > Duration::from_secs(10) {
            return Ok(now);
        }
        last = now;
    }
}

/// Counts one line of a storm's segment into `d`.
fn count_line(d: &mut Delivery, line: &[u8], netns: u64, pid: u32) {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    if line.is_empty() {
        return;
    }
    d.lines += 1;
    let Ok(v) = serde_json::from_slice::<Value>(line) else {
        d.unparsed += 1;
        return;
    };
    let event = v.get("event").and_then(Value::as_str).unwrap_or_default();
    let count = v.get("count").and_then(Value::as_u64);
    if event == "lost" {
        d.lost += count.unwrap_or(0);
        return;
    }
    // A storm line stands for `count` resets, a line of one reset has none.
    let resets = count.unwrap_or(1);
    if v.get("netns").and_then(Value::as_u64) != Some(netns) {
        return;
    }
    match event {
        "rst_sent" => {
            d.rst_sent += resets;
            d.rst_sent_lines += 1;
            if v.get("pid").and_then(Value::as_u64) == Some(u64::from(pid)) {
                d.rst_sent_attributed += resets;
            }
        }
        "rst_received" => d.rst_received += resets,
        "accept_failed" => d.accept_failed += count.unwrap_or(0),
        _ => {}
    }
}

/// The delivery table.
pub fn render(delivered: &[Delivery], t: &mut String) {
    use std::fmt::Write as _;
    let _ = writeln!(
        t,
        "### Delivery (one run per tracer mode, JSON to a file)\n\n\
         Lines whose `netns` is the bench namespace; `lost` lines are host-wide. \
         TcpOutRsts Δ is the bench namespace's counter across the storm. Resets: the sum of \
         `count` over `rst_sent` lines (1 where absent: a line of one reset). Events: the \
         resets of a RST storm (sent and received, what its lines stand for), the failed \
         accepts of the EMFILE burst.\n"
    );
    let _ = writeln!(
        t,
        "| storm | tracer | operations | rate /s | TcpOutRsts Δ | rst_sent resets | rst_sent lines | \
         of the resets with the generator's pid | rst_received resets | accept_failed (sum of count) | \
         lost | lines | tracer CPU ms per 100k events (user + system) |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for d in delivered {
        let Some(kind) = d.kind else { continue };
        // Events: what the lines stand for (a storm line counts its
        // resets, an accept_failed line its failures), so the modes compare.
        let events = match kind {
            Kind::Emfile => d.accept_failed,
            _ => d.rst_sent + d.rst_received,
        };
        let per_line = if events > 0 {
            format!(
                "{:.0} + {:.0}",
                d.cpu.0 * 1e8 / events as f64,
                d.cpu.1 * 1e8 / events as f64
            )
        } else {
            "–".into()
        };
        let n = |v: u64| thousands(v as f64);
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {per_line} |",
            kind.name(),
            d.mode.map_or("?", Mode::name),
            n(d.outcome.ops),
            thousands(d.outcome.rate()),
            n(d.outcome.out_rsts),
            n(d.rst_sent),
            n(d.rst_sent_lines),
            n(d.rst_sent_attributed),
            n(d.rst_received),
            n(d.accept_failed),
            n(d.lost),
            n(d.lines),
        );
    }
    let _ = writeln!(t);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_the_bench_namespace_and_sums_lost() {
        let text = concat!(
            r#"{"event":"rst_sent","pid":7,"netns":5}"#,
            "\n",
            r#"{"event":"rst_sent","pid":null,"netns":5}"#,
            "\n",
            r#"{"event":"rst_sent","pid":7,"netns":6}"#,
            "\n",
            r#"{"event":"rst_received","pid":7,"netns":5}"#,
            "\n",
            r#"{"event":"rst_sent","pid":7,"netns":5,"count":500}"#,
            "\n",
            r#"{"event":"accept_failed","count":40,"netns":5}"#,
            "\n",
            r#"{"event":"lost","count":3}"#,
            "\n",
            "not json\n",
        );
        let mut d = Delivery::default();
        for line in text.split_inclusive('\n') {
            count_line(&mut d, line.as_bytes(), 5, 7);
        }
        assert_eq!(
            (
                d.rst_sent,
                d.rst_sent_lines,
                d.rst_sent_attributed,
                d.rst_received
            ),
            (502, 3, 501, 1)
        );
        assert_eq!(
            (d.accept_failed, d.lost, d.lines, d.unparsed),
            (40, 3, 8, 1)
        );
    }
}
