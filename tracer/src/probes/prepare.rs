//! What loading the object needs that does not depend on the kernel
//! description, started on a thread of its own while tracer reads the
//! kernel (`kernel::KernelInfo::load`): aya's feature probes and its loader,
//! whose constructor parses the kernel's BTF (some 45 ms and 17 MiB here),
//! which tracer drops at once (the programs have no CO-RE relocations).
//! The BTF the BTF-typed programs load against is parsed later, beside the
//! creation of the object's maps, once the kernel description's BTF is
//! dropped (`session.rs`): one parsed BTF at a time.

use std::sync::mpsc;

use anyhow::{Context as _, anyhow};
use aya::EbpfLoader;

/// The preparation under way.
pub struct Prepared {
    loader: mpsc::Receiver<EbpfLoader<'static>>,
}

impl Prepared {
    /// Starts preparing.
    pub fn start() -> anyhow::Result<Prepared> {
        let (tx, loader) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("bpf-prepare".into())
            .spawn(move || {
                // aya probes the kernel's BPF features once, at first use.
                let _ = aya::features();
                let mut loader = EbpfLoader::new();
                loader.btf(None);
                // The receiver may have given up (start-up failed).
                let _ = tx.send(loader);
            })
            .context("starting the loader's thread")?;
        Ok(Prepared { loader })
    }

    /// The loader, BTF relocations off.
    pub fn loader(&self) -> anyhow::Result<EbpfLoader<'static>> {
        self.loader
            .recv()
            .map_err(|_| anyhow!("the loader's thread ended without a loader"))
    }
}
