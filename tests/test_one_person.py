"""One person, one conversation (issue 9, point 1), over a running server: since
WhatsApp's 2026 usernames a user's stable id is their business-scoped user id (BSUID) and
the phone comes only while Meta has it. Whatever ids a message carries, the person keeps
one conversation, their identity and one pacing bucket; number and BSUID changes move the
conversation, never split it. BSUIDs here have letters: they are opaque."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from bot.fakes import payloads as wa_payloads
from flows.catalog import default_catalog
from store import outbox
from tests.billing_fixture import JUAN_WA, MARIA_WA
from tests.harness import Stack, text_of

CATALOG = default_catalog()
PANEL = "https://www.paneldecliente.com/clientarea.php?action=details"
JUAN_GREETING = CATALOG.text("menu.body", name="Juan")
JUAN_ID = "AR.7kQz2Jp0x9"
JUAN_NEW_ID = "AR.Zp4n3wK3y9"


async def live_conversations(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT id, key, wa_id, user_id, client_id, flow_state FROM conversations "
        "WHERE merged_into IS NULL ORDER BY id"
    )


async def handled(pool: asyncpg.Pool, wamid: str, timeout: float = 20.0) -> None:
    """Until the message's turn is committed (with whatever replies it queued)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while await pool.fetchval("SELECT status FROM inbox WHERE wamid = $1", wamid) != "done":
        if loop.time() > deadline:
            raise TimeoutError(f"message {wamid} not handled")
        await asyncio.sleep(0.02)


async def test_a_person_seen_with_and_without_phone_keeps_one_conversation(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with Stack(database_url) as stack:
        await stack.say(JUAN_WA, "hola", user_id=JUAN_ID)
        await stack.replies(1)
        # Meta's cache lost the phone: the same person, by BSUID only.
        await stack.say(None, "hola", user_id=JUAN_ID)
        replies = await stack.replies(2)
        await stack.say(JUAN_WA, "hola", user_id=JUAN_ID)
        replies = await stack.replies(3)
        conversations = await live_conversations(pool)
    # Still known as Juan (identified by the phone seen before), one conversation.
    assert [text_of(r) for r in replies] == [JUAN_GREETING] * 3
    assert len(conversations) == 1
    assert (conversations[0]["wa_id"], conversations[0]["user_id"]) == (JUAN_WA, JUAN_ID)


@pytest.mark.parametrize("one_webhook", [True, False])
async def test_a_bsuid_alone_right_behind_its_first_sighting_finds_the_person(
    pool: asyncpg.Pool, database_url: str, one_webhook: bool
) -> None:
    """Known by phone only; then a message with phone and BSUID and, before the bot has
    handled it, one with the BSUID alone: both are the same person's, in order."""
    async with Stack(database_url, awkward=None) as stack:
        await stack.say(JUAN_WA, "hola")  # the classic payload: no BSUID
        await stack.replies(1)
        both = wa_payloads.inbound_text(JUAN_WA, "asesor", user_id=JUAN_ID)
        alone = wa_payloads.inbound_text(None, "hola", user_id=JUAN_ID)
        if one_webhook:
            assert await stack.send(both, alone) == 200
        else:
            assert await stack.send(both) == 200
            assert await stack.send(alone) == 200
        await handled(pool, alone.wamid)
        replies = await stack.replies(2)
        keys = await pool.fetch("SELECT DISTINCT conversation_key FROM inbox")
        conversations = await live_conversations(pool)
    assert [r["conversation_key"] for r in keys] == [JUAN_WA]
    [conv] = conversations
    assert (conv["wa_id"], conv["user_id"]) == (JUAN_WA, JUAN_ID)
    # Handed to a person by the first; the second is the person's to answer: the bot
    # stays silent (it would have greeted a new conversation).
    assert [text_of(r) for r in replies[1:]] == [CATALOG.text("menu.handed_over")]
    assert conv["flow_state"] == "menu.handed_over"


async def test_conversations_split_before_are_merged_when_a_message_shows_both_ids(
    pool: asyncpg.Pool, database_url: str
) -> None:
    # The shapes are the point: no BSUID added to the classic payload (awkward mode).
    async with Stack(database_url, awkward=None) as stack:
        # Before the change: one conversation by phone (classic payload), one by BSUID.
        await stack.say(JUAN_WA, "preguntas frecuentes")
        await stack.replies(1)
        await stack.say(None, "asesor", user_id=JUAN_ID)
        await stack.replies(2)
        assert len(await live_conversations(pool)) == 2
        # A message with both ids: they are one person.
        wamid = await stack.say(JUAN_WA, "hola", user_id=JUAN_ID)
        await handled(pool, wamid)
        assert len(await stack.replies(2)) == 2
        conversations = await live_conversations(pool)
        aliases = await pool.fetch("SELECT alias, conversation_id FROM conversation_aliases")
        tasks = await pool.fetch("SELECT conversation_id, reason, status FROM escalations")
    # Where the person was last (asking for a person, from the BSUID-only chat) goes on:
    # with a person, the bot silent.
    [conv] = conversations
    assert conv["flow_state"] == "menu.handed_over"
    assert {a["conversation_id"] for a in aliases} == {conv["id"]}
    assert {JUAN_WA, f"u:{JUAN_ID}"} <= {a["alias"] for a in aliases}
    # The request for a person made from the BSUID-only chat is the person's.
    assert [(t["conversation_id"], t["status"]) for t in tasks] == [(conv["id"], "pending")]


async def test_a_recycled_number_is_a_new_person(pool: asyncpg.Pool, database_url: str) -> None:
    async with Stack(database_url) as stack:
        await stack.say(JUAN_WA, "asesor", user_id=JUAN_ID)
        await stack.replies(1)
        # The same phone, another BSUID: the number now belongs to someone else, who must
        # not inherit Juan's conversation (nor his hand-over to a person).
        await stack.say(JUAN_WA, "hola", user_id="AR.0th3rP3rs0n")
        await stack.replies(2)
        conversations = await live_conversations(pool)
    assert [c["user_id"] for c in conversations] == [JUAN_ID, "AR.0th3rP3rs0n"]
    phone_alias = await pool.fetchval(
        "SELECT conversation_id FROM conversation_aliases WHERE alias = $1", JUAN_WA
    )
    assert phone_alias == conversations[1]["id"]


async def test_a_number_change_with_a_new_bsuid_keeps_the_conversation_and_the_account(
    pool: asyncpg.Pool, database_url: str
) -> None:
    new_number = "5491166667777"  # not the phone of any billing account
    async with Stack(database_url) as stack:
        await stack.say(JUAN_WA, "hola", user_id=JUAN_ID)
        await stack.replies(1)
        change = wa_payloads.inbound_system_changed_number(
            JUAN_WA, new_number, new_user_id=JUAN_NEW_ID, previous_user_id=JUAN_ID
        )
        assert await stack.send(change) == 200
        await stack.replies(2)
        # From now on Meta names him by the new ids only.
        await stack.say(None, "hola", user_id=JUAN_NEW_ID)
        replies = await stack.replies(3)
        await stack.say(new_number, "hola", user_id=JUAN_NEW_ID)
        replies = await stack.replies(4)
        conversations = await live_conversations(pool)
    assert text_of(replies[1]) == CATALOG.text("identity.number_changed", panel_url=PANEL)
    # Still Juan's account (the new number is not on it): the link kept it.
    assert text_of(replies[2]) == JUAN_GREETING
    assert text_of(replies[3]) == JUAN_GREETING
    assert replies[3].to == new_number
    [conv] = conversations
    assert (conv["wa_id"], conv["user_id"]) == (new_number, JUAN_NEW_ID)


async def test_a_bsuid_change_without_a_phone_moves_the_conversation(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with Stack(database_url) as stack:
        await stack.say(JUAN_WA, "hola", user_id=JUAN_ID)
        await stack.replies(1)
        change = wa_payloads.inbound_system_changed_user_id(JUAN_ID, JUAN_NEW_ID)
        assert await stack.send(change) == 200
        await stack.say(None, "hola", user_id=JUAN_NEW_ID)
        # Nothing to tell about a new BSUID: the next reply is the greeting, as Juan.
        replies = await stack.replies(2)
        conversations = await live_conversations(pool)
    assert text_of(replies[1]) == JUAN_GREETING
    [conv] = conversations
    assert conv["user_id"] == JUAN_NEW_ID


async def test_the_new_ids_speaking_before_the_change_is_announced_are_merged(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with Stack(database_url) as stack:
        await stack.say(JUAN_WA, "asesor", user_id=JUAN_ID)
        await stack.replies(1)
        # Meta delivers the first message of the new BSUID before the change notice.
        await stack.say(None, "hola", user_id=JUAN_NEW_ID)
        await stack.replies(2)
        assert len(await live_conversations(pool)) == 2
        change = wa_payloads.inbound_system_changed_user_id(JUAN_ID, JUAN_NEW_ID)
        assert await stack.send(change) == 200
        wamid = await stack.say(None, "hola", user_id=JUAN_NEW_ID)
        await handled(pool, wamid)
        assert len(await stack.replies(2)) == 2
        conversations = await live_conversations(pool)
        tasks = await pool.fetch("SELECT conversation_id, status FROM escalations")
    # The person's conversation goes on where it was: his request for a person stands,
    # and the bot leaves the message to the person.
    [conv] = conversations
    assert conv["flow_state"] == "menu.handed_over"
    assert conv["user_id"] == JUAN_NEW_ID
    assert [(t["conversation_id"], t["status"]) for t in tasks] == [(conv["id"], "pending")]


async def test_a_person_is_paced_as_one_whatever_address_their_messages_go_to(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        conv = await conn.fetchrow(
            "SELECT * FROM lock_conversation($1, $2, $3, 'María', now())",
            f"u:{JUAN_ID}",
            MARIA_WA,
            JUAN_ID,
        )
        for recipient in (MARIA_WA, JUAN_ID, MARIA_WA):
            await conn.execute(
                "INSERT INTO outbox (recipient, conversation_id, message) VALUES ($1, $2, $3)",
                recipient,
                conv["id"],
                {"type": "text", "text": {"body": "x"}},
            )
        pacing = outbox.Pacing(
            rate_per_second=100.0, recipient_interval_seconds=60.0, recipient_burst=5
        )
        first = await outbox.claim(conn, 10, pacing)
        # The next one waits for the first to be out, whatever its address.
        second = await outbox.claim(conn, 10, pacing)
    assert [s.recipient for s in first.sends] == [MARIA_WA]
    assert second.sends == []
