"""Broadcasts' SQL: a broadcast row per id, one `broadcast_recipients` row per client of
the segment (queued with its outbox row in the same transaction, or skipped with the
reason), so a second run with the same id sends nobody anything twice and a run cut short
goes on where it stopped."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from store.db import Conn
from store.inbox import without_nul


class BroadcastMismatch(ValueError):
    """The id is taken by a broadcast of another template, segment or parameters."""


@dataclass(frozen=True, slots=True)
class Recipient:
    client_id: str
    # Queued: where to, in which conversation (None: none yet), and the message.
    recipient: str | None = None
    conversation_id: int | None = None
    message: dict[str, Any] | None = None
    # Skipped: why.
    skip_reason: str | None = None


async def start(
    conn: Conn, broadcast_id: str, template: str, segment: str, params: Sequence[str]
) -> bool:
    """Record the broadcast; True when new. The same id with anything else different is
    refused: it would not be the same broadcast."""
    row = await conn.fetchrow(
        """
        INSERT INTO broadcasts (id, template, segment, params) VALUES ($1, $2, $3, $4)
        ON CONFLICT (id) DO UPDATE SET id = EXCLUDED.id
        RETURNING template, segment, params, (xmax = 0) AS new
        """,
        broadcast_id,
        template,
        segment,
        list(params),
    )
    assert row is not None
    if (row["template"], row["segment"], list(row["params"])) != (template, segment, list(params)):
        raise BroadcastMismatch(
            f"broadcast {broadcast_id!r} was {row['template']} to {row['segment']} with "
            f"{list(row['params'])}; use another --id for a different broadcast"
        )
    return bool(row["new"])


async def plan(conn: Conn, broadcast_id: str, planned: int) -> None:
    await conn.execute(
        "UPDATE broadcasts SET planned = greatest(coalesce(planned, 0), $2) WHERE id = $1",
        broadcast_id,
        planned,
    )


async def handled(conn: Conn, broadcast_id: str) -> set[str]:
    """Clients already queued or skipped in this broadcast."""
    rows = await conn.fetch(
        "SELECT client_id FROM broadcast_recipients WHERE broadcast_id = $1", broadcast_id
    )
    return {r["client_id"] for r in rows}


async def numbers(conn: Conn, broadcast_id: str) -> set[str]:
    """The addresses this broadcast already queued a message to."""
    rows = await conn.fetch(
        """
        SELECT o.recipient FROM broadcast_recipients AS b JOIN outbox AS o ON o.id = b.outbox_id
        WHERE b.broadcast_id = $1
        """,
        broadcast_id,
    )
    return {r["recipient"] for r in rows}


async def queue(conn: Conn, broadcast_id: str, recipients: Sequence[Recipient]) -> int:
    """Record a chunk of the segment in one transaction: each client once (a client
    already recorded by an earlier run is left alone), and an outbox row for each one
    queued. Returns how many messages were queued."""
    async with conn.transaction():
        new = await conn.fetch(
            """
            INSERT INTO broadcast_recipients (broadcast_id, client_id, skip_reason)
            SELECT $1, c, r FROM unnest($2::text[], $3::text[]) AS x(c, r)
            ON CONFLICT DO NOTHING
            RETURNING client_id
            """,
            broadcast_id,
            [r.client_id for r in recipients],
            [r.skip_reason for r in recipients],
        )
        fresh = {r["client_id"] for r in new}
        sending = [r for r in recipients if r.client_id in fresh and r.message is not None]
        if not sending:
            return 0
        await conn.execute(
            """
            WITH sent AS (
                INSERT INTO outbox (recipient, conversation_id, purpose, message)
                SELECT x.recipient, x.conv, 'broadcast', x.message
                FROM unnest($2::text[], $3::bigint[], $4::jsonb[]) WITH ORDINALITY
                    AS x(recipient, conv, message, n)
                ORDER BY x.n
                RETURNING id, recipient
            )
            UPDATE broadcast_recipients AS b SET outbox_id = sent.id
            FROM sent JOIN unnest($2::text[], $5::text[]) AS m(recipient, client_id)
                ON m.recipient = sent.recipient
            WHERE b.broadcast_id = $1 AND b.client_id = m.client_id
            """,
            broadcast_id,
            [r.recipient for r in sending],
            [r.conversation_id for r in sending],
            [without_nul(r.message) for r in sending],
            [r.client_id for r in sending],
        )
    return len(sending)


async def finish(conn: Conn, broadcast_id: str) -> None:
    await conn.execute(
        "UPDATE broadcasts SET finished_at = coalesce(finished_at, now()) WHERE id = $1",
        broadcast_id,
    )


@dataclass(slots=True)
class Progress:
    planned: int
    queued: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    waiting: int = 0  # queued, not yet taken by WhatsApp
    sent: int = 0  # accepted by WhatsApp (sent, delivered or read)
    failed: dict[str, int] = field(default_factory=dict)  # by error code

    @property
    def handled(self) -> int:
        return self.queued + sum(self.skipped.values())

    @property
    def settled(self) -> int:
        return self.sent + sum(self.failed.values())


async def progress(conn: Conn, broadcast_id: str) -> Progress:
    planned = await conn.fetchval("SELECT planned FROM broadcasts WHERE id = $1", broadcast_id)
    rows = await conn.fetch(
        """
        SELECT b.skip_reason, o.status, o.error_code, count(*) AS n
        FROM broadcast_recipients AS b LEFT JOIN outbox AS o ON o.id = b.outbox_id
        WHERE b.broadcast_id = $1
        GROUP BY 1, 2, 3
        """,
        broadcast_id,
    )
    report = Progress(planned=planned or 0)
    for r in rows:
        n = int(r["n"])
        if r["skip_reason"] is not None:
            report.skipped[r["skip_reason"]] = report.skipped.get(r["skip_reason"], 0) + n
            continue
        report.queued += n
        if r["status"] in ("pending", "sending", None):
            report.waiting += n
        elif r["status"] == "failed":
            code = str(r["error_code"] or "unknown")
            report.failed[code] = report.failed.get(code, 0) + n
        else:
            report.sent += n
    return report
