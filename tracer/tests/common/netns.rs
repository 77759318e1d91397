//! A throw-away network namespace and its TCP counters.

use super::*;

// Network namespace

static NETNS_SEQ: AtomicUsize = AtomicUsize::new(0);

/// A fresh network namespace `tracer-t-<pid>-<n>` with `lo` up. Dropping it
/// kills every process still inside it (only ours: the name is unique) and
/// deletes it.
pub struct Netns {
    name: String,
    inode: u64,
}

impl Netns {
    pub fn new() -> Netns {
        let n = NETNS_SEQ.fetch_add(1, Ordering::SeqCst);
        let name = format!("tracer-t-{}-{n}", std::process::id());
        // A leftover from a crashed earlier run with the same pid.
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        // From here on the guard deletes it, whatever fails next.
        let mut ns = Netns { name, inode: 0 };
        run_ok(Command::new("ip").args(["-n", &ns.name, "link", "set", "lo", "up"]));
        ns.inode = std::fs::metadata(format!("/run/netns/{}", ns.name))
            .expect("stat /run/netns entry")
            .ino();
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's inode, as in the events' `netns` field.
    pub fn inode(&self) -> u64 {
        self.inode
    }

    /// `ip netns exec NAME program args...`, not yet spawned.
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]).args(args);
        cmd
    }

    /// Runs a short command inside the namespace to completion.
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        let mut cmd = self.command(program, args);
        cmd.stdin(Stdio::null());
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program} in {}: {e}", self.name));
        // Read both pipes on threads so the bound below holds.
        let out = Arc::new(Mutex::new(Vec::new()));
        let err = Arc::new(Mutex::new(Vec::new()));
        let (_o, ho) = line_reader(child.stdout.take().unwrap(), out.clone());
        let (_e, he) = line_reader(child.stderr.take().unwrap(), err.clone());
        let status = match wait_bounded(&mut child, STEP_TIMEOUT) {
            Some(s) => s,
            None => {
                kill_and_reap(&mut child);
                panic!("{program} {args:?} in {} did not finish", self.name);
            }
        };
        let _ = ho.join();
        let _ = he.join();
        let join = |v: &Arc<Mutex<Vec<String>>>| {
            let mut s = v.lock().unwrap().join("\n");
            s.push('\n');
            s.into_bytes()
        };
        Output {
            status,
            stdout: join(&out),
            stderr: join(&err),
        }
    }

    /// The processes inside the namespace now.
    pub fn pids(&self) -> Vec<u32> {
        Command::new("ip")
            .args(["netns", "pids", &self.name])
            .stderr(Stdio::null())
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Stdout of a short command inside the namespace, which must succeed.
    pub fn stdout(&self, program: &str, args: &[&str]) -> String {
        let out = self.run(program, args);
        assert!(
            out.status.success(),
            "{program} {args:?} in {}: {} {}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `python3 -u -c script args...` inside the namespace.
    pub fn python(&self, label: &str, script: &str, args: &[&str]) -> Proc {
        let mut full = vec!["-u", "-c", script];
        full.extend_from_slice(args);
        Proc::spawn(label, self.command("python3", &full))
    }

    /// The namespace's `Tcp:` counters from /proc/net/snmp (exact and
    /// stateless, unlike nstat's history files).
    pub fn tcp_counters(&self) -> HashMap<String, u64> {
        let out = self.run("cat", &["/proc/net/snmp"]);
        assert!(out.status.success(), "cat /proc/net/snmp: {out:?}");
        parse_snmp(&String::from_utf8_lossy(&out.stdout), "Tcp:")
    }

    /// The namespace's Tcp OutRsts counter.
    pub fn tcp_out_rsts(&self) -> u64 {
        *self
            .tcp_counters()
            .get("OutRsts")
            .expect("OutRsts in /proc/net/snmp")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Processes left inside our namespace are ours (unique name).
        for pid in self.pids() {
            // SAFETY: plain kill(2) on a pid inside our namespace.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Parses the two-line `Prefix: names` / `Prefix: values` groups of
/// /proc/net/snmp for one prefix.
pub fn parse_snmp(text: &str, prefix: &str) -> HashMap<String, u64> {
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with(prefix)).collect();
    assert!(lines.len() >= 2, "no {prefix} lines in {text}");
    lines[0]
        .split_whitespace()
        .skip(1)
        .zip(lines[1].split_whitespace().skip(1))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse::<i64>().ok()? as u64)))
        .collect()
}
