"""Alerts under SIGKILL (issue 11): 10,000 billing events for 2,000 clients posted to a
real `python -m bot serve`, killed mid-way with events unsettled and sends in flight,
restarted: every event alerted exactly once, in order per client, and WhatsApp's pair
limit (RECIPIENT_BURST, RECIPIENT_INTERVAL_SECONDS) never exceeded at the fake API."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path

import asyncpg
import pytest

from bot.fakes.cloud_api import FakeCloudAPI, SentMessage
from store.billing_local import LocalBilling
from tests.billing_fixture import bulk_clients, bulk_wa_id
from tests.event_load import event_bodies, post_events
from tests.harness import APP_SECRET, PHONE_ID, TOKEN, awkward_fake_options, outbox_id_of
from tests.procs import ServerProcess, free_port, server_env

SECRET = "durable-events"
CLIENTS = 2000
PER_CLIENT = 5
BURST = 2
INTERVAL = 0.2


async def until_sent(fake: FakeCloudAPI, count: int, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(fake.sent) < count:
        if loop.time() > deadline:
            raise TimeoutError(f"{len(fake.sent)} of {count} alerts after {timeout}s")
        await asyncio.sleep(0.1)


def pacing_breaches(sent: list[SentMessage]) -> list[str]:
    """Sends to one person beyond the token bucket: at most BURST at once, then one per
    INTERVAL (a little slack for the clocks of two processes)."""
    by_person: dict[str, list[datetime]] = defaultdict(list)
    for m in sent:
        by_person[m.to].append(m.received_at)
    breaches = []
    for person, times in by_person.items():
        times.sort()
        for j in range(len(times)):
            for i in range(j):
                allowed = BURST + (times[j] - times[i]).total_seconds() / INTERVAL + 0.5
                if j - i + 1 > allowed:
                    breaches.append(f"{person}: {j - i + 1} sends in {times[j] - times[i]}")
    return breaches


@pytest.mark.timeout(300)
async def test_ten_thousand_events_killed_mid_way_each_alerted_once(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    await LocalBilling(pool).load(bulk_clients(CLIENTS))
    bodies = event_bodies(CLIENTS, PER_CLIENT)
    assert len(bodies) == CLIENTS * PER_CLIENT == 10_000
    async with FakeCloudAPI(
        phone_id=PHONE_ID, token=TOKEN, app_secret=APP_SECRET, statuses=("sent",),
        **awkward_fake_options(),
    ) as fake:  # fmt: skip
        port = free_port()
        fake.webhook_url = f"http://127.0.0.1:{port}/webhook"
        env = server_env(
            database_url, fake.base_url, port, EVENTS_SECRET=SECRET,
            RECIPIENT_BURST=str(BURST), RECIPIENT_INTERVAL_SECONDS=str(INTERVAL),
            AMBIGUOUS_AFTER_SECONDS="20",
        )  # fmt: skip
        server = ServerProcess(env, tmp_path / "server.log")
        await server.start()
        try:
            posting = asyncio.create_task(post_events(server.url, bodies, SECRET))
            # Kill when events are still unsettled and alerts still unsent (a client's
            # third alert waits for the pair limit): work in flight on both sides.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 120
            while True:
                in_flight = await pool.fetchrow(
                    """
                    SELECT (SELECT count(*) FROM events WHERE processed_at IS NULL)
                               AS unsettled,
                           (SELECT count(*) FROM outbox WHERE status IN ('pending', 'sending'))
                               AS unsent
                    """
                )
                if len(fake.sent) > 2000 and in_flight["unsettled"] and in_flight["unsent"]:
                    break
                assert loop.time() < deadline, f"never in flight: {dict(in_flight)}"
                await asyncio.sleep(0.01)
            server.kill()
            killed_at = len(fake.sent)
            print(f"killed after {killed_at} alerts; in flight: {dict(in_flight)}")
            await server.start()
            await posting
            await until_sent(fake, len(bodies), timeout=180)
            await fake.wait_statuses_delivered(timeout=30)
            await asyncio.sleep(1.0)  # would anything be sent twice, given a moment?
        finally:
            server.stop()
    assert killed_at < len(bodies), "the kill happened after the run had finished"
    # Every event settled once, as one outbox row, and every row sent once.
    rows = await pool.fetch("SELECT id, outcome, outbox_id FROM events")
    assert len(rows) == len(bodies)
    assert Counter(r["outcome"] for r in rows) == Counter({"queued": len(bodies)})
    assert len({r["outbox_id"] for r in rows}) == len(bodies)
    assert await pool.fetchval("SELECT count(*) FROM outbox") == len(bodies)
    sends = Counter(outbox_id_of(m) for m in fake.sent)
    assert not {k: v for k, v in sends.items() if v > 1}, "an alert was sent twice"
    assert set(sends) == {str(r["outbox_id"]) for r in rows}
    # In event order for each client, and never faster than the pair limit.
    order = {str(r["outbox_id"]): r["id"] for r in rows}
    per_client: dict[str, list[int]] = defaultdict(list)
    for m in sorted(fake.sent, key=lambda m: m.seq):
        per_client[m.to].append(int(order[outbox_id_of(m)].rsplit("-", 1)[1]))
    assert all(ns == sorted(ns) for ns in per_client.values())
    assert set(per_client) == {bulk_wa_id(1000 + c) for c in range(CLIENTS)}
    assert pacing_breaches(fake.sent) == []
