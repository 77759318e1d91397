//! Loads and attaches the planned programs, trying each hook's candidates in
//! order; a mechanism the kernel refuses at load or attach is recorded with
//! the kernel's answer and the next one is tried.

use std::collections::BTreeSet;

use aya::{
    Btf, Ebpf,
    programs::{BtfTracePoint, FEntry, FExit, KProbe, Program, RawTracePoint, TracePoint},
};

use super::load::{Preloaded, Programs, load, load_and_attach};
use super::select::HookPlan;
use super::table::{Hook, Kind, Mechanism};

/// What happened to one hook.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HookReport {
    pub hook: &'static str,
    pub required: bool,
    /// `kind/program` chosen, `None` when nothing attached.
    pub chosen: Option<Chosen>,
    pub refused: Vec<Refused>,
    /// Set when the hook is not wanted on this kernel (nothing was tried).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_needed: Option<String>,
    pub purpose: &'static str,
    pub kernel: &'static str,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Chosen {
    pub mechanism: &'static str,
    pub program: &'static str,
    pub targets: Vec<&'static str>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Refused {
    pub mechanism: &'static str,
    pub program: &'static str,
    /// One line: the kernel's answer (for a verifier refusal, its last
    /// meaningful line).
    pub why: String,
    /// The whole answer (e.g. the verifier log) when it is longer than `why`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Refused {
    fn new(mech: &Mechanism, answer: String) -> Refused {
        let why = super::verifier::summarize(&answer);
        let detail = (why != answer).then_some(answer);
        Refused {
            mechanism: mech.kind.name(),
            program: mech.program,
            why,
            detail,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("program {0} is missing from the eBPF object")]
    Missing(&'static str),
    #[error("{0}")]
    Kernel(String),
}

/// Attaches every hook of `plans`; returns one report per hook. The first
/// choice of every hook is loaded ahead on `workers` threads (`load.rs`),
/// the hooks are attached here in plan order as their programs come back.
pub fn attach_all(
    ebpf: &mut Ebpf,
    btf: &Btf,
    plans: &[HookPlan],
    links: &mut Vec<Link>,
    workers: usize,
) -> Vec<HookReport> {
    let programs: Programs<'_> = ebpf.programs_mut().collect();
    let mut loaded = BTreeSet::new();
    let t0 = std::time::Instant::now();
    load_and_attach(
        programs,
        btf,
        plans,
        workers,
        |plan, programs, preloaded| {
            let report = attach_hook(programs, btf, plan, preloaded, &mut loaded, links);
            if report.chosen.is_some() {
                log::debug!(
                    "start-up: {} attached {:?} into loading",
                    plan.hook.name,
                    t0.elapsed()
                );
            }
            report
        },
    )
}

fn attach_hook(
    programs: &mut Programs<'_>,
    btf: &Btf,
    plan: &HookPlan,
    preloaded: &Preloaded,
    loaded: &mut BTreeSet<&'static str>,
    links: &mut Vec<Link>,
) -> HookReport {
    let hook: &Hook = plan.hook;
    let mut report = HookReport {
        hook: hook.name,
        required: hook.required,
        chosen: None,
        refused: plan
            .refused
            .iter()
            .map(|(m, why)| Refused::new(m, why.clone()))
            .collect(),
        not_needed: plan.not_needed.clone(),
        purpose: hook.purpose,
        kernel: hook.kernel,
    };
    for mech in &plan.candidates {
        match attach_one(programs, btf, mech, preloaded, loaded, links) {
            Ok(targets) => {
                report.chosen = Some(Chosen {
                    mechanism: mech.kind.name(),
                    program: mech.program,
                    targets,
                });
                break;
            }
            Err(e) => {
                log::debug!("{}: {} refused: {e}", hook.name, mech.kind.name());
                report.refused.push(Refused::new(mech, e.to_string()));
            }
        }
    }
    report
}

/// Full error chain of an aya error in one line (the kernel's errno is
/// usually in the source).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

pub(super) fn kernel_err(e: impl std::error::Error) -> AttachError {
    AttachError::Kernel(chain(&e))
}

/// An attached link, owned by the session (dropping it detaches).
pub type Link = Box<dyn Send>;

/// Keeps an attached link (or turns the failure into an [`AttachError`]).
fn keep<L: Send + 'static>(
    links: &mut Vec<Link>,
    link: Result<L, aya::programs::ProgramError>,
) -> Result<(), AttachError> {
    links.push(Box::new(link.map_err(kernel_err)?));
    Ok(())
}

fn attach_one(
    programs: &mut Programs<'_>,
    btf: &Btf,
    mech: &Mechanism,
    preloaded: &Preloaded,
    loaded: &mut BTreeSet<&'static str>,
    links: &mut Vec<Link>,
) -> Result<Vec<&'static str>, AttachError> {
    let program: &mut Program = programs
        .get_mut(mech.program)
        .ok_or(AttachError::Missing(mech.program))?;
    if !loaded.contains(mech.program) {
        match preloaded.get(mech.program) {
            Some(Err(answer)) => return Err(AttachError::Kernel(answer.clone())),
            Some(Ok(())) => {}
            None => load(program, btf, mech)?,
        }
        loaded.insert(mech.program);
    }
    let target = mech.targets.first().copied().unwrap_or_default();
    match mech.kind {
        Kind::TpBtf => {
            let p: &mut BtfTracePoint = program.try_into().map_err(kernel_err)?;
            keep(links, p.attach().and_then(|id| p.take_link(id)))?;
            Ok(vec![target])
        }
        Kind::RawTracepoint => {
            let p: &mut RawTracePoint = program.try_into().map_err(kernel_err)?;
            attach_targets(mech, |t| {
                keep(links, p.attach(t).and_then(|id| p.take_link(id)))
            })
        }
        Kind::Tracepoint => {
            let p: &mut TracePoint = program.try_into().map_err(kernel_err)?;
            attach_targets(mech, |t| {
                let (cat, name) = t.split_once('/').unwrap_or(("", t));
                keep(links, p.attach(cat, name).and_then(|id| p.take_link(id)))
            })
        }
        Kind::Fentry => {
            let p: &mut FEntry = program.try_into().map_err(kernel_err)?;
            keep(links, p.attach().and_then(|id| p.take_link(id)))?;
            Ok(vec![target])
        }
        Kind::Fexit => {
            let p: &mut FExit = program.try_into().map_err(kernel_err)?;
            keep(links, p.attach().and_then(|id| p.take_link(id)))?;
            Ok(vec![target])
        }
        Kind::Kprobe | Kind::Kretprobe => {
            let p: &mut KProbe = program.try_into().map_err(kernel_err)?;
            keep(links, p.attach(target, 0).and_then(|id| p.take_link(id)))?;
            Ok(vec![target])
        }
    }
}

/// Attaches to every target that exists; fails only if none did.
fn attach_targets(
    mech: &Mechanism,
    mut attach: impl FnMut(&'static str) -> Result<(), AttachError>,
) -> Result<Vec<&'static str>, AttachError> {
    let mut ok = Vec::new();
    let mut errors = Vec::new();
    for target in mech.targets {
        match attach(target) {
            Ok(()) => ok.push(*target),
            Err(e) => errors.push(format!("{target}: {e}")),
        }
    }
    if ok.is_empty() {
        Err(AttachError::Kernel(errors.join("; ")))
    } else {
        Ok(ok)
    }
}
