"""The outbox sender against the fake Cloud API over HTTP: retries, permanent errors,
ambiguous outcomes, the 24 h window, limits, pacing and statuses."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from bot.fakes import payloads as wa_payloads
from bot.fakes.cloud_api import FakeCloudAPI
from bot.listener import Signals
from bot.sender import Sender, Transport, backoff
from bot.wa_client import CloudAPI
from flows.outbound import Button, Buttons, Message, Template, Text, to_json
from store import turns
from store.inbox import Status, apply_statuses
from tests.harness import PHONE_ID, TOKEN, Stack, make_settings, outbox_id_of, wait_rows


@contextlib.asynccontextmanager
async def running_sender(
    pool: asyncpg.Pool,
    database_url: str,
    fake: FakeCloudAPI,
    wrap: Callable[[Transport], Transport] = lambda cloud: cloud,
    **changes: Any,
) -> AsyncIterator[Sender]:
    settings = make_settings(database_url, fake.base_url, **changes)
    cloud = CloudAPI(
        api_url=fake.base_url,
        phone_id=PHONE_ID,
        token=TOKEN,
        api_version=settings.whatsapp_api_version,
        timeout=settings.send_timeout_seconds,
        max_connections=settings.send_concurrency,
    )
    signals = Signals(pool)
    await signals.start()
    sender = Sender(pool, settings, wrap(cloud), signals)
    task = asyncio.create_task(sender.run())
    try:
        yield sender
    finally:
        sender.stop()
        await asyncio.wait_for(task, 20)
        await cloud.close()
        await signals.stop()


async def queue(
    pool: asyncpg.Pool,
    recipient: str,
    messages: list[Any],
    *,
    template: Template | None = None,
    last_inbound: datetime | None = None,
) -> int:
    """Queue messages for `recipient` (a conversation whose window opened at
    `last_inbound`, now by default); returns the conversation id."""
    async with pool.acquire() as conn, conn.transaction():
        conv = await turns.lock_conversation(
            conn,
            recipient,
            wa_id=recipient,
            user_id=None,
            profile_name=None,
            inbound_at=last_inbound or datetime.now(UTC),
        )
        await turns.queue_replies(
            conn,
            conversation_id=conv.id,
            inbox_id=None,
            recipient=recipient,
            replies=[
                turns.OutgoingRow(to_json(m), to_json(template) if template else None)
                for m in messages
            ],
        )
        return conv.id


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    """Retries spread out (no thundering herd after an outage) and never wait past the cap."""
    for attempt, ceiling in ((1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (20, 300.0)):
        delays = [backoff(attempt) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), attempt
        assert len(set(delays)) > 150, attempt  # jittered, not one fixed delay
    assert max(backoff(50, base=30.0, cap=900.0) for _ in range(50)) <= 900.0


def fake_api() -> FakeCloudAPI:
    return FakeCloudAPI(
        phone_id=PHONE_ID, token=TOKEN, statuses=(), templates={"aviso_factura": (2, 0)}
    )


async def test_transient_failures_are_retried_until_delivered(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with fake_api() as fake:
        fake.set_failure_rate(0.2, codes=(131000, 130429, 131016, 131057, 503), seed=11)
        for n in range(100):
            await queue(pool, f"5491100{n:05d}", [Text(f"uno {n}"), Text(f"dos {n}")])
        async with running_sender(pool, database_url, fake, send_max_attempts=30):
            await wait_rows(pool, "status = 'accepted'", 200, timeout=90)
        assert len(fake.failed_sends) > 10  # failures really happened
    assert len(fake.sent) == 200
    assert len({outbox_id_of(m) for m in fake.sent}) == 200
    # Per recipient, the second message left after the first despite the retries.
    order: dict[str, list[str]] = {}
    for m in fake.sent:
        order.setdefault(m.to, []).append(m.body["text"]["body"].split()[0])
    assert all(v == ["uno", "dos"] for v in order.values())


async def test_permanent_error_fails_without_retry(pool: asyncpg.Pool, database_url: str) -> None:
    async with fake_api() as fake:
        fake.fail_next(131026, to="5491100000001")
        await queue(pool, "5491100000001", [Text("hola")])
        await queue(pool, "5491100000002", [Text("hola")])
        async with running_sender(pool, database_url, fake):
            await wait_rows(pool, "status IN ('failed', 'accepted')", 2)
            await asyncio.sleep(0.5)
        attempts = [f for f in fake.failed_sends if f.to == "5491100000001"]
    row = await pool.fetchrow("SELECT status, error_code, attempts FROM outbox ORDER BY id LIMIT 1")
    assert (row["status"], row["error_code"], row["attempts"]) == ("failed", 131026, 1)
    assert len(attempts) == 1


async def test_closed_window_uses_the_template_or_fails_visibly(
    pool: asyncpg.Pool, database_url: str
) -> None:
    old = datetime.now(UTC) - timedelta(hours=25)
    template = Template("aviso_factura", "es", ("Juan", "F-1"))
    async with fake_api() as fake:
        await queue(
            pool, "5491100000001", [Text("Su factura F-1")], template=template, last_inbound=old
        )
        await queue(pool, "5491100000002", [Text("sin plantilla")], last_inbound=old)
        async with running_sender(pool, database_url, fake):
            await wait_rows(pool, "status IN ('failed', 'accepted')", 2)
    rows = await pool.fetch("SELECT recipient, status, sent_as, error_code FROM outbox ORDER BY id")
    assert [(r["status"], r["sent_as"]) for r in rows] == [
        ("accepted", "template"),
        ("failed", None),
    ]
    assert rows[1]["error_code"] == 131047
    [sent] = fake.sent
    assert sent.type == "template"
    assert sent.body["template"]["name"] == "aviso_factura"


async def test_meta_saying_window_closed_resends_as_template(
    pool: asyncpg.Pool, database_url: str
) -> None:
    template = Template("aviso_factura", "es", ("Juan", "F-1"))
    async with fake_api() as fake:
        fake.fail_next(131047, to="5491100000001")
        await queue(pool, "5491100000001", [Text("hola")], template=template)
        async with running_sender(pool, database_url, fake):
            await wait_rows(pool, "status = 'accepted'", 1)
    assert [m.type for m in fake.sent] == ["template"]
    assert await pool.fetchval("SELECT sent_as FROM outbox") == "template"


async def test_limits_are_checked_before_anything_leaves(
    pool: asyncpg.Pool, database_url: str
) -> None:
    four = Buttons("elija", tuple(Button(str(i), f"op {i}") for i in range(4)))
    async with fake_api() as fake:
        await queue(pool, "5491100000001", [four, Text("x" * 4097), Text("ok")])
        async with running_sender(pool, database_url, fake):
            await wait_rows(pool, "status IN ('failed', 'accepted')", 3)
        assert fake.failed_sends == []
        assert [m.body["text"]["body"] for m in fake.sent] == ["ok"]
    errors = await pool.fetch("SELECT error_message FROM outbox WHERE status = 'failed'")
    assert len(errors) == 2
    assert all("WhatsApp limits" in e["error_message"] for e in errors)


async def test_ambiguous_timeout_is_not_resent_and_a_status_settles_it(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with fake_api() as fake:
        fake.set_delay(3.0)  # the fake records the send, then answers after our timeout
        await queue(pool, "5491100000001", [Text("hola")])
        async with running_sender(pool, database_url, fake, send_timeout_seconds=0.5):
            await asyncio.sleep(2.0)
            assert len(fake.sent) == 1
            row = await pool.fetchrow("SELECT status, wamid, error_message FROM outbox")
            assert row["status"] == "sending"
            assert "unknown" in row["error_message"]
            # Meta's "sent" status echoes our id: the row is settled, never re-sent.
            async with pool.acquire() as conn:
                await apply_statuses(
                    conn, [Status(fake.sent[0].wamid, "sent", 1, None, None, None)]
                )
            await asyncio.sleep(1.0)
        assert len(fake.sent) == 1
    row = await pool.fetchrow("SELECT status, wamid FROM outbox")
    assert (row["status"], row["wamid"]) == ("sent", fake.sent[0].wamid)


async def test_silence_after_an_ambiguous_send_eventually_resends(
    pool: asyncpg.Pool, database_url: str
) -> None:
    """A request that never reached Meta produces no status; after the silence it goes."""
    async with fake_api() as fake:
        await queue(pool, "5491100000001", [Text("hola")])
        # Claimed by a process that died before sending: left `sending` long ago.
        await pool.execute(
            "UPDATE outbox SET status = 'sending', attempts = 1, "
            "claimed_at = now() - interval '1 hour'"
        )
        async with running_sender(pool, database_url, fake, ambiguous_after_seconds=2.0):
            await wait_rows(pool, "status = 'accepted'", 1, timeout=15)
    assert len(fake.sent) == 1


class _Unforeseen:
    """Sends through `cloud`, except that its first `failures` sends raise what no
    handler foresees (as pywa does on a 200 whose body is not JSON)."""

    def __init__(self, cloud: Transport, failures: int) -> None:
        self.cloud = cloud
        self.failures = failures

    async def send(self, to: str, message: Message | Template, *, tracker: str) -> str:
        if self.failures > 0:
            self.failures -= 1
            raise ValueError("Expecting value: line 1 column 1 (char 0)")
        return await self.cloud.send(to, message, tracker=tracker)


async def test_an_unforeseen_error_is_recorded_and_ends_when_attempts_do(
    pool: asyncpg.Pool, database_url: str
) -> None:
    """The request may have left: the row stays `sending` with the error (not re-sent
    until the silence says Meta never got it), and fails once its attempts are spent."""
    async with fake_api() as fake:
        await queue(pool, "5491100000001", [Text("hola")])
        async with running_sender(
            pool,
            database_url,
            fake,
            lambda cloud: _Unforeseen(cloud, failures=2),
            send_max_attempts=2,
            ambiguous_after_seconds=1.0,
        ):
            await wait_rows(pool, "status = 'sending' AND error_message LIKE 'unexpected%'", 1)
            await wait_rows(pool, "status = 'failed'", 1, timeout=15)
        assert fake.sent == []
    row = await pool.fetchrow("SELECT attempts, error_message FROM outbox")
    assert row["attempts"] == 2
    assert "Expecting value" in row["error_message"]


async def test_pair_limit_pauses_only_that_recipient(pool: asyncpg.Pool, database_url: str) -> None:
    async with fake_api() as fake:
        fake.fail_next(131056, to="5491100000001")
        await queue(pool, "5491100000001", [Text("a1"), Text("a2")])
        await queue(pool, "5491100000002", [Text("b1"), Text("b2")])
        async with running_sender(pool, database_url, fake, recipient_interval_seconds=1.0):
            await wait_rows(pool, "status = 'accepted'", 4, timeout=30)
    first_a = next(m for m in fake.sent if m.to == "5491100000001")
    b_sends = [m for m in fake.sent if m.to == "5491100000002"]
    # The other recipient was not held back by the pause.
    assert all(m.received_at < first_a.received_at for m in b_sends)
    assert [m.body["text"]["body"] for m in fake.sent if m.to == "5491100000001"] == ["a1", "a2"]


async def test_per_recipient_pacing(pool: asyncpg.Pool, database_url: str) -> None:
    async with fake_api() as fake:
        await queue(pool, "5491100000001", [Text(f"m{i}") for i in range(4)])
        async with running_sender(
            pool, database_url, fake, recipient_burst=2, recipient_interval_seconds=1.0
        ):
            await wait_rows(pool, "status = 'accepted'", 4, timeout=20)
    times = [m.received_at for m in fake.sent]
    # Two may go at once (the burst), then one per interval.
    assert (times[2] - times[0]).total_seconds() >= 0.9
    assert (times[3] - times[2]).total_seconds() >= 0.9


async def test_global_rate_limit(pool: asyncpg.Pool, database_url: str) -> None:
    async with fake_api() as fake:
        for n in range(30):
            await queue(pool, f"5491100{n:05d}", [Text("hola")])
        async with running_sender(pool, database_url, fake, send_rate_per_second=10.0):
            await wait_rows(pool, "status = 'accepted'", 30, timeout=30)
    span = (fake.sent[-1].received_at - fake.sent[0].received_at).total_seconds()
    # 30 messages at 10/s with at most one second of burst: at least ~2 s.
    assert span >= 1.8


async def test_statuses_only_move_forward(pool: asyncpg.Pool, database_url: str) -> None:
    await queue(pool, "5491100000001", [Text("hola")])
    await pool.execute("UPDATE outbox SET status = 'accepted', wamid = 'wamid.A'")
    async with pool.acquire() as conn:
        for status in ("read", "sent", "delivered", "read", "sent"):
            await apply_statuses(conn, [Status("wamid.A", status, None, None, None, None)])
    assert await pool.fetchval("SELECT status FROM outbox") == "read"


async def test_status_webhooks_update_the_outbox_end_to_end(
    pool: asyncpg.Pool, database_url: str
) -> None:
    # Exact statuses are the subject: no random Meta habits (awkward=None).
    async with Stack(database_url, statuses=("sent", "delivered", "read"), awkward=None) as stack:
        await stack.say("5491155551234", "hola")
        await stack.replies(1)
        await stack.fake.wait_statuses_delivered(timeout=10)
        # Out of order and repeated, from Meta: nothing moves back.
        [sent] = stack.fake.sent
        late = wa_payloads.statuses_update(
            PHONE_ID,
            [
                wa_payloads.status_item(
                    sent.wamid,
                    "sent",
                    sent.to,
                    biz_opaque_callback_data=sent.biz_opaque_callback_data,
                )
            ],
        )
        assert await stack.post(late) == 200
    assert await pool.fetchval("SELECT status FROM outbox") == "read"


@pytest.mark.parametrize("failure", ["failed_status_transient", "failed_status_permanent"])
async def test_failure_reported_after_acceptance(
    pool: asyncpg.Pool, database_url: str, failure: str
) -> None:
    await queue(pool, "5491100000001", [Text("hola")])
    await pool.execute("UPDATE outbox SET status = 'accepted', wamid = 'wamid.A', attempts = 1")
    code = 131000 if failure.endswith("transient") else 131026
    async with pool.acquire() as conn:
        await apply_statuses(conn, [Status("wamid.A", "failed", 1, None, code, "x")])
    row = await pool.fetchrow("SELECT status, error_code, wamid FROM outbox")
    if code == 131000:
        assert (row["status"], row["wamid"]) == ("pending", None)  # Meta says not delivered
    else:
        assert (row["status"], row["error_code"]) == ("failed", 131026)


async def test_a_failed_status_before_the_acceptance_is_written_keeps_the_message_queued(
    pool: asyncpg.Pool,
) -> None:
    """Meta can report a send `failed` before our own record of its acceptance is written
    (statuses are that fast, results are written in batches): the late acceptance must not
    mark accepted a message the failure queued again."""
    from store import outbox

    await queue(pool, "5491100000001", [Text("hola")])
    await pool.execute("UPDATE outbox SET status = 'sending', attempts = 1")
    row_id = await pool.fetchval("SELECT id FROM outbox")
    async with pool.acquire() as conn:
        await apply_statuses(conn, [Status("wamid.A", "failed", row_id, None, 131000, "x")])
        await outbox.record(conn, [outbox.Accepted(row_id, "wamid.A", "message")])
    row = await pool.fetchrow("SELECT status, wamid FROM outbox")
    assert (row["status"], row["wamid"]) == ("pending", None)
