//! What the guest runs: the per-run script (environment, working directory,
//! command) and the kernel command line that points the init at it.

use std::path::Path;

use anyhow::{Result, bail};

/// Environment variables passed from the caller to the command, when set.
pub const PASSED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "CI",
    "RUST_LOG",
    "RUST_BACKTRACE",
    "TRACER_BIN",
    "TRACER_BTF",
    "TRACER_TEST_TIME_SCALE",
];

/// `TRACER_TEST_TIME_SCALE` in the guest unless the caller set it: every BPF
/// load and packet is several times slower under TCG.
pub const DEFAULT_TIME_SCALE: &str = "6";

/// The command of `cargo xtask vm` when none is given.
pub const DEFAULT_COMMAND: &[&str] = &["uname", "-a"];

/// The guest's environment: the passed variables the caller has set (looked
/// up with `get`), plus the default time scale, plus `extra` (which wins).
pub fn environment(
    get: impl Fn(&str) -> Option<String>,
    extra: &[(String, String)],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = PASSED_ENV
        .iter()
        .filter_map(|&name| get(name).map(|v| (name.to_owned(), v)))
        .collect();
    if !env.iter().any(|(k, _)| k == "TRACER_TEST_TIME_SCALE") {
        env.push((
            "TRACER_TEST_TIME_SCALE".to_owned(),
            DEFAULT_TIME_SCALE.to_owned(),
        ));
    }
    for (key, value) in extra {
        env.retain(|(k, _)| k != key);
        env.push((key.clone(), value.clone()));
    }
    env
}

/// The script the init runs in the chroot with the host's `/bin/sh`.
/// Its exit status is the command's (125 when the directory is missing).
pub fn run_script(cwd: &Path, env: &[(String, String)], command: &[String]) -> Result<String> {
    if command.is_empty() {
        bail!("no command to run in the guest");
    }
    let cwd = cwd
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("the working directory {} is not UTF-8", cwd.display()))?;
    let mut script = String::from("# written by `cargo xtask vm` for one run\n");
    for (key, value) in env {
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            bail!("`{key}` is not a valid environment variable name");
        }
        script.push_str(&format!("export {key}={}\n", quote(value)));
    }
    let q = quote(cwd);
    script.push_str(&format!(
        "cd {q} || {{ echo \"xtask vm: no directory {cwd} in the guest\" >&2; exit 125; }}\n"
    ));
    let words: Vec<String> = command.iter().map(|w| quote(w)).collect();
    script.push_str(&format!("exec {}\n", words.join(" ")));
    Ok(script)
}

/// The kernel command line: console on the first serial port, quiet but for
/// warnings and the register dumps and stacks of soft lockups and RCU stalls
/// (`loglevel=5`: KERN_DEFAULT reaches the console log), reboot
/// (= qemu exits, with `-no-reboot`) on panic, 16 possible CPUs (see
/// `qemu::SMP`), and the run's host paths.
pub fn kernel_cmdline(run_script: &Path, modules: &Path) -> Result<String> {
    for path in [run_script, modules] {
        let s = path.to_string_lossy();
        if s.chars().any(|c| c.is_whitespace() || c == '"') || !path.is_absolute() {
            bail!(
                "{} cannot go on the kernel command line (spaces or quotes, or relative); \
                 set XDG_CACHE_HOME to a plain absolute directory",
                path.display()
            );
        }
    }
    Ok(format!(
        "console={} quiet loglevel=5 panic=-1 random.trust_cpu=on mitigations=off possible_cpus=16 \
         xtask.run={} xtask.modules={}",
        super::initramfs::CONSOLE_TTY,
        run_script.display(),
        modules.display()
    ))
}

/// Single-quotes a word for sh.
pub fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            owned
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn only_the_listed_variables_pass_and_the_time_scale_defaults_to_6() {
        let env = environment(
            env_of(&[("PATH", "/bin"), ("SECRET", "x"), ("CI", "1")]),
            &[],
        );
        assert_eq!(
            env,
            [
                ("PATH".to_owned(), "/bin".to_owned()),
                ("CI".to_owned(), "1".to_owned()),
                ("TRACER_TEST_TIME_SCALE".to_owned(), "6".to_owned()),
            ]
        );
        let env = environment(env_of(&[("TRACER_TEST_TIME_SCALE", "9")]), &[]);
        assert_eq!(env, [("TRACER_TEST_TIME_SCALE".to_owned(), "9".to_owned())]);
        let env = environment(
            env_of(&[("TRACER_BIN", "/a")]),
            &[("TRACER_BIN".to_owned(), "/b".to_owned())],
        );
        assert_eq!(
            env[env.len() - 1],
            ("TRACER_BIN".to_owned(), "/b".to_owned())
        );
        assert_eq!(env.iter().filter(|(k, _)| k == "TRACER_BIN").count(), 1);
    }

    #[test]
    fn the_run_script_quotes_everything() {
        let script = run_script(
            Path::new("/work/it's"),
            &[("HOME".to_owned(), "/root".to_owned())],
            &["sh".to_owned(), "-c".to_owned(), "exit 3".to_owned()],
        )
        .unwrap();
        assert!(script.contains("export HOME='/root'\n"));
        assert!(script.contains(r"cd '/work/it'\''s' || "));
        assert!(script.ends_with("exec 'sh' '-c' 'exit 3'\n"));
        assert!(run_script(Path::new("/"), &[], &[]).is_err());
        assert!(
            run_script(
                Path::new("/"),
                &[("A B".into(), "1".into())],
                &["true".into()]
            )
            .is_err()
        );
    }

    #[test]
    fn the_kernel_command_line_carries_the_run_paths() {
        let line =
            kernel_cmdline(Path::new("/c/run.sh"), Path::new("/c/k/lib/modules/6.1")).unwrap();
        assert!(line.starts_with("console=ttyS0 quiet"));
        assert!(line.contains("panic=-1"));
        assert!(line.ends_with("xtask.run=/c/run.sh xtask.modules=/c/k/lib/modules/6.1"));
        assert!(kernel_cmdline(&PathBuf::from("/a b/run.sh"), Path::new("/m")).is_err());
    }
}
