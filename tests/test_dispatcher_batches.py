"""Turns in batches: several conversations' messages handled in one transaction, and a
message that fails does not take the rest of its batch down with it."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from bot.fakes import payloads as wa_payloads
from flows.billing import ClientLookup
from flows.catalog import default_catalog
from store import queue
from tests.billing_fixture import JUAN_WA, MARIA_WA, UNKNOWN_WA
from tests.harness import Stack, text_of

CATALOG = default_catalog()
PANEL = "https://www.paneldecliente.com/clientarea.php?action=details"


async def _processed(pool: asyncpg.Pool) -> dict[str, asyncpg.Record]:
    rows = await pool.fetch(
        "SELECT message ->> 'wa_id' AS wa_id, status, attempts, processed_at, last_error, "
        # The transaction that marked it done (two transactions could start in the same
        # microsecond: processed_at alone does not tell them apart).
        "xmin::text AS marked_by FROM inbox"
    )
    return {r["wa_id"]: r for r in rows}


async def test_one_webhook_of_many_customers_is_one_transaction(
    pool: asyncpg.Pool, database_url: str
) -> None:
    items = [wa_payloads.inbound_text(w, "hola") for w in (JUAN_WA, MARIA_WA, UNKNOWN_WA)]
    async with Stack(database_url) as stack:
        assert await stack.send(*items) == 200
        replies = await stack.replies(3)
    assert sorted(r.to for r in replies) == sorted((JUAN_WA, MARIA_WA, UNKNOWN_WA))
    rows = await _processed(pool)
    assert {r["status"] for r in rows.values()} == {"done"}
    # now() is the transaction's start: one timestamp for the three turns.
    assert len({r["marked_by"] for r in rows.values()}) == 1


async def test_batches_of_one_still_work(pool: asyncpg.Pool, database_url: str) -> None:
    items = [wa_payloads.inbound_text(w, "hola") for w in (JUAN_WA, MARIA_WA)]
    async with Stack(database_url, dispatch_batch=1) as stack:
        assert await stack.send(*items) == 200
        replies = await stack.replies(2)
    assert sorted(r.to for r in replies) == sorted((JUAN_WA, MARIA_WA))
    rows = await _processed(pool)
    assert len({r["marked_by"] for r in rows.values()}) == 2


class _BrokenFor:
    """The real billing backend, except that looking up one phone raises (a bug)."""

    def __init__(self, real: Any, wa_id: str) -> None:
        self.real = real
        self.wa_id = wa_id

    async def find_client_by_phone(self, wa_id: str) -> ClientLookup:
        if wa_id == self.wa_id:
            raise RuntimeError("bug for this customer")
        result: ClientLookup = await self.real.find_client_by_phone(wa_id)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


async def test_a_failing_turn_leaves_the_rest_of_its_batch_answered(
    pool: asyncpg.Pool, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot import app as app_module

    real = app_module.make_billing
    monkeypatch.setattr(app_module, "make_billing", lambda s, p: _BrokenFor(real(s, p), JUAN_WA))
    items = [wa_payloads.inbound_text(w, "hola") for w in (JUAN_WA, MARIA_WA, UNKNOWN_WA)]
    async with Stack(database_url, inbox_max_attempts=2) as stack:
        assert await stack.send(*items) == 200
        [maria] = await stack.replies(1, to=MARIA_WA)
        await stack.replies(1, to=UNKNOWN_WA)
        [apology] = await stack.replies(1, to=JUAN_WA, timeout=20)
    assert text_of(maria) == CATALOG.text("menu.body", name="María")
    assert text_of(apology) == CATALOG.text("common.error")
    rows = await _processed(pool)
    assert (rows[MARIA_WA]["status"], rows[UNKNOWN_WA]["status"]) == ("done", "done")
    assert (rows[JUAN_WA]["status"], rows[JUAN_WA]["attempts"]) == ("failed", 2)
    assert "bug for this customer" in rows[JUAN_WA]["last_error"]


async def test_a_failing_effect_is_taken_back_alone(
    pool: asyncpg.Pool, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Juan's hand-over writes an escalation that the database refuses: his turn (and
    that write) is rolled back to its savepoint; María, in the same batch, is answered."""
    real_escalate = queue.escalate

    async def escalate(
        conn: Any, conversation_id: int, client_id: str | None, *a: Any, **kw: Any
    ) -> None:
        await real_escalate(conn, conversation_id, client_id, *a, **kw)
        if client_id is not None and await conn.fetchval(
            "SELECT wa_id = $2 FROM conversations WHERE id = $1", conversation_id, JUAN_WA
        ):
            await conn.execute("SELECT 1 / 0")

    monkeypatch.setattr(queue, "escalate", escalate)
    items = [
        wa_payloads.inbound_text(JUAN_WA, "asesor"),
        wa_payloads.inbound_text(MARIA_WA, "asesor"),
    ]
    async with Stack(database_url, inbox_max_attempts=2) as stack:
        assert await stack.send(*items) == 200
        [maria] = await stack.replies(1, to=MARIA_WA)
        [juan] = await stack.replies(1, to=JUAN_WA, timeout=20)
    assert text_of(maria) == CATALOG.text("menu.handed_over")
    assert text_of(juan) == CATALOG.text("common.error")
    escalated = await pool.fetch(
        "SELECT c.wa_id FROM escalations AS e JOIN conversations AS c ON c.id = e.conversation_id"
    )
    assert [r["wa_id"] for r in escalated] == [MARIA_WA]
    rows = await _processed(pool)
    assert rows[MARIA_WA]["status"] == "done"
    assert (rows[JUAN_WA]["status"], rows[JUAN_WA]["attempts"]) == ("failed", 2)
    assert "DivisionByZero" in rows[JUAN_WA]["last_error"]


async def test_an_error_that_breaks_the_batch_is_found_one_by_one(
    pool: asyncpg.Pool, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A turn that cannot be saved (here a flow bug leaves a NaN, which jsonb refuses, in
    Juan's context) fails the batch's one save: nothing of the batch is written, its
    messages are retried one at a time, and only the culprit fails."""
    from flows import conversation

    real_handle = conversation.handle

    async def handle(view: Any, inbound: Any, identity: Any, *a: Any) -> Any:
        turn = await real_handle(view, inbound, identity, *a)
        if view.wa_id == JUAN_WA:
            turn.context["ratio"] = float("nan")  # jsonb refuses NaN
        return turn

    monkeypatch.setattr(conversation, "handle", handle)
    items = [wa_payloads.inbound_text(w, "hola") for w in (MARIA_WA, JUAN_WA, UNKNOWN_WA)]
    async with Stack(database_url, inbox_max_attempts=2) as stack:
        assert await stack.send(*items) == 200
        [maria] = await stack.replies(1, to=MARIA_WA, timeout=10)
        [unknown] = await stack.replies(1, to=UNKNOWN_WA, timeout=10)
        [juan] = await stack.replies(1, to=JUAN_WA, timeout=20)
    assert text_of(maria) == CATALOG.text("menu.body", name="María")
    assert text_of(unknown) == CATALOG.text("identity.unknown", panel_url=PANEL)
    assert text_of(juan) == CATALOG.text("common.error")
    rows = await _processed(pool)
    assert (rows[MARIA_WA]["status"], rows[UNKNOWN_WA]["status"]) == ("done", "done")
    assert (rows[JUAN_WA]["status"], rows[JUAN_WA]["attempts"]) == ("failed", 2)
    # Each was saved by a transaction of its own.
    assert rows[MARIA_WA]["marked_by"] != rows[UNKNOWN_WA]["marked_by"]
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 3
