"""Cancellation (issue 14) over a running server on the local backend, with
tests/billing_fixture.BILLING: Juan (c1, WhatsApp 5491155551234) has the active hosting
juanperez.com.ar (s1, next due 2027-01-01), the suspended radio.juanperez.com.ar (s3,
invoice i2 of 5.00 unpaid) and the domain juanperez.com.ar (d1, renewing, due
2027-01-01).

The rule (help page "Como solicitar la baja del servicio"): irreversible, everything on
the server deleted, nothing paid refunded, the current period's invoices still owed,
backups kept 10 years; immediate or at the end of the period; a reason; a deliberate
confirmation. Domains are not cancelled: their renewal is stopped.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from bot.fakes import payloads as wa_payloads
from store.billing_local import LocalBilling
from tests.billing_fixture import JUAN_WA
from tests.harness import Stack, choice_ids
from tests.test_upgrade import Chat, texts

REASON = "Me mudo a otro proveedor, ¡gracias por todo! (5 años)"


async def requests(pool: asyncpg.Pool) -> list[dict[str, object]]:
    exported = await LocalBilling(pool).export()
    return list(exported["cancellation_requests"])


async def until_requested(pool: asyncpg.Pool) -> list[dict[str, object]]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while not (found := await requests(pool)):
        assert loop.time() < deadline, "no cancellation request"
        await asyncio.sleep(0.05)
    return found


async def up_to_the_confirmation(chat: Chat, kind: str) -> list[str]:
    """From the menu to the phrase to type, choosing the hosting and `kind`; what was
    said on the way."""
    said = []
    picked = await chat.say("quiero dar de baja un servicio")
    said.append(texts(picked))
    # Active and suspended services, and the domain (its renewal): never another's.
    assert {"svc:s1", "svc:s3", "dom:d1"} <= set(choice_ids(picked[-1]))
    said.append(texts(await chat.tap("svc:s1", row=True)))
    said.append(texts(await chat.tap("go_on")))
    said.append(texts(await chat.tap(kind, prompt=False)))
    said.append(texts(await chat.say(REASON, prompt=False)))
    return said


@pytest.mark.parametrize(
    ("kind", "stored"), [("immediate", "immediate"), ("end_of_period", "end_of_period")]
)
async def test_each_type_ends_in_one_request_with_the_reason_as_typed(
    pool: asyncpg.Pool, database_url: str, kind: str, stored: str
) -> None:
    async with Stack(database_url) as stack:
        chat = Chat(stack)
        said = await up_to_the_confirmation(chat, kind)
        consequences, when, phrase = said[1], said[2], said[4]
        # Typed back with other case: accepted.
        summary = texts(await chat.say("cancelar JUANPEREZ.COM.AR"))
        [request] = await until_requested(pool)
    # The help page's consequences, in short.
    for must in ("irreversible", "borra", "no se reintegra", "10 años"):
        assert must in consequences, must
    assert "1/1/2027" in when  # the end of the paid period, offered
    assert "CANCELAR juanperez.com.ar" in phrase
    assert (request["service"], request["type"], request["reason"]) == ("s1", stored, REASON)
    assert request["requested_at"]
    if kind == "end_of_period":
        assert "1/1/2027" in summary  # works until the service's next due date
    assert "juanperez.com.ar" in summary


async def test_a_domain_is_not_cancelled_its_renewal_is_stopped(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with Stack(database_url) as stack:
        chat = Chat(stack)
        await chat.say("dar de baja")
        offer = await chat.tap("dom:d1", row=True)
        done = await chat.tap("stop_renewal", prompt=False)
        await asyncio.sleep(0.5)
        done += await chat._answers(expect_interactive=False)
    exported = await LocalBilling(pool).export()
    assert {d["id"]: d["auto_renew"] for d in exported["domains"]}["d1"] is False
    assert exported["cancellation_requests"] == []
    assert "adelantado" in texts(offer)  # paid yearly in advance: not cancelled
    assert "1/1/2027" in texts(done)  # until when it stays


async def test_buttons_alone_never_cancel(pool: asyncpg.Pool, database_url: str) -> None:
    async with Stack(database_url) as stack:
        chat = Chat(stack)
        await chat.say("quiero dar de baja un servicio")
        await chat.tap("svc:s1", row=True)
        await chat.tap("go_on")
        await chat.tap("end_of_period", prompt=False)
        await chat.say(REASON, prompt=False)
        # At the confirmation, every button ever offered, tapped in turn.
        for button in ("go_on", "immediate", "end_of_period", "stop_renewal", "svc:s1"):
            await stack.send(wa_payloads.inbound_button_reply(JUAN_WA, button, "x"))
        await asyncio.sleep(1.5)
    assert await requests(pool) == []


async def test_a_wrong_phrase_is_shown_again_and_three_end_it_for_staff(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with Stack(database_url) as stack:
        chat = Chat(stack)
        await up_to_the_confirmation(chat, "immediate")
        again = await chat.say("CANCELAR juanperez", prompt=False)
        await chat.say("cancelar juanperez.com", prompt=False)
        ended = await chat.say("CANCELAR radio.juanperez.com.ar")
        await asyncio.sleep(1.0)
        tasks = await pool.fetch("SELECT reason FROM escalations")
    assert "CANCELAR juanperez.com.ar" in texts(again)  # the phrase again
    assert "asesor" in texts(ended)
    assert [t["reason"] for t in tasks] == ["cancellation_not_confirmed"]
    assert await requests(pool) == []


@pytest.mark.parametrize("at", ["consequences", "kind", "reason", "confirm"])
async def test_backing_out_at_each_step_requests_nothing(
    pool: asyncpg.Pool, database_url: str, at: str
) -> None:
    async with Stack(database_url) as stack:
        chat = Chat(stack)
        await chat.say("quiero dar de baja un servicio")
        await chat.tap("svc:s1", row=True)
        if at != "consequences":
            await chat.tap("go_on")
        if at in ("reason", "confirm"):
            await chat.tap("immediate", prompt=False)
        if at == "confirm":
            await chat.say(REASON, prompt=False)
        menu = await chat.say("menu")
        await asyncio.sleep(0.5)
    assert "1. Subir de plan" in [r for m in menu for r in _row_titles(m)]
    assert await requests(pool) == []


def _row_titles(message: object) -> list[str]:
    body = getattr(message, "body", {})
    action = (body.get("interactive") or {}).get("action") or {}
    return [r["title"] for s in action.get("sections", []) for r in s["rows"]]


async def test_a_duplicated_confirmation_is_one_request(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with Stack(database_url) as stack:
        chat = Chat(stack)
        await up_to_the_confirmation(chat, "end_of_period")
        confirmation = wa_payloads.inbound_text(JUAN_WA, "CANCELAR juanperez.com.ar")
        assert await stack.send(confirmation) == 200
        assert await stack.send(confirmation) == 200  # Meta delivered it twice
        await until_requested(pool)
        await chat._answers(expect_interactive=True)  # its summary and what next
        await chat.say("CANCELAR juanperez.com.ar")  # and typed again
        await asyncio.sleep(1.0)
        await chat.say("quiero dar de baja un servicio")
        told = texts(await chat.tap("svc:s1", row=True))
    assert len(await requests(pool)) == 1
    # Asked again: told there is one, with its date — not requested twice.
    assert "pedido de baja" in told and "juanperez.com.ar" in told
