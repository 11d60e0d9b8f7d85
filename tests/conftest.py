"""Test fixtures: a real PostgreSQL database per test session (on the server at
127.0.0.1:5432, or TEST_PG_DSN), emptied between tests."""

from __future__ import annotations

import os
import random
import secrets
import socket
import tempfile
from collections.abc import AsyncIterator
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from bot.console.auth import hash_password
from store import db, staff
from store.billing_local import LocalBilling
from store.migrate import migrate
from tests.billing_fixture import BILLING
from tests.browser import CHROMIUM, CHROMIUM_ARGS
from tests.console import PASSWORD, StaffClient
from tests.harness import Stack

if TYPE_CHECKING:
    from playwright.async_api import Browser

LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"

# Kept across tests: the migrations applied, and the single send-budget row (reset below).
_KEPT_TABLES = ("schema_migrations", "send_budget")


@cache
def admin_dsn() -> str:
    """TEST_PG_DSN, else the server on 127.0.0.1:5432, else an embedded PostgreSQL: the
    suite needs nothing installed but Python."""
    if os.environ.get("TEST_PG_DSN"):
        return os.environ["TEST_PG_DSN"]
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=1).close()
        return LOCAL_SERVER
    except OSError:
        pass
    data = Path(tempfile.gettempdir()) / f"bot-tests-pg-{os.getuid()}"
    data.mkdir(mode=0o755, exist_ok=True)
    return db.embedded_database_url(data)


def dsn_for(database: str) -> str:
    parts = urlsplit(admin_dsn())
    return urlunsplit(parts._replace(path=f"/{database}"))


async def create_database() -> str:
    name = f"bot_test_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(admin_dsn())
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def drop_database(name: str) -> None:
    conn = await asyncpg.connect(admin_dsn())
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
async def database_url() -> AsyncIterator[str]:
    name = await create_database()
    dsn = dsn_for(name)
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    yield dsn
    await drop_database(name)


async def reset(pool: asyncpg.Pool) -> None:
    """Every table empty and every sequence at 1, as after the migrations (the tables the
    migrations fill are kept). DELETE, not TRUNCATE: a test's tables hold a few rows, and
    TRUNCATE's cost is per table (new files for it and each index: 150 ms for our forty,
    at every test); foreign keys are not checked meanwhile (replica role)."""
    async with pool.acquire() as conn:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            " AND NOT tablename = ANY($1::text[])",
            list(_KEPT_TABLES),
        )
        # The sequences of those tables' columns (what RESTART IDENTITY restarted).
        sequences = await conn.fetch(
            """
            SELECT s.relname AS name
            FROM pg_class AS s
            JOIN pg_depend AS d ON d.objid = s.oid AND d.deptype IN ('a', 'i')
            JOIN pg_class AS t ON t.oid = d.refobjid
            WHERE s.relkind = 'S' AND t.relname = ANY($1::text[])
            """,
            [t["tablename"] for t in tables],
        )
        statements = [f'DELETE FROM "{t["tablename"]}"' for t in tables]
        statements += [f'ALTER SEQUENCE "{s["name"]}" RESTART' for s in sequences]
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute(";\n".join(statements))
        await conn.execute(
            "UPDATE send_budget SET tokens = 0, updated_at = now(), paused_at = NULL,"
            " paused_code = NULL, paused_reason = NULL, probe_at = NULL, probes = 0"
        )


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await db.create_pool(database_url, min_size=1, max_size=30)
    await reset(p)
    await LocalBilling(p).load(BILLING)
    yield p
    await p.close()


def pytest_configure(config: pytest.Config) -> None:
    """One awkward seed for the whole run, shared with pytest-xdist's workers (they
    inherit the environment), so the seed printed at the end replays every test."""
    os.environ.setdefault("AWKWARD_SEED", str(random.SystemRandom().randrange(10**6)))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Which awkward run this was (printed with -q too): AWKWARD_SEED=N replays it."""
    from tests import harness

    state = f"AWKWARD_SEED={harness.AWKWARD_SEED}" if harness.AWKWARD_ON else "off (AWKWARD=0)"
    terminalreporter.write_line(f"awkward WhatsApp (tests/harness.py): {state}")


@pytest.fixture(autouse=True)
def _awkward_seed(request: pytest.FixtureRequest) -> None:
    from tests import harness

    harness.seed_test(request.node.nodeid)


@pytest.fixture(name="db")
async def whmcs_db(pool: asyncpg.Pool) -> asyncpg.Pool:
    """The pool, with the WHMCS adapter's tables (phone index, request ledger, sync
    progress) empty."""
    from store import whmcs_index

    await whmcs_index.forget_everything(pool)
    return pool


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Headless Chromium (tests/browser.py; the modules using it skip without it)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            await chromium.close()


# -- the staff console's tests (tests/console.py) ---------------------------------------


@pytest.fixture
async def stack(pool: asyncpg.Pool, database_url: str) -> AsyncIterator[Stack]:
    # The exact send counts are the point: Meta's awkward habits (a 504 after a send,
    # statuses lost) would blur them, and the sender's own tests cover those.
    async with Stack(database_url, awkward=None) as running:
        yield running


@pytest.fixture
async def members(pool: asyncpg.Pool) -> dict[str, int]:
    """Ana (Juan's and María's account manager in billing) and Beto."""
    async with pool.acquire() as conn:
        return {
            name: await staff.add_staff(conn, name, "agent", hash_password(PASSWORD))
            for name in ("ana", "beto")
        }


@pytest.fixture
async def clients(stack: Stack) -> AsyncIterator[list[StaffClient]]:
    made: list[StaffClient] = []
    yield made
    for client in made:
        await client.close()
