"""executemany of many rows through pgmux, as drivers pipeline it: psycopg 3 in pipeline mode
(rows prepared on the server after the first few) and asyncpg (one prepared statement, every
row's Bind and Execute sent before one Sync). The rows go into a table of the run's own inside
one transaction; after the commit the server's count, sum and md5 of the rows must match what
was sent, exactly.

usage: executemany_check.py psycopg|asyncpg CONNINFO ROWS
"""
import asyncio
import hashlib
import os
import sys


def rows(n: int):
    return [(i, f"row-{i}-" + "p" * (i % 61)) for i in range(n)]


def expected(data) -> tuple:
    digest = hashlib.md5("".join(p for _, p in data).encode()).hexdigest()
    return (len(data), sum(i for i, _ in data), digest)


CHECK = "SELECT count(*), sum(id), md5(string_agg(payload, '' ORDER BY id)) FROM {t}"


async def with_psycopg(conninfo: str, n: int, table: str) -> tuple:
    import psycopg

    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, payload text NOT NULL)")
        try:
            data = rows(n)
            async with conn.transaction():
                async with conn.pipeline():
                    async with conn.cursor() as cur:
                        await cur.executemany(
                            f"INSERT INTO {table} (id, payload) VALUES (%s, %s)", data
                        )
            cur = await conn.execute(CHECK.format(t=table))
            count, total, digest = await cur.fetchone()
            return (count, int(total), digest), expected(data), f"psycopg {psycopg.__version__}"
        finally:
            await conn.execute(f"DROP TABLE {table}")


async def with_asyncpg(dsn: str, n: int, table: str) -> tuple:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, payload text NOT NULL)")
        try:
            data = rows(n)
            async with conn.transaction():
                await conn.executemany(f"INSERT INTO {table} (id, payload) VALUES ($1, $2)", data)
            record = await conn.fetchrow(CHECK.format(t=table))
            got = (record[0], int(record[1]), record[2])
            return got, expected(data), f"asyncpg {asyncpg.__version__}"
        finally:
            await conn.execute(f"DROP TABLE {table}")
    finally:
        await conn.close()


async def main() -> None:
    library, conninfo, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    table = f"executemany_{library}_{os.getpid()}"
    run = {"psycopg": with_psycopg, "asyncpg": with_asyncpg}[library]
    got, want, version = await run(conninfo, n, table)
    assert got == want, f"committed {got}, sent {want}"
    print(f"{version}, executemany of {n} rows committed exactly: 1 checks passed")


asyncio.run(main())
