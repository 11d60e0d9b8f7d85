"""The WHMCS adapter's SQL (`bot/whmcs/`): the phone → client index, where a sync pass
of it stands, and the log of writes that must happen at most once. The tables are in
`006_whmcs.sql`, `013_whmcs_sync_progress.sql` and `016_upgrade_expiry.sql`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from store.db import Conn

Executor = Conn | asyncpg.Pool

# pg_try_advisory_lock key of a sync pass (one at a time: they share the progress row).
_SYNC_LOCK_KEY = 7_201_115_013


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
class SyncProgress:
    """Where the sync pass under way stands (`whmcs_sync_progress`)."""

    started_at: datetime
    next_offset: int  # GetClients rows read: the next page's limitstart
    last_client_id: int  # the highest client id read (0: none yet)
    clients: int
    with_phone: int


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


@dataclass(frozen=True, slots=True)
class PlacedUpgradeRecord:
    """An upgrade the bot had WHMCS invoice: an UpgradeProduct request done, with the
    invoice WHMCS made for it."""

    request_id: str
    client_id: str
    service_id: str
    invoice_id: str
    product_id: str
    product_name: str
    created_at: datetime


# -- the phone index ----------------------------------------------------------------------


async def upsert_clients(db: Executor, clients: Sequence[IndexedClient], read_at: datetime) -> None:
    """Write clients as WHMCS gave them at `read_at` (the database's clock, taken before
    asking). A row read later than that — a client event's refresh while a sync page was
    being read — is newer and stays."""
    await db.execute(
        """
        INSERT INTO whmcs_clients
            (client_id, phone_key, phone, name, email, status, verified, synced_at)
        SELECT c.*, $8 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],
                                   $5::text[], $6::text[], $7::boolean[]) AS c
        ON CONFLICT (client_id) DO UPDATE SET phone_key = EXCLUDED.phone_key,
            phone = EXCLUDED.phone, name = EXCLUDED.name, email = EXCLUDED.email,
            status = EXCLUDED.status, verified = EXCLUDED.verified,
            synced_at = EXCLUDED.synced_at
        WHERE whmcs_clients.synced_at <= EXCLUDED.synced_at
        """,
        [c.client_id for c in clients],
        [c.phone_key for c in clients],
        [c.phone for c in clients],
        [c.name for c in clients],
        [c.email for c in clients],
        [c.status for c in clients],
        [c.verified for c in clients],
        read_at,
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


# -- a sync pass's progress ---------------------------------------------------------------


@contextlib.asynccontextmanager
async def sync_lock(pool: asyncpg.Pool) -> AsyncIterator[bool]:
    """Hold the right to run a sync pass, if nobody else does: yields whether it is held.
    A session lock on a connection kept for the pass, so a process that dies lets go."""
    async with pool.acquire() as conn:
        held: bool = await conn.fetchval("SELECT pg_try_advisory_lock($1)", _SYNC_LOCK_KEY)
        try:
            yield held
        finally:
            if held:
                # Pooled connections are not reset on release: never leave the lock on one.
                await conn.execute("SELECT pg_advisory_unlock($1)", _SYNC_LOCK_KEY)


async def begin_sync(db: Executor) -> SyncProgress:
    """The pass under way, or a new one starting now."""
    row = await db.fetchrow(
        """
        WITH new AS (
            INSERT INTO whmcs_sync_progress DEFAULT VALUES ON CONFLICT DO NOTHING RETURNING *
        )
        SELECT started_at, next_offset, last_client_id, clients, with_phone FROM new
        UNION ALL
        SELECT started_at, next_offset, last_client_id, clients, with_phone
        FROM whmcs_sync_progress
        LIMIT 1
        """
    )
    assert row is not None
    return SyncProgress(**dict(row))


async def sync_progress(db: Executor) -> SyncProgress | None:
    row = await db.fetchrow(
        """
        SELECT started_at, next_offset, last_client_id, clients, with_phone
        FROM whmcs_sync_progress
        """
    )
    return SyncProgress(**dict(row)) if row else None


async def save_sync_page(
    pool: asyncpg.Pool,
    clients: Sequence[IndexedClient],
    gone: Sequence[str],
    read_at: datetime,
    progress: SyncProgress,
) -> None:
    """One page of a pass, at once: the clients read (at `read_at`), those WHMCS no
    longer had, and the progress past them. A pass cut short resumes after the last page
    saved, and never counts a client twice."""
    async with pool.acquire() as conn, conn.transaction():
        if clients:
            await upsert_clients(conn, clients, read_at)
        if gone:
            await conn.execute(
                "DELETE FROM whmcs_clients WHERE client_id = ANY($1::text[])", list(gone)
            )
        await conn.execute(
            """
            UPDATE whmcs_sync_progress SET next_offset = $1, last_client_id = $2,
                clients = $3, with_phone = $4, updated_at = now()
            """,
            progress.next_offset,
            progress.last_client_id,
            progress.clients,
            progress.with_phone,
        )


async def finish_sync(pool: asyncpg.Pool, *, remove_unseen: bool) -> int:
    """End the pass under way; with `remove_unseen` (the pass saw every client), forget
    the clients it did not see. Returns how many were forgotten."""
    async with pool.acquire() as conn, conn.transaction():
        started: datetime | None = await conn.fetchval(
            "DELETE FROM whmcs_sync_progress RETURNING started_at"
        )
        if started is None or not remove_unseen:
            return 0
        return await remove_not_synced_since(conn, started)


async def forget_sync_progress(db: Executor) -> None:
    """Drop the pass under way: the next sync starts from the first client."""
    await db.execute("DELETE FROM whmcs_sync_progress")


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


_PLACED_UPGRADE = """
    SELECT request_id, client_id, result ->> 'service_id' AS service_id,
           result ->> 'invoice_id' AS invoice_id,
           coalesce(result -> 'product' ->> 'id', '') AS product_id,
           coalesce(result -> 'product' ->> 'name', '') AS product_name, created_at
    FROM whmcs_requests
    WHERE action = 'UpgradeProduct' AND status = 'done' AND result ->> 'invoice_id' IS NOT NULL
"""


async def latest_placed_upgrade(
    db: Executor, client_id: str, service_id: str
) -> PlacedUpgradeRecord | None:
    """The newest upgrade of this client's service the bot had WHMCS invoice, unless
    expiring has dealt with it (voided, or found settled)."""
    row = await db.fetchrow(
        f"""{_PLACED_UPGRADE}
            AND client_id = $1 AND result ->> 'service_id' = $2 AND expiry IS NULL
            ORDER BY created_at DESC, request_id DESC LIMIT 1""",
        client_id,
        service_id,
    )
    return _placed_upgrade(row) if row else None


async def placed_upgrade_of_invoice(
    db: Executor, client_id: str, invoice_id: str
) -> PlacedUpgradeRecord | None:
    """The upgrade of `client_id` the bot placed that WHMCS billed on `invoice_id`."""
    row = await db.fetchrow(
        f"""{_PLACED_UPGRADE}
            AND client_id = $1 AND result ->> 'invoice_id' = $2
            ORDER BY updated_at DESC LIMIT 1""",
        client_id,
        invoice_id,
    )
    return _placed_upgrade(row) if row else None


async def claim_expiring_upgrades(
    db: Executor, placed_before: datetime, *, lease: timedelta, limit: int
) -> list[PlacedUpgradeRecord]:
    """Up to `limit` upgrades the bot placed before `placed_before` that expiring has not
    dealt with, oldest first, now claimed by the caller: no other process gets them until
    they are finished or released, or the claim is older than `lease` (its holder died).
    Rows another process is claiming at this instant are skipped, not waited for."""
    rows = await db.fetch(
        """
        UPDATE whmcs_requests SET expiry_claimed_at = now()
        WHERE action = 'UpgradeProduct' AND request_id IN (
            SELECT request_id FROM whmcs_requests
            WHERE action = 'UpgradeProduct' AND status = 'done' AND expiry IS NULL
                AND result ->> 'invoice_id' IS NOT NULL AND created_at < $1
                AND (expiry_claimed_at IS NULL OR expiry_claimed_at < now() - $2::interval)
            ORDER BY created_at, request_id
            LIMIT $3
            FOR UPDATE SKIP LOCKED)
        RETURNING request_id, client_id, result ->> 'service_id' AS service_id,
            result ->> 'invoice_id' AS invoice_id,
            coalesce(result -> 'product' ->> 'id', '') AS product_id,
            coalesce(result -> 'product' ->> 'name', '') AS product_name, created_at
        """,
        placed_before,
        lease,
        limit,
    )
    placed = [_placed_upgrade(r) for r in rows]
    return sorted(placed, key=lambda p: (p.created_at, p.request_id))


async def finish_expiry(db: Executor, request_id: str, outcome: str) -> None:
    """Expiring is done with this upgrade: `voided`, `settled` or `gone`."""
    await db.execute(
        """
        UPDATE whmcs_requests SET expiry = $2, expiry_at = now(), expiry_claimed_at = NULL
        WHERE request_id = $1 AND action = 'UpgradeProduct'
        """,
        request_id,
        outcome,
    )


async def release_expiry(db: Executor, request_ids: Sequence[str]) -> None:
    """Give claimed upgrades back untouched: the next run looks at them."""
    await db.execute(
        """
        UPDATE whmcs_requests SET expiry_claimed_at = NULL
        WHERE request_id = ANY($1::text[]) AND action = 'UpgradeProduct' AND expiry IS NULL
        """,
        list(request_ids),
    )


async def forget_everything(db: Executor) -> None:
    """Empty the index, its sync progress and the request log: for tests, or after
    pointing the service at another WHMCS installation (whose ids mean other records)."""
    await db.execute("TRUNCATE whmcs_clients, whmcs_sync_progress, whmcs_requests")


def _placed_upgrade(row: asyncpg.Record) -> PlacedUpgradeRecord:
    return PlacedUpgradeRecord(
        request_id=row["request_id"],
        client_id=row["client_id"],
        service_id=row["service_id"],
        invoice_id=row["invoice_id"],
        product_id=row["product_id"],
        product_name=row["product_name"],
        created_at=row["created_at"],
    )


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
