//! `cargo xtask bench`: how much a RST storm and a burst of EMFILE accept
//! failures slow down under `tracer watch --format json` (to /dev/null) and
//! under an equivalent bpftrace script, against no tracer at all; whether
//! tracer delivers every RST; how fast it attaches, how much memory and CPU
//! it takes. Writes docs/benchmarks.md.
//!
//! The machine is shared and noisy, so nothing is a single timing: every
//! run measures the four modes (no tracer, tracer, tracer --per-rst,
//! bpftrace) side by side in a rotating order, and the
//! report gives medians over runs of rates and of per-run ratios.
//!
//! All traffic runs in a network namespace `tracer-bench-<pid>` on
//! 127.0.0.1; the generators are this binary (built in release) run as
//! `ip netns exec NS xtask bench storm KIND`. Ctrl-C, SIGTERM or an error
//! kill what was started and delete the namespace.

mod bighost;
mod crowd;
mod delivery;
mod exchange;
mod first_event;
mod machine;
mod observer;
mod one_thread;
mod profile;
mod report;
mod sandbox;
mod stats;
mod storm;
mod storm_runs;

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};

use crate::setup::{self, Scope};
use crate::util::{self, find_program, is_root, target_dir, workspace_root};
use observer::{Mode, Observer, Paths};
use sandbox::{Guarded, Netns};
use storm::{Kind, Outcome};

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    internal: Option<Internal>,
    /// Runs; in each, every storm runs with no tracer, tracer, tracer
    /// --per-rst and bpftrace back to back.
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=100))]
    runs: u32,
    /// Connections per RST storm (closed port, and aborts).
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1..))]
    connects: u64,
    /// Failed accepts per EMFILE burst.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    accepts: u64,
    /// Generator threads (default: one per CPU, as fast as the machine allows).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256))]
    workers: Option<u32>,
    /// Benchmark this tracer binary instead of building target/release/tracer.
    #[arg(long, value_name = "PATH")]
    tracer_bin: Option<PathBuf>,
    /// Print the results only; leave docs/benchmarks.md alone.
    #[arg(long)]
    no_doc: bool,
    /// Run only one part: the RST/EMFILE storms or the request/response
    /// load (exchange timing).
    #[arg(long, value_enum)]
    only: Option<Part>,
    /// Seconds of each request/response load (wrk against nginx).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=600))]
    load_secs: u32,
    /// Runs of the big-host scenario (each about 1.5 min).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    big_host_runs: u32,
    /// The big host's shape.
    #[command(flatten)]
    crowd: crowd::Spec,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    Storms,
    Exchange,
    BigHost,
}

#[derive(clap::Subcommand)]
enum Internal {
    /// Generator run inside the bench namespace (internal).
    #[command(hide = true)]
    Storm {
        #[arg(value_enum)]
        kind: Kind,
        #[arg(long)]
        count: u64,
        #[arg(long)]
        workers: u32,
    },
    /// A crowded host held inside the bench namespace (internal).
    #[command(hide = true)]
    Crowd(crowd::Spec),
    /// A closed-port connect every few ms (internal).
    #[command(hide = true)]
    Pace {
        #[arg(long)]
        every_ms: u64,
        #[arg(long)]
        count: u64,
    },
}

pub fn bench(args: Args) -> ExitCode {
    let result = match args.internal {
        Some(Internal::Storm {
            kind,
            count,
            workers,
        }) => storm::main(kind, count, workers),
        Some(Internal::Crowd(spec)) => crowd::main(spec),
        Some(Internal::Pace { every_ms, count }) => bighost::pace(every_ms, count),
        None => sandbox::install_signal_flag().and_then(|()| harness(&args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask bench: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// One storm measured under one observer.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub run: u32,
    pub mode: Mode,
    pub kind: Kind,
    pub outcome: Outcome,
    /// Observer CPU over the storm and its drain (user, system seconds).
    pub cpu: (f64, f64),
}

impl Sample {
    /// CPU seconds per operation, the generator's and the observer's
    /// together (no operations counts as one).
    pub fn cpu_per_op(&self) -> f64 {
        (self.outcome.cpu + self.cpu.0 + self.cpu.1) / self.outcome.ops.max(1) as f64
    }
}

/// One observer start.
#[derive(Clone, Copy, Debug)]
pub struct Start {
    pub mode: Mode,
    pub attach: Duration,
    pub peak_rss_kib: u64,
}

struct Bench {
    paths: Paths,
    generator: PathBuf,
    ns: Netns,
    workers: u32,
}

fn harness(args: &Args) -> Result<()> {
    if !is_root() {
        bail!("the bench loads eBPF programs and creates a network namespace: run it as root");
    }
    let workers = match args.workers {
        Some(w) => w,
        None => u32::try_from(std::thread::available_parallelism().map_or(1, |n| n.get()))?,
    };
    setup::setup(Scope::All)?;
    if find_program("bpftrace").is_none() {
        bail!("setup did not leave bpftrace on PATH; install it (`apt-get install bpftrace`)");
    }
    let tracer = match &args.tracer_bin {
        Some(path) => path.clone(),
        None => build("tracer")?,
    };
    let generator = build("xtask")?;
    let scratch = target_dir().join("bench");
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;

    let bench = Bench {
        paths: Paths { tracer, scratch },
        generator,
        ns: Netns::create()?,
        workers,
    };
    println!(
        "bench: namespace {} (inode {}), {} runs, {} connects, {} accepts, {} workers",
        bench.ns.name, bench.ns.inode, args.runs, args.connects, args.accepts, workers
    );
    if args.only.is_none() || args.only == Some(Part::BigHost) {
        step_big_host(&bench, args)?;
        if args.only == Some(Part::BigHost) {
            return Ok(());
        }
    }
    if args.only.is_none() || args.only == Some(Part::Exchange) {
        step_exchange(&bench, args)?;
        if args.only == Some(Part::Exchange) {
            return Ok(());
        }
    }
    storm_runs::run(&bench, args)
}

/// The big host, its section of docs/benchmarks.md.
fn step_big_host(bench: &Bench, args: &Args) -> Result<()> {
    let results = bighost::run(bench, args.crowd, args.big_host_runs, 5.0, 30)?;
    let mut text = bighost::render(&results);
    let _ = std::fmt::Write::write_fmt(
        &mut text,
        format_args!(
            "\nReproduce: `cargo xtask bench --only big-host --big-host-runs {} {}` (as root).\n",
            args.big_host_runs,
            args.crowd.args().join(" ")
        ),
    );
    println!("\n{text}");
    if !args.no_doc {
        let doc = workspace_root().join("docs").join("benchmarks.md");
        report::write_section(&doc, "bench-big-host", &text)?;
        println!("bench: wrote {}", doc.display());
    }
    Ok(())
}

/// The request/response load, its section of docs/benchmarks.md.
fn step_exchange(bench: &Bench, args: &Args) -> Result<()> {
    crate::apt::bench_packages()
        .context("installing nginx and wrk for the request/response load")?;
    let results = exchange::run(bench, args.runs, args.load_secs)?;
    let mut text = exchange::render(&results);
    let _ = std::fmt::Write::write_fmt(
        &mut text,
        format_args!(
            "\nReproduce: `{} --only exchange --load-secs {}` (as root).\n",
            command_line(args),
            args.load_secs
        ),
    );
    println!("\n{text}");
    if !args.no_doc {
        let doc = workspace_root().join("docs").join("benchmarks.md");
        report::write_section(&doc, "bench-exchange", &text)?;
        println!("bench: wrote {}", doc.display());
    }
    Ok(())
}

impl Bench {
    /// One storm under a freshly started observer (attach time and peak RSS
    /// recorded when there is one).
    fn measure(
        &self,
        run: u32,
        mode: Mode,
        kind: Kind,
        count: u64,
    ) -> Result<(Sample, Option<Start>)> {
        self.measure_with(run, mode, kind, count, self.workers)
    }

    /// [`Bench::measure`] with `workers` generator threads.
    fn measure_with(
        &self,
        run: u32,
        mode: Mode,
        kind: Kind,
        count: u64,
        workers: u32,
    ) -> Result<(Sample, Option<Start>)> {
        let mut obs = Observer::start(mode, &self.paths, None)?;
        let before = obs.cpu()?;
        let outcome = self.storm_with(kind, count, workers)?;
        obs.settle(Duration::from_secs(5))?;
        obs.check_alive()?;
        let cpu = before.delta_secs(&obs.cpu()?);
        let start = match mode {
            Mode::None => None,
            _ => Some(Start {
                mode,
                attach: obs.attach,
                peak_rss_kib: obs.peak_rss_kib()?,
            }),
        };
        obs.stop()?;
        let sample = Sample {
            run,
            mode,
            kind,
            outcome,
            cpu,
        };
        Ok((sample, start))
    }

    /// Runs one generator in the namespace and returns what it measured.
    fn storm(&self, kind: Kind, count: u64) -> Result<Outcome> {
        self.storm_with(kind, count, self.workers)
    }

    /// [`Bench::storm`] with `workers` generator threads.
    fn storm_with(&self, kind: Kind, count: u64, workers: u32) -> Result<Outcome> {
        let mut cmd = self.ns.exec(&self.generator)?;
        cmd.args(["bench", "storm", kind.name(), "--count"])
            .arg(count.to_string())
            .arg("--workers")
            .arg(workers.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = Guarded::spawn(&mut cmd)?;
        let (stdout, stderr) = (child.child.stdout.take(), child.child.stderr.take());
        let out = std::thread::spawn(move || read_all(stdout));
        let err = std::thread::spawn(move || read_all(stderr));
        let status = child.wait_for(Duration::from_secs(600))?;
        let out = out.join().map_err(|_| anyhow!("reader thread panicked"))?;
        let err = err.join().map_err(|_| anyhow!("reader thread panicked"))?;
        if !status.success() {
            sandbox::check_interrupted()?;
            bail!(
                "the {} generator failed ({}): {}",
                kind.name(),
                util::describe_status(status),
                err.trim()
            );
        }
        Outcome::parse(&out).with_context(|| format!("the {} generator", kind.name()))
    }
}

fn read_all(pipe: Option<impl std::io::Read>) -> String {
    let mut text = String::new();
    if let Some(mut p) = pipe {
        let _ = p.read_to_string(&mut text);
    }
    text
}

/// `cargo build --release -p PACKAGE`; returns target/release/PACKAGE.
fn build(package: &str) -> Result<PathBuf> {
    let mut cmd = util::cargo();
    cmd.args(["build", "--release", "-p", package]);
    setup::use_bpf_linker(&mut cmd)?;
    util::run(&mut cmd, "fix the build errors above, then retry")?;
    let bin = target_dir().join("release").join(package);
    if !bin.is_file() {
        bail!("the build succeeded but {} does not exist", bin.display());
    }
    Ok(bin)
}

/// The command that reproduces these results.
fn command_line(args: &Args) -> String {
    let mut line = format!(
        "cargo xtask bench --runs {} --connects {} --accepts {}",
        args.runs, args.connects, args.accepts
    );
    if let Some(w) = args.workers {
        line.push_str(&format!(" --workers {w}"));
    }
    if let Some(t) = &args.tracer_bin {
        line.push_str(&format!(" --tracer-bin {}", shown(t)));
    }
    line
}

fn shown(path: &Path) -> String {
    path.strip_prefix(workspace_root())
        .unwrap_or(path)
        .display()
        .to_string()
}
