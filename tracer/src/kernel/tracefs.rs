//! tracefs: where it is, mounting it when absent, and parsing tracepoint
//! `format` files into field offsets and `__print_symbolic` tables.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use tracer_common::{OFFSET_NONE, SendResetLayout, SockEventLayout, TracepointLayouts};

use super::KernelError;

/// Mount points tried in order; the first with an `events` directory wins.
pub const TRACEFS_PATHS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// One `field:` line of a format file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    /// The declared type without the name, e.g. `const void *`, `__u8`,
    /// `enum sk_rst_reason`.
    pub type_name: String,
    /// `Some(28)` for `saddr[28]`.
    pub array_len: Option<usize>,
    pub offset: u32,
    pub size: u32,
    pub signed: bool,
}

/// A parsed tracepoint `format` file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Format {
    pub name: String,
    pub id: Option<u32>,
    pub fields: Vec<Field>,
    /// Text after `print fmt: `.
    pub print_fmt: String,
}

impl Format {
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Offset of `name` if present and `size` bytes wide, else `OFFSET_NONE`.
    pub fn offset_sized(&self, name: &str, size: u32) -> u32 {
        match self.field(name) {
            Some(f) if f.size == size => f.offset,
            Some(f) => {
                log::warn!(
                    "tracepoint {}: field {} is {} bytes, expected {size}; ignoring it",
                    self.name,
                    name,
                    f.size
                );
                OFFSET_NONE
            }
            None => OFFSET_NONE,
        }
    }
}

/// Parses a declaration such as `const void * skaddr` or `__u8 saddr[28]`
/// into (type, name, array length).
fn parse_decl(decl: &str) -> Option<(String, String, Option<usize>)> {
    let decl = decl.trim();
    let split = decl
        .rfind(|c: char| c.is_whitespace() || c == '*')
        .map_or(0, |i| i + 1);
    let (ty, mut name) = (decl[..split].trim(), &decl[split..]);
    let mut array_len = None;
    if let Some(open) = name.find('[') {
        let inner = name[open + 1..].trim_end_matches(']');
        array_len = inner.parse().ok();
        name = &name[..open];
    }
    if name.is_empty() {
        return None;
    }
    Some((ty.to_string(), name.to_string(), array_len))
}

fn parse_field(line: &str) -> Option<Field> {
    let rest = line.trim().strip_prefix("field:")?;
    let mut parts = rest.split(';').map(str::trim);
    let (type_name, name, array_len) = parse_decl(parts.next()?)?;
    let (mut offset, mut size, mut signed) = (None, None, false);
    for part in parts {
        if let Some(v) = part.strip_prefix("offset:") {
            offset = v.trim().parse().ok();
        } else if let Some(v) = part.strip_prefix("size:") {
            size = v.trim().parse().ok();
        } else if let Some(v) = part.strip_prefix("signed:") {
            signed = v.trim() == "1";
        }
    }
    Some(Field {
        name,
        type_name,
        array_len,
        offset: offset?,
        size: size?,
        signed,
    })
}

/// Parses the text of a tracepoint `format` file. Lenient: lines it does
/// not understand are skipped, so a missing field shows up as `None`.
pub fn parse_format(text: &str) -> Format {
    let mut fmt = Format::default();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("name:") {
            fmt.name = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("ID:") {
            fmt.id = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("print fmt:") {
            fmt.print_fmt = v.trim().to_string();
        } else if let Some(f) = parse_field(line) {
            fmt.fields.push(f);
        }
    }
    fmt
}

/// One `__print_symbolic(REC->field, { key, "name" }, ...)` table, keys and
/// names as written (keys may be numbers or unresolved symbols).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SymbolicTable {
    pub field: String,
    pub entries: Vec<(String, String)>,
}

impl SymbolicTable {
    /// Entries whose key is a number (decimal or 0x hex).
    pub fn numeric(&self) -> impl Iterator<Item = (u32, &str)> + '_ {
        self.entries.iter().filter_map(|(k, v)| {
            let n = match k.strip_prefix("0x") {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => k.parse().ok()?,
            };
            Some((n, v.as_str()))
        })
    }
}

/// Every `__print_symbolic` table of a `print fmt` line.
pub fn symbolic_tables(print_fmt: &str) -> Vec<SymbolicTable> {
    const OPEN: &str = "__print_symbolic(";
    let mut tables = Vec::new();
    let mut rest = print_fmt;
    while let Some(start) = rest.find(OPEN) {
        rest = &rest[start + OPEN.len()..];
        let Some(comma) = rest.find(',') else { break };
        let field = rest[..comma].trim();
        let field = field.strip_prefix("REC->").unwrap_or(field).to_string();
        rest = &rest[comma + 1..];
        let mut entries = Vec::new();
        loop {
            rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ',');
            if !rest.starts_with('{') {
                break;
            }
            let Some(close) = rest.find('}') else { break };
            let entry = &rest[1..close];
            rest = &rest[close + 1..];
            if let Some((k, v)) = entry.split_once(',') {
                entries.push((k.trim().to_string(), v.trim().trim_matches('"').to_string()));
            }
        }
        tables.push(SymbolicTable { field, entries });
    }
    tables
}

/// Finds a mounted tracefs (one with an `events` directory).
pub fn find_tracefs() -> Option<PathBuf> {
    TRACEFS_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("events").is_dir())
}

/// tracefs mount points named in a mountinfo text (debugfs's automount of
/// `tracing` included), in mount order.
pub fn tracefs_mounts(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            (post.split_whitespace().next()? == "tracefs")
                .then(|| pre.split_whitespace().nth(4).map(PathBuf::from))?
        })
        .collect()
}

/// Returns the tracefs mount point, mounting tracefs at
/// `/sys/kernel/tracing` when none is mounted (as under `ip netns exec`,
/// which gives the command a fresh sysfs).
pub fn ensure_tracefs() -> Result<PathBuf, KernelError> {
    if let Some(p) = find_tracefs() {
        return Ok(p);
    }
    // Mounted but unreadable (no CAP_DAC_READ_SEARCH): say so; mounting a
    // second tracefs over the host's would hide nothing and help nothing.
    let mounts = fs::read_to_string("/proc/self/mountinfo")
        .map(|t| tracefs_mounts(&t))
        .unwrap_or_default();
    if let Some(path) = TRACEFS_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|p| mounts.contains(p))
    {
        let source = fs::read_dir(path.join("events"))
            .err()
            .unwrap_or_else(|| io::Error::other("no events directory"));
        return Err(KernelError::TracefsUnreadable { path, source });
    }
    let target = PathBuf::from(TRACEFS_PATHS[0]);
    let fail = |source| KernelError::TracefsMount {
        path: target.clone(),
        tried: TRACEFS_PATHS.join(", "),
        source,
    };
    // SAFETY: all pointers are NUL-terminated C string literals that live for
    // the whole call; `data` may be NULL for tracefs.
    let rc = unsafe {
        libc::mount(
            c"nodev".as_ptr(),
            c"/sys/kernel/tracing".as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(fail(io::Error::last_os_error()));
    }
    if !target.join("events").is_dir() {
        return Err(fail(io::Error::other(
            "mounted, but it has no events directory",
        )));
    }
    log::info!(
        "tracefs was not mounted; mounted it at {}",
        target.display()
    );
    Ok(target)
}

/// Reads and parses `<root>/events/<system>/<event>/format`, if present.
pub fn read_format(root: &Path, system: &str, event: &str) -> Option<Format> {
    let path = root.join("events").join(system).join(event).join("format");
    match fs::read_to_string(&path) {
        Ok(text) => Some(parse_format(&text)),
        Err(e) => {
            log::debug!("{}: {e}", path.display());
            None
        }
    }
}

/// `tcp:tcp_send_reset`. `saddr`/`daddr` are taken only as the 28-byte
/// sockaddr of recent kernels: older ones (the `tcp_event_sk_skb` class,
/// e.g. 6.1) use those names for 4-byte raw IPv4 addresses, which this
/// layout cannot describe, so they are left `OFFSET_NONE`.
pub fn send_reset_layout(fmt: &Format) -> SendResetLayout {
    let mut l = TracepointLayouts::EMPTY.send_reset;
    l.skaddr = fmt.offset_sized("skaddr", 8);
    l.skbaddr = fmt.offset_sized("skbaddr", 8);
    l.state = fmt.offset_sized("state", 4);
    l.reason = fmt.offset_sized("reason", 4);
    for (slot, name) in [(&mut l.saddr, "saddr"), (&mut l.daddr, "daddr")] {
        *slot = match fmt.field(name) {
            Some(f) if f.size == 28 => f.offset,
            _ => OFFSET_NONE,
        };
    }
    l
}

/// `tcp:tcp_receive_reset` and `sock:inet_sock_set_state`.
pub fn sock_event_layout(fmt: &Format) -> SockEventLayout {
    SockEventLayout {
        skaddr: fmt.offset_sized("skaddr", 8),
        sport: fmt.offset_sized("sport", 2),
        dport: fmt.offset_sized("dport", 2),
        family: fmt.offset_sized("family", 2),
        saddr: fmt.offset_sized("saddr", 4),
        daddr: fmt.offset_sized("daddr", 4),
        saddr_v6: fmt.offset_sized("saddr_v6", 16),
        daddr_v6: fmt.offset_sized("daddr_v6", 16),
        oldstate: fmt.offset_sized("oldstate", 4),
        newstate: fmt.offset_sized("newstate", 4),
        protocol: fmt.offset_sized("protocol", 2),
        _pad: 0,
    }
}

/// The parsed format files the layouts are built from; `None` for a
/// tracepoint this kernel does not have.
#[derive(Clone, Debug, Default)]
pub struct Formats {
    pub send_reset: Option<Format>,
    pub receive_reset: Option<Format>,
    pub set_state: Option<Format>,
    /// `sys_enter_accept4`, else `sys_enter_accept`.
    pub enter_accept: Option<Format>,
    /// `sys_exit_accept4`, else `sys_exit_accept`.
    pub exit_accept: Option<Format>,
    /// `io_uring:io_uring_complete`.
    pub io_complete: Option<Format>,
}

impl Formats {
    /// Reads the format files under the tracefs mount `root`.
    pub fn read(root: &Path) -> Formats {
        let syscall = |a: &str, b: &str| {
            read_format(root, "syscalls", a).or_else(|| read_format(root, "syscalls", b))
        };
        Formats {
            send_reset: read_format(root, "tcp", "tcp_send_reset"),
            receive_reset: read_format(root, "tcp", "tcp_receive_reset"),
            set_state: read_format(root, "sock", "inet_sock_set_state"),
            enter_accept: syscall("sys_enter_accept4", "sys_enter_accept"),
            exit_accept: syscall("sys_exit_accept4", "sys_exit_accept"),
            io_complete: read_format(root, "io_uring", "io_uring_complete"),
        }
    }
}

/// Builds the layouts from parsed formats; a missing tracepoint or field
/// (e.g. no `reason` before 6.10) leaves `OFFSET_NONE`. Syscall arguments
/// and return values occupy 8-byte slots.
pub fn layouts_from(f: &Formats) -> TracepointLayouts {
    let mut l = TracepointLayouts::EMPTY;
    if let Some(f) = &f.send_reset {
        l.send_reset = send_reset_layout(f);
    }
    if let Some(f) = &f.receive_reset {
        l.receive_reset = sock_event_layout(f);
    }
    if let Some(f) = &f.set_state {
        l.set_state = sock_event_layout(f);
    }
    if let Some(f) = &f.enter_accept {
        l.sys_enter_accept_fd = f.offset_sized("fd", 8);
    }
    if let Some(f) = &f.exit_accept {
        l.sys_exit_accept_ret = f.offset_sized("ret", 8);
    }
    if let Some(f) = &f.io_complete {
        l.io_complete_req = f.offset_sized("req", 8);
        l.io_complete_res = f.offset_sized("res", 4);
    }
    l
}

/// Reads the format files under tracefs `root` and builds the layouts.
pub fn layouts(root: &Path) -> TracepointLayouts {
    layouts_from(&Formats::read(root))
}
