"""The WHMCS adapter's SQL (`bot/whmcs/`): the phone → client index and the log of
writes that must happen at most once. The tables are in `006_whmcs.sql`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from store.db import Conn

Executor = Conn | asyncpg.Pool


@dataclass(frozen=True, slots=True)
class IndexedClient:
    client_id: str
    phone_key: str | None
    phone: str
    name: str
    email: str
    status: str  # WHMCS's: Active, Inactive, Closed
    verified: bool


@dataclass(frozen=True, slots=True)
class RequestRecord:
    request_id: str
    action: str
    client_id: str
    params: dict[str, Any]
    status: str  # pending, done, unknown
    result: dict[str, Any] | None
    error: str | None
    created_at: datetime
    updated_at: datetime


# -- the phone index ----------------------------------------------------------------------


async def upsert_client(db: Executor, client: IndexedClient) -> None:
    await db.execute(
        """
        INSERT INTO whmcs_clients
            (client_id, phone_key, phone, name, email, status, verified, synced_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, now())
        ON CONFLICT (client_id) DO UPDATE SET phone_key = $2, phone = $3, name = $4,
            email = $5, status = $6, verified = $7, synced_at = now()
        """,
        client.client_id,
        client.phone_key,
        client.phone,
        client.name,
        client.email,
        client.status,
        client.verified,
    )


async def delete_client(db: Executor, client_id: str) -> None:
    await db.execute("DELETE FROM whmcs_clients WHERE client_id = $1", client_id)


async def clients_by_phone_key(db: Executor, key: str, *, limit: int = 2) -> list[IndexedClient]:
    """The accounts (closed ones excepted) whose phone has this key, at most `limit`."""
    rows = await db.fetch(
        """
        SELECT client_id, phone_key, phone, name, email, status, verified FROM whmcs_clients
        WHERE phone_key = $1 AND status <> 'Closed'
        ORDER BY client_id LIMIT $2
        """,
        key,
        limit,
    )
    return [IndexedClient(**dict(r)) for r in rows]


async def indexed_client(db: Executor, client_id: str) -> IndexedClient | None:
    row = await db.fetchrow(
        """
        SELECT client_id, phone_key, phone, name, email, status, verified FROM whmcs_clients
        WHERE client_id = $1
        """,
        client_id,
    )
    return IndexedClient(**dict(row)) if row else None


async def database_now(db: Executor) -> datetime:
    """The database's clock: what `synced_at` is compared with."""
    now: datetime = await db.fetchval("SELECT now()")
    return now


async def remove_not_synced_since(db: Executor, since: datetime) -> int:
    """Forget clients a complete sync started at `since` did not see (deleted in WHMCS)."""
    removed: int = await db.fetchval(
        """
        WITH gone AS (DELETE FROM whmcs_clients WHERE synced_at < $1 RETURNING 1)
        SELECT count(*) FROM gone
        """,
        since,
    )
    return removed


# -- writes that must happen at most once ---------------------------------------------------


async def request_record(db: Executor, request_id: str, action: str) -> RequestRecord | None:
    row = await db.fetchrow(
        "SELECT * FROM whmcs_requests WHERE request_id = $1 AND action = $2", request_id, action
    )
    return _record(row) if row else None


async def claim_request(
    db: Executor, request_id: str, action: str, client_id: str, params: dict[str, Any]
) -> RequestRecord | None:
    """Write the `pending` row that must exist before the call is made. None when this
    caller wrote it (and may call WHMCS); otherwise the row someone wrote before."""
    inserted = await db.fetchval(
        """
        INSERT INTO whmcs_requests (request_id, action, client_id, params, status)
        VALUES ($1, $2, $3, $4, 'pending')
        ON CONFLICT (request_id, action) DO NOTHING
        RETURNING true
        """,
        request_id,
        action,
        client_id,
        params,
    )
    if inserted:
        return None
    return await request_record(db, request_id, action)


async def finish_request(
    db: Executor, request_id: str, action: str, result: dict[str, Any]
) -> None:
    """WHMCS acted and answered: `result` is what a repeat of the request gets."""
    await db.execute(
        """
        UPDATE whmcs_requests SET status = 'done', result = $3, error = NULL, updated_at = now()
        WHERE request_id = $1 AND action = $2
        """,
        request_id,
        action,
        result,
    )


async def mark_unknown(db: Executor, request_id: str, action: str, error: str) -> None:
    """The call left and its answer was lost: WHMCS may or may not have acted."""
    await db.execute(
        """
        UPDATE whmcs_requests SET status = 'unknown', error = $3, updated_at = now()
        WHERE request_id = $1 AND action = $2 AND status = 'pending'
        """,
        request_id,
        action,
        error,
    )


async def release_request(db: Executor, request_id: str, action: str) -> None:
    """WHMCS certainly did not act (it refused, or the call never left): forget the claim
    so that the same request may be tried again."""
    await db.execute(
        "DELETE FROM whmcs_requests WHERE request_id = $1 AND action = $2 AND status = 'pending'",
        request_id,
        action,
    )


async def unresolved_requests(db: Executor) -> list[RequestRecord]:
    """Writes whose outcome nobody knows, oldest first: for a person to check in WHMCS."""
    rows = await db.fetch(
        "SELECT * FROM whmcs_requests WHERE status <> 'done' ORDER BY created_at, request_id"
    )
    return [_record(r) for r in rows]


async def upgrade_invoice_service(db: Executor, client_id: str, invoice_id: str) -> str | None:
    """The service of `client_id` an upgrade invoice we had WHMCS create is for."""
    service_id: str | None = await db.fetchval(
        """
        SELECT result ->> 'service_id' FROM whmcs_requests
        WHERE action = 'UpgradeProduct' AND result ->> 'invoice_id' = $2 AND client_id = $1
        ORDER BY updated_at DESC LIMIT 1
        """,
        client_id,
        invoice_id,
    )
    return service_id


async def forget_everything(db: Executor) -> None:
    """Empty the index and the request log: for tests, or after pointing the service at
    another WHMCS installation (whose ids mean other records)."""
    await db.execute("TRUNCATE whmcs_clients, whmcs_requests")


def _record(row: asyncpg.Record) -> RequestRecord:
    return RequestRecord(
        request_id=row["request_id"],
        action=row["action"],
        client_id=row["client_id"],
        params=row["params"],
        status=row["status"],
        result=row["result"],
        error=row["error"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )
