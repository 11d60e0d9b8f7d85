"""`python -m bot broadcast` and `python -m bot alerts status` as real processes against
a running server and the fake Cloud API (issue 11): a broadcast reaches each eligible
client of its segment exactly once — even killed half-way and run again with the same id —
skips the opted-out and the unreachable with the reason, and its report adds up."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from bot.fakes.cloud_api import FakeCloudAPI
from store.billing_local import LocalBilling
from tests.billing_fixture import JUAN_WA, MARIA_WA, bulk_clients, bulk_wa_id
from tests.harness import APP_SECRET, PHONE_ID, TOKEN, Stack, awkward_fake_options
from tests.procs import ROOT, ServerProcess, free_port, server_env

TEMPLATE = "aviso_mantenimiento"  # an approved template with one parameter


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


async def cli(database_url: str, *args: str, timeout: float = 120) -> Ran:
    """`python -m bot …` to its end, while this event loop (and a Stack on it) runs on."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WHATSAPP_", "DATABASE_"))}
    env.update(DATABASE_URL=database_url, LOG_LEVEL="WARNING")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(), err.decode())


def spawn(database_url: str, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WHATSAPP_", "DATABASE_"))}
    env.update(DATABASE_URL=database_url, LOG_LEVEL="WARNING")
    return subprocess.Popen(
        [sys.executable, "-m", "bot", *args], cwd=ROOT, env=env, text=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


async def test_a_broadcast_to_a_segment_skips_the_opted_out_and_reports(
    pool: asyncpg.Pool, database_url: str
) -> None:
    """tests/billing_fixture: Juan (c1) and María (c2) have active services of p1 and p0;
    Pedro Uno (c3) and Pedro Dos (c4) share one number and have none. María opted out."""
    await pool.execute("INSERT INTO alert_preferences (client_id, enabled) VALUES ('c2', false)")
    async with Stack(database_url, awkward=None) as stack:
        stack.fake.templates[TEMPLATE] = (1, 0)
        dry = await cli(database_url, "broadcast", "--template", TEMPLATE, "--segment", "all",
                  "--param", "{name}", "--dry-run", "--json")  # fmt: skip
        assert dry.returncode == 0, dry.stderr
        assert await pool.fetchval("SELECT count(*) FROM outbox") == 0  # a dry run sends nothing
        done = await cli(database_url, "broadcast", "--template", TEMPLATE, "--segment", "all",
                   "--param", "{name}", "--id", "b1", "--json")  # fmt: skip
        assert done.returncode == 0, done.stderr
        again = await cli(database_url, "broadcast", "--template", TEMPLATE, "--segment", "all",
                    "--param", "{name}", "--id", "b1", "--json")  # fmt: skip
        await stack.replies(2)
        await asyncio.sleep(0.5)  # anything more would be a second message
        sent = list(stack.fake.sent)
    report, repeat, planned = (
        json.loads(done.stdout),
        json.loads(again.stdout),
        json.loads(dry.stdout),
    )
    # Juan, and one of the Pedros (the other shares his number); María opted out.
    assert Counter(m.to for m in sent) == Counter({JUAN_WA: 1, "5493515550000": 1})
    juan = next(m for m in sent if m.to == JUAN_WA)
    assert juan.body["template"]["components"][0]["parameters"][0]["text"] == "Juan"
    assert report["planned"] == 4 and report["queued"] == 2
    assert report["skipped"] == {"opted_out": 1, "same_number": 1}
    assert report["sent"] + sum(report["failed"].values()) + report["waiting"] == 2
    assert repeat["queued"] == 2 and repeat["skipped"] == report["skipped"]
    assert (planned["queued"], planned["skipped"]) == (2, report["skipped"])
    # Another broadcast under a used id is refused, not mixed in.
    other = await cli(database_url, "broadcast", "--template", TEMPLATE, "--segment", "unpaid",
                "--id", "b1")  # fmt: skip
    assert other.returncode == 2 and "b1" in other.stderr


async def test_segments_pick_the_right_clients(pool: asyncpg.Pool, database_url: str) -> None:
    """p1: Juan (s1) and María (s2) active; p0: Juan's radio, suspended; unpaid: Juan (i2)."""
    cases = {"product:p1": 2, "product:p0": 0, "unpaid": 1, "server:none": 0}
    for segment, expected in cases.items():
        run = await cli(database_url, "broadcast", "--template", TEMPLATE, "--segment", segment,
                  "--dry-run", "--json")  # fmt: skip
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout)["planned"] == expected, segment
    bad = await cli(database_url, "broadcast", "--template", TEMPLATE, "--segment", "everyone")
    assert bad.returncode == 2 and "segment" in bad.stderr


@pytest.mark.timeout(300)
async def test_a_broadcast_killed_half_way_and_run_again_reaches_each_client_once(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    await pool.execute("TRUNCATE billing_clients CASCADE")
    await LocalBilling(pool).load(bulk_clients(5000))
    opted_out = [f"load{1000 + n}" for n in range(0, 5000, 50)]  # 100 clients
    await pool.executemany(
        "INSERT INTO alert_preferences (client_id, enabled) VALUES ($1, false)",
        [(c,) for c in opted_out],
    )
    args = ("broadcast", "--template", TEMPLATE, "--segment", "all", "--param", "{name}",
            "--id", "big", "--json")  # fmt: skip
    async with FakeCloudAPI(
        phone_id=PHONE_ID, token=TOKEN, app_secret=APP_SECRET, statuses=("sent",),
        templates={TEMPLATE: (1, 0)}, **awkward_fake_options(),
    ) as fake:  # fmt: skip
        port = free_port()
        fake.webhook_url = f"http://127.0.0.1:{port}/webhook"
        server = ServerProcess(
            server_env(database_url, fake.base_url, port, AMBIGUOUS_AFTER_SECONDS="20"),
            tmp_path / "server.log",
        )
        await server.start()
        try:
            first = spawn(database_url, *args)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 120
            recorded = 0
            while recorded < 1500:
                recorded = await pool.fetchval("SELECT count(*) FROM broadcast_recipients")
                assert first.poll() is None, f"the broadcast exited with {first.returncode}"
                assert loop.time() < deadline, "the broadcast did not get going"
                await asyncio.sleep(0.01)
            first.kill()
            first.wait(10)
            at_kill = await pool.fetchval("SELECT count(*) FROM broadcast_recipients")
            print(f"broadcast killed with {at_kill} of 5000 clients recorded")
            assert at_kill < 5000, "the kill came after the broadcast was queued"
            again = await cli(database_url, *args, timeout=240)
            assert again.returncode == 0, again.stderr
            loop_deadline = loop.time() + 120
            while len({m.to for m in fake.sent}) < 4900:
                assert loop.time() < loop_deadline, f"{len(fake.sent)} of 4900 sent"
                await asyncio.sleep(0.1)
            await fake.wait_statuses_delivered(timeout=30)
            await asyncio.sleep(1.0)  # would anything be sent twice, given a moment?
        finally:
            server.stop()
    report = json.loads(again.stdout)
    per_number = Counter(m.to for m in fake.sent)
    eligible = {bulk_wa_id(1000 + n) for n in range(5000) if n % 50}
    assert all(n == 1 for n in per_number.values()), "a client got the broadcast twice"
    assert report["planned"] == 5000
    assert report["skipped"] == {"opted_out": 100}
    assert report["queued"] == 4900
    assert report["sent"] + sum(report["failed"].values()) + report["waiting"] == 4900
    # Each eligible client has exactly one outbox row, and every row reached WhatsApp.
    rows = await pool.fetch(
        "SELECT client_id, outbox_id FROM broadcast_recipients WHERE broadcast_id = 'big'"
    )
    assert len(rows) == 5000
    assert sum(1 for r in rows if r["outbox_id"] is not None) == 4900
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE purpose = 'broadcast'") == 4900
    assert set(per_number) == eligible


async def test_alerts_status_shows_each_alert_state(pool: asyncpg.Pool, database_url: str) -> None:
    await pool.execute("INSERT INTO alert_preferences (client_id, enabled) VALUES ('c2', false)")
    await pool.execute(
        """
        INSERT INTO events (id, type, occurred_at, client_id, data) VALUES
            ('s1', 'invoice.created', now(), 'c1', '{"invoice_id": "i2"}'),
            ('s2', 'invoice.created', now(), 'c2', '{"invoice_id": "x"}')
        """
    )
    async with Stack(database_url, awkward=None) as stack:
        await stack.replies(1, to=JUAN_WA)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while await pool.fetchval("SELECT count(*) FROM outbox WHERE status = 'sent'") < 1:
            assert loop.time() < deadline
            await asyncio.sleep(0.05)
        everything = await cli(database_url, "alerts", "status")
        mine = await cli(database_url, "alerts", "status", "--client", "c2", "--since", "1h")
        bad = await cli(database_url, "alerts", "status", "--since", "whenever")
    lines = everything.stdout.splitlines()
    assert any("s1" in line and "sent" in line and JUAN_WA in line for line in lines), lines
    assert any("s2" in line and "skipped" in line and "alerts_off" in line for line in lines)
    assert [line for line in mine.stdout.splitlines() if line] == [
        line for line in lines if " s2 " in line
    ]
    assert MARIA_WA not in everything.stdout  # skipped: never addressed
    assert bad.returncode == 2
