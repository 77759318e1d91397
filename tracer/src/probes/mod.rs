//! Probes: the hook table, what this kernel offers, the choice among
//! mechanisms (pure), attach and detach (dropping the `Ebpf` detaches all).

pub mod attach;
pub mod caps;
pub mod kind;
pub mod load;
pub mod prepare;
pub mod select;
pub mod table;
pub mod verifier;

pub use attach::{HookReport, attach_all};
pub use select::{KernelCaps, plan_without, unsatisfiable};
pub use table::HOOKS;
