//! A tracing session: read the kernel, choose and attach hooks, take the
//! start-up snapshot. Dropping the session detaches every program.

use anyhow::{Context as _, anyhow, bail};
use aya::{Btf, Ebpf};
use tracer_common::{Filter, KernelOffsets, MAX_FILTER, TracepointLayouts};

use crate::kernel::KernelInfo;
use crate::probes::{self, HookReport, KernelCaps};

/// The eBPF object built by tracer/build.rs.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer"));

pub struct Session {
    /// Every attached link (detached before the programs are unloaded).
    links: std::sync::Mutex<Vec<crate::probes::attach::Link>>,
    /// The thread detaching them early ([`Session::detach_in_background`]).
    detaching: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    pub ebpf: Ebpf,
    pub kernel: KernelInfo,
    pub caps: KernelCaps,
    pub hooks: Vec<HookReport>,
}

/// What the kernel side should filter and emit.
#[derive(Clone, Debug, Default)]
pub struct KernelFilter {
    pub ports: Vec<u16>,
    pub pids: Vec<u32>,
    /// `--comm`: names longer than the kernel's 15 bytes never match a
    /// task, so they are filtered in userspace only.
    pub comm: Option<String>,
    pub all_states: bool,
    /// RST storms: resets per key each CPU lets through per second before
    /// the kernel counts them instead (`storm::per_cpu_threshold`); 0 never.
    pub storm_per_cpu: u32,
}

impl KernelFilter {
    /// The global the programs read. More values than fit are filtered in
    /// userspace only.
    pub fn to_global(&self) -> Filter {
        let mut f = Filter::EMPTY;
        if self.ports.len() <= MAX_FILTER {
            for (i, p) in self.ports.iter().enumerate() {
                f.ports[i] = *p;
            }
            f.n_ports = self.ports.len() as u32;
        }
        if self.pids.len() <= MAX_FILTER {
            for (i, p) in self.pids.iter().enumerate() {
                f.pids[i] = *p;
            }
            f.n_pids = self.pids.len() as u32;
        }
        f.all_states = self.all_states as u32;
        f.storm_per_cpu = self.storm_per_cpu;
        if let Some(c) = &self.comm
            && !c.is_empty()
            && c.len() < f.comm.len()
        {
            f.comm[..c.len()].copy_from_slice(c.as_bytes());
            f.has_comm = 1;
        }
        f
    }
}

/// Loads the object with its globals: creates its maps, programs not yet
/// loaded. The loader (prepared beside the kernel read) has BTF relocations
/// off: the programs have none (offsets come from OFFSETS), which also
/// saves ~30 ms.
fn load_object<'a>(
    mut loader: aya::EbpfLoader<'a>,
    offsets: &'a KernelOffsets,
    layouts: &'a TracepointLayouts,
    filter: &'a Filter,
    ring_buffer_bytes: u32,
) -> anyhow::Result<Ebpf> {
    loader
        .override_global("OFFSETS", offsets, true)
        .override_global("LAYOUTS", layouts, true)
        .override_global("FILTER", filter, true)
        .map_max_entries("EVENTS", ring_buffer_bytes);
    let cpus = crate::map_sizes::possible_cpus();
    for (name, keys) in crate::map_sizes::sizes_for(cpus) {
        loader.map_max_entries(name, keys);
    }
    if let Some(note) = crate::map_sizes::shrunk_note(cpus) {
        log::info!("{note}");
    }
    loader.load(EBPF_OBJECT).map_err(|e| {
        anyhow!(
            "loading the eBPF object: {}",
            crate::probes::attach::chain(&e)
        )
    })
}

/// The kernel's BTF for the BTF-typed programs (fentry, fexit, tp_btf,
/// the task_file iterator): aya's own parse, which loading them needs.
fn programs_btf() -> anyhow::Result<Btf> {
    let path = crate::kernel::btf::vmlinux_path();
    Btf::parse_file(&path, aya::Endianness::default())
        .with_context(|| format!("reading {} for the BTF programs", path.display()))
}

/// Threads that load (verify) programs side by side: one per CPU, at most
/// four.
fn loader_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// Capabilities (bit numbers in /proc/self/status CapEff).
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Fails with one clear line when the process cannot load BPF programs.
pub fn check_privileges() -> anyhow::Result<()> {
    if nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |bit: u32| eff & (1u64 << bit) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    bail!("needs root or CAP_BPF+CAP_PERFMON to load its kernel programs; run it with sudo")
}

/// Ring buffer size in bytes: a power of two multiple of the page size.
pub fn ring_bytes(kib: u32) -> anyhow::Result<u32> {
    let bytes = kib
        .checked_mul(1024)
        .ok_or_else(|| anyhow!("--ring-buffer-kib {kib} is too large"))?;
    if bytes < 4096 || !bytes.is_power_of_two() {
        bail!("--ring-buffer-kib must be a power of two of at least 4 (got {kib})");
    }
    Ok(bytes)
}

impl Session {
    /// Reads the kernel, loads the object with its globals and attaches the
    /// planned hooks. Fails when a required hook cannot be attached.
    /// `denied`: mechanism kinds never to use (`--no-mechanism`).
    pub fn start(
        filter: &KernelFilter,
        ring_buffer_bytes: u32,
        denied: &[probes::table::Kind],
    ) -> anyhow::Result<Session> {
        if EBPF_OBJECT.is_empty() {
            bail!(
                "this tracer binary was built without its kernel programs (AYA_BUILD_SKIP); rebuild with `cargo xtask run`"
            );
        }
        check_privileges()?;
        let t0 = std::time::Instant::now();
        let prepared = probes::prepare::Prepared::start()?;
        let kernel = KernelInfo::load().context("reading the running kernel's BTF")?;
        log::debug!("start-up: kernel description read in {:?}", t0.elapsed());
        let global_filter = filter.to_global();
        let loader = prepared.loader()?;
        // What the kernel offers is read beside creating the object's maps
        // (the maps need only the offsets and layouts, copied here; the
        // choice of hooks needs only the offer). The hook-probe thread then
        // drops the kernel description's BTF, hands its memory back and
        // parses the one the BTF-typed programs load against, still beside
        // the maps: one parsed BTF at a time, as when they ran in sequence.
        let (offsets, layouts) = (kernel.offsets, kernel.layouts);
        let (probed, loaded) = std::thread::scope(|s| {
            let probed = std::thread::Builder::new()
                .name("hook-probe".into())
                .spawn_scoped(s, move || {
                    let mut kernel = kernel;
                    let caps = probes::caps::probe(&kernel);
                    // Nothing needs the kernel description's BTF once the
                    // offer is read; its pages go back to the system before
                    // the next parse takes as many.
                    kernel.forget_btf();
                    release_freed_memory();
                    (kernel, caps, programs_btf())
                });
            let loaded = load_object(
                loader,
                &offsets,
                &layouts,
                &global_filter,
                ring_buffer_bytes,
            );
            let probed = probed
                .context("starting the hook-probe thread")
                .and_then(|handle| {
                    handle
                        .join()
                        .map_err(|_| anyhow!("reading the kernel's hooks panicked"))
                });
            (probed, loaded)
        });
        let (kernel, caps, btf) = probed?;
        log::debug!(
            "start-up: hooks the kernel offers read, maps created and BTF for the programs read at {:?}",
            t0.elapsed()
        );
        if !caps.ring_buffer {
            bail!(
                "this kernel has no BPF ring buffer (Linux 5.8 or newer is needed; found {})",
                caps.release
            );
        }
        let plans = probes::plan_without(probes::HOOKS, &caps, denied);
        let impossible = probes::unsatisfiable(&plans);
        if !impossible.is_empty() {
            bail!(
                "this kernel offers no way to attach: {}",
                impossible.join("; ")
            );
        }
        let mut ebpf = loaded?;
        let btf = btf?;
        let mut links = Vec::new();
        let hooks = probes::attach_all(&mut ebpf, &btf, &plans, &mut links, loader_threads());
        log::debug!("start-up: hooks attached at {:?}", t0.elapsed());
        let failed: Vec<String> = hooks
            .iter()
            .filter(|h| h.required && h.chosen.is_none())
            .map(|h| {
                let why: Vec<String> = h
                    .refused
                    .iter()
                    .map(|r| format!("{}: {}", r.mechanism, r.why))
                    .collect();
                format!("{} ({})", h.hook, why.join("; "))
            })
            .collect();
        if !failed.is_empty() {
            bail!("the kernel refused required hooks: {}", failed.join("; "));
        }
        for h in hooks
            .iter()
            .filter(|h| h.chosen.is_none() && h.not_needed.is_none())
        {
            log::info!("optional hook {} not attached: {}", h.hook, h.purpose);
        }
        log::info!("hooks: {}", chosen_summary(&hooks));
        // Socket owners at start-up from one kernel pass over every open
        // file, not a readlink per fd (the /proc scan stays the fallback).
        match crate::task_iter::TaskFileIter::load(&mut ebpf, &btf) {
            Ok(iter) => {
                log::info!("socket owners: task_file iterator");
                crate::snapshot::set_fd_source(Some(std::sync::Arc::new(iter)));
            }
            Err(e) => log::info!("{e:#}; socket owners are read from /proc/PID/fd"),
        }
        drop(btf);
        release_freed_memory();
        Ok(Session {
            links: std::sync::Mutex::new(links),
            detaching: std::sync::Mutex::new(None),
            ebpf,
            kernel,
            caps,
            hooks,
        })
    }
}

impl Session {
    /// Starts detaching every hook on a thread of its own: no event after
    /// this one matters (diagnose, once its window is over), and detaching
    /// waits for the kernel (an RCU grace period per BTF-attached program,
    /// 40-90 ms each here). Maps stay readable; dropping the session waits
    /// for the thread.
    pub fn detach_in_background(&self) {
        let links = std::mem::take(&mut *lock(&self.links));
        let spawned = std::thread::Builder::new()
            .name("detach".into())
            .spawn(move || detach(links));
        match spawned {
            Ok(handle) => *lock(&self.detaching) = Some(handle),
            Err(e) => log::debug!("cannot detach in the background ({e}); detaching at exit"),
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Detaches links one after the other. Side by side was tried: the kernel
/// then rewrites several BPF trampolines at once, and under qemu TCG that
/// locked up a 5.10 guest (soft lockups in the detaching thread and in a
/// task entering a patched function) and oopsed a 6.12 one at an int3 of
/// the patching; the serial wait is hidden behind diagnose's final
/// snapshot anyway.
fn detach(links: Vec<crate::probes::attach::Link>) {
    let t0 = std::time::Instant::now();
    let n = links.len();
    for (i, link) in links.into_iter().enumerate() {
        let t = std::time::Instant::now();
        drop(link);
        log::trace!("link {i} detached in {:?}", t.elapsed());
    }
    if n > 0 {
        log::debug!("{n} hooks detached in {:?}", t0.elapsed());
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // The iterator holds its program open: release it with the rest.
        crate::snapshot::set_fd_source(None);
        detach(std::mem::take(&mut *lock(&self.links)));
        if let Some(h) = lock(&self.detaching).take() {
            let _ = h.join();
        }
    }
}

/// `hook=mechanism` for every hook, `-` where none is attached (one line on
/// stderr at start, the way `tracer probes` would say it).
pub fn chosen_summary(hooks: &[HookReport]) -> String {
    hooks
        .iter()
        .map(|h| {
            let mech = h.chosen.as_ref().map_or("-", |c| c.mechanism);
            format!("{}={mech}", h.hook)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Hands the memory start-up freed (parsed BTF, some 20 MiB) back to the
/// system, so the long-running process does not keep it resident.
pub fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free heap pages; no pointer is
    // touched.
    unsafe {
        libc::malloc_trim(0);
    }
}
