//! A crowded host, run as `xtask bench crowd ...` inside the bench
//! namespace (`ip netns exec`): what `tracer` meets when it attaches to a
//! big server in an incident.
//!
//! - `--pairs N` loopback connections, both ends held open (2 N sockets),
//!   spread over processes of at most [`PAIRS_PER_PROC`] pairs each (the
//!   per-process fd hard limit here is 20,000); the first `--close-wait`
//!   of them have their client end closed, so the server end sits in
//!   CLOSE_WAIT;
//! - `--procs P` processes holding `--fds F` descriptors each (/dev/null);
//! - `--namespaces K` processes each in a network namespace of its own
//!   with one listener (containers).
//!
//! Every child dies with the crowd (PR_SET_PDEATHSIG); the crowd prints one
//! `ready sockets=... fds=... namespaces=...` line once all of them are
//! set up, then lives until its stdin closes.

use std::fs::File;
use std::io::{self, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{FromRawFd as _, OwnedFd};

use anyhow::{Context as _, Result, bail};

/// Connection pairs one process holds (two fds each, plus a listener).
pub const PAIRS_PER_PROC: u64 = 8_000;
/// First listener port of the pair processes (one port each).
const BASE_PORT: u16 = 20_000;

#[derive(clap::Args, Clone, Copy, Debug)]
pub struct Spec {
    /// Loopback connections with both ends held (two sockets each).
    #[arg(long, default_value_t = 64_000)]
    pub pairs: u64,
    /// Of those, how many have their client end closed (CLOSE_WAIT).
    #[arg(long, default_value_t = 3_000)]
    pub close_wait: u64,
    /// Extra processes holding `--fds` descriptors each.
    #[arg(long, default_value_t = 300)]
    pub procs: u32,
    #[arg(long, default_value_t = 200)]
    pub fds: u32,
    /// Extra network namespaces, each with one listener.
    #[arg(long, default_value_t = 100)]
    pub namespaces: u32,
}

impl Spec {
    /// The crowd's command-line arguments (after `bench crowd`).
    pub fn args(&self) -> Vec<String> {
        vec![
            format!("--pairs={}", self.pairs),
            format!("--close-wait={}", self.close_wait),
            format!("--procs={}", self.procs),
            format!("--fds={}", self.fds),
            format!("--namespaces={}", self.namespaces),
        ]
    }

    /// TCP sockets the crowd holds (both ends of each pair, the listeners).
    pub fn sockets(&self) -> u64 {
        2 * self.pairs + self.pair_procs() + u64::from(self.namespaces)
    }

    pub fn pair_procs(&self) -> u64 {
        self.pairs.div_ceil(PAIRS_PER_PROC)
    }
}

/// The crowd's main: set up every child, say ready, wait for stdin's end.
pub fn main(spec: Spec) -> Result<()> {
    if spec.close_wait > spec.pairs {
        bail!(
            "--close-wait {} exceeds --pairs {}",
            spec.close_wait,
            spec.pairs
        );
    }
    raise_nofile()?;
    // A wide ephemeral range: 8,000 connections per destination port.
    std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "1024 65000")
        .context("widening ip_local_port_range in the bench namespace")?;
    let (ready_r, ready_w) = pipe()?;
    let mut children = 0u32;
    let n = spec.pair_procs();
    for i in 0..n {
        let pairs = PAIRS_PER_PROC.min(spec.pairs - i * PAIRS_PER_PROC);
        let closed = spec
            .close_wait
            .saturating_sub(i * PAIRS_PER_PROC)
            .min(pairs);
        let port = BASE_PORT + u16::try_from(i).context("too many pair processes")?;
        spawn_child(&ready_w, move || hold_pairs(port, pairs, closed))?;
        children += 1;
    }
    for _ in 0..spec.procs {
        spawn_child(&ready_w, move || hold_files(spec.fds))?;
        children += 1;
    }
    for _ in 0..spec.namespaces {
        spawn_child(&ready_w, hold_namespace)?;
        children += 1;
    }
    drop(ready_w);
    let mut reader = File::from(ready_r);
    let mut got = 0u32;
    let mut byte = [0u8; 1];
    while got < children {
        match reader.read(&mut byte) {
            Ok(0) => bail!(
                "{} of {children} crowd processes failed to set up",
                children - got
            ),
            Ok(_) if byte[0] == b'+' => got += 1,
            Ok(_) => bail!("a crowd process failed to set up (see its error above)"),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("reading the crowd's ready pipe"),
        }
    }
    println!(
        "ready sockets={} fds={} namespaces={}",
        spec.sockets(),
        2 * spec.pairs - spec.close_wait + u64::from(spec.procs) * u64::from(spec.fds),
        spec.namespaces
    );
    io::stdout().flush()?;
    // Live until the harness closes stdin (or kills us; the children follow).
    let mut sink = Vec::new();
    let _ = io::stdin().read_to_end(&mut sink);
    Ok(())
}

fn raise_nofile() -> Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(io::Error::last_os_error()).context("getrlimit");
        }
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            return Err(io::Error::last_os_error()).context("setrlimit");
        }
    }
    let need = 2 * PAIRS_PER_PROC + 16;
    if lim.rlim_max < need {
        bail!(
            "RLIMIT_NOFILE hard limit {} is below the {need} a pair process needs",
            lim.rlim_max
        );
    }
    Ok(())
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array we own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error()).context("pipe2");
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Forks a child that runs `setup`, reports on `ready` ('+' or '-') and
/// then sleeps until the crowd dies. The crowd is single-threaded here, so
/// forking without exec is sound.
fn spawn_child(ready: &OwnedFd, setup: impl FnOnce() -> Result<Vec<OwnedFd>>) -> Result<()> {
    // SAFETY: this process has one thread; the child only runs `setup`,
    // writes one byte and pauses or exits, never returning into the caller.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error()).context("fork");
    }
    if pid > 0 {
        return Ok(());
    }
    // SAFETY: prctl only changes this child's death signal.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let mut out = File::from(ready.try_clone().unwrap_or_else(|_| std::process::exit(1)));
    match setup() {
        Ok(held) => {
            let _ = out.write_all(b"+");
            drop(out);
            loop {
                // SAFETY: pause has no preconditions.
                unsafe { libc::pause() };
                let _ = &held;
            }
        }
        Err(e) => {
            eprintln!("xtask bench crowd: {e:#}");
            let _ = out.write_all(b"-");
            std::process::exit(1);
        }
    }
}

/// `pairs` connections to a listener of this process on `port`, both ends
/// kept; the client ends of the first `closed` are closed (CLOSE_WAIT).
fn hold_pairs(port: u16, pairs: u64, closed: u64) -> Result<Vec<OwnedFd>> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listener = TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
    let mut held = Vec::with_capacity(2 * pairs as usize + 1);
    for i in 0..pairs {
        let client = TcpStream::connect(addr).with_context(|| format!("connect {i} to {addr}"))?;
        let (server, _) = listener
            .accept()
            .with_context(|| format!("accept {i} on {addr}"))?;
        held.push(OwnedFd::from(server));
        if i < closed {
            drop(client);
        } else {
            held.push(OwnedFd::from(client));
        }
    }
    held.push(OwnedFd::from(listener));
    Ok(held)
}

fn hold_files(n: u32) -> Result<Vec<OwnedFd>> {
    (0..n)
        .map(|_| {
            File::open("/dev/null")
                .map(OwnedFd::from)
                .context("opening /dev/null")
        })
        .collect()
}

/// A network namespace of its own with a listener on port 80.
fn hold_namespace() -> Result<Vec<OwnedFd>> {
    // SAFETY: unshare only changes this (single-threaded) child's namespaces.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error()).context("unshare(CLONE_NEWNET)");
    }
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 80)).context("binding 0.0.0.0:80")?;
    Ok(vec![OwnedFd::from(listener)])
}
