"""Staff acting at the same instant, over HTTP against the whole service and the fake
Cloud API: two members claiming one item, two replies at once, resolving while the
customer writes. What each race must end in is what store.queue locks for."""

from __future__ import annotations

import asyncio
import logging
import re

import asyncpg
import pytest

from flows.menu import HANDED_OVER
from tests.billing_fixture import JUAN_WA
from tests.console import (
    CATALOG,
    StaffClient,
    asks_for_a_person,
    logged_in,
)
from tests.harness import Stack, eventually, sender_idle, text_of

# A customer with no account in billing: nobody's item until someone claims it.
STRANGER_WA = "5491100000000"
_ALERT = re.compile(r'role="alert">([^<]*)<')

pytestmark = pytest.mark.timeout(60)


def alert_of(body: str) -> str:
    found = _ALERT.search(body)
    assert found is not None, body[:500]
    return found.group(1)


async def claims(pool: asyncpg.Pool, item_id: int) -> list[int]:
    """Who each recorded claim of the item was by, in order."""
    rows = await pool.fetch(
        "SELECT staff_id FROM escalation_actions WHERE escalation_id = $1 AND action = 'claimed'"
        " ORDER BY id",
        item_id,
    )
    return [r["staff_id"] for r in rows]


async def test_two_members_claiming_at_once_one_gets_it_the_other_is_told_who(
    stack: Stack, pool: asyncpg.Pool, members: dict[str, int], clients: list[StaffClient]
) -> None:
    """store.queue.claim locks the item (FOR UPDATE) and takes it only when it is not
    open already: whichever claim commits second finds it open and another's."""
    item = await asks_for_a_person(stack, pool, STRANGER_WA)
    assert item["assigned_to"] is None
    ana = await logged_in(stack, clients, "ana")
    beto = await logged_in(stack, clients, "beto")
    by_name = {"ana": ana, "beto": beto}
    path = f"/staff/items/{item['id']}/claim"
    conversation = f"/staff/conversations/{item['conversation_id']}"
    winners: list[int] = []
    told: list[tuple[str, str]] = []  # (the holder, what the loser's 409 page said)
    for _ in range(6):
        answers = dict(
            zip(
                by_name,
                await asyncio.gather(*(c.post(path, follow=False) for c in by_name.values())),
                strict=True,
            )
        )
        won = [name for name, (status, _, _) in answers.items() if status == 303]
        lost = [name for name, (status, _, _) in answers.items() if status == 409]
        assert len(won) == 1 and len(lost) == 1, {n: a[:2] for n, a in answers.items()}
        [winner], [loser] = won, lost
        assert answers[winner][1] == conversation
        told.append((winner, alert_of(answers[loser][2])))
        row = await pool.fetchrow(
            "SELECT status, assigned_to FROM escalations WHERE id = $1", item["id"]
        )
        assert (row["status"], row["assigned_to"]) == ("open", members[winner])
        winners.append(members[winner])
        assert await claims(pool, item["id"]) == winners  # one claim recorded, the winner's
        # Back to the queue, nobody's, for the next round.
        status, _, _ = await by_name[winner].post(
            f"/staff/items/{item['id']}/assign", {"staff_id": ""}, follow=False
        )
        assert status == 303
    # The refusal names who holds it, in every round (checked last: the rest held).
    for holder, said in told:
        assert holder in said and said.count("ana") + said.count("beto") == 1, (holder, said)


async def test_an_item_another_member_has_open_is_not_taken_by_a_claim(
    stack: Stack, pool: asyncpg.Pool, members: dict[str, int], clients: list[StaffClient]
) -> None:
    item = await asks_for_a_person(stack, pool, STRANGER_WA)
    ana = await logged_in(stack, clients, "ana")
    beto = await logged_in(stack, clients, "beto")
    path = f"/staff/items/{item['id']}/claim"
    assert (await ana.post(path, follow=False))[0] == 303
    status, _, body = await beto.post(path, follow=False)
    assert status == 409
    said = alert_of(body)
    assert "ana" in said and "beto" not in said, said
    # Claiming one's own open item again changes nothing and records nothing.
    assert (await ana.post(path, follow=False))[0] == 303
    row = await pool.fetchrow(
        "SELECT status, assigned_to FROM escalations WHERE id = $1", item["id"]
    )
    assert (row["status"], row["assigned_to"]) == ("open", members["ana"])
    assert await claims(pool, item["id"]) == [members["ana"]]


async def test_two_replies_at_once_each_reach_the_customer_once_in_queue_order(
    stack: Stack, pool: asyncpg.Pool, members: dict[str, int], clients: list[StaffClient]
) -> None:
    item = await asks_for_a_person(stack, pool, JUAN_WA)
    ana = await logged_in(stack, clients, "ana")
    beto = await logged_in(stack, clients, "beto")
    reply = f"/staff/conversations/{item['conversation_id']}/reply"
    rounds = 3
    for n in range(rounds):
        answers = await asyncio.gather(
            ana.post(reply, {"text": f"Ana, mensaje {n}."}, follow=False),
            beto.post(reply, {"text": f"Beto, mensaje {n}."}, follow=False),
        )
        assert [a[0] for a in answers] == [303, 303], answers
    await stack.replies(1 + 2 * rounds, to=JUAN_WA)
    await sender_idle(pool)
    queued = await pool.fetch(
        "SELECT message ->> 'body' AS text, staff_id FROM outbox WHERE purpose = 'staff'"
        " ORDER BY id"
    )
    assert sorted(r["text"] for r in queued) == sorted(
        f"{who}, mensaje {n}." for n in range(rounds) for who in ("Ana", "Beto")
    )
    sent = [text_of(m) for m in stack.fake.messages(to=JUAN_WA)]
    assert sent == [CATALOG.text("menu.handed_over"), *(r["text"] for r in queued)]
    # The item is whoever replied first's (the other did not have it open yet).
    assigned = await pool.fetchval("SELECT assigned_to FROM escalations WHERE id = $1", item["id"])
    assert assigned == queued[0]["staff_id"]
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM escalation_actions WHERE escalation_id = $1"
            " AND action = 'replied'",
            item["id"],
        )
        == 2 * rounds
    )


async def test_resolving_while_the_customer_writes_hands_back_once_without_deadlock(
    stack: Stack,
    pool: asyncpg.Pool,
    members: dict[str, int],
    clients: list[StaffClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    ana = await logged_in(stack, clients, "ana")
    handed_back = CATALOG.text("handover.handed_back.text")
    burst = 10
    inbound = 0
    for n in range(1, 4):
        item = await asks_for_a_person(stack, pool, JUAN_WA)
        inbound += 1
        conversation = f"/staff/conversations/{item['conversation_id']}"
        # A person talks in it: resolving it is what gives it back to the bot.
        before = len(stack.fake.messages(to=JUAN_WA))
        status, _, _ = await ana.post(f"{conversation}/reply", {"text": "Lo reviso."}, follow=False)
        assert status == 303
        await stack.replies(before + 1, to=JUAN_WA)

        resolved, *_ = await asyncio.gather(
            ana.post(f"/staff/items/{item['id']}/resolve", follow=False),
            *(stack.say(JUAN_WA, "hola") for _ in range(burst)),
        )
        inbound += burst
        assert resolved[:2] == (303, conversation), resolved[:2]

        async def all_handled(count: int = inbound) -> bool:
            return bool(
                await pool.fetchval(
                    "SELECT count(*) = $1 FROM inbox WHERE status = 'done'"
                    " AND message ->> 'kind' <> 'system'",
                    count,
                )
            )

        await eventually(f"{inbound} messages handled", all_handled, timeout=20)
        await sender_idle(pool)
        assert await pool.fetchval("SELECT count(*) FROM inbox WHERE status <> 'done'") == 0
        state = await pool.fetchval(
            "SELECT flow_state FROM conversations WHERE id = $1", item["conversation_id"]
        )
        assert state != HANDED_OVER and state.startswith("menu."), state
        assert (
            await pool.fetchval("SELECT status FROM escalations WHERE id = $1", item["id"])
            == "resolved"
        )
        assert (
            await pool.fetchval("SELECT count(*) FROM escalations WHERE status <> 'resolved'") == 0
        )
        # Told once per hand-back, never again for the messages of the burst.
        told = [text_of(m) for m in stack.fake.messages(to=JUAN_WA)].count(handed_back)
        assert told == n, told
    assert "deadlock" not in caplog.text.lower()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
