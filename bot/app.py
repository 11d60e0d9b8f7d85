"""The aiohttp application: webhook, health, metrics, and the background workers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from bot import events, metrics, webhook
from bot.alerts import AlertWorker
from bot.commands import CommandWorker
from bot.config import Settings
from bot.console import setup_console
from bot.dispatcher import Dispatcher
from bot.listener import Signals
from bot.sender import Sender
from bot.status_writer import StatusWriter
from bot.upkeep import Upkeep
from bot.wa_client import CloudAPI
from bot.webhook import BILLING, POOL, SETTINGS, SIGNALS, STATUS_WRITER
from flows.billing import Billing
from flows.catalog import default_catalog
from flows.pricing import Policy
from store import alerts, db, queue
from store.billing_local import LocalBilling
from store.migrate import migrate
from store.outbox import counts_by_status, sending_pause

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def no_500(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Whatever breaks inside, the caller gets a clear JSON answer, never a bare 500."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
        log.error("%s %s: service unavailable: %s", request.method, request.path, e)
        return web.json_response({"error": "temporarily unavailable"}, status=503)
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return web.json_response({"error": "temporarily unavailable"}, status=503)


def make_billing(settings: Settings, pool: asyncpg.Pool) -> Billing:
    if settings.billing_backend == "local":
        return LocalBilling(
            pool,
            default_region=settings.default_region,
            policy=Policy(settings.upgrade_pricing),
            panel_url=settings.panel_url,
            timezone=settings.display_timezone,
        )
    from bot.whmcs import WhmcsBilling

    return WhmcsBilling(settings, pool)


def pool_size(settings: Settings, *, http: bool = True, workers: bool = True) -> int:
    """Connections a process needs: webhook handlers share 12; a dispatcher worker holds
    one for its batch, the batch's billing reads up to DISPATCH_BATCH_READERS, the sender
    about 4 (claims, results, sweeps, pacing), the command worker 2 (claims, heartbeats,
    outcomes; the billing calls' own short writes share the rest), the alert worker 1
    for its batch and up to 4 for its billing lookups (local backend)."""
    size = 12 if http else 0
    if workers:
        size += settings.dispatch_concurrency + settings.dispatch_batch_readers + 4 + 2 + 1 + 4
    return max(size, 2)


async def open_pool(settings: Settings, *, size: int | None = None) -> asyncpg.Pool:
    dsn = await asyncio.to_thread(db.resolve_database_url, settings.database_url, settings.data_dir)
    # Every connection is opened at start and kept: a burst of webhooks then finds them
    # ready instead of waiting for new ones (connect, authenticate, codecs: about 280 ms
    # for the first 32 concurrent webhooks of a fresh process, measured).
    size = size or pool_size(settings)
    pool = await db.create_pool(dsn, min_size=size, max_size=size)
    async with pool.acquire() as conn:
        await migrate(conn)
    return pool


def build_app(settings: Settings, *, workers: bool = True, http: bool = True) -> web.Application:
    """The service: the HTTP endpoints and, with `workers`, the dispatcher, the sender and
    the command worker running beside them. `http=False` is a background process
    (nothing is served; the pool is sized for the workers alone)."""
    app = web.Application(client_max_size=settings.webhook_max_bytes, middlewares=[no_500])
    app[SETTINGS] = settings
    app.router.add_get("/webhook", webhook.verify)
    app.router.add_post("/webhook", webhook.receive)
    app.router.add_post("/events", events.receive)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_page)

    async def resources(app: web.Application) -> AsyncIterator[None]:
        pool = await open_pool(settings, size=pool_size(settings, http=http, workers=workers))
        app[POOL] = pool
        billing = make_billing(settings, pool)
        app[BILLING] = billing
        signals = Signals(pool)
        await signals.start()
        app[SIGNALS] = signals
        app[STATUS_WRITER] = StatusWriter(pool, max_send_attempts=settings.send_max_attempts)
        tasks: list[asyncio.Task[None]] = []
        dispatcher: Dispatcher | None = None
        sender: Sender | None = None
        command_worker: CommandWorker | None = None
        alert_worker: AlertWorker | None = None
        upkeep: Upkeep | None = None
        cloud: CloudAPI | None = None
        if workers:
            dispatcher = Dispatcher(pool, settings, billing, default_catalog(), signals)
            cloud = CloudAPI(
                api_url=settings.whatsapp_api_url,
                phone_id=settings.whatsapp_phone_id,
                token=settings.whatsapp_token,
                api_version=settings.whatsapp_api_version,
                timeout=settings.send_timeout_seconds,
                max_connections=settings.send_concurrency,
            )
            sender = Sender(pool, settings, cloud, signals)
            command_worker = CommandWorker(pool, settings, billing, signals)
            alert_worker = AlertWorker(pool, settings, billing, default_catalog(), signals)
            upkeep = Upkeep(pool, settings, billing, signals)
            tasks = [
                asyncio.create_task(dispatcher.run(), name="dispatcher"),
                asyncio.create_task(sender.run(), name="sender"),
                asyncio.create_task(command_worker.run(), name="commands"),
                asyncio.create_task(alert_worker.run(), name="alerts"),
                asyncio.create_task(upkeep.run(), name="upkeep"),
            ]
        yield
        for worker in (dispatcher, sender, command_worker, alert_worker, upkeep):
            if worker is not None:
                worker.stop()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, timeout=10)
        if cloud is not None:
            await cloud.close()
        close_billing = getattr(billing, "close", None)
        if close_billing is not None:
            await close_billing()
        await signals.stop()
        try:
            await asyncio.wait_for(pool.close(), timeout=10)
        except (TimeoutError, asyncpg.InterfaceError, OSError) as e:
            log.warning("closing the database pool: %s; terminating it", e)
            pool.terminate()

    app.cleanup_ctx.append(resources)
    if http:
        # After `resources`: the console's start-up reads its signing key with the pool.
        setup_console(app)
    return app


async def healthz(request: web.Request) -> web.Response:
    """Alive and the database reachable (else 503); and whether sending is paused — the
    process is healthy then, but an operator must look."""
    try:
        async with asyncio.timeout(2), request.app[POOL].acquire() as conn:
            pause = await sending_pause(conn)
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
        return web.json_response({"status": "unavailable", "database": str(e)}, status=503)
    sending: str | dict[str, object] = "ok"
    if pause is not None:
        sending = {
            "paused_since": pause.since.isoformat(),
            "code": pause.code,
            "reason": pause.reason,
            "failed_probes": pause.probes,
            "next_probe": pause.probe_at.isoformat() if pause.probe_at else None,
        }
    return web.json_response({"status": "ok", "database": "ok", "sending": sending})


async def metrics_page(request: web.Request) -> web.Response:
    pool = request.app[POOL]
    counts: dict[str, int] | None = None
    pending: int | None = None
    paused = False
    alert_counts: dict[tuple[str, str], int] = {}
    staff_queue: queue.Gauges | None = None
    with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        async with pool.acquire() as conn:
            counts = await counts_by_status(conn)
            pending = await conn.fetchval("SELECT count(*) FROM inbox WHERE status = 'pending'")
            paused = await sending_pause(conn) is not None
            alert_counts = await alerts.counts(conn, datetime.now(UTC) - timedelta(hours=24))
            staff_queue = await queue.gauges(conn)
    return web.Response(
        body=metrics.render(
            counts, pending, paused=paused, alerts=alert_counts, staff_queue=staff_queue
        ),
        headers={"Content-Type": CONTENT_TYPE_LATEST},
    )
