"""asyncpg through pgmux with its default statement cache (named statements for every query),
explicit prepared statements and transactions; each concurrent client checks its own answers.

usage: asyncpg_check.py DSN CLIENTS ROUNDS
"""
import asyncio
import sys

import asyncpg


async def worker(dsn: str, me: int, rounds: int) -> int:
    checks = 0
    conn = await asyncpg.connect(dsn)
    try:
        stmt = await conn.prepare("SELECT $1::int * 1000 + $2::int")
        for r in range(rounds):
            assert await stmt.fetchval(me, r) == me * 1000 + r
            assert await conn.fetchval("SELECT $1::text || '-' || $2::int", f"c{me}", r) == f"c{me}-{r}"
            rows = await conn.fetch("SELECT g FROM generate_series(1, $1::int) g", me % 7 + 1)
            assert [row["g"] for row in rows] == list(range(1, me % 7 + 2))
            async with conn.transaction():
                assert await stmt.fetchval(me, -r) == me * 1000 - r
                assert await conn.fetchval("SELECT $1::int", me) == me
            checks += 5
    finally:
        await conn.close()
    return checks


async def main() -> None:
    dsn, clients, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    totals = await asyncio.gather(*(worker(dsn, i, rounds) for i in range(clients)))
    print(f"asyncpg {asyncpg.__version__}: {sum(totals)} checks passed")


asyncio.run(main())
