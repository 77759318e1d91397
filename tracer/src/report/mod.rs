//! The verdict `Report`: what `diagnose` (and `watch --summary-every`)
//! produce and what sinks print. Below both `diagnose` and `output`, beside
//! `event`: neither of them imports the other.

mod finding;
mod narrative;

use serde::Serialize;

use crate::event::SCHEMA_VERSION;
pub use finding::{Finding, Kind};
pub use narrative::{narrative, thousands};

/// The window's event totals.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    pub rst_sent: u64,
    pub rst_received: u64,
    pub accept_failed: u64,
    pub listen_overflow: u64,
    pub lost: u64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub v: u32,
    pub window_s: f64,
    pub counters: Counters,
    /// `healthy` when nothing was found, else `unhealthy`.
    pub verdict: &'static str,
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn new(window_s: f64, counters: &Counters, findings: Vec<Finding>) -> Self {
        Report {
            v: SCHEMA_VERSION,
            window_s: (window_s * 10.0).round() / 10.0,
            counters: counters.clone(),
            verdict: if findings.is_empty() {
                "healthy"
            } else {
                "unhealthy"
            },
            findings,
        }
    }
}
