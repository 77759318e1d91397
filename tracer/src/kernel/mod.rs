//! Everything that varies by kernel, read once at start-up: struct member
//! offsets and enum names from the running kernel's BTF, classic tracepoint
//! record layouts from tracefs `format` files, and which functions and
//! tracepoint arguments exist. The rest of the program is handed a
//! [`KernelInfo`] and never looks at the kernel on its own.

pub mod btf;
pub mod names;
pub mod offsets;
pub mod tracefs;

#[cfg(test)]
mod tests;

use std::io;
use std::path::PathBuf;

use tracer_common::{KernelOffsets, TracepointLayouts};

pub use btf::{load_vmlinux, tracepoint_arg_count};
pub use names::KernelNames;
pub use offsets::kernel_offsets;
pub use tracefs::{ensure_tracefs, layouts};

/// Why reading the kernel's description failed.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(
        "kernel BTF not found at {}: this kernel was built without CONFIG_DEBUG_INFO_BTF; tracer needs it (or a BTF file for this kernel in TRACER_BTF)",
        path.display()
    )]
    BtfMissing { path: PathBuf },
    #[error("cannot parse kernel BTF at {}: {source}", path.display())]
    BtfParse {
        path: PathBuf,
        source: btf_rs::Error,
    },
    #[error("BTF lookup of {what} failed: {source}")]
    BtfLookup { what: String, source: btf_rs::Error },
    #[error("kernel BTF has no struct {0}")]
    MissingStruct(String),
    #[error("kernel BTF: struct {strukt} has no member {member}")]
    MissingMember { strukt: String, member: String },
    #[error(
        "kernel BTF: {strukt}.{member} is a bitfield (or not byte-aligned); it cannot be read by byte offset"
    )]
    Bitfield { strukt: String, member: String },
    #[error("kernel BTF: {0}")]
    Unexpected(String),
    #[error(
        "tracefs at {} cannot be read ({source}): classic tracepoints need root or CAP_DAC_READ_SEARCH",
        path.display()
    )]
    TracefsUnreadable { path: PathBuf, source: io::Error },
    #[error(
        "tracefs is not mounted (looked for {tried}) and mounting it at {} failed: {source}",
        path.display()
    )]
    TracefsMount {
        path: PathBuf,
        tried: String,
        source: io::Error,
    },
}

/// The running kernel, as the rest of the program sees it.
pub struct KernelInfo {
    /// Kept for the start-up queries (functions, argument counts), then
    /// dropped (`forget_btf`): nothing needs it once the hooks are chosen.
    pub btf: Option<btf_rs::Btf>,
    pub offsets: KernelOffsets,
    /// `TracepointLayouts::EMPTY` when tracefs is unavailable.
    pub layouts: TracepointLayouts,
    pub names: KernelNames,
    /// Where tracefs is mounted, if it is (or could be mounted).
    pub tracefs: Option<PathBuf>,
}

impl KernelInfo {
    /// Reads BTF (required) and tracefs (optional: BTF and raw tracepoints
    /// need none; a missing tracefs is mounted if possible, else logged).
    pub fn load() -> Result<KernelInfo, KernelError> {
        let btf = load_vmlinux()?;
        let offsets = kernel_offsets(&btf)?;
        let tracefs = match ensure_tracefs() {
            Ok(p) => Some(p),
            Err(e) => {
                log::warn!("{e}; classic tracepoints will not be usable");
                None
            }
        };
        let layouts = tracefs
            .as_deref()
            .map(layouts)
            .unwrap_or(TracepointLayouts::EMPTY);
        let names = KernelNames::load(Some(&btf), tracefs.as_deref());
        Ok(KernelInfo {
            btf: Some(btf),
            offsets,
            layouts,
            names,
            tracefs,
        })
    }

    /// Releases the BTF (and its memory) once the hooks are chosen.
    pub fn forget_btf(&mut self) {
        self.btf = None;
    }

    /// Whether the kernel has a function of this name in BTF (`Some`), and
    /// its parameter count when BTF tells it: one lookup for both.
    pub fn function(&self, name: &str) -> Option<Option<usize>> {
        self.btf.as_ref().and_then(|b| btf::function(b, name))
    }

    /// Parameter count of the BTF tracepoint `tp`, including the leading
    /// `void *` context; see [`btf::tracepoint_arg_count`].
    pub fn tracepoint_arg_count(&self, tp: &str) -> Option<usize> {
        self.btf.as_ref().and_then(|b| tracepoint_arg_count(b, tp))
    }
}
