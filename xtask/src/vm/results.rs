//! Reading the kernel matrix's guest output: the markers the guest script
//! prints around each test binary run, libtest's `test NAME ... ok|FAILED|
//! ignored` lines and its `test result:` line.

use std::time::Duration;

/// What one test did in one kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Passed,
    Failed,
    Skipped,
    /// The binary ended without a line for this test (crash, timeout, a
    /// renamed test): a failure.
    DidNotRun,
    /// The test target is in tracer/tests but was not built: a failure.
    NotBuilt,
}

impl Verdict {
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Passed => "ok",
            Verdict::Failed => "FAILED",
            Verdict::Skipped => "skipped",
            Verdict::DidNotRun => "DID NOT RUN",
            Verdict::NotBuilt => "NOT BUILT",
        }
    }
}

/// One test (or a whole binary run without names) in one kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub target: String,
    pub name: String,
    pub verdict: Verdict,
    /// Wall time of the binary run the test was in.
    pub time: Option<Duration>,
}

/// One run of a test binary, between the guest script's markers.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Section {
    pub target: String,
    /// The exact test name run, or empty for the whole binary.
    pub filter: String,
    /// `test NAME ... WORD` lines: (name, verdict).
    pub tests: Vec<(String, Verdict)>,
    /// A `test result:` line was printed.
    pub finished: bool,
    /// The binary's exit status and wall time (from the end marker).
    pub status: Option<i32>,
    pub time: Option<Duration>,
}

pub const BEGIN: &str = "xtask-matrix: begin ";
pub const END: &str = "xtask-matrix: end ";

/// Splits the guest's stdout into sections. Markers: `BEGIN target filter`
/// and `END target rc ms` (the filter may be empty).
pub fn sections(stdout: &str) -> Vec<Section> {
    let mut out: Vec<Section> = Vec::new();
    let mut current: Option<Section> = None;
    for line in stdout.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(rest) = line.strip_prefix(BEGIN) {
            if let Some(open) = current.take() {
                out.push(open);
            }
            let (target, filter) = rest.split_once(' ').unwrap_or((rest, ""));
            current = Some(Section {
                target: target.to_owned(),
                filter: filter.trim().to_owned(),
                ..Section::default()
            });
        } else if let Some(rest) = line.strip_prefix(END) {
            if let Some(mut open) = current.take() {
                let words: Vec<&str> = rest.split_whitespace().collect();
                open.status = words.get(1).and_then(|w| w.parse().ok());
                open.time = words
                    .get(2)
                    .and_then(|w| w.parse::<u64>().ok())
                    .map(Duration::from_millis);
                out.push(open);
            }
        } else if let Some(open) = current.as_mut() {
            if line.trim_start().starts_with("test result:") {
                open.finished = true;
            } else if let Some(test) = test_line(line) {
                open.tests.push(test);
            }
        }
    }
    out.extend(current);
    out
}

/// `test NAME ... ok` → (NAME, Passed); also `FAILED`, `ignored` and
/// `ignored, reason`.
pub fn test_line(line: &str) -> Option<(String, Verdict)> {
    let rest = line.strip_prefix("test ")?;
    let (name, word) = rest.split_once(" ... ")?;
    let verdict = match strip_colour(word).trim() {
        "ok" => Verdict::Passed,
        "FAILED" => Verdict::Failed,
        w if w == "ignored" || w.starts_with("ignored,") => Verdict::Skipped,
        _ => return None,
    };
    Some((name.trim().to_owned(), verdict))
}

/// `word` without ANSI colour sequences (`\x1b[32mok\x1b[m` → `ok`).
fn strip_colour(word: &str) -> String {
    let mut out = String::new();
    let mut chars = word.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // Skip to the end of the CSI sequence (a letter).
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The outcome of each expected test from the sections of one target:
/// `names` empty means every test the binary reported (and one failure if
/// it reported none or did not finish).
pub fn judge(target: &str, names: &[String], sections: &[Section]) -> Vec<Outcome> {
    let mine: Vec<&Section> = sections.iter().filter(|s| s.target == target).collect();
    let outcome = |name: &str, verdict, time| Outcome {
        target: target.to_owned(),
        name: name.to_owned(),
        verdict,
        time,
    };
    if names.is_empty() {
        let mut out = Vec::new();
        for s in &mine {
            for (name, verdict) in &s.tests {
                out.push(outcome(name, *verdict, None));
            }
            if !s.finished
                || (s.status != Some(0) && !s.tests.iter().any(|t| t.1 == Verdict::Failed))
            {
                out.push(outcome("(binary)", Verdict::DidNotRun, s.time));
            }
        }
        if mine.is_empty() {
            out.push(outcome("(binary)", Verdict::DidNotRun, None));
        }
        return out;
    }
    names
        .iter()
        .map(|name| {
            let section = mine.iter().find(|s| s.filter == *name);
            let verdict = section
                .and_then(|s| s.tests.iter().find(|(n, _)| n == name))
                .map_or(Verdict::DidNotRun, |(_, v)| *v);
            outcome(name, verdict, section.and_then(|s| s.time))
        })
        .collect()
}

/// Passed, failed (including did-not-run and not-built), skipped.
pub fn count(outcomes: &[Outcome]) -> (u64, u64, u64) {
    let mut counts = (0, 0, 0);
    for o in outcomes {
        match o.verdict {
            Verdict::Passed => counts.0 += 1,
            Verdict::Skipped => counts.2 += 1,
            Verdict::Failed | Verdict::DidNotRun | Verdict::NotBuilt => counts.1 += 1,
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: &str = "\
xtask-matrix: begin rst_closed_port closed_port_rsts_counted_and_attributed\r
\r
running 1 test\r
test closed_port_rsts_counted_and_attributed ... FAILED\r
\r
failures:\r
test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 1 filtered out; finished in 9.10s\r
xtask-matrix: end rst_closed_port 101 9500\r
xtask-matrix: begin attribution_rst a_linger0_abort_by_server
running 1 test
test a_linger0_abort_by_server ... ok
test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 5 filtered out; finished in 3.00s
xtask-matrix: end attribution_rst 0 3200
xtask-matrix: begin attribution_rst b_close_with_unread_data
running 1 test
xtask-matrix: end attribution_rst 134 700
xtask-matrix: begin kernels 
running 2 tests
test probes::x ... ok
test probes::y ... ignored, needs kprobes
test result: ok. 1 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 1.00s
xtask-matrix: end kernels 0 1000
";

    #[test]
    fn libtest_lines_parse() {
        assert_eq!(
            test_line("test a::b ... ok"),
            Some(("a::b".into(), Verdict::Passed))
        );
        assert_eq!(
            test_line("test x ... FAILED"),
            Some(("x".into(), Verdict::Failed))
        );
        assert_eq!(
            test_line("test x ... ignored, slow"),
            Some(("x".into(), Verdict::Skipped))
        );
        assert_eq!(test_line("test result: ok. 1 passed"), None);
        assert_eq!(
            test_line("test c ... \x1b[32mok\x1b[m"),
            Some(("c".into(), Verdict::Passed))
        );
        assert_eq!(test_line("running 3 tests"), None);
    }

    #[test]
    fn sections_carry_status_time_and_tests() {
        let s = sections(RUN);
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].target, "rst_closed_port");
        assert_eq!(s[0].filter, "closed_port_rsts_counted_and_attributed");
        assert_eq!(s[0].status, Some(101));
        assert_eq!(s[0].time, Some(Duration::from_millis(9500)));
        assert!(s[0].finished);
        assert!(!s[2].finished);
        assert_eq!(s[3].filter, "");
        assert_eq!(s[3].tests.len(), 2);
    }

    #[test]
    fn expected_names_without_a_line_did_not_run() {
        let s = sections(RUN);
        let names: Vec<String> = [
            "a_linger0_abort_by_server",
            "b_close_with_unread_data",
            "z_gone",
        ]
        .iter()
        .map(|n| n.to_string())
        .collect();
        let got: Vec<Verdict> = judge("attribution_rst", &names, &s)
            .iter()
            .map(|o| o.verdict)
            .collect();
        assert_eq!(
            got,
            [Verdict::Passed, Verdict::DidNotRun, Verdict::DidNotRun]
        );
        let closed = judge(
            "rst_closed_port",
            &["closed_port_rsts_counted_and_attributed".into()],
            &s,
        );
        assert_eq!(closed[0].verdict, Verdict::Failed);
        assert_eq!(closed[0].time, Some(Duration::from_millis(9500)));
        let all = judge("kernels", &[], &s);
        assert_eq!(count(&all), (1, 0, 1));
        assert_eq!(count(&judge("absent", &[], &s)), (0, 1, 0));
    }

    #[test]
    fn an_unfinished_binary_without_names_is_a_failure() {
        let s = sections(
            "xtask-matrix: begin kernels \nrunning 1 test\nxtask-matrix: end kernels 139 10\n",
        );
        assert_eq!(count(&judge("kernels", &[], &s)), (0, 1, 0));
    }
}
