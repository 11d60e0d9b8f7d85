"""A person takes the conversation (issue 15): the customer is told a person will answer
(and, outside business hours, when); while a person has it the bot is silent and every
message lands in the transcript, in order; only the customer's exact `menu` brings the
bot back, and staff see that. The queue's items: pre-assigned to the client's account
manager, woken from a snooze by the customer's next message, one per reason."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from bot.fakes import payloads as wa_payloads
from flows.catalog import default_catalog
from flows.conversation import handle
from flows.hours import BusinessHours
from flows.matching import Matcher
from flows.outbound import Text
from flows.runtime import (
    ConversationView,
    Deps,
    Identity,
    IdentityStatus,
    Inbound,
    InboundKind,
)
from store import queue, transcript
from tests.billing_fixture import JUAN_WA, SHARED_WA
from tests.harness import Stack, eventually, text_of
from tests.test_flows_menu import JUAN, FakeAlerts, FakeBilling

CATALOG = default_catalog()
BA = ZoneInfo("America/Argentina/Buenos_Aires")
DAYS = ["lunes", "martes", "miércoles", "jueves", "viernes", "sábado", "domingo"]
MONTHS = [
    "enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto",
    "septiembre", "octubre", "noviembre", "diciembre",
]  # fmt: skip


async def a_member(pool: asyncpg.Pool) -> int:
    """Beto, on the team (he never logs in here: the queue is driven through store.queue)."""
    member_id: int = await pool.fetchval(
        "INSERT INTO staff (username, role, password_hash) VALUES ('beto', 'agent', 'x') "
        "RETURNING id"
    )
    return member_id


async def inbound_done(pool: asyncpg.Pool, count: int) -> None:
    """Until `count` customer messages have been handled (their turns committed)."""

    async def done() -> bool:
        handled = await pool.fetchval(
            "SELECT count(*) FROM inbox WHERE status = 'done' AND message ->> 'kind' <> 'system'"
        )
        return bool(handled >= count)

    await eventually(f"{count} messages handled", done)


async def until_rows(pool: asyncpg.Pool, count: int) -> None:
    async def there() -> bool:
        return bool(await pool.fetchval("SELECT count(*) FROM escalations") >= count)

    await eventually(f"{count} escalations", there)


async def test_while_a_person_has_it_twenty_messages_get_no_reply_and_all_are_in_the_transcript(
    pool: asyncpg.Pool, database_url: str
) -> None:
    texts = [f"mensaje {n}: ¿me atienden?" for n in range(1, 18)]
    texts += ["😀🙏", "x" * 4000, "menu por favor"]  # not the exact word: still theirs
    async with Stack(database_url) as stack:
        await stack.say(JUAN_WA, "asesor")
        [handed] = await stack.replies(1, to=JUAN_WA)
        assert "persona del equipo" in text_of(handed)
        for text in texts:
            await stack.say(JUAN_WA, text)
        await inbound_done(pool, 21)
        # Each turn writes its replies in the transaction that marks it done: none came.
        conversation_id = await pool.fetchval(
            "SELECT id FROM conversations WHERE wa_id = $1", JUAN_WA
        )
        assert (
            await pool.fetchval(
                "SELECT count(*) FROM outbox WHERE conversation_id = $1", conversation_id
            )
            == 1
        )
        assert len([m for m in stack.fake.sent if m.to == JUAN_WA]) == 1

        async with pool.acquire() as conn:
            said = await transcript.transcript(conn, conversation_id)
        inbound = [e.message.get("text") for e in said if e.direction == "in"]
        assert inbound == ["asesor", *texts]
        assert [e.direction for e in said][:2] == ["in", "out"]

        # The exact word takes it back: the bot answers, and staff see the customer left.
        await stack.say(JUAN_WA, "Menú")
        replies = await stack.replies(3, to=JUAN_WA)
        assert "menú" in text_of(replies[1]).lower()
        actions = await pool.fetch("SELECT action, staff_id FROM escalation_actions")
        assert [(a["action"], a["staff_id"]) for a in actions] == [
            ("customer_returned_to_bot", None)
        ]
        # The request stays in the queue for staff, and the next message is the bot's.
        assert await pool.fetchval("SELECT status FROM escalations") == "pending"
        await stack.say(JUAN_WA, "hola")
        await stack.replies(4, to=JUAN_WA)


async def test_a_staff_reply_takes_the_conversation_and_resolving_gives_it_back(
    pool: asyncpg.Pool, database_url: str
) -> None:
    """A flow's task (here the ladder running out) leaves the bot talking; a person
    writing takes the conversation; resolving the last item a person talked in gives it
    back (the console then tells the customer — tests/test_console_pages.py)."""
    async with Stack(database_url) as stack:
        # The first message gets the menu; three more it cannot understand.
        for n in range(4):
            await stack.say(JUAN_WA, f"qwzx plorf {n}")
        await until_rows(pool, 1)
        await stack.replies(6, to=JUAN_WA)
        [item] = await pool.fetch(
            "SELECT id, conversation_id, reason, status, detail FROM escalations"
        )
        assert (item["reason"], item["status"]) == ("not_understood", "pending")
        assert item["detail"]["summary"] == "qwzx plorf 3"
        staff_id = await a_member(pool)
        async with pool.acquire() as conn, conn.transaction():
            target = await queue.reply_target(conn, item["conversation_id"])
            assert target is not None and target.window_open
            await queue.staff_reply(
                conn, target, staff_id, {"kind": "text", "body": "Hola Juan, soy Beto."}, None
            )
        sent = await stack.replies(7, to=JUAN_WA)
        assert text_of(sent[6]) == "Hola Juan, soy Beto."
        row = await pool.fetchrow("SELECT status, assigned_to, first_reply_at FROM escalations")
        assert (row["status"], row["assigned_to"]) == ("open", staff_id)
        assert row["first_reply_at"] is not None

        await stack.say(JUAN_WA, "gracias, necesito cambiar el dominio")
        await inbound_done(pool, 5)
        assert len([m for m in stack.fake.sent if m.to == JUAN_WA]) == 7  # silent

        async with pool.acquire() as conn, conn.transaction():
            resolved = await queue.resolve(conn, item["id"], staff_id)
        assert resolved is not None and resolved.handed_back
        await stack.say(JUAN_WA, "hola")
        await stack.replies(8, to=JUAN_WA)


async def test_the_account_manager_gets_the_request_and_others_wait_unassigned(
    pool: asyncpg.Pool, database_url: str
) -> None:
    ana = await pool.fetchval(
        "INSERT INTO staff (username, role, password_hash) VALUES ('Ana', 'agent', 'x') "
        "RETURNING id"
    )
    async with Stack(database_url) as stack:
        await stack.say(JUAN_WA, "quiero hablar con una persona")  # c1: account manager ana
        await stack.say("5491100000000", "asesor")  # nobody's customer
        await stack.replies(2)
        await until_rows(pool, 2)
        async with stack.session.get(f"{stack.url}/metrics") as response:
            page = await response.text()
        rows = await pool.fetch(
            "SELECT c.wa_id, e.assigned_to, e.status, e.priority FROM escalations AS e "
            "JOIN conversations AS c ON c.id = e.conversation_id ORDER BY c.wa_id"
        )
    assignment = {r["wa_id"]: (r["assigned_to"], r["status"], r["priority"]) for r in rows}
    assert assignment == {
        JUAN_WA: (ana, "pending", "normal"),
        "5491100000000": (None, "pending", "normal"),
    }
    # Operators see the queue: two customers waiting for a person.
    assert 'staff_queue_items{status="pending"} 2.0' in page
    assert "staff_queue_oldest_waiting_seconds" in page


async def test_a_snoozed_request_wakes_when_the_customer_writes(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with Stack(database_url) as stack:
        await stack.say(JUAN_WA, "asesor")
        await stack.replies(1, to=JUAN_WA)
        await until_rows(pool, 1)
        staff_id = await a_member(pool)
        item_id = await pool.fetchval("SELECT id FROM escalations")
        async with pool.acquire() as conn:
            assert await queue.snooze(conn, item_id, staff_id, None)
            assert [i.id for i in await queue.list_items(conn, "snoozed", staff_id=staff_id)] == [
                item_id
            ]
            assert await queue.list_items(conn, "all", staff_id=staff_id) == []
        await stack.say(JUAN_WA, "¿hay alguien?")
        await inbound_done(pool, 2)
        async with pool.acquire() as conn:
            [woken] = await queue.list_items(conn, "all", staff_id=staff_id)
            assert woken.id == item_id and woken.status == "pending"
            history = [a.action for a in await queue.actions(conn, [item_id])]
        assert history == ["snoozed", "woken_by_customer"]


async def test_a_snooze_with_a_time_ends_by_itself(pool: asyncpg.Pool, database_url: str) -> None:
    async with Stack(database_url) as stack:
        await stack.say(SHARED_WA, "asesor")
        await stack.replies(1, to=SHARED_WA)
        await until_rows(pool, 1)
    staff_id = await a_member(pool)
    item_id = await pool.fetchval("SELECT id FROM escalations")
    async with pool.acquire() as conn:
        await queue.snooze(conn, item_id, staff_id, datetime.now(UTC) + timedelta(hours=1))
        assert await queue.list_items(conn, "all", staff_id=staff_id) == []
        # An hour later (moved clock: the snooze's end put in the past).
        await conn.execute("UPDATE escalations SET snoozed_until = now() - interval '1 second'")
        assert [i.status for i in await queue.list_items(conn, "all", staff_id=staff_id)] == [
            "pending"
        ]
        assert await queue.wake_snoozed(conn) == 1
        assert await conn.fetchval("SELECT status FROM escalations") == "pending"


async def test_the_transcript_survives_a_number_change(
    pool: asyncpg.Pool, database_url: str
) -> None:
    new_number = "5491166667777"
    async with Stack(database_url, awkward=None) as stack:
        await stack.say(JUAN_WA, "hola")
        await stack.replies(1, to=JUAN_WA)
        assert (
            await stack.send(wa_payloads.inbound_system_changed_number(JUAN_WA, new_number)) == 200
        )
        await stack.say(new_number, "asesor")
        await stack.replies(1, to=new_number)
        await inbound_done(pool, 2)
    [conversation_id] = [
        r["id"] for r in await pool.fetch("SELECT id FROM conversations WHERE merged_into IS NULL")
    ]
    async with pool.acquire() as conn:
        entries = await transcript.transcript(conn, conversation_id)
    said = [(e.direction, e.message.get("text")) for e in entries if e.direction == "in"]
    assert said == [("in", "hola"), ("in", "asesor")]
    recipients = [
        r["recipient"] for r in await pool.fetch("SELECT recipient FROM outbox ORDER BY id")
    ]
    assert (recipients[0], recipients[-1]) == (JUAN_WA, new_number)


# -- outside business hours (frozen clock) ----------------------------------------------


def deps_at(now: datetime, hours: str) -> Deps:

    return Deps(
        catalog=CATALOG,
        matcher=Matcher(CATALOG.words("words.negations")),
        billing=FakeBilling([JUAN], {JUAN_WA: [JUAN.id]}),
        alerts=FakeAlerts(),
        panel_details_url="https://panel.example/details",
        session_ttl=timedelta(minutes=30),
        timezone="America/Argentina/Buenos_Aires",
        business_hours=BusinessHours.parse(hours, "America/Argentina/Buenos_Aires"),
        clock=lambda: now,
    )


async def hand_over_text(now: datetime, hours: str) -> str:
    conv = ConversationView(state="menu.main", context={}, updated_at=None, wa_id=JUAN_WA)
    inbound = Inbound(wamid="w", kind=InboundKind.TEXT, type="text", timestamp=now, text="asesor")
    identity = Identity(IdentityStatus.IDENTIFIED, JUAN)
    turn = await handle(conv, inbound, identity, deps_at(now, hours), now)
    [reply] = turn.replies
    assert isinstance(reply.message, Text)
    return reply.message.body


def said_when(day: date, hour: int) -> str:
    """How the help desk's opening is said, written out here from the calendar."""
    return f"{DAYS[day.weekday()]} {day.day} de {MONTHS[day.month - 1]} a las {hour}:00"


@pytest.mark.parametrize(
    ("local", "opens", "hour"),
    [
        # Saturday afternoon → Monday 9:00.
        (datetime(2026, 12, 5, 15, 0, tzinfo=BA), date(2026, 12, 7), 9),
        # Friday after closing → Monday 9:00.
        (datetime(2026, 12, 4, 18, 30, tzinfo=BA), date(2026, 12, 7), 9),
        # Wednesday before opening → the same day at 9:00.
        (datetime(2026, 12, 2, 7, 45, tzinfo=BA), date(2026, 12, 2), 9),
        # New Year's Eve, Thursday night → Friday 1 January.
        (datetime(2026, 12, 31, 23, 0, tzinfo=BA), date(2027, 1, 1), 9),
    ],
)
async def test_outside_business_hours_the_customer_is_told_when(
    local: datetime, opens: date, hour: int
) -> None:
    text = await hand_over_text(local.astimezone(UTC), "mon-fri 09:00-18:00")
    assert said_when(opens, hour) in text
    assert "lunes a viernes de 9:00 a 18:00" in text
    assert "*menu*" in text


async def test_saturday_hours_are_the_next_opening_on_friday_night() -> None:
    friday_night = datetime(2026, 12, 4, 20, 0, tzinfo=BA).astimezone(UTC)
    text = await hand_over_text(friday_night, "mon-fri 09:00-18:00; sat 10:00-13:00")
    assert said_when(date(2026, 12, 5), 10) in text
    assert "lunes a viernes de 9:00 a 18:00; sábado de 10:00 a 13:00" in text


async def test_inside_business_hours_no_time_is_promised() -> None:
    tuesday_morning = datetime(2026, 12, 1, 11, 0, tzinfo=BA).astimezone(UTC)
    text = await hand_over_text(tuesday_morning, "mon-fri 09:00-18:00")
    assert "a partir" not in text and "horario" not in text
    assert "persona del equipo" in text


async def test_the_service_reads_business_hours_from_its_settings(
    pool: asyncpg.Pool, database_url: str
) -> None:
    """Configured hours that exclude today: the running service says the next day they
    include, in the company's time zone."""
    today = datetime.now(BA).date()
    opens = today + timedelta(days=2)
    day = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"][opens.weekday()]
    async with Stack(database_url, business_hours_text=f"{day} 09:00-10:00", awkward=None) as stack:
        await stack.say(JUAN_WA, "asesor")
        [reply] = await stack.replies(1, to=JUAN_WA)
    assert said_when(opens, 9) in text_of(reply)
