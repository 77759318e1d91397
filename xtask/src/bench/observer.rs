//! The observers a storm runs under: nothing, `tracer watch --format json`
//! or an equivalent bpftrace script. Starting one waits until its hooks are
//! attached (and measures how long that took); while it runs, its CPU time
//! and peak RSS are read from /proc.

use std::fs::{self, File};
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};

use super::sandbox::{Guarded, check_interrupted};

/// What watches the storm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    None,
    /// `tracer watch` as shipped: RST storms counted in the kernel.
    Tracer,
    /// `tracer watch --per-rst`: one line per RST.
    TracerPerRst,
    Bpftrace,
}

impl Mode {
    pub const ALL: [Mode; 4] = [Mode::None, Mode::Tracer, Mode::TracerPerRst, Mode::Bpftrace];
    /// Every observer.
    pub const OBSERVERS: [Mode; 3] = [Mode::Tracer, Mode::TracerPerRst, Mode::Bpftrace];
    /// Both tracer modes.
    pub const TRACERS: [Mode; 2] = [Mode::Tracer, Mode::TracerPerRst];

    pub fn name(self) -> &'static str {
        match self {
            Mode::None => "no tracer",
            Mode::Tracer => "tracer",
            Mode::TracerPerRst => "tracer --per-rst",
            Mode::Bpftrace => "bpftrace",
        }
    }
}

/// The exact line tracer logs (RUST_LOG=info) once every hook is attached.
const ATTACHED_PREFIX: &str = "[INFO  tracer::watch] attached:";
/// How long an observer may take to attach before the bench gives up.
const ATTACH_LIMIT: Duration = Duration::from_secs(60);

/// The bpftrace equivalent: one line per RST sent or received (pid, comm,
/// socket, state, reason, ports; 6.10+ tcp_send_reset layout), failed
/// accepts counted per process and errno and printed once a second (as
/// tracer aggregates them). The last probe is attached last and creates
/// READY_FILE once, which is how the harness knows all probes are attached
/// (BEGIN fires before the other probes are attached).
const BPFTRACE_SCRIPT: &str = r#"
tracepoint:tcp:tcp_send_reset {
  printf("rst_sent pid=%d comm=%s sk=%p state=%d reason=%d sport=%d dport=%d\n",
    pid, comm, args->skaddr, args->state, args->reason,
    (args->saddr[2] << 8) | args->saddr[3], (args->daddr[2] << 8) | args->daddr[3]);
}
tracepoint:tcp:tcp_receive_reset {
  printf("rst_received pid=%d comm=%s sk=%p %s:%d %s:%d\n",
    pid, comm, args->skaddr, ntop(args->saddr), args->sport, ntop(args->daddr), args->dport);
}
tracepoint:syscalls:sys_exit_accept4, tracepoint:syscalls:sys_exit_accept
/args->ret == -24 || args->ret == -23/ {
  @failed[pid, comm, -args->ret] = count();
}
interval:s:1 { print(@failed); clear(@failed); }
interval:ms:5 /@ready == 0/ { @ready = 1; system("touch READY_FILE"); }
"#;

pub struct Observer {
    pub mode: Mode,
    proc: Option<Guarded>,
    /// Spawn to "attached".
    pub attach: Duration,
    /// Lines the observer wrote to stderr (the last few, for errors).
    stderr: Arc<Mutex<Vec<String>>>,
}

/// Where the observers' output and scratch files go.
pub struct Paths {
    pub tracer: PathBuf,
    pub scratch: PathBuf,
}

impl Observer {
    /// Starts `mode` with stdout to `out` (None: /dev/null) and waits until
    /// it is attached.
    pub fn start(mode: Mode, paths: &Paths, out: Option<&Path>) -> Result<Observer> {
        let stdout = match out {
            Some(path) => Stdio::from(
                File::create(path).with_context(|| format!("creating {}", path.display()))?,
            ),
            None => Stdio::null(),
        };
        let ready_file = paths
            .scratch
            .join(format!("bpftrace-ready-{}", std::process::id()));
        let mut cmd = match mode {
            Mode::None => {
                return Ok(Observer {
                    mode,
                    proc: None,
                    attach: Duration::ZERO,
                    stderr: Arc::default(),
                });
            }
            Mode::Tracer | Mode::TracerPerRst => {
                let mut cmd = Command::new(&paths.tracer);
                cmd.args(["watch", "--format", "json"])
                    .env("RUST_LOG", "info");
                if mode == Mode::TracerPerRst {
                    cmd.arg("--per-rst");
                }
                cmd
            }
            Mode::Bpftrace => {
                let _ = fs::remove_file(&ready_file);
                let script = BPFTRACE_SCRIPT.replace("READY_FILE", &ready_file.to_string_lossy());
                let bin = crate::util::find_program("bpftrace")
                    .ok_or_else(|| anyhow!("bpftrace not found; run `cargo xtask setup`"))?;
                let mut cmd = Command::new(bin);
                cmd.args(["--unsafe", "-e", &script]);
                cmd
            }
        };
        cmd.stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut proc = Guarded::spawn(&mut cmd)?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let pipe = proc
            .child
            .stderr
            .take()
            .ok_or_else(|| anyhow!("no stderr pipe"))?;
        let lines = Arc::clone(&stderr);
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(|l| l.ok()) {
                if line.starts_with(ATTACHED_PREFIX) {
                    let _ = tx.send(Instant::now());
                }
                if let Ok(mut kept) = lines.lock() {
                    if kept.len() >= 20 {
                        kept.remove(0);
                    }
                    kept.push(line);
                }
            }
        });
        let mut obs = Observer {
            mode,
            proc: None,
            attach: Duration::ZERO,
            stderr,
        };
        loop {
            check_interrupted()?;
            let attached_at = match mode {
                Mode::Tracer | Mode::TracerPerRst => rx.try_recv().ok(),
                _ => ready_file.exists().then(Instant::now),
            };
            if let Some(at) = attached_at {
                obs.attach = at.saturating_duration_since(started);
                break;
            }
            if let Some(status) = proc.try_wait()? {
                check_interrupted()?;
                bail!(
                    "{} exited ({status}) before attaching; its stderr:\n{}",
                    mode.name(),
                    obs.stderr_tail()
                );
            }
            if started.elapsed() > ATTACH_LIMIT {
                bail!(
                    "{} did not attach within {ATTACH_LIMIT:?}; its stderr:\n{}",
                    mode.name(),
                    obs.stderr_tail()
                );
            }
            thread::sleep(Duration::from_millis(1));
        }
        let _ = fs::remove_file(&ready_file);
        obs.proc = Some(proc);
        Ok(obs)
    }

    fn stderr_tail(&self) -> String {
        self.stderr.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// The observer's pid (None without a process).
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Guarded::pid)
    }

    /// User and system CPU seconds so far (0 without a process).
    pub fn cpu(&self) -> Result<Cpu> {
        match &self.proc {
            Some(p) => read_cpu(p.pid()),
            None => Ok(Cpu::default()),
        }
    }

    /// Peak resident set (VmHWM) in KiB.
    pub fn peak_rss_kib(&self) -> Result<u64> {
        let Some(p) = &self.proc else { return Ok(0) };
        let path = format!("/proc/{}/status", p.pid());
        let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        text.lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| anyhow!("no VmHWM in {path}"))
    }

    /// Waits until the observer has gone idle (has drained what the storm
    /// produced): its CPU time unchanged over 100 ms, at most `limit`.
    pub fn settle(&self, limit: Duration) -> Result<()> {
        if self.proc.is_none() {
            return Ok(());
        }
        let start = Instant::now();
        let mut last = self.cpu()?;
        while start.elapsed() < limit {
            super::sandbox::sleep(Duration::from_millis(100))?;
            let now = self.cpu()?;
            if now.total_ticks() <= last.total_ticks() + 1 {
                return Ok(());
            }
            last = now;
        }
        Ok(())
    }

    /// Fails if the observer died during the storm.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(p) = &mut self.proc {
            if let Some(status) = p.try_wait()? {
                check_interrupted()?;
                bail!(
                    "{} exited ({status}) during the bench; its stderr:\n{}",
                    self.mode.name(),
                    self.stderr_tail()
                );
            }
        }
        Ok(())
    }

    /// SIGINT, then expects a clean exit within 10 s.
    pub fn stop(mut self) -> Result<()> {
        if let Some(mut p) = self.proc.take() {
            p.signal(libc::SIGINT)?;
            p.expect_success(Duration::from_secs(10)).with_context(|| {
                format!("stopping {}: {}", self.mode.name(), self.stderr_tail())
            })?;
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu {
    pub user_ticks: u64,
    pub sys_ticks: u64,
}

impl Cpu {
    pub fn total_ticks(&self) -> u64 {
        self.user_ticks + self.sys_ticks
    }

    /// (user, system) seconds from `self` to `later`.
    pub fn delta_secs(&self, later: &Cpu) -> (f64, f64) {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        (
            later.user_ticks.saturating_sub(self.user_ticks) as f64 / hz,
            later.sys_ticks.saturating_sub(self.sys_ticks) as f64 / hz,
        )
    }
}

/// utime and stime (fields 14 and 15) of /proc/PID/stat: all threads,
/// live and exited, of the process.
fn read_cpu(pid: u32) -> Result<Cpu> {
    let path = format!("/proc/{pid}/stat");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // Fields after the command name, which ends at the last ')': state is
    // field 3, so utime (14) and stime (15) are the 12th and 13th here.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("unexpected {path}: {text:?}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| anyhow!("unexpected {path}: {text:?}"))
    };
    Ok(Cpu {
        user_ticks: field(11)?,
        sys_ticks: field(12)?,
    })
}
