//! Downloads a kernel package once (private apt state, nothing touches /boot
//! or the host's apt lists), extracts it and makes it bootable:
//! `${cache}/kernels/<release>/{root/, vmlinux or vmlinuz, ready}`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};

use super::kernels::{Kernel, PINS, PINS_FILE, cache_root};
use super::mirrors::Mirrors;
use crate::util::{self, describe, output};

/// A kernel ready to boot.
pub struct Prepared {
    pub release: String,
    /// What qemu's `-kernel` gets: the uncompressed vmlinux when it could be
    /// extracted (boots 3-4 s faster under TCG), else the vmlinuz.
    pub image: PathBuf,
    /// The package's `lib/modules/<release>` (with modules.dep).
    pub modules: PathBuf,
    /// The guest's initramfs (built once).
    pub initramfs: PathBuf,
}

/// How long to wait for another xtask preparing the same kernel.
const LOCK_TIMEOUT: Duration = Duration::from_secs(15 * 60);

pub fn prepare(kernel: &Kernel) -> Result<Prepared> {
    let kernels = cache_root()?.join("kernels");
    fs::create_dir_all(&kernels).with_context(|| format!("cannot create {}", kernels.display()))?;
    let dir = kernels.join(&kernel.release);
    let _lock = Lock::take(&kernels.join(format!("{}.lock", kernel.release)))?;
    if !dir.join("ready").is_file() {
        download_and_extract(kernel, &dir)?;
    }
    let modules = modules_dir(&dir.join("root"), &kernel.release)?;
    let image = ["vmlinux", "vmlinuz"]
        .iter()
        .map(|name| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow!(
                "{} has no kernel image; delete that directory and retry",
                dir.display()
            )
        })?;
    let initramfs = super::initramfs::ensure(&dir, &modules, &kernel.release)?;
    Ok(Prepared {
        release: kernel.release.clone(),
        image,
        modules,
        initramfs,
    })
}

fn download_and_extract(kernel: &Kernel, dir: &Path) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir)
            .with_context(|| format!("cannot clear the partial {}", dir.display()))?;
    }
    let download = dir.join("download");
    fs::create_dir_all(&download)
        .with_context(|| format!("cannot create {}", download.display()))?;
    let deb = download_package(kernel, &download)?;

    eprintln!("xtask vm: extracting {}", deb.display());
    let partial = dir.join("root.partial");
    util::run(
        to_stderr(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&partial))?,
        "the download may be damaged; delete it and retry",
    )?;
    let root = dir.join("root");
    fs::rename(&partial, &root).with_context(|| format!("cannot create {}", root.display()))?;
    let modules = modules_dir(&root, &kernel.release)?;
    if !modules.join("modules.dep").is_file() {
        let base = modules
            .ancestors()
            .nth(3)
            .ok_or_else(|| anyhow!("{} is too short a path", modules.display()))?;
        util::run(
            Command::new(util::find_program("depmod").unwrap_or_else(|| "depmod".into()))
                .arg("-b")
                .arg(base)
                .arg(&kernel.release),
            "install kmod (`cargo xtask setup`)",
        )?;
    }

    let vmlinuz = root
        .join("boot")
        .join(format!("vmlinuz-{}", kernel.release));
    fs::copy(&vmlinuz, dir.join("vmlinuz"))
        .with_context(|| format!("the package has no {}", vmlinuz.display()))?;
    match super::image::extract_vmlinux(&vmlinuz, &dir.join("vmlinux")) {
        Ok(()) => {}
        Err(err) => eprintln!("xtask vm: booting the compressed image ({err:#})"),
    }
    fs::remove_dir_all(&download)
        .with_context(|| format!("cannot remove {}", download.display()))?;
    fs::write(dir.join("ready"), b"")
        .with_context(|| format!("cannot write {}", dir.join("ready").display()))?;
    Ok(())
}

/// `root/lib/modules/<release>` (or `root/usr/lib/modules/<release>`).
fn modules_dir(root: &Path, release: &str) -> Result<PathBuf> {
    ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|d| root.join(d).join(release))
        .find(|p| p.is_dir())
        .ok_or_else(|| anyhow!("the kernel package has no lib/modules/{release}"))
}

// ------------------------------------------------------------ private apt

/// An apt-get/apt-cache command on the private state in `${cache}/apt`,
/// whose sources list holds every suite of the pins.
fn private_apt(program: &str) -> Result<Command> {
    let state = cache_root()?.join("apt");
    for sub in ["lists/partial", "cache/archives/partial"] {
        let d = state.join(sub);
        fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let list = state.join("sources.list");
    let sources = sources_list(&Mirrors::from_host())?;
    fs::write(&list, sources).with_context(|| format!("cannot write {}", list.display()))?;
    let path = util::find_program(program)
        .ok_or_else(|| anyhow!("`{program}` not found: kernels are fetched with apt"))?;
    let mut cmd = Command::new(path);
    let opt = |k: &str, v: &Path| format!("{k}={}", v.display());
    cmd.args(["-q", "-o"])
        .arg(opt("Dir::Etc::SourceList", &list))
        .args(["-o", "Dir::Etc::SourceParts=/dev/null", "-o"])
        .arg(opt("Dir::State::Lists", &state.join("lists")))
        .arg("-o")
        .arg(opt("Dir::Cache", &state.join("cache")))
        .args([
            "-o",
            "APT::Sandbox::User=root",
            "-o",
            "Acquire::Languages=none",
        ])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(std::process::Stdio::null());
    Ok(cmd)
}

/// One `deb` line per distinct suite of the pins, on the mirrors apt uses.
pub fn sources_list(mirrors: &Mirrors) -> Result<String> {
    let mut lines: Vec<String> = Vec::new();
    for source in PINS.iter().flat_map(|p| p.sources) {
        let line = format!(
            "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {} {} main\n",
            mirrors.uri(source.archive)?,
            source.suite
        );
        if !lines.contains(&line) {
            lines.push(line);
        }
    }
    Ok(lines.concat())
}

fn download_package(kernel: &Kernel, into: &Path) -> Result<PathBuf> {
    let package = kernel.package();
    let attempt = || -> Result<()> {
        let mut cmd = private_apt("apt-get")?;
        cmd.args(["download", &package]).current_dir(into);
        output(&mut cmd).map(drop)
    };
    eprintln!("xtask vm: downloading {package}");
    if attempt().is_err() {
        util::run(
            to_stderr(private_apt("apt-get")?.arg("update"))?,
            "check access to the Debian mirror",
        )?;
        if let Err(err) = attempt() {
            let seen = available(kernel).unwrap_or_default();
            let seen = if seen.is_empty() {
                String::new()
            } else {
                format!(" (apt sees: {})", seen.join(", "))
            };
            let suites: Vec<&str> = kernel.sources.iter().map(|s| s.suite).collect();
            bail!(
                "kernel package {package} is not in the archive ({}) any more; \
                 edit the pins in {PINS_FILE}{seen} [{err:#}]",
                suites.join(", ")
            );
        }
    }
    fs::read_dir(into)
        .with_context(|| format!("cannot list {}", into.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| anyhow!("apt-get download left no .deb in {}", into.display()))
}

/// The kernel packages of the same series that the private apt state lists.
fn available(kernel: &Kernel) -> Result<Vec<String>> {
    let series: String = kernel.release.split('-').next().unwrap_or("").to_owned();
    let pattern = format!(
        "^linux-image-{}.*-amd64-unsigned$",
        series.replace('.', "\\.")
    );
    let mut cmd = private_apt("apt-cache")?;
    cmd.args(["search", "--names-only", &pattern]);
    let listed = output(&mut cmd).with_context(|| describe(&cmd))?;
    Ok(listed
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|p| p.strip_prefix("linux-image-"))
        .filter_map(|p| p.strip_suffix("-unsigned"))
        .map(str::to_owned)
        .collect())
}

/// Sends a command's stdout to our stderr: the stdout of `cargo xtask vm`
/// is the guest command's alone.
fn to_stderr(cmd: &mut Command) -> Result<&mut Command> {
    use std::os::fd::AsFd as _;
    let fd = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .context("cannot duplicate stderr")?;
    Ok(cmd.stdout(fd))
}

// ------------------------------------------------------------------ lock

/// An exclusive `flock` on a file, released on drop.
struct Lock(fs::File);

impl Lock {
    fn take(path: &Path) -> Result<Lock> {
        use std::os::fd::AsRawFd as _;
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let start = Instant::now();
        let mut told = false;
        loop {
            // SAFETY: flock on a file descriptor we own.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(Lock(file));
            }
            if start.elapsed() > LOCK_TIMEOUT {
                bail!(
                    "{} is still locked after {} s by another xtask; stop it or delete the file",
                    path.display(),
                    LOCK_TIMEOUT.as_secs()
                );
            }
            if !told {
                eprintln!("xtask vm: waiting for another xtask ({})", path.display());
                told = true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd as _;
        // SAFETY: unlocking a file descriptor we own.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sources_list_names_each_suite_once() {
        let mirrors = Mirrors {
            main: Some("http://m.example/debian".into()),
            security: Some("http://m.example/debian-security".into()),
        };
        let list = sources_list(&mirrors).expect("both archives known");
        assert!(list.contains("http://m.example/debian-security bookworm-security main"));
        assert!(sources_list(&Mirrors::default()).is_err());
        assert_eq!(list.matches(" bullseye main").count(), 1);
        assert_eq!(list.matches(" bookworm-security main").count(), 1);
        assert!(list.lines().all(|l| l.starts_with("deb [signed-by=")));
    }
}
