"""Statuses of concurrent webhooks written together: every request answered after the
commit that holds its statuses, errors reach every waiting request."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
import pytest

from bot.status_writer import StatusWriter
from flows.outbound import Text, to_json
from store import turns
from store.db import create_pool
from store.inbox import Status


async def _sent_rows(pool: asyncpg.Pool, n: int) -> list[int]:
    ids = []
    async with pool.acquire() as conn, conn.transaction():
        for i in range(n):
            recipient = f"54911{i:08d}"
            conv = await turns.lock_conversation(
                conn,
                recipient,
                wa_id=recipient,
                user_id=None,
                profile_name=None,
                inbound_at=datetime.now(UTC),
            )
            await turns.queue_replies(
                conn,
                conversation_id=conv.id,
                inbox_id=None,
                recipient=recipient,
                replies=[turns.OutgoingRow(to_json(Text("hola")), None)],
            )
    await pool.execute("UPDATE outbox SET status = 'accepted', wamid = 'wamid.' || id")
    for r in await pool.fetch("SELECT id FROM outbox ORDER BY id"):
        ids.append(r["id"])
    return ids


async def test_concurrent_requests_are_all_applied(pool: asyncpg.Pool) -> None:
    ids = await _sent_rows(pool, 60)
    writer = StatusWriter(pool, max_send_attempts=8)
    results = await asyncio.gather(
        *(
            writer.apply([Status(f"wamid.{i}", status, i, None, None, None)])
            for i in ids
            for status in ("delivered", "sent")
        )
    )
    assert all(r.applied >= 1 for r in results)
    statuses = {r["status"] for r in await pool.fetch("SELECT status FROM outbox")}
    assert statuses == {"delivered"}  # the late "sent" never moved a row back


async def test_a_failed_write_fails_every_waiting_request(
    pool: asyncpg.Pool, database_url: str
) -> None:
    ids = await _sent_rows(pool, 5)
    broken = await create_pool(database_url, min_size=1, max_size=1)
    broken.terminate()
    writer = StatusWriter(broken, max_send_attempts=8)
    outcomes = await asyncio.gather(
        *(writer.apply([Status(f"wamid.{i}", "sent", i, None, None, None)]) for i in ids),
        return_exceptions=True,
    )
    assert all(isinstance(o, asyncpg.InterfaceError) for o in outcomes), outcomes
    with pytest.raises(asyncpg.InterfaceError):
        await writer.apply([Status("wamid.x", "sent", ids[0], None, None, None)])
    assert {r["status"] for r in await pool.fetch("SELECT status FROM outbox")} == {"accepted"}
