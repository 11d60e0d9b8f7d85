"""Live updates for the console's pages: a server-sent event stream that says when what
the pages show has changed (console.js then fetches the parts again)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import asyncpg
from aiohttp import web

from bot.console.auth import SESSION_ID, current_staff
from bot.webhook import POOL
from store import staff, transcript

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
    """Server-sent events: `change` whenever the queue's fingerprint (and, with
    ?conversation=N, that conversation's) moves — and once at the start, so a page drawn
    just before the stream opened misses nothing — and a comment every KEEPALIVE_SECONDS
    so proxies keep the stream open. The pool is used for a moment per poll, never held
    between polls. The stream ends when the browser goes, the service stops, or the
    session ends (logout, account disabled: checked every KEEPALIVE_SECONDS)."""
    current_staff(request)
    session_id = request[SESSION_ID]
    raw = request.query.get("conversation", "")
    if raw and not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
        raise web.HTTPBadRequest(text="conversation must be a conversation id")
    conversation_id = int(raw) if raw else None
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
    last: tuple[object, ...] | None = None
    written_at = checked_at = loop.time()
    try:
        while not stop.is_set():
            if request.transport is None or request.transport.is_closing():
                break
            fingerprint: tuple[object, ...] | None = None
            check_session = loop.time() - checked_at >= KEEPALIVE_SECONDS
            try:
                async with pool.acquire() as conn:
                    if check_session:
                        checked_at = loop.time()
                        if await staff.live_session(conn, session_id) is None:
                            break
                    fingerprint = await transcript.queue_fingerprint(conn)
                    if conversation_id is not None:
                        fingerprint += await transcript.conversation_fingerprint(
                            conn, conversation_id
                        )
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
                log.warning("console live updates: %r", e)
            if fingerprint is not None and fingerprint != last:
                last = fingerprint
                data = json.dumps([str(part) for part in fingerprint])
                await response.write(f"event: change\ndata: {data}\n\n".encode())
                written_at = loop.time()
            elif loop.time() - written_at >= KEEPALIVE_SECONDS:
                await response.write(b": keepalive\n\n")
                written_at = loop.time()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), POLL_SECONDS)
    except ConnectionResetError:
        pass  # the browser went away
    return response
