"""The command queue's SQL (migration 009): billing commands stored with the turn that
asks for them, claimed by the command worker, their outcomes recorded together with the
inbox row that tells the conversation — and, for an unknown outcome, the staff task.

Also the other way one conversation's turn reaches another: a system message into that
conversation's inbox (flows.commands.Notify).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from store import queue
from store.db import Conn
from store.inbox import without_nul


@dataclass(frozen=True, slots=True)
class StaffTask:
    reason: str
    key: str
    client_id: str | None
    detail: Mapping[str, Any]
    priority: str = "normal"


@dataclass(frozen=True, slots=True)
class ClaimedCommand:
    id: int
    key: str
    conversation_id: int
    reply_to: str
    kind: str
    params: dict[str, Any]
    attempts: int  # including this one
    # It was 'running' under a worker whose heartbeat stopped (killed mid-call).
    resumed: bool
    created_at: datetime


async def enqueue(
    conn: Conn,
    *,
    key: str,
    conversation_id: int,
    reply_to: str,
    kind: str,
    params: Mapping[str, Any],
) -> bool:
    """Queue a command in the caller's transaction; False when its key is already queued
    (a repeated confirmation), which changes nothing."""
    inserted = await conn.fetchval(
        """
        INSERT INTO commands (key, conversation_id, reply_to, kind, params)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (key) DO NOTHING
        RETURNING true
        """,
        key,
        conversation_id,
        reply_to,
        kind,
        without_nul(dict(params)),
    )
    return bool(inserted)


async def claim(
    conn: Conn, limit: int, *, worker: str, stalled_after_seconds: float
) -> list[ClaimedCommand]:
    """Up to `limit` commands that are due, or whose worker stopped beating, marked
    running for `worker` (committed by the caller before any billing call)."""
    rows = await conn.fetch(
        """
        WITH due AS (
            SELECT id, status FROM commands
            WHERE (status = 'pending' AND not_before <= now())
               OR (status = 'running'
                   AND heartbeat_at < now() - make_interval(secs => $3))
            ORDER BY id
            LIMIT $1
            FOR UPDATE SKIP LOCKED
        )
        UPDATE commands AS c SET status = 'running', attempts = c.attempts + 1,
            claimed_by = $2, heartbeat_at = now()
        FROM due
        WHERE c.id = due.id
        RETURNING c.id, c.key, c.conversation_id, c.reply_to, c.kind, c.params, c.attempts,
                  due.status = 'running' AS resumed, c.created_at
        """,
        limit,
        worker,
        stalled_after_seconds,
    )
    return [
        ClaimedCommand(
            id=r["id"],
            key=r["key"],
            conversation_id=r["conversation_id"],
            reply_to=r["reply_to"],
            kind=r["kind"],
            params=r["params"],
            attempts=r["attempts"],
            resumed=r["resumed"],
            created_at=r["created_at"],
        )
        for r in sorted(rows, key=lambda r: int(r["id"]))
    ]


async def heartbeat(conn: Conn, ids: list[int], *, worker: str) -> None:
    """This worker is alive and still waiting on these commands' billing calls."""
    await conn.execute(
        """
        UPDATE commands SET heartbeat_at = now()
        WHERE id = ANY($1::bigint[]) AND status = 'running' AND claimed_by = $2
        """,
        ids,
        worker,
    )


async def retry_later(
    conn: Conn, command: ClaimedCommand, *, worker: str, delay_seconds: float, error: str
) -> None:
    """The billing system could not be reached and nothing happened: try again later."""
    await conn.execute(
        """
        UPDATE commands SET status = 'pending', last_error = $3, heartbeat_at = NULL,
            not_before = now() + make_interval(secs => $4)
        WHERE id = $1 AND status = 'running' AND claimed_by = $2
        """,
        command.id,
        worker,
        error[:2000],
        delay_seconds,
    )


async def finish(
    conn: Conn,
    command: ClaimedCommand,
    *,
    worker: str,
    status: str,
    result: Mapping[str, Any],
    error: str | None,
    message: Mapping[str, Any],
    staff_task: StaffTask | None,
) -> bool:
    """Record the outcome and, in the same transaction, queue `message` (the outcome as a
    system message) in the conversation's inbox and open `staff_task` if given. False
    when another worker took the command over meanwhile (this worker was presumed dead):
    then nothing is written, and the outcome is that worker's to tell."""
    async with conn.transaction():
        finished = await conn.fetchval(
            """
            UPDATE commands SET status = $3, result = $4, last_error = $5,
                finished_at = now(), heartbeat_at = NULL
            WHERE id = $1 AND status = 'running' AND claimed_by = $2
            RETURNING true
            """,
            command.id,
            worker,
            status,
            without_nul(dict(result)),
            error[:2000] if error else None,
        )
        if not finished:
            return False
        await enqueue_system_message(conn, command.conversation_id, str(message["wamid"]), message)
        if staff_task is not None:
            await queue.escalate(
                conn,
                command.conversation_id,
                staff_task.client_id,
                staff_task.reason,
                staff_task.detail,
                key=staff_task.key,
                priority=staff_task.priority,
            )
    return True


async def enqueue_system_message(
    conn: Conn, conversation_id: int, wamid: str, message: Mapping[str, Any]
) -> bool:
    """A message the bot writes into a conversation's inbox (an outcome, a signal from
    another conversation), handled in that conversation's order. The wamid is unique:
    written twice, it is there once. False when it already was (or the conversation does
    not exist)."""
    inserted = await conn.fetchval(
        """
        INSERT INTO inbox (wamid, conversation_key, message)
        SELECT $2, c.key, $3 FROM conversations AS c
        WHERE c.id = (SELECT coalesce(merged_into, id) FROM conversations WHERE id = $1)
        ON CONFLICT (wamid) DO NOTHING
        RETURNING true
        """,
        conversation_id,
        wamid,
        without_nul(dict(message)),
    )
    return bool(inserted)
