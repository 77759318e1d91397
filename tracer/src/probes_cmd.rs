//! `tracer probes`: attach nothing permanent; print each hook, the mechanism
//! chosen on this kernel and why the others were refused.

use std::io::Write;

use crate::output::Format;
use crate::probes::table::Kind;
use crate::session::{KernelFilter, Session};

/// What `probes` is asked (built from the command line in `main.rs`).
pub struct Config {
    /// `None`: text on a terminal, JSON otherwise.
    pub format: Option<Format>,
    pub no_mechanism: Vec<Kind>,
    /// Text: the kernel's whole answer under each refusal.
    pub verbose: bool,
}

pub fn run(args: Config) -> anyhow::Result<()> {
    let format = args.format.unwrap_or_else(Format::default_for_stdout);
    // Attaching for real is the only way to know what the kernel accepts
    // (fexit may be refused at load); the session is dropped right after,
    // which detaches everything.
    let session = Session::start(&KernelFilter::default(), 4096 * 1024, &args.no_mechanism)?;
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => {
            // `caps`: what the kernel offers, as the selection saw it (the
            // fixtures of the selection tests are recorded from it).
            let doc = serde_json::json!({
                "v": crate::event::SCHEMA_VERSION,
                "kernel": session.caps.release,
                "hooks": session.hooks,
                "caps": session.caps,
            });
            writeln!(out, "{doc}")?;
        }
        Format::Text => {
            writeln!(out, "kernel {}", session.caps.release)?;
            for h in &session.hooks {
                let chosen = match (&h.chosen, &h.not_needed) {
                    (Some(c), _) => format!("{} ({})", c.mechanism, c.targets.join(", ")),
                    (None, Some(why)) => why.clone(),
                    (None, None) if h.required => "NOT ATTACHED (required)".into(),
                    (None, None) => "not attached".into(),
                };
                writeln!(out, "{:<20} {chosen}", h.hook)?;
                writeln!(out, "{:<20}   for: {}", "", h.purpose)?;
                for r in &h.refused {
                    writeln!(
                        out,
                        "{:<20}   refused {} ({}): {}",
                        "", r.mechanism, r.program, r.why
                    )?;
                    if let Some(detail) = r.detail.as_deref().filter(|_| args.verbose) {
                        for line in detail.lines() {
                            writeln!(out, "{:<20}     | {line}", "")?;
                        }
                    }
                }
            }
        }
    }
    Ok(())
}
