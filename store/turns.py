"""The dispatcher's SQL: claim the next inbound message, lock its conversation, save the
turn (state, replies, effects) and mark the message done — all in one transaction, so a
process killed at any line leaves either nothing or everything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from flows.alerts import SWITCHABLE, Preferences
from store.db import Conn
from store.inbox import without_nul


@dataclass(frozen=True, slots=True)
class ClaimedMessage:
    inbox_id: int
    wamid: str
    conversation_key: str
    data: dict[str, Any]
    attempts: int
    received_at: datetime


@dataclass(frozen=True, slots=True)
class ConversationRow:
    id: int
    key: str
    wa_id: str | None
    user_id: str | None
    profile_name: str | None
    client_id: str | None
    state: str
    context: dict[str, Any]
    updated_at: datetime | None
    last_inbound_at: datetime | None

    @property
    def recipient(self) -> str:
        """Who replies go to: the phone when known, else the business-scoped user id."""
        return self.wa_id or self.user_id or self.key


@dataclass(frozen=True, slots=True)
class OutgoingRow:
    message: dict[str, Any]
    template: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class TurnStart:
    message: ClaimedMessage
    conversation: ConversationRow
    # The client a number change tied this WhatsApp number to (contact_links), if any.
    linked_client_id: str | None


async def claim_turns(conn: Conn, limit: int) -> list[TurnStart]:
    """Up to `limit` messages, each the oldest pending one of its conversation, locked for
    this transaction, with their conversations created or locked (one round trip).
    Messages of a conversation wait behind its earlier ones; rows locked by other workers
    are skipped, so conversations run in parallel (store/migrations/003, 007)."""
    rows = await conn.fetch("SELECT * FROM claim_turns($1)", limit)
    return [
        TurnStart(
            message=ClaimedMessage(
                inbox_id=row["inbox_id"],
                wamid=row["wamid"],
                conversation_key=row["conversation_key"],
                data=row["message"],
                attempts=row["attempts"],
                received_at=row["received_at"],
            ),
            conversation=_conversation(row, id_column="conversation_id"),
            linked_client_id=row["linked_client_id"],
        )
        for row in rows
    ]


def _conversation(row: asyncpg.Record, *, id_column: str = "id") -> ConversationRow:
    return ConversationRow(
        id=row[id_column],
        key=row["key"],
        wa_id=row["wa_id"],
        user_id=row["user_id"],
        profile_name=row["profile_name"],
        client_id=row["client_id"],
        state=row["flow_state"],
        context=row["context"],
        updated_at=row["updated_at"],
        last_inbound_at=row["last_inbound_at"],
    )


async def lock_conversation(
    conn: Conn,
    key: str,
    *,
    wa_id: str | None,
    user_id: str | None,
    profile_name: str | None,
    inbound_at: datetime | None,
) -> ConversationRow:
    """Create or lock the conversation (see lock_conversation in migration 004)."""
    row = await conn.fetchrow(
        "SELECT * FROM lock_conversation($1, $2, $3, $4, $5)",
        key,
        wa_id,
        user_id,
        without_nul(profile_name),
        inbound_at,
    )
    assert row is not None
    return _conversation(row)


@dataclass(frozen=True, slots=True)
class SavedTurn:
    """What a turn leaves behind: the conversation's new state and the replies to send."""

    conversation_id: int
    inbox_id: int
    state: str
    context: dict[str, Any]
    client_id: str | None
    recipient: str
    replies: Sequence[OutgoingRow]
    # The customer's own activity restarts the session clock (updated_at); a system
    # message (an outcome, another conversation's signal) does not.
    touch: bool = True


async def save_turns(
    conn: Conn, saved: Sequence[SavedTurn], *, processed_by: str, purpose: str = "reply"
) -> None:
    """Save each conversation's state, queue the replies (in order: turn by turn, reply by
    reply) and mark the messages done — one statement for a whole batch of turns."""
    if not saved:
        return
    replies = [(t, r) for t in saved for r in t.replies]
    await conn.execute(
        """
        WITH c AS (
            UPDATE conversations AS c SET flow_state = t.st, context = t.ctx,
                client_id = t.client,
                updated_at = CASE WHEN t.touch THEN now() ELSE c.updated_at END
            FROM unnest($1::bigint[], $2::text[], $3::jsonb[], $4::text[], $13::bool[])
                AS t(conv, st, ctx, client, touch)
            WHERE c.id = t.conv
        ), o AS (
            INSERT INTO outbox (recipient, conversation_id, inbox_id, purpose, message, template)
            SELECT r, conv, inbox, $10, m, tp
            FROM unnest($6::text[], $7::bigint[], $8::bigint[], $9::jsonb[], $11::jsonb[])
                WITH ORDINALITY AS x(r, conv, inbox, m, tp, n)
            ORDER BY n
            RETURNING id
        ), i AS (
            UPDATE inbox SET status = 'done', processed_at = now(), attempts = attempts + 1,
                             processed_by = $12, conversation_id = t.conv
            FROM unnest($5::bigint[], $1::bigint[]) AS t(inbox, conv)
            WHERE id = t.inbox
        )
        SELECT 1
        """,
        [t.conversation_id for t in saved],
        [t.state for t in saved],
        [without_nul(t.context) for t in saved],
        [t.client_id for t in saved],
        [t.inbox_id for t in saved],
        [t.recipient for t, _ in replies],
        [t.conversation_id for t, _ in replies],
        [t.inbox_id for t, _ in replies],
        [without_nul(r.message) for _, r in replies],
        purpose,
        [without_nul(r.template) if r.template else None for _, r in replies],
        processed_by,
        [t.touch for t in saved],
    )


async def queue_replies(
    conn: Conn,
    *,
    conversation_id: int,
    inbox_id: int | None,
    recipient: str,
    replies: Sequence[OutgoingRow],
    purpose: str = "reply",
) -> None:
    """Queue replies in order, without a state change (e.g. an apology)."""
    await conn.execute(
        """
        INSERT INTO outbox (recipient, conversation_id, inbox_id, purpose, message, template)
        SELECT $1, $2, $3, $6, m, t
        FROM unnest($4::jsonb[], $5::jsonb[]) WITH ORDINALITY AS x(m, t, n)
        ORDER BY n
        """,
        recipient,
        conversation_id,
        inbox_id,
        [without_nul(r.message) for r in replies],
        [without_nul(r.template) if r.template else None for r in replies],
        purpose,
    )


async def record_failure(
    pool: asyncpg.Pool, inbox_id: int, error: str, *, max_attempts: int
) -> bool:
    """Count a failed attempt at a message (its transaction was rolled back). Returns
    True when it has used up its attempts and is now marked failed."""
    async with pool.acquire() as conn:
        attempts = await conn.fetchval(
            """
            UPDATE inbox SET attempts = attempts + 1, last_error = $2,
                status = CASE WHEN attempts + 1 >= $3 THEN 'failed' ELSE status END,
                not_before = now() + make_interval(secs => 2 ^ attempts)
            WHERE id = $1 AND status = 'pending'
            RETURNING attempts
            """,
            inbox_id,
            error[:2000],
            max_attempts,
        )
    return attempts is not None and attempts >= max_attempts


async def file_under(conn: Conn, inbox_id: int, conversation_id: int) -> None:
    """Put a message that failed for good in its conversation's transcript (a handled
    one is put there when its turn is saved)."""
    await conn.execute(
        "UPDATE inbox SET conversation_id = $2 WHERE id = $1", inbox_id, conversation_id
    )


async def current_prompts(db: Conn | asyncpg.Pool, taps: list[tuple[int, str]]) -> dict[int, str]:
    """For each (conversation, wamid the tap quotes): the wamid of the last interactive
    message queued for that conversation; conversations never sent one are absent.

    While that last prompt's wamid is not known yet (WhatsApp took it but its answer was
    lost, and no status has come), a tap quoting a message we do not know as one of ours
    can only be on it: the quoted wamid is answered as the prompt. A tap quoting an older
    message of ours is answered "" — not the prompt on screen."""
    rows = await db.fetch(
        """
        SELECT t.id, CASE
            WHEN last.wamid IS NOT NULL THEN last.wamid
            WHEN EXISTS (SELECT 1 FROM outbox AS o
                         WHERE o.conversation_id = t.id AND o.wamid = t.quoted) THEN ''
            ELSE t.quoted
        END AS prompt
        FROM unnest($1::bigint[], $2::text[]) AS t(id, quoted)
        CROSS JOIN LATERAL (
            SELECT o.wamid FROM outbox AS o
            WHERE o.conversation_id = t.id AND o.message ->> 'kind' IN ('buttons', 'list')
            ORDER BY o.id DESC LIMIT 1
        ) AS last
        """,
        [conversation for conversation, _ in taps],
        [quoted for _, quoted in taps],
    )
    return {r["id"]: r["prompt"] for r in rows}


# -- effects ---------------------------------------------------------------------------


async def set_alerts(
    conn: Conn, client_id: str, enabled: bool, alert_type: str | None = None
) -> None:
    """A customer's alert switches (flows.commands.SetAlerts), in one upsert: all alerts
    on (the per-type switches cleared) or off, or one type on or off — turned on while
    all were off, it is the only one on. No row means every alert on."""
    if alert_type is None:
        await conn.execute(
            """
            INSERT INTO alert_preferences (client_id, enabled) VALUES ($1, $2)
            ON CONFLICT (client_id) DO UPDATE SET
                enabled = excluded.enabled,
                disabled_types = CASE WHEN excluded.enabled THEN '{}'::text[]
                                      ELSE alert_preferences.disabled_types END,
                updated_at = now()
            """,
            client_id,
            enabled,
        )
        return
    if alert_type not in SWITCHABLE:
        # A security alert is sent whatever is stored; an unknown type is a bug.
        raise ValueError(f"alert type {alert_type!r} cannot be switched")
    if enabled:
        others = [t for t in SWITCHABLE if t != alert_type]
        await conn.execute(
            """
            INSERT INTO alert_preferences (client_id, enabled) VALUES ($1, true)
            ON CONFLICT (client_id) DO UPDATE SET
                enabled = true,
                disabled_types = CASE
                    WHEN alert_preferences.enabled
                        THEN array_remove(alert_preferences.disabled_types, $2)
                    ELSE $3::text[] END,
                updated_at = now()
            """,
            client_id,
            alert_type,
            others,
        )
    else:
        await conn.execute(
            """
            INSERT INTO alert_preferences (client_id, enabled, disabled_types)
            VALUES ($1, true, ARRAY[$2::text])
            ON CONFLICT (client_id) DO UPDATE SET
                disabled_types = CASE
                    WHEN $2 = ANY (alert_preferences.disabled_types)
                        THEN alert_preferences.disabled_types
                    ELSE alert_preferences.disabled_types || $2::text END,
                updated_at = now()
            """,
            client_id,
            alert_type,
        )


async def alert_preferences(conn: Conn, client_id: str) -> Preferences:
    row = await conn.fetchrow(
        "SELECT enabled, disabled_types FROM alert_preferences WHERE client_id = $1", client_id
    )
    if row is None:
        return Preferences()
    return Preferences(bool(row["enabled"]), frozenset(row["disabled_types"]))


async def move_conversation(
    conn: Conn,
    conversation_id: int,
    *,
    old_wa_id: str,
    new_wa_id: str | None,
    new_user_id: str | None,
    client_id: str | None,
) -> str:
    """After a number or BSUID change: the conversation answers to the new ids (a
    conversation the new ids already started is merged into it), the old number is no
    longer its alias (numbers are recycled), and a known customer's new number is tied to
    them. The conversation's key and id do not change. Returns the recipient to use from
    now on."""
    if new_user_id:
        await conn.execute("SELECT claim_alias($1, $2)", f"u:{new_user_id}", conversation_id)
    if new_wa_id:
        await conn.execute("SELECT claim_alias($1, $2)", new_wa_id, conversation_id)
        if old_wa_id and old_wa_id != new_wa_id:
            await conn.execute(
                "DELETE FROM conversation_aliases WHERE alias = $1 AND conversation_id = $2",
                old_wa_id,
                conversation_id,
            )
    recipient = await conn.fetchval(
        """
        UPDATE conversations SET wa_id = coalesce($2, wa_id), user_id = coalesce($3, user_id)
        WHERE id = $1
        RETURNING coalesce(wa_id, user_id, key)
        """,
        conversation_id,
        new_wa_id,
        new_user_id,
    )
    if client_id is not None and new_wa_id:
        await conn.execute(
            """
            INSERT INTO contact_links (wa_id, client_id, reason, previous_wa_id)
            VALUES ($1, $2, 'number_changed', $3)
            ON CONFLICT (wa_id) DO UPDATE SET client_id = $2, reason = 'number_changed',
                previous_wa_id = $3, created_at = now()
            """,
            new_wa_id,
            client_id,
            old_wa_id or None,
        )
    return str(recipient)
