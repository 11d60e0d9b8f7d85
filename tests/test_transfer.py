"""Service transfer (issue 13) over a running server on the local backend, with
tests/billing_fixture.BILLING: Juan (c1, verified, WhatsApp 5491155551234) owns the active
juanperez.com.ar (s1, paid) and the suspended radio.juanperez.com.ar (s3, invoice i2
unpaid); María (c2, verified, WhatsApp 5215512345678) owns mariagonzalez.mx (s2).

The rule (help page "Como cambio el titular de un servicio a otro cliente"): both holders
send the same WhatsApp, identical, each from their own account's number; both accounts
verified; only active services, paid up. Nothing about the other side is ever told.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from store.billing_local import LocalBilling
from tests.billing_fixture import JUAN_WA, MARIA_WA
from tests.harness import Stack, text_of
from tests.test_upgrade import Chat, texts

OTHER_WA = "5491144440000"  # Carla, a third customer
UNVERIFIED_WA = "5491133330000"  # Nico, whose account is not verified


def message(
    service: str = "juanperez.com.ar",
    *,
    name: str = "Juan Perez",
    email: str = "juan@example.com",
    to_name: str = "María González",
    to_email: str = "maria@example.com",
) -> str:
    """The help page's message, as the bot gives it (written here, not read from it)."""
    return (
        f"Hola! Soy {name}, mi correo de cliente es {email} y deseo que el servicio "
        f"{service} que está activo y al día pase a nombre del cliente {to_name} con correo "
        f"{to_email}."
    )


@pytest.fixture
async def more_clients(pool: asyncpg.Pool) -> None:
    await LocalBilling(pool).load(
        {
            "clients": [
                {"id": "c5", "name": "Carla Otra", "email": "carla@example.com",
                 "phone": "+54 11 4444-0000", "verified": True},
                {"id": "c6", "name": "Nico Nuevo", "email": "nico@example.com",
                 "phone": "+54 11 3333-0000", "verified": False},
            ]
        }
    )  # fmt: skip


async def owner(pool: asyncpg.Pool, service: str = "s1") -> str:
    return str(await pool.fetchval("SELECT client_id FROM billing_services WHERE id = $1", service))


async def until_told(chat: Chat, needle: str) -> str:
    """Until a message containing `needle` reached this chat; all it was told since."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while True:
        said = "\n".join(text_of(m) for m in chat.stack.fake.sent[:] if m.to == chat.wa_id)
        if needle in said:
            return said
        assert loop.time() < deadline, said
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("first", ["origin", "destination"])
async def test_an_identical_pair_in_either_order_transfers(
    pool: asyncpg.Pool, database_url: str, first: str
) -> None:
    text = message()
    async with Stack(database_url) as stack:
        juan, maria = Chat(stack, JUAN_WA), Chat(stack, MARIA_WA)
        order = [juan, maria] if first == "origin" else [maria, juan]
        for chat in order:
            await chat.say(text)
        told_juan = await until_told(juan, "Listo")
        told_maria = await until_told(maria, "Listo")
    assert await owner(pool) == "c2"
    exported = await LocalBilling(pool).export()
    assert {s["id"]: s["client"] for s in exported["services"]}["s1"] == "c2"
    assert "juanperez.com.ar" in told_juan and "juanperez.com.ar" in told_maria
    rows = await pool.fetch("SELECT role, status, outcome FROM transfer_requests ORDER BY id")
    assert {r["role"] for r in rows} == {"origin", "destination"}
    assert all(r["status"] == "matched" and r["outcome"] == "done" for r in rows)


@pytest.mark.parametrize(
    "change",
    [
        lambda t: t.replace("Soy ", "Soy  "),  # an extra space
        lambda t: t.rstrip("."),  # one dot fewer
        lambda t: t.replace("está", "esta"),  # a different accent
        lambda t: t.replace("Soy ", "Soy\u00a0"),  # a non-breaking space
        lambda t: t + "\n",  # a trailing newline
    ],
    ids=["space", "dot", "accent", "nbsp", "newline"],
)
async def test_one_byte_different_never_transfers_and_tells_nothing_of_the_other_side(
    pool: asyncpg.Pool, database_url: str, change: Any
) -> None:
    text = message()
    near = change(text)
    assert near != text
    async with Stack(database_url) as stack:
        juan, maria = Chat(stack, JUAN_WA), Chat(stack, MARIA_WA)
        await juan.say(text)
        answer = texts(await maria.say(near))
        await asyncio.sleep(1.0)  # a transfer would be under way by now
    assert await owner(pool) == "c1"
    assert await pool.fetchval("SELECT count(*) FROM commands") == 0
    # Told that both must be identical, in general; nothing of Juan's message or account
    # beyond what María wrote herself.
    assert "iguales" in answer
    assert text not in answer and "5491155551234" not in answer
    for fragment in answer.split("«")[1:]:
        assert fragment.split("»")[0] in near


async def test_refusals_have_their_reason_and_move_nothing(
    pool: asyncpg.Pool, database_url: str, more_clients: None
) -> None:
    await LocalBilling(pool).load(
        {"invoices": [{"id": "i9", "client": "c2", "service": "s2", "total": "10.00",
                       "status": "unpaid", "due": "2026-07-01"}]}
    )  # fmt: skip
    async with Stack(database_url) as stack:
        juan, maria, nico = Chat(stack, JUAN_WA), Chat(stack, MARIA_WA), Chat(stack, UNVERIFIED_WA)
        # To an unverified account.
        to_nico = message(to_name="Nico Nuevo", to_email="nico@example.com")
        await juan.say(to_nico)
        await nico.say(to_nico)
        unverified = await until_told(nico, "verificadas")
        # A suspended service.
        radio = message("radio.juanperez.com.ar")
        await juan.say(radio)
        await maria.say(radio)
        suspended = await until_told(maria, "activos")
        # A service with an unpaid invoice (María's, to Juan).
        owed = message(
            "mariagonzalez.mx", name="María González", email="maria@example.com",
            to_name="Juan Perez", to_email="juan@example.com",
        )  # fmt: skip
        await maria.say(owed)
        await juan.say(owed)
        unpaid = await until_told(juan, "impagas")
    assert "verificadas" in unverified and "activos" in suspended and "impagas" in unpaid
    assert await owner(pool, "s1") == "c1" and await owner(pool, "s3") == "c1"
    assert await owner(pool, "s2") == "c2"


async def test_a_sender_who_is_neither_holder_learns_nothing(
    pool: asyncpg.Pool, database_url: str, more_clients: None
) -> None:
    text = message()
    async with Stack(database_url) as stack:
        carla = Chat(stack, OTHER_WA)
        answer = texts(await carla.say(text))
        unknown = texts(await Chat(stack, "5491199990000").say(text))
    for said in (answer, unknown):
        # Nothing about Juan's or María's accounts beyond what the message itself says.
        assert "juanperez.com.ar" not in said.replace(text, "")
        assert "5491155551234" not in said and "mariagonzalez" not in said
    assert await pool.fetchval("SELECT count(*) FROM transfer_requests") == 0


async def test_the_same_number_twice_is_one_request_and_no_transfer(
    pool: asyncpg.Pool, database_url: str
) -> None:
    text = message()
    async with Stack(database_url) as stack:
        juan = Chat(stack, JUAN_WA)
        await juan.say(text)
        await juan.say(text)
        await asyncio.sleep(1.0)
    statuses = [r["status"] for r in await pool.fetch("SELECT status FROM transfer_requests")]
    assert sorted(statuses) == ["duplicate", "pending"]
    assert await owner(pool) == "c1"


async def test_an_unanswered_request_expires_and_its_sender_is_told(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with Stack(database_url, transfer_window=timedelta(seconds=2), upkeep_seconds=1) as stack:
        juan = Chat(stack, JUAN_WA)
        await juan.say(message())
        told = await until_told(juan, "venció")
        maria_late = texts(await Chat(stack, MARIA_WA).say(message()))
        await asyncio.sleep(1.0)
    assert "juanperez.com.ar" in told
    assert "Recibimos" in maria_late  # a new request of her own, not a match
    assert await owner(pool) == "c1"


async def test_the_menu_gives_the_exact_message_to_copy(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with Stack(database_url) as stack:
        juan = Chat(stack, JUAN_WA)
        answer = await juan.say("cambio de titular")
    said = [text_of(m) for m in answer]
    # The requirements, then the message alone, with his name, email and his one active
    # service (the suspended radio cannot be transferred).
    assert any("verificadas" in s and "activo" in s for s in said)
    alone = next(s for s in said if s.startswith("Hola! Soy Juan Perez"))
    assert "juan@example.com" in alone and "juanperez.com.ar" in alone
    assert "maria" not in alone.lower()
