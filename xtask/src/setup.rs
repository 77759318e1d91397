//! `cargo xtask setup`: installs what the build and the tests need and is
//! missing, and nothing else. Every check is cheap (file lookups and
//! `--version`-style calls, no network), so a run with nothing to do takes
//! about a second.
//!
//! Steps:
//! 1. rust-src for the nightly toolchain (aya-build compiles tracer-ebpf with
//!    `-Z build-std=core`).
//! 2. bpf-linker 0.13 built against the stable toolchain's own libLLVM, found
//!    at run time through an rpath to a persistent prefix directory.
//! 3. The Debian tools the tests use.

use std::env;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::util::{self, describe, find_program, output};

const BPF_LINKER_VERSION: &str = "0.13.0";
const BPF_LINKER_SERIES: &str = "0.13.";

/// What to set up: everything, or only what building tracer needs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Toolchain pieces and the test tools (`setup`, `test`).
    All,
    /// Toolchain pieces only (`run`).
    Build,
}

pub fn setup(scope: Scope) -> Result<()> {
    step("rust-src (nightly)", rust_src)?;
    step("bpf-linker", bpf_linker)?;
    if scope == Scope::All {
        step("test tools (apt)", crate::apt::packages)?;
    }
    Ok(())
}

fn step(name: &str, f: fn() -> Result<String>) -> Result<()> {
    let outcome = f().with_context(|| format!("setup step `{name}` failed"))?;
    println!("setup: {name}: {outcome}");
    Ok(())
}

fn rustup() -> Result<Command> {
    let path = find_program("rustup").ok_or_else(|| {
        anyhow!(
            "rustup not found on PATH; the eBPF build runs `rustup run nightly cargo`, \
             so install rustup (and `source $HOME/.cargo/env`)"
        )
    })?;
    let mut cmd = Command::new(path);
    cmd.stdin(Stdio::null());
    Ok(cmd)
}

// ---------------------------------------------------------------- rust-src

fn rust_src() -> Result<String> {
    let listed =
        output(rustup()?.args(["component", "list", "--toolchain", "nightly", "--installed"]));
    let components = match listed {
        Ok(components) => components,
        Err(err) => {
            let toolchains = output(rustup()?.args(["toolchain", "list"])).unwrap_or_default();
            if !toolchains.lines().any(|l| l.starts_with("nightly")) {
                bail!(
                    "the nightly toolchain is not installed (aya-build compiles tracer-ebpf with it); \
                     install it with `rustup toolchain install nightly --profile minimal --component rust-src`"
                );
            }
            return Err(err);
        }
    };
    if components.lines().any(|l| l.trim().starts_with("rust-src")) {
        return Ok("ok".to_owned());
    }
    util::run(
        rustup()?.args(["component", "add", "rust-src", "--toolchain", "nightly"]),
        "check network access to the Rust distribution server, or add it by hand",
    )?;
    Ok("installed rust-src for nightly".to_owned())
}

// -------------------------------------------------------------- bpf-linker

/// Where bpf-linker is (or is to be) installed: `XTASK_BPF_LINKER_ROOT`
/// overrides cargo's default install root (used to test the install path).
fn install_root_override() -> Option<PathBuf> {
    env::var_os("XTASK_BPF_LINKER_ROOT")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The `bin` directory of an overridden install root, for PATH in builds.
pub fn bpf_linker_bin_override() -> Option<PathBuf> {
    install_root_override().map(|root| root.join("bin"))
}

fn cargo_home() -> Result<PathBuf> {
    if let Some(dir) = env::var_os("CARGO_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    Ok(home()?.join(".cargo"))
}

fn home() -> Result<PathBuf> {
    env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| anyhow!("HOME is not set; set it to your home directory"))
}

/// The bpf-linker that builds will use.
fn current_bpf_linker() -> Result<Option<PathBuf>> {
    if let Some(bin) = bpf_linker_bin_override() {
        let path = bin.join("bpf-linker");
        return Ok(path.is_file().then_some(path));
    }
    if let Some(path) = find_program("bpf-linker") {
        return Ok(Some(path));
    }
    let path = cargo_home()?.join("bin").join("bpf-linker");
    Ok(path.is_file().then_some(path))
}

/// `Some(version line)` when the binary runs and reports 0.13.x.
fn usable_version(path: &Path) -> Option<String> {
    // `cargo run` puts the toolchain's lib directory (which holds libLLVM) on
    // LD_LIBRARY_PATH; the eBPF build does not, so check without it.
    let out = Command::new(path)
        .arg("--version")
        .env_remove("LD_LIBRARY_PATH")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let version = line.split_whitespace().nth(1)?;
    version.starts_with(BPF_LINKER_SERIES).then_some(line)
}

/// The stable toolchain's shared LLVM.
struct StableLlvm {
    /// `<sysroot>/lib/libLLVM.so.<ver>-rust-<x>-stable`
    library: PathBuf,
    /// LLVM major version (`22` for `LLVM version: 22.1.2`).
    major: u32,
}

fn stable_llvm() -> Result<StableLlvm> {
    let sysroot = output(rustup()?.args(["run", "stable", "rustc", "--print", "sysroot"]))?;
    let lib_dir = Path::new(sysroot.trim()).join("lib");
    let mut candidates: Vec<PathBuf> = fs::read_dir(&lib_dir)
        .with_context(|| format!("cannot list the stable toolchain's {}", lib_dir.display()))?
        .filter_map(|entry| entry.ok())
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .starts_with("libLLVM.so.")
        })
        .map(|entry| entry.path())
        .collect();
    candidates.sort();
    let library = candidates.pop().ok_or_else(|| {
        anyhow!(
            "no libLLVM.so.* in {}; bpf-linker is built against the stable toolchain's shared LLVM, \
             so reinstall the stable toolchain with `rustup toolchain install stable`",
            lib_dir.display()
        )
    })?;

    let verbose = output(rustup()?.args(["run", "stable", "rustc", "-vV"]))?;
    let llvm_version = verbose
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version:"))
        .map(str::trim)
        .ok_or_else(|| anyhow!("`rustc +stable -vV` printed no `LLVM version:` line"))?;
    let major = llvm_version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| anyhow!("cannot read the LLVM major version from `{llvm_version}`"))?;
    Ok(StableLlvm { library, major })
}

/// The persistent prefix whose `lib/` holds the libLLVM symlinks that
/// bpf-linker finds through its rpath. It must outlive the install.
fn llvm_prefix() -> Result<PathBuf> {
    Ok(home()?.join(".local/share/tracer/llvm"))
}

/// Makes `<prefix>/lib/{libLLVM.so, <exact name>}` point at the stable
/// toolchain's libLLVM. Returns true when it changed anything.
fn ensure_prefix(prefix: &Path, llvm: &StableLlvm) -> Result<bool> {
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib).with_context(|| format!("cannot create {}", lib.display()))?;
    let exact = llvm
        .library
        .file_name()
        .ok_or_else(|| anyhow!("{} has no file name", llvm.library.display()))?;
    let mut changed = false;
    for name in [std::ffi::OsStr::new("libLLVM.so"), exact] {
        let link = lib.join(name);
        if fs::read_link(&link).is_ok_and(|target| target == llvm.library) {
            continue;
        }
        if fs::symlink_metadata(&link).is_ok() {
            fs::remove_file(&link).with_context(|| format!("cannot replace {}", link.display()))?;
        }
        symlink(&llvm.library, &link).with_context(|| {
            format!(
                "cannot link {} -> {}",
                link.display(),
                llvm.library.display()
            )
        })?;
        changed = true;
    }
    Ok(changed)
}

fn bpf_linker() -> Result<String> {
    let current = current_bpf_linker()?;
    if let Some(line) = current.as_deref().and_then(usable_version) {
        return Ok(format!("ok ({line})"));
    }

    // A 0.13 binary whose libLLVM symlinks went missing only needs them back.
    let llvm = stable_llvm()?;
    let prefix = llvm_prefix()?;
    let relinked = ensure_prefix(&prefix, &llvm)?;
    if relinked {
        if let Some(line) = current.as_deref().and_then(usable_version) {
            return Ok(format!(
                "ok ({line}; restored libLLVM links in {})",
                prefix.display()
            ));
        }
    }

    let mut cmd = rustup()?;
    cmd.args(["run", "stable", "cargo", "install", "bpf-linker"])
        .args(["--version", BPF_LINKER_VERSION, "--locked", "--force"])
        .args(["--no-default-features", "--features"])
        .arg(format!("llvm-{}", llvm.major))
        .env("LLVM_PREFIX", &prefix)
        .current_dir(&prefix);
    let root = match install_root_override() {
        Some(root) => {
            cmd.arg("--root").arg(&root);
            root
        }
        None => cargo_home()?,
    };
    println!("setup: bpf-linker: installing: {}", describe(&cmd));
    util::run(
        &mut cmd,
        "see cargo's messages above; the notes in docs/ and shared/platform-notes.md describe this build",
    )?;

    let installed = root.join("bin").join("bpf-linker");
    let line = usable_version(&installed).ok_or_else(|| {
        anyhow!(
            "{} was installed but does not run or is not {BPF_LINKER_SERIES}x; \
             check that {} holds the libLLVM links",
            installed.display(),
            prefix.join("lib").display()
        )
    })?;
    let mut outcome = format!("installed {line} into {}", installed.display());
    if install_root_override().is_none()
        && find_program("bpf-linker").as_deref() != Some(&installed)
    {
        outcome.push_str(&format!(
            " (warning: PATH finds another bpf-linker first; put {} first on PATH)",
            root.join("bin").display()
        ));
    }
    Ok(outcome)
}

/// Puts an overridden bpf-linker install (`XTASK_BPF_LINKER_ROOT`) first on
/// the PATH of a build command, so that the eBPF build links with it.
pub fn use_bpf_linker(cmd: &mut Command) -> Result<()> {
    if let Some(bin) = bpf_linker_bin_override() {
        let path = env::var_os("PATH").unwrap_or_default();
        let joined = env::join_paths(std::iter::once(bin).chain(env::split_paths(&path))).context(
            "XTASK_BPF_LINKER_ROOT cannot go on PATH (it contains ':'); choose another directory",
        )?;
        cmd.env("PATH", joined);
    }
    Ok(())
}
