"""A conversation's transcript for staff (both sides, in order, with delivery states),
and the fingerprints the console's live updates poll: cheap, indexed reads that change
whenever what a page shows does."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from store.db import Conn


@dataclass(frozen=True, slots=True)
class TranscriptEntry:
    """One message of a conversation, either way. Outbound ones carry their delivery
    state (pending … sent, delivered, read, failed with the error)."""

    direction: Literal["in", "out"]
    id: int
    at: datetime
    message: dict[str, Any]
    status: str | None = None
    error_code: int | None = None
    error_message: str | None = None
    purpose: str | None = None
    staff: str | None = None


async def transcript(
    conn: Conn, conversation_id: int, *, limit: int = 500
) -> list[TranscriptEntry]:
    """Both sides of a conversation in order, the latest `limit` messages: inbound ones
    when they reached us (WhatsApp's own timestamps have whole seconds only, and a reply
    must not show above the message it answers), outbound when queued. The bot's own
    system messages (outcomes, signals) are not part of it."""
    rows = await conn.fetch(
        """
        SELECT * FROM (
            SELECT 'in' AS direction, i.id, i.received_at AS at,
                i.message, NULL AS status, NULL::int AS error_code, NULL AS error_message,
                NULL AS purpose, NULL AS staff
            FROM inbox AS i
            WHERE i.conversation_id = $1 AND i.message ->> 'kind' <> 'system'
            UNION ALL
            SELECT 'out', o.id, o.created_at, o.message, o.status, o.error_code,
                o.error_message, o.purpose, s.username
            FROM outbox AS o LEFT JOIN staff AS s ON s.id = o.staff_id
            WHERE o.conversation_id = $1
            ORDER BY at DESC, direction, id DESC
            LIMIT $2
        ) AS t ORDER BY at, direction, id
        """,
        conversation_id,
        limit,
    )
    return [
        TranscriptEntry(
            direction=r["direction"],
            id=r["id"],
            at=r["at"],
            message=r["message"],
            status=r["status"],
            error_code=r["error_code"],
            error_message=r["error_message"],
            purpose=r["purpose"],
            staff=r["staff"],
        )
        for r in rows
    ]


async def queue_fingerprint(conn: Conn) -> tuple[object, ...]:
    """Moves when an item appears or changes, or an action is recorded."""
    row = await conn.fetchrow(
        """
        SELECT (SELECT max(id) FROM escalations) AS items,
               (SELECT max(updated_at) FROM escalations) AS changed,
               (SELECT max(id) FROM escalation_actions) AS actions
        """
    )
    assert row is not None
    return tuple(row.values())


async def conversation_fingerprint(conn: Conn, conversation_id: int) -> tuple[object, ...]:
    """Moves when a message of the conversation comes in, is queued or changes state."""
    row = await conn.fetchrow(
        """
        SELECT (SELECT max(id) FROM inbox WHERE conversation_id = $1) AS inbound,
               (SELECT max(updated_at) FROM outbox WHERE conversation_id = $1) AS outbound,
               (SELECT flow_state FROM conversations WHERE id = $1) AS state
        """,
        conversation_id,
    )
    assert row is not None
    return tuple(row.values())
