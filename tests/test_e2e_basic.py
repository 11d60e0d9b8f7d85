"""Signed webhooks into a running server; replies read from the fake Cloud API."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from bot.fakes import payloads as wa_payloads
from flows.catalog import default_catalog
from tests.billing_fixture import JUAN_WA, MARIA_WA, UNKNOWN_WA
from tests.harness import PHONE_ID, Stack, choice_ids, outbox_id_of, text_of

CATALOG = default_catalog()
PANEL = "https://www.paneldecliente.com/clientarea.php?action=details"


async def test_greeting_gets_the_menu(pool: asyncpg.Pool, database_url: str) -> None:
    async with Stack(database_url) as stack:
        await stack.say(JUAN_WA, "Hola!")
        [reply] = await stack.replies(1)
    assert reply.to == JUAN_WA
    assert text_of(reply) == CATALOG.text("menu.body", name="Juan")
    assert choice_ids(reply) == [
        "upgrade",
        "transfer",
        "cancel",
        "account",
        "alerts",
        "faq",
        "human",
    ]
    # Our outbox id and the attempt travel as biz_opaque_callback_data.
    outbox_id = await pool.fetchval("SELECT id FROM outbox")
    assert reply.biz_opaque_callback_data == f"{outbox_id}.1"


async def test_list_choice_gets_its_answer(pool: asyncpg.Pool, database_url: str) -> None:
    async with Stack(database_url) as stack:
        await stack.say(MARIA_WA, "buenas tardes")
        await stack.replies(1)
        await stack.tap(MARIA_WA, "faq", "5. Preguntas frecuentes", row=True)
        faq_list = (await stack.replies(2))[1]
        assert "faq:backups" in choice_ids(faq_list)
        await stack.tap(MARIA_WA, "faq:backups", "Backups", row=True)
        replies = await stack.replies(4)
    assert text_of(replies[2]) == CATALOG.text("faq.backups.answer", panel_url=PANEL)
    assert choice_ids(replies[3]) == ["faq", "menu"]


async def test_fuzzy_text_gets_the_right_answer(pool: asyncpg.Pool, database_url: str) -> None:
    async with Stack(database_url) as stack:
        await stack.say(JUAN_WA, "hola")
        await stack.replies(1)
        await stack.say(JUAN_WA, "preguntas frecuntes")
        faq_list = (await stack.replies(2))[1]
        assert text_of(faq_list) == CATALOG.text("faq.body")
        await stack.say(JUAN_WA, "y los backups cuanto tiempo los guardan?")
        answer = (await stack.replies(3))[2]
    assert text_of(answer) == CATALOG.text("faq.backups.answer", panel_url=PANEL)


async def test_unknown_number_gets_the_polite_answer(pool: asyncpg.Pool, database_url: str) -> None:
    async with Stack(database_url) as stack:
        await stack.say(UNKNOWN_WA, "hola, quiero ver mis servicios de juanperez.com.ar")
        [reply] = await stack.replies(1)
    assert text_of(reply) == CATALOG.text("identity.unknown", panel_url=PANEL)
    assert choice_ids(reply) == ["faq", "human"]
    # Nothing of any account in what an unknown number is told.
    sent = str(reply.body)
    for leak in ("Juan", "Perez", "juan@example.com", "Hosting Inicial", "c1"):
        assert leak not in sent


async def test_same_webhook_five_times_gives_one_reply(
    pool: asyncpg.Pool, database_url: str
) -> None:
    item = wa_payloads.inbound_text(JUAN_WA, "hola")
    async with Stack(database_url) as stack:
        payload = wa_payloads.messages_update(PHONE_ID, [item])
        first = await stack.post(payload)
        rest = await asyncio.gather(*(stack.post(payload) for _ in range(4)))
        assert [first, *rest] == [200] * 5
        await stack.replies(1)
        await asyncio.sleep(1.0)  # time for any duplicate to have been sent
        assert len(stack.fake.sent) == 1
    assert await pool.fetchval("SELECT count(*) FROM inbox") == 1
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 1


async def test_concurrent_duplicates_give_one_reply(pool: asyncpg.Pool, database_url: str) -> None:
    item = wa_payloads.inbound_text(JUAN_WA, "hola")
    async with Stack(database_url) as stack:
        payload = wa_payloads.messages_update(PHONE_ID, [item])
        statuses = await asyncio.gather(*(stack.post(payload) for _ in range(5)))
        assert statuses == [200] * 5
        await stack.replies(1)
        await asyncio.sleep(1.0)
        assert len(stack.fake.sent) == 1


async def test_ten_concurrent_messages_answered_in_order(
    pool: asyncpg.Pool, database_url: str
) -> None:
    """Each reply answers one message; replies leave in the order messages arrived."""
    # Words that each get exactly one reply (the menu), whatever the state.
    texts = [
        "hola",
        "menu",
        "inicio",
        "buenas",
        "menu",
        "hola",
        "inicio",
        "menu",
        "buen dia",
        "menu",
    ]
    items = [wa_payloads.inbound_text(JUAN_WA, t) for t in texts]
    async with Stack(database_url) as stack:
        statuses = await asyncio.gather(*(stack.send(i) for i in items))
        assert statuses == [200] * 10
        await stack.replies(10)
        await asyncio.sleep(0.5)
        sent = list(stack.fake.sent)
    arrival = [r["wamid"] for r in await pool.fetch("SELECT wamid FROM inbox ORDER BY id")]
    answered = await pool.fetch(
        "SELECT o.id::text AS outbox_id, i.wamid FROM outbox o JOIN inbox i ON i.id = o.inbox_id"
    )
    wamid_of = {r["outbox_id"]: r["wamid"] for r in answered}
    replied_to = [wamid_of[outbox_id_of(m)] for m in sent]
    assert replied_to == arrival
    assert len(sent) == 10


async def test_batch_of_fifty_customers_gives_fifty_replies(
    pool: asyncpg.Pool, database_url: str
) -> None:
    from store.billing_local import LocalBilling
    from tests.billing_fixture import bulk_clients, bulk_wa_id

    await LocalBilling(pool).load(bulk_clients(50))
    items = [wa_payloads.inbound_text(bulk_wa_id(1000 + i), "hola") for i in range(50)]
    async with Stack(database_url) as stack:
        assert await stack.send(*items) == 200
        replies = await stack.replies(50)
        await asyncio.sleep(0.5)
        assert len(stack.fake.sent) == 50
    assert sorted(r.to for r in replies) == sorted(i.message["from"] for i in items)
    for r in replies:
        assert text_of(r).startswith(CATALOG.text("menu.body", name="Cliente")[:10])


async def test_every_reply_arrives_with_a_fifth_of_sends_failing(
    pool: asyncpg.Pool, database_url: str
) -> None:
    """Webhook to reply through a Cloud API that fails 20 % of sends with transient
    errors: every customer still gets exactly one menu."""
    from store.billing_local import LocalBilling
    from tests.billing_fixture import bulk_clients, bulk_wa_id

    await LocalBilling(pool).load(bulk_clients(50))
    items = [wa_payloads.inbound_text(bulk_wa_id(1000 + i), "hola") for i in range(50)]
    # Its own injected failures are the subject (a `failed` status Meta sends after
    # accepting would fail a row rightly): no random Meta habits.
    async with Stack(database_url, send_max_attempts=30, awkward=None) as stack:
        stack.fake.set_failure_rate(0.2, codes=(131000, 130429, 131016, 131057, 503), seed=5)
        for item in items:
            assert await stack.send(item) == 200
        replies = await stack.replies(50, timeout=60)
        await asyncio.sleep(0.5)
        assert len(stack.fake.failed_sends) > 3  # failures really happened
        assert len(stack.fake.sent) == 50
    assert sorted(r.to for r in replies) == sorted(i.message["from"] for i in items)
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE status = 'failed'") == 0


class _BrokenBilling:
    """A billing backend that fails the way a real one can."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def find_client_by_phone(self, wa_id: str) -> object:
        raise self.error

    async def get_client(self, client_id: str) -> object:
        raise self.error

    async def list_services(self, client_id: str) -> object:
        raise self.error


async def test_billing_outage_gets_an_apology(
    pool: asyncpg.Pool, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot import app as app_module
    from flows.billing import BillingError

    monkeypatch.setattr(
        app_module, "make_billing", lambda s, p: _BrokenBilling(BillingError("down"))
    )
    async with Stack(database_url) as stack:
        await stack.say(JUAN_WA, "hola")
        [reply] = await stack.replies(1)
    assert text_of(reply) == CATALOG.text("common.error")
    assert await pool.fetchval("SELECT status FROM inbox") == "done"


async def test_a_message_that_keeps_failing_still_gets_an_answer(
    pool: asyncpg.Pool, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot import app as app_module

    monkeypatch.setattr(
        app_module, "make_billing", lambda s, p: _BrokenBilling(RuntimeError("bug"))
    )
    async with Stack(database_url, inbox_max_attempts=2) as stack:
        await stack.say(JUAN_WA, "hola")
        [reply] = await stack.replies(1, timeout=20)
        # Other customers are not held up by it.
    assert text_of(reply) == CATALOG.text("common.error")
    row = await pool.fetchrow("SELECT status, attempts, last_error FROM inbox")
    assert (row["status"], row["attempts"]) == ("failed", 2)
    assert "RuntimeError: bug" in row["last_error"]
