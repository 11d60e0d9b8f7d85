"""Live updates for the console's pages: a server-sent event stream that says when what
the pages show has changed (console.js then fetches the parts again)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import asyncpg
from aiohttp import web

from bot.console.auth import current_staff
from bot.webhook import POOL
from store import queue, staff

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
KEEPALIVE_SECONDS = 15.0

STOP: web.AppKey[asyncio.Event] = web.AppKey("console_live_stop", asyncio.Event)


def add_routes(app: web.Application) -> None:
    app[STOP] = asyncio.Event()
    app.on_shutdown.append(_end_streams)
    app.router.add_get("/staff/live", live)


async def _end_streams(app: web.Application) -> None:
    app[STOP].set()


async def live(request: web.Request) -> web.StreamResponse:
    """Server-sent events: `change` whenever the queue's fingerprint moves (and once at
    the start, so a page drawn just before the stream opened misses nothing), a comment
    every KEEPALIVE_SECONDS so proxies keep the stream open. The pool is used for a
    moment per poll, never held between polls. The stream ends when the browser goes,
    the service stops, or the session ends (logout, account disabled: checked with each
    keepalive)."""
    current_staff(request)
    session_id = request.get("session_id")
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    stop = request.app[STOP]
    pool = request.app[POOL]
    loop = asyncio.get_running_loop()
    last: tuple[Any, ...] | None = None
    written_at = loop.time()
    try:
        while not stop.is_set():
            if request.transport is None or request.transport.is_closing():
                break
            keepalive = loop.time() - written_at >= KEEPALIVE_SECONDS
            fingerprint: tuple[Any, ...] | None = None
            ended = False
            try:
                async with pool.acquire() as conn:
                    fingerprint = await queue.changes_since(conn)
                    ended = (
                        keepalive
                        and isinstance(session_id, str)
                        and await staff.live_session(conn, session_id) is None
                    )
                if ended:
                    break
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
                log.warning("console live updates: %r", e)
            if fingerprint is not None and fingerprint != last:
                last = fingerprint
                data = json.dumps([str(part) for part in fingerprint])
                await response.write(f"event: change\ndata: {data}\n\n".encode())
                written_at = loop.time()
            elif keepalive:
                await response.write(b": keepalive\n\n")
                written_at = loop.time()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), POLL_SECONDS)
    except ConnectionResetError:
        pass  # the browser went away
    return response
