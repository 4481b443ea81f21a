"""Opens N client connections to a pooler on 127.0.0.1, logs each in (trust auth), then on each
starts one huge simple Query, SELECT length('xxx...'), whose length field says SIZE_MB MiB,
and writes all of its 1 + SIZE bytes but the last 16 (the literal's last 13 x's, "')" and the
terminating zero are never sent). Prints "ready" when all N are holding their unfinished Query,
then waits for stdin to close and closes them.

One thread per connection, so a pooler that streams (and so only takes bytes as fast as
PostgreSQL does) and one that buffers (and takes them all at once) are both fed without a
deadlock. Every wait is bounded: it gives up after TIMEOUT seconds (default 120) with a message.

usage: send.py PORT N SIZE_MB [TIMEOUT]
"""
import socket
import struct
import sys
import threading
import time

CHUNK = 1 << 20
UNSENT = 16  # of the message's 1 + SIZE bytes, this many at the end are never written


def startup_packet(user: str, database: str) -> bytes:
    body = struct.pack("!I", 196608)
    for key, value in (("user", user), ("database", database)):
        body += key.encode() + b"\0" + value.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        part = sock.recv(n - len(data))
        if not part:
            raise ConnectionError("connection closed by the pooler")
        data += part
    return data


def login(sock: socket.socket) -> None:
    sock.sendall(startup_packet("postgres", "postgres"))
    while True:
        tag = recv_exactly(sock, 1)
        (length,) = struct.unpack("!I", recv_exactly(sock, 4))
        body = recv_exactly(sock, length - 4)
        if tag == b"E":
            raise RuntimeError("login failed: " + body.decode(errors="replace"))
        if tag == b"Z":
            return


def send_unfinished(sock: socket.socket, size: int) -> None:
    """Writes 'Q', the length SIZE, and the body up to 1 + SIZE - UNSENT bytes in all."""
    prefix = b"SELECT length('"
    sock.sendall(b"Q" + struct.pack("!I", size) + prefix)
    left = 1 + size - UNSENT - 5 - len(prefix)
    chunk = b"x" * CHUNK
    view = memoryview(chunk)
    while left > 0:
        n = min(left, CHUNK)
        sock.sendall(view[:n])
        left -= n


def main() -> None:
    port, n, size_mb = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 120.0
    size = size_mb << 20
    deadline = time.monotonic() + timeout
    socks: list = [None] * n
    errors: list = []
    done = threading.Semaphore(0)

    def client(i: int) -> None:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
            socks[i] = sock
            login(sock)
            send_unfinished(sock, size)
        except Exception as e:  # reported by the main thread
            errors.append(f"client {i}: {type(e).__name__}: {e}")
        finally:
            done.release()

    for i in range(n):
        threading.Thread(target=client, args=(i,), daemon=True).start()
    for _ in range(n):
        if not done.acquire(timeout=max(0.0, deadline - time.monotonic())):
            print(f"send.py: gave up after {timeout:.0f} s: not all {n} clients have written "
                  f"their {size_mb} MiB Query", file=sys.stderr, flush=True)
            sys.exit(1)
    if errors:
        print("send.py: " + "; ".join(errors), file=sys.stderr, flush=True)
        sys.exit(1)
    print("ready", n, flush=True)
    sys.stdin.read()
    for sock in socks:
        sock.close()


main()
