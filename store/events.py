"""Billing events (SPEC §4 format): reading what was emitted or received."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from store.inbox import without_nul


async def store(
    pool: asyncpg.Pool,
    *,
    event_id: str,
    event_type: str,
    occurred_at: datetime,
    client_id: str,
    data: dict[str, Any],
) -> bool:
    """Keep a received event for the alert worker; False when its id was already here
    (stored once, acted on once)."""
    stored = await pool.fetchval(
        """
        INSERT INTO events (id, type, occurred_at, client_id, data)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (id) DO NOTHING
        RETURNING true
        """,
        event_id,
        event_type,
        occurred_at,
        client_id,
        without_nul(data),
    )
    return bool(stored)


async def recent_for_client(
    pool: asyncpg.Pool, client_id: str, limit: int = 20
) -> list[dict[str, Any]]:
    """The client's latest events, newest first."""
    rows = await pool.fetch(
        """
        SELECT id, type, occurred_at, data FROM events
        WHERE client_id = $1
        ORDER BY occurred_at DESC, received_at DESC
        LIMIT $2
        """,
        client_id,
        limit,
    )
    return [dict(r) for r in rows]
