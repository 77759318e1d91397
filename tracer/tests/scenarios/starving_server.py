"""The production story, small: a server whose handlers wait on a tiny
connection pool, clients with short timeouts, a low fd limit and
tcp_abort_on_overflow=1 (set on the namespace by the caller).

server: accepts (blocking, one thread), hands each connection to a handler
that waits for one of POOL slots held forever (the "DB pool" is exhausted),
so the connection is never closed; clients time out and close, their
sockets go to CLOSE_WAIT on the server; the server reaches RLIMIT_NOFILE,
accept() fails with EMFILE, the accept queue fills and the kernel resets new
connections.

Usage: starving_server.py server PORT FD_LIMIT READY_FILE
       starving_server.py clients PORT COUNT TIMEOUT_S
Bounded: the server exits after 120 s; clients make COUNT attempts.
"""
import os
import resource
import socket
import sys
import threading
import time


def server(port, fd_limit, ready):
    resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(8)
    pool = threading.Semaphore(2)
    held = []

    def handler(conn):
        # Wait for a pool slot that never frees: the request never finishes
        # and the connection is never closed.
        pool.acquire()
        held.append(conn)

    with open(ready, "w") as f:
        f.write(str(os.getpid()))
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            conn, _ = ls.accept()
        except OSError:
            # EMFILE: the usual server loop backs off and retries.
            time.sleep(0.01)
            continue
        held.append(conn)
        threading.Thread(target=handler, args=(conn,), daemon=True).start()


def clients(port, count, timeout):
    for _ in range(count):
        c = socket.socket()
        c.settimeout(timeout)
        try:
            c.connect(("127.0.0.1", port))
            c.sendall(b"GET / HTTP/1.0\r\n\r\n")
            c.recv(100)
        except OSError:
            pass
        finally:
            c.close()


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    else:
        clients(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
