//! Needs root. The kernel side keeps connecting sockets' owners in a
//! lock-free array (`OWNER_CACHE`, tracer-ebpf/src/owner_cache.rs) and moves
//! them into the LRU owner map (`OWNERS`) when the socket sends. Its
//! invariant: a slot names a socket only while `OWNERS` has no entry for it,
//! so a destroyed socket leaves nothing in either. Read from tracer's own
//! maps (by id, through its fdinfo) while a client in a private namespace
//! holds idle and talking connections, and after it closed them all and
//! made a thousand refused connects.
//!
//! Run: `cargo test -p tracer --test owner_cache` (as root).

mod common;

use std::time::{Duration, Instant};

use aya::maps::{Array, HashMap, Map, MapData, MapInfo};
use tracer_common::SockOwner;

use common::{Netns, STEP_TIMEOUT, Tracer, require_root};

/// Listens on 127.0.0.1, prints its port, accepts and keeps every
/// connection (reading what comes) until stdin closes.
const SERVER: &str = r#"
import select, socket, sys
ls = socket.socket()
ls.bind(("127.0.0.1", 0))
ls.listen(128)
print(ls.getsockname()[1], flush=True)
conns = []
while True:
    r, _, _ = select.select([ls, sys.stdin] + conns, [], [], 30)
    if not r:
        sys.exit("server: idle for 30 s")
    for s in r:
        if s is sys.stdin:
            sys.exit(0)
        if s is ls:
            c, _ = ls.accept()
            conns.append(c)
        elif not s.recv(4096):
            conns.remove(s)
            s.close()
"#;

/// argv: server port, idle, talking, refused. Prints its pid; opens `idle`
/// connections that never send and `talking` ones that send 10 bytes; makes
/// `refused` connects to 127.0.0.1:9 (nothing listens); prints "held";
/// on "close" aborts every connection (SO_LINGER 0: the sockets are
/// destroyed at once) and prints "closed"; then waits for stdin to close.
const CLIENT: &str = r#"
import os, socket, struct, sys
port, idle, talking, refused = (int(a) for a in sys.argv[1:5])
print(os.getpid(), flush=True)
held = []
for i in range(idle + talking):
    s = socket.create_connection(("127.0.0.1", port))
    if i >= idle:
        s.sendall(b"0123456789")
    held.append(s)
for _ in range(refused):
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", 9))
        sys.exit("a connect to port 9 succeeded")
    except ConnectionRefusedError:
        pass
    s.close()
print("held", flush=True)
assert sys.stdin.readline().strip() == "close"
for s in held:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
print("closed", flush=True)
sys.stdin.read()
"#;

const IDLE: usize = 20;
const TALKING: usize = 20;
const REFUSED: usize = 1000;

/// The ids of the maps `pid` holds, from its fdinfo.
fn map_ids(pid: u32) -> Vec<u32> {
    common::bpf_ids_of(pid)
        .maps
        .into_iter()
        .filter_map(|id| u32::try_from(id).ok())
        .collect()
}

/// Tracer's map called `name` (the kernel keeps the first 15 bytes).
fn map_named(pid: u32, name: &str) -> MapData {
    let short = &name[..name.len().min(15)];
    for id in map_ids(pid) {
        let Ok(info) = MapInfo::from_id(id) else {
            continue;
        };
        if info.name_as_str() == Some(short) {
            return MapData::from_id(id).unwrap_or_else(|e| panic!("open map {name} ({id}): {e}"));
        }
    }
    panic!("tracer (pid {pid}) holds no map named {name}");
}

/// Slots of the owner cache naming a socket owned by process `tgid`. A slot
/// is 8 words: the socket address, the owner (`TaskInfo`: tgid in the low
/// half of the first word), the check word.
fn cache_slots_of(pid: u32, tgid: u32) -> usize {
    let map = Map::Array(map_named(pid, "OWNER_CACHE"));
    let cache: Array<_, [u64; 8]> = Array::try_from(map).expect("OWNER_CACHE is an array");
    cache
        .iter()
        .map(|slot| slot.expect("read an OWNER_CACHE slot"))
        .filter(|w| w[0] != 0 && (w[1] & 0xffff_ffff) as u32 == tgid)
        .count()
}

/// Entries of the LRU owner map owned by process `tgid`.
fn owners_of(pid: u32, tgid: u32) -> usize {
    let map = Map::LruHashMap(map_named(pid, "OWNERS"));
    let owners: HashMap<_, u64, SockOwner> = HashMap::try_from(map).expect("OWNERS is a hash map");
    owners
        .iter()
        .filter_map(Result::ok)
        .filter(|(_, v)| v.owner.task.tgid == tgid)
        .count()
}

/// Polls `f` until it returns `want` or `timeout` passes; its last value.
fn settles(timeout: Duration, want: usize, f: impl Fn() -> usize) -> usize {
    let end = Instant::now() + timeout;
    loop {
        let got = f();
        if got == want || Instant::now() > end {
            return got;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_destroyed_socket_leaves_no_owner_in_the_cache_or_the_map() {
    if !require_root("a_destroyed_socket_leaves_no_owner_in_the_cache_or_the_map") {
        return;
    }
    let ns = Netns::new();
    let tracer = Tracer::watch_json(&[]);
    let pid = tracer.pid();
    let sends_hooked = tracer
        .hooks()
        .get("sock_send_length")
        .is_some_and(|m| m != "-");

    let mut server = ns.python("server", SERVER, &[]);
    let port = server.line();
    let args = [
        port.as_str(),
        &IDLE.to_string(),
        &TALKING.to_string(),
        &REFUSED.to_string(),
    ];
    let mut client = ns.python("client", CLIENT, &args);
    let client_pid: u32 = client.line().parse().expect("client pid");
    assert_eq!(client.line_within(STEP_TIMEOUT * 3), "held");

    // The idle connections' owners are in the cache (a slot each, but for
    // the rare two that hash to one slot); the refused connects' slots
    // went with their sockets, and the talking ones moved to OWNERS.
    let idle_slots = cache_slots_of(pid, client_pid);
    assert!(
        (IDLE - 3..=IDLE).contains(&idle_slots),
        "{idle_slots} cache slots name the client, want those of its {IDLE} idle connections"
    );
    let in_map = settles(STEP_TIMEOUT, TALKING, || owners_of(pid, client_pid));
    if sends_hooked {
        assert_eq!(
            in_map, TALKING,
            "OWNERS entries of the client: want its {TALKING} talking connections"
        );
    } else {
        eprintln!("no send hook on this kernel: {in_map} OWNERS entries of the client");
    }

    client.send("close");
    client.expect_line("closed");
    let slots_left = settles(STEP_TIMEOUT, 0, || cache_slots_of(pid, client_pid));
    let owners_left = settles(STEP_TIMEOUT, 0, || owners_of(pid, client_pid));
    client.close_stdin();
    server.close_stdin();
    let stopped = tracer.stop();
    assert!(stopped.status.success(), "tracer: {}", stopped.stderr);
    assert_eq!(
        slots_left, 0,
        "cache slots still name the client's destroyed sockets"
    );
    assert_eq!(
        owners_left, 0,
        "OWNERS still holds the client's destroyed sockets"
    );
}
