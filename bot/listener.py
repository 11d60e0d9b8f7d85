"""Waking workers when there is work: this process's at once, other processes' through
PostgreSQL LISTEN/NOTIFY (procrastinate's model), never a busy poll.

NOTIFY is not issued inside the transactions that create work: PostgreSQL serialises the
commits of all notifying transactions on one global lock, which we measured capping the
whole pipeline. Instead a process wakes its own workers directly and sends at most one
NOTIFY per channel every few milliseconds, after its commits. A notification can be
missed (a process killed between commit and notify, a listener reconnecting), so waits
also time out and the worker looks again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg

log = logging.getLogger(__name__)

COALESCE_SECONDS = 0.02
RECONNECT_CHECK_SECONDS = 5.0


class Signals:
    def __init__(self, pool: asyncpg.Pool, *, coalesce_seconds: float = COALESCE_SECONDS) -> None:
        self.pool = pool
        self.coalesce_seconds = coalesce_seconds
        self._events: dict[str, asyncio.Event] = {}
        self._pending: set[str] = set()
        self._flush_task: asyncio.Task[None] | None = None
        self._conn: Any = None
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._connect()
        self._watch = asyncio.create_task(self._keep_alive(), name="signals-listen")

    async def stop(self) -> None:
        for task in (self._watch, self._flush_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._pending:
            with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await self._send_pending()
        await self._release()

    def notify(self, channel: str) -> None:
        """There is new work on `channel`: wake our workers now, everyone's shortly."""
        self._event(channel).set()
        self._pending.add(channel)
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = asyncio.create_task(self._flush(), name="signals-notify")

    async def wait(self, channel: str, timeout: float) -> None:
        """Until `channel` is signalled (by anyone) or `timeout` passes."""
        event = self._event(channel)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
        event.clear()

    def poke(self, channel: str) -> None:
        """Wake this process's workers only."""
        self._event(channel).set()

    def _event(self, channel: str) -> asyncio.Event:
        event = self._events.get(channel)
        if event is None:
            event = self._events[channel] = asyncio.Event()
        return event

    async def _flush(self) -> None:
        await asyncio.sleep(self.coalesce_seconds)
        try:
            await self._send_pending()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            # Other processes will find the work on their next timed look.
            log.warning("NOTIFY failed: %s", e)

    async def _send_pending(self) -> None:
        channels, self._pending = sorted(self._pending), set()
        async with self.pool.acquire() as conn:
            for channel in channels:
                await conn.execute("SELECT pg_notify($1, '')", channel)

    def _notified(self, _conn: object, _pid: int, channel: str, _payload: object) -> None:
        self._event(channel).set()

    async def _connect(self) -> None:
        conn = await self.pool.acquire()
        try:
            for channel in LISTENED:
                await conn.add_listener(channel, self._notified)
        except BaseException:
            await self.pool.release(conn)
            raise
        self._conn = conn

    async def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        for channel in LISTENED:
            with contextlib.suppress(Exception):
                await conn.remove_listener(channel, self._notified)
        with contextlib.suppress(Exception):
            await self.pool.release(conn)

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(RECONNECT_CHECK_SECONDS)
            conn = self._conn
            if conn is not None and not conn.is_closed():
                continue
            log.warning("LISTEN connection lost, reconnecting")
            await self._release()
            try:
                await self._connect()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
                log.warning("LISTEN reconnect failed: %s", e)
                continue
            for event in self._events.values():
                event.set()  # we may have missed notifications meanwhile


INBOX = "inbox"
OUTBOX = "outbox"
COMMANDS = "commands"
EVENTS = "events"
LISTENED = (INBOX, OUTBOX, COMMANDS, EVENTS)
