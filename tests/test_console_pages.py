"""The staff console's queue and conversation pages over HTTP, against the whole service
and the fake Cloud API: what staff see, what each action changes and records, and what
reaches the customer (exactly once, through the outbox)."""

from __future__ import annotations

import asyncio
import html
import re
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import asyncpg
import pytest

from bot.console import live, views
from bot.console.wording import Format
from bot.webhook import BILLING
from flows.billing import BillingUnavailable, Domain, Invoice, Service
from flows.hours import BusinessHours
from flows.menu import HANDED_OVER
from store import staff
from tests.billing_fixture import BILLING as BILLING_DATA
from tests.billing_fixture import JUAN_WA, MARIA_WA, UNKNOWN_WA
from tests.console import (
    CATALOG,
    StaffClient,
    asks_for_a_person,
    logged_in,
)
from tests.harness import Stack, eventually, sender_idle, text_of

_AFTER = re.compile(r'name="reply_after" value="(\d+)"')

pytestmark = pytest.mark.timeout(60)


def texts_to(stack: Stack, wa_id: str) -> list[str]:
    return [text_of(m) for m in stack.fake.messages(to=wa_id)]


async def test_the_queue_shows_the_item_and_every_action_is_recorded_and_shown(
    stack: Stack, pool: asyncpg.Pool, members: dict[str, int], clients: list[StaffClient]
) -> None:
    item = await asks_for_a_person(stack, pool, JUAN_WA)
    # Pre-assigned to Juan's account manager: her own view opens first.
    assert item["assigned_to"] == members["ana"]
    ana = await logged_in(stack, clients, "ana")
    page = await ana.get("/staff/")
    assert 'aria-current="page" data-view="mine"' in page
    assert f'data-item-id="{item["id"]}"' in page
    assert "Juan (+5491155551234)" in page
    assert "Pidió una persona" in page
    assert "espera hace" in page
    assert "asignado a ana" in page

    beto = await logged_in(stack, clients, "beto")
    page = await beto.get("/staff/")  # nothing of his: every waiting item
    assert 'aria-current="page" data-view="all"' in page
    assert f'data-item-id="{item["id"]}"' in page
    assert f'data-item-id="{item["id"]}"' not in await beto.get("/staff/?view=mine")
    fragment = await beto.get("/staff/?view=all&partial=1")
    assert f'data-item-id="{item["id"]}"' in fragment and "<html" not in fragment

    path = f"/staff/items/{item['id']}"
    conversation = f"/staff/conversations/{item['conversation_id']}"
    steps: list[tuple[str, dict[str, str]]] = [
        ("claim", {}),
        ("assign", {"staff_id": str(members["ana"])}),
        ("assign", {"staff_id": ""}),
        ("snooze", {"until": "1h"}),
        ("priority", {"priority": "urgent"}),
        ("snooze", {"until": "message"}),
        ("claim", {}),
        ("resolve", {}),
    ]
    states = []
    for action, data in steps:
        status, where, _ = await beto.post(f"{path}/{action}", data, follow=False)
        assert (status, where) == (303, conversation), action
        row = await pool.fetchrow(
            "SELECT status, assigned_to, priority, snoozed_until IS NOT NULL AS timed"
            " FROM escalations WHERE id = $1",
            item["id"],
        )
        states.append((row["status"], row["assigned_to"], row["priority"], row["timed"]))
        if action == "snooze" and data["until"] == "1h":
            assert f'data-item-id="{item["id"]}"' in await beto.get("/staff/?view=snoozed")
    ana_id, beto_id = members["ana"], members["beto"]
    assert states == [
        ("open", beto_id, "normal", False),
        ("open", ana_id, "normal", False),
        ("pending", None, "normal", False),
        ("snoozed", None, "normal", True),
        ("snoozed", None, "urgent", True),
        ("snoozed", None, "urgent", False),
        ("open", beto_id, "urgent", False),
        ("resolved", beto_id, "urgent", False),
    ]
    recorded = await pool.fetch(
        "SELECT action, staff_id, detail FROM escalation_actions WHERE escalation_id = $1"
        " ORDER BY id",
        item["id"],
    )
    assert [(r["action"], r["staff_id"]) for r in recorded] == [
        (action, beto_id) for action in ("claimed", "assigned", "assigned", "snoozed")
    ] + [(a, beto_id) for a in ("priority", "snoozed", "claimed", "resolved")]
    assert recorded[1]["detail"] == {"to": "ana"}
    assert recorded[2]["detail"] == {"to": None}

    page = await beto.get(conversation)
    log = page[page.index('data-status="resolved"') :]
    for said in (
        "beto</strong> tomó el pedido",
        "beto</strong> lo asignó a ana",
        "beto</strong> lo devolvió a la cola (sin asignar)",
        "beto</strong> lo pospuso hasta ",
        "beto</strong> cambió la prioridad a urgente",
        "beto</strong> lo pospuso hasta que el cliente escriba",
        "beto</strong> lo resolvió",
    ):
        assert said in log, said
    assert f'data-item-id="{item["id"]}"' in await beto.get("/staff/?view=resolved")


async def test_a_reply_inside_the_window_reaches_the_customer_once_as_text(
    stack: Stack, pool: asyncpg.Pool, members: dict[str, int], clients: list[StaffClient]
) -> None:
    item = await asks_for_a_person(stack, pool, JUAN_WA)
    ana = await logged_in(stack, clients, "ana")
    conversation = f"/staff/conversations/{item['conversation_id']}"
    page = await ana.get(conversation)
    assert "El bot está en silencio: la conversación la tiene una persona" in page
    assert 'name="text"' in page
    found = _AFTER.search(page)
    assert found is not None
    form = {"text": "Hola Juan, soy Ana.\r\n¿En qué le ayudo?", "reply_after": found.group(1)}

    status, where, _ = await ana.post(f"{conversation}/reply", form, follow=False)
    assert (status, where) == (303, f"{conversation}#reply")
    # The same form sent again (a double click, a resubmission): nothing more is sent.
    status, where, _ = await ana.post(f"{conversation}/reply", form, follow=False)
    assert (status, where) == (303, f"{conversation}#reply")
    await stack.replies(2, to=JUAN_WA)
    await sender_idle(pool)
    assert texts_to(stack, JUAN_WA) == [
        CATALOG.text("menu.handed_over"),
        "Hola Juan, soy Ana.\n¿En qué le ayudo?",
    ]
    [row] = await pool.fetch(
        "SELECT purpose, staff_id, sent_as FROM outbox WHERE purpose = 'staff'"
    )
    assert (row["purpose"], row["staff_id"], row["sent_as"]) == ("staff", members["ana"], "message")
    replied = await pool.fetchrow(
        "SELECT first_reply_at, waiting_since FROM escalations WHERE id = $1", item["id"]
    )
    assert replied["first_reply_at"] is not None and replied["waiting_since"] is None

    # Drawn again, the form may send the same words again: that is a new message.
    page = await ana.get(conversation)
    assert "ana" in page and "Hola Juan, soy Ana." in page
    assert "primera respuesta a los" in page
    again = _AFTER.search(page)
    assert again is not None and int(again.group(1)) > int(found.group(1))
    await ana.post(f"{conversation}/reply", {**form, "reply_after": again.group(1)})
    await stack.replies(3, to=JUAN_WA)
    await sender_idle(pool)
    assert len(stack.fake.messages(to=JUAN_WA)) == 3


async def test_outside_the_window_only_the_follow_up_template_goes(
    stack: Stack, pool: asyncpg.Pool, members: dict[str, int], clients: list[StaffClient]
) -> None:
    item = await asks_for_a_person(stack, pool, JUAN_WA)
    await sender_idle(pool)
    await pool.execute(
        "UPDATE conversations SET last_inbound_at = now() - interval '2 days' WHERE id = $1",
        item["conversation_id"],
    )
    ana = await logged_in(stack, clients, "ana")
    conversation = f"/staff/conversations/{item['conversation_id']}"
    page = await ana.get(conversation)
    assert "La ventana de 24 h está cerrada" in page
    assert "Enviar plantilla de seguimiento" in page
    assert 'name="text"' not in page

    status, _, body = await ana.post(f"{conversation}/reply", {"text": "Hola, ¿sigue ahí?"})
    assert status == 409
    assert "solo permite enviarle la plantilla de seguimiento" in body
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE purpose = 'staff'") == 0

    status, where, _ = await ana.post(
        f"{conversation}/reply", {"template": "follow_up"}, follow=False
    )
    assert (status, where) == (303, f"{conversation}#reply")
    [*_, sent] = await stack.replies(2, to=JUAN_WA)
    await sender_idle(pool)
    assert sent.type == "template"
    assert sent.body["template"]["name"] == "seguimiento_de_consulta"
    [parameter] = sent.body["template"]["components"][0]["parameters"]
    assert parameter["text"] == "Juan"  # billing's first name
    assert len(stack.fake.messages(to=JUAN_WA)) == 2
    row = await pool.fetchrow("SELECT message, staff_id FROM outbox WHERE purpose = 'staff'")
    assert row["message"]["kind"] == "template" and row["staff_id"] == members["ana"]


async def test_a_canned_reply_code_is_replaced_by_its_text(
    stack: Stack, pool: asyncpg.Pool, members: dict[str, int], clients: list[StaffClient]
) -> None:
    async with pool.acquire() as conn:
        await staff.save_canned_reply(conn, "saludo", "Hola, le escribe el equipo.", members["ana"])
    item = await asks_for_a_person(stack, pool, MARIA_WA)
    beto = await logged_in(stack, clients, "beto")
    conversation = f"/staff/conversations/{item['conversation_id']}"
    page = await beto.get(conversation)
    assert 'data-insert="/saludo "' in page

    status, _, body = await beto.post(f"{conversation}/reply", {"text": "/nada que ver"})
    assert status == 400 and "No hay ninguna respuesta rápida /nada" in body
    assert "/nada que ver</textarea>" in body  # the draft is kept

    await beto.post(f"{conversation}/reply", {"text": "/saludo ¿Me confirma el dominio?"})
    [*_, sent] = await stack.replies(2, to=MARIA_WA)
    assert text_of(sent) == "Hola, le escribe el equipo. ¿Me confirma el dominio?"
    # A slash inside a word is no code.
    await beto.post(f"{conversation}/reply", {"text": "/home/maria está llena"})
    [*_, sent] = await stack.replies(3, to=MARIA_WA)
    assert text_of(sent) == "/home/maria está llena"


async def test_the_account_summary_is_the_customers_own(
    stack: Stack,
    pool: asyncpg.Pool,
    members: dict[str, int],
    clients: list[StaffClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    juan = await asks_for_a_person(stack, pool, JUAN_WA)
    maria = await asks_for_a_person(stack, pool, MARIA_WA)
    await stack.say(UNKNOWN_WA, "hola")
    await stack.replies(1, to=UNKNOWN_WA)
    unknown = await pool.fetchval("SELECT id FROM conversations WHERE wa_id = $1", UNKNOWN_WA)
    ana = await logged_in(stack, clients, "ana")

    page = await ana.get(f"/staff/conversations/{juan['conversation_id']}")
    account = page[page.index('aria-label="Cuenta del cliente"') :]
    for shown in (
        "Juan Perez",
        "juan@example.com",
        "juanperez.com.ar",
        "radio.juanperez.com.ar",
        "Hosting Inicial",
        "suspendido",
        "01/06/2026",  # the unpaid invoice's due date
        "Factura i2",
        "$ 5,00",  # as customers read amounts (Argentina's separators)
        "renovación automática sí",
    ):
        assert shown in account, shown
    assert "Factura i1" not in account  # paid
    assert "mariagonzalez" not in page and "María" not in page

    page = await ana.get(f"/staff/conversations/{maria['conversation_id']}")
    assert "mariagonzalez.mx" in page
    assert "juanperez" not in page and "Juan Perez" not in page

    page = await ana.get(f"/staff/conversations/{unknown}")
    assert "Número no identificado" in page

    # The billing system failing is a note on the page, never an error page.
    assert stack._runner is not None
    billing = stack._runner.app[BILLING]

    async def down(*args: Any, **kwargs: Any) -> Any:
        raise BillingUnavailable("timeout")

    monkeypatch.setattr(billing, "list_services", down)
    page = await ana.get(f"/staff/conversations/{juan['conversation_id']}")
    assert "No se pudo consultar la facturación ahora" in page
    assert "radio.juanperez.com.ar" not in page


async def test_resolving_hands_the_conversation_back_to_the_bot(
    stack: Stack, pool: asyncpg.Pool, members: dict[str, int], clients: list[StaffClient]
) -> None:
    item = await asks_for_a_person(stack, pool, JUAN_WA)
    ana = await logged_in(stack, clients, "ana")
    conversation = f"/staff/conversations/{item['conversation_id']}"
    await ana.post(f"{conversation}/reply", {"text": "Listo, ya lo revisé."})
    await stack.replies(2, to=JUAN_WA)
    # While a person has it the bot is silent.
    await stack.say(JUAN_WA, "gracias")
    await eventually(
        "the thanks is handled",
        lambda: pool.fetchval("SELECT count(*) = 0 FROM inbox WHERE status = 'pending'"),
    )
    await sender_idle(pool)
    assert len(stack.fake.messages(to=JUAN_WA)) == 2

    status, where, _ = await ana.post(f"/staff/items/{item['id']}/resolve", follow=False)
    assert (status, where) == (303, conversation)
    [*_, told] = await stack.replies(3, to=JUAN_WA)
    assert text_of(told) == CATALOG.text("handover.handed_back.text")
    row = await pool.fetchrow(
        "SELECT purpose, staff_id FROM outbox WHERE id = (SELECT max(id) FROM outbox)"
    )
    assert row["purpose"] == "staff"
    page = await ana.get(conversation)
    assert "El bot está en silencio" not in page
    assert "No hay ningún pedido abierto en esta conversación" in page

    await stack.say(JUAN_WA, "hola")
    [*_, menu] = await stack.replies(4, to=JUAN_WA)
    assert text_of(menu) == CATALOG.text("menu.body", name="Juan")


async def test_the_customer_going_back_to_the_bot_is_said(
    stack: Stack, pool: asyncpg.Pool, members: dict[str, int], clients: list[StaffClient]
) -> None:
    item = await asks_for_a_person(stack, pool, JUAN_WA)
    ana = await logged_in(stack, clients, "ana")
    conversation = f"/staff/conversations/{item['conversation_id']}"
    await ana.post(f"{conversation}/reply", {"text": "Hola, ¿qué necesita?"})
    await stack.replies(2, to=JUAN_WA)
    await stack.say(JUAN_WA, "menu")
    await stack.replies(3, to=JUAN_WA)
    await eventually(
        "the return is recorded",
        lambda: pool.fetchval(
            "SELECT count(*) > 0 FROM escalation_actions WHERE action = 'customer_returned_to_bot'"
        ),
    )
    page = await ana.get(conversation)
    assert "volvió al bot" in page
    assert "El bot está en silencio" not in page


async def test_bad_input_is_refused_with_a_page_never_a_500(
    stack: Stack, pool: asyncpg.Pool, members: dict[str, int], clients: list[StaffClient]
) -> None:
    item = await asks_for_a_person(stack, pool, JUAN_WA)
    ana = await logged_in(stack, clients, "ana")
    conversation = f"/staff/conversations/{item['conversation_id']}"
    items = f"/staff/items/{item['id']}"

    await ana.get("/staff/conversations/999999", status=404)
    await ana.get("/staff/conversations/999999/transcript", status=404)
    await ana.get("/staff/conversations/99999999999999999999999", status=404)
    await ana.get("/staff/?view=everything", status=400)
    for action in ("claim", "assign", "snooze", "priority", "resolve"):
        status, _, body = await ana.post(f"/staff/items/999999/{action}")
        assert status == 404 and "No existe ese pedido" in body, action
    refused = [
        (f"{items}/priority", {"priority": "altísima"}),
        (f"{items}/priority", {}),
        (f"{items}/snooze", {"until": "siempre"}),
        (f"{items}/assign", {"staff_id": "abc"}),
        (f"{items}/assign", {"staff_id": "999999"}),
        (f"{conversation}/reply", {"text": ""}),
        (f"{conversation}/reply", {"text": "   \r\n "}),
        (f"{conversation}/reply", {"text": "x" * 5000}),
        (f"{conversation}/reply", {"text": "hola", "reply_after": "ayer"}),
    ]
    for path, data in refused:
        status, _, body = await ana.post(path, data)
        assert status == 400, (path, data, status, body[:300])
        assert 'role="alert"' in body
    status, _, body = await ana.post(f"{conversation}/reply", {"text": "x" * 5000})
    assert "5000 caracteres" in body and "4096" in body
    await sender_idle(pool)
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE purpose = 'staff'") == 0
    assert (
        await pool.fetchval("SELECT count(*) FROM escalation_actions WHERE staff_id IS NOT NULL")
        == 0
    )

    # Back only to a page of the console.
    status, where, _ = await ana.post(
        f"{items}/claim", {"next": "https://elsewhere.example/staff/"}, follow=False
    )
    assert (status, where) == (303, conversation)
    status, where, _ = await ana.post(
        f"{items}/priority", {"priority": "high", "next": "/staff/?view=all"}, follow=False
    )
    assert (status, where) == (303, "/staff/?view=all")

    # Resolved: acting on it again is refused (resolving again is a no-op), and there
    # is nothing to reply on any more.
    await ana.post(f"{items}/resolve")
    status, where, _ = await ana.post(f"{items}/resolve", follow=False)
    assert (status, where) == (303, conversation)
    status, _, body = await ana.post(f"{items}/claim")
    assert status == 409 and "ya está resuelto" in body
    status, _, body = await ana.post(f"{conversation}/reply", {"text": "¿Sigue ahí?"})
    assert status == 409 and "No hay ningún pedido abierto en esta conversación" in body

    # Without the CSRF token nothing happens.
    async with ana.session.post(f"{stack.url}{items}/claim", data={}) as r:
        assert r.status == 403


async def next_block(stream: aiohttp.ClientResponse, deadline: float) -> bytes:
    """The stream's next server-sent block (an event or a comment) before `deadline`
    (loop time); TimeoutError if none comes, IncompleteReadError if the stream ends."""
    remaining = deadline - asyncio.get_running_loop().time()
    block = await asyncio.wait_for(stream.content.readuntil(b"\n\n"), max(remaining, 0.01))
    if not block.endswith(b"\n\n"):
        raise asyncio.IncompleteReadError(block, None)
    return block


async def next_change(stream: aiohttp.ClientResponse, timeout: float = 10.0) -> bytes:
    """The next `change` event, comments (keepalives) skipped."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        block = await next_block(stream, deadline)
        if block.startswith(b"event: change\n"):
            return block


async def next_keepalive(stream: aiohttp.ClientResponse, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not (await next_block(stream, deadline)).startswith(b": keepalive"):
        pass


async def test_live_updates_announce_a_change_and_end_with_the_session(
    stack: Stack,
    pool: asyncpg.Pool,
    members: dict[str, int],
    clients: list[StaffClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The session is checked every KEEPALIVE_SECONDS (15 s in service): shortened here,
    # in the service running in this process.
    monkeypatch.setattr(live, "KEEPALIVE_SECONDS", 0.3)
    monkeypatch.setattr(live, "POLL_SECONDS", 0.1)
    ana = await logged_in(stack, clients, "ana")
    beto = await logged_in(stack, clients, "beto")
    for bad in ("abc", "-1", "1.5", "\uff11\uff12", "9" * 19):
        async with ana.session.get(
            f"{stack.url}/staff/live", params={"conversation": bad}, allow_redirects=False
        ) as r:
            assert r.status == 400, (bad, r.status)
    timeout = aiohttp.ClientTimeout(total=30)
    async with (
        ana.session.get(f"{stack.url}/staff/live", timeout=timeout) as stream,
        beto.session.get(f"{stack.url}/staff/live", timeout=timeout) as other,
    ):
        assert stream.status == 200
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        first = await next_change(stream)
        await next_change(other)
        await stack.say(JUAN_WA, "asesor")
        second = await next_change(stream)
        assert second != first
        item = await pool.fetchval("SELECT id FROM escalations")
        assert item is not None
        fragment = await ana.get("/staff/?view=all&partial=1")
        assert f'data-item-id="{item}"' in fragment

        # A keepalive: a session check has passed and the stream goes on while the
        # session lives.
        await next_keepalive(stream)
        assert not stream.content.at_eof()
        status, where, _ = await ana.post("/staff/logout", follow=False)
        assert (status, where) == (303, "/staff/login")
        # Ana's stream ends (read to its end, within a deadline)...
        await asyncio.wait_for(stream.content.read(), 10)
        assert stream.content.at_eof()
        # ... Beto's, whose session lives, goes on: a block sent after hers ended.
        other.content.read_nowait()
        block = await next_block(other, asyncio.get_running_loop().time() + 10)
        assert block.startswith((b": keepalive", b"event: change"))
        assert not other.content.at_eof()


def others_records(client_id: str) -> list[str]:
    """What of BILLING belongs to clients other than `client_id`: names, emails, service
    labels, invoice ids, domains."""
    others = {c["id"] for c in BILLING_DATA["clients"]} - {client_id}
    return (
        [c[k] for c in BILLING_DATA["clients"] if c["id"] in others for k in ("name", "email")]
        + [s["label"] for s in BILLING_DATA["services"] if s["client"] in others]
        + [f"Factura {i['id']}" for i in BILLING_DATA["invoices"] if i["client"] in others]
        + [d["name"] for d in BILLING_DATA["domains"] if d["client"] in others]
    )


async def test_the_account_summary_never_shows_another_clients_records(
    stack: Stack,
    pool: asyncpg.Pool,
    members: dict[str, int],
    clients: list[StaffClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    juan_id = next(c["id"] for c in BILLING_DATA["clients"] if c["name"] == "Juan Perez")
    juan = next(c for c in BILLING_DATA["clients"] if c["id"] == juan_id)
    own = (
        [juan["name"], juan["email"]]
        + [s["label"] for s in BILLING_DATA["services"] if s["client"] == juan_id]
        + [
            f"Factura {i['id']}"
            for i in BILLING_DATA["invoices"]
            if i["client"] == juan_id and i["status"] == "unpaid"
        ]
        + [d["name"] for d in BILLING_DATA["domains"] if d["client"] == juan_id]
    )
    foreign = others_records(juan_id)
    assert len(own) >= 5 and len(foreign) >= 6
    item = await asks_for_a_person(stack, pool, JUAN_WA)
    ana = await logged_in(stack, clients, "ana")
    path = f"/staff/conversations/{item['conversation_id']}"

    async def account_shown() -> tuple[str, str]:
        page = html.unescape(await ana.get(path))
        return page, page[page.index('aria-label="Cuenta del cliente"') :]

    page, account = await account_shown()
    for shown in own:
        assert shown in account, shown
    for hidden in foreign:
        assert hidden not in page, hidden

    # A billing backend that answers with other clients' records too (a WHMCS filter
    # ignored, a cache keyed wrongly): they are still not shown.
    assert stack._runner is not None
    billing = stack._runner.app[BILLING]
    others = [c["id"] for c in BILLING_DATA["clients"] if c["id"] != juan_id]
    services, invoices, domains = (
        billing.list_services,
        billing.list_invoices,
        billing.list_domains,
    )
    stranger_invoice = Invoice(
        id="inv-maria-77",
        client_id="c2",
        service_id="s2",
        total=Decimal("777.77"),
        status="unpaid",
        due=date(2026, 7, 1),
    )

    async def leaky_services(client_id: str) -> list[Service]:
        return [s for c in [client_id, *others] for s in await services(c)]

    async def leaky_invoices(client_id: str, **kw: Any) -> list[Invoice]:
        return [*await invoices(client_id, **kw), stranger_invoice]

    async def leaky_domains(client_id: str) -> list[Domain]:
        return [d for c in [client_id, *others] for d in await domains(c)]

    monkeypatch.setattr(billing, "list_services", leaky_services)
    monkeypatch.setattr(billing, "list_invoices", leaky_invoices)
    monkeypatch.setattr(billing, "list_domains", leaky_domains)
    # The leak is real: what the backend now answers for Juan holds María's records.
    assert "mariagonzalez.mx" in {s.label for s in await billing.list_services(juan_id)}
    page, account = await account_shown()
    for shown in own:
        assert shown in account, shown
    for hidden in [*foreign, stranger_invoice.id, "777.77", "777,77"]:
        assert hidden not in page, hidden


async def test_resolving_after_the_window_closed_tells_the_customer_with_the_template(
    stack: Stack, pool: asyncpg.Pool, members: dict[str, int], clients: list[StaffClient]
) -> None:
    item = await asks_for_a_person(stack, pool, JUAN_WA)
    ana = await logged_in(stack, clients, "ana")
    conversation = f"/staff/conversations/{item['conversation_id']}"
    await ana.post(f"{conversation}/reply", {"text": "Ya revisé su hosting."})
    await stack.replies(2, to=JUAN_WA)
    await sender_idle(pool)
    await pool.execute(
        "UPDATE conversations SET last_inbound_at = now() - interval '2 days' WHERE id = $1",
        item["conversation_id"],
    )

    status, where, _ = await ana.post(f"/staff/items/{item['id']}/resolve", follow=False)
    assert (status, where) == (303, conversation)
    [*_, told] = await stack.replies(3, to=JUAN_WA)
    await sender_idle(pool)
    assert told.type == "template"
    assert told.body["template"]["name"] == "consulta_atendida"
    [parameter] = told.body["template"]["components"][0]["parameters"]
    assert parameter["text"] == "Juan"  # billing's first name
    sent = stack.fake.messages(to=JUAN_WA)
    assert len(sent) == 3
    assert [m.type for m in sent].count("template") == 1
    assert CATALOG.text("handover.handed_back.text") not in [text_of(m) for m in sent]
    assert (
        await pool.fetchval(
            "SELECT flow_state FROM conversations WHERE id = $1", item["conversation_id"]
        )
        != HANDED_OVER
    )


@pytest.mark.parametrize(
    ("now", "wakes"),
    [
        # Friday evening: the next working day is Monday.
        (datetime(2026, 12, 4, 19, 0), datetime(2026, 12, 7, 9, 0)),
        # Tuesday before opening: tomorrow's opening, not today's.
        (datetime(2026, 12, 1, 8, 0), datetime(2026, 12, 2, 9, 0)),
    ],
)
def test_snoozing_to_the_next_working_day_follows_the_business_hours(
    now: datetime, wakes: datetime
) -> None:
    zone = "America/Argentina/Buenos_Aires"
    tz = ZoneInfo(zone)
    hours = BusinessHours.parse("mon-fri 09:00-18:00", zone)
    until = views._snooze_until("tomorrow", Format(tz, now.replace(tzinfo=tz)), hours)
    assert until == wakes.replace(tzinfo=tz)
