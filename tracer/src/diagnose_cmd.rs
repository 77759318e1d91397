//! `tracer diagnose`: a snapshot at start, a window of events through the
//! watch event loop, a snapshot at the end, then one verdict (the engine is
//! `diagnose`; `output` prints it). Above both `watch` and `diagnose`.

use std::cell::RefCell;
use std::io::Write as _;
use std::rc::Rc;

use anyhow::Context as _;

use crate::clock::Clock;
use crate::diagnose::collect::{self, DiagnoseSink};
use crate::diagnose::timeline::Timeline;
use crate::diagnose::window::Window;
use crate::diagnose::{TrafficStart, findings, full_host_view, html, sparkline, stuck, upstream};
use crate::output;
use crate::report::Report;
use crate::session::{Session, ring_bytes};
use crate::snapshot::{self, Snapshot};
use crate::watch::{Loop, Signals};

/// What `diagnose` is asked (built from the command line in `cli.rs`).
pub struct Config {
    /// `duration` `None`: [`DEFAULT_WINDOW_S`].
    pub common: crate::watch::Common,
    /// `--report FILE`: the HTML page.
    pub report: Option<std::path::PathBuf>,
}

/// Default observation window.
pub const DEFAULT_WINDOW_S: f64 = 30.0;

pub async fn run(args: Config) -> anyhow::Result<()> {
    let mut signals = Signals::install()?;
    let format = args
        .common
        .format
        .unwrap_or_else(output::Format::default_for_stdout);
    let window_s = args.common.duration.unwrap_or(DEFAULT_WINDOW_S);
    let ring = ring_bytes(args.common.ring_buffer_kib)?;
    let kfilter = args.common.kernel_filter(false);
    // An unwritable report path fails now, not after the window.
    let mut report_file = args
        .report
        .as_deref()
        .map(|path| {
            std::fs::File::create(path)
                .with_context(|| format!("cannot create the report file {}", path.display()))
        })
        .transpose()?;
    let mut session = Session::start(&kfilter, ring, &args.common.no_mechanism)?;
    let window = Rc::new(RefCell::new(Window::default()));
    let ufilter = args.common.user_filter();
    let started = Clock::boot_now();
    let timeline = Rc::new(RefCell::new(Timeline::new(started)));
    let gauges = collect::gauge_sampler().context("starting the timeline's gauge collector")?;
    let sink = DiagnoseSink {
        prev_exchanges: None,
        window: window.clone(),
        timeline: timeline.clone(),
        gauges: gauges.clone(),
    };
    let kernel = session.caps.release.clone();
    let mut lp = Loop::new(&mut session, Box::new(sink), ufilter, false)?;
    // The window starts now, with the hooks attached; the start-up
    // snapshot runs meanwhile and what happens during it waits for it.
    let start_conns = Rc::new(RefCell::new(None));
    {
        let (timeline, start_conns) = (timeline.clone(), start_conns.clone());
        lp.on_snapshot = Some(Box::new(move |s: &Snapshot| {
            collect::seed(&mut timeline.borrow_mut(), s);
            *start_conns.borrow_mut() = Some(upstream::outbound_counts(&stuck::conn_views(s)));
        }));
    }
    lp.poll_quiet_namespaces_too();
    lp.start_snapshot();
    let start = TrafficStart {
        at_ns: Clock::boot_now(),
        totals: lp.exchanges.as_ref().map(|x| x.read()).unwrap_or_default(),
        outbound: None,
    };
    log::info!("attached; observing for {window_s} s");
    lp.run(Some(window_s), &mut signals).await?;
    // No event after the window matters: detach while the final snapshot
    // runs (the kernel takes tens of ms per BTF-attached program).
    lp.session.detach_in_background();
    let start = TrafficStart {
        outbound: start_conns.borrow_mut().take(),
        ..start
    };
    collect::finish_gauges(&gauges, &timeline).await;
    let elapsed_s = (Clock::boot_now().saturating_sub(started)) as f64 / 1e9;
    let close_wait = lp.attr.close_wait_keys();
    let end = tokio::task::spawn_blocking(move || snapshot::take_snapshot_expecting(&close_wait))
        .await
        .map_err(|e| anyhow::anyhow!("final snapshot task: {e}"))?
        .map_err(|e| {
            anyhow::anyhow!("final snapshot of the host's sockets: {e}; {}", e.advice())
        })?;
    log::debug!("final snapshot in");
    let w = window.borrow();
    let traffic = start.until(&TrafficStart {
        at_ns: Clock::boot_now(),
        totals: lp.exchanges.as_ref().map(|x| x.read()).unwrap_or_default(),
        outbound: None,
    });
    let host = full_host_view(&end, &traffic, &lp.attr, started, elapsed_s);
    let found = findings::scope(
        findings::findings(&w, &host),
        &args.common.pids,
        &args.common.ports,
        &host,
    );
    let rep = Report::new(elapsed_s, &w.counters, found);
    let mut t = timeline.borrow_mut();
    t.finish((elapsed_s.round() as usize).max(1));
    output::print_report(&rep, format)?;
    if format == output::Format::Text {
        print_sparklines(&rep, &t)?;
    }
    if let (Some(file), Some(path)) = (report_file.as_mut(), args.report.as_deref()) {
        let meta = html::Meta {
            host: nix::sys::utsname::uname()
                .map(|u| u.nodename().to_string_lossy().into_owned())
                .unwrap_or_default(),
            kernel,
            version: env!("CARGO_PKG_VERSION"),
            command: command_line(),
            started: Clock::new().rfc3339(started).to_string(),
        };
        let page = html::render(&rep, &t, &host, &meta);
        file.write_all(page.as_bytes())
            .and_then(|()| file.flush())
            .with_context(|| format!("writing the report file {}", path.display()))?;
        log::info!("report written to {}", path.display());
    }
    Ok(())
}

/// The timeline under the text verdict: one sparkline per series of each
/// blamed process, one block per second.
fn print_sparklines(r: &Report, t: &Timeline) -> anyhow::Result<()> {
    let mut text = String::new();
    for (pid, comm) in html::blamed(r) {
        let Some(p) = t.procs.get(&pid) else { continue };
        let lines = sparkline::lines(p);
        if lines.is_empty() {
            continue;
        }
        if text.is_empty() {
            let unit = if t.step_s == 1 {
                "second".to_string()
            } else {
                format!("{} s", t.step_s)
            };
            text.push_str(&format!("\nTimeline (one block per {unit}):\n"));
        }
        match comm {
            Some(c) => text.push_str(&format!("  pid {pid} ({c})\n")),
            None => text.push_str(&format!("  pid {pid}\n")),
        }
        for l in lines {
            text.push_str(&l);
            text.push('\n');
        }
    }
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if output::is_closed_pipe(&e) => Ok(()),
        other => Ok(other?),
    }
}

/// How tracer was started, each argument shell-quoted where it needs it.
fn command_line() -> String {
    std::env::args_os()
        .map(|a| {
            let a = a.to_string_lossy().into_owned();
            let plain = !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&b));
            if plain {
                a
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
