"""`python -m bot whmcs …` against the fake WHMCS, as a real process."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import asyncpg

from bot.fakes.whmcs import FakeWhmcs
from tests.billing_fixture import BILLING
from tests.procs import ROOT


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
    async with FakeWhmcs(BILLING) as fake:
        upgrades = tmp_path / "whmcs_upgrades.toml"
        upgrades.write_text(fake.upgrades_toml(), encoding="utf-8")
        env = dict(
            os.environ,
            DATABASE_URL=database_url,
            LOG_FORMAT="text",
            BILLING_BACKEND="whmcs",
            WHMCS_URL=fake.base_url,
            WHMCS_IDENTIFIER=fake.identifier,
            WHMCS_SECRET=fake.secret,
            WHMCS_UPGRADES_FILE=str(upgrades),
        )
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
