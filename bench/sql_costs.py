"""`python -m bench.sql_costs [--migrations DIR] [-n N]`: what PostgreSQL spends per
message on the two statements every inbound message runs, measured alone — no HTTP, no
flow, one connection, one call after the other — so that two versions of the schema can
be compared on a noisy machine (the whole-service phases of `make bench` swing ±20 % from
run to run here):

- storing a webhook's message: `accept_messages` (the ack Meta waits for);
- starting its turn: `lock_conversation` in its own transaction (the dispatcher's claim).

Each for N new customers, then the same customers again (returning), with the phone only
(the classic payload) and with phone and BSUID (2026). `--migrations` migrates the scratch
database from another checkout's `store/migrations` (e.g. a `git worktree` of an older
commit). Uses TEST_PG_DSN or the server on 127.0.0.1:5432.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import asyncpg

from store.migrate import MIGRATIONS_DIR, migrate

ADMIN_DSN = os.environ.get("TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def _message(n: int, wamid: str, with_bsuid: bool) -> dict[str, object]:
    # Other customers for each payload: a BSUID arriving for a phone-only conversation is
    # a merge, measured by the tests, not here.
    phone = f"5491{1 + with_bsuid}{n:08d}"
    return {
        "wamid": wamid,
        "type": "text",
        "kind": "text",
        "text": "hola",
        "wa_id": phone,
        "user_id": f"AR.b{n:011d}x" if with_bsuid else None,
        "name": "Cliente",
        "timestamp": str(int(time.time())),
    }


def _key(message: dict[str, object]) -> str:
    return f"u:{message['user_id']}" if message["user_id"] else str(message["wa_id"])


async def _timed(calls: int, one: Callable[[int], Awaitable[None]]) -> list[float]:
    took = []
    for n in range(calls):
        started = time.perf_counter()
        await one(n)
        took.append((time.perf_counter() - started) * 1000)
    return took


async def measure(conn: asyncpg.Connection, calls: int, with_bsuid: bool) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {}
    for visit in ("new", "returning"):
        wamid = f"wamid.{visit}.{with_bsuid}"
        messages = [_message(n, f"{wamid}.{n}", with_bsuid) for n in range(calls)]

        async def accept(n: int, messages: list[dict[str, object]] = messages) -> None:
            m = messages[n]
            await conn.fetchval(
                "SELECT accept_messages($1, $2::text[], $3::text[], $4::jsonb[])",
                "{}",
                [m["wamid"]],
                [_key(m)],
                [json.dumps(m)],
            )

        async def lock(n: int, messages: list[dict[str, object]] = messages) -> None:
            m = messages[n]
            async with conn.transaction():
                await conn.fetchrow(
                    "SELECT * FROM lock_conversation($1, $2, $3, $4, now())",
                    _key(m),
                    m["wa_id"],
                    m["user_id"],
                    m["name"],
                )

        results[f"accept_messages, {visit} customer"] = await _timed(calls, accept)
        results[f"lock_conversation, {visit} customer"] = await _timed(calls, lock)
    return results


async def run(migrations: Path, calls: int) -> None:
    name = f"bench_sql_costs_{os.getpid()}"
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        dsn = ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
        conn = await asyncpg.connect(dsn)
        try:
            await migrate(conn, migrations)
            print(f"migrations: {migrations} (latest {max(_versions(migrations))})")
            print("| statement | payload | p50 ms | mean ms |")
            print("|---|---|---:|---:|")
            for with_bsuid in (False, True):
                payload = "phone and BSUID" if with_bsuid else "phone only"
                for what, took in (await measure(conn, calls, with_bsuid)).items():
                    p50, mean = statistics.median(took), statistics.fmean(took)
                    print(f"| {what} | {payload} | {p50:.3f} | {mean:.3f} |")
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await admin.close()


def _versions(directory: Path) -> Sequence[int]:
    return [int(p.name[:3]) for p in directory.glob("*.sql")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--migrations", type=Path, default=MIGRATIONS_DIR)
    parser.add_argument("-n", type=int, default=2000, help="customers (default 2000)")
    args = parser.parse_args()
    asyncio.run(run(args.migrations, args.n))


if __name__ == "__main__":
    main()
