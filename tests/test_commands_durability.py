"""Commands and messages between conversations, exactly once with a real server process
killed (SIGKILL) while the work is in flight. The server runs the test-only flows
(tests/serve_with_test_flows.py, one process)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import pytest

from bot.fakes import payloads as wa_payloads
from bot.fakes.cloud_api import FakeCloudAPI
from tests.billing_fixture import JUAN_WA, bulk_wa_id
from tests.harness import APP_SECRET, PHONE_ID, TOKEN, outbox_id_of, text_of
from tests.procs import ServerProcess, free_port, server_env
from tests.test_commands import HELP_PAGE_UPGRADE, ORDER, enter_probe
from tests.test_durability import deliver_like_meta

SERVE_WITH_TEST_FLOWS = ("tests.serve_with_test_flows",)


async def until(condition_name: str, check: Callable[[], bool], timeout: float) -> None:
    """Until `check()` is true; TimeoutError naming the condition after `timeout` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if check():
            return
        if loop.time() > deadline:
            raise TimeoutError(f"{condition_name}: not after {timeout}s")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def fake_meta_and_server(
    database_url: str, log: Path, **env: str
) -> AsyncIterator[tuple[FakeCloudAPI, ServerProcess]]:
    """The fake Cloud API, and a (not yet started) server with the test-only flows
    whose webhook it posts to, as one process."""
    async with FakeCloudAPI(
        phone_id=PHONE_ID, token=TOKEN, app_secret=APP_SECRET, statuses=("sent",)
    ) as fake:
        port = free_port()
        fake.webhook_url = f"http://127.0.0.1:{port}/webhook"
        settings = server_env(database_url, fake.base_url, port, WORKER_PROCESSES="0", **env)
        server = ServerProcess(settings, log, command=SERVE_WITH_TEST_FLOWS)
        try:
            yield fake, server
        finally:
            server.stop()


def texts_to(fake: FakeCloudAPI, wa_id: str) -> list[str]:
    return [text_of(m) for m in fake.sent if m.to == wa_id]


@pytest.mark.timeout(180)
async def test_killed_between_the_billing_call_and_its_record_the_command_acts_once(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    marker = tmp_path / "billing-answered.json"
    async with fake_meta_and_server(
        database_url,
        tmp_path / "server.log",
        COMMAND_STALLED_SECONDS="2",
        DISPATCH_IDLE_SECONDS="1",
        PAUSE_AFTER_BILLING=str(marker),
        # The kill may also catch a reply on its way to WhatsApp (the "one moment" before
        # the billing call): left `sending`, it holds the customer's later messages until
        # it is settled as ambiguous — after this, not the default 5 minutes.
        AMBIGUOUS_AFTER_SECONDS="3",
    ) as (fake, server):
        await server.start()
        await enter_probe(pool, JUAN_WA)
        for text in (ORDER, "si"):
            _, status = await fake.send_inbound(wa_payloads.inbound_text(JUAN_WA, text))
            assert status == 200
        await until("the billing system answered", marker.exists, timeout=30)
        answered = json.loads(marker.read_text())
        # In flight: the billing system acted, the outcome is not recorded.
        command = await pool.fetchrow("SELECT key, status, attempts FROM commands")
        assert (command["status"], command["attempts"]) == ("running", 1)
        assert command["key"] == answered["request_id"]
        assert await pool.fetchval("SELECT count(*) FROM inbox WHERE wamid LIKE 'command:%'") == 0
        server.kill()

        await server.start()
        await until(
            "the outcome told",
            lambda: any(t.startswith("resultado") for t in texts_to(fake, JUAN_WA)),
            timeout=60,
        )
        await until("the last reply", lambda: fake.statuses_pending == 0, timeout=10)
    # Asked again with the same key, the billing system answered with the first result.
    row = await pool.fetchrow("SELECT status, attempts, result FROM commands")
    assert (row["status"], row["attempts"]) == ("done", 2)
    assert row["result"]["invoice_id"] == answered["invoice_id"]
    invoices = await pool.fetch(
        "SELECT id, total FROM billing_invoices WHERE request_id = $1", answered["request_id"]
    )
    assert [(i["id"], i["total"]) for i in invoices] == [
        (answered["invoice_id"], HELP_PAGE_UPGRADE)
    ]
    told = [t for t in texts_to(fake, JUAN_WA) if t.startswith("resultado")]
    assert len(told) == 1 and told[0].startswith(f"resultado done None {answered['invoice_id']}")
    assert await pool.fetchval("SELECT count(*) FROM inbox WHERE wamid LIKE 'command:%'") == 1


@pytest.mark.timeout(240)
async def test_messages_between_conversations_arrive_once_in_order_across_kills(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    pairs = 150
    senders = [bulk_wa_id(3000 + n) for n in range(pairs)]
    hearers = [bulk_wa_id(5000 + n) for n in range(pairs)]
    async with fake_meta_and_server(
        database_url, tmp_path / "server.log", AMBIGUOUS_AFTER_SECONDS="5"
    ) as (fake, server):
        await server.start()
        ids = {w: await enter_probe(pool, w) for w in senders + hearers}
        # Each hearer is in the middle of something (and has its 24 h window open).
        await deliver_like_meta(
            [fake.webhook_url], [[wa_payloads.inbound_text(w, "nota")] for w in hearers]
        )
        await until("every hearer asked for a note", lambda: len(fake.sent) >= pairs, 60)

        def heard() -> int:
            return sum(1 for m in fake.sent if text_of(m).startswith("aviso hola"))

        sending = asyncio.create_task(
            deliver_like_meta(
                [fake.webhook_url],
                [
                    [wa_payloads.inbound_text(s, f"avisar {ids[h]}")]
                    for s, h in zip(senders, hearers, strict=True)
                ],
            )
        )
        await until("some signals heard", lambda: heard() >= 1, timeout=60)
        server.kill()
        killed_at = heard()
        assert killed_at < pairs, "every signal was heard before the kill"
        await server.start()
        await sending
        await until("every signal heard", lambda: heard() >= pairs, timeout=90)
        await deliver_like_meta(
            [fake.webhook_url], [[wa_payloads.inbound_text(w, "mi nota")] for w in hearers]
        )
        await until(
            "every hearer back at the start",
            lambda: sum(1 for m in fake.sent if text_of(m) == "probe lista") >= pairs,
            timeout=90,
        )
        await fake.wait_statuses_delivered(timeout=30)
    print(f"killed with {killed_at} of {pairs} signals heard")
    doubles = {k: v for k, v in Counter(outbox_id_of(m) for m in fake.sent).items() if v > 1}
    assert not doubles, f"sent more than once: {doubles}"
    for sender, hearer in zip(senders, hearers, strict=True):
        assert texts_to(fake, hearer) == [
            "escriba su nota",
            f"aviso hola de {ids[sender]}",
            "nota: mi nota",
            "probe lista",
        ], hearer
    signals = await pool.fetch("SELECT wamid, status FROM inbox WHERE wamid LIKE 'signal:%'")
    assert len(signals) == pairs and {s["status"] for s in signals} == {"done"}
