"""`python -m bot whmcs …` against the fake WHMCS, as a real process."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import asyncpg

from bot.fakes.whmcs import FailureKind, FakeWhmcs
from bot.whmcs.api import PAGE
from store import whmcs_index
from tests.billing_fixture import BILLING
from tests.procs import ROOT


def _env(fake: FakeWhmcs, database_url: str, tmp_path: Path) -> dict[str, str]:
    upgrades = tmp_path / "whmcs_upgrades.toml"
    upgrades.write_text(fake.upgrades_toml(), encoding="utf-8")
    return dict(
        os.environ,
        DATABASE_URL=database_url,
        LOG_FORMAT="text",
        BILLING_BACKEND="whmcs",
        WHMCS_URL=fake.base_url,
        WHMCS_IDENTIFIER=fake.identifier,
        WHMCS_SECRET=fake.secret,
        WHMCS_UPGRADES_FILE=str(upgrades),
    )


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", "whmcs", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_sync_builds_the_phone_index(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    await whmcs_index.forget_everything(pool)
    async with FakeWhmcs(BILLING) as fake:
        env = _env(fake, database_url, tmp_path)
        synced = await asyncio.to_thread(_cli, "sync", env=env)
        assert synced.returncode == 0, synced.stderr
        assert "clients=4" in synced.stdout
        unresolved = await asyncio.to_thread(_cli, "unresolved", env=env)
        assert (unresolved.returncode, unresolved.stdout) == (0, "")
        wrong = await asyncio.to_thread(_cli, "sync", env=dict(env, WHMCS_SECRET="wrong"))
        assert wrong.returncode == 1
        assert "wrong" not in wrong.stderr + wrong.stdout  # secrets are never printed
    indexed = await pool.fetchval("SELECT count(*) FROM whmcs_clients")
    assert indexed == 4


async def test_a_killed_sync_continues_where_it_stopped(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    await whmcs_index.forget_everything(pool)
    clients = [
        {"id": str(n), "name": f"C {n}", "email": f"c{n}@x.com", "phone": f"+54 11 4{n:07d}"}
        for n in range(1, 251)
    ]
    async with FakeWhmcs({"clients": clients}) as fake:
        env = _env(fake, database_url, tmp_path)

        def details() -> list[int]:
            return [int(c.params["clientid"]) for c in fake.calls_of("GetClientsDetails")]

        # Clients past 150 answer too slowly to matter: the process is SIGKILLed meanwhile.
        fake.fail_next(
            "GetClientsDetails",
            FailureKind.SLOW,
            delay=60,
            count=10_000,
            where=lambda p: int(p.get("clientid", "0")) > 150,
        )
        sync = subprocess.Popen(
            [sys.executable, "-m", "bot", "whmcs", "sync"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            await _until(lambda: any(n > 150 for n in details()) or sync.poll() is not None)
        finally:
            sync.kill()
            sync.wait()
        # The killed process's session, and the lock it held on the pass, end with it.
        await _until_locks_released(pool)
        fake.clear_failures()
        asked_before = len(details())

        resumed = await asyncio.to_thread(_cli, "sync", env=env)
        assert resumed.returncode == 0, resumed.stderr
        assert f"resumed_from={PAGE}" in resumed.stdout
        assert "clients=250" in resumed.stdout
        # The page saved before the kill was not read again.
        assert min(details()[asked_before:]) > PAGE
    assert await pool.fetchval("SELECT count(*) FROM whmcs_clients") == 250


async def _until(check: Callable[[], bool], timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise TimeoutError
        await asyncio.sleep(0.05)


async def _until_locks_released(pool: asyncpg.Pool, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    query = """
        SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
        WHERE l.locktype = 'advisory' AND d.datname = current_database()
    """
    while await pool.fetchval(query):
        if loop.time() > deadline:
            raise TimeoutError
        await asyncio.sleep(0.05)
