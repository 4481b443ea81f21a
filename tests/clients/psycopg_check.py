"""psycopg 3 through pgmux: every statement prepared on the server (prepare_threshold=0), a
small client-side cache (prepared_max=4) so that psycopg also sends DEALLOCATE, and each of many
concurrent clients checks that it gets its own answers.

usage: psycopg_check.py CONNINFO CLIENTS ROUNDS
"""
import asyncio
import sys

import psycopg


async def worker(conninfo: str, me: int, rounds: int) -> int:
    checks = 0
    async with await psycopg.AsyncConnection.connect(
        conninfo, prepare_threshold=0, autocommit=True
    ) as conn:
        conn.prepared_max = 4
        for r in range(rounds):
            cur = await conn.execute("SELECT %s::int * 1000 + %s::int", (me, r))
            assert (await cur.fetchone())[0] == me * 1000 + r
            checks += 1
            # Six distinct statements cycle through a cache of four: DEALLOCATE on every round.
            for j in range(6):
                cur = await conn.execute(f"SELECT %s::int + {j}, %s::text", (me, f"c{me}"))
                assert await cur.fetchone() == (me + j, f"c{me}")
                checks += 1
            async with conn.transaction():
                cur = await conn.execute("SELECT %s::int * 1000 + %s::int", (me, -r))
                got = (await cur.fetchone())[0]
                cur = await conn.execute("SELECT txid_current() = txid_current()")
                assert (await cur.fetchone())[0] is True
            assert got == me * 1000 - r
            checks += 1
    return checks


async def main() -> None:
    conninfo, clients, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    totals = await asyncio.gather(*(worker(conninfo, i, rounds) for i in range(clients)))
    print(f"psycopg {psycopg.__version__}: {sum(totals)} checks passed")


asyncio.run(main())
