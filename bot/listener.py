"""Workers sleep until PostgreSQL NOTIFYs them (procrastinate's model), not in a busy poll.

A notification can be missed while the listening connection is being re-established, so
waits also time out after a while and the worker looks again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg

log = logging.getLogger(__name__)


class Wakeup:
    def __init__(self, pool: asyncpg.Pool, channel: str) -> None:
        self.pool = pool
        self.channel = channel
        self._event = asyncio.Event()
        self._conn: Any = None
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._connect()
        self._watch = asyncio.create_task(self._keep_alive(), name=f"listen-{self.channel}")

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        await self._release()

    def poke(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)
        self._event.clear()

    def _notified(self, *_: object) -> None:
        self._event.set()

    async def _connect(self) -> None:
        conn = await self.pool.acquire()
        try:
            await conn.add_listener(self.channel, self._notified)
        except BaseException:
            await self.pool.release(conn)
            raise
        self._conn = conn

    async def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(Exception):
            await conn.remove_listener(self.channel, self._notified)
        with contextlib.suppress(Exception):
            await self.pool.release(conn)

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(5.0)
            conn = self._conn
            if conn is not None and not conn.is_closed():
                continue
            log.warning("LISTEN %s connection lost, reconnecting", self.channel)
            await self._release()
            try:
                await self._connect()
            except (OSError, asyncpg.PostgresError) as e:
                log.warning("LISTEN %s reconnect failed: %s", self.channel, e)
                continue
            self._event.set()  # we may have missed notifications meanwhile
