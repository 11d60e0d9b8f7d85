"""Message types beyond text and taps, over a running server: a chat opened, a photo with
words under it, a message edited or deleted by the customer."""

from __future__ import annotations

import asyncpg

from bot.fakes import payloads as wa_payloads
from flows.catalog import default_catalog
from tests.billing_fixture import JUAN_WA, MARIA_WA
from tests.harness import Stack, text_of

CATALOG = default_catalog()
PANEL = "https://www.paneldecliente.com/clientarea.php?action=details"


async def test_opening_the_chat_gets_the_greeting(pool: asyncpg.Pool, database_url: str) -> None:
    async with Stack(database_url) as stack:
        assert await stack.send(wa_payloads.inbound_welcome(JUAN_WA)) == 200
        [reply] = await stack.replies(1)
    assert text_of(reply) == CATALOG.text("menu.body", name="Juan")


async def test_a_photo_with_a_question_gets_the_answer_and_a_word_about_the_photo(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with Stack(database_url) as stack:
        await stack.say(JUAN_WA, "hola")
        await stack.replies(1)
        photo = wa_payloads.inbound_media(JUAN_WA, "image", "preguntas frecuentes")
        assert await stack.send(photo) == 200
        replies = await stack.replies(3)
    notice, answer = replies[1], replies[2]
    assert text_of(notice) == CATALOG.text("common.media_declined")
    assert text_of(answer) == CATALOG.text("faq.body")


async def test_a_message_edited_before_it_was_answered_is_answered_as_edited(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with Stack(database_url) as stack:
        original = wa_payloads.inbound_text(MARIA_WA, "preguntas frecuentes")
        edited = wa_payloads.inbound_edit(MARIA_WA, original.wamid, "quiero hablar con un asesor")
        assert await stack.send(original, edited) == 200  # one delivery, before any turn
        [reply] = await stack.replies(1)
        rows = await pool.fetch("SELECT wamid, status, last_error FROM inbox ORDER BY id")
    assert text_of(reply) == CATALOG.text("menu.handed_over")
    assert [(r["wamid"], r["status"], r["last_error"]) for r in rows] == [
        (original.wamid, "done", f"replaced by {edited.wamid}"),
        (edited.wamid, "done", None),
    ]
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM outbox o JOIN inbox i ON i.id = o.inbox_id WHERE i.wamid = $1",
            original.wamid,
        )
        == 0
    )


async def test_a_message_edited_after_its_answer_is_answered_again(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with Stack(database_url) as stack:
        original = wa_payloads.inbound_text(JUAN_WA, "hola")
        assert await stack.send(original) == 200
        await stack.replies(1)
        edited = wa_payloads.inbound_edit(JUAN_WA, original.wamid, "preguntas frecuentes")
        assert await stack.send(edited) == 200
        replies = await stack.replies(2)
    assert text_of(replies[1]) == CATALOG.text("faq.body")


async def test_a_deleted_message_is_not_answered(pool: asyncpg.Pool, database_url: str) -> None:
    async with Stack(database_url) as stack:
        deleted = wa_payloads.inbound_text(JUAN_WA, "asesor")
        revoke = wa_payloads.inbound_revoke(JUAN_WA, deleted.wamid)
        assert await stack.send(deleted, revoke) == 200
        # Then something that is answered: everything before it has been handled.
        await stack.say(JUAN_WA, "hola")
        [reply] = await stack.replies(1)
        statuses = await pool.fetch("SELECT status FROM inbox")
    assert text_of(reply) == CATALOG.text("menu.body", name="Juan")
    assert {r["status"] for r in statuses} == {"done"}
    assert await pool.fetchval("SELECT count(*) FROM escalations") == 0


async def test_a_tap_on_an_older_message_shows_the_current_options_and_chooses_nothing(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with Stack(database_url) as stack:
        await stack.say(JUAN_WA, "hola")
        [menu] = await stack.replies(1)
        await stack.tap(JUAN_WA, "faq", "Preguntas frecuentes", row=True)
        [_, faq] = await stack.replies(2)
        # Scrolled back up, the customer taps "talk to a person" on the first menu.
        old = wa_payloads.inbound_list_reply(
            JUAN_WA, "human", "Hablar con una persona", context_wamid=menu.wamid
        )
        assert await stack.send(old) == 200
        replies = await stack.replies(4)
        # The current list still works when tapped.
        await stack.tap(JUAN_WA, "faq:backups", "Backups", row=True)
        answer = (await stack.replies(5))[4]
        tasks = await pool.fetchval("SELECT count(*) FROM escalations")
    notice, again = replies[2], replies[3]
    assert text_of(notice) == CATALOG.text("common.stale_choice")
    assert again.body["interactive"] == faq.body["interactive"]
    assert tasks == 0  # the old tap chose nothing
    assert text_of(answer) == CATALOG.text("faq.backups.answer", panel_url=PANEL)


async def test_a_tap_on_a_prompt_whose_id_is_not_known_yet_is_taken(
    pool: asyncpg.Pool, database_url: str
) -> None:
    """WhatsApp took the list but its answer was lost (504) and no status came yet: the
    bot does not know the list's wamid. A tap quoting a message it does not know as its
    own can only be on that list; one quoting an older message of its own is stale."""
    async with Stack(database_url, awkward=None) as stack:
        await stack.say(JUAN_WA, "hola")
        [menu] = await stack.replies(1)
        await stack.tap(JUAN_WA, "faq", "Preguntas frecuentes", row=True)
        [_, faq] = await stack.replies(2)
        # As if its answer had been lost: the list's wamid unknown to the bot.
        await pool.execute("UPDATE outbox SET wamid = NULL WHERE id = (SELECT max(id) FROM outbox)")
        older = wa_payloads.inbound_list_reply(
            JUAN_WA, "human", "Hablar con una persona", context_wamid=menu.wamid
        )
        assert await stack.send(older) == 200
        stale = (await stack.replies(4))[2:]
        await stack.tap(JUAN_WA, "faq:backups", "Backups", row=True)  # quotes the list
        answer = (await stack.replies(5))[4]
    assert text_of(stale[0]) == CATALOG.text("common.stale_choice")
    assert text_of(answer) == CATALOG.text("faq.backups.answer", panel_url=PANEL)
    assert faq.wamid  # the list WhatsApp did take
