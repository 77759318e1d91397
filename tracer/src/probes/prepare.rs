//! What loading the object needs that does not depend on the kernel
//! description, started on a thread of its own while tracer reads the
//! kernel (`kernel::KernelInfo::load`, `caps::probe`): aya's feature
//! probes, its loader (whose constructor parses the kernel's BTF, which
//! tracer drops: the programs have no CO-RE relocations), and the BTF the
//! BTF-typed programs are loaded against. Some 60-70 ms of start-up off
//! the critical path on a machine with two CPUs.

use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;

use anyhow::{Context as _, anyhow};
use aya::{Btf, EbpfLoader};

/// The preparation under way.
pub struct Prepared {
    loader: mpsc::Receiver<EbpfLoader<'static>>,
    btf: JoinHandle<anyhow::Result<Btf>>,
}

impl Prepared {
    /// Starts preparing; `btf_path` is the kernel's BTF for the programs.
    pub fn start(btf_path: PathBuf) -> anyhow::Result<Prepared> {
        let (tx, loader) = mpsc::sync_channel(1);
        let btf = std::thread::Builder::new()
            .name("bpf-prepare".into())
            .spawn(move || {
                let t0 = std::time::Instant::now();
                // aya probes the kernel's BPF features once, at first use.
                let _ = aya::features();
                log::debug!("start-up: BPF features probed in {:?}", t0.elapsed());
                let mut loader = EbpfLoader::new();
                // Dropped before the programs' copy is parsed: never two
                // parsed copies at once (start-up peak RSS).
                loader.btf(None);
                // The receiver may have given up (start-up failed).
                let _ = tx.send(loader);
                log::debug!("start-up: loader ready in {:?}", t0.elapsed());
                let btf =
                    Btf::parse_file(&btf_path, aya::Endianness::default()).with_context(|| {
                        format!("reading {} for the BTF programs", btf_path.display())
                    });
                log::debug!("start-up: BTF for the programs read in {:?}", t0.elapsed());
                btf
            })
            .context("starting the loader's thread")?;
        Ok(Prepared { loader, btf })
    }

    /// The loader, BTF relocations off.
    pub fn loader(&self) -> anyhow::Result<EbpfLoader<'static>> {
        self.loader
            .recv()
            .map_err(|_| anyhow!("the loader's thread ended without a loader"))
    }

    /// The kernel's BTF for the BTF-typed programs.
    pub fn btf(self) -> anyhow::Result<Btf> {
        self.btf
            .join()
            .map_err(|_| anyhow!("the loader's thread panicked reading the kernel's BTF"))?
    }
}
