//! Boots a prepared kernel under qemu (TCG: this machine's KVM cannot run
//! stock kernels) and waits, bounded, for the command's exit status.
//!
//! Ports: ttyS0 the kernel console (a file, its tail shown on failure),
//! ttyS1 the command's stdout (qemu's stdout), ttyS2 its stderr (qemu's
//! stderr), ttyS3 the init's status lines (`started`, `exit N`, `fail WHY`).

use std::ffi::OsString;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};

use super::initramfs::ROOT_TAG;
use crate::util::{describe, find_program};

/// How long the guest may take to reach the command (boot, 9p, overlay).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
/// Console lines shown when a guest fails.
const CONSOLE_TAIL: usize = 25;

/// What qemu boots.
pub struct Machine<'a> {
    pub image: &'a Path,
    pub initramfs: &'a Path,
    pub cmdline: &'a str,
    pub console_log: &'a Path,
    pub status_log: &'a Path,
}

/// 2 vCPUs online of 16 possible (`maxcpus`, and `possible_cpus=16` on the
/// kernel command line, `guest::kernel_cmdline`). Per-CPU maps are
/// allocated for every possible CPU, so the guests run tracer the way a
/// big host does (its per-CPU maps sized down, `tracer/src/map_sizes.rs`)
/// without the cost of emulating 16 vCPUs. The 5.10 and 6.1 guests have 16
/// possible CPUs (`/sys/devices/system/cpu/possible` 0-15); the 6.12 one
/// has 2 (measured: that kernel does not take the extra CPUs as possible), so the
/// matrix runs both sizings.
const SMP: &str = "2,maxcpus=16";

/// qemu's arguments: TCG, 2 vCPUs online of 16 possible ([`SMP`]), 2 GiB, no
/// network, no display, the host's `/` read-only over 9p, four serial
/// ports.
///
/// TCG runs the vCPUs on one host thread (`thread=single`). With a thread
/// per vCPU the 5.10 guest locked up now and then in the middle of a test
/// (about once in four runs of the subset: both vCPUs in soft lockup in the
/// test's own processes, RCU stalled, no softirq progress; tracer's hooks
/// attach and detach by patching kernel text while the other vCPU runs
/// it), and 6.12 oopsed at an int3 of its own text patching. One thread
/// costs time: in a clean-clone CI run the 5.10 subset took 633 s and 6.1
/// 510 s, against 369 and 347 s with a thread per vCPU the day before.
pub fn qemu_args(m: &Machine) -> Vec<OsString> {
    let mut args: Vec<OsString> = [
        "-accel",
        "tcg,thread=single",
        "-cpu",
        "max",
        "-smp",
        SMP,
        "-m",
        "2G",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-nic",
        "none",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    let mut push = |a: &str, b: String| {
        args.push(a.into());
        args.push(b.into());
    };
    push("-kernel", m.image.display().to_string());
    push("-initrd", m.initramfs.display().to_string());
    push("-append", m.cmdline.to_owned());
    push(
        "-fsdev",
        format!("local,id={ROOT_TAG},path=/,readonly=on,security_model=none,multidevs=remap"),
    );
    push(
        "-device",
        format!("virtio-9p-pci,fsdev={ROOT_TAG},mount_tag={ROOT_TAG}"),
    );
    let chardevs = [
        format!("file,id=console,path={}", m.console_log.display()),
        "stdio,id=out,signal=off".to_owned(),
        "file,id=err,path=/proc/self/fd/2,append=on".to_owned(),
        format!("file,id=status,path={}", m.status_log.display()),
    ];
    for chardev in chardevs {
        let id = chardev
            .split(',')
            .find_map(|p| p.strip_prefix("id="))
            .unwrap_or_default()
            .to_owned();
        push("-chardev", chardev);
        push("-serial", format!("chardev:{id}"));
    }
    args
}

/// What the init reported on the status port.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Status {
    pub started: bool,
    pub exit: Option<i32>,
    pub fail: Option<String>,
}

pub fn parse_status(text: &str) -> Status {
    let mut status = Status::default();
    for line in text.lines() {
        let Some(rest) = line.trim().strip_prefix("xtask-vm: ") else {
            continue;
        };
        if rest == "started" {
            status.started = true;
        } else if let Some(code) = rest.strip_prefix("exit ") {
            status.exit = code.trim().parse().ok();
        } else if let Some(why) = rest.strip_prefix("fail ") {
            status.fail = Some(why.to_owned());
        }
    }
    status
}

/// A finished run.
pub struct Outcome {
    pub code: i32,
}

/// Where a copy of the command's stdout goes as it comes (kept when the
/// VM fails half-way, so that what finished is still reported).
pub type Capture = Arc<Mutex<Vec<u8>>>;

/// Boots `m`, streams the command's output live, and returns its exit code.
/// Errors (one line) when the guest fails to boot, panics, times out or the
/// caller is interrupted; qemu is killed in every such case.
pub fn boot(
    m: &Machine,
    release: &str,
    timeout: Duration,
    capture: Option<Capture>,
) -> Result<Outcome> {
    let qemu = find_program("qemu-system-x86_64")
        .ok_or_else(|| anyhow!("qemu-system-x86_64 not found; run `cargo xtask setup`"))?;
    let mut cmd = Command::new(qemu);
    cmd.args(qemu_args(m))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: prctl is async-signal-safe; qemu dies with xtask (no orphan).
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    signals::install();
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("could not start `{}`", describe(&cmd)))?;
    let out = relay(child.stdout.take(), std::io::stdout, capture);
    let err = relay(child.stderr.take(), std::io::stderr, None);

    let ended = wait(&mut child, m.status_log, start, timeout);
    let _ = out.join();
    let _ = err.join();
    let status = parse_status(&fs::read_to_string(m.status_log).unwrap_or_default());
    let ended = match (ended, signals::received()) {
        (Ok(()), Some(sig)) => Err(format!("interrupted by signal {sig}")),
        (ended, _) => ended,
    };
    let problem = match (ended, status.exit) {
        (Ok(()), Some(code)) => return Ok(Outcome { code }),
        (Err(why), _) => why,
        (Ok(()), None) => match (status.fail, status.started) {
            (Some(why), _) => format!("the guest's init failed: {why}"),
            (None, _) if panic_line(m.console_log).is_some() => format!(
                "the guest kernel panicked ({})",
                panic_line(m.console_log).unwrap_or_default()
            ),
            (None, true) => "the guest stopped (panic?) before the command ended".to_owned(),
            (None, false) => "the guest stopped (panic?) before reaching the command".to_owned(),
        },
    };
    print_console_tail(m.console_log);
    bail!(
        "kernel {release}: {problem} after {:.0} s (console: {})",
        start.elapsed().as_secs_f64(),
        m.console_log.display()
    )
}

/// Waits for qemu; kills it on the VM timeout, on a boot that does not reach
/// the command within [`BOOT_TIMEOUT`], and on SIGINT/SIGTERM.
fn wait(
    child: &mut Child,
    status_log: &Path,
    start: Instant,
    timeout: Duration,
) -> Result<(), String> {
    let mut started = false;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return Ok(()),
            Ok(None) => {}
            Err(err) => {
                kill(child);
                return Err(format!("waiting for qemu failed: {err}"));
            }
        }
        let problem = if let Some(sig) = signals::received() {
            Some(format!("interrupted by signal {sig}"))
        } else if start.elapsed() > timeout {
            Some(format!(
                "timed out (the VM bound is {} s)",
                timeout.as_secs()
            ))
        } else {
            if !started {
                started = parse_status(&fs::read_to_string(status_log).unwrap_or_default()).started;
            }
            (!started && start.elapsed() > BOOT_TIMEOUT).then(|| {
                format!(
                    "the guest did not reach the command within {} s",
                    BOOT_TIMEOUT.as_secs()
                )
            })
        };
        if let Some(problem) = problem {
            kill(child);
            return Err(problem);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Copies a pipe to one of our streams as it comes, keeping a copy if asked.
fn relay<R: Read + Send + 'static, W: Write + 'static>(
    from: Option<R>,
    to: fn() -> W,
    keep: Option<Arc<Mutex<Vec<u8>>>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let Some(mut from) = from else { return };
        let mut buf = [0u8; 8192];
        let mut to = to();
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            // A closed stdout (e.g. `| head`) must not stop the guest.
            let _ = to.write_all(&buf[..n]).and_then(|()| to.flush());
            if let Some(keep) = &keep {
                if let Ok(mut kept) = keep.lock() {
                    kept.extend_from_slice(&buf[..n]);
                }
            }
        }
    })
}

/// The `Kernel panic - not syncing: ...` line of the console, if any.
fn panic_line(console_log: &Path) -> Option<String> {
    let text = fs::read(console_log).ok()?;
    let text = String::from_utf8_lossy(&text);
    text.lines()
        .find_map(|l| l.find("Kernel panic").map(|i| l[i..].trim().to_owned()))
}

fn print_console_tail(console_log: &Path) {
    let text = fs::read(console_log).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(CONSOLE_TAIL);
    if lines.is_empty() {
        eprintln!("xtask vm: the console printed nothing");
        return;
    }
    eprintln!("xtask vm: last {} console lines:", lines.len() - from);
    for line in &lines[from..] {
        eprintln!("  | {}", line.trim_end_matches('\r'));
    }
}

/// SIGINT/SIGTERM/SIGHUP noted rather than fatal, so that qemu is killed
/// before xtask exits.
pub mod signals {
    use super::*;

    static RECEIVED: AtomicI32 = AtomicI32::new(0);

    extern "C" fn note(sig: libc::c_int) {
        RECEIVED.store(sig, Ordering::SeqCst);
    }

    pub fn install() {
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: the handler only stores to an atomic.
            unsafe { libc::signal(sig, note as *const () as libc::sighandler_t) };
        }
    }

    pub fn received() -> Option<i32> {
        match RECEIVED.load(Ordering::SeqCst) {
            0 => None,
            sig => Some(sig),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_parse() {
        let s = parse_status("xtask-vm: started\r\nxtask-vm: exit 3\r\n");
        assert_eq!(
            s,
            Status {
                started: true,
                exit: Some(3),
                fail: None
            }
        );
        let s = parse_status("junk\nxtask-vm: fail insmod /modules/01-9p.ko\n");
        assert!(!s.started);
        assert_eq!(s.fail.as_deref(), Some("insmod /modules/01-9p.ko"));
        assert_eq!(parse_status(""), Status::default());
    }

    #[test]
    fn qemu_gets_tcg_no_network_and_four_serial_ports() {
        let m = Machine {
            image: Path::new("/k/vmlinux"),
            initramfs: Path::new("/k/initramfs.cpio"),
            cmdline: "console=ttyS0",
            console_log: Path::new("/r/console.log"),
            status_log: Path::new("/r/status.log"),
        };
        let args: Vec<String> = qemu_args(&m)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let joined = args.join(" ");
        assert!(joined.starts_with("-accel tcg,thread=single -cpu max -smp 2,maxcpus=16 -m 2G "));
        assert!(joined.contains("-nic none"));
        assert!(joined.contains("readonly=on,security_model=none,multidevs=remap"));
        assert_eq!(args.iter().filter(|a| *a == "-serial").count(), 4);
        assert!(
            joined.contains("-chardev file,id=console,path=/r/console.log -serial chardev:console")
        );
        assert!(joined.contains("-chardev stdio,id=out,signal=off -serial chardev:out"));
        assert!(joined.ends_with("-serial chardev:status"));
        let append = args.iter().position(|a| a == "-append").unwrap();
        assert_eq!(args[append + 1], "console=ttyS0");
    }
}
