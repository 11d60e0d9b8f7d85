"""A fresh database per benchmark phase on the local PostgreSQL, always dropped after."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Self
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from store import db
from store.migrate import migrate

ADMIN_DSN = os.environ.get("BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def dsn_for(database: str, admin_dsn: str = ADMIN_DSN) -> str:
    return urlunsplit(urlsplit(admin_dsn)._replace(path=f"/{database}"))


@asynccontextmanager
async def temporary_database(admin_dsn: str = ADMIN_DSN) -> AsyncIterator[str]:
    """Create an empty, migrated database; yield its DSN; drop it (even on failure)."""
    name = f"bench_{os.getpid()}_{secrets.token_hex(3)}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    dsn = dsn_for(name, admin_dsn)
    try:
        conn = await asyncpg.connect(dsn)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        yield dsn
    finally:
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@asynccontextmanager
async def pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """A small pool speaking jsonb as Python values, like the service's."""
    p = await db.create_pool(dsn, min_size=1, max_size=4)
    try:
        yield p
    finally:
        await p.close()


async def server_settings() -> dict[str, str]:
    """The PostgreSQL settings that matter most for these numbers."""
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        rows = await conn.fetch(
            """
            SELECT name, setting, unit FROM pg_settings
            WHERE name IN ('fsync', 'synchronous_commit', 'shared_buffers', 'max_connections')
            """
        )
        version = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    out = {"server_version": str(version)}
    out.update({r["name"]: r["setting"] + (f" ×{r['unit']}" if r["unit"] else "") for r in rows})
    return out


class ActivitySampler:
    """Samples `pg_stat_activity` of one database: which statements are running (or
    holding a transaction open) and what they wait on — a wall-clock profile of the
    database side. Each sample counts every backend that is not idle."""

    def __init__(self, database_dsn: str, interval: float = 0.02) -> None:
        self.database = urlsplit(database_dsn).path.lstrip("/")
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._samples = 0
        self._counts: Counter[tuple[str, str, str]] = Counter()
        self.summary: dict[str, Any] = {}

    async def __aenter__(self) -> Self:
        conn = await asyncpg.connect(ADMIN_DSN)
        self._task = asyncio.create_task(self._run(conn))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.summary = await self._stop()

    async def _run(self, conn: asyncpg.Connection) -> None:
        try:
            while True:
                rows = await conn.fetch(
                    """
                    SELECT state, coalesce(wait_event_type || ':' || wait_event, 'CPU') AS wait,
                           query
                    FROM pg_stat_activity
                    WHERE datname = $1 AND pid <> pg_backend_pid()
                      AND state IN ('active', 'idle in transaction')
                    """,
                    self.database,
                )
                self._samples += 1
                for r in rows:
                    wait = r["wait"] if r["state"] == "active" else "idle in transaction"
                    self._counts[(_statement(r["query"]), wait, r["state"])] += 1
                await asyncio.sleep(self.interval)
        finally:
            await conn.close()

    async def _stop(self, top: int = 12) -> dict[str, Any]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        n = max(1, self._samples)
        by_wait: Counter[str] = Counter()
        for (_, wait, _), count in self._counts.items():
            by_wait[wait] += count
        return {
            "samples": self._samples,
            # Average number of backends in each (statement, wait) over the window.
            "busy_backends_avg": round(sum(self._counts.values()) / n, 2),
            "by_wait": [(w, round(c / n, 2)) for w, c in by_wait.most_common(8)],
            "top": [
                {"statement": q, "wait": w, "backends_avg": round(c / n, 2)}
                for (q, w, _), c in self._counts.most_common(top)
            ],
        }


def _statement(query: str) -> str:
    """A statement's first words, enough to tell which one it is."""
    return " ".join(query.split())[:110]
