"""The alert worker's SQL: claim billing events in order per client, and settle each in
the claim's transaction — its one outbox row, or why nothing was sent, or a later retry.

An event is claimed only when no earlier event of the same client is still unsettled
(claimed by another worker, or waiting to be retried), so one client's alerts are queued
in the order their events happened: an invoice created and paid a second apart arrive
in that order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flows.alerts import Preferences
from store.db import Conn
from store.inbox import without_nul


@dataclass(frozen=True, slots=True)
class ClaimedEvent:
    id: str
    type: str
    occurred_at: datetime
    client_id: str | None
    data: dict[str, Any]
    attempts: int  # before this one


@dataclass(frozen=True, slots=True)
class Person:
    """Where a client's alerts go: their conversation with us, when they have one (its
    24 h window and pacing then apply), and the address to send to."""

    conversation_id: int | None
    recipient: str


# What the worker decided for one event.
@dataclass(frozen=True, slots=True)
class Queue:
    event_id: str
    recipient: str
    conversation_id: int | None
    message: dict[str, Any]
    template: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Skip:
    event_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Later:
    event_id: str
    delay_seconds: float
    error: str


Settlement = Queue | Skip | Later


async def claim(conn: Conn, limit: int) -> list[ClaimedEvent]:
    """Lock up to `limit` due events, the oldest unsettled one of each client (call inside
    the transaction that settles them)."""
    rows = await conn.fetch(
        """
        SELECT e.id, e.type, e.occurred_at, e.client_id, e.data, e.attempts
        FROM events AS e
        WHERE e.processed_at IS NULL AND e.not_before <= now()
          AND NOT EXISTS (
              SELECT 1 FROM events AS p
              WHERE p.processed_at IS NULL AND p.client_id = e.client_id
                AND (p.occurred_at, p.received_at, p.id) < (e.occurred_at, e.received_at, e.id))
        ORDER BY e.occurred_at, e.received_at, e.id
        LIMIT $1
        FOR UPDATE OF e SKIP LOCKED
        """,
        limit,
    )
    return [
        ClaimedEvent(
            id=r["id"],
            type=r["type"],
            occurred_at=r["occurred_at"],
            client_id=r["client_id"],
            data=r["data"] if isinstance(r["data"], dict) else {},
            attempts=r["attempts"],
        )
        for r in rows
    ]


async def preferences(conn: Conn, client_ids: Sequence[str]) -> dict[str, Preferences]:
    rows = await conn.fetch(
        "SELECT client_id, enabled, disabled_types FROM alert_preferences"
        " WHERE client_id = ANY($1::text[])",
        list(client_ids),
    )
    return {r["client_id"]: Preferences(r["enabled"], frozenset(r["disabled_types"])) for r in rows}


async def people(conn: Conn, wanted: Sequence[tuple[str, str]]) -> dict[str, Person]:
    """For each (client id, WhatsApp id): the client's latest conversation with us (the one
    identified as them, else the one of that number), or the number alone."""
    rows = await conn.fetch(
        """
        SELECT w.client_id, w.wa_id, c.id AS conversation_id,
               coalesce(c.wa_id, c.user_id, w.wa_id) AS recipient
        FROM unnest($1::text[], $2::text[]) AS w(client_id, wa_id)
        LEFT JOIN LATERAL (
            SELECT id, wa_id, user_id FROM conversations
            WHERE id = coalesce(
                (SELECT id FROM conversations
                 WHERE client_id = w.client_id AND merged_into IS NULL
                 ORDER BY last_inbound_at DESC NULLS LAST, id DESC LIMIT 1),
                person_conversation(w.wa_id, NULL))
        ) AS c ON true
        """,
        [c for c, _ in wanted],
        [w for _, w in wanted],
    )
    return {r["client_id"]: Person(r["conversation_id"], r["recipient"]) for r in rows}


async def settle(conn: Conn, settlements: Sequence[Settlement]) -> None:
    """Write what was decided for each claimed event, in the claim's transaction: an
    outbox row and the event marked queued with it, or skipped with the reason, or left
    for a later try."""
    queued = [s for s in settlements if isinstance(s, Queue)]
    skipped = [s for s in settlements if isinstance(s, Skip)]
    later = [s for s in settlements if isinstance(s, Later)]
    if queued:
        await conn.execute(
            """
            WITH rows AS (
                INSERT INTO outbox (recipient, conversation_id, purpose, message, template)
                SELECT q.recipient, q.conversation_id, 'alert', q.message, q.template
                FROM unnest($1::text[], $2::bigint[], $3::jsonb[], $4::jsonb[], $5::text[])
                    WITH ORDINALITY AS q(recipient, conversation_id, message, template, event_id, n)
                ORDER BY q.n
                RETURNING id, recipient
            ), numbered AS (
                SELECT id, row_number() OVER (ORDER BY id) AS n FROM rows
            )
            UPDATE events AS e SET processed_at = now(), outcome = 'queued',
                outbox_id = numbered.id, attempts = e.attempts + 1, last_error = NULL
            FROM unnest($5::text[]) WITH ORDINALITY AS q(event_id, n)
            JOIN numbered ON numbered.n = q.n
            WHERE e.id = q.event_id
            """,
            [q.recipient for q in queued],
            [q.conversation_id for q in queued],
            [without_nul(q.message) for q in queued],
            [without_nul(q.template) if q.template else None for q in queued],
            [q.event_id for q in queued],
        )
    if skipped:
        await conn.execute(
            """
            UPDATE events AS e SET processed_at = now(), outcome = 'skipped',
                skip_reason = s.reason, attempts = e.attempts + 1
            FROM unnest($1::text[], $2::text[]) AS s(event_id, reason)
            WHERE e.id = s.event_id
            """,
            [s.event_id for s in skipped],
            [s.reason for s in skipped],
        )
    if later:
        await conn.execute(
            """
            UPDATE events AS e SET attempts = e.attempts + 1, last_error = l.error,
                not_before = now() + make_interval(secs => l.delay)
            FROM unnest($1::text[], $2::float8[], $3::text[]) AS l(event_id, delay, error)
            WHERE e.id = l.event_id
            """,
            [s.event_id for s in later],
            [s.delay_seconds for s in later],
            [s.error[:1000] for s in later],
        )


# -- tracking (`python -m bot alerts status`, /metrics) -------------------------------

_STATE = """
    CASE
        WHEN e.processed_at IS NULL THEN 'pending'
        WHEN e.outcome = 'skipped' THEN 'skipped'
        WHEN o.status IN ('pending', 'sending') THEN 'queued'
        WHEN o.status = 'accepted' THEN 'sent'
        ELSE coalesce(o.status, 'queued')
    END
"""


@dataclass(frozen=True, slots=True)
class AlertStatus:
    event_id: str
    type: str
    client_id: str | None
    occurred_at: datetime
    # pending (not settled yet), skipped, queued, sent, delivered, read, failed
    state: str
    detail: str  # the skip reason, the failure code and message, or the pending retry
    recipient: str | None
    sent_as: str | None  # message (text) or template


async def statuses(
    conn: Conn,
    *,
    client_id: str | None = None,
    event_id: str | None = None,
    since: datetime | None = None,
    limit: int = 200,
) -> list[AlertStatus]:
    """Each alert's state, newest first."""
    rows = await conn.fetch(
        f"""
        SELECT e.id, e.type, e.client_id, e.occurred_at, {_STATE} AS state, e.skip_reason,
               e.attempts, e.last_error, e.not_before, o.error_code, o.error_message,
               o.recipient, o.sent_as
        FROM events AS e LEFT JOIN outbox AS o ON o.id = e.outbox_id
        WHERE ($1::text IS NULL OR e.client_id = $1)
          AND ($2::text IS NULL OR e.id = $2)
          AND ($3::timestamptz IS NULL OR e.received_at >= $3)
        ORDER BY e.received_at DESC, e.id DESC
        LIMIT $4
        """,
        client_id,
        event_id,
        since,
        limit,
    )
    out = []
    for r in rows:
        detail = ""
        if r["state"] == "skipped":
            detail = r["skip_reason"] or ""
        elif r["state"] == "failed":
            detail = f"{r['error_code']}: {r['error_message'] or ''}".strip()
        elif r["state"] == "pending" and r["last_error"]:
            detail = f"try {r['attempts'] + 1} at {r['not_before']:%Y-%m-%d %H:%M:%S} UTC: "
            detail += r["last_error"]
        out.append(
            AlertStatus(
                event_id=r["id"],
                type=r["type"],
                client_id=r["client_id"],
                occurred_at=r["occurred_at"],
                state=r["state"],
                detail=detail,
                recipient=r["recipient"],
                sent_as=r["sent_as"],
            )
        )
    return out


async def counts(conn: Conn, since: datetime) -> dict[tuple[str, str], int]:
    """Alerts received since `since` by (type, state); a skip's state names its reason
    (skipped_alerts_off), a failure its code (failed_131026)."""
    rows = await conn.fetch(
        f"""
        SELECT e.type, {_STATE} AS state, e.skip_reason, o.error_code, count(*) AS n
        FROM events AS e LEFT JOIN outbox AS o ON o.id = e.outbox_id
        WHERE e.received_at >= $1
        GROUP BY 1, 2, 3, 4
        """,
        since,
    )
    out: dict[tuple[str, str], int] = {}
    for r in rows:
        state = r["state"]
        if state == "skipped":
            state = f"skipped_{r['skip_reason']}"
        elif state == "failed":
            state = f"failed_{r['error_code']}"
        out[(r["type"], state)] = out.get((r["type"], state), 0) + int(r["n"])
    return out
