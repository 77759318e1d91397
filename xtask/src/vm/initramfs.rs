//! The guest's initramfs: busybox-static, the kernel package's own modules
//! for 9p over virtio and overlayfs, and an `/init` that mounts the host's
//! `/` read-only with a tmpfs overlay, chroots into it and runs the command
//! script of the run (a host path, given on the kernel command line).
//!
//! Built once per kernel, in its cache directory, when missing.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::util::{self, describe, find_program, output};

/// Modules the init loads, with their dependencies, before mounting the host.
const MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p", "overlay"];

/// Serial ports of the guest (qemu's `-serial` options, in this order).
pub const CONSOLE_TTY: &str = "ttyS0";
pub const STDOUT_TTY: &str = "ttyS1";
pub const STDERR_TTY: &str = "ttyS2";
pub const STATUS_TTY: &str = "ttyS3";
/// The 9p tag of the host's `/`.
pub const ROOT_TAG: &str = "hostroot";

/// `<dir>/initramfs-<hash of the init script>.cpio`, built when missing
/// (a changed init script gets a new image).
pub fn ensure(dir: &Path, modules: &Path, release: &str) -> Result<PathBuf> {
    let out = dir.join(format!("initramfs-{:016x}.cpio", script_hash()));
    if out.is_file() {
        return Ok(out);
    }
    let stage = dir.join("initramfs.d");
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("cannot clear {}", stage.display()))?;
    }
    for sub in ["bin", "modules"] {
        fs::create_dir_all(stage.join(sub))
            .with_context(|| format!("cannot create {}", stage.join(sub).display()))?;
    }
    let busybox = static_busybox()?;
    fs::copy(&busybox, stage.join("bin/busybox"))
        .with_context(|| format!("cannot copy {}", busybox.display()))?;

    let mut names = vec![
        "init".to_owned(),
        "bin".to_owned(),
        "bin/busybox".to_owned(),
        "modules".to_owned(),
    ];
    for (i, module) in module_files(modules, release)?.iter().enumerate() {
        let name = format!("modules/{i:02}-{}", plain_name(module)?);
        copy_decompressed(module, &stage.join(&name))?;
        names.push(name);
    }
    write_executable(&stage.join("init"), &init_script())?;

    let partial = dir.join("initramfs.cpio.partial");
    let file = fs::File::create(&partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let mut cpio = Command::new(find_program("cpio").unwrap_or_else(|| "cpio".into()));
    cpio.args(["-o", "-H", "newc", "-R", "0:0", "--quiet"])
        .current_dir(&stage)
        .stdin(Stdio::piped())
        .stdout(file);
    let mut child = cpio
        .spawn()
        .with_context(|| format!("could not start `{}`; install cpio", describe(&cpio)))?;
    {
        use std::io::Write as _;
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| anyhow!("no stdin for cpio"))?;
        stdin
            .write_all((names.join("\n") + "\n").as_bytes())
            .context("writing cpio's file list failed")?;
    }
    let status = child.wait().context("waiting for cpio failed")?;
    if !status.success() {
        bail!(
            "`{}` failed ({})",
            describe(&cpio),
            util::describe_status(status)
        );
    }
    fs::rename(&partial, &out).with_context(|| format!("cannot create {}", out.display()))?;
    fs::remove_dir_all(&stage).with_context(|| format!("cannot remove {}", stage.display()))?;
    Ok(out)
}

/// The busybox to put in the initramfs; it must be static.
fn static_busybox() -> Result<PathBuf> {
    let path = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .or_else(|| find_program("busybox"))
        .ok_or_else(|| anyhow!("busybox not found; run `cargo xtask setup` (busybox-static)"))?;
    let bytes = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.windows(8).any(|w| w == b"/lib64/l") {
        bail!(
            "{} is dynamically linked; install busybox-static (`apt-get install busybox-static`)",
            path.display()
        );
    }
    Ok(path)
}

/// The module files to load, dependencies first, without duplicates.
fn module_files(modules: &Path, release: &str) -> Result<Vec<PathBuf>> {
    let base = modules
        .ancestors()
        .nth(3)
        .ok_or_else(|| anyhow!("{} is too short a path", modules.display()))?;
    let modprobe = find_program("modprobe")
        .ok_or_else(|| anyhow!("modprobe not found; run `cargo xtask setup` (kmod)"))?;
    let mut files = Vec::new();
    for module in MODULES {
        let mut cmd = Command::new(&modprobe);
        cmd.arg("-d")
            .arg(base)
            .args(["-S", release, "--show-depends", module]);
        let listed = output(&mut cmd)
            .with_context(|| format!("the kernel package lacks module {module}"))?;
        for file in parse_show_depends(&listed) {
            if !files.contains(&file) {
                files.push(file);
            }
        }
    }
    Ok(files)
}

/// The `insmod PATH` lines of `modprobe --show-depends` (`builtin` ones need
/// nothing).
pub fn parse_show_depends(listed: &str) -> Vec<PathBuf> {
    listed
        .lines()
        .filter_map(|l| l.trim().strip_prefix("insmod "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(PathBuf::from)
        .collect()
}

/// `9p.ko` for `.../9p.ko.xz`.
fn plain_name(module: &Path) -> Result<String> {
    let name = module
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow!("odd module path {}", module.display()))?;
    let stem = name.split(".ko").next().unwrap_or(name);
    Ok(format!("{stem}.ko"))
}

/// Copies a module, decompressing `.ko.xz` / `.ko.zst` (busybox's insmod
/// takes plain ones).
fn copy_decompressed(module: &Path, to: &Path) -> Result<()> {
    let name = module.to_string_lossy();
    let program = if name.ends_with(".xz") {
        "xz"
    } else if name.ends_with(".zst") {
        "zstd"
    } else {
        fs::copy(module, to).with_context(|| format!("cannot copy {}", module.display()))?;
        return Ok(());
    };
    let mut cmd = Command::new(find_program(program).unwrap_or_else(|| program.into()));
    cmd.args(["-dc", "-q"]).arg(module);
    let out = cmd.stdin(Stdio::null()).output().with_context(|| {
        format!(
            "could not start `{}`; run `cargo xtask setup`",
            describe(&cmd)
        )
    })?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({})",
            describe(&cmd),
            util::describe_status(out.status)
        );
    }
    fs::write(to, out.stdout).with_context(|| format!("cannot write {}", to.display()))
}

fn write_executable(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot chmod {}", path.display()))
}

/// The guest's `/init` (busybox sh, PID 1). It reads `xtask.run=` (the run
/// script) and `xtask.modules=` (the kernel's module directory), both host
/// paths, from the kernel command line; reports `started`, `exit N` or
/// `fail WHY` on the status port and powers off.
/// FNV-1a of the init script: stable across builds and toolchains.
fn script_hash() -> u64 {
    init_script().bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

pub fn init_script() -> String {
    format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /mnt/lower /mnt/rw /mnt/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for t in {STDOUT_TTY} {STDERR_TTY} {STATUS_TTY}; do stty -F /dev/$t raw -echo 115200; done
say() {{ echo "xtask-vm: $*" > /dev/{STATUS_TTY}; }}
fail() {{ say "fail $*"; poweroff -f; reboot -f; }}
run=; mods=
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    xtask.run=*) run="${{arg#xtask.run=}}" ;;
    xtask.modules=*) mods="${{arg#xtask.modules=}}" ;;
  esac
done
[ -n "$run" ] && [ -n "$mods" ] || fail "no xtask.run= or xtask.modules= on the kernel command line"
for m in /modules/*.ko; do insmod "$m" || fail "insmod $m"; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose {ROOT_TAG} /mnt/lower || fail "mount of the host's / over 9p"
mount -t tmpfs -o mode=0755 tmpfs /mnt/rw || fail "tmpfs for the overlay"
mkdir -p /mnt/rw/upper /mnt/rw/work
mount -t overlay -o lowerdir=/mnt/lower,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work overlay /mnt/root || fail "overlay on the host's /"
R=/mnt/root
mount -t proc proc $R/proc || fail "proc"
mount -t sysfs sysfs $R/sys || fail "sysfs"
mount -t devtmpfs devtmpfs $R/dev || fail "devtmpfs"
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts $R/dev/pts || fail "devpts"
mount -t tmpfs -o mode=1777 tmpfs $R/dev/shm || fail "/dev/shm"
mount -t tmpfs -o mode=0755 tmpfs $R/run || fail "/run"
# /tmp stays the host's, seen through the overlay (writes land in its tmpfs
# upper): a checkout under /tmp (CI's clone) must be visible in the guest.
mount -t tracefs tracefs $R/sys/kernel/tracing || fail "tracefs"
mount -t debugfs debugfs $R/sys/kernel/debug || fail "debugfs"
mount -t bpf bpf $R/sys/fs/bpf || fail "bpffs"
mount -t cgroup2 cgroup2 $R/sys/fs/cgroup || fail "cgroup2"
ln -sf /proc/self/fd $R/dev/fd
ln -sf /proc/self/fd/0 $R/dev/stdin
ln -sf /proc/self/fd/1 $R/dev/stdout
ln -sf /proc/self/fd/2 $R/dev/stderr
release=$(uname -r)
mkdir -p $R/lib/modules/$release || fail "mkdir /lib/modules/$release"
mount -o bind "/mnt/lower$mods" $R/lib/modules/$release || fail "bind of $mods"
cp "/mnt/lower$run" $R/.xtask-vm-run || fail "copy of $run"
# Module autoload (sock_diag needs inet_diag, tcp_diag): the kernel runs its
# modprobe helper in this root, not in the chroot.
printf '#!/bin/busybox sh\nexec chroot /mnt/root /sbin/modprobe "$@"\n' > /modprobe
chmod 755 /modprobe
echo /modprobe > /proc/sys/kernel/modprobe
ip link set lo up || fail "lo up"
hostname tracer-vm
say started
chroot $R /bin/sh /.xtask-vm-run < /dev/null > /dev/{STDOUT_TTY} 2> /dev/{STDERR_TTY}
say "exit $?"
poweroff -f
reboot -f
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_depends_lists_insmods_in_order() {
        let listed = "builtin virtio_pci_modern_dev\n\
                      insmod /k/lib/modules/6.1/kernel/fs/netfs/netfs.ko \n\
                      insmod /k/lib/modules/6.1/kernel/fs/9p/9p.ko.xz opt=1\n";
        assert_eq!(
            parse_show_depends(listed),
            [
                PathBuf::from("/k/lib/modules/6.1/kernel/fs/netfs/netfs.ko"),
                PathBuf::from("/k/lib/modules/6.1/kernel/fs/9p/9p.ko.xz")
            ]
        );
        assert_eq!(
            plain_name(Path::new("/a/9pnet_virtio.ko.xz")).unwrap(),
            "9pnet_virtio.ko"
        );
    }

    #[test]
    fn the_init_reports_on_the_status_port_and_mounts_what_tests_need() {
        let init = init_script();
        assert!(init.starts_with("#!/bin/busybox sh\n"));
        for needle in [
            "say started",
            "say \"exit $?\"",
            "> /dev/ttyS1 2> /dev/ttyS2",
            "$R/sys/kernel/tracing",
            "$R/sys/fs/bpf",
            "$R/sys/fs/cgroup",
            "$R/lib/modules/$release",
            "ip link set lo up",
        ] {
            assert!(init.contains(needle), "{needle}");
        }
        // The host's /tmp stays visible (a checkout may live there).
        assert!(!init.contains("tmpfs $R/tmp"));
    }
}
