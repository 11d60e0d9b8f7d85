"""Storing what a webhook brings: inbound messages into the inbox, statuses onto the outbox.

Runs inside the webhook request, so it is one short transaction and nothing else.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from flows.wa_errors import SENT_AGAIN_AFTER_FAILED_STATUS, WINDOW_CLOSED
from store.db import Conn


@dataclass(frozen=True, slots=True)
class NewMessage:
    wamid: str
    conversation_key: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Status:
    wamid: str
    status: str
    outbox_id: int | None
    at: datetime | None
    error_code: int | None
    error_title: str | None


@dataclass(frozen=True, slots=True)
class Accepted:
    new: int
    duplicates: int
    statuses_applied: int
    # Sends that a failure status put back in the queue (to retry, or as a template).
    requeued: int = 0


@dataclass(frozen=True, slots=True)
class StatusesApplied:
    applied: int
    requeued: int


def without_nul(value: Any) -> Any:
    """PostgreSQL text and jsonb cannot hold U+0000; a customer cannot type it anyway."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {without_nul(k): without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_nul(v) for v in value]
    return value


async def accept(
    pool: asyncpg.Pool,
    body: str,
    messages: Sequence[NewMessage],
    statuses: Sequence[Status],
    *,
    max_send_attempts: int = 8,
) -> Accepted:
    """Keep the raw body and the new messages (a known wamid is a no-op), apply statuses."""
    new = 0
    statuses_result = StatusesApplied(0, 0)
    # Each part is one statement; only a webhook carrying more needs a transaction.
    several = (messages and statuses) or any(m.data.get("replaces") for m in messages)
    async with pool.acquire() as conn:
        both = conn.transaction() if several else contextlib.nullcontext()
        async with both:
            if messages:
                new = await conn.fetchval(
                    "SELECT accept_messages($1, $2::text[], $3::text[], $4::jsonb[])",
                    body.replace("\x00", ""),
                    [m.wamid for m in messages],
                    [m.conversation_key for m in messages],
                    [without_nul(m.data) for m in messages],
                )
                replaced = {m.data["replaces"]: m.wamid for m in messages if m.data.get("replaces")}
                if replaced:
                    await _skip_replaced(conn, replaced)
            if statuses:
                statuses_result = await apply_statuses(
                    conn, statuses, max_send_attempts=max_send_attempts
                )
    return Accepted(
        new=new,
        duplicates=len(messages) - new,
        statuses_applied=statuses_result.applied,
        requeued=statuses_result.requeued,
    )


async def _skip_replaced(conn: Conn, replaced: dict[str, str]) -> None:
    """Messages the customer edited or deleted before we answered them are not answered
    (the edit is, as a message of its own). One being handled right now is left alone:
    it is answered, and so is the edit."""
    await conn.execute(
        """
        UPDATE inbox SET status = 'done', processed_at = now(),
            last_error = 'replaced by ' || r.by
        FROM unnest($1::text[], $2::text[]) AS r(original, by)
        WHERE inbox.id IN (
            SELECT id FROM inbox WHERE wamid = ANY($1::text[]) AND status = 'pending'
            FOR UPDATE SKIP LOCKED)
          AND inbox.wamid = r.original
        """,
        list(replaced),
        list(replaced.values()),
    )


async def apply_statuses(
    conn: Conn, statuses: Sequence[Status], *, max_send_attempts: int = 8
) -> StatusesApplied:
    """Move outbox rows forward (never back). A row is found by our id echoed in
    biz_opaque_callback_data, else by wamid. A failure Meta reports after accepting the
    message is sent again when Meta's code says it was not delivered for a reason that
    passes (flows/wa_errors.py: a rate limit, a transient error, the account or our
    credentials — those also pause sending, see bot/sender.py), or re-sent as the template
    when the 24 h window was closed; otherwise it stays failed."""
    now = datetime.now(UTC)
    result = await conn.fetch(
        """
        WITH s AS (
            SELECT DISTINCT ON (coalesce(o.id, t.oid)) coalesce(o.id, t.oid) AS id,
                   t.w, t.st, t.at, t.code, t.title
            FROM unnest($1::text[], $2::bigint[], $3::text[], $4::timestamptz[],
                        $5::int[], $6::text[]) AS t(w, oid, st, at, code, title)
            LEFT JOIN outbox o ON t.oid IS NULL AND o.wamid = t.w
            WHERE coalesce(o.id, t.oid) IS NOT NULL
            ORDER BY coalesce(o.id, t.oid), outbox_status_rank(t.st) DESC
        ), decided AS (
            SELECT s.*, o.attempts,
                   (s.st = 'failed' AND s.code = $8 AND o.template IS NOT NULL
                        AND o.sent_as = 'message') AS as_template,
                   (s.st = 'failed' AND s.code = ANY($7::int[])
                        AND o.attempts < $9) AS again
            FROM s JOIN outbox o ON o.id = s.id
        )
        UPDATE outbox o SET
            status = CASE WHEN d.as_template OR d.again THEN 'pending' ELSE d.st END,
            force_template = o.force_template OR d.as_template,
            not_before = CASE WHEN d.again
                THEN $10::timestamptz + make_interval(secs => least(300, 2 ^ d.attempts))
                ELSE o.not_before END,
            wamid = CASE WHEN d.as_template OR d.again THEN NULL
                         ELSE coalesce(o.wamid, d.w) END,
            status_at = d.at,
            error_code = CASE WHEN d.st = 'failed' THEN d.code ELSE o.error_code END,
            error_message = CASE WHEN d.st = 'failed' THEN d.title ELSE o.error_message END,
            updated_at = $10
        FROM decided d
        WHERE o.id = d.id
          AND outbox_status_rank(d.st) > outbox_status_rank(o.status)
          AND o.status <> 'pending'
        RETURNING o.id, o.status
        """,
        [s.wamid for s in statuses],
        [s.outbox_id for s in statuses],
        [s.status for s in statuses],
        [s.at or now for s in statuses],
        [s.error_code for s in statuses],
        [s.error_title for s in statuses],
        SENT_AGAIN_AFTER_FAILED_STATUS,
        WINDOW_CLOSED,
        max_send_attempts,
        now,
    )
    return StatusesApplied(
        applied=len(result), requeued=sum(1 for r in result if r["status"] == "pending")
    )
