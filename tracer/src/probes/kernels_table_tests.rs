//! The selection against capabilities recorded (`tracer probes --format
//! json`, its `caps`) on the Debian kernels of the VM matrix, and against
//! docs/kernels.md: without root, the first candidate of every hook must be
//! what the table says that kernel uses.

use std::collections::BTreeMap;

use super::*;
use crate::probes::table::HOOKS;

const DEBIAN: &[(&str, &str)] = &[
    (
        "5.10",
        include_str!("../../tests/fixtures/caps/linux-5.10-debian.json"),
    ),
    (
        "6.1",
        include_str!("../../tests/fixtures/caps/linux-6.1-debian.json"),
    ),
    (
        "6.12",
        include_str!("../../tests/fixtures/caps/linux-6.12-debian.json"),
    ),
    (
        "6.18",
        include_str!("../../tests/fixtures/caps/linux-6.18-nokprobes.json"),
    ),
];

/// Kinds a kernel refuses only when the program is loaded (not visible in
/// its capabilities): 6.18 here refuses trampolines with EPERM. The root
/// test tracer/tests/kernels.rs sees those refusals for real.
const REFUSED_AT_LOAD: &[(&str, &str)] = &[("6.18", "fentry"), ("6.18", "fexit")];

const KERNELS_MD: &str = include_str!("../../../docs/kernels.md");

/// The table of docs/kernels.md: kernel column -> hook -> cell.
fn documented() -> BTreeMap<String, BTreeMap<String, String>> {
    let table = KERNELS_MD
        .split("<!-- kernels-table: begin -->")
        .nth(1)
        .and_then(|t| t.split("<!-- kernels-table: end -->").next())
        .expect("kernels table markers");
    let rows: Vec<Vec<&str>> = table
        .lines()
        .filter(|l| l.starts_with('|') && !l.starts_with("|---"))
        .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
        .collect();
    let header = &rows[0];
    let mut out = BTreeMap::new();
    for (col, kernel) in header.iter().enumerate().skip(1) {
        let cells = rows[1..]
            .iter()
            .map(|r| (r[0].to_string(), r[col].to_string()))
            .collect();
        out.insert((*kernel).to_string(), cells);
    }
    out
}

/// What the table's cell says attach will try first (`None`: nothing).
fn first_from_cell(cell: &str) -> Option<&str> {
    match cell {
        "-" | "not needed" => None,
        kind => Some(kind),
    }
}

#[test]
fn recorded_debian_kernels_choose_what_docs_kernels_md_says() {
    let docs = documented();
    for (kernel, json) in DEBIAN {
        let caps: KernelCaps = serde_json::from_str(json).expect("recorded caps");
        let plans = plan(HOOKS, &caps);
        let column = &docs[*kernel];
        assert_eq!(column.len(), HOOKS.len(), "{kernel}: one row per hook");
        for p in &plans {
            let cell = column.get(p.hook.name).unwrap_or_else(|| {
                panic!("{kernel}: {} missing from docs/kernels.md", p.hook.name)
            });
            let first = p
                .candidates
                .iter()
                .map(|m| m.kind.name())
                .find(|k| !REFUSED_AT_LOAD.contains(&(*kernel, *k)));
            assert_eq!(
                first,
                first_from_cell(cell),
                "{kernel}: hook {} (docs: {cell})",
                p.hook.name
            );
            assert_eq!(
                p.not_needed.is_some(),
                cell == "not needed",
                "{kernel}: hook {} (docs: {cell})",
                p.hook.name
            );
        }
    }
}

#[test]
fn old_kernels_hook_the_reset_functions_and_new_ones_do_not() {
    for (kernel, json) in DEBIAN {
        let caps: KernelCaps = serde_json::from_str(json).expect("recorded caps");
        let old = matches!(*kernel, "5.10" | "6.1");
        assert_eq!(!send_reset_reports_no_socket(&caps), old, "{kernel}");
    }
}

/// Start-up loads the first choices ahead, in this order (`load.rs`): on
/// every kernel of the matrix the reset programs come first (the first
/// events of an incident are its resets) and no program is loaded twice.
#[test]
fn reset_programs_are_loaded_first_and_each_program_once() {
    const RESET_HOOKS: &[&str] = &[
        "tcp_send_reset",
        "tcp_v4_send_reset",
        "tcp_v6_send_reset",
        "tcp_receive_reset",
    ];
    for (kernel, json) in DEBIAN {
        let caps: KernelCaps = serde_json::from_str(json).expect("recorded caps");
        let plans = plan(HOOKS, &caps);
        let order = crate::probes::load::first_choices(&plans);
        let resets: Vec<&str> = plans
            .iter()
            .filter(|p| RESET_HOOKS.contains(&p.hook.name))
            .filter_map(|p| p.candidates.first().map(|m| m.program))
            .collect();
        assert!(!resets.is_empty(), "{kernel}: no reset program planned");
        let leading: Vec<&str> = order.iter().take(resets.len()).map(|m| m.program).collect();
        assert_eq!(leading, resets, "{kernel}: loading order {order:?}");
        let mut names: Vec<&str> = order.iter().map(|m| m.program).collect();
        let all = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(
            names.len(),
            all,
            "{kernel}: a program loaded twice: {order:?}"
        );
        let planned = plans.iter().filter(|p| !p.candidates.is_empty()).count();
        assert!(
            all <= planned && all > 0,
            "{kernel}: {all} loads for {planned} hooks"
        );
    }
}
