//! Loads and attaches the planned programs, trying each hook's candidates in
//! order; a mechanism the kernel refuses at load or attach is recorded with
//! the kernel's answer and the next one is tried.

use std::collections::BTreeSet;

use aya::{
    Btf, Ebpf,
    programs::{BtfTracePoint, FEntry, FExit, KProbe, Program, RawTracePoint, TracePoint},
};

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

/// Attaches every hook of `plans`; returns one report per hook.
pub fn attach_all(
    ebpf: &mut Ebpf,
    btf: &Btf,
    plans: &[HookPlan],
    links: &mut Vec<Link>,
) -> Vec<HookReport> {
    let mut loaded = BTreeSet::new();
    plans
        .iter()
        .map(|plan| attach_hook(ebpf, btf, plan, &mut loaded, links))
        .collect()
}

fn attach_hook(
    ebpf: &mut Ebpf,
    btf: &Btf,
    plan: &HookPlan,
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
        match attach_one(ebpf, btf, mech, loaded, links) {
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

fn kernel_err(e: impl std::error::Error) -> AttachError {
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
    ebpf: &mut Ebpf,
    btf: &Btf,
    mech: &Mechanism,
    loaded: &mut BTreeSet<&'static str>,
    links: &mut Vec<Link>,
) -> Result<Vec<&'static str>, AttachError> {
    let program: &mut Program = ebpf
        .program_mut(mech.program)
        .ok_or(AttachError::Missing(mech.program))?;
    let first = !loaded.contains(mech.program);
    let result = match mech.kind {
        Kind::TpBtf => {
            let p: &mut BtfTracePoint = program.try_into().map_err(kernel_err)?;
            let target = mech.targets.first().copied().unwrap_or_default();
            if first {
                p.load(target, btf).map_err(kernel_err)?;
            }
            keep(links, p.attach().and_then(|id| p.take_link(id)))?;
            Ok(vec![target])
        }
        Kind::RawTracepoint => {
            let p: &mut RawTracePoint = program.try_into().map_err(kernel_err)?;
            if first {
                p.load().map_err(kernel_err)?;
            }
            attach_targets(mech, |t| {
                keep(links, p.attach(t).and_then(|id| p.take_link(id)))
            })
        }
        Kind::Tracepoint => {
            let p: &mut TracePoint = program.try_into().map_err(kernel_err)?;
            if first {
                p.load().map_err(kernel_err)?;
            }
            attach_targets(mech, |t| {
                let (cat, name) = t.split_once('/').unwrap_or(("", t));
                keep(links, p.attach(cat, name).and_then(|id| p.take_link(id)))
            })
        }
        Kind::Fentry => {
            let p: &mut FEntry = program.try_into().map_err(kernel_err)?;
            let target = mech.targets.first().copied().unwrap_or_default();
            if first {
                p.load(target, btf).map_err(kernel_err)?;
            }
            keep(links, p.attach().and_then(|id| p.take_link(id)))?;
            Ok(vec![target])
        }
        Kind::Fexit => {
            let p: &mut FExit = program.try_into().map_err(kernel_err)?;
            let target = mech.targets.first().copied().unwrap_or_default();
            if first {
                p.load(target, btf).map_err(kernel_err)?;
            }
            keep(links, p.attach().and_then(|id| p.take_link(id)))?;
            Ok(vec![target])
        }
        Kind::Kprobe | Kind::Kretprobe => {
            let p: &mut KProbe = program.try_into().map_err(kernel_err)?;
            let target = mech.targets.first().copied().unwrap_or_default();
            if first {
                p.load().map_err(kernel_err)?;
            }
            keep(links, p.attach(target, 0).and_then(|id| p.take_link(id)))?;
            Ok(vec![target])
        }
    };
    if first {
        loaded.insert(mech.program);
    }
    result
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
