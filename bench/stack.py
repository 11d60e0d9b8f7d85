"""What a phase runs against: a fresh database, the fake Cloud API and `python -m bot serve`,
each of the two servers in its own process; everything stopped and dropped on exit."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiohttp
import asyncpg

from bench import pg
from bench.procs import ROOT, Child, free_port
from store.billing_local import LocalBilling
from tests.billing_fixture import bulk_clients
from tests.harness import APP_SECRET, PHONE_ID, TOKEN
from tests.procs import server_env

# The service's settings for every phase (on top of tests/procs.py `server_env`).
SERVICE_SETTINGS = {"SEND_RATE_PER_SECOND": "5000", "RECIPIENT_BURST": "100"}

Setup = Callable[[asyncpg.Pool], Awaitable[None]]


class Stack:
    def __init__(
        self,
        logs: Path,
        label: str,
        *,
        statuses: str,
        customers: range | None = None,
        setup: Setup | None = None,
        env: dict[str, str] | None = None,
        code: Path = ROOT,
    ) -> None:
        self.logs = logs
        # The checkout the service and the fake run from.
        self.code = code
        self.label = label
        self.statuses = statuses
        self.customers = customers
        self.setup = setup
        self.env = env or {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.fake_url = ""
        self.service_env: dict[str, str] = {}
        self.service: Child | None = None
        self.fake: Child | None = None
        self.pool: asyncpg.Pool | None = None
        self.dsn = ""
        self.spawned_at = 0.0
        self._exit = AsyncExitStack()
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        try:
            await self._start()
        except BaseException:
            await self._exit.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._exit.aclose()

    async def _start(self) -> None:
        self.dsn = dsn = await self._exit.enter_async_context(pg.temporary_database())
        self.pool = await self._exit.enter_async_context(pg.pool(dsn))
        if self.customers is not None:
            clients = bulk_clients(len(self.customers), start=self.customers.start)
            await LocalBilling(self.pool).load(clients)
        if self.setup is not None:
            await self.setup(self.pool)

        fake_port = free_port()
        self.fake_url = f"http://127.0.0.1:{fake_port}"
        # a fake's own args: Meta's side of the conversation, posting statuses to the service
        fake_args = ["bot.fakes.cloud_api", "--port", str(fake_port), "--phone-id", PHONE_ID]
        fake_args += ["--token", TOKEN, "--app-secret", APP_SECRET]
        fake_args += ["--webhook-url", f"{self.url}/webhook", "--statuses", self.statuses]
        self.fake = Child(
            "fake Cloud API",
            fake_args,
            dict(os.environ),
            self.logs / f"{self.label}-fake.log",
            cwd=self.code,
        )
        self._exit.push_async_callback(self.fake.stop)
        await self.fake.start(f"{self.fake_url}/_fake/stats")

        self.service_env = server_env(
            dsn, self.fake_url, self.port, **(SERVICE_SETTINGS | self.env)
        )
        self.service = Child(
            "service",
            ["bot", "serve"],
            self.service_env,
            self.logs / f"{self.label}-service.log",
            cwd=self.code,
        )
        self._exit.push_async_callback(self.service.stop)
        self.spawned_at = time.time()
        await self.service.start(f"{self.url}/healthz")

        self._session = await self._exit.enter_async_context(
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        )

    async def backend_pids(self) -> set[int]:
        """PostgreSQL backends connected to this stack's database."""
        rows = await self.db.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        )
        return {r["pid"] for r in rows}

    def activity(self) -> pg.ActivitySampler:
        """A sampler of what this stack's database is doing (start and stop it)."""
        return pg.ActivitySampler(self.dsn, interval=0.05)

    @property
    def db(self) -> asyncpg.Pool:
        assert self.pool is not None
        return self.pool

    async def fake_stats(self) -> dict[str, Any]:
        assert self._session is not None
        async with self._session.get(f"{self.fake_url}/_fake/stats") as r:
            stats: dict[str, Any] = await r.json()
            return stats

    async def fake_messages(self, after: int = 0) -> list[dict[str, Any]]:
        assert self._session is not None
        async with self._session.get(
            f"{self.fake_url}/_fake/messages", params={"after": str(after)}
        ) as r:
            messages: list[dict[str, Any]] = await r.json()
            return messages

    async def backlog(self) -> tuple[int, int, int]:
        """(inbox rows, inbox rows pending, outbox rows pending or sending)."""
        row = await self.db.fetchrow(
            """
            SELECT (SELECT count(*) FROM inbox) AS inbox,
                   (SELECT count(*) FROM inbox WHERE status = 'pending') AS pending,
                   (SELECT count(*) FROM outbox WHERE status IN ('pending', 'sending')) AS open
            """
        )
        assert row is not None
        return int(row["inbox"]), int(row["pending"]), int(row["open"])

    async def wait_idle(self, inbox_rows: int, timeout: float) -> float | None:
        """Wait until `inbox_rows` messages are stored, processed and their replies
        accepted by the fake; the seconds it took, or None on timeout."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            stored, pending, open_ = await self.backlog()
            if stored >= inbox_rows and pending == 0 and open_ == 0:
                return time.monotonic() - start
            await asyncio.sleep(0.2)
        return None


def parse_time(value: str) -> float:
    """The fake's ISO-8601 `received_at` as a Unix timestamp."""
    return datetime.fromisoformat(value).timestamp()
