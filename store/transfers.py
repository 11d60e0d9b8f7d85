"""Transfer requests' SQL (migration 017): record one holder's message, and match it with
the other holder's byte-identical one, in the turn's transaction."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta

from store.db import Conn


def text_hash(text: str) -> str:
    """The SHA-256 of the message exactly as it arrived (UTF-8 bytes): a different
    space, accent or dot is a different hash."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Request:
    conversation_id: int
    client_id: str
    role: str  # origin | destination
    origin_client_id: str
    destination_client_id: str
    service_label: str
    service_id: str | None
    text: str


@dataclass(frozen=True, slots=True)
class Recorded:
    """What recording a message came to."""

    id: int
    # The same holder sent the same text before, and it is still waiting: nothing new.
    duplicate: bool = False
    # The other holder's identical message was waiting: the pair, origin's side first.
    origin: Request | None = None
    destination: Request | None = None
    pair_key: str | None = None


async def record(conn: Conn, request: Request, window: timedelta) -> Recorded:
    """Keep this message for `window`, or match it with the other holder's identical
    one still waiting. Call in the turn's transaction."""
    digest = text_hash(request.text)
    # Two holders' messages with one text are recorded one after the other.
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('transfer:' || $1))", digest)
    await conn.execute(
        "UPDATE transfer_requests SET status = 'expired'"
        " WHERE text_sha256 = $1 AND status = 'pending' AND expires_at <= now()",
        digest,
    )
    waiting = await conn.fetch(
        """
        SELECT * FROM transfer_requests
        WHERE text_sha256 = $1 AND status = 'pending' AND text = $2
        ORDER BY id
        """,
        digest,
        request.text,
    )
    mine = next(
        (w for w in waiting if w["client_id"] == request.client_id and w["role"] == request.role),
        None,
    )
    if mine is not None:
        await _insert(conn, request, digest, window, status="duplicate")
        return Recorded(mine["id"], duplicate=True)
    other = next(
        (w for w in waiting if w["role"] != request.role and w["client_id"] != request.client_id),
        None,
    )
    if other is None:
        new_id = await _insert(conn, request, digest, window, status="pending")
        return Recorded(new_id)
    new_id = await _insert(
        conn, request, digest, window, status="matched", matched_with=other["id"]
    )
    pair_key = f"transfer:{min(new_id, other['id'])}:{max(new_id, other['id'])}"
    await conn.execute(
        "UPDATE transfer_requests SET status = 'matched', matched_with = $2, command_key = $3"
        " WHERE id = $1",
        other["id"],
        new_id,
        pair_key,
    )
    await conn.execute(
        "UPDATE transfer_requests SET command_key = $2 WHERE id = $1", new_id, pair_key
    )
    theirs = Request(
        conversation_id=other["conversation_id"],
        client_id=other["client_id"],
        role=other["role"],
        origin_client_id=other["origin_client_id"],
        destination_client_id=other["destination_client_id"],
        service_label=other["service_label"],
        service_id=other["service_id"],
        text=other["text"],
    )
    origin, destination = (request, theirs) if request.role == "origin" else (theirs, request)
    return Recorded(new_id, origin=origin, destination=destination, pair_key=pair_key)


async def _insert(
    conn: Conn,
    request: Request,
    digest: str,
    window: timedelta,
    *,
    status: str,
    matched_with: int | None = None,
) -> int:
    new_id = await conn.fetchval(
        """
        INSERT INTO transfer_requests (conversation_id, client_id, role, origin_client_id,
            destination_client_id, service_label, service_id, text, text_sha256, status,
            expires_at, matched_with)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, now() + $11::interval, $12)
        RETURNING id
        """,
        request.conversation_id,
        request.client_id,
        request.role,
        request.origin_client_id,
        request.destination_client_id,
        request.service_label,
        request.service_id,
        request.text,
        digest,
        status,
        window,
        matched_with,
    )
    return int(new_id)


async def decided(conn: Conn, pair_key: str, outcome: str) -> None:
    """What the pair's transfer came to, for staff."""
    await conn.execute(
        "UPDATE transfer_requests SET outcome = $2, decided_at = now() WHERE command_key = $1",
        pair_key,
        outcome[:500],
    )


@dataclass(frozen=True, slots=True)
class Expired:
    id: int
    conversation_id: int
    service_label: str


async def expire(conn: Conn) -> list[Expired]:
    """Requests whose window passed unanswered, marked expired (call in the transaction
    that tells their senders, so each is told once)."""
    rows = await conn.fetch(
        """
        UPDATE transfer_requests SET status = 'expired'
        WHERE id IN (SELECT id FROM transfer_requests
                     WHERE status = 'pending' AND expires_at <= now()
                     ORDER BY id LIMIT 200 FOR UPDATE SKIP LOCKED)
        RETURNING id, conversation_id, service_label
        """
    )
    return [Expired(r["id"], r["conversation_id"], r["service_label"]) for r in rows]
