//! A guest kernel that panics mid-run gets one more boot for the tests that
//! had not finished: which those are, and where the crashed test's partial
//! output begins.

use super::matrix::Entry;
use super::results;

/// (target, filter) of every test run whose end marker the guest printed.
pub fn finished_tests(stdout: &str) -> Vec<(String, String)> {
    results::sections(stdout)
        .into_iter()
        .filter(|s| s.status.is_some())
        .map(|s| (s.target, s.filter))
        .collect()
}

/// The plan's tests not in `done` (a whole-binary entry stays whole).
pub fn remaining(plan: &[Entry], done: &[(String, String)]) -> Vec<Entry> {
    let is_done = |target: &str, filter: &str| done.iter().any(|(t, f)| t == target && f == filter);
    plan.iter()
        .filter(|e| e.exe.is_some())
        .filter_map(|e| {
            let names: Vec<String> = e
                .names
                .iter()
                .filter(|n| !is_done(&e.target, n))
                .cloned()
                .collect();
            let whole_left = e.names.is_empty() && !is_done(&e.target, "");
            (!names.is_empty() || whole_left).then(|| Entry {
                target: e.target.clone(),
                names,
                exe: e.exe.clone(),
                in_tree: e.in_tree,
            })
        })
        .collect()
}

/// Where the output of a test that never reached its end marker begins
/// (the end of the text when every test finished).
pub fn unfinished_tail(stdout: &str) -> usize {
    let last_begin = stdout.rfind(results::BEGIN);
    match last_begin {
        Some(b) if !stdout[b..].contains(results::END) => b,
        _ => stdout.len(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::vm::results::{BEGIN, END};

    #[test]
    fn after_a_guest_panic_only_the_unfinished_tests_run_again() {
        let entry = |target: &str, names: &[&str]| Entry {
            target: target.to_owned(),
            names: names.iter().map(|n| (*n).to_owned()).collect(),
            exe: Some(PathBuf::from(format!("/x/{target}"))),
            in_tree: true,
        };
        let plan = vec![
            entry("a", &["one", "two"]),
            entry("b", &["three"]),
            entry("kernels", &[]),
        ];
        let stdout =
            format!("{BEGIN}a one\ntest one ... ok\n{END}a 0 10\n{BEGIN}a two\ntest two ...");
        let done = finished_tests(&stdout);
        assert_eq!(done, vec![("a".to_owned(), "one".to_owned())]);
        let rest = remaining(&plan, &done);
        let names: Vec<(&str, Vec<&str>)> = rest
            .iter()
            .map(|e| {
                (
                    e.target.as_str(),
                    e.names.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            names,
            vec![
                ("a", vec!["two"]),
                ("b", vec!["three"]),
                ("kernels", vec![])
            ]
        );
        // The crashed test's partial output is cut before the rerun's.
        let cut = unfinished_tail(&stdout);
        assert!(stdout[..cut].ends_with(&format!("{END}a 0 10\n")));
        assert_eq!(unfinished_tail(&stdout[..cut]), cut);
    }
}
