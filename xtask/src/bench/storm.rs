//! The load generators, run as `xtask bench storm KIND --count N --workers W`
//! inside the bench namespace (`ip netns exec`). Each does exactly N
//! operations split over W threads, times them from a common start, and
//! prints one `key=value` line: what it did, the wall time and the
//! namespace's Tcp OutRsts delta (this process's /proc/net is the bench
//! namespace's).
//!
//! - `closed`: connect to 127.0.0.1:9, where nothing listens: the kernel
//!   answers each SYN with a RST (no socket), the client gets ECONNREFUSED.
//! - `abort`: connect, accept, then close the client with SO_LINGER 0: one
//!   RST from an established socket (TCP_ABORT_ON_CLOSE) per connection.
//! - `emfile`: a listener with one connection queued, RLIMIT_NOFILE lowered
//!   until no descriptor is free; every accept4() then fails with EMFILE.

use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd as _;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Instant;

use anyhow::{Context as _, Result, anyhow, bail};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Closed,
    Abort,
    Emfile,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Closed, Kind::Abort, Kind::Emfile];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Closed => "closed",
            Kind::Abort => "abort",
            Kind::Emfile => "emfile",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Kind::Closed => "connects to a closed port (RST per SYN)",
            Kind::Abort => "aborts of established connections (SO_LINGER 0)",
            Kind::Emfile => "accept4() failing with EMFILE",
        }
    }
}

/// Port with no listener in the fresh namespace.
const CLOSED_PORT: u16 = 9;

/// One generator run, as printed by the child and parsed by the harness.
#[derive(Clone, Copy, Debug, Default)]
pub struct Outcome {
    pub ops: u64,
    pub secs: f64,
    pub out_rsts: u64,
    pub pid: u32,
    /// The generator's own CPU (user + system seconds, all threads); the
    /// kernel's TCP work and the BPF programs run in its context.
    pub cpu: f64,
}

impl Outcome {
    pub fn rate(&self) -> f64 {
        if self.secs > 0.0 {
            self.ops as f64 / self.secs
        } else {
            0.0
        }
    }

    fn line(&self) -> String {
        format!(
            "ops={} secs={:.6} out_rsts={} pid={} cpu={:.6}",
            self.ops, self.secs, self.out_rsts, self.pid, self.cpu
        )
    }

    pub fn parse(text: &str) -> Result<Outcome> {
        let line = text
            .lines()
            .rev()
            .find(|l| l.starts_with("ops="))
            .ok_or_else(|| anyhow!("the generator printed no result line: {text:?}"))?;
        let mut out = Outcome::default();
        for pair in line.split_whitespace() {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| anyhow!("bad generator field {pair:?}"))?;
            let bad = || anyhow!("bad generator field {pair:?}");
            match key {
                "ops" => out.ops = value.parse().map_err(|_| bad())?,
                "secs" => out.secs = value.parse().map_err(|_| bad())?,
                "out_rsts" => out.out_rsts = value.parse().map_err(|_| bad())?,
                "pid" => out.pid = value.parse().map_err(|_| bad())?,
                "cpu" => out.cpu = value.parse().map_err(|_| bad())?,
                _ => {}
            }
        }
        Ok(out)
    }
}

/// Entry point of the hidden subcommand.
pub fn main(kind: Kind, count: u64, workers: u32) -> Result<()> {
    let workers = u64::from(workers.max(1));
    let before = tcp_counter("OutRsts")?;
    let cpu_before = own_cpu()?;
    let (ops, secs) = match kind {
        Kind::Closed => closed(count, workers)?,
        Kind::Abort => abort(count, workers)?,
        Kind::Emfile => emfile(count, workers)?,
    };
    let cpu = own_cpu()? - cpu_before;
    let after = tcp_counter("OutRsts")?;
    let outcome = Outcome {
        ops,
        secs,
        out_rsts: after.saturating_sub(before),
        pid: std::process::id(),
        cpu,
    };
    println!("{}", outcome.line());
    Ok(())
}

/// User + system CPU seconds of this process (every thread).
fn own_cpu() -> Result<f64> {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return Err(io::Error::last_os_error()).context("getrusage");
        }
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(secs(usage.ru_utime) + secs(usage.ru_stime))
}

/// Runs `work(share)` on `workers` threads released together; returns the
/// total of what they report and the wall time from release to the last.
fn parallel<F>(count: u64, workers: u64, work: F) -> Result<(u64, f64)>
where
    F: Fn(u64) -> Result<u64> + Send + Sync + 'static,
{
    let work = Arc::new(work);
    let start = Arc::new(Barrier::new(usize::try_from(workers)? + 1));
    let mut handles = Vec::new();
    for i in 0..workers {
        let share = count / workers + u64::from(i < count % workers);
        let (work, start) = (Arc::clone(&work), Arc::clone(&start));
        handles.push(thread::spawn(move || {
            start.wait();
            work(share)
        }));
    }
    start.wait();
    let t0 = Instant::now();
    let mut total = 0;
    for handle in handles {
        total += handle
            .join()
            .map_err(|_| anyhow!("a generator thread panicked"))??;
    }
    Ok((total, t0.elapsed().as_secs_f64()))
}

fn closed(count: u64, workers: u64) -> Result<(u64, f64)> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, CLOSED_PORT));
    if TcpListener::bind(addr).is_err() {
        bail!("port {CLOSED_PORT} is in use in the bench namespace; nothing should listen there");
    }
    parallel(count, workers, move |n| {
        for _ in 0..n {
            match TcpStream::connect(addr) {
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                Err(e) => return Err(e).context("connect to the closed port"),
                Ok(_) => bail!("connect to {addr} succeeded; something listens there"),
            }
        }
        Ok(n)
    })
}

fn set_linger_zero(stream: &TcpStream) -> Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: valid fd, pointer and length of a linger struct.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            libc::socklen_t::try_from(std::mem::size_of::<libc::linger>())?,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error()).context("setsockopt(SO_LINGER, 0)");
    }
    Ok(())
}

fn abort(count: u64, workers: u64) -> Result<(u64, f64)> {
    parallel(count, workers, |n| {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("bind a listener")?;
        let addr = listener.local_addr()?;
        for _ in 0..n {
            let client = TcpStream::connect(addr).context("connect to the bench listener")?;
            let (server, _) = listener.accept().context("accept")?;
            set_linger_zero(&client)?;
            drop(client); // sends the RST
            drop(server); // already reset: sends nothing
        }
        Ok(n)
    })
}

fn emfile(count: u64, workers: u64) -> Result<(u64, f64)> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("bind a listener")?;
    // Queued, so that accept4() never waits: it fails before looking.
    let _queued = TcpStream::connect(listener.local_addr()?).context("connect")?;
    let fd = listener.as_raw_fd();
    let highest = fs::read_dir("/proc/self/fd")
        .context("listing /proc/self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap_or(2);
    let limit = libc::rlimit {
        rlim_cur: highest + 1,
        rlim_max: libc::RLIM_INFINITY,
    };
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid rlimit pointers.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut current) != 0 {
            return Err(io::Error::last_os_error()).context("getrlimit");
        }
        let lowered = libc::rlimit {
            rlim_max: current.rlim_max,
            ..limit
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lowered) != 0 {
            return Err(io::Error::last_os_error()).context("lowering RLIMIT_NOFILE");
        }
    }
    // Fill any hole below the limit so that no descriptor is free.
    let mut fillers = Vec::new();
    loop {
        // SAFETY: dup of a valid fd; the result is closed below.
        let new = unsafe { libc::dup(fd) };
        if new < 0 {
            break;
        }
        fillers.push(new);
    }
    let result = parallel(count, workers, move |n| {
        for _ in 0..n {
            // SAFETY: accept4 on a valid listener with null address pointers.
            let rc = unsafe { libc::accept4(fd, std::ptr::null_mut(), std::ptr::null_mut(), 0) };
            let err = io::Error::last_os_error();
            if rc >= 0 || err.raw_os_error() != Some(libc::EMFILE) {
                bail!("accept4 did not fail with EMFILE (returned {rc}: {err})");
            }
        }
        Ok(n)
    });
    for f in fillers {
        // SAFETY: fds we dup'ed and own.
        unsafe { libc::close(f) };
    }
    result
}

/// A field of the `Tcp:` lines of /proc/net/snmp (this process's namespace).
pub fn tcp_counter(name: &str) -> Result<u64> {
    let text = fs::read_to_string("/proc/net/snmp").context("reading /proc/net/snmp")?;
    let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
    let (Some(header), Some(values)) = (tcp.next(), tcp.next()) else {
        bail!("/proc/net/snmp has no Tcp: lines");
    };
    header
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(key, _)| *key == name)
        .ok_or_else(|| anyhow!("/proc/net/snmp has no Tcp {name}"))?
        .1
        .parse()
        .with_context(|| format!("Tcp {name} in /proc/net/snmp is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_line_round_trips() {
        let o = Outcome {
            ops: 200_000,
            secs: 0.5,
            out_rsts: 199_999,
            pid: 42,
            cpu: 0.75,
        };
        let parsed = Outcome::parse(&format!("noise\n{}\n", o.line())).expect("parses");
        assert_eq!(
            (parsed.ops, parsed.out_rsts, parsed.pid),
            (200_000, 199_999, 42)
        );
        assert!((parsed.rate() - 400_000.0).abs() < 1e-6);
        assert!(Outcome::parse("nothing").is_err());
    }
}
