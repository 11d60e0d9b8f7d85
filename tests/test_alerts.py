"""Billing events become WhatsApp alerts (issue 11), over a running server on the local
backend with tests/billing_fixture.BILLING: Juan (c1, WhatsApp 5491155551234) has the
hosting juanperez.com.ar (s1), the suspended radio.juanperez.com.ar (s3) with invoice i2
of 5.00 unpaid, due 2026-06-01, and the domain juanperez.com.ar (d1).

What each alert must say comes from the help page "Alertas por whatsapp" and SPEC §3:
the invoice alert carries the link to pay it, the payment alert the amount, the password
alert what to do if it was not them; outside the customer's 24 h window only an approved
template may go.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from bot.alerts import AlertWorker
from bot.fakes.cloud_api import SentMessage
from bot.listener import Signals
from bot.signatures import sign
from flows.alerts import ALERT_TYPES, catalog_key
from flows.billing import BillingUnavailable
from flows.catalog import default_catalog
from store.billing_local import LocalBilling
from tests.billing_fixture import JUAN_WA
from tests.harness import Stack, make_settings, outbox_id_of, text_of

SECRET = "alerts-test-secret"
PANEL = "https://www.paneldecliente.com"


# Each event type with the data a billing system sends, and what the customer must read.
# Invoice events send ids only where a backend may (the alert looks the rest up).
CASES: dict[str, tuple[dict[str, Any], list[str]]] = {
    "client.created": ({}, ["Juan", f"{PANEL}/clientarea.php"]),
    # What to do if it was not them: a way to make a new password, and a person.
    "client.password_changed": ({}, ["clave", "no fue usted", "password/reset", "asesor"]),
    "invoice.created": ({"invoice_id": "i2"}, ["i2", "5,00", "1/6/2026", "viewinvoice.php?id=i2"]),
    "client.updated": ({"changed": ["email"]}, ["datos", "action=details"]),
    "invoice.cancelled": ({"invoice_id": "i2", "total": "5.00"}, ["i2", "5,00", "anul"]),
    "invoice.paid": ({"invoice_id": "i1"}, ["i1", "100,00", "pago"]),
    "service.suspended": ({"service_id": "s3"}, ["radio.juanperez.com.ar", "suspendido"]),
    "service.unsuspended": ({"service_id": "s3"}, ["radio.juanperez.com.ar", "activo"]),
    "service.terminated": ({"service_id": "s1"}, ["juanperez.com.ar", "baja"]),
    "quote.created": (
        {"quote_id": "Q-7", "total": "250.00", "url": f"{PANEL}/viewquote.php?id=Q-7"},
        ["Q-7", "250,00", "viewquote.php?id=Q-7"],
    ),
    "domain.deleted": ({"domain_id": "d1", "domain": "juanperez.com.ar"}, ["juanperez.com.ar"]),
}


def event(event_id: str, event_type: str, data: dict[str, Any], client: str = "c1") -> bytes:
    return json.dumps(
        {
            "id": event_id,
            "type": event_type,
            "occurred_at": datetime.now(UTC).isoformat(),
            "client_id": client,
            "data": data,
        }
    ).encode()


async def post_event(stack: Stack, body: bytes) -> int:
    assert stack.session is not None
    headers = {"Content-Type": "application/json", "X-Signature-256": sign(body, SECRET)}
    async with stack.session.post(f"{stack.url}/events", data=body, headers=headers) as r:
        return r.status


async def settled(pool: asyncpg.Pool, count: int) -> list[asyncpg.Record]:
    """Until `count` events are settled; then all events, in the order they happened."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while await pool.fetchval("SELECT count(*) FROM events WHERE processed_at IS NOT NULL") < count:
        if loop.time() > deadline:
            raise TimeoutError(await pool.fetch("SELECT * FROM events"))
        await asyncio.sleep(0.02)
    return await pool.fetch("SELECT * FROM events ORDER BY occurred_at, id")


def template_of(message: SentMessage) -> tuple[str, str, list[str], list[str]]:
    template = message.body["template"]
    body: list[str] = []
    button: list[str] = []
    for component in template.get("components", []):
        values = [p["text"] for p in component["parameters"]]
        (button if component["type"].lower() == "button" else body).extend(values)
    return template["name"], template["language"]["code"], body, button


@pytest.mark.parametrize("event_type", ALERT_TYPES)
async def test_outside_the_window_each_event_goes_as_its_template(
    pool: asyncpg.Pool, database_url: str, event_type: str
) -> None:
    data, must_say = CASES[event_type]
    async with Stack(database_url, events_secret=SECRET) as stack:
        assert await post_event(stack, event("e1", event_type, data)) == 202
        [sent] = await stack.replies(1, to=JUAN_WA)
        [row] = await settled(pool, 1)
    assert sent.type == "template"
    name, language, params, button = template_of(sent)
    entry = catalog_key(event_type)
    assert name == default_catalog().text(f"{entry}.template") and language == "es"
    assert params[0] == "Juan"  # greeted by name
    # The template carries the event's details a customer needs (the link in its button).
    joined = " ".join(params + button)
    for needed in must_say:
        if needed in ("i2", "i1", "Q-7", "5,00", "100,00", "250,00", "1/6/2026"):
            assert needed in joined, (needed, params, button)
        if needed.startswith("radio.") or needed == "juanperez.com.ar":
            assert needed in joined, (needed, params)
    assert all("\n" not in p and "\t" not in p and "     " not in p for p in params)
    assert (row["outcome"], str(row["outbox_id"])) == ("queued", outbox_id_of(sent))


async def test_inside_the_window_every_event_goes_as_text_in_order(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with Stack(database_url, events_secret=SECRET) as stack:
        await stack.say(JUAN_WA, "hola")
        greeted = len(await stack.replies(1, to=JUAN_WA))
        for n, event_type in enumerate(ALERT_TYPES):
            assert await post_event(stack, event(f"e{n}", event_type, CASES[event_type][0])) == 202
        sent = await stack.replies(greeted + len(ALERT_TYPES), to=JUAN_WA)
        await settled(pool, len(ALERT_TYPES))
    alerts = [m for m in sent[greeted:]]
    assert [m.type for m in alerts] == ["text"] * len(ALERT_TYPES)
    for event_type, message in zip(ALERT_TYPES, alerts, strict=True):
        text = text_of(message)
        for needed in CASES[event_type][1]:
            assert needed in text, (event_type, needed, text)
    # The payment link is the invoice's own page in the client area.
    assert await LocalBilling(pool).invoice_link("c1", "i2") in text_of(alerts[2])


async def test_a_replayed_event_is_alerted_once(pool: asyncpg.Pool, database_url: str) -> None:
    body = event("again", "invoice.created", {"invoice_id": "i2"})
    async with Stack(database_url, events_secret=SECRET) as stack:
        statuses = [await post_event(stack, body) for _ in range(3)]
        await stack.replies(1, to=JUAN_WA)
        await settled(pool, 1)
        # A later event is settled too: had the replay queued a second alert, it would be
        # in the outbox before it.
        assert await post_event(stack, event("later", "invoice.paid", {"invoice_id": "i1"})) == 202
        await stack.replies(2, to=JUAN_WA)
        await settled(pool, 2)
        sent = [m for m in stack.fake.sent if m.to == JUAN_WA]
    assert statuses == [202, 202, 202]
    assert len(sent) == 2
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE purpose = 'alert'") == 2


async def test_alerts_turned_off_are_skipped_but_the_password_alert_comes(
    pool: asyncpg.Pool, database_url: str
) -> None:
    await pool.execute("INSERT INTO alert_preferences (client_id, enabled) VALUES ('c1', false)")
    async with Stack(database_url, events_secret=SECRET) as stack:
        assert await post_event(stack, event("a", "invoice.created", {"invoice_id": "i2"})) == 202
        assert await post_event(stack, event("b", "client.password_changed", {})) == 202
        [sent] = await stack.replies(1, to=JUAN_WA)
        rows = await settled(pool, 2)
    assert template_of(sent)[0] == default_catalog().text(
        f"{catalog_key('client.password_changed')}.template"
    )
    outcome = {r["id"]: (r["outcome"], r["skip_reason"]) for r in rows}
    assert outcome == {"a": ("skipped", "alerts_off"), "b": ("queued", None)}


async def test_one_type_turned_off_is_skipped_the_others_come(
    pool: asyncpg.Pool, database_url: str
) -> None:
    await pool.execute(
        "INSERT INTO alert_preferences (client_id, enabled, disabled_types)"
        " VALUES ('c1', true, '{invoice.created}')"
    )
    async with Stack(database_url, events_secret=SECRET) as stack:
        await post_event(stack, event("a", "invoice.created", {"invoice_id": "i2"}))
        await post_event(stack, event("b", "invoice.paid", {"invoice_id": "i1"}))
        rows = await settled(pool, 2)
        [sent] = await stack.replies(1, to=JUAN_WA)
    assert [(r["id"], r["outcome"]) for r in rows] == [("a", "skipped"), ("b", "queued")]
    assert "i1" in template_of(sent)[2]


async def test_unknown_clients_and_clients_without_whatsapp_are_skipped_with_the_reason(
    pool: asyncpg.Pool, database_url: str
) -> None:
    await LocalBilling(pool).load(
        {"clients": [{"id": "c9", "name": "Sin Teléfono", "email": "c9@example.com"}]}
    )
    async with Stack(database_url, events_secret=SECRET) as stack:
        await post_event(stack, event("x", "invoice.created", {"invoice_id": "i2"}, "nobody"))
        await post_event(stack, event("y", "client.created", {}, "c9"))
        rows = await settled(pool, 2)
    assert {r["id"]: r["skip_reason"] for r in rows} == {
        "x": "unknown_client",
        "y": "no_whatsapp_number",
    }
    assert stack.fake.sent == []


async def test_someone_elses_invoice_id_shows_nothing_of_it(
    pool: asyncpg.Pool, database_url: str
) -> None:
    """An event for María naming Juan's invoice: the lookup is scoped to her account."""
    async with Stack(database_url, events_secret=SECRET) as stack:
        await stack.say("5215512345678", "hola")
        await stack.replies(1, to="5215512345678")
        await post_event(stack, event("m", "invoice.created", {"invoice_id": "i2"}, "c2"))
        sent = await stack.replies(2, to="5215512345678")
    text = text_of(sent[-1])
    assert "5,00" not in text and "1/6/2026" not in text


async def test_a_number_not_on_whatsapp_fails_visibly_once(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with Stack(database_url, events_secret=SECRET, awkward=None) as stack:
        stack.fake.fail_next(131026, to=JUAN_WA)
        await post_event(stack, event("n", "invoice.created", {"invoice_id": "i2"}))
        await settled(pool, 1)
        row = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while row is None or row["status"] != "failed":
            row = await pool.fetchrow("SELECT status, error_code FROM outbox")
            assert loop.time() < deadline, row
            await asyncio.sleep(0.02)
    assert row["error_code"] == 131026
    assert stack.fake.sent == []


async def test_an_invoice_created_and_paid_a_second_apart_arrive_in_that_order(
    pool: asyncpg.Pool, database_url: str
) -> None:
    billing = LocalBilling(pool)
    async with Stack(database_url, events_secret=SECRET) as stack:
        await stack.say(JUAN_WA, "hola")
        await stack.replies(1, to=JUAN_WA)
        await billing.pay_invoice("i2")  # invoice.paid, then service.unsuspended
        sent = await stack.replies(3, to=JUAN_WA)
        await settled(pool, 2)
    paid, back = (text_of(m) for m in sent[1:3])
    assert "i2" in paid and "5,00" in paid
    assert "radio.juanperez.com.ar" in back and "activo" in back


async def test_a_paused_template_fails_the_alert_visibly_with_the_code(
    pool: asyncpg.Pool, database_url: str
) -> None:
    name = default_catalog().text(f"{catalog_key('invoice.created')}.template")
    async with Stack(database_url, events_secret=SECRET, awkward=None) as stack:
        stack.fake.paused_templates.add(name)
        await post_event(stack, event("p", "invoice.created", {"invoice_id": "i2"}))
        await settled(pool, 1)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while (row := await pool.fetchrow("SELECT status, error_code FROM outbox")) is None or (
            row["status"] != "failed"
        ):
            assert loop.time() < deadline, row
            await asyncio.sleep(0.02)
        status = await pool.fetchrow("SELECT * FROM events")
    assert row["error_code"] == 132015
    assert stack.fake.sent == []
    assert status["outcome"] == "queued"  # settled once; the failure is the message's


class FlakyBilling(LocalBilling):
    """The local backend with its details lookup failing the first `failures` times, as
    a WHMCS that is down would."""

    def __init__(self, pool: asyncpg.Pool, failures: int) -> None:
        super().__init__(pool)
        self.failures = failures

    async def event_facts(self, client_id: str, event_type: str, data: Any) -> Any:
        if self.failures > 0:
            self.failures -= 1
            raise BillingUnavailable("WHMCS timed out")
        return await super().event_facts(client_id, event_type, data)


async def worker(pool: asyncpg.Pool, billing: LocalBilling) -> AlertWorker:
    settings = make_settings("unused")
    return AlertWorker(pool, settings, billing, default_catalog(), Signals(pool))


async def test_billing_down_the_event_waits_and_is_alerted_later(pool: asyncpg.Pool) -> None:
    await pool.execute(
        "INSERT INTO events (id, type, occurred_at, client_id, data) VALUES"
        " ('w', 'invoice.created', now(), 'c1', '{\"invoice_id\": \"i2\"}'),"
        " ('w2', 'invoice.paid', now() + interval '1 second', 'c1', '{\"invoice_id\": \"i1\"}')"
    )
    alerts = await worker(pool, FlakyBilling(pool, failures=1))
    assert await alerts.work_once() == 1  # only the first: the second waits behind it
    first = await pool.fetchrow("SELECT * FROM events WHERE id = 'w'")
    assert first["processed_at"] is None and "WHMCS timed out" in first["last_error"]
    assert first["not_before"] > datetime.now(UTC)
    assert await alerts.work_once() == 0  # not due yet, and its client's next event waits
    await pool.execute("UPDATE events SET not_before = now() WHERE id = 'w'")
    assert await alerts.work_once() == 1
    assert await alerts.work_once() == 1
    rows = await pool.fetch("SELECT id, outcome, outbox_id FROM events ORDER BY outbox_id")
    assert [(r["id"], r["outcome"]) for r in rows] == [("w", "queued"), ("w2", "queued")]


async def test_an_event_that_cannot_be_detailed_in_time_is_skipped_not_sent_late(
    pool: asyncpg.Pool,
) -> None:
    await pool.execute(
        "INSERT INTO events (id, type, occurred_at, client_id, data) VALUES"
        " ('late', 'invoice.created', now() - interval '8 days', 'c1', '{\"invoice_id\": \"i2\"}')"
    )
    alerts = await worker(pool, FlakyBilling(pool, failures=1))
    assert await alerts.work_once() == 1
    row = await pool.fetchrow("SELECT outcome, skip_reason FROM events")
    assert (row["outcome"], row["skip_reason"]) == ("skipped", "too_old")
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0


async def test_metrics_count_alerts_by_type_and_state(
    pool: asyncpg.Pool, database_url: str
) -> None:
    await pool.execute("INSERT INTO alert_preferences (client_id, enabled) VALUES ('c2', false)")
    async with Stack(database_url, events_secret=SECRET, awkward=None) as stack:
        await post_event(stack, event("a", "invoice.created", {"invoice_id": "i2"}))
        await post_event(stack, event("b", "invoice.created", {"invoice_id": "x"}, "c2"))
        await settled(pool, 2)
        await stack.replies(1, to=JUAN_WA)
        assert stack.session is not None
        async with stack.session.get(f"{stack.url}/metrics") as r:
            page = await r.text()
    assert 'alerts_last_24h{state="skipped_alerts_off",type="invoice.created"} 1.0' in page
    assert 'alerts_total{outcome="queued",type="invoice.created"}' in page
