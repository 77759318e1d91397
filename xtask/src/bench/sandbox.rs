//! What keeps the benchmark from leaking anything: the SIGINT/SIGTERM flag,
//! the network namespace (deleted on drop), and children that die with the
//! harness (PR_SET_PDEATHSIG) and are killed on drop.

use std::fs;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::util::{self, describe, describe_status, find_program};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Turns SIGINT and SIGTERM into a flag that the waiting loops check, so
/// that the guards below run instead of the process dying mid-way.
pub fn install_signal_flag() -> Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe; sigaction is given a zeroed, valid struct.
        let rc = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).context("installing a signal handler");
        }
    }
    Ok(())
}

/// Fails once Ctrl-C or SIGTERM has arrived.
pub fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted; cleaned up the namespace and the processes it started");
    }
    Ok(())
}

/// Sleeps in small steps, failing early on an interrupt.
pub fn sleep(total: Duration) -> Result<()> {
    let end = Instant::now() + total;
    loop {
        check_interrupted()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        thread::sleep((end - now).min(Duration::from_millis(20)));
    }
}

/// `ip` with clear errors.
pub fn ip() -> Result<Command> {
    let path = find_program("ip")
        .ok_or_else(|| anyhow!("`ip` not found; install iproute2 (`cargo xtask setup` does)"))?;
    let mut cmd = Command::new(path);
    cmd.stdin(Stdio::null());
    Ok(cmd)
}

/// A network namespace `tracer-bench-<pid>` with lo up; deleted on drop.
pub struct Netns {
    pub name: String,
    /// Inode of the namespace, as tracer reports it in `netns`.
    pub inode: u64,
}

impl Netns {
    pub fn create() -> Result<Netns> {
        remove_stale();
        let name = format!("tracer-bench-{}", std::process::id());
        util::output(ip()?.args(["netns", "add", &name]))
            .with_context(|| format!("creating network namespace {name}"))?;
        // From here on, dropping `ns` deletes it, also when a step fails.
        let mut ns = Netns { name, inode: 0 };
        util::output(ip()?.args(["-n", &ns.name, "link", "set", "lo", "up"]))
            .context("bringing lo up in the bench namespace")?;
        let path = PathBuf::from("/run/netns").join(&ns.name);
        ns.inode = std::os::unix::fs::MetadataExt::ino(
            &fs::metadata(&path).with_context(|| format!("stat {}", path.display()))?,
        );
        Ok(ns)
    }

    /// `ip netns exec NAME program args...`
    pub fn exec(&self, program: &std::path::Path) -> Result<Command> {
        let mut cmd = ip()?;
        cmd.args(["netns", "exec", &self.name]).arg(program);
        Ok(cmd)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let deleted = ip().and_then(|mut c| util::output(c.args(["netns", "del", &self.name])));
        if let Err(err) = deleted {
            eprintln!(
                "xtask bench: warning: could not delete network namespace {}: {err:#}; \
                 delete it with `ip netns del {}`",
                self.name, self.name
            );
        }
    }
}

/// Deletes `tracer-bench-<pid>` namespaces whose harness is gone (killed
/// with SIGKILL, so its guard never ran).
fn remove_stale() {
    let Ok(entries) = fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("tracer-bench-") else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !PathBuf::from("/proc").join(pid).exists() {
            if let Ok(mut cmd) = ip() {
                let _ = util::output(cmd.args(["netns", "del", &name]));
            }
        }
    }
}

/// Makes the child get SIGKILL when the harness dies, whatever kills it.
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A child that is killed (SIGKILL) and reaped on drop unless it was waited for.
pub struct Guarded {
    pub child: Child,
    pub what: String,
    done: bool,
}

impl Guarded {
    pub fn spawn(cmd: &mut Command) -> Result<Guarded> {
        die_with_parent(cmd);
        let what = describe(cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("could not start `{what}`"))?;
        Ok(Guarded {
            child,
            what,
            done: false,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` once it has exited.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        let status = self
            .child
            .try_wait()
            .with_context(|| format!("waiting for `{}`", self.what))?;
        if status.is_some() {
            self.done = true;
        }
        Ok(status)
    }

    /// Waits up to `limit`, polling so that an interrupt is noticed.
    pub fn wait_for(&mut self, limit: Duration) -> Result<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            check_interrupted()?;
            if start.elapsed() > limit {
                bail!("`{}` still runs after {limit:?}; killed it", self.what);
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends `sig` (SIGINT to end a tracer cleanly).
    pub fn signal(&self, sig: libc::c_int) -> Result<()> {
        let pid = libc::pid_t::try_from(self.pid()).context("pid out of range")?;
        // SAFETY: kill has no memory-safety preconditions; the pid is our
        // child's and has not been reaped (done is false until it is).
        if !self.done && unsafe { libc::kill(pid, sig) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("signalling `{}`", self.what));
        }
        Ok(())
    }

    /// Waits for an exit 0 within `limit`.
    pub fn expect_success(&mut self, limit: Duration) -> Result<()> {
        let status = self.wait_for(limit)?;
        if !status.success() {
            bail!("`{}` failed ({})", self.what, describe_status(status));
        }
        Ok(())
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
