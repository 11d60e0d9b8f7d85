"""`python -m bot serve`: the production entry point.

One Python process uses one core. With `PROCESSES=N` (default: 1) the command starts N
worker processes that share the port (SO_REUSEPORT: the kernel spreads connections) and
the database (row locks and SKIP LOCKED share the work, exactly as separate machines
do). The parent resolves the database (starting the embedded one if needed) and applies
migrations once, then supervises: a worker that dies is restarted; SIGTERM or SIGINT stops
them all.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import time
from dataclasses import replace
from multiprocessing.process import BaseProcess
from types import FrameType

import uvloop
from aiohttp import web

from bot import logs
from bot.config import Settings

log = logging.getLogger(__name__)

RESTART_BACKOFF_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)


def serve(settings: Settings) -> int:
    if settings.processes <= 1:
        _run_worker(settings)
        return 0
    settings = asyncio.run(_prepare_database(settings))
    return _supervise(settings)


async def _prepare_database(settings: Settings) -> Settings:
    from bot.app import open_pool
    from store import db

    dsn = await asyncio.to_thread(db.resolve_database_url, settings.database_url, settings.data_dir)
    settings = replace(settings, database_url=dsn)
    pool = await open_pool(settings)  # applies the migrations
    await pool.close()
    return settings


def _run_worker(settings: Settings) -> None:
    from bot.app import build_app

    logs.setup(settings.log_level, as_json=settings.log_json)
    # uvloop's event loop (libuv) costs a fraction of asyncio's own per I/O event; the
    # service is mostly I/O events (webhooks, PostgreSQL, the Cloud API).
    uvloop.install()
    web.run_app(
        build_app(settings),
        host=settings.host,
        port=settings.port,
        reuse_port=settings.processes > 1,
        print=None,
        access_log=None,
    )


def _supervise(settings: Settings) -> int:
    context = multiprocessing.get_context("spawn")
    workers: list[BaseProcess] = []
    restarts = [0] * settings.processes
    stopping = False

    def start(slot: int) -> BaseProcess:
        proc = context.Process(target=_run_worker, args=(settings,), name=f"bot-worker-{slot}")
        proc.start()
        log.info("worker %d started (pid %s)", slot, proc.pid)
        return proc

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for proc in workers:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    workers.extend(start(slot) for slot in range(settings.processes))
    while not stopping:
        time.sleep(0.5)
        for slot, proc in enumerate(workers):
            if stopping or proc.is_alive():
                continue
            delay = RESTART_BACKOFF_SECONDS[min(restarts[slot], len(RESTART_BACKOFF_SECONDS) - 1)]
            log.error("worker %d exited with %s; restarting in %.0f s", slot, proc.exitcode, delay)
            time.sleep(delay)
            restarts[slot] += 1
            workers[slot] = start(slot)
    for proc in workers:
        proc.join(timeout=30)
        if proc.is_alive():
            proc.kill()
    return 0
