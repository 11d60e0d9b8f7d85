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
    # Which send of the row the status is about (None: not said).
    attempt: int | None = None


@dataclass(frozen=True, slots=True)
class Accepted:
    new: int
    duplicates: int
    statuses_applied: int
    # Sends that a failure status put back in the queue (to retry, or as a template).
    requeued: int = 0
    # Messages found delivered by two attempts (the customer got them twice).
    doubled: int = 0


@dataclass(frozen=True, slots=True)
class StatusesApplied:
    applied: int
    requeued: int
    doubled: int = 0


async def finished(pool: asyncpg.Pool, wamids: Sequence[str]) -> dict[str, str]:
    """The inbox status (`done`, `failed`) of each of these messages the bot has
    finished with; those still waiting are absent."""
    rows = await pool.fetch(
        "SELECT wamid, status FROM inbox WHERE wamid = ANY($1::text[]) AND status <> 'pending'",
        list(wamids),
    )
    return {r["wamid"]: r["status"] for r in rows}


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
        doubled=statuses_result.doubled,
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
    when the 24 h window was closed; otherwise it stays failed. An attempt already
    superseded (sent again after its answer was lost) moves the row only to say it was
    delivered or read: its late failure sends nothing again and fails nothing.

    Every status is also kept against its attempt (`outbox_attempts`, migration 014); a
    message that a second attempt also delivered is counted in `doubled`."""
    now = datetime.now(UTC)
    row = await conn.fetchrow(
        """
        WITH t AS (
            SELECT coalesce(o.id, t.oid) AS id, t.w, t.st, t.at, t.code, t.title,
                   coalesce(t.att, 0) AS att
            FROM unnest($1::text[], $2::bigint[], $3::text[], $4::timestamptz[],
                        $5::int[], $6::text[], $11::int[]) AS t(w, oid, st, at, code, title, att)
            LEFT JOIN outbox o ON t.oid IS NULL AND o.wamid = t.w
            WHERE coalesce(o.id, t.oid) IS NOT NULL
              AND EXISTS (SELECT 1 FROM outbox AS x WHERE x.id = coalesce(o.id, t.oid))
        ), s AS (
            SELECT DISTINCT ON (id) * FROM t ORDER BY id, outbox_status_rank(st) DESC
        ), decided AS (
            SELECT s.*, o.attempts,
                   (s.st = 'failed' AND s.code = $8 AND o.template IS NOT NULL
                        AND o.sent_as = 'message'
                        AND s.att IN (0, o.attempts)) AS as_template,
                   (s.st = 'failed' AND s.code = ANY($7::int[])
                        AND o.attempts < $9 AND s.att IN (0, o.attempts)) AS again
            FROM s JOIN outbox o ON o.id = s.id
        ), moved AS (
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
              -- An attempt already superseded moves the row only to say it arrived.
              AND (d.att IN (0, d.attempts) OR d.st IN ('delivered', 'read'))
            RETURNING o.id, o.status
        ), per_attempt AS (
            SELECT DISTINCT ON (id, att) * FROM t ORDER BY id, att, outbox_status_rank(st) DESC
        ), recorded AS (
            INSERT INTO outbox_attempts AS a
                (outbox_id, attempt, wamid, status, status_at, error_code)
            SELECT id, att, w, st, at, code FROM per_attempt
            ON CONFLICT (outbox_id, attempt) DO UPDATE SET
                wamid = EXCLUDED.wamid, status = EXCLUDED.status,
                status_at = EXCLUDED.status_at, error_code = EXCLUDED.error_code
            WHERE outbox_status_rank(EXCLUDED.status) > outbox_status_rank(a.status)
            RETURNING a.outbox_id, a.attempt, a.status
        )
        SELECT
            (SELECT count(*) FROM moved) AS applied,
            (SELECT count(*) FROM moved WHERE status = 'pending') AS requeued,
            (SELECT count(*) FROM recorded AS r
             WHERE r.status IN ('delivered', 'read')
               -- newly delivered by this attempt (the snapshot is before this statement)…
               AND NOT EXISTS (
                   SELECT 1 FROM outbox_attempts AS b
                   WHERE b.outbox_id = r.outbox_id AND b.attempt = r.attempt
                     AND b.status IN ('delivered', 'read'))
               -- …and already by another one.
               AND EXISTS (
                   SELECT 1 FROM outbox_attempts AS b
                   WHERE b.outbox_id = r.outbox_id AND b.attempt <> r.attempt
                     AND b.status IN ('delivered', 'read'))) AS doubled
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
        [s.attempt for s in statuses],
    )
    assert row is not None
    return StatusesApplied(applied=row["applied"], requeued=row["requeued"], doubled=row["doubled"])
