"""The incident of issue 12, small: a service whose handlers each take one
connection of a fixed pool to a slow upstream. Bounded: every loop ends.

  upstream PORT DELAY_MS         answers each line after DELAY_MS; a line
                                 "stall" on stdin stops all answers
  service PORT UP_PORT POOL NOFILE
                                 POOL persistent connections to UP_PORT;
                                 per request: read it, take a pooled
                                 connection, one exchange, answer, close
  clients PORT SECONDS THREADS TIMEOUT
                                 each thread: connect, send, wait up to
                                 TIMEOUT for the answer, close; until SECONDS
Each role prints "ready" when it is; the process is named after its role
(upstream: slowdb, service: api) in /proc/PID/comm.
"""
import queue
import resource
import socket
import sys
import threading
import time


def name(comm):
    with open("/proc/self/comm", "w") as f:
        f.write(comm)


def upstream(port, delay_ms):
    name("slowdb")
    stalled = threading.Event()
    ls = socket.create_server(("127.0.0.1", port), backlog=64)

    def serve(c):
        with c:
            while True:
                data = c.recv(256)
                if not data:
                    return
                if stalled.is_set():
                    time.sleep(3600)
                time.sleep(delay_ms / 1000.0)
                c.sendall(b"r\n")

    def accept():
        while True:
            c, _ = ls.accept()
            threading.Thread(target=serve, args=(c,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() == "stall":
            stalled.set()
            print("stalled", flush=True)
    time.sleep(3600)


def service(port, up_port, pool_size, nofile):
    name("api")
    pool = queue.Queue()
    for _ in range(pool_size):
        pool.put(socket.create_connection(("127.0.0.1", up_port)))
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    ls = socket.create_server(("127.0.0.1", port), backlog=32)

    def handle(c):
        try:
            if not c.recv(256):
                return
            up = pool.get()
            try:
                up.sendall(b"q\n")
                up.recv(64)
            finally:
                pool.put(up)
            c.sendall(b"ok\n")
        except OSError:
            pass
        finally:
            c.close()

    def accept():
        while True:
            try:
                c, _ = ls.accept()
            except OSError:  # EMFILE: the fds are gone
                time.sleep(0.01)
                continue
            try:
                threading.Thread(target=handle, args=(c,), daemon=True).start()
            except RuntimeError:
                c.close()

    threading.Thread(target=accept, daemon=True).start()
    print("ready", flush=True)
    time.sleep(3600)


def clients(port, seconds, threads, timeout):
    end = time.monotonic() + seconds
    stats = {"ok": 0, "failed": 0}
    lock = threading.Lock()

    def run():
        while time.monotonic() < end:
            ok = False
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
                    s.settimeout(timeout)
                    s.sendall(b"GET\n")
                    ok = bool(s.recv(64))
            except OSError:
                pass
            with lock:
                stats["ok" if ok else "failed"] += 1
            if not ok:
                time.sleep(0.05)

    ts = [threading.Thread(target=run) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    print(f"done ok={stats['ok']} failed={stats['failed']}", flush=True)


if __name__ == "__main__":
    role, args = sys.argv[1], [float(a) if "." in a else int(a) for a in sys.argv[2:]]
    {"upstream": upstream, "service": service, "clients": clients}[role](*args)
