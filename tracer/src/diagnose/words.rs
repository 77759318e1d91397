//! Numbers and names as the verdict's sentences spell them.

pub use crate::report::thousands;

pub fn duration_words(secs: f64) -> String {
    if secs >= 7200.0 {
        format!("{:.1} h", secs / 3600.0)
    } else if secs >= 120.0 {
        format!("{} min", (secs / 60.0).round() as u64)
    } else {
        format!("{} s", secs.round() as u64)
    }
}

pub(super) fn who(pid: Option<u32>, comm: &Option<String>) -> String {
    match (pid, comm) {
        (Some(p), Some(c)) if !c.is_empty() => format!("pid {p} ({c})"),
        (Some(p), _) => format!("pid {p}"),
        _ => "an unidentified process".into(),
    }
}
