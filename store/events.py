"""Billing events (SPEC §4 format): reading what was emitted or received."""

from __future__ import annotations

from typing import Any

import asyncpg


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
