"""Opens N client connections to a pooler on 127.0.0.1, logs each in (trust auth) and holds
them idle; prints "ready" when all are in, then waits for stdin to close.

usage: hold.py PORT N USER DATABASE
"""
import asyncio
import resource
import struct
import sys


def startup_packet(user: str, database: str) -> bytes:
    body = struct.pack("!I", 196608)
    for key, value in (("user", user), ("database", database)):
        body += key.encode() + b"\0" + value.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


async def login(port: int, user: str, database: str):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(startup_packet(user, database))
    await writer.drain()
    while True:
        tag = await reader.readexactly(1)
        (length,) = struct.unpack("!I", await reader.readexactly(4))
        body = await reader.readexactly(length - 4)
        if tag == b"E":
            raise RuntimeError(body.decode(errors="replace"))
        if tag == b"Z":
            return reader, writer


async def main() -> None:
    port, n, user, database = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    held = []
    for start in range(0, n, 200):
        batch = [login(port, user, database) for _ in range(min(200, n - start))]
        held.extend(await asyncio.gather(*batch))
    print("ready", len(held), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for _, writer in held:
        writer.close()


asyncio.run(main())
