//! Loading the planned programs on worker threads while the hooks are
//! attached one after the other, in plan order, as their programs come
//! back: the verifier (most of start-up's CPU) runs on every CPU, and the
//! first hooks of the table (the resets) are attached while the later
//! programs are still being verified.
//!
//! Only loading runs side by side. Attaching stays on one thread: it
//! patches kernel text (tracepoint static keys, BPF trampolines), which
//! side by side locked up a 5.10 guest when detaching (session.rs).

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, mpsc};

use aya::{
    Btf,
    programs::{BtfTracePoint, FEntry, FExit, KProbe, Program, RawTracePoint, TracePoint},
};

use super::attach::{AttachError, kernel_err};
use super::select::HookPlan;
use super::table::{Kind, Mechanism};

/// The object's programs by name, each either at hand or out on a worker.
pub type Programs<'e> = HashMap<&'e str, &'e mut Program>;

/// Loads `mech`'s program for its kind and target.
pub fn load(program: &mut Program, btf: &Btf, mech: &Mechanism) -> Result<(), AttachError> {
    let target = mech.targets.first().copied().unwrap_or_default();
    match mech.kind {
        Kind::TpBtf => {
            let p: &mut BtfTracePoint = program.try_into().map_err(kernel_err)?;
            p.load(target, btf).map_err(kernel_err)
        }
        Kind::RawTracepoint => {
            let p: &mut RawTracePoint = program.try_into().map_err(kernel_err)?;
            p.load().map_err(kernel_err)
        }
        Kind::Tracepoint => {
            let p: &mut TracePoint = program.try_into().map_err(kernel_err)?;
            p.load().map_err(kernel_err)
        }
        Kind::Fentry => {
            let p: &mut FEntry = program.try_into().map_err(kernel_err)?;
            p.load(target, btf).map_err(kernel_err)
        }
        Kind::Fexit => {
            let p: &mut FExit = program.try_into().map_err(kernel_err)?;
            p.load(target, btf).map_err(kernel_err)
        }
        Kind::Kprobe | Kind::Kretprobe => {
            let p: &mut KProbe = program.try_into().map_err(kernel_err)?;
            p.load().map_err(kernel_err)
        }
    }
}

/// Programs loaded ahead, by name: what their load answered.
pub type Preloaded = HashMap<&'static str, Result<(), String>>;

/// The first candidate of every plan, once each, in plan order: the
/// mechanisms most likely to be attached, loaded ahead.
pub fn first_choices(plans: &[HookPlan]) -> Vec<&'static Mechanism> {
    let mut seen = std::collections::BTreeSet::new();
    plans
        .iter()
        .filter_map(|p| p.candidates.first().copied())
        .filter(|m| seen.insert(m.program))
        .collect()
}

/// Loads the plans' first choices (in order) on `workers` threads and
/// calls `attach` for every plan in order, on this thread, once the
/// programs of the plan's candidates are back: `attach(plan, programs,
/// preloaded)` finds them at hand in `programs`, with the answer of each
/// load done ahead in `preloaded`. Returns what `attach` returned, one per plan.
pub fn load_and_attach<'e, R>(
    mut programs: Programs<'e>,
    btf: &Btf,
    plans: &[HookPlan],
    workers: usize,
    mut attach: impl FnMut(&HookPlan, &mut Programs<'e>, &Preloaded) -> R,
) -> Vec<R> {
    let jobs: VecDeque<(&'static Mechanism, &'e mut Program)> = first_choices(plans)
        .into_iter()
        .filter_map(|m| programs.remove_entry(m.program).map(|(_, p)| (m, p)))
        .collect();
    let mut out_on_workers: std::collections::BTreeSet<&'static str> =
        jobs.iter().map(|(m, _)| m.program).collect();
    let queue = Mutex::new(jobs);
    let mut preloaded = Preloaded::new();
    std::thread::scope(|s| {
        let (tx, rx) = mpsc::channel::<(&'static Mechanism, &'e mut Program, Result<(), String>)>();
        for i in 0..workers.max(1) {
            let tx = tx.clone();
            let queue = &queue;
            let spawned = std::thread::Builder::new()
                .name(format!("bpf-load-{i}"))
                .spawn_scoped(s, move || {
                    while let Some((mech, program)) = next(queue) {
                        let answer = load(program, btf, mech).map_err(|e| e.to_string());
                        if tx.send((mech, program, answer)).is_err() {
                            return;
                        }
                    }
                });
            if let Err(e) = spawned {
                log::debug!("no loader thread {i} ({e}); loading on fewer");
            }
        }
        drop(tx);
        let mut results = Vec::with_capacity(plans.len());
        for plan in plans {
            // Take programs back as they come until every program this
            // plan may try is at hand (or no worker is left: then the
            // queue still holds what nobody could take).
            while plan
                .candidates
                .iter()
                .any(|m| out_on_workers.contains(m.program))
            {
                match rx.recv() {
                    Ok((mech, program, answer)) => {
                        out_on_workers.remove(mech.program);
                        preloaded.insert(mech.program, answer);
                        programs.insert(mech.program, program);
                    }
                    Err(_) => {
                        log::debug!(
                            "{}: loading on this thread (no loader left)",
                            plan.hook.name
                        );
                        take_back_unloaded(&queue, &mut programs, &mut out_on_workers);
                    }
                }
            }
            results.push(attach(plan, &mut programs, &preloaded));
        }
        results
    })
}

/// The next job of the queue (a poisoned lock still holds valid jobs).
fn next<'e>(
    queue: &Mutex<VecDeque<(&'static Mechanism, &'e mut Program)>>,
) -> Option<(&'static Mechanism, &'e mut Program)> {
    queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front()
}

/// Jobs no worker took (none could be started): back at hand, not loaded.
fn take_back_unloaded<'e>(
    queue: &Mutex<VecDeque<(&'static Mechanism, &'e mut Program)>>,
    programs: &mut Programs<'e>,
    out: &mut std::collections::BTreeSet<&'static str>,
) {
    while let Some((mech, program)) = next(queue) {
        out.remove(mech.program);
        programs.insert(mech.program, program);
    }
    // Whatever is still marked out can never come back: stop waiting.
    out.clear();
}
